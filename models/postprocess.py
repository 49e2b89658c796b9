"""Decoding of darknet yolo heads and class-aware NMS, vectorised numpy, shared by all backends."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .darknet import YoloHead
from .preprocess import Letterbox
from .types import Detections


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # exact logistic, no overflow warnings


def decode_head(raw: np.ndarray, head: YoloHead, input_size: Tuple[int, int]) -> np.ndarray:
    """One image's raw head (A*(5+C), gh, gw) -> (gh*gw*A, 5+C) rows of
    [cx, cy, w, h, objectness, class scores...] with coordinates in network-input
    pixels and class scores already multiplied by objectness (darknet/OpenCV order:
    row = (y * gw + x) * A + a).
    """
    A = len(head.anchors)
    gh, gw = raw.shape[-2:]
    p = raw.reshape(A, 5 + head.classes, gh, gw).transpose(2, 3, 0, 1).astype(np.float32)  # (gh, gw, A, 5+C)
    net_w, net_h = input_size
    s = head.scale_x_y
    gx = np.arange(gw, dtype=np.float32)[None, :, None]
    gy = np.arange(gh, dtype=np.float32)[:, None, None]
    out = np.empty_like(p)
    if head.new_coords:
        xy, wh, rest = p[..., 0:2], p[..., 2:4], p[..., 4:]
        out[..., 2:4] = (wh * 2.0) ** 2 * head.anchors
    else:
        xy, rest = _sigmoid(p[..., 0:2]), _sigmoid(p[..., 4:])
        out[..., 2:4] = np.exp(p[..., 2:4]) * head.anchors
    out[..., 0] = (gx + xy[..., 0] * s - (s - 1) / 2) / gw * net_w
    out[..., 1] = (gy + xy[..., 1] * s - (s - 1) / 2) / gh * net_h
    out[..., 4] = rest[..., 0]
    out[..., 5:] = rest[..., 1:] * rest[..., :1]
    return out.reshape(-1, 5 + head.classes)


def decode_heads(raws: Sequence[np.ndarray], heads: Sequence[YoloHead], input_size: Tuple[int, int],
                 letterbox: Letterbox, conf_threshold: float) -> Detections:
    """All heads of one image -> candidate Detections (before NMS) in frame pixels.

    Multi-label like darknet: every (box, class) pair with objectness * class
    probability above the threshold is a candidate.
    """
    rows = np.concatenate([decode_head(r, h, input_size) for r, h in zip(raws, heads)])
    rows = rows[rows[:, 4] > conf_threshold]
    box_i, cls_i = np.nonzero(rows[:, 5:] > conf_threshold)
    if len(box_i) == 0:
        return Detections.empty()
    r = rows[box_i]
    half = r[:, 2:4] / 2
    xyxy = np.concatenate([r[:, 0:2] - half, r[:, 0:2] + half], axis=1)
    return Detections(letterbox.to_frame(xyxy), r[np.arange(len(r)), 5 + cls_i], cls_i.astype(np.int32))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,4) xyxy, (M,4) xyxy -> (N,M) IoU."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(xyxy: np.ndarray, score: np.ndarray, class_id: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy class-aware NMS. Returns kept indices, highest score first.

    Boxes of different classes never suppress each other (each class is shifted
    to its own region of the plane, so one IoU matrix serves all classes).
    """
    if len(xyxy) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-score, kind="stable")
    boxes = xyxy[order].astype(np.float64)
    offset = class_id[order].astype(np.float64)[:, None] * (boxes.max() + 1.0)
    boxes = boxes + offset
    n = len(order)
    full = box_iou(boxes, boxes) if n <= 1024 else None  # one matrix when small; rows on demand when large
    suppressed = np.zeros(n, bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        row = full[i, i + 1:] if full is not None else box_iou(boxes[i:i + 1], boxes[i + 1:])[0]
        suppressed[i + 1:] |= row > iou_threshold
    return order[np.asarray(keep, np.int64)]


MAX_CANDIDATES = 10_000  # pre-NMS top-k: a degenerate model (e.g. random weights) can emit 10^5+


def nms_detections(dets: Detections, iou_threshold: float, classes: Optional[Sequence[int]] = None,
                   max_candidates: int = MAX_CANDIDATES) -> Detections:
    """Class filter, keep the `max_candidates` best scores, then class-aware NMS; sorted by score."""
    if classes is not None and len(dets):
        dets = dets[np.isin(dets.class_id, np.asarray(classes, np.int32))]
    if len(dets) > max_candidates:
        dets = dets[np.argpartition(-dets.score, max_candidates - 1)[:max_candidates]]
    return dets[nms(dets.xyxy, dets.score, dets.class_id, iou_threshold)]
