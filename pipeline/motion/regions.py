"""Detection on crops around the motion (Frigate's regions), the alternative to the whole frame.

`regions` turns a frame's motion boxes into square crops of at least ``min_side`` pixels (the
detector's input size: a crop is then seen at full resolution, where the whole frame is shrunk),
each box inside one crop, overlapping crops merged; more than ``max_regions`` of them: the whole
frame instead (None). `detect_regions` runs every crop in one ``detect_batch`` call and puts
the boxes back into frame pixels, suppressing the duplicates that overlapping crops found
(class-aware NMS). benchmarks/bench_motion.py measures both ways (docs/motion.md).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from trackpipe.models.types import Detections


def _square(box: np.ndarray, side: float, w: int, h: int) -> np.ndarray:
    """A ``side`` x ``side`` square (clipped to the frame, shifted inside) centred on ``box`` (4,)."""
    side = min(side, w, h) if side <= min(w, h) else side
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    sw, sh = min(side, w), min(side, h)
    x1 = float(np.clip(cx - sw / 2, 0, w - sw))
    y1 = float(np.clip(cy - sh / 2, 0, h - sh))
    return np.array([x1, y1, x1 + sw, y1 + sh])


def regions(boxes: np.ndarray, frame_wh: Tuple[int, int], min_side: int = 320, margin: float = 1.2,
            max_regions: int = 4) -> Optional[np.ndarray]:
    """(M,4) motion boxes of a (W, H) frame -> (R,4) int32 crop boxes xyxy (R <= ``max_regions``),
    or None when the whole frame is the better crop (too many regions, or one as big)."""
    w, h = int(frame_wh[0]), int(frame_wh[1])
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(b):
        return np.zeros((0, 4), np.int32)
    out: List[np.ndarray] = []
    for box in b[np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))]:
        if any(r[0] <= box[0] and r[1] <= box[1] and r[2] >= box[2] and r[3] >= box[3] for r in out):
            continue
        side = max(float(min_side), margin * max(box[2] - box[0], box[3] - box[1]))
        out.append(_square(box, side, w, h))
    merged = True
    while merged and len(out) > 1:   # overlapping crops -> one crop around both
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, c = out[i], out[j]
                if a[0] < c[2] and c[0] < a[2] and a[1] < c[3] and c[1] < a[3]:
                    u = np.array([min(a[0], c[0]), min(a[1], c[1]), max(a[2], c[2]), max(a[3], c[3])])
                    out[i] = _square(u, max(u[2] - u[0], u[3] - u[1]), w, h)
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    crops = np.round(np.asarray(out)).astype(np.int32)
    area = ((crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1])).sum()
    if len(crops) > max_regions or area >= w * h:
        return None
    return crops


def detect_regions(detector, frame: np.ndarray, crops: np.ndarray, iou: float = 0.5) -> Detections:
    """The detections of ``crops`` (R,4) int xyxy of ``frame`` (H, W, 3), in one batch, in frame
    pixels, overlaps between crops suppressed (class-aware NMS at ``iou``)."""
    from trackpipe.models.postprocess import nms
    if not len(crops):
        return Detections.empty()
    found = detector.detect_batch([frame[y1:y2, x1:x2] for x1, y1, x2, y2 in crops.tolist()])
    parts = []
    for (x1, y1, _, _), d in zip(crops.tolist(), found):
        if len(d):
            parts.append(Detections(d.xyxy + np.float32([x1, y1, x1, y1]), d.score, d.class_id))
    if not parts:
        return Detections.empty()
    all_ = Detections(np.concatenate([p.xyxy for p in parts]), np.concatenate([p.score for p in parts]),
                      np.concatenate([p.class_id for p in parts]))
    return all_[nms(all_.xyxy, all_.score, all_.class_id, iou)] if len(parts) > 1 else all_


def crop_area(crops: Sequence[Sequence[int]]) -> int:
    c = np.asarray(crops, np.int64).reshape(-1, 4)
    return int(((c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])).sum())
