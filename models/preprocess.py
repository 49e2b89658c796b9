"""Frame -> network input, exactly as OpenCV's blobFromImage (darknet's stretch resize).

`stretch` (the darknet default) resizes to the network size with bilinear
interpolation; `letterbox` keeps the aspect ratio and pads with grey 0.5, as
darknet's `letter_box=1`. Both return a `Letterbox` that maps boxes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """Mapping network-input pixels -> frame pixels: x_frame = (x_net - pad_x) / scale_x."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    frame_w: int
    frame_h: int

    def to_frame(self, xyxy: np.ndarray) -> np.ndarray:
        """(N,4) xyxy in network pixels -> (N,4) xyxy in frame pixels, clipped to the frame."""
        out = np.empty_like(xyxy)
        xs, ys = out[:, 0::2], out[:, 1::2]  # views: x1,x2 and y1,y2
        np.clip((xyxy[:, 0::2] - self.pad_x) / self.scale_x, 0, self.frame_w, out=xs)
        np.clip((xyxy[:, 1::2] - self.pad_y) / self.scale_y, 0, self.frame_h, out=ys)
        return out


def check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = getattr(frame, "shape", type(frame).__name__), getattr(frame, "dtype", "")
        raise ValueError(f"expected a BGR uint8 frame of shape (H, W, 3), got {got}")


def _letterbox_one(frame: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, Letterbox]:
    w, h = size
    fh, fw = frame.shape[:2]
    s = min(w / fw, h / fh)
    nw, nh = int(round(fw * s)), int(round(fh * s))
    px, py = (w - nw) // 2, (h - nh) // 2
    canvas = np.full((h, w, 3), 128, np.uint8)
    canvas[py:py + nh, px:px + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, Letterbox(nw / fw, nh / fh, px, py, fw, fh)


def preprocess(frames: Sequence[np.ndarray], size: Tuple[int, int], letterbox: bool = False
               ) -> Tuple[np.ndarray, List[Letterbox]]:
    """BGR uint8 frames (H, W, 3) -> blob (B, 3, h, w) float32 RGB in [0, 1] and the box mappings."""
    w, h = size
    boxes, images = [], []
    for f in frames:
        check_frame(f)
        if letterbox:
            img, lb = _letterbox_one(f, size)
        else:
            img, lb = f, Letterbox(w / f.shape[1], h / f.shape[0], 0.0, 0.0, f.shape[1], f.shape[0])
        images.append(img)
        boxes.append(lb)
    blob = cv2.dnn.blobFromImages(images, 1 / 255.0, (w, h), swapRB=True, crop=False)
    return blob, boxes
