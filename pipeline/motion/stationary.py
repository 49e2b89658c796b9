"""Objects that stand still keep their tracks without a detection per frame.

On a frame the motion gate skips (nothing moved), the tracker is still updated, as on every
frame, with the detections it would most likely have got: each held track's last observed box,
class and score (`StationaryBook.held`). A held object so keeps its track and its ID; a track
that was already being missed (it left while things moved) is not held and ends as it would
have; the score statistics the tracker keeps see what a detection per frame would have shown.

Held: tracks observed at the last real detection, and stationary tracks missed at fewer than
``miss_tolerance`` real detections in a row (a parked car the detector misses once at a
re-check keeps its ID). Stationary: a track whose box kept an IoU of at least ``move_iou``
with where it stopped for ``threshold`` frames (held frames count: nothing moved in them).
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
            st.box, st.class_id, st.misses = box, int(tracks.class_id[k]), 0
            if detected:
                st.score = float(tracks.score[k])
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

    def _held_ids(self) -> List[int]:
        return [tid for tid, st in self.tracks.items()
                if st.misses == 0 or (st.still >= self.threshold and st.misses < self.miss_tolerance)]

    def held(self) -> Detections:
        """The detections of a skipped frame: the held tracks' last boxes (N,4), scores (N,)
        and classes (N,)."""
        ids = self._held_ids()
        if not ids:
            return Detections.empty()
        sts = [self.tracks[i] for i in ids]
        return Detections(np.stack([s.box for s in sts]).astype(np.float32),
                          np.array([s.score for s in sts], np.float32),
                          np.array([s.class_id for s in sts], np.int32))

    def stationary(self, track_ids: np.ndarray) -> np.ndarray:
        """(N,) track ids -> (N,) bool: stationary."""
        return np.array([(st := self.tracks.get(int(t))) is not None and st.still >= self.threshold
                         for t in np.asarray(track_ids).tolist()], bool)

    def stationary_ids(self) -> List[int]:
        return sorted(t for t, st in self.tracks.items() if st.still >= self.threshold)
