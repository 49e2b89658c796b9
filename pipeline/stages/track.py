"""Track stage: `Detections` messages -> tracker -> `Tracked` messages (tracks + events) to render and the sink.

The tracker is called once per frame, also with no detections. Frames infer dropped
(latest-frame mode) are passed on without an update, so every frame still reaches
render, which releases its slot.

Events are made here, where the tracker is, and travel with the frame's tracks
(`Tracked.events`, JSON-ready dicts, in order):

- ``track_started`` / ``track_ended``: one of each per ID, ever (`trackers.lifecycle.LifecycleLog`:
  an ID starts the first frame it is output and ends the frame the tracker deletes its track,
  or at the end of the stream, whose events ride on `EndOfStream`);
- ``zone_enter`` / ``zone_exit`` / ``line_cross``: the camera's `ZoneLineCounter`, fed the
  tracks observed in the frame (rows at a predicted box are display aids, never counted).

``t`` of every event is media time for lossless runs (files, image folders: seq / fps) and
capture (wall) time for live sources; ``duration_s`` of a track is measured on the same clock.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from trackpipe.pipeline.events.schema import track_ended
from trackpipe.pipeline.common.shared import StageBoard
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.bus import DETS, SINK, TRACKS, WEB
from trackpipe.pipeline.transport.messages import Detections, EndOfStream, FrameMeta, Message, Tracked
from trackpipe.pipeline.transport.ring import FrameRing
from trackpipe.pipeline.web.eventlog import EventLogWriter

from .base import RunContext, StageError, StageProcess
from .settings import TrackSettings
from .web import events_of

log = logging.getLogger(__name__)


class TrackEvents:
    """Track lifecycle and zone/line events of one camera, as event dicts.

    ``step(tracks, live_ids, seq, t, frame_size)`` once per tracked frame -> that frame's events;
    ``finish(seq, t)`` at the end of the stream -> the events of every track still live.
    Memory: the live tracks only."""

    def __init__(self, camera: str, names: Optional[Sequence[str]] = None, zones=None, lines=None):
        from trackpipe.pipeline.events import ZoneLineCounter
        from trackpipe.trackers.lifecycle import LifecycleLog
        self.camera = camera
        self.names = list(names) if names else None
        self.log = LifecycleLog()
        zs, ls = list(zones or ()), list(lines or ())    # Zone/Line objects, validated in the parent
        # the lifecycle ends every track (track_ended below); the counter's own timeout is a backstop
        self.counter = ZoneLineCounter(camera, zs, ls, names=self.names, end_after_frames=1 << 30) \
            if (zs or ls) else None
        self.live: Dict[int, dict] = {}       # started id -> first/last seq and time, class, frames

    def _class(self, cid: int) -> dict:
        d = {"class_id": int(cid)}
        if self.names and 0 <= cid < len(self.names):
            d["class"] = self.names[cid]
        return d

    def _event(self, name: str, t: float, seq: int, **fields) -> dict:
        return {"event": name, "t": round(float(t), 6), "seq": int(seq), "camera": self.camera, **fields}

    def step(self, tracks, live_ids: np.ndarray, seq: int, t: float, frame_size=None) -> List[dict]:
        """tracks: this frame's `Tracks` (ids already offset); live_ids (T,): every id the tracker holds."""
        out: List[dict] = []
        pred = np.asarray(tracks.predicted, bool) if tracks.predicted is not None else np.zeros(len(tracks), bool)
        ev = self.log.step(tracks.track_id, live_ids)
        started = set(ev.started.tolist())
        for k, tid in enumerate(tracks.track_id.tolist()):
            st = self.live.get(tid)
            if tid in started and st is None:
                x1, y1, x2, y2 = (round(float(v), 1) for v in tracks.xyxy[k])
                cid = int(tracks.class_id[k])
                st = self.live[tid] = {"first": seq, "t_first": t, "last": seq, "t_last": t, "cid": cid,
                                       "observed": 0, "predicted": 0}
                out.append(self._event("track_started", t, seq, track_id=tid, score=round(float(tracks.score[k]), 4),
                                       box=[x1, y1, x2, y2], **self._class(cid)))
            if st is None:
                continue
            if pred[k]:
                st["predicted"] += 1
            else:
                st["observed"] += 1
                st["last"], st["t_last"] = seq, t
        if self.counter is not None:
            observed = tracks[~pred] if pred.any() else tracks
            out += [e.to_dict() for e in self.counter.update(observed, t, seq=seq, frame_size=frame_size)]
        for tid in ev.ended.tolist():
            out += self._end(int(tid), seq, t, "lost")
        return out

    def _end(self, tid: int, seq: int, t: float, reason: str) -> List[dict]:
        out = [e.to_dict() for e in self.counter.track_ended(tid, seq=seq)] if self.counter is not None else []
        st = self.live.pop(tid, None)
        if st is None:
            return out
        out.append(track_ended(self.camera, tid, t, seq, st["first"], st["last"], st["t_first"], st["t_last"], reason,
                               self._class(st["cid"]), frames=(st["observed"], st["predicted"])))
        return out

    def finish(self, seq: int, t: float, reason: str = "end_of_stream") -> List[dict]:
        """End every live track (end of stream)."""
        out: List[dict] = []
        for tid in self.log.finish().ended.tolist():
            out += self._end(int(tid), seq, t, reason)
        if self.counter is not None:
            out += [e.to_dict() for e in self.counter.end_all(seq=seq)]
        return out

    def counts(self) -> Optional[dict]:
        return self.counter.counts() if self.counter is not None else None


