"""Infer stage: `Frame` messages -> detector on the shared-memory slots -> `Detections` messages.

The detector reads the slots in place (no copy). Batching: after a frame arrives, infer takes
the frames that are *already waiting* on its input, up to ``batch`` in all, and runs them in one
``detect_batch`` call; it never waits for a batch to fill (one waiting frame runs alone at once).
In latest-frame mode infer asks capture for a frame (`Want`) whenever it is idle, so it always
gets the newest one (batches of one), and it checks the slot's seqlock after detecting: a frame
overwritten meanwhile is discarded and counted as a drop.

Before it reports ready, infer measures the detector alone on the cores it was placed on (the
other stages are idle then): ``solo_s``/``solo_n`` in its stats, the profile's
``detector_only_fps``. ``batch="auto"`` chooses the batch size in the same measurement: the
largest per-frame throughput among `AUTO_BATCHES`, a larger batch only when `AUTO_MIN_GAIN`
faster than batch 1. The running ``detect()`` time is summed too (``detect_s``/``detect_n``).
"""

from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from trackpipe.pipeline.runtime.shared import StageBoard
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.bus import CTL, DETS, FRAMES
from trackpipe.pipeline.transport.messages import Detections, EndOfStream, Frame, Want
from trackpipe.pipeline.transport.ring import FrameRing

from .base import RunContext, StageError, StageProcess

log = logging.getLogger(__name__)

AUTO_BATCHES = (1, 4)     # batch sizes `auto` compares (README "Batching": 4 is where a batch helps)
AUTO_MIN_GAIN = 1.08      # a batch > 1 must beat batch 1 by this much (it also adds latency)
SOLO_SECONDS = 1.2        # time spent measuring the detector alone, all batch sizes together
SOLO_MIN_CALLS = 3
PROBE_FRAMES = 12         # real frames for precision auto's accuracy check


def read_frames(uri: str, count: int) -> List[np.ndarray]:
    """The first ``count`` frames of a video file, (H, W, 3) uint8 BGR each (fewer at its end)."""
    import cv2
    cap = cv2.VideoCapture(str(uri))
    frames = []
    try:
        while len(frames) < count:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
    finally:
        cap.release()
    return frames


def probe_frame(uri: Optional[str], shape: Sequence[int]) -> tuple:
    """The first frame of a video file (H, W, 3) uint8 at ``shape``, else a blank frame.
    -> (frame, what it is)."""
    if uri:
        import cv2
        cap = cv2.VideoCapture(str(uri))
        try:
            ok, f = cap.read()
        finally:
            cap.release()
        if ok and f is not None and tuple(f.shape) == tuple(shape):
            return f, "first frame"
    return np.zeros(tuple(shape), np.uint8), "blank frame"


