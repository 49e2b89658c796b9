"""Vectorised plane geometry for zones and lines (pure numpy; image coordinates, y down).

Every function takes points as float arrays of shape (..., 2) holding (x, y) pixels.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

# anchor name -> (fraction of the box width from x1, fraction of the box height from y1)
ANCHORS: Dict[str, Tuple[float, float]] = {
    "bottom_center": (0.5, 1.0),
    "center": (0.5, 0.5),
    "top_center": (0.5, 0.0),
    "bottom_left": (0.0, 1.0),
    "bottom_right": (1.0, 1.0),
    "top_left": (0.0, 0.0),
    "top_right": (1.0, 0.0),
    "center_left": (0.0, 0.5),
    "center_right": (1.0, 0.5),
}


def anchor_points(xyxy: np.ndarray, anchor: str = "bottom_center") -> np.ndarray:
    """(N,4) xyxy boxes -> (N,2) float64 anchor points (x, y)."""
    fx, fy = ANCHORS[anchor]
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0] + fx * (b[:, 2] - b[:, 0]), b[:, 1] + fy * (b[:, 3] - b[:, 1])], axis=1)


def cross(o: np.ndarray, a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """z of (a - o) x (p - o), broadcast over leading axes: > 0 when p is on the right-hand side
    of o->a as seen on screen (y down), < 0 on its left-hand side, 0 on the line."""
    return (a[..., 0] - o[..., 0]) * (p[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (p[..., 0] - o[..., 0])


def segments_intersect(p0: np.ndarray, p1: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Do the closed segments p0-p1 and a-b meet? All (..., 2), broadcast; returns bool (...).

    Touching (an end point on the other segment) counts as meeting; collinear overlapping
    segments count when their bounding boxes overlap."""
    d1, d2 = cross(a, b, p0), cross(a, b, p1)
    d3, d4 = cross(p0, p1, a), cross(p0, p1, b)
    proper = (d1 * d2 <= 0) & (d3 * d4 <= 0)
    collinear = (d1 == 0) & (d2 == 0)
    if np.any(collinear):
        lo_p, hi_p = np.minimum(p0, p1), np.maximum(p0, p1)
        lo_s, hi_s = np.minimum(a, b), np.maximum(a, b)
        overlap = np.all((lo_p <= hi_s) & (lo_s <= hi_p), axis=-1)
        proper = np.where(collinear, overlap, proper)
    return proper


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: (N,2) points, (V,2) polygon (any simple polygon, convex or not) -> (N,) bool.

    A point exactly on an edge may fall on either side (as with any ray-casting test)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0:1], pts[:, 1:2]                        # (N,1)
    xi, yi = poly[:, 0][None, :], poly[:, 1][None, :]      # (1,V)
    xj, yj = np.roll(xi, 1, axis=1), np.roll(yi, 1, axis=1)
    straddle = (yi > y) != (yj > y)                       # (N,V); never true for horizontal edges
    dy = np.where(yj == yi, 1.0, yj - yi)
    x_at = xi + (xj - xi) * (y - yi) / dy
    return (np.count_nonzero(straddle & (x < x_at), axis=1) % 2) == 1


def polygon_area(polygon: np.ndarray) -> float:
    """Signed shoelace area of a (V,2) polygon (positive when clockwise on screen)."""
    p = np.asarray(polygon, dtype=np.float64)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def self_intersection(polygon: np.ndarray):
    """The first pair of non-adjacent edges (i, j) of a (V,2) polygon that meet, or None."""
    p = np.asarray(polygon, dtype=np.float64)
    v = len(p)
    a, b = p, np.roll(p, -1, axis=0)                      # edge k: a[k] -> b[k]
    hit = segments_intersect(a[:, None], b[:, None], a[None, :], b[None, :])   # (V,V)
    k = np.arange(v)
    adjacent = (np.abs(k[:, None] - k[None, :]) <= 1) | (np.abs(k[:, None] - k[None, :]) == v - 1)
    hit &= ~adjacent
    ij = np.argwhere(np.triu(hit))
    return None if len(ij) == 0 else (int(ij[0, 0]), int(ij[0, 1]))
