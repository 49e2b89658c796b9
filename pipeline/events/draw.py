"""Zones and lines drawn on a frame (OpenCV), with their counts.

    ann = ZoneLineAnnotator(zones, lines)
    ann.annotate(frame, counts=counter.counts())   # in place; counts optional

Runs wherever the frame is drawn (the render stage); it needs only the zone/line config
and, for the labels, a ``ZoneLineCounter.counts()`` snapshot.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .config import Line, Zone

ZONE_COLOR = (0, 200, 255)    # BGR amber
LINE_COLOR = (255, 0, 255)    # BGR magenta


def _sum(per_class: dict, key: str) -> int:
    return sum(int(v.get(key, 0)) for v in per_class.values())


class ZoneLineAnnotator:
    def __init__(self, zones: Sequence[Zone] = (), lines: Sequence[Line] = (), thickness: int = 0):
        self.zones = list(zones)
        self.lines = list(lines)
        self.thickness = thickness

    def annotate(self, scene: np.ndarray, counts: Optional[dict] = None) -> np.ndarray:
        """scene (H, W, 3) uint8 BGR, modified in place; counts: ``ZoneLineCounter.counts()``."""
        import cv2

        h, w = scene.shape[:2]
        t = self.thickness or max(1, round(h / 360))
        scale = max(0.45, h / 1200)
        zc = (counts or {}).get("zones", {})
        lc = (counts or {}).get("lines", {})
        for z in self.zones:
            pts = np.round(z.resolve(w, h)).astype(np.int32)
            cv2.polylines(scene, [pts], True, ZONE_COLOR, t, cv2.LINE_AA)
            label = z.name
            if z.name in zc:
                label += f" in:{_sum(zc[z.name], 'entered')} now:{_sum(zc[z.name], 'occupancy')}"
            self._label(scene, label, tuple(pts[0]), ZONE_COLOR, scale, t)
        for ln in self.lines:
            (ax, ay), (bx, by) = np.round(ln.resolve(w, h)).astype(np.int32)
            cv2.line(scene, (int(ax), int(ay)), (int(bx), int(by)), LINE_COLOR, t + 1, cv2.LINE_AA)
            # a small arrow at the middle pointing to the side a directions[0] crossing goes to
            mx, my = (ax + bx) / 2, (ay + by) / 2
            dx, dy = bx - ax, by - ay
            n = max(1e-9, float(np.hypot(dx, dy)))
            ex, ey = dy / n, -dx / n      # unit normal towards the left-hand side of A->B
            L = 8 * t + 12
            cv2.arrowedLine(scene, (int(mx), int(my)), (int(mx + ex * L), int(my + ey * L)), LINE_COLOR, t,
                            cv2.LINE_AA, tipLength=0.35)
            label = ln.name
            if ln.name in lc:
                d0, d1 = ln.directions
                label += f" {d0}:{_sum(lc[ln.name], d0)} {d1}:{_sum(lc[ln.name], d1)}"
            self._label(scene, label, (int(ax), int(ay)), LINE_COLOR, scale, t)
        return scene

    @staticmethod
    def _label(scene, text, org, color, scale, t) -> None:
        import cv2

        x, y = int(org[0]), int(org[1])
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, t - 1))
        x = min(max(0, x), max(0, scene.shape[1] - tw - 2))
        y = min(max(th + base, y), scene.shape[0] - 1)
        cv2.rectangle(scene, (x, y - th - base), (x + tw + 2, y), color, -1)
        cv2.putText(scene, text, (x + 1, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(1, t - 1),
                    cv2.LINE_AA)
