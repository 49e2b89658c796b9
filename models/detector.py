"""The detector interface every backend implements."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import List, Optional, Sequence

import numpy as np

from .darknet import Network
from .postprocess import MAX_CANDIDATES, MAX_DET, postprocess
from .preprocess import Letterbox, preprocess
from .spec import ModelSpec
from .types import Detections

log = logging.getLogger(__name__)


class Detector(ABC):
    """Runs a darknet network on BGR frames and returns `Detections` in frame pixels.

    Subclasses implement `infer(blob)`: blob (B, 3, H, W) float32 RGB in [0, 1] ->
    one raw head tensor per yolo layer, each (B, A*(5+C), h, w) float32 (NCHW, the
    output of the convolution feeding the yolo layer), for any B >= 1. Decoding and
    NMS are shared (`postprocess.postprocess`).

    max_det: at most this many detections per frame after NMS (spec.max_det, or
    spec.extra["max_det"]; default 300); max_candidates: (box, class) pairs entering
    NMS (spec.extra["max_candidates"]; default 10,000).
    """

    name = "base"

    def __init__(self, spec: ModelSpec, network: Network, names: List[str]):
        self.spec = spec
        self.network = network
        self.names = names
        self.input_size = network.input_size  # (w, h)
        extra = getattr(spec, "extra", None) or {}
        max_det = getattr(spec, "max_det", None)
        self.max_det = int(max_det if max_det is not None else extra.get("max_det", MAX_DET))
        self.max_candidates = int(extra.get("max_candidates", MAX_CANDIDATES))
        self.choice = None  # set by the factory when `auto` chose this detector (an auto.Choice)

    @property
    def precision(self) -> str:
        return getattr(self.spec, "precision", "fp32")

    def describe(self) -> str:
        """'<backend>-<precision>', e.g. 'openvino-bf16': what runs, for logs and the profile."""
        return f"{self.name}-{self.precision}"

    @abstractmethod
    def infer(self, blob: np.ndarray) -> List[np.ndarray]:
        """(B,3,H,W) float32 -> list of (B, A*(5+C), h, w) raw head outputs."""

    def preprocess(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, List[Letterbox]]:
        return preprocess(frames, self.input_size, letterbox=self.spec.letterbox)

    def postprocess(self, heads: List[np.ndarray], boxes: List[Letterbox], conf: Optional[float] = None,
                    max_det: Optional[int] = None) -> List[Detections]:
        """Raw heads of a batch [(B, A*(5+C), h, w), ...] -> one Detections per frame. conf, max_det:
        other than the spec's threshold and this detector's cap (auto's accuracy check)."""
        conf = self.spec.conf_threshold if conf is None else conf
        return [postprocess([h[b] for h in heads], self.network.yolo_layers, self.input_size, lb,
                            conf, self.spec.nms_threshold, self.spec.classes,
                            self.max_det if max_det is None else max_det, self.max_candidates)
                for b, lb in enumerate(boxes)]

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        """frame_bgr (H, W, 3) uint8 -> Detections in frame pixels."""
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> List[Detections]:
        """N BGR uint8 frames (each (H_i, W_i, 3), sizes may differ) -> N Detections, in order,
        from one `infer` call on a (N, 3, h, w) blob. N = 0 -> []."""
        if len(frames) == 0:
            return []
        blob, boxes = self.preprocess(frames)
        return self.postprocess(self.infer(blob), boxes)

    def close(self) -> None:
        """Release backend resources (sessions, engines)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