class CameraTrack:
    """Tracking state of one camera: its tracker, events, class filter and stream position.
    ``classes``: class ids kept (None: all)."""

    def __init__(self, index: int, name: str, tracker, events: TrackEvents, classes=None, fps: float = 30.0,
                 ring=None):
        self.index, self.name = index, name
        self.tracker, self.events = tracker, events
        self.classes = np.asarray(classes, np.int64) if classes else None
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.ring = ring                    # appearance trackers read the frame
        self.last_seq, self.last_t = -1, 0.0
        self.pending: Dict[int, Detections] = {}   # lossless reordering: seq -> message
        self.expected = 0                   # next seq to track (lossless)
        self.newest = -1                    # newest seq tracked (latest)
        self.total: Optional[int] = None    # frames in its stream, from its end-of-stream message
        self.eos = 0                        # end-of-stream messages received (one per infer worker)
        self.ended = False
        self.frames = self.drops = 0
        self.gated = None                   # motion.tracking.GatedTracking: filters, held objects, threshold
        self.detected = self.moving = self.motion_frames = 0
        self.stationary: List[int] = []     # ids standing still in the last frame

    def keep(self, dets):
        if self.classes is None or dets is None or not len(dets):
            return dets
        return dets[np.isin(dets.class_id, self.classes)]


