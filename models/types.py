"""Data contracts shared by every stage: detections, tracks and box converters.

Boxes are always ``xyxy`` pixels of the original frame at every boundary; other
formats only through the named converters below. Pure numpy: the tracking core
imports this module, so it must never import TensorFlow or OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np


def _as(arr, dtype, shape_tail: tuple, name: str) -> np.ndarray:
    a = np.asarray(arr, dtype=dtype)
    if a.ndim != 1 + len(shape_tail) or (shape_tail and a.shape[1:] != shape_tail):
        want = "(N," + ",".join(str(s) for s in shape_tail) + ")" if shape_tail else "(N,)"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    return a


@dataclass
class Detections:
    """Detections in one frame, as parallel arrays.

    xyxy:     (N, 4) float32, x1, y1, x2, y2 in source-frame pixels
    score:    (N,)   float32, confidence in [0, 1]
    class_id: (N,)   int32
    feature:  (N, D) float32 appearance embedding, or None
    """

    xyxy: np.ndarray
    score: np.ndarray
    class_id: np.ndarray
    feature: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.xyxy = _as(self.xyxy, np.float32, (4,), "xyxy").reshape(-1, 4)
        n = len(self.xyxy)
        self.score = _as(self.score, np.float32, (), "score")
        self.class_id = _as(self.class_id, np.int32, (), "class_id")
        if self.feature is not None:
            self.feature = np.asarray(self.feature, dtype=np.float32)
            if self.feature.ndim != 2:
                raise ValueError(f"feature must have shape (N,D), got {self.feature.shape}")
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and len(v) != n:
                raise ValueError(f"{f.name} has {len(v)} rows, xyxy has {n}")

    @classmethod
    def empty(cls, feature_dim: Optional[int] = None) -> "Detections":
        feat = None if feature_dim is None else np.zeros((0, feature_dim), np.float32)
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), feat)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Detections":
        """Index with a boolean mask, an integer array or a slice; always returns the same type."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        kw = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[index]) for f in fields(self)}
        return type(self)(**kw)

    def with_feature(self, feature: np.ndarray) -> "Detections":
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        kw["feature"] = feature
        return type(self)(**kw)

    @classmethod
    def concatenate(cls, items: list) -> "Detections":
        if not items:
            return cls.empty()
        kw = {}
        for f in fields(cls):
            vals = [getattr(d, f.name) for d in items]
            kw[f.name] = None if any(v is None for v in vals) else np.concatenate(vals)
        return cls(**kw)


@dataclass
class Tracks(Detections):
    """Confirmed tracks output in one frame: Detections plus identity and lifecycle.

    track_id: (N,) int64, unique per tracker instance, starting at 1
    age:      (N,) int32 frames since the track was created
    hits:     (N,) int32 number of frames with a matched detection
    predicted: (N,) bool, True where the track was not matched in this frame and the box is
              the tracker's prediction (drawn and written so that tracks do not flicker);
              all False when not given
    """

    track_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    age: Optional[np.ndarray] = None
    hits: Optional[np.ndarray] = None
    predicted: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.track_id = _as(self.track_id, np.int64, (), "track_id")
        n = len(np.asarray(self.xyxy).reshape(-1, 4))
        if self.age is None:
            self.age = np.zeros(n, np.int32)
        if self.hits is None:
            self.hits = np.zeros(n, np.int32)
        if self.predicted is None:
            self.predicted = np.zeros(n, bool)
        self.age = _as(self.age, np.int32, (), "age")
        self.hits = _as(self.hits, np.int32, (), "hits")
        self.predicted = _as(self.predicted, bool, (), "predicted")
        super().__post_init__()

    @classmethod
    def empty(cls, feature_dim: Optional[int] = None) -> "Tracks":
        feat = None if feature_dim is None else np.zeros((0, feature_dim), np.float32)
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), feat,
                   track_id=np.zeros(0, np.int64))


def to_tlwh(xyxy: np.ndarray) -> np.ndarray:
    """(N,4) x1,y1,x2,y2 -> (N,4) top-left x, top-left y, width, height."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    out = xyxy.copy()
    out[:, 2:] = xyxy[:, 2:] - xyxy[:, :2]
    return out


def from_tlwh(tlwh: np.ndarray) -> np.ndarray:
    """(N,4) tlwh -> (N,4) xyxy."""
    tlwh = np.asarray(tlwh, dtype=np.float64).reshape(-1, 4)
    out = tlwh.copy()
    out[:, 2:] = tlwh[:, :2] + tlwh[:, 2:]
    return out


def to_xyah(xyxy: np.ndarray) -> np.ndarray:
    """(N,4) xyxy -> (N,4) centre x, centre y, aspect ratio w/h, height."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    w = xyxy[:, 2] - xyxy[:, 0]
    h = xyxy[:, 3] - xyxy[:, 1]
    return np.stack([xyxy[:, 0] + w / 2, xyxy[:, 1] + h / 2, w / np.maximum(h, 1e-9), h], axis=1)


def from_xyah(xyah: np.ndarray) -> np.ndarray:
    """(N,4) centre x, centre y, aspect, height -> (N,4) xyxy."""
    xyah = np.asarray(xyah, dtype=np.float64).reshape(-1, 4)
    w = xyah[:, 2] * xyah[:, 3]
    h = xyah[:, 3]
    return np.stack([xyah[:, 0] - w / 2, xyah[:, 1] - h / 2, xyah[:, 0] + w / 2, xyah[:, 1] + h / 2], axis=1)
