"""Association: IoU and cosine costs, Mahalanobis gating, Hungarian assignment, cascade.

All costs are (T,D) matrices, rows = tracks, columns = detections. Assignment uses
``scipy.optimize.linear_sum_assignment``; a pair whose cost exceeds ``max_cost`` is never
returned as a match (as in deep_sort's ``min_cost_matching``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from . import kalman

#: Cost assigned to forbidden pairs (larger than any useful threshold, finite for scipy).
INFTY_COST = 1e5


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes.

    a: (N,4) xyxy, b: (M,4) xyxy -> (N,M) in [0, 1]; 0 where a box has no area.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    # in place, few temporaries: a crowd (300 x 600 pairs) is tracked every frame
    inter = np.minimum(a[:, None, 2], b[None, :, 2])
    inter -= np.maximum(a[:, None, 0], b[None, :, 0])
    np.maximum(inter, 0.0, out=inter)
    ih = np.minimum(a[:, None, 3], b[None, :, 3])
    ih -= np.maximum(a[:, None, 1], b[None, :, 1])
    np.maximum(ih, 0.0, out=ih)
    inter *= ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = np.add(area_a[:, None], area_b[None, :], out=ih)
    union -= inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def iou_cost(tracks_xyxy: np.ndarray, dets_xyxy: np.ndarray) -> np.ndarray:
    """(T,4), (D,4) xyxy -> (T,D) cost 1 - IoU."""
    return 1.0 - iou_matrix(tracks_xyxy, dets_xyxy)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """(N,D) -> (N,D) rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, eps)


def cosine_distance(a: np.ndarray, b: np.ndarray, normalized: bool = False) -> np.ndarray:
    """(N,K), (M,K) -> (N,M) cosine distance 1 - cos in [0, 2]."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if not normalized:
        a, b = l2_normalize(a), l2_normalize(b)
    return 1.0 - a @ b.T


def gate_cost_matrix(cost: np.ndarray, mean: np.ndarray, covariance: np.ndarray,
                     measurements: np.ndarray, only_position: bool = False,
                     gated_cost: float = INFTY_COST,
                     kalman_params: kalman.KalmanParams = kalman.DEFAULT_PARAMS) -> np.ndarray:
    """Forbid pairs that are implausible under the Kalman state.

    cost: (T,D); mean: (T,8); covariance: (T,8,8); measurements: (D,4) xyah.
    Returns a copy of ``cost`` with ``gated_cost`` where the squared Mahalanobis distance
    exceeds the chi-square 95% quantile (4 dof, or 2 with ``only_position``).
    """
    cost = np.array(cost, dtype=np.float64, copy=True)
    if cost.size == 0:
        return cost
    d2 = kalman.gating_distance(mean, covariance, measurements, only_position, kalman_params)
    cost[d2 > kalman.CHI2INV95[2 if only_position else 4]] = gated_cost
    return cost


def linear_assignment(cost: np.ndarray, max_cost: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost assignment, rejecting pairs above ``max_cost``.

    cost: (T,D). Returns matches (K,2) int64 [row, col], unmatched rows (int64),
    unmatched cols (int64), each sorted ascending.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n_rows, n_cols = cost.shape
    if n_rows == 0 or n_cols == 0:
        return np.zeros((0, 2), np.int64), np.arange(n_rows), np.arange(n_cols)
    # Pairs above the threshold cost the same (just above it), so they never steer the
    # optimum, and are dropped afterwards (deep_sort's min_cost_matching).
    clipped = np.minimum(cost, max_cost + 1e-5)
    rows, cols = linear_sum_assignment(clipped)
    ok = cost[rows, cols] <= max_cost
    rows, cols = rows[ok], cols[ok]
    row_free = np.ones(n_rows, bool)
    row_free[rows] = False
    col_free = np.ones(n_cols, bool)
    col_free[cols] = False
    matches = np.stack([rows, cols], axis=1).astype(np.int64)
    return matches, np.flatnonzero(row_free), np.flatnonzero(col_free)


def class_mismatch(track_class: np.ndarray, det_class: np.ndarray) -> np.ndarray:
    """(T,), (D,) int -> (T,D) bool, True where the classes differ."""
    return np.asarray(track_class)[:, None] != np.asarray(det_class)[None, :]


def iou_assign(track_xyxy: np.ndarray, det_xyxy: np.ndarray, min_iou: float,
               track_class: Optional[np.ndarray] = None, det_class: Optional[np.ndarray] = None
               ) -> np.ndarray:
    """Hungarian on 1 - IoU. (T,4), (D,4) xyxy -> matches (K,2) [track row, det col] with
    IoU >= min_iou; pairs of different classes are never matched when classes are given."""
    if len(track_xyxy) == 0 or len(det_xyxy) == 0:
        return np.zeros((0, 2), np.int64)
    cost = iou_cost(track_xyxy, det_xyxy)
    if track_class is not None and det_class is not None:
        cost[class_mismatch(track_class, det_class)] = INFTY_COST
    return linear_assignment(cost, 1.0 - min_iou)[0]


def matching_cascade(cost: np.ndarray, max_cost: float, cascade_depth: int,
                     time_since_update: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeepSORT matching cascade: tracks seen more recently choose first.

    cost: (T,D) gated cost of T tracks vs D detections; time_since_update: (T,) (after
    prediction, a track matched in the previous frame has 1). Tracks are assigned in rounds
    ``level = 1..cascade_depth`` (tracks with ``time_since_update == level``) against the
    detections still free; pairs above ``max_cost`` are rejected.
    Returns matches (K,2) [row, col], unmatched rows, unmatched cols (sorted).
    """
    cost = np.asarray(cost, dtype=np.float64)
    tsu = np.asarray(time_since_update)
    n_rows, n_cols = cost.shape
    free = np.arange(n_cols)
    found = []
    # only the levels that have tracks (same result as looping 1..cascade_depth)
    levels = np.unique(tsu[(tsu >= 1) & (tsu <= cascade_depth)]).tolist()
    for level in levels:
        if len(free) == 0:
            break
        rows = np.flatnonzero(tsu == level)
        m, _, um_c = linear_assignment(cost[np.ix_(rows, free)], max_cost)
        if len(m):
            found.append(np.stack([rows[m[:, 0]], free[m[:, 1]]], axis=1))
        free = free[um_c]
    matches = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    row_free = np.ones(n_rows, bool)
    row_free[matches[:, 0]] = False
    return matches, np.flatnonzero(row_free), free


