"""DeepSORT: matching cascade with Mahalanobis gating and appearance, IoU for the rest.

One frame of :meth:`DeepSortTracker.update` (after nwojke/deep_sort ``tracker.py``):

1. predict every track;
2. detection features: ``dets.feature`` if present, else ``encoder(frame, dets.xyxy)`` when an
   encoder and a frame are given, else none (motion-only mode);
3. cascade over confirmed tracks, most recently updated first (``time_since_update``
   1..max_age), on detections with ``score >= det_thresh``:
   - with features: cost = smallest cosine distance to the track's gallery (at most
     ``nn_budget`` samples), pairs failing the Mahalanobis gate (chi-square 95%, 4 dof)
     forbidden, pairs above ``max_cosine_distance`` rejected;
   - motion-only: cost = 1 - IoU, Mahalanobis gate, pairs above ``max_iou_distance`` rejected
     (or, with ``motion_cost="mahalanobis"``, the gated squared Mahalanobis distance divided
     by the gate);
4. IoU matching (``1 - IoU <= max_iou_distance``) of the tentative tracks and the confirmed
   tracks that were matched in the previous frame against the detections left;
5. optional low-score second pass (``low_thresh``; ByteTrack idea) by IoU;
6. Kalman update; tentative tracks are deleted at their first miss, confirmed ones after
   ``max_age`` misses; unmatched detections with ``score >= new_track_thresh`` start
   tentative tracks, confirmed after ``n_init`` consecutive detections;
7. output: confirmed tracks matched this frame.

The tracking core imports neither OpenCV nor TensorFlow; encoders do, lazily.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from trackpipe.models.types import Detections, Tracks, to_xyah

from . import kalman, matching
from .table_tracker import TableTracker

logger = logging.getLogger(__name__)


@dataclass
class DeepSortConfig:
    """DeepSORT settings. Defaults: deep_sort_app's (max_age 30, n_init 3, cosine gate 0.2,
    budget 100, IoU gate 0.7, deep_sort's Kalman noise); no score threshold.

    max_age: misses before a confirmed track is deleted.
    n_init: consecutive detections (including the first) to confirm a track.
    max_cosine_distance: appearance gate of the cascade.
    nn_budget: appearance samples kept per track (bounded gallery).
    max_iou_distance: IoU stage gate (1 - IoU), also the motion-only cascade gate.
    motion_cost: cascade cost without features: ``iou`` or ``mahalanobis``.
    gate_only_position: Mahalanobis gate on (x, y) only (2 dof).
    det_thresh / new_track_thresh / low_thresh / second_iou_threshold / second_max_miss /
    output_detection_box / class_aware: as in :class:`trackers.sort.SortConfig`.
    """

    max_age: int = 30
    n_init: int = 3
    max_cosine_distance: float = 0.2
    nn_budget: int = 100
    max_iou_distance: float = 0.7
    motion_cost: str = "iou"
    gate_only_position: bool = False
    det_thresh: float = 0.0
    new_track_thresh: Optional[float] = None
    low_thresh: Optional[float] = None
    second_iou_threshold: float = 0.5
    second_max_miss: int = 1
    output_detection_box: bool = False
    class_aware: bool = True
    kalman: kalman.KalmanParams = kalman.DEFAULT_PARAMS

    def __post_init__(self) -> None:
        if self.motion_cost not in ("iou", "mahalanobis"):
            raise ValueError(f"motion_cost must be 'iou' or 'mahalanobis', got {self.motion_cost!r}")
        if self.n_init < 1 or self.max_age < 0 or self.nn_budget < 1:
            raise ValueError("n_init and nn_budget must be >= 1, max_age >= 0")
        if self.low_thresh is not None and self.low_thresh > self.det_thresh:
            raise ValueError(f"low_thresh ({self.low_thresh}) must be <= det_thresh ({self.det_thresh})")


class DeepSortTracker(TableTracker):
    """DeepSORT with pluggable appearance (see module docstring).

    encoder: a :class:`trackers.encoders.Encoder` or None. Features can also arrive in
    ``dets.feature`` (N,D) (e.g. from the detector); then no encoder is needed.
    """

    name = "deepsort"

    def __init__(self, config: Optional[DeepSortConfig] = None, encoder=None) -> None:
        self.config = config or DeepSortConfig()
        self.encoder = encoder
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._gallery = matching.FeatureGallery(self.config.nn_budget)

    @property
    def gallery(self) -> matching.FeatureGallery:
        """Appearance samples of the live tracks (at most nn_budget per track)."""
        return self._gallery

    def _features(self, dets: Detections, frame: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if dets.feature is not None:
            return dets.feature
        if self.encoder is not None and frame is not None:
            return self.encoder(frame, dets.xyxy)
        return None

    def _cascade_cost(self, rows: np.ndarray, cols: np.ndarray, boxes: np.ndarray,
                      xyah: np.ndarray, classes: np.ndarray,
                      feats: Optional[np.ndarray]) -> tuple[np.ndarray, float]:
        """(R,C) gated cost of confirmed track rows vs detection cols, and its max_cost."""
        c, t = self.config, self._tracks
        if feats is not None:
            cost = self._gallery.distance(t.track_id[rows], feats[cols])
            max_cost = c.max_cosine_distance
        elif c.motion_cost == "iou":
            cost = matching.iou_cost(self._pred_xyxy[rows], boxes[cols])
            max_cost = c.max_iou_distance
        else:
            cost = None
            max_cost = 1.0
        d2 = kalman.gating_distance(t.mean[rows], t.cov[rows], xyah[cols],
                                    c.gate_only_position, c.kalman)
        gate = kalman.CHI2INV95[2 if c.gate_only_position else 4]
        if cost is None:
            cost = d2 / gate
        cost = np.where(d2 > gate, matching.INFTY_COST, cost)
        if c.class_aware:
            cost[matching.class_mismatch(t.class_id[rows], classes[cols])] = matching.INFTY_COST
        return cost, max_cost

    def update(self, dets: Detections, frame: Optional[np.ndarray] = None) -> Tracks:
        """Advance one frame. dets: (N) detections; frame: (H,W,3) BGR, used by the encoder."""
        c = self.config
        boxes, score, classes, high = self._predict(dets)
        t = self._tracks
        xyah = to_xyah(boxes)
        feats = self._features(dets, frame)
        if feats is not None:
            feats = matching.l2_normalize(feats)
        high_idx = np.flatnonzero(high)

        confirmed = np.flatnonzero(t.confirmed)
        # 1) cascade on confirmed tracks
        if len(confirmed) and len(high_idx):
            cost, max_cost = self._cascade_cost(confirmed, high_idx, boxes, xyah, classes, feats)
            m, _, free_local = matching.matching_cascade(cost, max_cost, c.max_age,
                                                         t.time_since_update[confirmed])
            m_a = np.stack([confirmed[m[:, 0]], high_idx[m[:, 1]]], axis=1)
            free = high_idx[free_local]
        else:
            m_a, free = np.zeros((0, 2), np.int64), high_idx
        # 2) IoU for tentative + confirmed tracks just lost this frame
        matched = np.zeros(len(t), bool)
        matched[m_a[:, 0]] = True
        cand = np.flatnonzero(~matched & (~t.confirmed | (t.time_since_update == 1)))
        m_b = self._iou(cand, free, boxes, classes, 1.0 - c.max_iou_distance)
        matches = np.concatenate([m_a, m_b]) if len(m_b) else m_a
        # 3) low-score second pass
        if c.low_thresh is not None:
            matched[m_b[:, 0]] = True
            m_c = self._low_score_pass(~matched & t.confirmed, score, high, boxes, classes)
            if len(m_c):
                matches = np.concatenate([matches, m_c])

        if len(matches):
            r, d = matches[:, 0], matches[:, 1]
            t.update(r, xyah[d], boxes[d], score[d], classes[d], c.kalman)
            if feats is not None:
                self._gallery.add(t.track_id[r], feats[d])

        t.confirmed |= t.hit_streak >= c.n_init - 1
        dead = (t.time_since_update > c.max_age) | (~t.confirmed & (t.time_since_update > 0))
        if dead.any():
            t = t.select(~dead)

        t, birth, first_id = self._births(t, matches, high, score, boxes, xyah, classes, c.n_init - 1)
        if feats is not None and len(birth):
            self._gallery.add(np.arange(first_id, first_id + len(birth)), feats[birth])
        self._tracks = t
        if len(self._gallery):
            self._gallery.retain(t.track_id)
        return t.to_tracks((t.time_since_update == 0) & t.confirmed, c.output_detection_box)
