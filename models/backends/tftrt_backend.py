"""TF-TRT backend: the Keras model exported as a SavedModel, converted with
`TrtGraphConverterV2` (FP32 / FP16 / INT8 calibrated on real frames) and run.

Only TensorFlow builds linked against TensorRT can do this: TensorFlow <= 2.17
CUDA builds. TensorFlow 2.18 dropped TensorRT from its builds, yet still ships
the `trt_convert` Python module, so importing it proves nothing: availability is
decided by `tf.test.is_built_with_gpu_support()`, the TF-TRT wrapper's
`is_tensorrt_enabled()` and its linked / loaded TensorRT versions, then a
visible GPU (`unavailable_reason`). Anything missing is one BackendUnavailable.

Conversion (`convert_tftrt`): dynamic shape with the "Range" profile strategy,
engines pre-built by `build()` for batch 1 and `MAX_BATCH`; INT8 calibrates with
`calibration_input_fn` on the frames named by the calibration directory
(`spec.calib`, made by `python -m models calibrate`): the same real frames as
the ONNX Q/DQ model, never random data. Converted SavedModels are cached under
<cache>/tftrt/ by cfg/weights hash, size, precision, GPU, TF and TensorRT versions
and the calibration.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..detector import Detector
from ..errors import BackendUnavailable, ModelError
from ..onnx_export import default_cache_dir, model_key
from .tensorrt_backend import MAX_BATCH, engine_cache_key
from .tf_backend import import_tf

log = logging.getLogger(__name__)

LAST_TF_WITH_TRT = (2, 17)
CALIB_BATCH = 1


def _ver(t: Sequence[int]) -> str:
    return ".".join(str(int(v)) for v in t)


def tf_major_minor(version: str) -> str:
    return ".".join(str(version).split(".")[:2])


def unavailable_reason(tf_version: str, trt_enabled: bool, linked: Tuple[int, ...] = (0, 0, 0),
                       loaded: Tuple[int, ...] = (0, 0, 0), gpu_count: int = 0) -> Optional[str]:
    """Why TF-TRT cannot run here (one line), or None when it can.

    trt_enabled: trt_convert imports, TF is a GPU build and its TF-TRT wrapper reports
    TensorRT enabled; linked / loaded: TensorRT versions TF was built with / found at run time.
    """
    if not trt_enabled or not linked or linked[0] == 0:
        return (f"TF-TRT needs TensorFlow <= {_ver(LAST_TF_WITH_TRT)} built with TensorRT; "
                f"installed TensorFlow {tf_major_minor(tf_version)} has none")
    if not loaded or loaded[0] == 0:
        return (f"TensorFlow {tf_version} was built with TensorRT {_ver(linked)} but cannot load it "
                f"(libnvinfer.so.{linked[0]} not found); install TensorRT {linked[0]}.x")
    if loaded[0] != linked[0]:
        return (f"TensorFlow {tf_version} was built with TensorRT {_ver(linked)} but TensorRT {_ver(loaded)} "
                f"is loaded; install TensorRT {linked[0]}.x")
    if gpu_count < 1:
        return f"no CUDA GPU visible to TensorFlow {tf_version}"
    return None


def tftrt_status(tf) -> Dict:
    """The facts `unavailable_reason` decides on, read from the installed TensorFlow."""
    status = {"tf_version": tf.__version__, "trt_enabled": False, "linked": (0, 0, 0), "loaded": (0, 0, 0),
              "gpu_count": 0}
    try:
        from tensorflow.python.compiler.tensorrt import trt_convert  # noqa: F401, PLC0415
        from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils as trt_utils  # noqa: PLC0415
    except ImportError:
        return status
    status["trt_enabled"] = bool(tf.test.is_built_with_gpu_support()) and bool(trt_utils.is_tensorrt_enabled())
    if not status["trt_enabled"]:
        return status
    status["linked"] = tuple(int(v) for v in trt_utils.get_linked_tensorrt_version())
    status["loaded"] = tuple(int(v) for v in trt_utils.get_loaded_tensorrt_version())
    status["gpu_count"] = len(tf.config.list_physical_devices("GPU"))
    return status


def signature_heads(outputs: Dict) -> List[np.ndarray]:
    """serving_default outputs {'output_0': (B,h,w,C), 'output_1': ...} -> [(B,C,h,w), ...] in
    model output order (numeric, so output_10 follows output_9)."""
    def index(key: str) -> int:
        try:
            return int(key.rsplit("_", 1)[1])
        except (IndexError, ValueError):
            raise ModelError(f"unexpected SavedModel output name {key!r}")
    keys = sorted(outputs, key=index)
    return [np.ascontiguousarray(np.asarray(outputs[k]).transpose(0, 3, 1, 2)) for k in keys]


def load_serving_fn(tf, saved_model_dir: Path):
    """(loaded object, serving_default function, its input name)."""
    loaded = tf.saved_model.load(str(saved_model_dir))
    if "serving_default" not in loaded.signatures:
        raise ModelError(f"{saved_model_dir}: no serving_default signature")
    fn = loaded.signatures["serving_default"]
    kwargs = fn.structured_input_signature[1]
    if len(kwargs) != 1:
        raise ModelError(f"{saved_model_dir}: expected one input, got {list(kwargs)}")
    return loaded, fn, next(iter(kwargs))


def gpu_name_tf(tf) -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "none"
    d = tf.config.experimental.get_device_details(gpus[0])
    cc = d.get("compute_capability")
    return f"{d.get('device_name', gpus[0].name)} sm_{cc[0]}{cc[1]}" if cc else str(d.get("device_name", gpus[0].name))


def calibration_blobs(spec, network) -> Tuple[List[np.ndarray], str]:
    """NHWC float32 batches of the real frames named by spec.calib, and their identity."""
    from ..preprocess import preprocess  # noqa: PLC0415
    from ..quantize import checked_meta, read_calibration_frames  # noqa: PLC0415

    meta = checked_meta(spec, network)
    frames = read_calibration_frames(meta.source, meta.frames)
    if not frames:
        raise ModelError(f"no calibration frames could be read from {meta.source}")
    blobs = [preprocess([f], network.input_size, spec.letterbox)[0].transpose(0, 2, 3, 1).copy() for f in frames]
    return blobs, f"{meta.source}|{meta.frames}|{len(blobs)}|{spec.letterbox}"


def convert_tftrt(spec, network, out_dir: Path, max_batch: int = MAX_BATCH) -> Path:
    """Keras model -> SavedModel -> TF-TRT SavedModel in out_dir (absent or an empty directory)."""
    tf = import_tf()
    status = tftrt_status(tf)
    reason = unavailable_reason(**status)
    if reason:
        raise BackendUnavailable(reason)
    from tensorflow.python.compiler.tensorrt import trt_convert as trt  # noqa: PLC0415

    from ..keras_builder import build_keras_model  # noqa: PLC0415

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ModelError(f"{out_dir} already exists; remove it or choose another output directory")
    mode = {"fp32": trt.TrtPrecisionMode.FP32, "fp16": trt.TrtPrecisionMode.FP16,
            "int8": trt.TrtPrecisionMode.INT8}[spec.precision]
    w, h = network.input_size
    calib = calibration_blobs(spec, network)[0] if spec.precision == "int8" else None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trackpipe-tftrt-", dir=out_dir.parent) as tmp:
        src = Path(tmp) / "savedmodel"
        build_keras_model(network).export(str(src), verbose=False)
        converter = trt.TrtGraphConverterV2(
            input_saved_model_dir=str(src), precision_mode=mode, use_dynamic_shape=True,
            dynamic_shape_profile_strategy="Range", maximum_cached_engines=1, minimum_segment_size=3,
            max_workspace_size_bytes=1 << 30, use_calibration=spec.precision == "int8")
        if calib is not None:
            def calibration_input_fn():
                for b in calib:
                    yield (tf.constant(b),)
            converter.convert(calibration_input_fn=calibration_input_fn)
        else:
            converter.convert()

        def input_fn():  # the Range profile spans the batch sizes seen here: 1 .. max_batch
            for b in (1, max_batch):
                yield (tf.zeros((b, h, w, network.channels), tf.float32),)
        converter.build(input_fn=input_fn)
        staged = Path(tmp) / "converted"
        converter.save(str(staged))
        if out_dir.is_dir():
            out_dir.rmdir()  # empty, checked above
        os.replace(staged, out_dir)
    return out_dir


class TFTRTDetector(Detector):
    """Runs the cached TF-TRT conversion of the network (spec.extra: max_batch, default 8)."""

    name = "tftrt"

    def __init__(self, spec, network, names):
        super().__init__(spec, network, names)
        tf = import_tf()
        status = tftrt_status(tf)
        reason = unavailable_reason(**status)
        if reason:
            raise BackendUnavailable(reason)
        self._tf = tf
        self.max_batch = int(spec.extra.get("max_batch", MAX_BATCH))
        calib_id = calibration_blobs(spec, network)[1] if spec.precision == "int8" else ""
        key = engine_cache_key(model_key(network), network.input_size, spec.precision, gpu_name_tf(tf),
                               f"tf{status['tf_version']}-trt{_ver(status['linked'])}/{_ver(status['loaded'])}",
                               calib_id, self.max_batch)
        stem = network.cfg_path.stem if network.cfg_path else "model"
        w, h = network.input_size
        self.saved_model_dir = (Path(spec.cache_dir or default_cache_dir()) / "tftrt"
                                / f"{stem}-{w}x{h}-{spec.precision}-{key}")
        self.built = False
        if not self.saved_model_dir.is_dir():
            log.warning("converting %s with TF-TRT (%s; first run only; cached at %s)", stem, spec.precision,
                        self.saved_model_dir)
            try:
                convert_tftrt(spec, network, self.saved_model_dir, self.max_batch)
            except ModelError:
                if not self.saved_model_dir.is_dir():  # not a concurrent conversion that won the race
                    raise
            self.built = True
        self._loaded, self._fn, self._input = load_serving_fn(tf, self.saved_model_dir)

    def infer(self, blob: np.ndarray) -> List[np.ndarray]:
        x = np.ascontiguousarray(blob.transpose(0, 2, 3, 1), dtype=np.float32)
        chunks = []  # the engines' profile covers batch 1 .. max_batch: larger batches go in chunks
        for i in range(0, x.shape[0], self.max_batch):
            out = self._fn(**{self._input: self._tf.constant(x[i:i + self.max_batch])})
            chunks.append(signature_heads({k: v.numpy() for k, v in out.items()}))
        return chunks[0] if len(chunks) == 1 else [np.concatenate(parts) for parts in zip(*chunks)]

    def close(self) -> None:
        self._fn = self._loaded = None

