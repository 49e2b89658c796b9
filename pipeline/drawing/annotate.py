"""Boxes, labels, zones and lines: drawn with OpenCV (video, window) or handed to QPainter
(overlay) as ``DrawItem``s, from one plan, so all three show the same layout."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from trackpipe.models.types import Detections
from trackpipe.pipeline.drawing.layout import layout_labels
from trackpipe.pipeline.drawing.style import FONT, DrawStyle, label_text, palette_color, text_color

Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class DrawItem:
    """One box as drawn.

    box:       (x1, y1, x2, y2) int pixels, the rounded box (may extend past the frame)
    label:     (x1, y1, x2, y2) int pixels of the filled label, x2/y2 exclusive, or None when
               the label was dropped for lack of room
    text:      label text; painted left-aligned, ``pad`` px in, vertically centred
    color_rgb: box and label fill colour, **RGB** (QColor order; ``color_bgr`` for OpenCV)
    text_rgb:  text colour, RGB (black or white, whichever contrasts with the fill)
    predicted: the tracker's predicted (coasting) box: outline dashed
    leader:    (x1, y1, x2, y2) a thin line joining a label placed away from its box, or None
    key:       the palette key (track id, or class id where there is none)
    """

    box: Rect
    label: Rect | None
    text: str
    color_rgb: tuple[int, int, int]
    text_rgb: tuple[int, int, int]
    predicted: bool
    leader: Rect | None
    key: int

    @property
    def color_bgr(self) -> tuple[int, int, int]:
        return self.color_rgb[::-1]


def _class_name(names: Sequence[str], cid: int) -> str:
    return names[cid] if 0 <= cid < len(names) else str(cid)


def _leader(box: Rect, label: Rect, gap: int) -> Rect | None:
    """Segment between the nearest points of a label and its box, when more than ``gap`` apart."""
    def nearest(a1, a2, b1, b2):          # closest coordinates of [a1, a2] and [b1, b2]
        if a2 < b1:
            return a2, b1
        if a1 > b2:
            return a1, b2
        m = (max(a1, b1) + min(a2, b2)) // 2
        return m, m
    lx, bx = nearest(label[0], label[2] - 1, box[0], box[2])
    ly, by = nearest(label[1], label[3] - 1, box[1], box[3])
    if max(abs(lx - bx), abs(ly - by)) <= gap:
        return None
    return (lx, ly, bx, by)


def overlay_items(tracks: Detections, names: Sequence[str], frame_hw: tuple[int, int],
                  style: DrawStyle | None = None,
                  measure: Callable[[str], tuple[int, int]] | None = None) -> list[DrawItem]:
    """The draw plan for ``tracks`` (Tracks or Detections) on a frame of ``frame_hw`` (H, W).

    measure: text -> label (w, h) px; default ``style.text_size`` (OpenCV's Hershey font). The
    Qt overlay may pass its own font metrics (+ 2 * pad) to get label boxes that fit its font.
    Labels are placed by ``layout_labels`` with priority = score, predicted boxes last.
    """
    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    style = style or DrawStyle.for_frame(fh, fw)
    measure = measure or style.text_size
    n = len(tracks)
    if n == 0:
        return []
    xyxy = np.asarray(tracks.xyxy, np.float64).reshape(-1, 4)
    cls = np.asarray(tracks.class_id).astype(np.int64)
    score = np.asarray(tracks.score, np.float64)
    tid = getattr(tracks, "track_id", None)
    tid = np.zeros(n, np.int64) if tid is None or len(tid) != n else np.asarray(tid, np.int64)
    pred = getattr(tracks, "predicted", None)
    pred = np.zeros(n, bool) if pred is None or len(pred) != n else np.asarray(pred, bool)
    keys = np.where(tid > 0, tid, cls)
    texts = [label_text(_class_name(names, int(c)), int(t), float(s), bool(p))
             for c, t, s, p in zip(cls.tolist(), tid.tolist(), score.tolist(), pred.tolist())]
    sizes = np.array([measure(t) for t in texts], np.int64).reshape(n, 2)
    rects = layout_labels(xyxy, sizes, (fh, fw), priority=score - 2.0 * pred)
    boxes = np.round(xyxy).astype(np.int64)
    items = []
    for i in range(n):
        box = tuple(int(v) for v in boxes[i])
        label = tuple(int(v) for v in rects[i]) if rects[i, 0] >= 0 else None
        bgr = palette_color(int(keys[i]))
        items.append(DrawItem(box=box, label=label, text=texts[i], color_rgb=bgr[::-1],
                              text_rgb=text_color(bgr)[::-1], predicted=bool(pred[i]),
                              leader=None if label is None else _leader(box, label, style.thickness + 1),
                              key=int(keys[i])))
    return items


def _dashed_rect(img: np.ndarray, box: Rect, color, thickness: int) -> None:
    x1, y1, x2, y2 = box
    dash, gap = 4 * thickness + 4, 3 * thickness + 3
    for (ax, ay, bx, by) in ((x1, y1, x2, y1), (x2, y1, x2, y2), (x2, y2, x1, y2), (x1, y2, x1, y1)):
        length = max(abs(bx - ax), abs(by - ay))
        for s in range(0, max(length, 1), dash + gap):
            e = min(s + dash, length)
            f0, f1 = s / max(length, 1), e / max(length, 1)
            p0 = (round(ax + (bx - ax) * f0), round(ay + (by - ay) * f0))
            p1 = (round(ax + (bx - ax) * f1), round(ay + (by - ay) * f1))
            cv2.line(img, p0, p1, color, thickness, cv2.LINE_8)


def _draw_label(img: np.ndarray, rect: Rect, text: str, fill_bgr, text_bgr, style: DrawStyle) -> None:
    x1, y1, x2, y2 = rect
    cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), fill_bgr, -1)
    (_, th), base = cv2.getTextSize(text, FONT, style.font_scale, style.text_thickness)
    # baseline so that cap height + descenders sit centred in the label
    y_base = y1 + (y2 - y1 + th - base) // 2
    for dx in range(1 + int(style.text_bold)):
        cv2.putText(img, text, (x1 + style.pad + dx, y_base), FONT, style.font_scale, text_bgr, style.text_thickness,
                    cv2.LINE_AA)


def draw_items(frame_bgr: np.ndarray, items: Sequence[DrawItem], style: DrawStyle) -> np.ndarray:
    """Draw a plan from ``overlay_items`` in place: all outlines first, then leaders and labels."""
    t = style.thickness
    for it in items:
        if it.predicted:
            _dashed_rect(frame_bgr, it.box, it.color_bgr, t)
        else:
            cv2.rectangle(frame_bgr, it.box[:2], it.box[2:], it.color_bgr, t, cv2.LINE_8)
    for it in items:
        if it.leader is not None:
            cv2.line(frame_bgr, it.leader[:2], it.leader[2:], it.color_bgr, max(1, t // 2), cv2.LINE_AA)
    for it in items:
        if it.label is not None:
            _draw_label(frame_bgr, it.label, it.text, it.color_bgr, it.text_rgb[::-1], style)
    return frame_bgr


def annotate(frame_bgr: np.ndarray, tracks: Detections | None, names: Sequence[str],
             style: DrawStyle | None = None, zones=None) -> np.ndarray:
    """Draw zones/lines, boxes and labels on ``frame_bgr`` (H, W, 3) uint8 BGR, in place.

    tracks: Tracks or Detections (xyxy pixels of this frame); a bool ``predicted`` array, when
    present, draws those boxes dashed and labels them ``pred``. names: class names by class id.
    zones: optional sequence of polygons/lines, see ``draw_zones``. Returns ``frame_bgr``.
    """
    h, w = frame_bgr.shape[:2]
    style = style or DrawStyle.for_frame(h, w)
    if zones:
        draw_zones(frame_bgr, zones, style)
    if tracks is not None and len(tracks):
        draw_items(frame_bgr, overlay_items(tracks, names, (h, w), style), style)
    return frame_bgr


def _zone_points(z) -> tuple[np.ndarray, str | None]:
    pts = None
    for attr in ("points", "polygon", "xy", "line"):
        pts = getattr(z, attr, None)
        if pts is not None:
            break
    pts = np.asarray(z if pts is None else pts, np.float64).reshape(-1, 2)
    return pts, getattr(z, "name", None)


def draw_zones(frame_bgr: np.ndarray, zones, style: DrawStyle | None = None) -> np.ndarray:
    """Zones and lines in place: each item a (K, 2) array of x, y pixels (K == 2: a line) or an
    object with ``points`` (or ``polygon``/``xy``/``line``) and an optional ``name``."""
    polys, plabels, lines, llabels = [], [], [], []
    for z in zones:
        pts, name = _zone_points(z)
        if len(pts) == 2:
            lines.append(pts)
            llabels.append(name)
        elif len(pts) >= 3:
            polys.append(pts)
            plabels.append(name)
    if polys:
        draw_polygons(frame_bgr, polys, plabels, style=style)
    if lines:
        draw_lines(frame_bgr, lines, llabels, style=style, keys=range(len(polys), len(polys) + len(lines)))
    return frame_bgr


def _zone_label(img, text: str | None, anchor: tuple[float, float], color, style: DrawStyle) -> None:
    if not text:
        return
    h, w = img.shape[:2]
    lw, lh = style.text_size(text)
    if lw > w or lh > h:
        return
    x = int(np.clip(anchor[0], 0, w - lw))
    y = int(np.clip(anchor[1] - lh, 0, h - lh))
    _draw_label(img, (x, y, x + lw, y + lh), text, color, text_color(color), style)


def draw_polygons(frame_bgr: np.ndarray, polygons: Sequence[np.ndarray], labels: Sequence[str] | None = None,
                  keys: Sequence[int] | None = None, style: DrawStyle | None = None,
                  fill_alpha: float = 0.0) -> np.ndarray:
    """Closed polygons (each (K, 2) x, y pixels) in place, palette colour by ``keys`` (default
    0, 1, ...), optional translucent fill, a label above each polygon's top-most vertex."""
    h, w = frame_bgr.shape[:2]
    style = style or DrawStyle.for_frame(h, w)
    keys = list(range(len(polygons))) if keys is None else list(keys)
    for i, poly in enumerate(polygons):
        pts = np.round(np.asarray(poly, np.float64).reshape(-1, 2)).astype(np.int32)
        color = palette_color(keys[i])
        if fill_alpha > 0:
            x1, y1 = np.clip(pts.min(0), 0, [w, h])
            x2, y2 = np.clip(pts.max(0) + 1, 0, [w, h])
            if x2 > x1 and y2 > y1:
                roi = frame_bgr[y1:y2, x1:x2]
                layer = roi.copy()
                cv2.fillPoly(layer, [pts - [x1, y1]], color)
                cv2.addWeighted(layer, fill_alpha, roi, 1 - fill_alpha, 0, dst=roi)
        cv2.polylines(frame_bgr, [pts], True, color, style.thickness, cv2.LINE_AA)
        if labels is not None and labels[i]:
            top = pts[np.argmin(pts[:, 1])]
            _zone_label(frame_bgr, labels[i], (top[0], top[1] - style.thickness), color, style)
    return frame_bgr


def draw_lines(frame_bgr: np.ndarray, lines: Sequence[np.ndarray], labels: Sequence[str] | None = None,
               keys: Sequence[int] | None = None, style: DrawStyle | None = None) -> np.ndarray:
    """Counting lines (each (2, 2): x1, y1, x2, y2 as two points) in place, with end dots and a
    label at the first point; palette colour by ``keys`` (default 0, 1, ...)."""
    h, w = frame_bgr.shape[:2]
    style = style or DrawStyle.for_frame(h, w)
    keys = list(range(len(lines))) if keys is None else list(keys)
    for i, line in enumerate(lines):
        (x1, y1), (x2, y2) = np.round(np.asarray(line, np.float64).reshape(2, 2)).astype(int).tolist()
        color = palette_color(keys[i])
        cv2.line(frame_bgr, (x1, y1), (x2, y2), color, style.thickness + 1, cv2.LINE_AA)
        for p in ((x1, y1), (x2, y2)):
            cv2.circle(frame_bgr, p, 2 * style.thickness + 2, color, -1, cv2.LINE_AA)
        if labels is not None and labels[i]:
            _zone_label(frame_bgr, labels[i], (x1, y1 - 2 * style.thickness - 2), color, style)
    return frame_bgr
