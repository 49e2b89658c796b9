"""A source that is not there: when to say so again.

A camera that never comes (or is lost and does not come back) is said once when it happens,
then again as ``still waiting for <camera> (since HH:MM:SS)`` with a growing gap: by default
after 1 min, 5 min more, 15 min more, then every hour (``source.still_waiting_s``), so that a
log read hours later still shows it, without a line per reconnect attempt.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

STILL_WAITING_S = (60.0, 300.0, 900.0, 3600.0)   # the gaps between the lines; the last one repeats


class StillWaiting:
    """The schedule of one waiting source: `begin` when it goes missing, `due` on every retry
    (True when a line is due now), `end` when a frame comes."""

    def __init__(self, gaps_s: Sequence[float] = STILL_WAITING_S, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        if not gaps_s or any(g <= 0 for g in gaps_s):
            raise ValueError(f"still_waiting_s: gaps must be > 0 seconds, got {list(gaps_s)!r}")
        self.gaps_s = tuple(float(g) for g in gaps_s)
        self.clock, self.wall = clock, wall
        self.since: Optional[float] = None      # wall-clock time the wait began (None: not waiting)
        self._next: Optional[float] = None      # monotonic time the next line is due
        self._said = 0                          # "still waiting" lines said in this wait

    @property
    def waiting(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        """The source is missing from now on (no-op while already waiting)."""
        if self.since is None:
            self.since, self._said = self.wall(), 0
            self._next = self.clock() + self.gaps_s[0]

    def end(self) -> None:
        self.since = self._next = None

    def due(self) -> bool:
        """True (once per gap) when the next "still waiting" line is due."""
        if self._next is None or self.clock() < self._next:
            return False
        self._said += 1
        self._next = self.clock() + self.gaps_s[min(self._said, len(self.gaps_s) - 1)]
        return True

    def line(self, what: str) -> str:
        """``still waiting for <what> (since HH:MM:SS)``, local time."""
        since = time.strftime("%H:%M:%S", time.localtime(self.since if self.since is not None else self.wall()))
        return f"still waiting for {what} (since {since})"
