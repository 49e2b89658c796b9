"""Track lifecycle events (one start and one end per ID) and ``Tracks`` construction.

:class:`LifecycleLog` turns what a tracker outputs each frame into events: an ID is
``started`` the first frame it is output, and ``ended`` the frame its track is deleted from
the tracker (or at :meth:`LifecycleLog.finish`). Because every tracker here draws IDs from a
per-instance counter and never revives a deleted track, each ID starts at most once and ends
at most once, and an ended ID is never output again (tests/test_track_lifecycle.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from trackpipe.models.types import Tracks


@dataclass
class TrackEvents:
    """IDs whose track started / ended in one frame: started (K,) int64, ended (M,) int64."""

    started: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ended: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


class LifecycleLog:
    """Started/ended bookkeeping for one tracker instance (memory: the live started IDs)."""

    def __init__(self) -> None:
        self._live: set[int] = set()        # started and not yet ended
        self.events = TrackEvents()

    def step(self, output_ids: np.ndarray, live_ids: np.ndarray) -> TrackEvents:
        """output_ids (K,): IDs output this frame; live_ids (T,): every track the tracker holds.
        Returns (and keeps in ``events``) the IDs started and ended in this frame."""
        out = [int(i) for i in np.asarray(output_ids).tolist()]
        started = [i for i in out if i not in self._live]
        self._live.update(started)
        live = {int(i) for i in np.asarray(live_ids).tolist()}
        ended = sorted(i for i in self._live if i not in live)
        self._live.difference_update(ended)
        self.events = TrackEvents(np.array(started, np.int64), np.array(ended, np.int64))
        return self.events

    def finish(self) -> TrackEvents:
        """End every live started ID (end of stream)."""
        ended = sorted(self._live)
        self._live.clear()
        self.events = TrackEvents(np.zeros(0, np.int64), np.array(ended, np.int64))
        return self.events

    @property
    def live_started(self) -> frozenset:
        return frozenset(self._live)


_HAS_PREDICTED = "predicted" in {f.name for f in fields(Tracks)}


def make_tracks(xyxy, score, class_id, track_id, age, hits, predicted) -> Tracks:
    """Build ``Tracks`` (N rows); ``predicted`` (N,) bool is set where the contract has it."""
    kw = dict(track_id=np.asarray(track_id, np.int64), age=np.asarray(age, np.int32),
              hits=np.asarray(hits, np.int32))
    if _HAS_PREDICTED:
        kw["predicted"] = np.asarray(predicted, bool)
    return Tracks(np.asarray(xyxy, np.float32).reshape(-1, 4), np.asarray(score, np.float32),
                  np.asarray(class_id, np.int32), None, **kw)