class FeatureGallery:
    """Per-track appearance samples with a bounded budget (ring buffer per track).

    Each track keeps at most ``budget`` L2-normalised features of dimension D; the distance
    of a track to a detection is the smallest cosine distance over its samples (deep_sort's
    nearest-neighbour metric). Memory is bounded by (#live tracks) x budget x D.
    """

    def __init__(self, budget: int = 100) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self.budget = int(budget)
        self._buf: dict[int, np.ndarray] = {}
        self._count: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._buf)

    def samples(self, track_id: int) -> np.ndarray:
        """(k,D) samples of one track, k <= budget (empty (0,0) if unknown)."""
        buf = self._buf.get(int(track_id))
        if buf is None:
            return np.zeros((0, 0), np.float32)
        return buf[: min(self._count[int(track_id)], self.budget)]

    def add(self, track_ids: np.ndarray, features: np.ndarray) -> None:
        """Append one feature per track. track_ids: (N,), features: (N,D) (normalised here)."""
        features = l2_normalize(features)
        for tid, f in zip(np.asarray(track_ids).tolist(), features):
            buf = self._buf.get(tid)
            if buf is None or buf.shape[1] != f.shape[0]:
                buf = np.zeros((self.budget, f.shape[0]), np.float32)
                self._buf[tid] = buf
                self._count[tid] = 0
            buf[self._count[tid] % self.budget] = f
            self._count[tid] += 1

    def retain(self, track_ids) -> None:
        """Drop every track not in ``track_ids``."""
        keep = {int(t) for t in np.asarray(track_ids).tolist()}
        for tid in [t for t in self._buf if t not in keep]:
            del self._buf[tid]
            del self._count[tid]

    def clear(self) -> None:
        self._buf.clear()
        self._count.clear()

    def distance(self, track_ids: np.ndarray, features: np.ndarray,
                 missing: float = INFTY_COST) -> np.ndarray:
        """(T,) ids, (D,K) detection features -> (T,D) min cosine distance.

        A track without samples gets ``missing`` in its whole row.
        """
        feats = l2_normalize(features)
        out = np.full((len(track_ids), len(feats)), missing, dtype=np.float64)
        if len(feats) == 0:
            return out
        for r, tid in enumerate(np.asarray(track_ids).tolist()):
            s = self.samples(tid)
            if len(s) and s.shape[1] == feats.shape[1]:
                out[r] = np.min(1.0 - s @ feats.T, axis=0)
        return out


def fuse_gate(cost: np.ndarray, allowed: Optional[np.ndarray], value: float = INFTY_COST) -> np.ndarray:
    """Return ``cost`` with ``value`` wherever ``allowed`` is False (``allowed`` None: no-op)."""
    if allowed is None:
        return cost
    return np.where(allowed, cost, value)


def iou_match_rows(pred_xyxy: np.ndarray, track_class: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                   boxes: np.ndarray, classes: np.ndarray, min_iou: float, class_aware: bool) -> np.ndarray:
    """IoU Hungarian between a subset of tracks and a subset of detections.

    pred_xyxy (T,4) predicted track boxes, track_class (T,), rows (R,) track indices,
    cols (C,) detection indices into boxes (N,4) / classes (N,). Returns (K,2) pairs of
    (track index, detection index) in the full arrays, each with IoU >= min_iou.
    """
    if len(rows) == 0 or len(cols) == 0:
        return np.zeros((0, 2), np.int64)
    m = iou_assign(pred_xyxy[rows], boxes[cols], min_iou,
                   track_class[rows] if class_aware else None, classes[cols] if class_aware else None)
    return np.stack([rows[m[:, 0]], cols[m[:, 1]]], axis=1)
