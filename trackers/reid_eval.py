"""Measuring how well an appearance encoder re-identifies objects on real video.

The MOT15 sequences used for tracking accuracy have no image frames, so encoders are measured
on the project's videos instead, with a method that needs no identity labels:

1. boxes from an independent real detector (Yolo-Fastest-xl COCO weights through OpenCV's
   darknet importer; OpenCV is imported inside :func:`detect_video`, only when called);
2. pseudo-identities from *unambiguous* frame-to-frame links only (IoU >= 0.5, mutual best
   match, every competing overlap < 0.2), so a chain of boxes is one object with high
   confidence; ambiguous moments (crossings) start new chains instead of guessing;
3. re-identification across a gap of ``gap`` frames: every box of frame t is a query against
   all boxes of frame t+gap; rank-1 is correct when the nearest (cosine) box belongs to the
   same chain. Reported with chance level (1 / gallery size) and the ROC AUC of same-chain vs
   different-chain distances.

Positions are never given to the encoder, so the IoU-based labels do not leak into the score.
Caveat: chains favour objects that are easy to link (not crossing), so the figures describe
separation between distinct neighbours, not recovery after long occlusions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .encoders import sample_patches
from .matching import iou_matrix

logger = logging.getLogger(__name__)

#: COCO classes kept by default: person, car, bus, truck
DEFAULT_CLASSES = (0, 2, 5, 7)


def detect_video(video, cfg, weights, n_frames: int, conf: float = 0.4, nms: float = 0.45,
                 classes: Sequence[int] = DEFAULT_CLASSES, input_size: int = 320
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run a darknet YOLO (OpenCV DNN) on the first ``n_frames`` frames of a video.

    Returns (frames: list of (H,W,3) uint8 BGR, boxes: list of (N,4) float64 xyxy).
    """
    import cv2  # only here: the tracking core never imports OpenCV

    for p in (video, cfg, weights):
        if not Path(p).is_file():
            raise FileNotFoundError(f"not found: {p}")
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    cap = cv2.VideoCapture(str(video))
    frames, boxes = [], []
    try:
        for _ in range(n_frames):
            ok, img = cap.read()
            if not ok:
                break
            hgt, wid = img.shape[:2]
            net.setInput(cv2.dnn.blobFromImage(img, 1 / 255.0, (input_size, input_size), swapRB=True))
            rows = np.concatenate([o.reshape(-1, o.shape[-1])
                                   for o in net.forward(net.getUnconnectedOutLayersNames())])
            cls = rows[:, 5:].argmax(1)
            score = rows[:, 5:].max(1)
            keep = (score > conf) & np.isin(cls, list(classes))
            r = rows[keep]
            tlwh = np.stack([(r[:, 0] - r[:, 2] / 2) * wid, (r[:, 1] - r[:, 3] / 2) * hgt,
                             r[:, 2] * wid, r[:, 3] * hgt], 1).astype(np.float64)
            idx = np.array(cv2.dnn.NMSBoxes(tlwh.tolist(), score[keep].tolist(), conf, nms)).reshape(-1)
            b = tlwh[idx] if len(idx) else np.zeros((0, 4))
            b[:, 2:] += b[:, :2]
            frames.append(img)
            boxes.append(b)
    finally:
        cap.release()
    return frames, boxes


def iou_chains(boxes: Sequence[np.ndarray], min_iou: float = 0.5, max_other: float = 0.2
               ) -> list[np.ndarray]:
    """Pseudo-identities from unambiguous links. boxes: per frame (N_t,4) xyxy.
    Returns per frame (N_t,) int chain ids."""
    ids: list[np.ndarray] = []
    nxt = 0
    for t, b in enumerate(boxes):
        cur = -np.ones(len(b), np.int64)
        if t and len(b) and len(boxes[t - 1]):
            io = iou_matrix(boxes[t - 1], b)
            for j in range(len(b)):
                i = int(io[:, j].argmax())
                other = max(np.sort(io[:, j])[-2] if io.shape[0] > 1 else 0.0,
                            np.sort(io[i])[-2] if io.shape[1] > 1 else 0.0)
                if io[i, j] >= min_iou and other < max_other and int(io[i].argmax()) == j:
                    cur[j] = ids[t - 1][i]
        for j in np.flatnonzero(cur < 0):
            cur[j], nxt = nxt, nxt + 1
        ids.append(cur)
    return ids


@dataclass
class ReidScore:
    rank1: float
    chance: float
    queries: int
    auc: float


def reid_scores(frames, boxes, ids, encoder, gap: int) -> ReidScore:
    """Rank-1 re-identification across ``gap`` frames (see the module docstring)."""
    feats = [encoder(f, b) for f, b in zip(frames, boxes)]
    hits, chance, same, diff = [], [], [], []
    for t in range(len(frames) - gap):
        g_ids, gf = ids[t + gap], feats[t + gap]
        if len(g_ids) < 2:
            continue
        for i, cid in enumerate(ids[t]):
            m = np.flatnonzero(g_ids == cid)
            if len(m) != 1:
                continue
            d = 1.0 - gf @ feats[t][i]
            hits.append(int(d.argmin()) == int(m[0]))
            chance.append(1.0 / len(g_ids))
            same.append(d[m[0]])
            diff.extend(np.delete(d, m[0]).tolist())
    if not hits:
        return ReidScore(float("nan"), float("nan"), 0, float("nan"))
    s, d = np.asarray(same), np.asarray(diff)
    auc = float((s[:, None] < d[None, :]).mean() + 0.5 * (s[:, None] == d[None, :]).mean())
    return ReidScore(float(np.mean(hits)), float(np.mean(chance)), len(hits), auc)


class MeanColourEncoder:
    """Baseline for comparison: the mean BGR colour of the box (D = 3)."""

    dim = 3

    def __call__(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        f = sample_patches(frame, xyxy, 16, 8).mean(axis=(1, 2))
        if f.shape[1] == 1:
            f = np.repeat(f, 3, axis=1)
        return (f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-9)).astype(np.float32)
