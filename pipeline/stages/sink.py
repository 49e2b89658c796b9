"""Sink stage: `Tracked`, `SourceEvent` and `EndOfStream` messages -> MOTChallenge file, JSON-lines
events and their delivery (MQTT, webhooks); no pixels.

The events themselves are made by the track stage (`Tracked.events`: ``track_started``,
``track_ended``, ``zone_enter``, ``zone_exit``, ``line_cross``; the end of the stream's on
`EndOfStream.events`); here each is written to the events file and offered to a `Dispatcher`
(never blocks; its stats go to the profile). Tracks still open when the run is stopped get
their ``track_ended`` (reason ``stopped``) here.

At the end of a lossless run (a file or folder that reached its end) the MOT file is
rewritten once with short gaps per id filled (``interpolate`` frames, `interpolate_mot_file`,
atomically): a run that is stopped or killed keeps the file as written.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional

from trackpipe.pipeline.runtime.shared import StageBoard
from trackpipe.pipeline.transport.bus import SINK
from trackpipe.pipeline.transport.messages import EndOfStream, SourceEvent, Tracked

from .base import RunContext, StageError, StageProcess

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 3.0   # delivery of what is queued at the end (stops at once for a failing target)


class SinkProcess(StageProcess):
    stage = "sink"

    def __init__(self, rc: RunContext, mot: Optional[str], events: Optional[str],
                 names: Optional[List[str]] = None, track_end_frames: int = 30, append: bool = False,
                 interpolate: int = 0, mqtt=None, webhooks: Optional[list] = None, camera: str = "cam0"):
        super().__init__(rc)
        self.append = append  # a restarted sink continues the files
        self.mot_path = mot
        self.events_path = events
        self.names = names
        self.track_end_frames = track_end_frames  # unused: kept for callers of the old signature
        self.interpolate = int(interpolate or 0)
        self.mqtt = mqtt              # config values (docs/events.md), parsed in the process
        self.webhooks = webhooks
        self.camera = camera

    def setup(self) -> None:
        self.inp = self.bus.pull(SINK, hwm=10000)
        self.mot = self.events = self.out = None
        self.open: Dict[int, dict] = {}   # track_started and not yet ended: id -> what stopping needs
        self.last_seq, self.last_t = -1, 0.0
        self.stats.gauges.update(events=0)

    def _open_outputs(self) -> None:
        """Opened once the run starts (not in setup): a run that fails to start writes no file."""
        from trackpipe.pipeline.media.sinks import EventWriter, MotWriter
        try:
            self.mot = MotWriter(self.mot_path, self.append) if self.mot_path else None
            self.events = EventWriter(self.events_path, self.names, append=self.append) \
                if self.events_path else None
        except OSError as e:
            raise StageError(f"cannot write {e.filename}: {e.strerror}") from None
        if self.mqtt or self.webhooks:
            from trackpipe.pipeline.events import EventConfigError, MqttConfig, WebhookConfig
            from trackpipe.pipeline.events.dispatch import Dispatcher
            try:
                mq = MqttConfig.from_dict(self.mqtt) if self.mqtt else None
                hooks = [WebhookConfig.from_dict(w, f"webhooks[{i}]") for i, w in enumerate(self.webhooks or [])]
            except EventConfigError as e:
                raise StageError(str(e)) from None
            self.out = Dispatcher.from_config(mq, hooks).start()   # threads of this process

    def _close_delivery(self, timeout: float) -> None:
        if self.out is not None:
            stats = self.out.close(timeout)
            self.stats.gauges["delivery"] = [s.to_dict() for s in stats]
            self.out = None

    def teardown(self) -> None:
        if getattr(self, "events", None) is not None or getattr(self, "out", None) is not None:
            if self.stopping():
                for tid in list(self.open):
                    self._end_open(tid, "stopped")
        self._close_delivery(1.0)
        if getattr(self, "events", None) is not None:
            self.events.close()
        if getattr(self, "mot", None) is not None:
            self.mot.close()

    def _end_open(self, tid: int, reason: str) -> None:
        st = self.open.pop(tid)
        ev = {"event": "track_ended", "t": self.last_t, "seq": self.last_seq, "camera": st["camera"],
              "track_id": tid, "first_seq": st["seq"], "last_seq": self.last_seq,
              "duration_s": round(max(0.0, self.last_t - st["t"]), 3), "reason": reason}
        ev.update({k: st[k] for k in ("class_id", "class") if k in st})
        self._event(ev)

    def _event(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "track_started":
            self.open[int(ev["track_id"])] = {k: ev[k] for k in ("t", "seq", "camera", "class_id", "class") if k in ev}
        elif kind == "track_ended":
            self.open.pop(int(ev["track_id"]), None)
        if self.events is not None:
            self.events.write_event(ev)
        if self.out is not None:
            self.out.offer(ev)
        self.stats.gauges["events"] += 1

    def loop(self) -> None:
        if not self.wait_go():
            return
        self._open_outputs()
        idle_since = time.monotonic()
        for msg in self.messages(self.inp):
            if isinstance(msg, EndOfStream):
                for ev in msg.events:
                    self._event(ev)
                for tid in list(self.open):  # a track stage that did not end them (restarted)
                    self._end_open(tid, "end_of_stream")
                self._finish()
                return
            if isinstance(msg, SourceEvent):
                self._event({"event": msg.event, "t": round(msg.t, 6), "seq": int(msg.seq), "camera": self.camera,
                             **msg.fields()})
                continue
            if not isinstance(msg, Tracked):
                continue
            self.count(StageBoard.IN)
            t0 = time.monotonic()
            seq = msg.meta.seq
            self.last_seq = seq
            if self.rc.mode != "lossless":  # live: events are on the wall clock (files: media time, below)
                self.last_t = msg.meta.t_capture
            if self.mot is not None and msg.tracks is not None:
                self.mot.write(seq + 1, msg.tracks)
            for ev in msg.events:
                self.last_t = ev.get("t", self.last_t)
                self._event(ev)
            t1 = time.monotonic()
            self.count(StageBoard.OUT)
            self.stats.item(t0, t1, t0 - idle_since)
            idle_since = time.monotonic()

    def _finish(self) -> None:
        """The stream ended: deliver what is queued, then (lossless runs) interpolate the MOT file."""
        self._close_delivery(CLOSE_TIMEOUT_S)
        if self.mot is None:
            return
        self.mot.close()
        self.stats.gauges["mot_rows"] = self.mot.rows
        self.stats.gauges["mot_predicted"] = self.mot.predicted
        if self.rc.mode == "lossless" and self.interpolate > 0 and not self.append:
            from trackpipe.pipeline.media.sinks import interpolate_mot_file
            t0 = time.monotonic()
            try:
                res = interpolate_mot_file(self.mot.path, self.interpolate)
            except (OSError, ValueError) as e:
                log.warning("MOT file %s not interpolated: %s", self.mot.path, e)
                return
            self.stats.gauges["mot_interpolated"] = res["interpolated"]
            log.debug("MOT file interpolated: %s in %.2fs", res, time.monotonic() - t0)
