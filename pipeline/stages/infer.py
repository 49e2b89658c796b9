"""Infer stage: `Frame` messages -> detector on the shared-memory slots -> `Detections` messages.

The detector reads the slots in place (no copy). Batching: after a frame arrives, infer takes
the frames that are *already waiting* on its input, up to ``batch`` in all, and runs them in one
``detect_batch`` call; it never waits for a batch to fill (one waiting frame runs alone at once).
In latest-frame mode infer asks capture for a frame (`Want`) whenever it is idle, so it always
gets the newest one, and it checks the slot's seqlock after detecting: a frame overwritten
meanwhile is discarded and counted as a drop. With several cameras its input is connected to
every camera's capture (ZeroMQ fair-queues them); it asks every camera, runs the first frame
with those arriving within ``batch_timeout_ms`` (at most one per camera) in one call, then asks
again the cameras that were in the batch (one slot per camera and round: fair scheduling).

Before it reports ready, infer measures the detector alone on the cores it was placed on (the
other stages are idle then): ``solo_s``/``solo_n`` in its stats, the profile's
``detector_only_fps``. ``batch="auto"`` chooses the batch size in the same measurement: the
largest per-frame throughput among `AUTO_BATCHES`, a larger batch only when `AUTO_MIN_GAIN`
faster than batch 1. The running ``detect()`` time is summed too (``detect_s``/``detect_n``).
"""

from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from trackpipe.pipeline.common.shared import StageBoard
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.bus import CTL, DETS, FRAMES, of_camera
from trackpipe.pipeline.transport.messages import Detections, EndOfStream, Frame, SourceEvent, Want
from trackpipe.pipeline.transport.ring import FrameRing

from .base import RunContext, StageError, StageProcess
from .settings import InferSettings

log = logging.getLogger(__name__)

