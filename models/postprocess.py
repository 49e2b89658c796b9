"""Decoding of darknet yolo heads and class-aware NMS, shared by all backends; never collapses.

A model that emits many boxes (a crowd, a low threshold, random weights: 150,000
candidates on one image) costs milliseconds, not seconds:

- `decode_candidates` thresholds objectness first and applies the logistic only to the
  cells that pass, then keeps the `max_candidates` best (box, class) pairs
  (`np.argpartition`) before any box is decoded;
- `nms` is exact greedy class-aware NMS, run in blocks of score-sorted boxes: each
  block is tested against the boxes kept so far (one vectorised IoU matrix, at most
  `max_det` columns) and resolved inside by OpenCV's compiled `NMSBoxes`; it stops as
  soon as `max_det` boxes are kept, so its cost is bounded by candidates x max_det;
- `postprocess` = both, plus the class filter and the `max_det` cap, per image.

Per image: 10,000 candidates -> <= 5 ms (`benchmarks/bench_postprocess.py`).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .darknet import YoloHead
from .preprocess import Letterbox
from .types import Detections

MAX_CANDIDATES = 10_000  # (box, class) pairs entering NMS: the best scores are kept
MAX_DET = 300            # detections per image after NMS (best scores)
NMS_BLOCK = 256          # boxes resolved per OpenCV call


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Exact logistic, float32, no overflow warnings."""
    with np.errstate(over="ignore"):
        out = np.exp(-x)
    out += 1.0
    return np.reciprocal(out, out=out)


