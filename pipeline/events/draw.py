"""Zones and lines drawn on a frame, with their counts: the one drawing module's polygons and
lines (`pipeline.drawing`: palette colours, labels inside the frame, sized to it), plus the
direction arrow of each line.

    ann = ZoneLineAnnotator(zones, lines)
    ann.annotate(frame, counts=counter.counts())   # in place; counts optional

Colours follow `pipeline.drawing.draw_zones`' order (zones first, then lines), so the video and
the live view draw a zone in one colour. It needs only the zone/line config and, for the
labels, a ``ZoneLineCounter.counts()`` snapshot.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from trackpipe.pipeline.drawing import DrawStyle, draw_lines, draw_polygons, palette_color

from .config import Line, Zone


def _sum(per_class: dict, key: str) -> int:
    return sum(int(v.get(key, 0)) for v in per_class.values())


class ZoneLineAnnotator:
    def __init__(self, zones: Sequence[Zone] = (), lines: Sequence[Line] = ()):
        self.zones = list(zones)
        self.lines = list(lines)

    def colors(self) -> tuple:
        """-> (zone colours, line colours), BGR, in config order."""
        nz = len(self.zones)
        return [palette_color(i) for i in range(nz)], [palette_color(nz + i) for i in range(len(self.lines))]

    def annotate(self, scene: np.ndarray, counts: Optional[dict] = None) -> np.ndarray:
        """scene (H, W, 3) uint8 BGR, modified in place; counts: ``ZoneLineCounter.counts()``."""
        import cv2

        h, w = scene.shape[:2]
        style = DrawStyle.for_frame(h, w)
        zc = (counts or {}).get("zones", {})
        lc = (counts or {}).get("lines", {})
        nz = len(self.zones)
        if self.zones:
            labels = [z.name + (f" in:{_sum(zc[z.name], 'entered')} now:{_sum(zc[z.name], 'occupancy')}"
                                if z.name in zc else "") for z in self.zones]
            draw_polygons(scene, [z.resolve(w, h) for z in self.zones], labels, style=style)
        if self.lines:
            labels = []
            for ln in self.lines:
                d0, d1 = ln.directions
                labels.append(ln.name + (f" {d0}:{_sum(lc[ln.name], d0)} {d1}:{_sum(lc[ln.name], d1)}"
                                         if ln.name in lc else ""))
            pts = [ln.resolve(w, h) for ln in self.lines]
            draw_lines(scene, pts, labels, keys=range(nz, nz + len(pts)), style=style)
            t = style.thickness
            for i, ((ax, ay), (bx, by)) in enumerate(pts):
                # a small arrow at the middle pointing to the side a directions[0] crossing goes to
                mx, my = (ax + bx) / 2, (ay + by) / 2
                n = max(1e-9, float(np.hypot(bx - ax, by - ay)))
                ex, ey = (by - ay) / n, -(bx - ax) / n      # unit normal towards the left of A->B
                size = 8 * t + 12
                cv2.arrowedLine(scene, (int(mx), int(my)), (int(mx + ex * size), int(my + ey * size)),
                                palette_color(nz + i), t, cv2.LINE_AA, tipLength=0.35)
        return scene
