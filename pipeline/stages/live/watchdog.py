"""Source watchdog of latest-frame capture: up or lost, reconnect backoff, lost/restored once each.

The grabber thread reports opens, frames and failed reads; the main thread calls `check`
for a source that blocks without failing. A loss or a recovery is reported once however
many parties notice it. No I/O here: the caller turns a transition into a `SourceEvent`.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional


class SourceWatchdog:
    """``timeout_s``: no frame for this long while open -> lost. Backoff: ``backoff_initial_s``
    doubling up to ``backoff_max_s``, back to the start with the first frame after a loss."""

    def __init__(self, timeout_s: float, backoff_initial_s: float, backoff_max_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.timeout_s = timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self.lock = threading.Lock()
        self.lost = False
        self.opening = False
        self.last_frame_t = clock()
        self.backoff = backoff_initial_s
        self.lost_count = 0
        self.reconnects = 0

    @property
    def up(self) -> bool:
        return not self.lost

    def opening_started(self) -> None:
        """An open is under way (its own timeout covers it: `check` waits)."""
        self.opening = True

    def opened(self) -> None:
        self.opening = False
        self.last_frame_t = self.clock()

    def next_backoff(self) -> float:
        """Seconds to wait before the next open attempt; the following one waits twice as long."""
        b = self.backoff
        self.backoff = min(self.backoff * 2, self.backoff_max_s)
        return b

    def frame(self) -> bool:
        """A new frame arrived -> True when the source was lost until now (restored)."""
        self.last_frame_t = self.clock()
        self.backoff = self.backoff_initial_s
        return self._set_lost(False)

    def lose(self) -> bool:
        """Reads failed or the source cannot be opened -> True when it was up until now."""
        self.opening = False
        return self._set_lost(True)

    def check(self) -> Optional[str]:
        """-> the reason when a source that was up delivered no frame for ``timeout_s``."""
        if self.lost or self.opening or self.clock() - self.last_frame_t <= self.timeout_s:
            return None
        return f"no frame for {self.timeout_s:g}s" if self._set_lost(True) else None

    def _set_lost(self, lost: bool) -> bool:
        with self.lock:
            if self.lost == lost:
                return False
            self.lost = lost
            if lost:
                self.lost_count += 1
            else:
                self.reconnects += 1
            return True
