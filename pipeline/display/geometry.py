"""Screen geometry of the overlay display: the rectangles it paints, label text, colours.

Colours and label text come from the one drawing module (`pipeline.drawing`: palette by track
id, ``"dog 3 0.96"``), so the overlay, the video and the window agree. The geometry is the
overlay's own, compact one: four outline strips inside each box and a label box above it
(inside it when the box touches the top edge), 3 px lines and 17 px labels in screen pixels.
(The drawing module's label layout, which moves labels off each other, was tried here: its
labels cover more of the objects, and a grab with them painted out no longer detects the
same boxes, see tests/test_overlay.py; `overlay_plan` is the one place to change that.)
The same rectangles make the overlay's window mask and are what capture paints out of its
grabs (`display.masking`). Pure numpy: no Qt, no display.

Coordinates: ``tracks.xyxy`` are pixels of the captured frame, i.e. relative to the region's
top-left corner on screen; the overlay window sits at the region's origin, so the box of an
object lands on the object. Screen pixels are physical pixels (what mss grabs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import numpy as np

from trackpipe.models.types import Tracks
from trackpipe.pipeline.drawing import label_text
from trackpipe.pipeline.drawing.style import PALETTE_BGR, palette_color

Region = Tuple[int, int, int, int]          # x, y, width, height in screen pixels

LINE_WIDTH = 3
LABEL_FONT_PX = 12                          # monospace label font, pixel size
LABEL_CHAR_W = 8                            # label box width per character (>= the font's advance)
LABEL_PAD = 2
LABEL_H = LABEL_FONT_PX + 2 * LABEL_PAD + 1

PALETTE = np.ascontiguousarray(PALETTE_BGR[:, ::-1])   # (K, 3) uint8 RGB: the drawing module's palette


def color_for(key: int) -> Tuple[int, int, int]:
    """RGB colour of a track id / class id (the drawing module's palette)."""
    return tuple(int(c) for c in palette_color(int(key))[::-1])


def labels_for(tracks: Tracks, names: Sequence[str]) -> List[str]:
    """The drawing module's label text: ``"dog 3 0.96"`` (class name, track id if any, score)."""
    tids = getattr(tracks, "track_id", None)
    if tids is None or len(tids) != len(tracks):
        tids = np.zeros(len(tracks), np.int64)          # plain Detections: no ids
    return [label_text(names[c] if 0 <= c < len(names) else str(int(c)), int(t), float(s))
            for c, t, s in zip(tracks.class_id, tids, tracks.score)]


def track_keys(tracks: Tracks) -> np.ndarray:
    """(N,) int64 palette keys: the track id, or the class id where there is none."""
    tid = getattr(tracks, "track_id", None)
    if tid is None or len(tid) != len(tracks):
        tid = np.zeros(len(tracks), np.int64)
    return np.where(tid > 0, tid, tracks.class_id).astype(np.int64)


def overlay_rects(xyxy: np.ndarray, labels: Sequence[str], size: Tuple[int, int],
                  line_width: int = LINE_WIDTH) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every rectangle the overlay paints, clipped to the region.

    xyxy:   (N, 4) boxes in region pixels; labels: N strings; size: region (width, height).
    Returns (rects (M, 4) int32 x1, y1, x2, y2 with x2/y2 exclusive, owner (M,) int index of the
    box, is_label (M,) bool). Per box: 4 outline strips of ``line_width`` px, then a label box of
    ``len(label) * LABEL_CHAR_W + 2 * LABEL_PAD`` x ``LABEL_H`` above the box (inside it when the
    box touches the top edge). The same rectangles make the window mask and are what
    ``mask_overlay`` removes from a grab.
    """
    w, h = size
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    rects, owner, is_label = [], [], []
    lw = int(line_width)
    for i, (bx1, by1, bx2, by2) in enumerate(xyxy):
        x1, y1 = int(np.floor(bx1)), int(np.floor(by1))
        x2, y2 = int(np.ceil(bx2)), int(np.ceil(by2))
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        t = min(lw, x2 - x1, y2 - y1)
        strips = [(x1, y1, x2, y1 + t), (x1, y2 - t, x2, y2),
                  (x1, y1 + t, x1 + t, y2 - t), (x2 - t, y1 + t, x2, y2 - t)]
        for r in strips:
            if r[2] > r[0] and r[3] > r[1]:
                rects.append(r)
                owner.append(i)
                is_label.append(False)
        if i < len(labels) and labels[i]:
            tw = len(labels[i]) * LABEL_CHAR_W + 2 * LABEL_PAD
            ly1 = y1 - LABEL_H if y1 - LABEL_H >= 0 else y1 + t
            lx1 = min(x1, max(w - tw, 0))
            r = (lx1, max(ly1, 0), min(lx1 + tw, w), min(ly1 + LABEL_H, h))
            if r[2] > r[0] and r[3] > r[1]:
                rects.append(r)
                owner.append(i)
                is_label.append(True)
    if not rects:
        return np.zeros((0, 4), np.int32), np.zeros(0, np.int64), np.zeros(0, bool)
    return np.array(rects, np.int32), np.array(owner, np.int64), np.array(is_label, bool)


@dataclass
class OverlayPlan:
    """What the overlay paints: ``rects`` (M, 4) int32 x1, y1, x2, y2 (exclusive) clipped to the
    region, ``owner`` (M,) box index, ``is_label`` (M,) bool; per box ``texts`` and palette ``keys``."""

    rects: np.ndarray
    owner: np.ndarray
    is_label: np.ndarray
    texts: List[str] = field(default_factory=list)
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    line_width: int = LINE_WIDTH


def overlay_plan(tracks: Tracks, names: Sequence[str], size: Tuple[int, int],
                 line_width: int = LINE_WIDTH) -> OverlayPlan:
    """tracks: region pixels; size: region (width, height) -> the `OverlayPlan`."""
    texts = labels_for(tracks, names)
    rects, owner, is_label = overlay_rects(tracks.xyxy, texts, size, line_width)
    return OverlayPlan(rects, owner, is_label, texts, track_keys(tracks), line_width)


def to_screen(xyxy: np.ndarray, region: Region) -> np.ndarray:
    """Region-relative xyxy -> absolute screen xyxy."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return xyxy + np.array([region[0], region[1], region[0], region[1]], np.float64)
