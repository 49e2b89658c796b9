"""`python -m models convert`: write the network in one deployable format.

    onnx        a file: fp32 export, fp16 (fp16 inside, fp32 I/O) or int8 (the ONNX
                Runtime Q/DQ model of --calib DIR)
    savedmodel  a directory: the Keras model as a TensorFlow SavedModel (fp32)
    tftrt       a directory: the TF-TRT converted SavedModel (fp32/fp16/int8); needs
                TensorFlow <= 2.17 built with TensorRT and a GPU
    tensorrt    a file: a serialized TensorRT engine for this GPU and TensorRT version
                (fp32/fp16/int8); needs TensorRT 10/11 and a GPU

Missing libraries or devices raise BackendUnavailable (a ModelError: one line on
stderr in the CLI).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import ModelError

FORMATS = ("onnx", "savedmodel", "tftrt", "tensorrt")


def _copy_file(src: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, out)
    return out


def _check_new_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelError(f"{out} already exists; remove it or choose another output directory")


def convert(spec, network, fmt: str, out: Path) -> Path:
    """Write `network` (built from `spec`) as `fmt` to `out`; returns the written path.
    Precision `auto` (a run-time choice) exports fp32 (fp16 for a TensorRT engine)."""
    out = Path(out)
    if spec.precision == "auto":
        spec = spec.with_(precision="fp16" if fmt in ("tensorrt", "tftrt") else "fp32")
    if fmt == "onnx":
        if spec.precision == "fp32":
            from .onnx_export import export_onnx  # noqa: PLC0415
            src = export_onnx(network, spec.cache_dir)
        elif spec.precision == "fp16":
            from .onnx_fp16 import export_onnx_fp16  # noqa: PLC0415
            src = export_onnx_fp16(network, spec.cache_dir)
        else:
            from .quantize import int8_model_path  # noqa: PLC0415
            src = int8_model_path(spec, network)
        return _copy_file(src, out)
    if fmt == "savedmodel":
        if spec.precision != "fp32":
            raise ModelError(f"a SavedModel is fp32 only; for {spec.precision} use --format tftrt, tensorrt or onnx")
        _check_new_dir(out)
        from .backends.tf_backend import import_tf  # noqa: PLC0415
        import_tf()
        from .keras_builder import build_keras_model  # noqa: PLC0415
        if out.is_dir():
            out.rmdir()  # empty: checked above
        build_keras_model(network).export(str(out), verbose=False)
        return out
    if fmt == "tftrt":
        from .backends.tftrt_backend import MAX_BATCH, convert_tftrt  # noqa: PLC0415
        return convert_tftrt(spec, network, out, int(spec.extra.get("max_batch", MAX_BATCH)))
    if fmt == "tensorrt":
        from .backends.tensorrt_backend import build_engine_file  # noqa: PLC0415
        return build_engine_file(spec, network, out)
    raise ModelError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
