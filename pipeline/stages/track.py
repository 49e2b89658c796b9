"""Track stage: `Detections` messages -> tracker -> `Tracked` messages to render and to the sink.

The tracker is called once per frame, also with no detections. Frames infer dropped
(latest-frame mode) are passed on without an update, so every frame still reaches
render, which releases its slot.
"""

from __future__ import annotations

import logging
import time

from trackpipe.pipeline.runtime.shared import StageBoard
from trackpipe.pipeline.transport.bus import DETS, SINK, TRACKS
from trackpipe.pipeline.transport.messages import Detections, EndOfStream, Message, Tracked
from trackpipe.pipeline.transport.ring import FrameRing

from .base import RunContext, StageError, StageProcess

log = logging.getLogger(__name__)


class TrackProcess(StageProcess):
    stage = "track"

    def __init__(self, rc: RunContext, tracker: str, options: dict, to_sink: bool, id_offset: int = 0):
        super().__init__(rc)
        self.id_offset = id_offset  # a restarted tracker must not reuse the ids of the previous one
        self.tracker_name = tracker
        self.options = dict(options)
        self.to_sink = to_sink

    def setup(self) -> None:
        from trackpipe.trackers.base import build_tracker
        try:
            self.tracker = build_tracker(self.tracker_name, **self.options)
        except (ValueError, TypeError) as e:
            raise StageError(f"tracker: {e}") from None
        # appearance trackers read the frame; motion-only ones never touch pixels
        self.needs_frame = self.tracker_name.startswith("deepsort")
        self.ring = FrameRing.attach(self.rc.ring_name) if self.needs_frame else None
        n = self.rc.ring_slots * 4 + 64
        self.inp = self.bus.pull(DETS, hwm=n)
        self.out = [self.bus.push(TRACKS, hwm=n)]
        if self.to_sink:
            self.out.append(self.bus.push(SINK, hwm=10000))

    def teardown(self) -> None:
        if self.ring is not None:
            self.ring.close()

    def _send(self, msg: Message) -> bool:
        return all(self.send(s, msg) for s in self.out)

    def loop(self) -> None:
        """Frames from several infer workers arrive out of order: lossless mode puts them back
        in sequence (seqs are contiguous from 0); latest mode passes a frame older than one
        already tracked on as dropped (its slot still goes back through render)."""
        lossless = self.rc.mode == "lossless"
        pending = {}           # seq -> Detections message, lossless reordering
        expected = 0           # next seq to track (lossless)
        last_seq = -1          # newest seq tracked (latest)
        total = None           # frames in the stream, from the end-of-stream message
        idle_since = time.monotonic()
        for msg in self.messages(self.inp):
            if isinstance(msg, EndOfStream):
                if not lossless:
                    self._send(msg)
                    return
                total = msg.frames
                if expected >= total:  # every frame tracked already
                    self._send(EndOfStream(total))
                    return
                continue
            if not isinstance(msg, Detections):  # source events: pass on in order
                self._send(msg)
                continue
            self.count(StageBoard.IN)
            if lossless:
                pending[msg.meta.seq] = msg
                while expected in pending:
                    m = pending.pop(expected)
                    expected += 1
                    if not self._track(m, False, idle_since):
                        return
                    idle_since = time.monotonic()
                self.stats.gauges["reorder_max"] = max(self.stats.gauges.get("reorder_max", 0), len(pending))
                if total is not None and expected >= total:  # the last frames came after the end message
                    self._send(EndOfStream(total))
                    return
            else:
                stale = msg.meta.seq < last_seq and not msg.dropped
                if stale:  # a newer frame was tracked already
                    self.stats.drops += 1
                last_seq = max(last_seq, msg.meta.seq)
                if not self._track(msg, stale, idle_since):
                    return
                idle_since = time.monotonic()

    def _track(self, msg: Detections, stale: bool, idle_since: float) -> bool:
        t0 = time.monotonic()
        meta = msg.meta
        tracks = None
        dropped = msg.dropped or stale
        if not dropped:
            # age of the frame when the tracker takes it: capture's t_mono (right after decode) to
            # now; CLOCK_MONOTONIC is system-wide, so the two processes' clocks agree
            age_ms = (t0 - meta.t_mono) * 1000.0
            self.stats.hist("frame_age").add(age_ms)
            self.stats.gauges["frame_age_ms"] = round(age_ms, 2)
            frame = None
            if self.ring is not None:
                frame = self.ring.frame(meta.slot, meta.shape)
            tracks = self.tracker.update(msg.dets, frame=frame)
            del frame
            if self.id_offset:
                tracks.track_id = tracks.track_id + self.id_offset
        t1 = time.monotonic()
        if not self._send(Tracked(meta, tracks, dropped, msg.t_infer, t1 - t0)):
            return False
        self.count(StageBoard.OUT)
        self.stats.item(t0, t1, max(0.0, t0 - idle_since))
        return True
