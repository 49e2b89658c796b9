"""Unrelated images (image folders and globs): every detection is output at once, no linking.

Consecutive images of a folder usually show unrelated scenes, so carrying a track from one
image to the next would link different objects, and a confirmation delay (``min_hits``)
would hide the detections of every image. :class:`IndependentTracker` therefore outputs every
detection of every image immediately, each with a new ID (IDs stay unique within the run),
and keeps no state between images: each ID starts and ends in its own image
(:attr:`IndependentTracker.events`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from trackpipe.models.types import Detections, Tracks

from .base import Tracker
from .lifecycle import TrackEvents, make_tracks


@dataclass
class IndependentConfig:
    """min_score: detections below it are dropped (0: keep what the detector emits)."""

    min_score: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")


class IndependentTracker(Tracker):
    """Every detection becomes a one-image track (see the module docstring)."""

    name = "independent"

    def __init__(self, config: IndependentConfig | None = None) -> None:
        self.config = config or IndependentConfig()
        self.reset()

    def reset(self) -> None:
        self._next_id = 1
        self._frame = 0
        self.events = TrackEvents()
        self.last_predicted = np.zeros(0, bool)

    @property
    def num_tracks(self) -> int:
        return 0

    @property
    def frame_count(self) -> int:
        return self._frame

    @property
    def live_track_ids(self) -> np.ndarray:
        return np.zeros(0, np.int64)

    def finish(self) -> TrackEvents:
        self.events = TrackEvents()
        return self.events

    def update(self, dets: Detections, frame: np.ndarray | None = None) -> Tracks:
        """dets (N) -> Tracks of the kept detections, new IDs, age 0, hits 1."""
        self._frame += 1
        keep = np.flatnonzero(dets.score >= self.config.min_score)
        n = len(keep)
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        self.events = TrackEvents(ids.copy(), ids.copy())
        self.last_predicted = np.zeros(n, bool)
        return make_tracks(dets.xyxy[keep], dets.score[keep], dets.class_id[keep], ids,
                           np.zeros(n), np.ones(n), self.last_predicted)
