"""OpenCV's darknet importer (cv2.dnn): the reference backend and parity oracle.

Its decoding and NMS are OpenCV's own (the yolo layer and NMSBoxesBatched), so
comparing it with the other backends checks our decoder independently.
"""

from __future__ import annotations

import re
from typing import List, Sequence

import cv2
import numpy as np

from ..detector import Detector
from ..errors import BackendUnavailable, ModelError
from ..types import Detections


def _cfg_with_threshold(text: str, thresh: float) -> str:
    """OpenCV's yolo layer zeroes class scores below the cfg's `thresh` (default 0.2);
    set it to the detector's own threshold in every [yolo] section."""
    text = re.sub(r"(?im)^\s*thresh\s*=.*$", "", text)
    return re.sub(r"(?im)^\[yolo\]\s*$", f"[yolo]\nthresh={thresh}", text)


class OpenCVDetector(Detector):
    name = "opencv"

    def __init__(self, spec, network, names):
        super().__init__(spec, network, names)
        if spec.precision != "fp32":
            raise BackendUnavailable(f"the opencv backend runs fp32 only; {spec.precision} needs onnx or tensorrt")
        cfg_text = _cfg_with_threshold(network.cfg_path.read_text(), spec.conf_threshold)
        try:
            self.net = cv2.dnn.readNetFromDarknet(np.frombuffer(cfg_text.encode(), np.uint8),
                                                  np.fromfile(str(network.weights_path), np.uint8))
        except cv2.error as e:
            raise ModelError(f"OpenCV cannot load {network.cfg_path}: {str(e).strip().splitlines()[-1]}")
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        if spec.threads:
            cv2.setNumThreads(spec.threads)
        self.head_names = [f"conv_{h.source}" for h in network.yolo_layers]
        self.yolo_names = [f"yolo_{h.index}" for h in network.yolo_layers]

    def infer(self, blob: np.ndarray) -> List[np.ndarray]:
        """Raw outputs of the convolutions feeding the yolo layers, (B, A*(5+C), h, w)."""
        self.net.setInput(blob)
        return [np.ascontiguousarray(o) for o in self.net.forward(self.head_names)]

    def decoded(self, blob: np.ndarray) -> List[np.ndarray]:
        """OpenCV's own decoded yolo outputs for a single-image blob: per head (rows, 5+C),
        [cx, cy, w, h] relative to the input size, objectness, class score * objectness."""
        self.net.setInput(blob)
        return list(self.net.forward(self.yolo_names))

    def detect_batch(self, frames: Sequence[np.ndarray]) -> List[Detections]:
        out = []
        for frame in frames:
            blob, (lb,) = self.preprocess([frame])
            rows = np.concatenate(self.decoded(blob))
            rows = rows[rows[:, 4] > self.spec.conf_threshold]
            box_i, cls_i = np.nonzero(rows[:, 5:] > self.spec.conf_threshold)
            r = rows[box_i]
            w, h = self.input_size
            cxcy, wh = r[:, 0:2] * (w, h), r[:, 2:4] * (w, h)
            xyxy = lb.to_frame(np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1).astype(np.float32))
            score = r[np.arange(len(r)), 5 + cls_i].astype(np.float32)
            dets = Detections(xyxy, score, cls_i.astype(np.int32))
            if self.spec.classes is not None:
                dets = dets[np.isin(dets.class_id, self.spec.classes)]
            if len(dets):
                tlwh = np.concatenate([dets.xyxy[:, :2], dets.xyxy[:, 2:] - dets.xyxy[:, :2]], axis=1)
                keep = cv2.dnn.NMSBoxesBatched(tlwh.tolist(), dets.score.tolist(), dets.class_id.tolist(),
                                               self.spec.conf_threshold, self.spec.nms_threshold)
                dets = dets[np.asarray(keep, np.int64).reshape(-1)]
                dets = dets[np.argsort(-dets.score, kind="stable")]
            out.append(dets[:self.max_det] if self.max_det > 0 else dets)
        return out
