"""Event snapshots on disk: the JPEG render sent for the event's track (`best.BestFrames`),
clean, written atomically; the box is kept in the index and drawn on request (`draw_box`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


def write_bytes(path: Path, data: bytes) -> int:
    """Write ``data`` (an encoded JPEG) at ``path`` atomically (a reader never sees half of it); -> bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jpg.part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return len(data)


def draw_box(frame: np.ndarray, box: Sequence[float], text: str) -> np.ndarray:
    """A copy of ``frame`` (H, W, 3) uint8 BGR with ``box`` (xyxy pixels) and ``text`` drawn."""
    out = frame.copy()
    x1, y1, x2, y2 = (round(v) for v in box)
    th = max(2, out.shape[0] // 360)
    cv2.rectangle(out, (x1, y1), (x2, y2), (0, 200, 255), th)
    cv2.putText(out, text, (x1, max(14, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * th, (0, 200, 255), th)
    return out
