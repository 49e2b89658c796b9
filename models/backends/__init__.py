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


def backend_class(name: str):
    if name not in _BACKENDS:
        raise BackendUnavailable(f"the {name} backend is not available in this build; available: "
                                 f"{', '.join(_BACKENDS)}")
    module, cls = _BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def build_one(spec, network, names: Optional[List[str]] = None):
    """The detector of an explicit (backend, precision) pair: `spec` a resolved ModelSpec,
    `network` a loaded darknet Network, `names` its class names (read from spec.names if None)."""
    names = names if names is not None else read_names(spec.names, network.num_classes)
    return backend_class(spec.backend)(spec, network, names)
