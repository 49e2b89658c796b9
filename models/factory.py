"""Build a `Detector` from a `ModelSpec`; backends are imported only when chosen.

`backend: auto` and/or `precision: auto` are a measured choice (`auto.choose`): on the
first use of a (model, input size, CPU, library versions, request) the available
backend/precision pairs are timed side by side, reduced precisions are kept only when
their detections agree with fp32's on real frames, and the winner is cached.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence

import numpy as np

from .backends import _BACKENDS, backend_class, build_one  # noqa: F401  (re-exported)
from .classes import read_names
from .darknet import Network, load_network
from .errors import BackendUnavailable
from .identity import model_name
from .spec import ModelSpec

log = logging.getLogger(__name__)

def _resolved(spec: ModelSpec) -> ModelSpec:
    """Files downloaded or checked, names defaulted, class names as ids (idempotent, cheap)."""
    return spec.resolve() if hasattr(spec, "resolve") else spec


def build_detector(spec: ModelSpec, network: Optional[Network] = None,
                   probe_frames: Optional[Sequence[np.ndarray]] = None, calib_source: Optional[str] = None):
    """Load cfg + weights (or an ONNX file's layout: `load_model`) and return a ready `Detector`.

    backend/precision `auto`: `auto.choose` measures (or reads from its cache) the fastest
    pair whose accuracy holds; probe_frames: real BGR frames to judge reduced precision on
    (else spec.extra["auto_probe"], a video/folder/image path, else the calibration's
    frames); calib_source: where probe_frames came from (a video, folder or glob): int8 joins
    the candidates, calibrated on it once, when the spec has no calibration of its own. The
    returned detector's `describe()` names the pair, `choice` says why.
    """
    spec = _resolved(spec)
    if spec.precision == "auto" and spec.backend not in ("auto", "onnx", "openvino"):
        # precision auto is measured on the CPU backends; an explicit other backend runs its
        # usual precision (TensorRT fp16, the rest fp32)
        spec = spec.with_(precision="fp16" if spec.backend == "tensorrt" else "fp32")
    network = network or load_model(spec)
    names = read_names(spec.names, network.num_classes)
    if spec.backend != "auto" and spec.precision != "auto":
        return build_one(spec, network, names)
    if spec.backend == "auto":
        gpu = _try_tensorrt(spec, network, names)
        if gpu is not None:
            return gpu
    from .auto import choose, chosen_spec  # noqa: PLC0415

    choice = choose(spec, network, probe_frames, calib_source=calib_source)
    det = build_one(chosen_spec(spec, choice), network, names)
    det.choice = choice
    # a fresh measurement is news (WARNING); a cached or forced choice is named at INFO (-v), and by describe()
    log.log(logging.WARNING if choice.measured and not choice.cached else logging.INFO, "%s: auto -> %s",
            model_name(network), choice.summary())
    return det


def load_model(spec: ModelSpec):
    """What a resolved spec's detector runs: a darknet `Network` (cfg/weights), or for an ONNX
    file of another family (spec.file) its `OnnxLayout`, read from the graph (`onnx_layouts`)."""
    if getattr(spec, "file", None) is None:
        return load_network(spec.cfg, spec.weights, spec.size)
    from .onnx_layouts import read_layout  # noqa: PLC0415

    return read_layout(spec.file, read_names(spec.names) if spec.names else None, spec.preprocess, spec.size)


def _try_tensorrt(spec: ModelSpec, network: Network, names: List[str]):
    """An NVIDIA GPU beats every CPU path: TensorRT when it runs here (fp16 for precision auto)."""
    precision = "fp16" if spec.precision in ("auto", "bf16") else spec.precision
    try:
        det = build_one(spec.with_(backend="tensorrt", precision=precision), network, names)
    except BackendUnavailable as e:
        log.info("auto: tensorrt not used (%s)", e)
        return None
    log.warning("auto -> %s (NVIDIA GPU)", det.describe())
    return det
