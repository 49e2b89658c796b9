"""Liveness of the stage processes and the restart policy.

A stage is dead when its process exited without reporting DONE (seen within one poll), hung
when it is ready but silent on the stage board for ``heartbeat_timeout_s`` (then it is
killed). Live sources restart a failed stage at most ``max_per_min`` times a minute, after a
backoff that doubles with each restart within the minute; a file source, or a failure during
set-up, stops the run.

A restarted process starts on a fresh board row (the supervisor clears its heartbeat and ready
flag before starting it) and gets a start-up grace: its silence counts from its start at the
earliest, and the heartbeat check applies only once it is ready again; a restart that is not
ready within ``start_timeout_s`` is hung too.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from typing import Callable, Dict, List, Optional

from trackpipe.pipeline.common.shared import StageBoard


def describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def kill(proc) -> None:
    """SIGKILL a stage process (no-op when it is gone or never started)."""
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, TypeError):
        pass


def silent_stages(board: StageBoard, procs: Dict[str, object], index: Dict[str, int], timeout_s: float,
                  now: float, since: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Ready, running stages whose heartbeat is older than ``timeout_s`` -> {name: seconds silent}.

    ``since``: {name: monotonic time its current process was started}; silence counts from
    there at the earliest (the start-up grace of a restarted stage)."""
    out = {}
    for n, p in procs.items():
        i = index[n]
        if p.exitcode is None and board.get(i, StageBoard.READY):
            silent = now - max(board.get(i, StageBoard.BEAT), (since or {}).get(n, 0.0))
            if silent > timeout_s:
                out[n] = silent
    return out


def slow_restarts(board: StageBoard, procs: Dict[str, object], index: Dict[str, int], restarted: Dict[str, float],
                  timeout_s: float, now: float) -> Dict[str, float]:
    """Restarted, running stages still not ready ``timeout_s`` after their start -> {name: seconds
    since start}. ``restarted``: {name: monotonic start of a restarted process} (the first start is
    bounded by the supervisor's own start-up timeout)."""
    out = {}
    for n, t in restarted.items():
        p = procs.get(n)
        if p is not None and p.exitcode is None and not board.get(index[n], StageBoard.READY) and now - t > timeout_s:
            out[n] = now - t
    return out


class RestartPolicy:
    """At most ``max_per_min`` restarts of one stage process within any 60 s; the first restart
    within a minute starts at once, each further one waits twice as long as the one before
    (``backoff_initial_s``, doubling, at most ``backoff_max_s``)."""

    def __init__(self, max_per_min: int, clock: Callable[[], float] = time.monotonic,
                 backoff_initial_s: float = 1.0, backoff_max_s: float = 16.0):
        self.max_per_min = max_per_min
        self.clock = clock
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._times: Dict[str, deque] = {}

    def allow(self, name: str) -> bool:
        """True (and counted) when ``name`` may restart now."""
        now = self.clock()
        times = self._times.setdefault(name, deque())
        while times and now - times[0] > 60.0:
            times.popleft()
        if len(times) >= self.max_per_min:
            return False
        times.append(now)
        return True

    def recent(self, name: str) -> int:
        """Restarts of ``name`` counted within the last minute."""
        return len(self._times.get(name, ()))

    def backoff_s(self, name: str) -> float:
        """Seconds to wait before the restart just allowed: 0 for the first within the minute,
        then ``backoff_initial_s`` doubling per restart, at most ``backoff_max_s``."""
        n = self.recent(name)
        if n <= 1:
            return 0.0
        return min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** (n - 2))


def not_ready(board: StageBoard, index: Dict[str, int], names: List[str]) -> List[str]:
    return [n for n in names if not board.get(index[n], StageBoard.READY)]
