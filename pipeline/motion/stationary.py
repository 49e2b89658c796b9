"""Objects that stand still keep their tracks without a detection per frame.

On a frame the motion gate skips (nothing moved), the tracker is still updated, as on every
frame, with the detections it would most likely have got (`StationaryBook.held`): those of the
last detected frame (nothing moved since, so the detector would find the same), plus, for a
stationary track that the last re-check missed (fewer than ``miss_tolerance`` re-checks in a
row), its last observed box, class and score. A held object so keeps its track and its ID (a
parked car the detector misses once at a re-check too); a track that was already being missed
(it left while things moved) gets nothing and ends as it would have; the score statistics the
tracker keeps (the hybrid tracker's thresholds are quantiles of them) see what a detection per
frame of the still scene would have shown, low scores included.

Stationary: a track whose box kept an IoU of at least ``move_iou`` with where it stopped for
``threshold`` frames (held frames count: nothing moved in them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List

import numpy as np
from trackpipe.models.types import Detections, Tracks


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (4,) xyxy boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class _Track:
    box: np.ndarray        # (4,) last observed xyxy
    score: float
    class_id: int
    anchor: np.ndarray     # (4,) where it stopped
    still: int = 0         # frames its box stayed at the anchor
    misses: int = 0        # real detections in a row that missed it


class StationaryBook:
    """Held and stationary tracks of one camera (module docstring). Memory: the live tracks."""

    def __init__(self, threshold: int = 25, move_iou: float = 0.8, miss_tolerance: int = 2):
        self.threshold = max(1, int(threshold))
        self.move_iou = float(move_iou)
        self.miss_tolerance = max(1, int(miss_tolerance))
        self.tracks: Dict[int, _Track] = {}
        self.last: Detections = Detections.empty()   # the last detected frame's (filtered) detections

    def remember(self, dets: Detections) -> None:
        """A detected frame's detections, as the tracker got them (N,4)/(N,)/(N,)."""
        self.last = dets

    def observe(self, tracks: Tracks, live_ids: Iterable[int], detected: bool) -> None:
        """After a tracker update: ``tracks`` its output (ids as the run numbers them),
        ``live_ids`` every id the tracker holds, ``detected``: the frame had a real detection."""
        pred = np.asarray(tracks.predicted, bool) if tracks.predicted is not None else np.zeros(len(tracks), bool)
        seen = set()
        for k, tid in enumerate(np.asarray(tracks.track_id).tolist()):
            if pred[k]:
                continue
            seen.add(tid)
            box = np.asarray(tracks.xyxy[k], np.float64)
            st = self.tracks.get(tid)
            if st is None:
                self.tracks[tid] = _Track(box, float(tracks.score[k]), int(tracks.class_id[k]), box.copy())
                continue
            st.box, st.class_id = box, int(tracks.class_id[k])
            if detected:   # a held frame's match is no sighting
                st.score, st.misses = float(tracks.score[k]), 0
            if box_iou(box, st.anchor) >= self.move_iou:
                st.still += 1
            else:
                st.anchor, st.still = box.copy(), 0
        live = {int(i) for i in live_ids}
        for tid in list(self.tracks):
            if tid not in live:
                del self.tracks[tid]
            elif detected and tid not in seen:
                self.tracks[tid].misses += 1

    def _missed_stationary(self) -> List[int]:
        return [tid for tid, st in self.tracks.items()
                if st.still >= self.threshold and 0 < st.misses < self.miss_tolerance]

    def held(self) -> Detections:
        """The detections of a skipped frame: the last detected frame's, plus the stationary
        tracks the last re-check missed at their last boxes: (N,4) boxes, (N,) scores, (N,) classes."""
        sts = [self.tracks[i] for i in self._missed_stationary()]
        if not sts:
            return self.last
        return Detections(np.concatenate([self.last.xyxy, np.stack([s.box for s in sts]).astype(np.float32)]),
                          np.concatenate([self.last.score, np.array([s.score for s in sts], np.float32)]),
                          np.concatenate([self.last.class_id, np.array([s.class_id for s in sts], np.int32)]))

    def stationary(self, track_ids: np.ndarray) -> np.ndarray:
        """(N,) track ids -> (N,) bool: stationary."""
        return np.array([(st := self.tracks.get(int(t))) is not None and st.still >= self.threshold
                         for t in np.asarray(track_ids).tolist()], bool)

    def stationary_ids(self) -> List[int]:
        return sorted(t for t, st in self.tracks.items() if st.still >= self.threshold)
