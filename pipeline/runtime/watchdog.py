"""Liveness of the stage processes and the restart policy.

A stage is dead when its process exited without reporting DONE (seen within one poll), hung
when it is ready but silent on the stage board for ``heartbeat_timeout_s`` (then it is
killed). Live sources restart a failed stage at most ``max_per_min`` times a minute; a
file source, or a failure during set-up, stops the run.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from typing import Callable, Dict, List, Optional

from .shared import StageBoard


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
                  now: float) -> Dict[str, float]:
    """Ready, running stages whose heartbeat is older than ``timeout_s`` -> {name: seconds silent}."""
    out = {}
    for n, p in procs.items():
        i = index[n]
        if p.exitcode is None and board.get(i, StageBoard.READY):
            silent = now - board.get(i, StageBoard.BEAT)
            if silent > timeout_s:
                out[n] = silent
    return out


class RestartPolicy:
    """At most ``max_per_min`` restarts of one stage process within any 60 s."""

    def __init__(self, max_per_min: int, clock: Callable[[], float] = time.monotonic):
        self.max_per_min = max_per_min
        self.clock = clock
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


def not_ready(board: StageBoard, index: Dict[str, int], names: List[str]) -> List[str]:
    return [n for n in names if not board.get(index[n], StageBoard.READY)]
