"""Polygon masks: object masks (a detection whose bottom centre lies inside is dropped) and
motion masks (changes inside are ignored), as pure functions on numpy arrays.

Polygons are (V,2) float64 arrays of (x, y) pixels of the frame they belong to (a config's
fractions are resolved with `Zone.resolve`-style scaling before they get here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import cv2
import numpy as np
from trackpipe.pipeline.events.geometry import anchor_points, points_in_polygon


def rasterize(polygons: Sequence[np.ndarray], size: Tuple[int, int], scale=1.0) -> np.ndarray:
    """Polygons (each (V,2) pixels of the full frame) filled into a ``size`` = (W, H) uint8
    image (255 inside any polygon, 0 elsewhere), their points multiplied by ``scale`` first
    (a number, or (2,) x and y factors: the motion detector's downscaled frame)."""
    w, h = int(size[0]), int(size[1])
    out = np.zeros((h, w), np.uint8)
    if polygons:
        pts = [np.round(np.asarray(p, np.float64).reshape(-1, 2) * scale).astype(np.int32) for p in polygons]
        cv2.fillPoly(out, pts, 255)
    return out


@dataclass
class PolygonMask:
    """A set of polygons over one camera's frame. ``polygons``: list of (V,2) float64 pixels."""

    polygons: List[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.polygons = [np.asarray(p, np.float64).reshape(-1, 2) for p in self.polygons]
        for p in self.polygons:
            if len(p) < 3:
                raise ValueError(f"a mask polygon needs at least 3 points, got {len(p)}")

    def __bool__(self) -> bool:
        return bool(self.polygons)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,2) points (x, y) -> (N,) bool: inside any polygon (even-odd rule per polygon)."""
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        inside = np.zeros(len(pts), bool)
        for p in self.polygons:
            inside |= points_in_polygon(pts, p)
        return inside

    def keep_boxes(self, xyxy: np.ndarray) -> np.ndarray:
        """(N,4) xyxy boxes -> (N,) bool: True where the bottom centre lies outside every polygon
        (the object mask's rule: a detection whose bottom centre is inside is dropped)."""
        b = np.asarray(xyxy, np.float64).reshape(-1, 4)
        if not self.polygons or not len(b):
            return np.ones(len(b), bool)
        return ~self.contains(anchor_points(b, "bottom_center"))
