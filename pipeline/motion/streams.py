"""Boxes between a camera's two streams: the detect stream (``detect_uri``, low resolution,
what the pipeline decodes and detects on) and the record stream (``uri``, the full one).

A box found at (w, h) is drawn, recorded and reported at (W, H) by scaling x by W/w and y by
H/h (both streams show the same field of view; a stream with other borders is not supported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np


@dataclass(frozen=True)
class BoxMap:
    """``src``: (W, H) boxes come from; ``dst``: (W, H) they go to."""

    src: Tuple[int, int]
    dst: Tuple[int, int]

    def __post_init__(self) -> None:
        if min(*self.src, *self.dst) <= 0:
            raise ValueError(f"stream sizes must be positive, got {self.src} -> {self.dst}")

    @property
    def scale(self) -> np.ndarray:
        """(4,) float32 factors for x1, y1, x2, y2."""
        sx, sy = self.dst[0] / self.src[0], self.dst[1] / self.src[1]
        return np.array([sx, sy, sx, sy], np.float32)

    @property
    def identity(self) -> bool:
        return tuple(self.src) == tuple(self.dst)

    def __call__(self, xyxy: np.ndarray) -> np.ndarray:
        """(N,4) xyxy at ``src`` -> (N,4) float32 xyxy at ``dst``."""
        b = np.asarray(xyxy, np.float32).reshape(-1, 4)
        return b.copy() if self.identity else b * self.scale

    def inverse(self) -> "BoxMap":
        return BoxMap(self.dst, self.src)
