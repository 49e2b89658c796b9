"""`BoxAnnotator`: the drawing module's boxes and labels as an annotator (render's video and
window, snapshots, the sequential benchmark)."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np

from trackpipe.models.types import Detections

from .annotate import annotate, draw_items, overlay_items
from .style import DrawStyle


class BoxAnnotator:
    """Boxes and labels from the one drawing module (`pipeline.drawing`: palette, label format,
    labels kept inside the frame and off each other, sizes that scale with the frame), as an
    annotator: ``annotate(scene, detections)`` draws in place. ``labels=False``: boxes only."""

    def __init__(self, names: Optional[Sequence[str]] = None, labels: bool = True):
        self.names = list(names) if names else []
        self.labels = labels
        self._styles: Dict[tuple, object] = {}

    def style(self, h: int, w: int):
        """The `DrawStyle` of an (h, w) frame (computed once per size)."""
        st = self._styles.get((h, w))
        if st is None:
            if len(self._styles) > 64:
                self._styles.clear()
            st = self._styles[(h, w)] = DrawStyle.for_frame(h, w)
        return st

    def annotate(self, scene: np.ndarray, dets: Detections) -> np.ndarray:
        """scene (H, W, 3) uint8 BGR, modified in place; dets: Detections or Tracks (xyxy pixels)."""
        if dets is None or len(dets) == 0:
            return scene
        h, w = scene.shape[:2]
        st = self.style(h, w)
        if self.labels:
            return annotate(scene, dets, self.names, st)
        items = [dataclasses.replace(it, label=None, leader=None) for it in overlay_items(dets, self.names, (h, w), st)]
        return draw_items(scene, items, st)
