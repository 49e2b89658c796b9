"""Object filters per class and the object mask, applied to detections before tracking, and
the ``threshold`` gate on tracks: events, counts and zones see only objects that pass.

Per detection (`ObjectFilters.keep`): ``min_area``/``max_area`` (box area; below 1: a
fraction of the frame's area, else pixels), ``min_ratio``/``max_ratio`` (width / height),
``min_score``; and the camera's object mask (a detection whose bottom centre lies in a mask
polygon is dropped). Per track (`ThresholdGate`): the median of its first scores, padded with
zeros to three (Frigate's rule: one detection never counts), must reach ``threshold`` before the
object counts; once it has, it counts until its track ends.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
from trackpipe.models.types import Detections, Tracks

from .masks import PolygonMask

HISTORY = 10     # scores kept per track (the most recent)
PAD_TO = 3       # fewer scores are padded with zeros


@dataclass(frozen=True)
class ClassFilter:
    """The filter of one class (None: no bound)."""

    min_area: Optional[float] = None
    max_area: Optional[float] = None
    min_ratio: Optional[float] = None
    max_ratio: Optional[float] = None
    min_score: Optional[float] = None
    threshold: Optional[float] = None

    def keep(self, xyxy: np.ndarray, score: np.ndarray, frame_area: float) -> np.ndarray:
        """(N,4) boxes, (N,) scores -> (N,) bool: passes every bound of this filter."""
        b = np.asarray(xyxy, np.float64).reshape(-1, 4)
        w, h = np.maximum(b[:, 2] - b[:, 0], 0.0), np.maximum(b[:, 3] - b[:, 1], 0.0)
        area = w * h
        ratio = w / np.maximum(h, 1e-9)
        ok = np.ones(len(b), bool)

        def px(v: float) -> float:
            return v * frame_area if v < 1.0 else v

        if self.min_area is not None:
            ok &= area >= px(self.min_area)
        if self.max_area is not None:
            ok &= area <= px(self.max_area)
        if self.min_ratio is not None:
            ok &= ratio >= self.min_ratio
        if self.max_ratio is not None:
            ok &= ratio <= self.max_ratio
        if self.min_score is not None:
            ok &= np.asarray(score, np.float64) >= self.min_score
        return ok


@dataclass
class ObjectFilters:
    """One camera's filters: ``by_class`` {class id: `ClassFilter`}, ``mask`` its object mask
    (every class), ``class_masks`` {class id: `PolygonMask`} the masks of one class. Counts what
    it removed: ``removed`` {reason: n} (filter, mask)."""

    by_class: Dict[int, ClassFilter] = field(default_factory=dict)
    mask: PolygonMask = field(default_factory=PolygonMask)
    class_masks: Dict[int, PolygonMask] = field(default_factory=dict)
    removed: Dict[str, int] = field(default_factory=lambda: {"filter": 0, "mask": 0})

    def __bool__(self) -> bool:
        return bool(self.by_class) or bool(self.mask) or bool(self.class_masks)

    def keep(self, dets: Detections, frame_wh: Tuple[int, int]) -> np.ndarray:
        """(N,) bool: the detections that pass their class's filter and the object mask."""
        n = len(dets)
        ok = np.ones(n, bool)
        if not n:
            return ok
        area = float(frame_wh[0]) * float(frame_wh[1])
        cls = np.asarray(dets.class_id)
        for cid, f in self.by_class.items():
            rows = np.flatnonzero(cls == cid)
            if len(rows):
                ok[rows] &= f.keep(dets.xyxy[rows], dets.score[rows], area)
        n_filter = int(n - ok.sum())
        if self.mask:
            ok &= self.mask.keep_boxes(dets.xyxy)
        for cid, m in self.class_masks.items():
            rows = np.flatnonzero(cls == cid)
            if len(rows):
                ok[rows] &= m.keep_boxes(dets.xyxy[rows])
        self.removed["filter"] += n_filter
        self.removed["mask"] += int(n - ok.sum()) - n_filter
        return ok

    def apply(self, dets: Optional[Detections], frame_wh: Tuple[int, int]) -> Optional[Detections]:
        """The detections that pass (None stays None)."""
        if dets is None or not self or not len(dets):
            return dets
        ok = self.keep(dets, frame_wh)
        return dets if ok.all() else dets[ok]

    def thresholds(self) -> Dict[int, float]:
        return {c: f.threshold for c, f in self.by_class.items() if f.threshold is not None}


class ThresholdGate:
    """Per-track ``threshold`` (module docstring): ``thresholds`` {class id: score}; classes
    without one count at once. Memory: the live tracks' score histories."""

    def __init__(self, thresholds: Mapping[int, float]):
        self.thresholds = dict(thresholds)
        self.scores: Dict[int, List[float]] = {}
        self.passed: set = set()
        self.held_back = 0          # track ids that ended without ever counting

    def __bool__(self) -> bool:
        return bool(self.thresholds)

    @staticmethod
    def computed(scores: List[float]) -> float:
        s = list(scores[-HISTORY:])
        return statistics.median(s + [0.0] * (PAD_TO - len(s)))

    def keep(self, tracks: Tracks, live_ids: Iterable[int]) -> np.ndarray:
        """One frame's tracks -> (N,) bool: the tracks that count. Observed rows add their score;
        ids the tracker no longer holds are forgotten."""
        n = len(tracks)
        ok = np.ones(n, bool)
        pred = np.asarray(tracks.predicted, bool) if tracks.predicted is not None else np.zeros(n, bool)
        for k, tid in enumerate(np.asarray(tracks.track_id).tolist()):
            th = self.thresholds.get(int(tracks.class_id[k]))
            if th is None or tid in self.passed:
                continue
            if not pred[k]:
                hist = self.scores.setdefault(tid, [])
                hist.append(float(tracks.score[k]))
                del hist[:-HISTORY]
                if self.computed(hist) >= th:
                    self.passed.add(tid)
                    self.scores.pop(tid, None)
                    continue
            ok[k] = False
        live = {int(i) for i in live_ids}
        for tid in [t for t in self.scores if t not in live]:
            del self.scores[tid]
            self.held_back += 1
        self.passed &= live
        return ok