AUTO_BATCHES = (1, 4)     # batch sizes `auto` compares (docs/models.md "Batching": 4 is where a batch helps)
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

    def __init__(self, rc: RunContext, settings: InferSettings):
        if settings.worker:
            self.stage = f"infer.{settings.worker}"  # worker 0 is "infer"; the report sums them
        super().__init__(rc)
        self.settings = settings
        self.factory = settings.factory  # spec -> Detector; default models.factory.build_detector
        self.spec = settings.spec
        self.frame_shape = tuple(settings.frame_shape)
        self.warmup = settings.warmup
        self.batch_request = settings.batch        # an int, or "auto"
        self.max_batch = max(1, int(settings.max_batch))
        self.probe_uri = settings.probe_uri
        self.solo_seconds = settings.solo_seconds
        # latest mode, several cameras: after a frame arrives, wait this long for the other
        # cameras' frames to fill the batch (nvstreammux's batched-push-timeout)
        self.batch_timeout_ms = float(settings.batch_timeout_ms)

    def setup(self) -> None:
        n = len(self.rc.cameras)
        self.rings = [FrameRing.attach(self.rc.ring_of(i)) for i in range(n)]
        self.ring = self.rings[0]
        hwm = self.ring.slots * 4 + 64
        # one input from every camera's capture: ZeroMQ fair-queues between them
        self.inp = self.bus.pull(FRAMES, hwm=hwm * n, bind=False)
        for i in range(1, n):
            self.inp.connect(busmod.endpoint(self.rc.run_dir, of_camera(FRAMES, i)))
        self.out = self.bus.push(DETS, hwm=hwm * n)
        self.ctls = [self.bus.push(of_camera(CTL, i), hwm=64, flush=False) for i in range(n)]
        from trackpipe.models.errors import ModelError, error_line
        from trackpipe.models.factory import build_detector
        try:
            if self.factory is None and getattr(self.spec, "precision", "") == "auto" and self.probe_uri:
                # precision auto keeps a reduced precision only when its boxes agree with fp32's
                # on real frames: the source's own first frames
                self.detector = build_detector(self.spec, probe_frames=read_frames(self.probe_uri, PROBE_FRAMES))
            else:
                self.detector = (self.factory or build_detector)(self.spec)
        except (ModelError, ValueError, FileNotFoundError) as e:
            raise StageError(error_line(e, typed=False)) from None
        self.stats.counters.update(detect_s=0.0, detect_n=0, solo_s=0.0, solo_n=0, batches=0, skipped=0)
        if self.warmup and self.solo_seconds > 0:
            self.batch = self._measure()
        else:
            self.batch = self._fixed_batch() if self.rc.mode != "latest" else self._latest_batch()
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
        if hasattr(det, "on_wait"):  # a remote detector (triton) waiting out a lost server: alive, not hung
            det.on_wait = self._detector_waiting
            self.stats.gauges["detector"] = self._detector_state = "ok"

    def _latest_batch(self) -> int:
        """Latest mode: at most one frame per camera in a batch (each has one outstanding want);
        ``auto``: every camera's, else the configured size (1: unbatched)."""
        n = len(self.rc.cameras)
        b = n if self.batch_request == "auto" else int(self.batch_request)
        return max(1, min(b, n, self.max_batch))

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
            batches = [self._latest_batch() if self.rc.mode == "latest" else self._fixed_batch()]
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

    def _detector_waiting(self, lost: bool, reason: str) -> bool:
        """Called from inside a remote detector's call while its server is away (``lost``), and once
        when it is back: the stage is alive (a heartbeat); it waits on unless the run stops."""
        StageProcess.beat(self)
        self._detector_reason = reason
        return not self.stopping()

    def tick(self) -> None:
        self._report_detector()
        super().tick()

    def _report_detector(self) -> None:
        """A remote detector: its figures (``remote`` gauge: client latency beside the server's queue
        and compute times, once a second) and each change of its state: the ``detector`` gauge and
        ``detector_lost`` / ``detector_restored`` events of every camera (events file, live view)."""
        det = getattr(self, "detector", None)
        state = getattr(det, "state", None)
        if state is None or not hasattr(det, "on_wait"):
            return
        now = time.monotonic()
        if now >= getattr(self, "_next_remote", 0.0):
            self._next_remote = now + 1.0
            self.stats.gauges["remote"] = det.profile()
        outage = getattr(det, "lost_count", 0) > getattr(self, "_lost_seen", 0)   # also one begun and ended
        if not outage and state == getattr(self, "_detector_state", state):      # within one detector call
            return
        self._lost_seen = getattr(det, "lost_count", 0)
        self._detector_state = self.stats.gauges["detector"] = state
        if self.settings.worker:   # one worker speaks for the shared server (the detector logs it too)
            return
        names = (["detector_lost"] if outage else []) + (["detector_restored"] if state == "ok" else [])
        order = getattr(self, "order", None)
        for name in names:
            reason = getattr(self, "_detector_reason", "") if name == "detector_lost" else ""
            for i in range(len(self.rings)):
                ev = SourceEvent(name, time.time(), -1, det.describe(), reason or None, i)
                if order is not None:
                    order.add(i, ev)   # in order with the camera's frames still in the detector
                else:
                    self.send(self.out, ev)

    def teardown(self) -> None:
        det = getattr(self, "detector", None)
        if det is not None:
            det.close()
        for ring in getattr(self, "rings", ()):
            ring.close()

    def _want_again(self) -> None:
        """Idle for a second after asking: the want may have been lost in a capture restart."""
        if time.monotonic() - self._last_want > 1.0:
            self._want()

    def _want(self, cameras=None) -> None:
        """Ask ``cameras`` (indexes; default every camera) for their newest frame."""
        self._last_want = time.monotonic()
        for i in (range(len(self.ctls)) if cameras is None else cameras):
            busmod.try_send(self.ctls[i], Want())

    def _waiting(self, first: Frame, wait_ms: float = 0.0) -> tuple:
        """``first`` plus the frames already waiting on the input, or arriving within ``wait_ms``
        (latest mode, several cameras: `batch_timeout_ms`), up to ``batch`` in all.
        -> (frames, the non-frame message that ended the run of frames, or None)."""
        frames: List[Frame] = [first]
        deadline = time.monotonic() + wait_ms / 1000.0
        while len(frames) < self.batch:
            left_ms = int((deadline - time.monotonic()) * 1000.0)
            msg = busmod.recv(self.inp, left_ms) if left_ms > 0 else busmod.recv_nowait(self.inp)
            if msg is None:
                break
            if not isinstance(msg, Frame):
                return frames, msg
            frames.append(msg)
        return frames, None

    def _pass_on(self, msg) -> bool:
        """End of stream, source events: pass on in order. -> False when the loop must end: every
        camera's stream has ended (each capture sends one end-of-stream to each worker)."""
        if not self.send(self.out, msg):
            return False
        if isinstance(msg, EndOfStream):
            self.ended.add(msg.source_id)
            return len(self.ended) < len(self.rings)
        return True

    def loop(self) -> None:
        self.ended = set()     # cameras whose end-of-stream came
        latest = self.rc.mode == "latest"
        idle_since = time.monotonic()
        if latest:
            self._want()
        for msg in self.messages(self.inp, self._want_again if latest else None):
            if not isinstance(msg, Frame):
                if not self._pass_on(msg):
                    return
                continue
            # a frame the motion gate skipped needs no batch: no wait for the other cameras' frames
            frames, tail = self._waiting(msg, self.batch_timeout_ms if latest and msg.detect else 0.0)
            if not self._run_batch(frames, latest, idle_since):
                return
            idle_since = time.monotonic()
            if tail is not None and not self._pass_on(tail):
                return

    def _run_batch(self, msgs: List[Frame], latest: bool, idle_since: float) -> bool:
        """One ``detect_batch`` call on the frames of ``msgs``; their `Detections`, in order per
        camera. Frames the camera's motion gate skipped (nothing moved) go on first, undetected,
        and their cameras are asked again at once: a still camera never waits for the detector."""
        stats = self.stats
        skipped = [m for m in msgs if not m.detect]
        if skipped:
            t0 = time.monotonic()
            self.count(StageBoard.IN, len(skipped))
            for i, m in enumerate(skipped):
                if not self.send(self.out, Detections(m.meta, None, 0.0, skipped=True, motion=m.motion)):
                    return False
                self.count(StageBoard.OUT)
                stats.count_item(t0)
                stats.wait.add((t0 - idle_since) * 1000.0 if i == 0 else 0.0)
            stats.add("skipped", len(skipped))
            if latest:
                self._want(sorted({m.meta.source_id for m in skipped}))
            msgs = [m for m in msgs if m.detect]
            if not msgs:
                return True
            idle_since = t0
        rings = [self.rings[m.meta.source_id] for m in msgs]
        self.count(StageBoard.IN, len(msgs))
        t0 = time.monotonic()
        versions = [r.version(m.meta.slot) for r, m in zip(rings, msgs)]
        use = [not latest or r.valid(m.meta.slot, m.meta.seq, v) for r, m, v in zip(rings, msgs, versions)]
        views = [r.frame(m.meta.slot, m.meta.shape) for r, m, u in zip(rings, msgs, use) if u]
        found = self.detector.detect_batch(views) if views else []
        del views
        t1 = time.monotonic()
        if latest:
            self._want(sorted({m.meta.source_id for m in msgs}))
        it = iter(found)
        dets = [next(it) if u else None for u in use]
        if latest:  # overwritten while we read it: never pass on a torn frame
            dets = [d if d is None or r.valid(m.meta.slot, m.meta.seq, v) else None
                    for d, r, m, v in zip(dets, rings, msgs, versions)]
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
            if not self.send(self.out, Detections(m.meta, d, per, motion=m.motion)):
                return False
            self.count(StageBoard.OUT)
            stats.count_item(t1)
            stats.proc.add(per * 1000.0)
            stats.wait.add((t0 - idle_since) * 1000.0 if i == 0 else 0.0)
        return True
