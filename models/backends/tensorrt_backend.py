"""TensorRT backend: a native engine built from our ONNX model (TensorRT 10 and 11).

Precision, one code path for both majors (strong typing):
- fp32: the fp32 ONNX export; TF32 is switched off so fp32 means fp32.
- fp16: the fp16 ONNX model from `models.onnx_fp16` (fp16 weights and activations,
  fp32 I/O). TensorRT 11 removed BuilderFlag.FP16 (weak typing); TensorRT 10 still
  has it, but deprecated weak typing in 10.12, so we use the strongly typed network
  there too: the same engine semantics on both majors, and the precision is the
  one of a model whose numerics we test on ONNX Runtime CPU.
- int8: explicit quantization only, never implicit calibration (removed in 11):
  a Q/DQ model made from the calibration cache of `python -m models calibrate`.
  TensorRT needs symmetric INT8 Q/DQ (zero point 0); the CPU model of
  `quantize.int8_model_path` uses asymmetric uint8 activations, so
  `tensorrt_qdq_model_path` re-quantizes the same fp32 model from the same cache
  (same ranges, same float layers) with signed, symmetric INT8 activations.

Network creation: TensorRT 10 needs NetworkDefinitionCreationFlag.STRONGLY_TYPED;
in 11 every network is strongly typed and that flag is deprecated and ignored,
so 11 gets flags 0. Dynamic batch: one optimization profile, min 1, opt 1,
max `MAX_BATCH`. Engines are cached on disk by `engine_cache_key`.

Inference: pinned host buffers (cudaMallocHost) and device buffers sized for the
profile's max batch, one CUDA stream, `set_tensor_address` once, then per call
async H2D copy, `execute_async_v3`, async D2H copies and one stream sync.
CUDA calls go through cuda-python (`cuda.bindings.runtime`), not pycuda.

This module imports tensorrt and cuda-python only inside the detector, so it can
be imported (and its pure functions tested) on a machine without them.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..detector import Detector
from ..errors import BackendUnavailable, ModelError
from ..onnx_export import EXPORTER_VERSION, default_cache_dir, export_onnx, model_key

ENGINE_PRECISIONS = ("fp32", "fp16", "int8")  # what a TensorRT engine is built in

log = logging.getLogger(__name__)

SUPPORTED_MAJORS = (10, 11)
MAX_BATCH = 8
WORKSPACE_BYTES = 1 << 30
ENGINE_FORMAT = "1"   # bump when build settings change: invalidates cached engines
TRT_QDQ_VERSION = "1"  # bump when the TensorRT Q/DQ flavour changes
INSTALL_HINT = "pip install 'trackpipe[tensorrt]'"


# --- pure helpers (tested without TensorRT or a GPU) ---------------------------------------

def engine_cache_key(model_key: str, size: Sequence[int], precision: str, gpu_name: str, trt_version: str,
                     source_id: str = "", max_batch: int = MAX_BATCH) -> str:
    """Identity of a built engine: cfg+weights hash (`model_key`), input size (w, h),
    precision, GPU (name and compute capability), TensorRT version, the ONNX model it
    is built from (`source_id`: exporter/converter version, calibration digest) and
    the profile's max batch. Deterministic across processes (no `hash()`)."""
    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(ENGINE_PRECISIONS)}; got {precision!r}")
    fields = {"format": ENGINE_FORMAT, "model": str(model_key), "size": [int(v) for v in size],
              "precision": precision, "gpu": str(gpu_name), "trt": str(trt_version), "source": str(source_id),
              "max_batch": int(max_batch)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def engine_cache_path(key: str, stem: str, size: Sequence[int], precision: str,
                      cache_dir: Optional[Path] = None) -> Path:
    """<cache>/engines/<cfg stem>-<w>x<h>-<precision>-<key>.engine"""
    w, h = size
    return Path(cache_dir or default_cache_dir()) / "engines" / f"{stem}-{w}x{h}-{precision}-{key}.engine"


def trt_major(version: str) -> int:
    """Major version of a TensorRT version string; BackendUnavailable unless 10 or 11."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise BackendUnavailable(f"cannot read the TensorRT version {version!r}")
    if major not in SUPPORTED_MAJORS:
        raise BackendUnavailable(f"TensorRT {version} is not supported; trackpipe supports TensorRT 10 and 11 "
                                 f"({INSTALL_HINT})")
    return major


def creation_flags(major: int, strongly_typed_bit: int) -> int:
    """create_network() flags: strongly typed on 10 (opt-in), 0 on 11 (always strongly typed,
    STRONGLY_TYPED deprecated and ignored)."""
    return 0 if major >= 11 else 1 << int(strongly_typed_bit)


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def describe_no_gpu(error_name: str, driver_version: int, runtime_version: int,
                    visible_devices: Optional[str] = None) -> str:
    """The one-line reason no CUDA GPU can be used (versions as CUDA ints, e.g. 12040)."""
    if driver_version == 0:
        why = "no NVIDIA driver is loaded"
    elif runtime_version and driver_version < runtime_version:
        why = (f"the driver supports CUDA {_cuda_version(driver_version)} but this cuda-python needs CUDA "
               f"{_cuda_version(runtime_version)}: pip install 'cuda-python=={driver_version // 1000}.*' "
               f"or update the driver")
    elif visible_devices is not None and visible_devices.strip() in ("", "-1", "none", "NoDevFiles"):
        why = f"CUDA_VISIBLE_DEVICES={visible_devices!r} hides every GPU"
    else:
        why = "no NVIDIA GPU found"
    return f"no CUDA GPU visible ({error_name}: {why})"


def expected_head_names(network) -> List[str]:
    return [f"head_{k}" for k in range(len(network.yolo_layers))]


# --- library imports and device probe ------------------------------------------------------

def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: PLC0415
    except (ImportError, OSError) as e:
        raise BackendUnavailable(f"TensorRT is not installed ({e}); {INSTALL_HINT}")
    trt_major(trt.__version__)
    return trt


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # noqa: PLC0415  cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # noqa: PLC0415  cuda-python < 12.6
        except ImportError as e:
            raise BackendUnavailable(f"cuda-python is not installed ({e}); {INSTALL_HINT}")
    return cudart


def _err_name(err) -> str:
    return getattr(err, "name", str(err))


def _cuda_check(cudart, result, what: str):
    """cuda-python calls return (err, *values): raise on error, return the value(s)."""
    err, rest = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"{what} failed: {_err_name(err)}")
    return rest[0] if len(rest) == 1 else (rest or None)


def cuda_gpu_name(cudart, device: int = 0) -> str:
    """'<name> sm_<major><minor>' of CUDA device `device`; BackendUnavailable if none is usable."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or not count:
        drv = cudart.cudaDriverGetVersion()
        rt = cudart.cudaRuntimeGetVersion()
        raise BackendUnavailable(describe_no_gpu(
            _err_name(err) if err != cudart.cudaError_t.cudaSuccess else "0 devices",
            int(drv[1] or 0) if drv[0] == cudart.cudaError_t.cudaSuccess else 0,
            int(rt[1] or 0) if rt[0] == cudart.cudaError_t.cudaSuccess else 0,
            os.environ.get("CUDA_VISIBLE_DEVICES")))
    if device >= count:
        raise BackendUnavailable(f"CUDA device {device} requested but only {count} visible")
    _cuda_check(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
    prop = _cuda_check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.split(b"\0")[0].decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return f"{name.strip()} sm_{prop.major}{prop.minor}"


# --- the ONNX model each precision builds from ---------------------------------------------

_CALIB_METHODS = {"entropy": "Entropy", "percentile": "Percentile", "minmax": "MinMax"}


def tensorrt_qdq_model_path(spec, network) -> Tuple[Path, str]:
    """Symmetric INT8 Q/DQ model for TensorRT from spec.calib's calibration cache.

    Same fp32 model (cross-layer-equalized when the calibration was), per-tensor
    ranges, float layers and per-channel setting as the CPU model of
    `quantize.int8_model_path`; activations and weights signed INT8 with zero
    point 0 (TensorRT supports nothing else), biases left in float.
    Cached under <cache>/onnx/. Returns (path, digest of the calibration).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: PLC0415

    from ..quantize import float_model, int8_model_path, load_meta  # noqa: PLC0415

    int8_model_path(spec, network)  # validates spec.calib against this network, with its messages
    meta = load_meta(spec.calib)
    cache = Path(spec.calib) / "calib_cache.json"
    if not cache.is_file():
        raise ModelError(f"{spec.calib}: TensorRT INT8 needs calib_cache.json (the per-tensor ranges); "
                         f"recalibrate with `python -m models calibrate`")
    h = hashlib.sha256(cache.read_bytes())
    h.update(json.dumps([sorted(meta.float_layers), meta.per_channel, meta.method, meta.equalized,
                         TRT_QDQ_VERSION]).encode())
    digest = h.hexdigest()[:16]
    fp32 = float_model(network, meta.equalized, spec.cache_dir)  # the model the ranges were measured on
    out = fp32.with_name(f"{fp32.stem}-qdq-trt{TRT_QDQ_VERSION}-{digest}.onnx")
    if out.is_file():
        return out, digest
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    quantize_static(str(fp32), str(tmp), None, quant_format=QuantFormat.QDQ, per_channel=meta.per_channel,
                    reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(meta.float_layers),
                    calibrate_method=getattr(CalibrationMethod, _CALIB_METHODS.get(meta.method, "MinMax")),
                    calibration_cache_path=str(cache),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    os.replace(tmp, out)
    log.info("wrote TensorRT Q/DQ model %s", out)
    return out, digest


def source_model(spec, network) -> Tuple[Path, str]:
    """(ONNX model to build from, its identity for the engine cache key) for spec.precision."""
    if spec.precision == "fp32":
        return export_onnx(network, spec.cache_dir), f"fp32-e{EXPORTER_VERSION}"
    if spec.precision == "fp16":
        from ..onnx_fp16 import FP16_CONVERTER_VERSION, export_onnx_fp16  # noqa: PLC0415
        return export_onnx_fp16(network, spec.cache_dir), f"fp16-e{EXPORTER_VERSION}-c{FP16_CONVERTER_VERSION}"
    path, digest = tensorrt_qdq_model_path(spec, network)
    return path, f"int8-e{EXPORTER_VERSION}-q{TRT_QDQ_VERSION}-{digest}"


# --- engine build and cache -----------------------------------------------------------------

def build_serialized_engine(trt, onnx_path: Path, precision: str, size: Tuple[int, int], channels: int,
                            max_batch: int, logger, input_name: str = "image") -> bytes:
    """Parse `onnx_path` into a strongly typed network and build a serialized engine."""
    major = trt_major(trt.__version__)
    builder = trt.Builder(logger)
    # STRONGLY_TYPED is read on 10 only: deprecated (ignored) in 11 and may go in a later major
    bit = int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if major < 11 else 0
    network = builder.create_network(creation_flags(major, bit))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 rounds fp32 matmul inputs to 10-bit mantissas
    w, h = size
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, channels, h, w), (1, channels, h, w), (max_batch, channels, h, w))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"TensorRT failed to build an engine from {onnx_path.name} (see the TensorRT log above)")
    return bytes(plan)


def ensure_engine(trt, runtime, logger, spec, network, gpu_name: str, max_batch: int = MAX_BATCH):
    """Deserialize the cached engine or build (and cache) it.

    Returns (engine, path, built: bool, seconds spent building or loading)."""
    onnx_path, source_id = source_model(spec, network)
    key = engine_cache_key(model_key(network), network.input_size, spec.precision, gpu_name, trt.__version__,
                           source_id, max_batch)
    stem = network.cfg_path.stem if network.cfg_path else "model"
    path = engine_cache_path(key, stem, network.input_size, spec.precision, spec.cache_dir)
    t0 = time.perf_counter()
    if path.is_file():
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is not None:
            log.info("loaded TensorRT engine %s", path)
            return engine, path, False, time.perf_counter() - t0
        log.warning("cached TensorRT engine %s could not be loaded; rebuilding it", path)
    log.warning("building the TensorRT %s engine for %s (first run only; cached at %s)", spec.precision,
                onnx_path.name, path)
    plan = build_serialized_engine(trt, onnx_path, spec.precision, network.input_size, network.channels,
                                   max_batch, logger)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(plan)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees a partial engine
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ModelError(f"TensorRT built {path.name} but cannot deserialize it")
    return engine, path, True, time.perf_counter() - t0


def build_engine_file(spec, network, out: Path) -> Path:
    """`python -m models convert --format tensorrt`: build (or reuse) the engine, copy it to `out`."""
    trt = import_tensorrt()
    cudart = import_cudart()
    gpu = cuda_gpu_name(cudart)
    logger = trt.Logger(trt.Logger.WARNING)
    _, path, _, _ = ensure_engine(trt, trt.Runtime(logger), logger, spec, network, gpu,
                                  int(spec.extra.get("max_batch", MAX_BATCH)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(path.read_bytes())
    return out


# --- pinned host + device buffers -----------------------------------------------------------

class _IOBuffer:
    """One I/O tensor: a pinned host array (1-D float32 view) and a device buffer, sized for max batch."""

    def __init__(self, cudart, name: str, max_shape: Tuple[int, ...]):
        self.name, self.max_shape = name, tuple(int(d) for d in max_shape)
        n = int(np.prod(self.max_shape))
        self.nbytes = n * 4
        self._cudart = cudart
        self.host_ptr = self.device_ptr = 0
        self.host_ptr = int(_cuda_check(cudart, cudart.cudaMallocHost(self.nbytes), "cudaMallocHost"))
        self.host = np.ctypeslib.as_array(ctypes.cast(self.host_ptr, ctypes.POINTER(ctypes.c_float)), (n,))
        try:
            self.device_ptr = int(_cuda_check(cudart, cudart.cudaMalloc(self.nbytes), "cudaMalloc"))
        except RuntimeError:
            self.free()
            raise

    def free(self) -> None:
        if self.device_ptr:
            self._cudart.cudaFree(self.device_ptr)
            self.device_ptr = 0
        if self.host_ptr:
            self.host = None
            self._cudart.cudaFreeHost(self.host_ptr)
            self.host_ptr = 0


class TensorRTDetector(Detector):
    """Runs a cached TensorRT engine; build options in spec.extra: max_batch (default 8), device (0)."""

    name = "tensorrt"

    def __init__(self, spec, network, names):
        super().__init__(spec, network, names)
        self._buffers: List[_IOBuffer] = []
        self._stream = None
        trt = import_tensorrt()
        cudart = import_cudart()
        self._cudart = cudart
        self.gpu_name = cuda_gpu_name(cudart, int(spec.extra.get("device", 0)))
        self.trt_version = trt.__version__
        self.max_batch = int(spec.extra.get("max_batch", MAX_BATCH))
        if self.max_batch < 1:
            raise ModelError(f"max_batch must be >= 1; got {self.max_batch}")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine, self.engine_path, self.built, self.setup_seconds = ensure_engine(
            trt, self._runtime, self._logger, spec, network, self.gpu_name, self.max_batch)
        try:
            self._setup_io(trt)
        except Exception:
            self.close()
            raise

    def _setup_io(self, trt) -> None:
        eng = self.engine
        names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
        inputs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        expected = expected_head_names(self.network)
        if len(inputs) != 1 or sorted(outputs) != sorted(expected):
            raise ModelError(f"{self.engine_path.name}: unexpected I/O tensors {inputs} -> {outputs}")
        for n in names:
            if eng.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise ModelError(f"{self.engine_path.name}: tensor {n} is {eng.get_tensor_dtype(n)}, expected FLOAT")
        self.input_name, self.output_names = inputs[0], expected
        self.context = eng.create_execution_context()
        if self.context is None:
            raise ModelError("TensorRT could not create an execution context (out of GPU memory?)")
        w, h = self.input_size
        max_in = (self.max_batch, self.network.channels, h, w)
        if not self.context.set_input_shape(self.input_name, max_in):
            raise ModelError(f"input shape {max_in} is outside the engine's profile")
        cudart = self._cudart
        self._stream = _cuda_check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._in = _IOBuffer(cudart, self.input_name, max_in)
        self._buffers.append(self._in)
        self._out = []
        for n in self.output_names:
            buf = _IOBuffer(cudart, n, tuple(self.context.get_tensor_shape(n)))
            self._buffers.append(buf)
            self._out.append(buf)
        for buf in self._buffers:
            if not self.context.set_tensor_address(buf.name, buf.device_ptr):
                raise ModelError(f"set_tensor_address({buf.name}) failed")
        self._batch = max_in[0]

    def infer(self, blob: np.ndarray) -> List[np.ndarray]:
        blob = np.ascontiguousarray(blob, dtype=np.float32)
        w, h = self.input_size
        if blob.ndim != 4 or blob.shape[0] < 1 or blob.shape[1:] != (self.network.channels, h, w):
            raise ValueError(f"blob must be (B, {self.network.channels}, {h}, {w}); got {blob.shape}")
        chunks = [self._infer_chunk(blob[i:i + self.max_batch]) for i in range(0, blob.shape[0], self.max_batch)]
        if len(chunks) == 1:
            return chunks[0]
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def _infer_chunk(self, x: np.ndarray) -> List[np.ndarray]:
        cudart, stream = self._cudart, self._stream
        b = x.shape[0]
        if b != self._batch:
            if not self.context.set_input_shape(self.input_name, x.shape):
                raise RuntimeError(f"set_input_shape{x.shape} failed")
            self._batch = b
        shapes = [tuple(self.context.get_tensor_shape(n)) for n in self.output_names]
        self._in.host[:x.size] = x.ravel()
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda_check(cudart, cudart.cudaMemcpyAsync(self._in.device_ptr, self._in.host_ptr, x.nbytes, h2d, stream),
                    "cudaMemcpyAsync H2D")
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for buf, shape in zip(self._out, shapes):
            _cuda_check(cudart, cudart.cudaMemcpyAsync(buf.host_ptr, buf.device_ptr, int(np.prod(shape)) * 4, d2h,
                                                       stream), "cudaMemcpyAsync D2H")
        _cuda_check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return [buf.host[:int(np.prod(s))].reshape(s).copy() for buf, s in zip(self._out, shapes)]

    def close(self) -> None:
        for buf in self._buffers:
            buf.free()
        self._buffers = []
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self.context = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001  interpreter shutdown: cuda-python may be gone
            pass
