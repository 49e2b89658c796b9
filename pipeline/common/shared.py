"""State shared by every process of a run without messages: the stop/go flags and the stage board."""

from __future__ import annotations

import time
from ctypes import c_double, c_int


class Flag:
    """A cross-process boolean with Event's set / is_set / wait, on a RawValue.

    multiprocessing.Event is built on named POSIX semaphores (``/dev/shm/sem.mp-*``) that,
    under spawn, only the resource tracker unlinks: SIGKILL the process group (tracker
    included) and they stay behind. A RawValue lives in memory that is unlinked at creation.
    """

    def __init__(self, ctx=None):
        import multiprocessing as mp
        self._v = (ctx or mp).RawValue(c_int, 0)

    def set(self) -> None:
        self._v.value = 1

    def is_set(self) -> bool:
        return bool(self._v.value)

    def wait(self, timeout: float) -> bool:
        """True once set; False after `timeout` seconds (polls every 5 ms)."""
        deadline = time.monotonic() + timeout
        while not self._v.value:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.005, left))
        return True


class StageBoard:
    """Lock-free shared counters, one row per stage: heartbeat, items in, items out, ready.

    Each field has one writer (the stage); the supervisor reads them for liveness,
    queue depths and the progress bar without waiting on messages."""

    BEAT, IN, OUT, READY, DEPTH = range(5)
    WIDTH = 5

    def __init__(self, n: int, ctx=None):
        import multiprocessing as mp
        self.n = n
        self.arr = (ctx or mp).RawArray(c_double, n * self.WIDTH)

    def set(self, i: int, field: int, value: float) -> None:
        self.arr[i * self.WIDTH + field] = value

    def get(self, i: int, field: int) -> float:
        return self.arr[i * self.WIDTH + field]

    def beat(self, i: int) -> None:
        self.arr[i * self.WIDTH + self.BEAT] = time.monotonic()

    def reset(self, i: int) -> None:
        for f in range(self.WIDTH):
            if f not in (self.IN, self.OUT):
                self.set(i, f, 0.0)