def time_batches(detect_batch, frame: np.ndarray, batches: Sequence[int], seconds: float,
                 min_calls: int = SOLO_MIN_CALLS) -> Dict[int, tuple]:
    """Seconds per frame of ``detect_batch`` at each batch size, interleaved rounds.
    -> {batch: (frames, seconds)} (summed over the calls)."""
    out = {b: [0, 0.0] for b in batches}
    rounds = 3 if len(batches) > 1 else 1
    per = seconds / rounds / len(batches)
    for _ in range(rounds):
        for b in batches:
            frames = [frame] * b
            t_end, n = time.perf_counter() + per, 0
            while n < max(1, min_calls // rounds) or time.perf_counter() < t_end:
                t0 = time.perf_counter()
                detect_batch(frames)
                out[b][0] += b
                out[b][1] += time.perf_counter() - t0
                n += 1
    return {b: (n, s) for b, (n, s) in out.items()}


def pick_batch(measured: Dict[int, tuple], min_gain: float = AUTO_MIN_GAIN) -> int:
    """The batch size of the best frames/s; a size > 1 only when ``min_gain`` x batch 1."""
    fps = {b: n / s for b, (n, s) in measured.items() if s > 0}
    best = max(fps, key=lambda b: (fps[b], -b))
    if best != 1 and 1 in fps and fps[best] < min_gain * fps[1]:
        return 1
    return best


class InferProcess(StageProcess):
    stage = "infer"

    def __init__(self, rc: RunContext, spec, frame_shape, warmup: bool = True, factory=None, worker: int = 0,
                 batch: Union[int, str] = 1, max_batch: int = 8, probe_uri: Optional[str] = None,
                 solo_seconds: float = SOLO_SECONDS):
        if worker:
            self.stage = f"infer.{worker}"  # worker 0 is "infer"; the report sums them
        super().__init__(rc)
        self.factory = factory  # spec -> Detector; default models.factory.build_detector
        self.spec = spec
        self.frame_shape = tuple(frame_shape)
        self.warmup = warmup
        self.batch_request = batch        # an int, or "auto"
        self.max_batch = max(1, int(max_batch))
        self.probe_uri = probe_uri
        self.solo_seconds = solo_seconds

    def setup(self) -> None:
        self.ring = FrameRing.attach(self.rc.ring_name)
        self.inp = self.bus.pull(FRAMES, hwm=self.ring.slots * 4 + 64, bind=False)
        self.out = self.bus.push(DETS, hwm=self.ring.slots * 4 + 64)
        self.ctl = self.bus.push(CTL, hwm=64, flush=False)
        from trackpipe.models.errors import ModelError
        from trackpipe.models.factory import build_detector
        try:
            if self.factory is None and getattr(self.spec, "precision", "") == "auto" and self.probe_uri:
                # precision auto keeps a reduced precision only when its boxes agree with fp32's
                # on real frames: the source's own first frames
                self.detector = build_detector(self.spec, probe_frames=read_frames(self.probe_uri, PROBE_FRAMES))
            else:
                self.detector = (self.factory or build_detector)(self.spec)
        except (ModelError, ValueError, FileNotFoundError) as e:
            raise StageError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None
        self.stats.counters.update(detect_s=0.0, detect_n=0, solo_s=0.0, solo_n=0, batches=0)
        if self.warmup and self.solo_seconds > 0:
            self.batch = self._measure()
        else:
            self.batch = self._fixed_batch() if self.rc.mode != "latest" else 1
            if self.warmup:  # first calls allocate and compile; keep them out of the measurements
                dummy = np.zeros(self.frame_shape, np.uint8)
                for _ in range(2):
                    self.detector.detect(dummy)
                    self.beat()
        det = self.detector
        describe = getattr(det, "describe", None)
        choice = getattr(det, "choice", None)
        self.stats.gauges.update(backend=describe() if callable(describe) else getattr(det, "name", "?"),
                                 batch=self.batch)
        if choice is not None and hasattr(choice, "summary"):
            self.stats.gauges["backend_choice"] = choice.summary()

    def _fixed_batch(self) -> int:
        b = self.batch_request
        if b != "auto" and int(b) > self.max_batch:
            log.info("batch %d capped at %d: a batch holds ring slots (at most ring_slots / (2 x infer workers))",
                     int(b), self.max_batch)
        return 1 if b == "auto" else max(1, min(int(b), self.max_batch))

    def _measure(self) -> int:
        """Warm up (first calls allocate and compile), then time the detector alone on this
        process' cores; choose the batch size when asked for ``auto``. -> batch size."""
        frame, what = probe_frame(self.probe_uri, self.frame_shape)
        if self.batch_request == "auto" and self.rc.mode != "latest":
            batches = sorted({b for b in AUTO_BATCHES if b <= self.max_batch} | {1})
        else:
            batches = [1 if self.rc.mode == "latest" else self._fixed_batch()]
        for b in batches:  # every batch size compiles / allocates once
            for _ in range(2):
                self.detector.detect_batch([frame] * b)
                self.beat()
        measured = time_batches(self._beating(self.detector.detect_batch), frame, batches, self.solo_seconds)
        batch = pick_batch(measured) if len(batches) > 1 else batches[0]
        n, s = measured[batch]
        self.stats.counters.update(solo_s=s, solo_n=n)
        self.stats.gauges.update(solo_probe=what, batch_fps={str(b): round(k / t, 2) for b, (k, t) in
                                                            measured.items() if t > 0})
        return batch

    def _beating(self, fn):
        def call(frames):
            out = fn(frames)
            self.beat()
            return out
        return call

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

    def _waiting(self, first: Frame) -> tuple:
        """``first`` plus the frames already waiting on the input, up to ``batch`` in all (never
        waits). -> (frames, the non-frame message that ended the run of frames, or None)."""
        frames: List[Frame] = [first]
        while len(frames) < self.batch:
            msg = busmod.recv_nowait(self.inp)
            if msg is None:
                break
            if not isinstance(msg, Frame):
                return frames, msg
            frames.append(msg)
        return frames, None

    def _pass_on(self, msg) -> bool:
        """End of stream, source events: pass on in order. -> False when the loop must end."""
        return self.send(self.out, msg) and not isinstance(msg, EndOfStream)

    def loop(self) -> None:
        latest = self.rc.mode == "latest"
        idle_since = time.monotonic()
        if latest:
            self._want()
        for msg in self.messages(self.inp, self._want_again if latest else None):
            if not isinstance(msg, Frame):
                if not self._pass_on(msg):
                    return
                continue
            frames, tail = self._waiting(msg) if not latest else ([msg], None)
            if not self._run_batch(frames, latest, idle_since):
                return
            idle_since = time.monotonic()
            if tail is not None and not self._pass_on(tail):
                return

    def _run_batch(self, msgs: List[Frame], latest: bool, idle_since: float) -> bool:
        """One ``detect_batch`` call on the frames of ``msgs``; their `Detections`, in order."""
        ring, stats = self.ring, self.stats
        self.count(StageBoard.IN, len(msgs))
        t0 = time.monotonic()
        versions = [ring.version(m.meta.slot) for m in msgs]
        use = [not latest or ring.valid(m.meta.slot, m.meta.seq, v) for m, v in zip(msgs, versions)]
        views = [ring.frame(m.meta.slot, m.meta.shape) for m, u in zip(msgs, use) if u]
        found = self.detector.detect_batch(views) if views else []
        del views
        t1 = time.monotonic()
        if latest:
            self._want()
        it = iter(found)
        dets = [next(it) if u else None for u in use]
        if latest:  # overwritten while we read it: never pass on a torn frame
            dets = [d if d is None or ring.valid(m.meta.slot, m.meta.seq, v) else None
                    for d, m, v in zip(dets, msgs, versions)]
        k = len(msgs)
        ok = sum(d is not None for d in dets)
        stats.drops += k - ok
        if ok:
            stats.add("detect_s", (t1 - t0) * ok / k)
            stats.add("detect_n", ok)
        stats.add("batches")
        stats.hist("batch").add(float(k))
        per = (t1 - t0) / k
        for i, (m, d) in enumerate(zip(msgs, dets)):
            if not self.send(self.out, Detections(m.meta, d, per)):
                return False
            self.count(StageBoard.OUT)
            stats.count_item(t1)
            stats.proc.add(per * 1000.0)
            stats.wait.add((t0 - idle_since) * 1000.0 if i == 0 else 0.0)
        return True
