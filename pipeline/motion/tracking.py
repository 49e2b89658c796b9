"""One camera's tracking with filters, held objects and the threshold gate, in the order the
track stage runs them (the benchmarks run the same object):

1. the detections of a detected frame pass the camera's `ObjectFilters` (classes, areas,
   ratios, scores, object masks) before the tracker sees them;
2. a frame the motion gate skipped gets the held detections (`StationaryBook.held`: the last
   detected frame's, and stationary objects a re-check missed);
3. the tracker is updated, as on every frame;
4. the `ThresholdGate` hides tracks whose first scores have not reached their class's
   ``threshold`` yet: events, counts, zones and drawing see only what passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from trackpipe.models.types import Detections, Tracks

from .filters import ObjectFilters, ThresholdGate
from .stationary import StationaryBook


@dataclass
class Step:
    """One frame's outcome: ``tracks`` (what counts), ``stationary`` (N,) bool per row,
    ``live_ids`` (T,) every id the tracker holds, ``held`` rows fed from the book (0 when detected)."""

    tracks: Tracks
    stationary: np.ndarray
    live_ids: np.ndarray
    held: int = 0


@dataclass
class GatedTracking:
    """``tracker``: any `trackers` tracker; ``id_offset`` added to its ids (a restarted stage's)."""

    tracker: object
    filters: ObjectFilters = field(default_factory=ObjectFilters)
    book: StationaryBook = field(default_factory=StationaryBook)
    gate: Optional[ThresholdGate] = None
    id_offset: int = 0

    def step(self, dets: Optional[Detections], frame_wh: Tuple[int, int], frame=None) -> Step:
        """``dets``: a detected frame's detections, or None for a frame the motion gate skipped."""
        detected = dets is not None
        held = 0
        if detected:
            dets = self.filters.apply(dets, frame_wh)
            self.book.remember(dets)
        else:
            dets = self.book.held()
            held = len(dets)
        tracks = self.tracker.update(dets, frame=frame)
        live = np.asarray(getattr(self.tracker, "live_track_ids", np.zeros(0, np.int64)), np.int64)
        if self.id_offset:
            tracks.track_id = tracks.track_id + self.id_offset
            live = live + self.id_offset
        self.book.observe(tracks, live, detected)
        if self.gate:
            ok = self.gate.keep(tracks, live)
            if not ok.all():
                tracks = tracks[ok]
        return Step(tracks, self.book.stationary(tracks.track_id), live, held)
