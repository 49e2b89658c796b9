"""Infer stage: `Frame` messages -> detector on the shared-memory slot -> `Detections` messages.

The detector reads the slot in place (no copy). In latest-frame mode infer asks capture
for a frame (`Want`) whenever it is idle, so it always gets the newest one, and it
checks the slot's seqlock after detecting: a frame overwritten meanwhile is discarded
and counted as a drop. ``detector_only_fps`` comes from the summed ``detect()`` time.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from trackpipe.pipeline.runtime.shared import StageBoard
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.bus import CTL, DETS, FRAMES
from trackpipe.pipeline.transport.messages import Detections, EndOfStream, Frame, Want
from trackpipe.pipeline.transport.ring import FrameRing

from .base import RunContext, StageError, StageProcess

log = logging.getLogger(__name__)


class InferProcess(StageProcess):
    stage = "infer"

    def __init__(self, rc: RunContext, spec, frame_shape, warmup: bool = True, factory=None, worker: int = 0):
        if worker:
            self.stage = f"infer.{worker}"  # worker 0 is "infer"; the report sums them
        super().__init__(rc)
        self.factory = factory  # spec -> Detector; default models.factory.build_detector
        self.spec = spec
        self.frame_shape = tuple(frame_shape)
        self.warmup = warmup

    def setup(self) -> None:
        self.ring = FrameRing.attach(self.rc.ring_name)
        self.inp = self.bus.pull(FRAMES, hwm=self.ring.slots * 4 + 64, bind=False)
        self.out = self.bus.push(DETS, hwm=self.ring.slots * 4 + 64)
        self.ctl = self.bus.push(CTL, hwm=64, flush=False)
        from trackpipe.models.errors import ModelError
        from trackpipe.models.factory import build_detector
        try:
            self.detector = (self.factory or build_detector)(self.spec)
        except (ModelError, ValueError, FileNotFoundError) as e:
            raise StageError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None
        if self.warmup:  # first calls allocate and compile; keep them out of the measurements
            dummy = np.zeros(self.frame_shape, np.uint8)
            for _ in range(2):
                self.detector.detect(dummy)
                self.beat()
        self.stats.counters.update(detect_s=0.0, detect_n=0)
        self.stats.gauges.update(backend=getattr(self.detector, "name", "?"))

    def teardown(self) -> None:
        det = getattr(self, "detector", None)
        if det is not None:
            det.close()
        if getattr(self, "ring", None) is not None:
            self.ring.close()

    def _want_again(self) -> None:
        """Idle for a second after asking: the want may have been lost in a capture restart."""
        if time.monotonic() - self._last_want > 1.0:
            self._want()

    def _want(self) -> None:
        self._last_want = time.monotonic()
        busmod.try_send(self.ctl, Want())

    def loop(self) -> None:
        latest = self.rc.mode == "latest"
        ring, stats = self.ring, self.stats
        idle_since = time.monotonic()
        if latest:
            self._want()
        for msg in self.messages(self.inp, self._want_again if latest else None):
            if not isinstance(msg, Frame):  # end of stream, source events: pass on in order
                if not self.send(self.out, msg) or isinstance(msg, EndOfStream):
                    return
                continue
            self.count(StageBoard.IN)
            meta = msg.meta
            slot, seq = meta.slot, meta.seq
            t0 = time.monotonic()
            version = ring.version(slot)
            dets = None
            if not latest or ring.valid(slot, seq, version):
                frame = ring.frame(slot, meta.shape)
                dets = self.detector.detect(frame)
                del frame
            t1 = time.monotonic()
            if latest:
                self._want()
                if dets is not None and not ring.valid(slot, seq, version):
                    dets = None  # overwritten while we read it: never pass on a torn frame
            if dets is None:
                stats.drops += 1
            else:
                stats.add("detect_s", t1 - t0)
                stats.add("detect_n")
            if not self.send(self.out, Detections(meta, dets, t1 - t0)):
                return
            self.count(StageBoard.OUT)
            stats.item(t0, t1, t0 - idle_since)
            idle_since = time.monotonic()