def decode_head(raw: np.ndarray, head: YoloHead, input_size: Tuple[int, int]) -> np.ndarray:
    """One image's raw head (A*(5+C), gh, gw) -> (gh*gw*A, 5+C) rows of
    [cx, cy, w, h, objectness, class scores...] with coordinates in network-input
    pixels and class scores already multiplied by objectness (darknet/OpenCV order:
    row = (y * gw + x) * A + a). Every cell, no threshold: the reference decoder.
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


def _head_candidates(raw: np.ndarray, head: YoloHead, input_size: Tuple[int, int], conf: float,
                     class_mask: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One head -> (boxes (n,4) cx,cy,w,h net pixels of the cells whose objectness passes,
    pair_row (m,) index into boxes, pair_class (m,), pair_score (m,)) for the (cell, class)
    pairs above conf. Works anchor by anchor on the raw (A, 5+C, gh*gw) layout, reading
    only the columns of the cells that pass (no transpose of the whole head)."""
    A, C = len(head.anchors), head.classes
    gh, gw = raw.shape[-2:]
    p = raw.reshape(A, 5 + C, gh * gw)
    net_w, net_h = input_size
    s = head.scale_x_y
    boxes, rows, classes, scores = [], [], [], []
    n_boxes = 0
    for a in range(A):
        o = p[a, 4].astype(np.float32)
        if not head.new_coords:
            o = _sigmoid(o)
        g = np.flatnonzero(o > conf)
        if len(g) == 0:
            continue
        og = o[g]
        dense = len(g) * 8 > len(o)  # many cells pass: compare the whole contiguous block, no gather
        cols = slice(None) if dense else g
        logits = p[a, 5:5 + C][:, cols]  # (C, G or n)
        if head.new_coords:  # already probabilities: l * o > conf  <=>  l > conf / o
            thr = conf / og
        else:  # sigmoid(l) * o > conf  <=>  l > logit(conf / o): compare; exp only the pairs that pass
            q = np.clip(conf / og, 1e-7, 1 - 1e-7)
            thr = np.log(q / (1 - q))
        if dense:
            full = np.full(len(o), np.inf, np.float32)
            full[g] = thr
            thr = full
        passed = logits > thr.astype(np.float32)[None, :]
        if class_mask is not None:
            passed &= class_mask[:C, None]
        c_i, j = np.divmod(np.flatnonzero(passed), passed.shape[1])  # 10x faster than a 2-D nonzero
        sc = logits[c_i, j].astype(np.float32)
        if dense:  # column -> index among the passing cells (a lookup: no search)
            pos = np.empty(len(o), np.int64)
            pos[g] = np.arange(len(g))
            j = pos[j]
        sc = (sc if head.new_coords else _sigmoid(sc)) * og[j]
        ok = sc > conf  # the logit test can let through a pair on the threshold itself (rounding)
        if not ok.all():
            c_i, j, sc = c_i[ok], j[ok], sc[ok]
        t = p[a, 0:4][:, g].astype(np.float32)  # (4, n): tx, ty, tw, th
        b = np.empty((len(g), 4), np.float32)
        xy = t[0:2] if head.new_coords else _sigmoid(t[0:2])
        if head.new_coords:
            wh = (t[2:4] * 2.0) ** 2
        else:
            with np.errstate(over="ignore"):
                wh = np.exp(t[2:4])
        b[:, 0] = ((g % gw) + xy[0] * s - (s - 1) / 2) / gw * net_w
        b[:, 1] = ((g // gw) + xy[1] * s - (s - 1) / 2) / gh * net_h
        b[:, 2] = wh[0] * head.anchors[a, 0]
        b[:, 3] = wh[1] * head.anchors[a, 1]
        boxes.append(b)
        rows.append(j + n_boxes)
        classes.append(c_i.astype(np.int32))
        scores.append(sc.astype(np.float32, copy=False))
        n_boxes += len(g)
    if not boxes:
        z = np.zeros(0, np.int64)
        return np.zeros((0, 4), np.float32), z, z.astype(np.int32), np.zeros(0, np.float32)
    return np.concatenate(boxes), np.concatenate(rows), np.concatenate(classes), np.concatenate(scores)


def _top_k(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest of score (N,) (N > k), in no order. A flood (N >> k): a
    threshold read from a strided sample keeps about 2k of them first, and the partition runs
    on those alone; exact, since it is used only when at least k pass it."""
    n = len(score)
    if n > 8 * k:
        sample = np.sort(score[::max(1, n // 4096)])
        t = sample[max(0, len(sample) - 1 - int(len(sample) * 2.0 * k / n))]
        keep = np.flatnonzero(score >= t)
        if k <= len(keep) < n // 2:
            return keep[np.argpartition(-score[keep], k - 1)[:k]]
    return np.argpartition(-score, k - 1)[:k]


def decode_candidates(raws: Sequence[np.ndarray], heads: Sequence[YoloHead], input_size: Tuple[int, int],
                      conf_threshold: float, classes: Optional[Sequence[int]] = None,
                      max_candidates: int = MAX_CANDIDATES) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All heads of one image -> the best `max_candidates` (box, class) pairs above the threshold:
    (xyxy (N,4) float32 network-input pixels, score (N,) float32, class_id (N,) int32).

    Multi-label like darknet: every (box, class) pair with objectness * class probability
    above the threshold is a candidate; `classes` keeps only those class ids.
    """
    class_mask = None
    if classes is not None:
        ncls = max(h.classes for h in heads)
        class_mask = np.zeros(ncls, bool)
        ids = np.asarray([c for c in classes if 0 <= int(c) < ncls], np.int64)
        class_mask[ids] = True
    parts = [_head_candidates(r, h, input_size, conf_threshold, class_mask) for r, h in zip(raws, heads)]
    offsets = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
    boxes = np.concatenate([p[0] for p in parts])
    row = np.concatenate([p[1] + o for p, o in zip(parts, offsets)])
    cls = np.concatenate([p[2] for p in parts])
    score = np.concatenate([p[3] for p in parts])
    if len(score) > max_candidates > 0:
        best = _top_k(score, max_candidates)
        best.sort()  # keep the decoding order among the kept (stable ties)
        row, cls, score = row[best], cls[best], score[best]
    b = boxes[row]
    half = b[:, 2:4] / 2
    xyxy = np.concatenate([b[:, 0:2] - half, b[:, 0:2] + half], axis=1)
    return xyxy, score.astype(np.float32, copy=False), cls


def decode_heads(raws: Sequence[np.ndarray], heads: Sequence[YoloHead], input_size: Tuple[int, int],
                 letterbox: Letterbox, conf_threshold: float, max_candidates: int = 0) -> Detections:
    """All heads of one image -> candidate Detections (before NMS) in frame pixels.
    max_candidates: keep only that many best pairs (0: all)."""
    xyxy, score, cls = decode_candidates(raws, heads, input_size, conf_threshold, max_candidates=max_candidates)
    if len(score) == 0:
        return Detections.empty()
    return Detections(letterbox.to_frame(xyxy), score, cls)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,4) xyxy, (M,4) xyxy -> (N,M) IoU."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _overlaps_any(a: np.ndarray, a_cls: np.ndarray, b: np.ndarray, b_cls: np.ndarray,
                  iou_threshold: float) -> np.ndarray:
    """(N,4), (M,4) xyxy with class ids -> (N,) bool: IoU > iou_threshold with a box of b
    of the same class (2-D ops only)."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    np.maximum(w, 0, out=w)
    np.maximum(h, 0, out=h)
    inter = np.multiply(w, h, out=w)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    # IoU > t  <=>  inter > t * union (union > 0 whenever inter > 0)
    hit = inter > iou_threshold * union
    hit &= a_cls[:, None] == b_cls[None, :]
    return hit.any(axis=1)


def nms(xyxy: np.ndarray, score: np.ndarray, class_id: np.ndarray, iou_threshold: float,
        max_det: int = 0) -> np.ndarray:
    """Exact greedy class-aware NMS. Returns kept indices, highest score first; at most
    `max_det` (0: no limit). A box is suppressed by a kept, higher-scoring box of the same
    class with IoU > iou_threshold (ties in score: the earlier index ranks first).

    Boxes of different classes never suppress each other: each class is shifted to its
    own region of the plane. Work is done in blocks of `NMS_BLOCK` score-sorted boxes:
    the boxes kept so far suppress a block in one vectorised IoU matrix, and OpenCV's
    compiled greedy NMS resolves what is left of it; it stops at `max_det` kept.
    """
    n = len(xyxy)
    if n == 0:
        return np.zeros(0, np.int64)
    score = np.asarray(score, np.float32)
    cls = np.asarray(class_id, np.int64)
    boxes = np.asarray(xyxy, np.float32)
    # boxes for OpenCV: non-negative, one region of the plane per class (double precision)
    tl = boxes.astype(np.float64)
    tl -= tl.min()
    tl += cls[:, None] * (tl.max() + 1.0)
    tl[:, 2:] -= tl[:, :2]  # tlwh
    limit = max_det if max_det > 0 else n
    kept: List[np.ndarray] = []
    kept_boxes, kept_cls = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    n_kept = 0
    for order in _score_order(score):
        for start in range(0, len(order), NMS_BLOCK):
            idx = order[start:start + NMS_BLOCK]
            if n_kept:
                idx = idx[~_overlaps_any(boxes[idx], cls[idx], kept_boxes, kept_cls, iou_threshold)]
            if len(idx) == 0:
                continue
            ranks = np.arange(len(idx), 0, -1, dtype=np.float32)  # decreasing: OpenCV keeps our order on ties
            k = idx[np.asarray(cv2.dnn.NMSBoxes(tl[idx], ranks, 0.0, float(iou_threshold)), np.int64).reshape(-1)]
            k = k[:limit - n_kept]
            kept.append(k)
            kept_boxes = np.concatenate([kept_boxes, boxes[k]])
            kept_cls = np.concatenate([kept_cls, cls[k]])
            n_kept += len(k)
            if n_kept >= limit:
                return np.concatenate(kept)
    return np.concatenate(kept) if kept else np.zeros(0, np.int64)


def _score_order(score: np.ndarray, first: int = 2048):
    """Indices by decreasing score (ties: lower index first), in two parts: the best `first`,
    then the rest, so an NMS that stops early never sorts every candidate."""
    n = len(score)
    if n <= first * 2:
        yield np.lexsort((np.arange(n), -score))
        return
    head = np.argpartition(-score, first - 1)[:first]
    cut = score[head].min()
    head = np.flatnonzero(score > cut)  # strictly better than the cut: exactly ordered among all
    ties_and_rest = np.flatnonzero(score <= cut)
    yield head[np.lexsort((head, -score[head]))]
    yield ties_and_rest[np.lexsort((ties_and_rest, -score[ties_and_rest]))]


def nms_detections(dets: Detections, iou_threshold: float, classes: Optional[Sequence[int]] = None,
                   max_candidates: int = MAX_CANDIDATES, max_det: int = 0) -> Detections:
    """Class filter, keep the `max_candidates` best scores, then class-aware NMS keeping at most
    `max_det` (0: all); sorted by score."""
    if classes is not None and len(dets):
        dets = dets[np.isin(dets.class_id, np.asarray(classes, np.int32))]
    if len(dets) > max_candidates > 0:
        dets = dets[np.argpartition(-dets.score, max_candidates - 1)[:max_candidates]]
    return dets[nms(dets.xyxy, dets.score, dets.class_id, iou_threshold, max_det)]


def postprocess(raws: Sequence[np.ndarray], heads: Sequence[YoloHead], input_size: Tuple[int, int],
                letterbox: Letterbox, conf_threshold: float, iou_threshold: float,
                classes: Optional[Sequence[int]] = None, max_det: int = MAX_DET,
                max_candidates: int = MAX_CANDIDATES) -> Detections:
    """One image's raw heads [(A*(5+C), gh, gw), ...] -> final Detections in frame pixels:
    decode, class filter, candidate cap (`max_candidates` best pairs), class-aware NMS,
    at most `max_det` detections (0: no cap), highest score first."""
    xyxy, score, cls = decode_candidates(raws, heads, input_size, conf_threshold, classes, max_candidates)
    if len(score) == 0:
        return Detections.empty()
    xyxy = letterbox.to_frame(xyxy)  # NMS on the clipped frame boxes, as OpenCV's reference does
    keep = nms(xyxy, score, cls, iou_threshold, max_det)
    return Detections(xyxy[keep], score[keep], cls[keep])
