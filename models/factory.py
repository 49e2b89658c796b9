"""Build a `Detector` from a `ModelSpec`; backends are imported only when chosen."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import List, Optional

from .darknet import Network, load_network
from .errors import BackendUnavailable, ModelError
from .spec import ModelSpec

log = logging.getLogger(__name__)

# backend name -> (module, class); `auto` tries these in order.
_BACKENDS = {
    "tensorrt": ("trackpipe.models.backends.tensorrt_backend", "TensorRTDetector"),
    "tftrt": ("trackpipe.models.backends.tftrt_backend", "TFTRTDetector"),
    "onnx": ("trackpipe.models.backends.onnx_backend", "OnnxDetector"),
    "tf": ("trackpipe.models.backends.tf_backend", "TFDetector"),
    "opencv": ("trackpipe.models.backends.opencv_backend", "OpenCVDetector"),
}
# tensorrt gives up in milliseconds without the library or a GPU; tftrt stays out of auto
# (probing it imports TensorFlow, seconds) and native TensorRT is the faster of the two anyway.
_AUTO_ORDER = ("tensorrt", "onnx", "opencv")


def read_names(path: Optional[Path], num_classes: int) -> List[str]:
    """Class names, one per line; numbered names when no file is given."""
    if path is None:
        return [str(i) for i in range(num_classes)]
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"names file not found: {path}")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if len(names) < num_classes:
        raise ModelError(f"{path}: {len(names)} names but the cfg has {num_classes} classes")
    return names


def backend_class(name: str):
    if name not in _BACKENDS:
        raise BackendUnavailable(f"the {name} backend is not available in this build; available: "
                                 f"{', '.join(_BACKENDS)}")
    module, cls = _BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def build_detector(spec: ModelSpec, network: Optional[Network] = None):
    """Load cfg + weights and return a ready `Detector` of the requested backend."""
    network = network or load_network(spec.cfg, spec.weights, spec.size)
    names = read_names(spec.names, network.num_classes)
    if spec.backend != "auto":
        return backend_class(spec.backend)(spec, network, names)
    errors = []
    for name in _AUTO_ORDER:
        try:
            det = backend_class(name)(spec.with_(backend=name), network, names)
            log.info("backend auto -> %s", name)
            return det
        except BackendUnavailable as e:
            errors.append(f"{name}: {e}")
    raise BackendUnavailable("no backend available: " + "; ".join(errors))
