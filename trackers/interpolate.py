"""Offline gap filling for file runs: linear interpolation of short gaps in MOT rows.

A file is tracked to its end before the MOT file is final, so a gap of a few frames between
two observations of one ID can be filled with boxes on the straight line between them (as
ByteTrack and BoT-SORT do for their MOTChallenge results). Rows the online tracker emitted at
a predicted box (``predicted``) count as missing: inside a closed gap they are replaced by the
interpolated box; after the last observation of an ID they are kept as they are.
"""

from __future__ import annotations

import numpy as np

#: values of the per-row ``source`` array returned by :func:`interpolate_gaps`
OBSERVED, PREDICTED, INTERPOLATED = 0, 1, 2


def interpolate_gaps(rows: np.ndarray, max_gap: int, predicted: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Fill gaps of at most ``max_gap`` frames within each ID.

    rows: (K,>=6) MOT rows (frame, id, left, top, width, height, ...);
    predicted: (K,) bool, rows at a predicted (not observed) box, or None (all observed).
    Returns (rows' (K',C), source (K',) int8: OBSERVED / PREDICTED / INTERPOLATED), sorted by
    (frame, id). Interpolated rows copy the other columns of the observation before the gap.
    A gap of g missing frames (observations at f and f + g + 1) is filled when g <= max_gap.
    """
    rows = np.asarray(rows, dtype=np.float64)
    k = len(rows)
    pred = np.zeros(k, bool) if predicted is None else np.asarray(predicted, bool).reshape(-1)
    if pred.shape != (k,):
        raise ValueError(f"predicted has {pred.shape[0]} rows, rows has {k}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    src = np.where(pred, PREDICTED, OBSERVED).astype(np.int8)
    if k == 0 or max_gap == 0:
        return _sorted(rows, src)
    obs = rows[~pred]
    obs = obs[np.lexsort((obs[:, 0], obs[:, 1]))]              # by id, then frame
    same = obs[1:, 1] == obs[:-1, 1]
    gap = (obs[1:, 0] - obs[:-1, 0]).astype(np.int64) - 1      # missing frames between pairs
    fill = np.flatnonzero(same & (gap >= 1) & (gap <= max_gap))
    if len(fill) == 0:
        return _sorted(rows, src)
    n = gap[fill]
    first = np.repeat(fill, n)                                 # index of the row before the gap
    step = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + 1   # 1..g within each gap
    frac = (step / np.repeat(n + 1, n))[:, None]
    new = obs[first].copy()
    new[:, 0] = obs[first, 0] + step
    new[:, 2:6] = obs[first, 2:6] + frac * (obs[first + 1, 2:6] - obs[first, 2:6])
    # predicted rows inside a filled gap are replaced by the interpolated ones
    filled = set(zip(new[:, 1].astype(np.int64).tolist(), new[:, 0].astype(np.int64).tolist()))
    keep = np.ones(k, bool)
    for i in np.flatnonzero(pred):
        if (int(rows[i, 1]), int(rows[i, 0])) in filled:
            keep[i] = False
    out = np.concatenate([rows[keep], new])
    out_src = np.concatenate([src[keep], np.full(len(new), INTERPOLATED, np.int8)])
    return _sorted(out, out_src)


def _sorted(rows: np.ndarray, src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((rows[:, 1], rows[:, 0])) if len(rows) else np.zeros(0, np.int64)
    return rows[order], src[order]
