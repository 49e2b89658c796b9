"""Frames for speed runs when no real frame is at hand."""

from __future__ import annotations

import numpy as np


def synthetic_frame(w: int = 1280, h: int = 720, seed: int = 0) -> np.ndarray:
    """A deterministic textured BGR frame (H, W, 3) uint8 for speed runs."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    import cv2  # noqa: PLC0415
    return cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
