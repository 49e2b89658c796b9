"""Frames as each family of ONNX files (`onnx_layouts.PRESETS`) feeds its model: Ultralytics'
centred letterbox (pad 114, RGB, /255), YOLOX's top-left letterbox (pad 114, BGR, 0..255),
RT-DETR's stretch. Shared by every backend that runs such a file and by its INT8 calibration."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import cv2
import numpy as np

from .onnx_layouts import PRESETS, OnnxLayout
from .preprocess import Letterbox, check_frame


def prepare(frame: np.ndarray, size: Tuple[int, int], preset: str) -> Tuple[np.ndarray, Letterbox]:
    """One BGR uint8 frame (H, W, 3) -> (image (h, w, 3) uint8 in the preset's channel order,
    the mapping back). Ultralytics' LetterBox (centred, pads rounded as its own) and scale_boxes,
    YOLOX's top-left letterbox, or a stretch resize."""
    mode, pad, rgb, _ = PRESETS[preset]
    w, h = size
    fh, fw = frame.shape[:2]
    if mode == "stretch":
        img = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR) if (fw, fh) != (w, h) else frame
        lb = Letterbox(w / fw, h / fh, 0.0, 0.0, fw, fh)
    else:
        r = min(w / fw, h / fh)
        if mode == "center":
            nw, nh = int(round(fw * r)), int(round(fh * r))
            dw, dh = (w - nw) / 2, (h - nh) / 2
            left, top = int(round(dw - 0.1)), int(round(dh - 0.1))
            pad_x, pad_y = round((w - fw * r) / 2 - 0.1), round((h - fh * r) / 2 - 0.1)  # scale_boxes
        else:
            nw, nh = int(fw * r), int(fh * r)
            left = top = pad_x = pad_y = 0
        img = np.full((h, w, 3), pad, np.uint8)
        resized = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (fw, fh) else frame
        img[top:top + nh, left:left + nw] = resized
        lb = Letterbox(r, r, float(pad_x), float(pad_y), fw, fh)
    return (img[..., ::-1] if rgb else img), lb


def preprocess_file(frames: Sequence[np.ndarray], layout: OnnxLayout) -> Tuple[np.ndarray, List[Letterbox]]:
    """N BGR uint8 frames (H_i, W_i, 3) -> (blob (N, 3, h, w) float32 as the file's family feeds
    its model, N mappings back to frame pixels)."""
    w, h = layout.input_size
    scale = PRESETS[layout.preset][3]
    blob = np.empty((len(frames), 3, h, w), np.float32)
    boxes = []
    for i, f in enumerate(frames):
        check_frame(f)
        img, lb = prepare(f, layout.input_size, layout.preset)
        np.multiply(img.transpose(2, 0, 1), np.float32(scale), out=blob[i], casting="unsafe")
        boxes.append(lb)
    return blob, boxes
