"""Tracker interface and the ``build_tracker`` factory.

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


def _presets() -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (tracker kind, config overrides). Measured numbers: docs/tracking.md.

    Score thresholds depend on the detector's score scale, so there are two families:
    detector-agnostic presets (``sort``, ``bytetrack``, ``deepsort``, ``deepsort-byte``) for
    live use, and ``*-mot15`` presets whose thresholds were tuned once on all seven MOT15
    sequences with their Faster R-CNN ``det.txt`` scores (the best configurations there).
    """
    from .kalman import DEFAULT_PARAMS

    mot15 = dict(det_thresh=0.75, new_track_thresh=0.97)
    mot15_byte = dict(mot15, low_thresh=0.5, second_iou_threshold=0.5)
    # ByteTrack's published defaults (YOLOX scores): high 0.5, low 0.1, new tracks from 0.6
    byte = dict(det_thresh=0.5, low_thresh=0.1, new_track_thresh=0.6, second_iou_threshold=0.5)
    return {
        # abewley/sort settings: max_age=1, min_hits=3, IoU 0.3, every matched track output in
        # the first min_hits frames, min_hits consecutive hits re-required after a miss,
        # deep_sort's Kalman noise.
        "sort-ref": ("sort", dict(max_age=1, min_hits=3, iou_threshold=0.3, output_warmup=True,
                                  persistent_confirm=False, delete_tentative_on_miss=False,
                                  kalman=DEFAULT_PARAMS)),
        "sort": ("sort", {}),
        "bytetrack": ("sort", dict(byte)),
        "deepsort": ("deepsort", {}),
        "deepsort-byte": ("deepsort", dict(byte)),
        # best motion-only configuration on MOT15 (one configuration for all sequences)
        "sort-mot15": ("sort", dict(mot15)),
        "bytetrack-mot15": ("sort", dict(mot15_byte)),
        "deepsort-mot15": ("deepsort", dict(mot15)),
        "deepsort-byte-mot15": ("deepsort", dict(mot15_byte)),
    }


TRACKER_NAMES = tuple(_presets())


def build_tracker(name: str = "sort", **overrides: Any) -> Tracker:
    """Create a tracker by preset name; keyword overrides replace config fields.

    Names: ``sort-ref`` (abewley/sort settings), ``sort``, ``bytetrack`` (sort + low-score
    second pass, ByteTrack's thresholds), ``deepsort``, ``deepsort-byte``, and the MOT15-tuned
    ``sort-mot15`` (best motion-only configuration), ``bytetrack-mot15``, ``deepsort-mot15``,
    ``deepsort-byte-mot15``. The deepsort presets use the built-in
    :class:`trackers.encoders.HistogramEncoder` whenever ``update`` gets a frame; pass
    ``encoder=`` (another :class:`trackers.encoders.Encoder`, or None for motion only) to
    change that. Unknown names or config keys raise ``ValueError`` naming the allowed values.
    """
    presets = _presets()
    if name not in presets:
        raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(presets)}")
    kind, preset = presets[name]
    if kind == "sort":
        from .sort import SortConfig, SortTracker
        cfg = config_from_dict(SortConfig, {**preset, **overrides})
        return SortTracker(cfg)
    from .deepsort import DeepSortConfig, DeepSortTracker
    from .encoders import HistogramEncoder
    overrides = dict(overrides)
    encoder = overrides.pop("encoder") if "encoder" in overrides else HistogramEncoder()
    cfg = config_from_dict(DeepSortConfig, {**preset, **overrides})
    return DeepSortTracker(cfg, encoder=encoder)
