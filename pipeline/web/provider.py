"""The seam between the web server and a running pipeline: what the server reads.

The server never touches the ring, the bus or the stages: it reads a :class:`LiveViewProvider`.
:class:`~trackpipe.pipeline.web.hub.LiveViewHub` is the one concrete provider (fed by
``publish_*`` calls); any object with these methods will do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from trackpipe.models.types import Detections

# what changed, passed to subscribers: one of these kinds, and the camera for "frame"
FRAME, EVENT, STATS, COUNTS = "frame", "event", "stats", "counts"
Listener = Callable[[str, str | None], None]


@dataclass(frozen=True)
class CameraState:
    """One camera as ``/api/cameras`` shows it.

    state:        "starting" (no frame yet), "live" (a frame within the hub's ``stale_after_s``),
                  "stale" (none since), or what the pipeline last set: "lost", "restored" (for a
                  while after a loss), "waiting" (a camera not there yet: also one lost before its
                  first frame), "ended" (a file's end)
    fps:          frames per second over the last few seconds (0.0 when none come, and while
                  lost, waiting or ended)
    width/height: the newest frame's size in pixels, 0 before the first frame
    last_frame_t: wall-clock time (``time.time()``) of the newest frame, or None
    seq:          the newest frame's seq, -1 before the first frame
    since:        wall-clock time the state began ("lost" since...; "stale": the newest frame's
                  time), or None (live, starting)
    """

    name: str
    state: str
    fps: float
    width: int
    height: int
    last_frame_t: float | None
    seq: int
    since: float | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "fps": round(self.fps, 2), "width": self.width,
                "height": self.height, "last_frame_t": self.last_frame_t, "seq": self.seq, "since": self.since}


@dataclass(frozen=True)
class LatestFrame:
    """The newest frame of one camera and its tracks.

    seq:    the frame's seq (monotonic per camera)
    t:      its capture time, wall clock (``time.time()``)
    frame:  (H, W, 3) uint8 BGR; never written to by anyone once published
    tracks: Tracks (or Detections) in pixels of ``frame``, or None
    """

    seq: int
    t: float
    frame: np.ndarray
    tracks: Detections | None


@runtime_checkable
class LiveViewProvider(Protocol):
    """What the web server reads. Every method is called from the server's thread and must
    return at once (no I/O, no waiting on the pipeline)."""

    def cameras(self) -> list[CameraState]:
        """Every known camera, in a stable order."""

    def latest(self, camera: str) -> LatestFrame | None:
        """The camera's newest frame, or None (unknown camera, or no frame yet)."""

    def stats(self) -> dict:
        """The live profile (the ``--profile`` JSON report's shape: ``stages: {name: row}``...)."""

    def counts(self) -> dict:
        """Zone and line counts: ``{camera: ZoneLineCounter.counts() snapshot}``."""

    def events_since(self, seq: int, limit: int = 1000) -> list[dict]:
        """Retained events with ``event_seq > seq``, oldest first, at most ``limit``; each dict is
        the published event plus ``event_seq`` (1, 2, ... in publish order)."""

    def last_event_seq(self) -> int:
        """The newest event's ``event_seq`` (0 before the first event)."""

    def metrics(self) -> bytes:
        """Prometheus text exposition (``prometheus_client.generate_latest``), or b""."""

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(kind, camera)`` after each publish (kind: FRAME, EVENT, STATS or
        COUNTS; camera for FRAME, else None), from the publishing thread; the listener must not
        block. Returns a function that unsubscribes."""
