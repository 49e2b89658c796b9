"""Infer stage: `Frame` messages -> detector on the shared-memory slots -> `Detections` messages.

The detector reads the slots in place (no copy), on a thread of its own (`infer_thread`): the
loop keeps receiving while it works. A frame the camera's motion gate skipped goes on at once
(`Detections.skipped`), a frame to detect when its detection ends; every camera's messages go
on in the order they came. Batching: the frames to detect that wait while the detector is busy,
up to ``batch``, are its next ``detect_batch`` call (fewer than ``batch`` run one by one: no
batch size but 1 and ``batch`` is ever compiled mid-stream); it never waits for a batch to fill in
lossless mode (one waiting frame runs alone at once). In latest-frame mode infer asks capture
for a frame (`Want`) when that camera's previous frame went on, so it always gets the newest
one, and it checks the slot's seqlock after detecting: a frame overwritten meanwhile is
discarded and counted as a drop. With several cameras its input is connected to every camera's
capture (ZeroMQ fair-queues them); it asks every camera, gives the idle detector the frames to
detect that arrived within ``batch_timeout_ms`` of the first (at most one per camera) in one
call (one slot per camera and round: fair scheduling). The heartbeat stops while a detector
call runs, as a hung call must be noticed.

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
import zmq

from trackpipe.pipeline.common.shared import StageBoard
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.bus import CTL, DETS, FRAMES, of_camera
from trackpipe.pipeline.transport.messages import Detections, EndOfStream, Frame, SourceEvent, Want
from trackpipe.pipeline.transport.ring import FrameRing

from .base import RunContext, StageError, StageProcess
from .infer_thread import CameraOrder, DetectThread
from .settings import InferSettings

log = logging.getLogger(__name__)

AUTO_BATCHES = (1, 4)     # batch sizes `auto` compares (docs/models.md "Batching": 4 is where a batch helps)
AUTO_MIN_GAIN = 1.08      # a batch > 1 must beat batch 1 by this much (it also adds latency)
SOLO_SECONDS = 0.6        # time spent measuring the detector alone, all batch sizes together
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
        self._wait_for_server()
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

    def _wait_for_server(self) -> None:
        """Backend triton, a restarted worker (or ``model.triton_wait``): wait for the server as
        the run's start does (`models.backends.triton.wait_for_server`), beating, until the run
        stops; a server lost when the run began is an error of the detector's own."""
        spec = self.spec
        if self.factory is not None or getattr(spec, "backend", "") != "triton":
            return
        if not (self.settings.restart or getattr(spec, "triton_wait", False)):
            return
        from trackpipe.models.backends.triton import wait_for_server
        from trackpipe.pipeline.media.waiting import StillWaiting

        def sleep(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                if self.stopping():
                    raise StageError("stopped while waiting for the Triton server")
                StageProcess.beat(self)
                time.sleep(min(0.2, max(0.0, end - time.monotonic())))

        wait_for_server(spec, StillWaiting(), sleep=sleep)

    def _latest_batch(self) -> int:
        """Latest mode: at most one frame per camera in a batch (each has one outstanding want);
        ``auto`` unmeasured: 1, else the configured size (1: unbatched)."""
        b = 1 if self.batch_request == "auto" else int(self.batch_request)
        return max(1, min(b, len(self.rc.cameras), self.max_batch))

    def _fixed_batch(self) -> int:
        b = self.batch_request
        if b != "auto" and int(b) > self.max_batch:
            log.info("batch %d capped at %d: a batch holds ring slots (at most ring_slots / (2 x infer workers))",
                     int(b), self.max_batch)
        return 1 if b == "auto" else max(1, min(int(b), self.max_batch))

    def _candidates(self) -> List[int]:
        """The batch sizes `_measure` times: for ``auto`` 1 and 4 (capped by the ring and, live,
        by the cameras: one frame each), else the size asked."""
        if self.batch_request != "auto":
            return [self._latest_batch() if self.rc.mode == "latest" else self._fixed_batch()]
        cap = self.max_batch if self.rc.mode != "latest" else min(self.max_batch, len(self.rc.cameras))
        return sorted({max(1, min(b, cap)) for b in AUTO_BATCHES})

    def _measure(self) -> int:
        """Warm up (first calls allocate and compile), then time the detector alone on this
        process' cores; choose the batch size when asked for ``auto``. -> batch size."""
        frame, what = probe_frame(self.probe_uri, self.frame_shape)
        batches = self._candidates()
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

    def _detect(self, views: List[np.ndarray]) -> list:
        """One detector call for a full batch (or one frame); fewer frames than the batch run one
        by one: only sizes 1 and ``batch`` are ever compiled (a new size compiles mid-stream on
        OpenVINO's CPU plugin: ~0.2 s for the default model) or allocated."""
        if len(views) <= 1 or len(views) == self.batch:
            return self.detector.detect_batch(views)
        return [d for v in views for d in self.detector.detect_batch([v])]

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
        worker = getattr(self, "worker", None)
        if worker is not None and not worker.close(timeout_s=2.0):
            # a hung detector call still reads the slots: leave the detector and the rings open
            # (the process ends with os._exit)
            self.thread_stuck = True
            log.info("infer: the detector call is still running; leaving it to the process exit")
            return
        det = getattr(self, "detector", None)
        if det is not None:
            det.close()
        for ring in getattr(self, "rings", ()):
            ring.close()

    def beat(self) -> None:
        """The heartbeat says the detector makes progress: none while a detector call runs (a
        hung call stops it, as when the loop itself called the detector); each call's end beats."""
        worker = getattr(self, "worker", None)
        if worker is None or not worker.busy:
            super().beat()

    def _want_again(self) -> None:
        """Idle for a second after asking: the want may have been lost in a capture restart; ask
        again the cameras with no frame here (a slow detection holds the others')."""
        if time.monotonic() - self._last_want > 1.0:
            self._want([i for i in range(len(self.ctls)) if not self.order.holds(i)])

    def _want(self, cameras=None) -> None:
        """Ask ``cameras`` (indexes; default every camera) for their newest frame."""
        self._last_want = time.monotonic()
        for i in (range(len(self.ctls)) if cameras is None else cameras):
            busmod.try_send(self.ctls[i], Want())

    def loop(self) -> None:
        """Receive frames and pass them on while the detector thread works: a skipped frame goes
        on at once (behind its camera's earlier frames), frames to detect are batched for the
        detector thread, each goes on when its detection ends."""
        self.ended = set()     # cameras whose end-of-stream came
        latest = self.rc.mode == "latest"
        self.order = CameraOrder()
        self.todo: List[tuple] = []    # (Frame, Entry) to detect, not yet given to the detector
        self.todo_since = 0.0
        self.idle_since = time.monotonic()  # the detector's
        self.worker = DetectThread(self._detect)
        both, results = zmq.Poller(), zmq.Poller()
        for p in (both, results):
            p.register(self.worker.fd, zmq.POLLIN)
        both.register(self.inp, zmq.POLLIN)
        if latest:
            self._want()
        while not self.stopping():
            self.tick()
            # lossless: read on only while the detector's backlog is under a batch (capture waits)
            taking = latest or len(self.todo) < self.batch
            ready = dict((both if taking else results).poll(self._poll_ms(latest)))
            if self.worker.fd in ready:
                done = self.worker.done()
                if done is not None:
                    self._detected(done, latest)
            if self.inp in ready:
                msg = busmod.recv_nowait(self.inp)
                while msg is not None:
                    self._take(msg)
                    if not latest and len(self.todo) >= self.batch:
                        break
                    msg = busmod.recv_nowait(self.inp)
            self._submit(latest)
            if not self._flush(latest):
                return
            if latest and not ready:
                self._want_again()

    def _poll_ms(self, latest: bool) -> int:
        """Until frames waiting for the idle detector must go (a batch filling), else a poll."""
        if self.todo and not self.worker.busy:
            wait_s = self.batch_timeout_ms / 1000.0 if latest else 0.0
            return max(0, min(busmod.POLL_MS, int((self.todo_since + wait_s - time.monotonic()) * 1000.0)))
        return busmod.POLL_MS

    def _take(self, msg) -> None:
        """One input message into its camera's order; a frame to detect also into the batch."""
        if not isinstance(msg, Frame):  # end of stream, source events: in order with the frames
            self.order.add(getattr(msg, "source_id", 0), msg)
            return
        self.count(StageBoard.IN)
        cam = msg.meta.source_id
        if not msg.detect:  # the motion gate skipped it: no detector, no batch
            self.stats.add("skipped")
            self.order.add(cam, Detections(msg.meta, None, 0.0, skipped=True, motion=msg.motion))
            return
        if not self.todo:
            self.todo_since = time.monotonic()
        self.todo.append((msg, self.order.add(cam)))

    def _submit(self, latest: bool) -> None:
        """Give the idle detector up to ``batch`` waiting frames: at once when a batch is full or
        in lossless mode, else after ``batch_timeout_ms`` (latest mode, several cameras)."""
        if self.worker.busy or not self.todo:
            return
        now = time.monotonic()
        if latest and len(self.todo) < self.batch and now < self.todo_since + self.batch_timeout_ms / 1000.0:
            return
        take, self.todo = self.todo[:self.batch], self.todo[self.batch:]
        self.todo_since = now
        rings = [self.rings[m.meta.source_id] for m, _ in take]
        versions = [r.version(m.meta.slot) for r, (m, _) in zip(rings, take)]
        use = [not latest or r.valid(m.meta.slot, m.meta.seq, v) for r, (m, _), v in zip(rings, take, versions)]
        views = [r.frame(m.meta.slot, m.meta.shape) for r, (m, _), u in zip(rings, take, use) if u]
        self.stats.wait.add((now - self.idle_since) * 1000.0)
        self.worker.submit(views, (take, rings, versions, use))

    def _detected(self, done, latest: bool) -> None:
        """A detector call ended: its frames' `Detections` become ready to go on."""
        super().beat()
        take, rings, versions, use = done.job
        stats = self.stats
        self.idle_since = done.t1
        it = iter(done.found)
        dets = [next(it) if u else None for u in use]
        if latest:  # overwritten while we read it: never pass on a torn frame
            dets = [d if d is None or r.valid(m.meta.slot, m.meta.seq, v) else None
                    for d, r, (m, _), v in zip(dets, rings, take, versions)]
        k = len(take)
        ok = sum(d is not None for d in dets)
        stats.drops += k - ok
        if ok:
            stats.add("detect_s", (done.t1 - done.t0) * ok / k)
            stats.add("detect_n", ok)
        stats.add("batches")
        stats.hist("batch").add(float(k))
        per = (done.t1 - done.t0) / k
        for (m, entry), d in zip(take, dets):
            entry.msg = Detections(m.meta, d, per, motion=m.motion)

    def _flush(self, latest: bool) -> bool:
        """Pass on what is ready, in order per camera; in latest mode ask each camera whose frame
        went on for its next one. -> False when the loop must end: the run stops, or every
        camera's stream has ended (each capture sends one end-of-stream to each worker)."""
        stats, wanted = self.stats, set()
        for msg in self.order.ready():
            if not self.send(self.out, msg):
                return False
            if isinstance(msg, Detections):
                t = time.monotonic()
                self.count(StageBoard.OUT)
                stats.count_item(t)
                if not msg.skipped:
                    stats.proc.add(msg.t_infer * 1000.0)
                wanted.add(msg.meta.source_id)
            elif isinstance(msg, EndOfStream):
                self.ended.add(msg.source_id)
                if len(self.ended) >= len(self.rings):
                    return False
        if latest and wanted:
            self._want(sorted(wanted))
        return True
