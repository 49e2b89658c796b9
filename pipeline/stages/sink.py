"""Sink stage: `Tracked`, `SourceEvent` and `EndOfStream` messages -> MOTChallenge file, JSON-lines
events and their delivery (MQTT, webhooks); no pixels. Render's snapshot JPEGs (`Snapshot`, with
``mqtt.snapshots: true``) go to the deliveries that publish them; its recorded tracks' best frames
(`BestFrame`) to the recorder, their events' snapshots.

The events themselves are made by the track stage (`Tracked.events`: ``track_started``,
``track_ended``, ``zone_enter``, ``zone_exit``, ``line_cross``; the end of the stream's on
`EndOfStream.events`); here each is written to the events file and offered to a `Dispatcher`
(never blocks; its stats go to the profile). Tracks still open when the run is stopped get
their ``track_ended`` (reason ``stopped``) here.

MOT rows reach their file at least once a second and on every ``track_ended`` (`MotWriter`), so
a killed run keeps its tracks; a restarted sink (``append``) continues its files. A full or
unwritable disk stops that file only (one log line, its state in the profile's ``outputs``):
events still go to MQTT and webhooks, and the file is tried again every few seconds.

At the end of a lossless run (a file or folder that reached its end) the MOT file is
rewritten once with short gaps per id filled (``interpolate`` frames, `interpolate_mot_file`,
atomically): a run that is stopped or killed keeps the file as written.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, List

from trackpipe.pipeline.events.schema import track_ended
from trackpipe.pipeline.common.shared import StageBoard
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.bus import SINK
from trackpipe.pipeline.transport.messages import BestFrame, EndOfStream, Snapshot, SourceEvent, Tracked

from .base import RunContext, StageError, StageProcess
from .settings import SinkSettings

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 3.0   # delivery of what is queued at the end (stops at once for a failing target)
BEST_WAIT_S = 3.0       # at the end, render's last best frames are waited for this long
BEST_STOP_WAIT_S = 0.5  # and when the run is stopped (render sends its live tracks' as it stops)


class CameraSink:
    """One camera's MOT file and position."""

    def __init__(self, index: int, name: str, mot):
        self.index, self.name = index, name
        self.mot = mot
        self.last_seq, self.last_t = -1, 0.0
        self.ended = False


