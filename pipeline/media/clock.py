"""One clock for a camera's frames and its recording: stream timestamps mapped to the wall clock.

The capture stage (frames it decodes) and the recorder (packets it copies, on its own connection)
both map a frame's stream timestamp to the wall clock by the least delay seen between a frame's
arrival and its timestamp (`Clock`), so a frame gets the same time on both, whatever either runs
behind the camera at that moment (a loaded capture decodes late; its frames keep their time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Clock:
    """Stream timestamps (seconds) -> seconds on the events' clock.

    files run lossless: ``base + (pts - first pts)``. live: ``pts + offset`` where ``offset`` is
    the least ``arrival - pts`` seen: a frame is never early, so the least delay is the live edge
    (frames FFmpeg buffered while it probed the stream, or that a busy reader took late, arrive
    late and would read late). A delay ``max_drift_s`` above it (a stall, a reconnect, a camera's
    clock reset) starts it afresh."""

    live: bool
    base: float = 0.0
    max_drift_s: float = 2.0
    offset: float | None = None

    def reset(self) -> None:
        self.offset = None

    def time(self, pts_s: float) -> float:
        """The time of a frame that arrives now, learning from its arrival."""
        d = (time.time() if self.live else self.base) - pts_s
        if self.offset is None or (self.live and d < self.offset) or d - self.offset > self.max_drift_s:
            self.offset = d
        return pts_s + self.offset

    def at(self, pts_s: float) -> float:
        """The time of ``pts_s`` with what is known now (a segment's start, once it is closed)."""
        return pts_s + (self.offset or 0.0)
