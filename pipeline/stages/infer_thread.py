"""The infer process' detector thread and the per-camera order of what infer passes on.

`DetectThread` runs ``detect_batch`` calls one at a time on a thread of its own, so the infer
loop keeps receiving frames and passing on those the motion gate skipped while the detector
works (ONNX Runtime, OpenVINO and TensorRT release the GIL during a call). The thread touches no
socket: a call's end is signalled through a pipe the loop polls beside its input.

`CameraOrder` holds what infer passes on in arrival order per camera: a skipped frame, an
end-of-stream or a source event is ready at once, a detected frame when its detection ends;
an entry goes on only after every earlier entry of its camera.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional

import numpy as np


@dataclass
class Done:
    """One finished ``detect_batch`` call: its ``job`` (what `DetectThread.submit` was given),
    the detections found (one per view, in order), its start and end (``time.monotonic()``)."""
    job: Any
    found: list
    t0: float
    t1: float


class DetectThread:
    """``detect_batch(views) -> list`` on a thread of its own, one call at a time.

    ``fd`` becomes readable when a call ends; `done()` then returns it (or raises what the call
    raised). ``busy_since`` is the running call's start (None when idle)."""

    def __init__(self, detect_batch: Callable[[List[np.ndarray]], list]):
        self.detect_batch = detect_batch
        self._jobs: "queue.SimpleQueue" = queue.SimpleQueue()
        self._done: "queue.SimpleQueue" = queue.SimpleQueue()
        self.fd, self._wake_w = os.pipe()
        os.set_blocking(self.fd, False)
        self.busy_since: Optional[float] = None
        self._thread = threading.Thread(target=self._run, name="detector", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self.busy_since is not None

    def submit(self, views: List[np.ndarray], job: Any) -> None:
        """Detect on ``views`` ((H, W, 3) uint8 BGR each, e.g. ring slots); the thread empties
        the list when the call ends, so no view outlives it. Only when not `busy`."""
        assert not self.busy, "one call at a time"
        self.busy_since = time.monotonic()
        self._jobs.put((views, job))

    def done(self) -> Optional[Done]:
        """The call that ended (None if it has not); raises the exception the call raised."""
        try:
            os.read(self.fd, 64)
        except BlockingIOError:
            pass
        try:
            res = self._done.get_nowait()
        except queue.Empty:
            return None
        self.busy_since = None
        if isinstance(res, BaseException):
            raise res
        return res

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            views, job = item
            del item
            t0 = time.monotonic()
            try:
                res = Done(job, list(self.detect_batch(views)) if views else [], t0, time.monotonic())
            except BaseException as e:  # handed to the loop, which raises it
                res = e
            views.clear()
            del views, job
            self._done.put(res)
            del res
            try:
                os.write(self._wake_w, b"d")
            except BlockingIOError:  # full: the loop has wake-ups pending anyway
                pass

    def close(self, timeout_s: float) -> bool:
        """Stop the thread once its running call ends. -> False when it is still in a call after
        ``timeout_s`` (a hung detector: what it reads must then stay open)."""
        self._jobs.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            return False
        os.close(self.fd)
        os.close(self._wake_w)
        return True


class Entry:
    """One message to pass on; ``msg`` None until it is ready (its detection has not ended)."""
    __slots__ = ("msg",)

    def __init__(self, msg=None):
        self.msg = msg


class CameraOrder:
    """Messages to pass on, in arrival order per camera (the cameras independent of each other)."""

    def __init__(self):
        self._queues: Dict[int, Deque[Entry]] = {}

    def add(self, camera: int, msg=None) -> Entry:
        """Queue ``msg`` (None: set the entry's ``msg`` when it is ready) behind ``camera``'s others."""
        e = Entry(msg)
        self._queues.setdefault(camera, deque()).append(e)
        return e

    def ready(self) -> Iterator[Any]:
        """Pop and yield every message that may go on now: the ready heads of each camera's queue."""
        for q in self._queues.values():
            while q and q[0].msg is not None:
                yield q.popleft().msg

    def holds(self, camera: int) -> bool:
        """Whether a message of ``camera`` waits to go on."""
        return bool(self._queues.get(camera))

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())
