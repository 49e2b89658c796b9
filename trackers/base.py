"""Tracker interface (the presets and ``build_tracker`` live in :mod:`trackers.factory`).

Every tracker is called once per frame, even with no detections::

    tracker = build_tracker("sort")
    for dets in frames:            # models.types.Detections
        tracks = tracker.update(dets)  # models.types.Tracks

IDs come from a per-instance counter starting at 1; ``reset()`` clears all state (including
the counter) so one instance can run several sequences.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Optional, TypeVar

import numpy as np

from trackpipe.models.types import Detections, Tracks


_C = TypeVar("_C")


def config_from_dict(cls: type[_C], values: dict[str, Any]) -> _C:
    """Build dataclass ``cls`` from ``values``; unknown keys raise ValueError naming the allowed ones."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(allowed)}")
    return cls(**values)


class Tracker(abc.ABC):
    """Base class: ``update(dets, frame=None) -> Tracks`` every frame, ``reset()``."""

    #: short name used by ``build_tracker`` and the CLI
    name: str = "tracker"

    @abc.abstractmethod
    def update(self, dets: Detections, frame: Optional[np.ndarray] = None) -> Tracks:
        """Advance one frame. dets: this frame's detections (may be empty); frame: (H,W,3)
        uint8 BGR image or None (only appearance encoders use it)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget every track and restart the id counter at 1."""

    @property
    @abc.abstractmethod
    def num_tracks(self) -> int:
        """Number of live tracks held (confirmed, tentative and coasting)."""
