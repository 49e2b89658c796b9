"""A detector from an ONNX file of today's families (YOLOv5/v8/v11, YOLOX, RT-DETR), on ONNX Runtime.

    layout = read_layout(spec.file, names, spec.preprocess, spec.size)   # models.onnx_layouts
    det = OnnxFileDetector(spec, layout)
    dets = det.detect(frame_bgr)                                          # Detections, frame pixels

Each family's own pre-processing (:data:`onnx_layouts.PRESETS`): Ultralytics' centred letterbox
(pad 114, RGB, /255), YOLOX's top-left letterbox (pad 114, BGR, 0..255), RT-DETR's stretch;
its decoding (`onnx_layouts.decode_*`), then the shared class-aware NMS (`postprocess.nms`, in
input pixels as the families do) with the candidate and ``max_det`` caps, and the boxes mapped
back to frame pixels. One class per box (the best), as these families' own post-processing.
"""

from __future__ import annotations

import logging
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from .backends.onnx_backend import session_options
from .detector import Detector
from .errors import BackendUnavailable
from .onnx_layouts import (PRESETS, OnnxLayout, decode_anchor_based, decode_anchor_free, decode_nms,
                           decode_rtdetr, decode_rtdetr_topk, decode_yolox, yolox_grid)
from .postprocess import _top_k, nms
from .preprocess import Letterbox, check_frame
from .types import Detections

log = logging.getLogger(__name__)


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


class OnnxFileDetector(Detector):
    """`Detector` of an ONNX file read by `onnx_layouts.read_layout`, on ONNX Runtime fp32.

    infer: blob (B, 3, h, w) float32 -> [output (B, ...)]; a graph of fixed batch 1 runs the
    frames one by one. postprocess: -> one Detections per frame, highest score first.
    """

    name = "onnx"

    def __init__(self, spec, layout: OnnxLayout):  # noqa: D107  (no darknet network)
        try:
            import onnxruntime as ort  # noqa: PLC0415
        except ImportError as e:
            raise BackendUnavailable(f"onnxruntime is not installed ({e})")
        if spec.backend not in ("auto", "onnx") or spec.precision not in ("auto", "fp32"):
            raise BackendUnavailable(f"an ONNX model file runs on ONNX Runtime fp32 (got backend {spec.backend}, "
                                     f"precision {spec.precision})")
        self.layout = layout
        names = list(layout.names) if layout.names else [str(i) for i in range(layout.num_classes)]
        self.spec, self.network, self.names = spec, None, names
        self.input_size = layout.input_size
        self.max_det = int(spec.max_det if spec.max_det is not None else spec.extra.get("max_det", 300))
        self.max_candidates = int(spec.extra.get("max_candidates", 10_000))
        self.choice = None
        self.session = ort.InferenceSession(str(layout.path), session_options(spec.threads),
                                            providers=["CPUExecutionProvider"])
        self.grid = yolox_grid(layout.input_size) if layout.kind == "yolox" else None
        mask = None
        if spec.classes is not None:
            mask = np.zeros(layout.num_classes, bool)
            mask[[c for c in spec.classes if 0 <= c < layout.num_classes]] = True
        self.class_mask = mask

    @property
    def precision(self) -> str:
        return "fp32"

    def preprocess(self, frames: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[Letterbox]]:
        """N BGR uint8 frames -> (blob (N, 3, h, w) float32, N mappings back)."""
        w, h = self.input_size
        scale = PRESETS[self.layout.preset][3]
        blob = np.empty((len(frames), 3, h, w), np.float32)
        boxes = []
        for i, f in enumerate(frames):
            check_frame(f)
            img, lb = prepare(f, self.input_size, self.layout.preset)
            np.multiply(img.transpose(2, 0, 1), np.float32(scale), out=blob[i], casting="unsafe")
            boxes.append(lb)
        return blob, boxes

    def infer(self, blob: np.ndarray) -> List[np.ndarray]:
        """(B, 3, h, w) float32 -> [(B, d1, d2) float32]."""
        run = self.session.run
        names, feed = [self.layout.output_name], self.layout.input_name
        if self.layout.batch == 1 and len(blob) > 1:
            return [np.concatenate([run(names, {feed: blob[i:i + 1]})[0] for i in range(len(blob))])]
        return run(names, {feed: blob})

    def candidates(self, out: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image's output (d1, d2) -> (xyxy (n, 4) input pixels, score (n,), class_id (n,))."""
        kind, conf, mask = self.layout.kind, self.spec.conf_threshold, self.class_mask
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

    def postprocess(self, heads: List[np.ndarray], boxes: List[Letterbox]) -> List[Detections]:
        """[(B, d1, d2)] -> one Detections per frame in frame pixels (NMS in input pixels, except for
        RT-DETR and graphs with NMS inside), at most max_det, highest score first."""
        out = []
        for b, lb in enumerate(boxes):
            xyxy, score, cls = self.candidates(heads[0][b])
            if len(score) > self.max_candidates > 0:
                best = np.sort(_top_k(score, self.max_candidates))
                xyxy, score, cls = xyxy[best], score[best], cls[best]
            if self.layout.kind in ("rtdetr", "rtdetr_topk", "nms"):
                keep = np.lexsort((np.arange(len(score)), -score))[:self.max_det or None]
            else:
                keep = nms(xyxy, score, cls, self.spec.nms_threshold, self.max_det)
            out.append(Detections(lb.to_frame(xyxy[keep]), score[keep], cls[keep]) if len(keep)
                       else Detections.empty())
        return out

    def close(self) -> None:
        self.session = None
