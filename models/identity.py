"""What a model is, for artefact caches and log lines: a darknet `Network` or an ONNX file's
`OnnxLayout` (``--model-file``). auto, INT8 calibration and OpenVINO's caches key on these."""

from __future__ import annotations

import hashlib
from typing import Union

from .darknet import Network
from .onnx_layouts import OnnxLayout

Model = Union[Network, OnnxLayout]


def is_file_model(model) -> bool:
    """True for an ONNX file of another family (its `OnnxLayout`), False for a darknet Network."""
    return isinstance(model, OnnxLayout)


def model_name(model) -> str:
    """Short name for file names and logs: the cfg's or the ONNX file's stem."""
    path = model.path if is_file_model(model) else model.cfg_path
    return path.stem if path else "model"


def model_source(model) -> str:
    """The file that defines the model: the cfg, or the ONNX file."""
    return str(model.path if is_file_model(model) else model.cfg_path)


def model_id(model) -> str:
    """Identity (16 hex digits) of the model's files, input size and, for an ONNX file, the
    pre-processing and head layout it is read with."""
    if not is_file_model(model):
        from .onnx_export import model_key  # noqa: PLC0415

        return model_key(model)
    from .onnx_export import file_sha256  # noqa: PLC0415

    h = hashlib.sha256()
    h.update(file_sha256(model.path).encode())
    h.update(("%dx%d %s %s" % (*model.input_size, model.preset, model.kind)).encode())
    return h.hexdigest()[:16]
