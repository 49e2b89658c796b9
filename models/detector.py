"""The detector interface every backend implements."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import List, Sequence

import numpy as np

from .darknet import Network
from .postprocess import decode_heads, nms_detections
from .preprocess import Letterbox, preprocess
from .spec import ModelSpec
from .types import Detections

log = logging.getLogger(__name__)


class Detector(ABC):
    """Runs a darknet network on BGR frames and returns `Detections` in frame pixels.

    Subclasses implement `infer(blob)`: blob (B, 3, H, W) float32 RGB in [0, 1] ->
    one raw head tensor per yolo layer, each (B, A*(5+C), h, w) float32 (NCHW, the
    output of the convolution feeding the yolo layer). Decoding and NMS are shared.
    """

    name = "base"

    def __init__(self, spec: ModelSpec, network: Network, names: List[str]):
        self.spec = spec
        self.network = network
        self.names = names
        self.input_size = network.input_size  # (w, h)

    @abstractmethod
    def infer(self, blob: np.ndarray) -> List[np.ndarray]:
        """(B,3,H,W) float32 -> list of (B, A*(5+C), h, w) raw head outputs."""

    def preprocess(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, List[Letterbox]]:
        return preprocess(frames, self.input_size, letterbox=self.spec.letterbox)

    def postprocess(self, heads: List[np.ndarray], boxes: List[Letterbox]) -> List[Detections]:
        out = []
        for b, lb in enumerate(boxes):
            dets = decode_heads([h[b] for h in heads], self.network.yolo_layers, self.input_size,
                                lb, self.spec.conf_threshold)
            out.append(nms_detections(dets, self.spec.nms_threshold, self.spec.classes))
        return out

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        """frame_bgr (H, W, 3) uint8 -> Detections in frame pixels."""
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> List[Detections]:
        if not frames:
            return []
        blob, boxes = self.preprocess(frames)
        return self.postprocess(self.infer(blob), boxes)

    def close(self) -> None:
        """Release backend resources (sessions, engines)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
