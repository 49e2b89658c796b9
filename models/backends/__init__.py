"""Inference backends; each module imports its library only when its class is built.

`build_one` builds the detector of an explicit (backend, precision) pair; `models.factory`
(and its measured `auto` choice) sit on top of it.
"""

from __future__ import annotations

import importlib
from typing import List, Optional

from ..classes import read_names
from ..errors import BackendUnavailable

# backend name -> (module, class)
_BACKENDS = {
    "tensorrt": ("trackpipe.models.backends.tensorrt_backend", "TensorRTDetector"),
    "tftrt": ("trackpipe.models.backends.tftrt_backend", "TFTRTDetector"),
    "onnx": ("trackpipe.models.backends.onnx_backend", "OnnxDetector"),
    "openvino": ("trackpipe.models.backends.openvino_backend", "OpenVINODetector"),
    "tf": ("trackpipe.models.backends.tf_backend", "TFDetector"),
    "opencv": ("trackpipe.models.backends.opencv_backend", "OpenCVDetector"),
    "triton": ("trackpipe.models.backends.triton", "TritonDetector"),
}
# the backends that run an ONNX file of another family (--model-file; `onnx_model`)
_FILE_BACKENDS = {
    "onnx": ("trackpipe.models.onnx_model", "OnnxFileDetector"),
    "openvino": ("trackpipe.models.backends.openvino_backend", "OpenVINOFileDetector"),
}


def _class_of(table: dict, name: str, refusal: str):
    if name not in table:
        raise BackendUnavailable(refusal)
    module, cls = table[name]
    return getattr(importlib.import_module(module), cls)


def backend_class(name: str):
    return _class_of(_BACKENDS, name, f"the {name} backend is not available in this build; available: "
                                      f"{', '.join(_BACKENDS)}")


def file_backend_class(name: str):
    """The detector class of backend `name` for an ONNX model file."""
    return _class_of(_FILE_BACKENDS, name, f"an ONNX model file runs on the {' and '.join(_FILE_BACKENDS)} "
                                           f"backends, not {name}")


def build_one(spec, network, names: Optional[List[str]] = None):
    """The detector of an explicit (backend, precision) pair: `spec` a resolved ModelSpec,
    `network` a loaded darknet Network, `names` its class names (read from spec.names if None).
    An ONNX model file (spec.file): `network` is its `OnnxLayout` (names from there)."""
    if getattr(spec, "file", None) is not None:
        return file_backend_class(spec.backend)(spec, network)
    names = names if names is not None else read_names(spec.names, network.num_classes)
    return backend_class(spec.backend)(spec, network, names)
