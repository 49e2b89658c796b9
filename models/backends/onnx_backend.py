"""ONNX Runtime backend: the CPU default. Runs the cached ONNX export of the network."""

from __future__ import annotations

import logging
import os
from typing import List

import numpy as np

from ..detector import Detector
from ..errors import BackendUnavailable
from ..onnx_export import export_onnx

log = logging.getLogger(__name__)


def session_options(threads: int):
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


class OnnxDetector(Detector):
    name = "onnx"

    def __init__(self, spec, network, names):
        super().__init__(spec, network, names)
        try:
            import onnxruntime as ort  # noqa: PLC0415
        except ImportError as e:
            raise BackendUnavailable(f"onnxruntime is not installed ({e})")
        if spec.precision == "fp16":
            raise BackendUnavailable("fp16 on ONNX Runtime CPU is slower than fp32; use tensorrt for fp16")
        self.model_path = self._model_path(spec, network)
        self.session = ort.InferenceSession(str(self.model_path), session_options(spec.threads),
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _model_path(self, spec, network):
        if spec.precision == "int8":
            from ..quantize import int8_model_path  # noqa: PLC0415
            return int8_model_path(spec, network)
        return export_onnx(network, spec.cache_dir)

    def infer(self, blob: np.ndarray) -> List[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: blob})
