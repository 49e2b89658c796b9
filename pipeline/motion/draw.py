"""Motion boxes drawn over a frame (the live view's optional overlay, ``detect.motion_boxes``)."""

from __future__ import annotations

import cv2
import numpy as np

MOTION_COLOR = (0, 215, 255)   # BGR amber: apart from the classes' box colours


def draw_motion(frame: np.ndarray, boxes: np.ndarray, color=MOTION_COLOR) -> np.ndarray:
    """Draw (M,4) xyxy motion boxes on ``frame`` (H, W, 3) uint8 BGR in place, 1 px thin lines
    (2 px from 1080 rows); -> the frame."""
    t = 2 if frame.shape[0] >= 1080 else 1
    for x1, y1, x2, y2 in np.asarray(boxes, np.float32).reshape(-1, 4).round().astype(int).tolist():
        cv2.rectangle(frame, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), color, t, cv2.LINE_4)
    return frame