class TrackProcess(StageProcess):
    stage = "track"

    def __init__(self, rc: RunContext, settings: TrackSettings):
        super().__init__(rc)
        self.settings = settings
        self.to_web = settings.to_web  # the live view: every message, never waited for
        self.id_offset = settings.id_offset  # a restarted tracker must not reuse the ids of the previous one
        self.tracker_name = settings.tracker
        self.options = dict(settings.options)
        self.to_sink = settings.to_sink
        self.camera_specs = list(settings.cameras)
        self.names = list(settings.names) if settings.names else None
        # lossless: a camera ends once every infer worker passed its end-of-stream on (a worker
        # whose message nobody reads would linger on it at exit)
        self.workers = max(1, int(settings.workers))

    def setup(self) -> None:
        from trackpipe.trackers.factory import build_tracker
        self.cams: List[CameraTrack] = []
        for c in self.camera_specs:
            try:
                tracker = build_tracker(self.tracker_name, **self.options)
            except (ValueError, TypeError) as e:
                raise StageError(f"tracker: {e}") from None
            try:
                events = TrackEvents(c.name, self.names, c.zones, c.lines)
            except ValueError as e:
                raise StageError(str(e)) from None
            # appearance trackers and camera-motion compensation read the frame; the rest never touch pixels
            needs_frame = self.tracker_name.startswith("deepsort") or getattr(tracker, "needs_frame", False)
            ring = FrameRing.attach(self.rc.ring_of(c.index)) if needs_frame else None
            cam = CameraTrack(c.index, c.name, tracker, events, c.classes, getattr(c.info, "fps", 30.0), ring)
            cam.gated = self._gated(c, tracker)
            self.cams.append(cam)
        self._counts_gauge()
        n = (self.rc.ring_slots * 4 + 64) * max(1, len(self.cams))
        self.inp = self.bus.pull(DETS, hwm=n)
        self.out = [self.bus.push(TRACKS, hwm=n)]
        if self.to_sink:
            self.out.append(self.bus.push(SINK, hwm=10000))
        self.web = self.bus.push(WEB, hwm=n, flush=False) if self.to_web else None
        if self.web is not None:
            self.stats.gauges["web_skipped"] = 0
            # the live view's events go through the run's event log (numbered there), never lost
            self.event_log = EventLogWriter(self.rc.run_dir)
            self.camera_names = [c.name for c in self.cams]

    def _gated(self, c, tracker):
        """The camera's tracking with its filters, held (stationary) objects and threshold gate."""
        from trackpipe.pipeline.motion.tracking import GatedTracking
        cm = getattr(c, "motion", None)
        if cm is None:
            return GatedTracking(tracker, id_offset=self.id_offset)
        size = (int(getattr(c.info, "width", 0) or 0), int(getattr(c.info, "height", 0) or 0))
        return GatedTracking(tracker, cm.object_filters(size), cm.book(), cm.threshold_gate(), self.id_offset)

    def _counts_gauge(self) -> None:
        counts = {c.name: c.events.counts() for c in self.cams if c.events.counter is not None}
        if counts:  # one camera: its counts (the profile's shape before several cameras)
            self.stats.gauges["counts"] = next(iter(counts.values())) if len(self.cams) == 1 else counts

    def _camera_gauges(self) -> None:
        def filtered(c) -> dict:
            return dict(c.gated.filters.removed) if c.gated and c.gated.filters else {}

        def camera_motion(c) -> dict:
            cm = getattr(c.tracker, "camera", None)  # the tracker's camera-motion compensation, when on
            return {"camera_moving": round(cm.moving_frames / cm.frames, 3)} if cm is not None and cm.frames else {}

        self.stats.gauges["cameras"] = {c.name: {"frames": c.frames, "drops": c.drops, "detected": c.detected,
                                                 "moving": c.moving, "motion_frames": c.motion_frames,
                                                 "stationary": c.stationary, "filtered": filtered(c),
                                                 **camera_motion(c)}
                                        for c in self.cams}

    def teardown(self) -> None:
        for c in getattr(self, "cams", ()):
            if c.ring is not None:
                c.ring.close()
        if getattr(self, "event_log", None) is not None:
            self.event_log.close()

    def _send(self, msg: Message) -> bool:
        if self.web is not None:
            self.event_log.write(events_of(msg, self.camera_names))
        if self.web is not None and not busmod.try_send(self.web, msg):  # a full queue drops it
            self.stats.gauges["web_skipped"] += 1
        return all(self.send(s, msg) for s in self.out)

    def _end(self, cam: CameraTrack, frames: int) -> bool:
        """End of a camera's stream: every live track ends; the events ride on the end message.
        -> True once every camera has ended."""
        cam.ended = True
        self._camera_gauges()
        self._send(EndOfStream(frames, cam.events.finish(cam.last_seq, cam.last_t), source_id=cam.index))
        return all(c.ended for c in self.cams)

    def _done(self, cam: CameraTrack) -> bool:
        """Lossless: every frame of the camera tracked and every worker's end-of-stream in."""
        return not cam.ended and cam.total is not None and cam.expected >= cam.total and cam.eos >= self.workers

    def media_time(self, cam: CameraTrack, meta: FrameMeta) -> float:
        """Event time of a frame: media time (seq / fps) for lossless runs, capture time for live ones."""
        return meta.seq / cam.fps if self.rc.mode == "lossless" else meta.t_capture

    def loop(self) -> None:
        """Frames from several infer workers arrive out of order: lossless mode puts each camera's
        back in sequence (seqs are contiguous from 0); latest mode passes a frame older than one
        already tracked on as dropped (its slot still goes back through render)."""
        lossless = self.rc.mode == "lossless"
        idle_since = time.monotonic()
        for msg in self.messages(self.inp):
            if isinstance(msg, EndOfStream):
                cam = self.cams[msg.source_id]
                if cam.ended:
                    continue
                if not lossless:
                    if self._end(cam, msg.frames):
                        return
                    continue
                cam.total, cam.eos = msg.frames, cam.eos + 1
                if self._done(cam) and self._end(cam, cam.total):  # every frame tracked already
                    return
                continue
            if not isinstance(msg, Detections):  # source events: pass on in order
                self._send(msg)
                continue
            self.count(StageBoard.IN)
            cam = self.cams[msg.meta.source_id]
            if lossless:
                cam.pending[msg.meta.seq] = msg
                while cam.expected in cam.pending:
                    m = cam.pending.pop(cam.expected)
                    cam.expected += 1
                    if not self._track(cam, m, False, idle_since):
                        return
                    idle_since = time.monotonic()
                self.stats.gauges["reorder_max"] = max(self.stats.gauges.get("reorder_max", 0), len(cam.pending))
                if self._done(cam) and self._end(cam, cam.total):  # the last frames came after the end message
                    return
            else:
                stale = msg.meta.seq < cam.newest and not msg.dropped
                if stale:  # a newer frame was tracked already
                    self.stats.drops += 1
                cam.newest = max(cam.newest, msg.meta.seq)
                if not self._track(cam, msg, stale, idle_since):
                    return
                idle_since = time.monotonic()

    def _track(self, cam: CameraTrack, msg: Detections, stale: bool, idle_since: float) -> bool:
        t0 = time.monotonic()
        meta = msg.meta
        tracks = stationary = None
        events: List[dict] = []
        dropped = msg.dropped or stale
        if dropped:
            cam.drops += 1
        else:
            # age of the frame when the tracker takes it: capture's t_mono (right after decode) to
            # now; CLOCK_MONOTONIC is system-wide, so the two processes' clocks agree
            age_ms = (t0 - meta.t_mono) * 1000.0
            self.stats.hist("frame_age").add(age_ms)
            self.stats.hist(f"frame_age.{cam.name}").add(age_ms)
            self.stats.gauges["frame_age_ms"] = round(age_ms, 2)
            frame = cam.ring.frame(meta.slot, meta.shape) if cam.ring is not None else None
            # filters before the tracker; a frame the motion gate skipped gets the held objects
            step = cam.gated.step(None if msg.skipped else cam.keep(msg.dets), (meta.shape[1], meta.shape[0]),
                                  frame=frame)
            del frame
            tracks, live, stationary = step.tracks, step.live_ids, step.stationary
            cam.detected += not msg.skipped
            if msg.motion is not None:
                cam.motion_frames += 1
                cam.moving += len(msg.motion) > 0
            cam.stationary = tracks.track_id[stationary].tolist()
            t_ev = self.media_time(cam, meta)
            cam.last_seq, cam.last_t = meta.seq, t_ev
            events = cam.events.step(tracks, live, meta.seq, t_ev, frame_size=(meta.shape[1], meta.shape[0]))
            if events and cam.events.counter is not None:
                self._counts_gauge()
            cam.frames += 1
        t1 = time.monotonic()
        if not self._send(Tracked(meta, tracks, dropped, msg.t_infer, t1 - t0, events, detected=not msg.skipped,
                                  stationary=stationary, motion=msg.motion)):
            return False
        self.count(StageBoard.OUT)
        self.stats.item(t0, t1, max(0.0, t0 - idle_since))
        if cam.frames % 10 == 0:
            self._camera_gauges()
        return True