class SinkProcess(StageProcess):
    stage = "sink"

    def __init__(self, rc: RunContext, settings: SinkSettings):
        super().__init__(rc)
        self.settings = settings
        self.append = settings.append  # a restarted sink continues the files

    def setup(self) -> None:
        self.inp = self.bus.pull(SINK, hwm=10000)
        self.cams: List[CameraSink] = []
        self.out = None
        # track_started and not yet ended: (camera index, id) -> what stopping needs
        self.open: Dict[tuple, dict] = {}
        self.stats.gauges.update(events=0)
        self.recorder = None

    def _open_outputs(self) -> None:
        """Opened once the run starts (not in setup): a run that fails to start writes no file."""
        from trackpipe.pipeline.events.dispatch import Dispatcher
        from trackpipe.pipeline.media.mot import MotWriter
        try:
            for c in self.settings.cameras:
                mot = MotWriter(c.mot, self.append, camera=c.name) if c.mot else None
                self.cams.append(CameraSink(c.index, c.name, mot))
            out = Dispatcher.from_configs(self.settings.targets)
        except OSError as e:
            raise StageError(f"cannot write {e.filename}: {e.strerror}") from None
        self.files = out.files          # the events files (their states stay in the profile once closed)
        self.out = out.start() if out.targets else None   # the deliveries' threads run in this process
        if self.settings.record is not None:   # recording: its threads run here, the one writer of its index
            from trackpipe.pipeline.recording.recorder import Recorder
            rec = Recorder(self.settings.record)
            self.recorder = rec if rec.start() else None

    def send_stats(self) -> None:
        """Each output file's state (ok, stopped, resumed; what it lost) and each delivery's
        counters (sent, pending in its outbox, dropped) go with the stats."""
        out = getattr(self, "out", None)
        files = [c.mot for c in getattr(self, "cams", ()) if c.mot is not None] + list(getattr(self, "files", ()))
        if files:
            self.stats.gauges["outputs"] = [f.state.to_dict() for f in files]
        if out is not None and out.deliveries:
            self.stats.gauges["delivery"] = [s.to_dict() for s in out.stats()]
        if getattr(self, "recorder", None) is not None:
            self.stats.gauges["recording"] = self.recorder.stats()
        super().send_stats()

    def _flush(self) -> None:
        """Idle: every MOT row so far reaches its file."""
        for c in self.cams:
            if c.mot is not None:
                c.mot.flush()

    def _close_delivery(self, timeout: float) -> None:
        if self.out is not None:
            stats = self.out.close(timeout)
            if stats:
                self.stats.gauges["delivery"] = [s.to_dict() for s in stats]
            self.out = None

    def teardown(self) -> None:
        cams = getattr(self, "cams", [])
        if getattr(self, "out", None) is not None and self.stopping():
            for key in list(self.open):
                self._end_open(key, "stopped")
            self._await_best_frames(BEST_STOP_WAIT_S, stopped=True)
        self._close_delivery(1.0)
        self._close_recorder()
        for c in cams:
            if c.mot is not None:
                c.mot.close()

    def _close_recorder(self) -> None:
        rec, self.recorder = getattr(self, "recorder", None), None
        if rec is not None:
            rec.close()
            self.stats.gauges["recording"] = rec.stats()

    def _end_open(self, key: tuple, reason: str) -> None:
        st = self.open.pop(key)
        cam = self.cams[key[0]]
        self._event(cam, track_ended(st["camera"], key[1], cam.last_t, cam.last_seq, st["seq"], cam.last_seq, st["t"],
                                     cam.last_t, reason, {k: st[k] for k in ("class_id", "class") if k in st}))

    def _event(self, cam: CameraSink, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "track_started":
            self.open[(cam.index, int(ev["track_id"]))] = {k: ev[k] for k in ("t", "seq", "camera", "class_id", "class")
                                                           if k in ev}
        elif kind == "track_ended":
            self.open.pop((cam.index, int(ev["track_id"])), None)
            if cam.mot is not None:   # the ended track's rows are on disk with its event
                cam.mot.flush()
            review = self.recorder.on_event(cam.name, ev) if self.recorder is not None else None
            if review is not None:    # its clip (cut on request) and best snapshot in the review API
                ev = {**ev, "review_id": review, "clip": f"/api/events/{review}/clip.mp4",
                      "snapshot": f"/api/events/{review}/snapshot.jpg"}
        elif self.recorder is not None:
            self.recorder.on_event(cam.name, ev)
        if self.out is not None:
            self.out.offer(ev)
        self.stats.gauges["events"] += 1

    def loop(self) -> None:
        if not self.wait_go():
            return
        self._open_outputs()
        idle_since = time.monotonic()
        for msg in self.messages(self.inp, on_idle=self._flush):
            if isinstance(msg, EndOfStream):
                cam = self.cams[msg.source_id]
                for ev in msg.events:
                    self._event(cam, ev)
                for key in [k for k in self.open if k[0] == cam.index]:  # a track stage that did not end them
                    self._end_open(key, "end_of_stream")
                cam.ended = True
                if all(c.ended for c in self.cams):
                    self._await_best_frames()
                    self._finish()
                    return
                continue
            if isinstance(msg, SourceEvent):
                cam = self.cams[msg.source_id]
                self._event(cam, {"event": msg.event, "t": round(msg.t, 6), "seq": int(msg.seq),
                                  "camera": cam.name, **msg.fields()})
                continue
            if isinstance(msg, Snapshot):   # render's JPEG of a new track: for MQTT with snapshots: true
                if self.out is not None:
                    self.out.offer_snapshot(self.cams[msg.source_id].name, msg.jpeg.tobytes())
                continue
            if isinstance(msg, BestFrame):
                self._best_frame(msg)
                continue
            if not isinstance(msg, Tracked):
                continue
            self.count(StageBoard.IN)
            t0 = time.monotonic()
            cam = self.cams[msg.meta.source_id]
            seq = msg.meta.seq
            cam.last_seq = seq
            if self.rc.mode != "lossless":  # live: events are on the wall clock (files: media time, below)
                cam.last_t = msg.meta.t_capture
            if cam.mot is not None and msg.tracks is not None:
                cam.mot.write(seq + 1, msg.tracks)
            if self.recorder is not None and msg.tracks is not None:
                self._observe(cam, msg)
            if self.recorder is not None and msg.motion is not None:   # a motion recording mode keys on it
                self.recorder.motion(cam.name, self._event_time(cam, seq, msg.meta.t_capture), msg.moving)
            for ev in msg.events:
                cam.last_t = ev.get("t", cam.last_t)
                self._event(cam, ev)
            t1 = time.monotonic()
            self.count(StageBoard.OUT)
            self.stats.item(t0, t1, t0 - idle_since)
            idle_since = time.monotonic()

    def _event_time(self, cam: CameraSink, seq: int, t_capture: float) -> float:
        """A frame's time on the events' clock (live: capture time; files run lossless: media
        time, seq / fps, as the track stage's events)."""
        if self.rc.mode == "lossless":
            info = self.settings.cameras[cam.index].info
            fps = float(getattr(info, "fps", 0.0) or 0.0)
            return seq / (fps if fps > 0 else 30.0)
        return t_capture

    def _observe(self, cam: CameraSink, msg: Tracked) -> None:
        """The frame's tracks to the recorder, on the events' clock."""
        meta, tr = msg.meta, msg.tracks
        self.recorder.observe(cam.name, self._event_time(cam, meta.seq, meta.t_capture), tr.track_id, tr.xyxy,
                              tr.score, tr.class_id, getattr(tr, "predicted", None), (meta.shape[1], meta.shape[0]))

    def _best_frame(self, msg: BestFrame) -> None:
        """Render's best frame of a recorded track so far: the recorder keeps it for its event."""
        if self.recorder is None:
            return
        cam = self.cams[msg.source_id]
        self.recorder.best_frame(cam.name, msg.track_id, self._event_time(cam, msg.seq, msg.t), msg.box.tolist(),
                                 msg.score, msg.jpeg.tobytes())

    def _await_best_frames(self, wait_s: float = BEST_WAIT_S, stopped: bool = False) -> None:
        """Every stream ended (or the run is ``stopped``): render's best frames of the last events
        may still be on their way (render runs behind track); read them for up to ``wait_s``."""
        if self.recorder is None:
            return
        deadline = time.monotonic() + wait_s
        while self.recorder.missing_snapshots() and time.monotonic() < deadline and (stopped or not self.stopping()):
            self.tick()
            msg = busmod.recv(self.inp, 100)
            if isinstance(msg, BestFrame):
                self._best_frame(msg)

    def _finish(self) -> None:
        """Every stream ended: deliver what is queued, then (lossless runs) interpolate the MOT files."""
        self._close_delivery(CLOSE_TIMEOUT_S)
        self._close_recorder()
        mots = [c.mot for c in self.cams if c.mot is not None]
        for mot in mots:
            mot.close()
        if not mots:
            return
        self.stats.gauges["mot_rows"] = sum(m.rows for m in mots)
        self.stats.gauges["mot_predicted"] = sum(m.predicted for m in mots)
        interpolate = self.settings.interpolate
        if self.rc.mode == "lossless" and interpolate > 0 and not self.append:
            from trackpipe.pipeline.media.mot import interpolate_mot_file
            t0 = time.monotonic()
            done = 0
            for mot in mots:
                try:
                    res = interpolate_mot_file(mot.path, interpolate)
                except (OSError, ValueError) as e:
                    log.warning("MOT file %s not interpolated: %s", mot.path, e)
                    continue
                done += res["interpolated"]
                log.debug("MOT file interpolated: %s in %.2fs", res, time.monotonic() - t0)
            self.stats.gauges["mot_interpolated"] = done
