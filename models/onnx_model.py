"""A detector from an ONNX file of today's families (YOLOv5/v8/v11, YOLOX, RT-DETR).

    layout = read_layout(spec.file, names, spec.preprocess, spec.size)   # models.onnx_layouts
    det = OnnxFileDetector(spec, layout)       # ONNX Runtime (fp32; int8 with spec.calib)
    dets = det.detect(frame_bgr)                                          # Detections, frame pixels

Each family's own pre-processing (`onnx_preprocess`), its decoding (`onnx_layouts.decode_*`),
then the shared class-aware NMS (`postprocess.nms`, in input pixels as the families do) with the
candidate and ``max_det`` caps, and the boxes mapped back to frame pixels. One class per box
(the best), as these families' own post-processing. `OnnxFileBase` holds all of that; OpenVINO
runs the same file through it (`backends.openvino_backend.OpenVINOFileDetector`).
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .backends.onnx_backend import session_options
from .detector import Detector
from .errors import BackendUnavailable
from .onnx_layouts import (OnnxLayout, decode_anchor_based, decode_anchor_free, decode_nms,
                           decode_rtdetr, decode_rtdetr_topk, decode_yolox, yolox_grid)
from .onnx_preprocess import preprocess_file
from .postprocess import _top_k, nms
from .preprocess import Letterbox
from .types import Detections

log = logging.getLogger(__name__)


class OnnxFileBase(Detector):
    """`Detector` of an ONNX file read by `onnx_layouts.read_layout`: its family's pre-processing
    and decoding, shared by the backends that run the graph (`OnnxFileDetector` here, OpenVINO's
    `OpenVINOFileDetector`); subclasses implement `infer`.

    infer: blob (B, 3, h, w) float32 -> [output (B, d1, d2) float32]; a graph of fixed batch 1
    runs the frames one by one. postprocess: -> one Detections per frame, highest score first.
    """

    def __init__(self, spec, layout: OnnxLayout):  # noqa: D107  (no darknet network; names from the layout)
        self.layout = layout
        names = list(layout.names) if layout.names else [str(i) for i in range(layout.num_classes)]
        self.spec, self.network, self.names = spec, None, names
        self.input_size = layout.input_size
        self.max_det = int(spec.max_det if spec.max_det is not None else spec.extra.get("max_det", 300))
        self.max_candidates = int(spec.extra.get("max_candidates", 10_000))
        self.choice = None
        self.grid = yolox_grid(layout.input_size) if layout.kind == "yolox" else None
        mask = None
        if spec.classes is not None:
            mask = np.zeros(layout.num_classes, bool)
            mask[[c for c in spec.classes if 0 <= c < layout.num_classes]] = True
        self.class_mask = mask

    def preprocess(self, frames: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[Letterbox]]:
        """N BGR uint8 frames -> (blob (N, 3, h, w) float32, N mappings back)."""
        return preprocess_file(frames, self.layout)

    def candidates(self, out: np.ndarray, conf: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image's output (d1, d2) -> (xyxy (n, 4) input pixels, score (n,), class_id (n,)) above conf."""
        kind, mask = self.layout.kind, self.class_mask
        out = np.asarray(out, np.float32)
        if kind == "anchor_free":
            return decode_anchor_free(out, conf, mask)
        if kind == "anchor_based":
            return decode_anchor_based(out, conf, mask)
        if kind == "yolox":
            return decode_yolox(out, conf, mask, self.grid)
        if kind == "rtdetr":
            return decode_rtdetr(out, conf, mask, self.input_size)
        if kind == "rtdetr_topk":
            return decode_rtdetr_topk(out, conf, mask, self.input_size)
        return decode_nms(out, conf, mask)

    def postprocess(self, heads: List[np.ndarray], boxes: List[Letterbox], conf: Optional[float] = None,
                    max_det: Optional[int] = None) -> List[Detections]:
        """[(B, d1, d2)] -> one Detections per frame in frame pixels (NMS in input pixels, except for
        RT-DETR and graphs with NMS inside), at most max_det, highest score first. conf, max_det:
        other than the spec's threshold and this detector's cap (auto's accuracy check)."""
        conf = self.spec.conf_threshold if conf is None else conf
        max_det = self.max_det if max_det is None else max_det
        out = []
        for b, lb in enumerate(boxes):
            xyxy, score, cls = self.candidates(heads[0][b], conf)
            if len(score) > self.max_candidates > 0:
                best = np.sort(_top_k(score, self.max_candidates))
                xyxy, score, cls = xyxy[best], score[best], cls[best]
            if self.layout.kind in ("rtdetr", "rtdetr_topk", "nms"):
                keep = np.lexsort((np.arange(len(score)), -score))[:max_det or None]
            else:
                keep = nms(xyxy, score, cls, self.spec.nms_threshold, max_det)
            out.append(Detections(lb.to_frame(xyxy[keep]), score[keep], cls[keep]) if len(keep)
                       else Detections.empty())
        return out


def run_one_by_one(run, layout: OnnxLayout, blob: np.ndarray) -> List[np.ndarray]:
    """`run` (blob -> [output]) over a batch: at once, or frame by frame for a graph of fixed batch 1."""
    if layout.batch == 1 and len(blob) > 1:
        return [np.concatenate([run(blob[i:i + 1])[0] for i in range(len(blob))])]
    return run(blob)


class OnnxFileDetector(OnnxFileBase):
    """An ONNX file on ONNX Runtime: fp32, or int8 (the Q/DQ model of spec.calib, `quantize`)."""

    name = "onnx"

    def __init__(self, spec, layout: OnnxLayout):  # noqa: D107
        try:
            import onnxruntime as ort  # noqa: PLC0415
        except ImportError as e:
            raise BackendUnavailable(f"onnxruntime is not installed ({e})")
        if spec.backend not in ("auto", "onnx") or spec.precision not in ("auto", "fp32", "int8"):
            raise BackendUnavailable(f"an ONNX model file runs on ONNX Runtime in fp32 or int8 (got backend "
                                     f"{spec.backend}, precision {spec.precision})")
        super().__init__(spec, layout)
        path = layout.path
        if spec.precision == "int8":
            from .quantize import int8_model_path  # noqa: PLC0415

            path = int8_model_path(spec, layout)
        self.model_path = path
        self.session = ort.InferenceSession(str(path), session_options(spec.threads),
                                            providers=["CPUExecutionProvider"])

    @property
    def precision(self) -> str:
        return "int8" if self.spec.precision == "int8" else "fp32"

    def infer(self, blob: np.ndarray) -> List[np.ndarray]:
        """(B, 3, h, w) float32 -> [(B, d1, d2) float32]."""
        names, feed = [self.layout.output_name], self.layout.input_name
        return run_one_by_one(lambda b: self.session.run(names, {feed: b}), self.layout, blob)

    def close(self) -> None:
        self.session = None
