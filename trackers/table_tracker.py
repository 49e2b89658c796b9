"""What SORT and DeepSORT share: a :class:`TrackTable` predicted every frame, IoU matching of
track rows against this frame's predicted boxes, the low-score second pass (ByteTrack) and
births from unmatched high-score detections. Subclasses implement ``update`` with these steps."""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from trackpipe.models.types import Detections

from . import matching
from .base import Tracker
from .tracks import TrackTable


class TableTracker(Tracker):
    """Subclasses set ``self.config`` (with ``kalman``, ``det_thresh``, ``low_thresh``,
    ``second_max_miss``, ``second_iou_threshold``, ``new_track_thresh``, ``class_aware``) and
    call ``reset()`` in their constructor."""

    config: Any

    def reset(self) -> None:
        self._tracks = TrackTable.empty()
        self._next_id = 1
        self._frame = 0
        self._pred_xyxy = np.zeros((0, 4))     # this frame's predicted boxes (T,4) xyxy

    @property
    def num_tracks(self) -> int:
        return len(self._tracks)

    @property
    def frame_count(self) -> int:
        return self._frame

    @property
    def live_track_ids(self) -> np.ndarray:
        """(T,) ids of every live track (tentative, confirmed, coasting): what
        :class:`trackers.lifecycle.LifecycleLog` needs to emit ``track_ended`` exactly once."""
        return self._tracks.track_id.copy()

    def _predict(self, dets: Detections) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Advance every track one frame -> (boxes (N,4) float64 xyxy, score (N,), class_id (N,),
        high (N,) bool: score >= det_thresh)."""
        self._frame += 1
        self._tracks.predict(self.config.kalman)
        self._pred_xyxy = self._tracks.predicted_xyxy()
        boxes = np.asarray(dets.xyxy, dtype=np.float64)
        return boxes, dets.score, dets.class_id, dets.score >= self.config.det_thresh

    def _iou(self, rows: np.ndarray, cols: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
             min_iou: float) -> np.ndarray:
        """(M,2) [track row, detection index] IoU matches of ``rows`` x ``cols``."""
        return matching.iou_match_rows(self._pred_xyxy, self._tracks.class_id, rows, cols, boxes, classes,
                                       min_iou, self.config.class_aware)

    def _low_score_pass(self, candidates: np.ndarray, score: np.ndarray, high: np.ndarray,
                        boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """ByteTrack's second association: track rows allowed by ``candidates`` (T,) bool and
        missed for at most ``second_max_miss`` frames vs the low-score detections -> (M,2)."""
        c = self.config
        low_idx = np.flatnonzero((score >= c.low_thresh) & ~high)
        rows = np.flatnonzero(candidates & (self._tracks.time_since_update <= c.second_max_miss))
        return self._iou(rows, low_idx, boxes, classes, c.second_iou_threshold)

    def _births(self, t: TrackTable, matches: np.ndarray, high: np.ndarray, score: np.ndarray,
                boxes: np.ndarray, xyah: np.ndarray, classes: np.ndarray,
                confirm_hits: int) -> Tuple[TrackTable, np.ndarray, int]:
        """New tracks from unmatched high-score detections (score >= new_track_thresh, default
        det_thresh) -> (table, detection indices born (K,), first new id)."""
        c = self.config
        new_thresh = c.det_thresh if c.new_track_thresh is None else c.new_track_thresh
        unmatched = high.copy()
        unmatched[matches[:, 1]] = False
        birth = np.flatnonzero(unmatched & (score >= new_thresh))
        first_id = self._next_id
        if len(birth):
            t = t.append(TrackTable.create(xyah[birth], boxes[birth], score[birth],
                                           classes[birth], self._next_id, c.kalman))
            self._next_id += len(birth)
            t.confirmed |= t.hit_streak >= confirm_hits  # confirm_hits 0: confirmed at birth
        return t, birth, first_id
