"""OpenVINO backend (CPU): fp32, bf16 where the CPU has it, int8 from the real-frame calibration.

Model: the same ONNX export as the onnx backend, with one rewrite for OpenVINO
(`mish_as_op`): our exporter writes mish as `x * n / (n + 2)`, `n = e^x (e^x + 2)`
(fast on ONNX Runtime); OpenVINO has a Mish operation that it fuses into the
convolution, 1.2x faster for yolov4 in bf16, so the rewritten copy (opset 18,
cached beside the export) is what OpenVINO reads. Heads stay within 1e-6 of the
original in fp32. An ONNX file of another family (``--model-file``, `onnx_model`) is read as
it is (`OpenVINOFileDetector`: the same pre-processing and decoding as on ONNX Runtime).

Precision (INFERENCE_PRECISION_HINT; OpenVINO's default on a bf16 CPU is bf16, so fp32
is always set explicitly):
- fp32: f32.
- bf16: bf16; refused unless the CPU has AVX512-BF16 or AMX (`cpu.cpu_info`, which
  honours an `ONEDNN_MAX_CPU_ISA` cap) and OpenVINO lists BF16.
- int8: from `python -m models calibrate`'s directory (spec.calib), two ways:
  "nncf": NNCF post-training quantization of the (cross-layer-equalized, as the
  calibration says) model, fed the same real frames the calibration read, with the
  calibration's float layers kept float; cached as OpenVINO IR.
  "qdq": the calibration's Q/DQ ONNX model, as ONNX Runtime runs it.
  On x86 CPUs without VNNI/AMX (`CpuInfo.int8_saturates`: oneDNN's u8 x s8 kernels sum pairs
  of products in saturating int16) both use 7-bit weights: NNCF's overflow fix on every layer,
  and the calibration's reduced-range Q/DQ model.
  spec.extra["int8_method"] picks one; default nncf when the package is installed
  (measured faster at equal accuracy, docs/benchmarks.md), else qdq.

Batch: a model compiled per batch size on first use (static shapes are the fast path
of the CPU plugin), one infer request each. Threads: spec.threads, else the cores this
process may run on; one stream, latency hint.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from ..cpu import cpu_info
from ..detector import Detector
from ..errors import BackendUnavailable, ModelError, quiet_loggers
from ..onnx_export import MISH_INNER, default_cache_dir, export_onnx
from ..onnx_model import OnnxFileBase

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install openvino"
REWRITE_VERSION = "1"   # bump when mish_as_op changes
NNCF_VERSION = "2"      # bump when the NNCF settings change
OV_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: non-quantized ops stay f32


def import_openvino():
    try:
        import openvino as ov  # noqa: PLC0415
    except ImportError as e:
        raise BackendUnavailable(f"the openvino backend needs the openvino package, which is not installed "
                                 f"({e.name or e}): {INSTALL_HINT}") from None
    return ov


def cpu_threads(threads: int) -> int:
    if threads:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bf16_unavailable_reason(core=None) -> str:
    """'' when bf16 runs natively here, else the one-line reason."""
    cpu = cpu_info()
    if not cpu.has_bf16:
        return (f"bf16 needs a CPU with AVX512-BF16 or AMX; this CPU ({cpu.describe()}) has neither: "
                f"use --precision fp32 (or int8 with --calib)")
    if core is not None and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return f"this OpenVINO build does not offer bf16 on {cpu.describe()}: use --precision fp32"
    return ""


def default_int8_method() -> str:
    """nncf when the package is installed (faster at equal accuracy, docs/benchmarks.md), else qdq."""
    import importlib.util  # noqa: PLC0415

    return "nncf" if importlib.util.find_spec("nncf") is not None else "qdq"


def _atomic_save_onnx(model, path: Path) -> None:
    import onnx  # noqa: PLC0415

    tmp = path.with_suffix(f".tmp{os.getpid()}")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def mish_as_op(model):
    """onnx.ModelProto with our exporter's decomposed mish (nodes marked MISH_INNER) replaced by
    the ONNX Mish op (opset 18); unused nodes and initializers removed. Works on the fp32 model
    and on the Q/DQ model (whose mish inner nodes stay float)."""
    from onnx import helper  # noqa: PLC0415

    g = model.graph
    nodes = []
    for n in g.node:
        if n.op_type == "Mul" and MISH_INNER not in n.name and any(MISH_INNER in i for i in n.input):
            x = [i for i in n.input if MISH_INNER not in i]
            if len(x) == 1:
                nodes.append(helper.make_node("Mish", x, list(n.output), name=n.name))
                continue
        nodes.append(n)
    # dead-code elimination from the graph outputs
    needed = {o.name for o in g.output}
    live = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(i for i in n.input if i)
    live.reverse()
    del g.node[:]
    g.node.extend(live)
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and o.version < 18:
            o.version = 18
    return model


def openvino_onnx(source: Path) -> Path:
    """The OpenVINO copy of an ONNX model (mish as an op), cached beside it."""
    import onnx  # noqa: PLC0415

    source = Path(source)
    path = source.with_name(f"{source.stem}-ov{REWRITE_VERSION}.onnx")
    if path.is_file():
        return path
    model = onnx.load(str(source))
    if not any(MISH_INNER in n.name for n in model.graph.node):
        return source
    _atomic_save_onnx(mish_as_op(model), path)
    return path


def nncf_int8_path(spec, model, ov) -> Path:
    """OpenVINO IR quantized by NNCF on the frames of spec.calib; built once, cached by
    (model, calibration, settings, OpenVINO and NNCF versions). model: a darknet Network or an
    ONNX file's layout (`quantize.quant_target` says what is quantized and how frames are fed)."""
    from ..identity import model_id, model_name  # noqa: PLC0415
    from ..quantize import checked_meta, int8_weight_bits, quant_target, read_calibration_frames  # noqa: PLC0415

    meta = checked_meta(spec, model)
    try:
        import nncf  # noqa: PLC0415
    except ImportError:
        raise BackendUnavailable("int8 method nncf needs the nncf package: pip install nncf") from None
    bits = int8_weight_bits(spec)
    fields = {"model": model_id(model), "source": meta.source, "frames": meta.frames,
              "equalized": meta.equalized, "float": meta.float_layers, "letterbox": spec.letterbox,
              "ov": ov.__version__, "nncf": nncf.__version__, "v": NNCF_VERSION, "weight_bits": bits}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    w, h = model.input_size
    stem = model_name(model)
    suffix = "" if bits == 8 else f"-w{bits}"
    out = Path(spec.cache_dir or default_cache_dir()) / "openvino" / f"{stem}-{w}x{h}-int8-nncf{suffix}-{key}.xml"
    if out.is_file() and out.with_suffix(".bin").is_file():
        return out
    frames = read_calibration_frames(meta.source, meta.frames)
    if not frames:
        raise ModelError(f"no calibration frames could be read from {meta.source}")
    log.warning("quantizing %s to int8 with NNCF on %d frames of %s (first run only; cached at %s)",
                stem, len(frames), meta.source, out)
    target = quant_target(model, meta.equalized, spec.cache_dir, spec.letterbox)
    blobs = [target.blob(f) for f in frames]
    ov_model = ov.Core().read_model(str(openvino_onnx(target.fp32)))
    ov_model.reshape([1, target.channels, h, w])
    patterns = [f"^{name}(/.*)?$" for name in meta.float_layers]
    # NNCF draws a progress bar on stdout (a rich console) and logs its graph at INFO on its own
    # handler: the warning above says what happens
    with quiet_loggers("nncf"), contextlib.redirect_stdout(io.StringIO()):
        # 7-bit weights: the overflow fix on every layer (NNCF's default fixes the first only)
        advanced = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.ENABLE) if bits == 7 else None
        quantized = nncf.quantize(ov_model, nncf.Dataset(blobs), subset_size=len(blobs),
                                  ignored_scope=nncf.IgnoredScope(patterns=patterns, validate=False)
                                  if patterns else None, advanced_parameters=advanced)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.tmp{os.getpid()}.xml")
    ov.save_model(quantized, str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))
    os.replace(tmp, out)
    return out


def int8_model_file(spec, model, ov) -> Tuple[Path, str]:
    """(the int8 model OpenVINO reads for spec.calib, the method: "nncf" or "qdq"; see the module
    docstring). model: a darknet Network or an ONNX file's layout."""
    from ..quantize import checked_meta, int8_model_path  # noqa: PLC0415

    checked_meta(spec, model)  # spec.calib belongs to this model (its messages otherwise)
    method = spec.extra.get("int8_method") or default_int8_method()
    if method not in ("nncf", "qdq"):
        raise ModelError(f"int8_method must be nncf or qdq; got {method!r}")
    if method == "nncf":
        return nncf_int8_path(spec, model, ov), method
    return openvino_onnx(int8_model_path(spec, model)), method


def compiled_cache_dir(cache_dir=None) -> Path:
    """Where OpenVINO keeps the models it compiled on this CPU (under its ISA cap)."""
    cpu = hashlib.sha256(cpu_info().key().encode()).hexdigest()[:12]
    return Path(cache_dir or default_cache_dir()) / "openvino" / "compiled" / cpu


class CpuModel:
    """One OpenVINO model on the CPU in spec.precision: compiled per batch size on first use
    (static shapes are the CPU plugin's fast path; compiled models are cached on disk), one infer
    request each.

    run: blob (B, 3, h, w) float32 -> the outputs named `outputs`, each (B, ...) float32.
    fixed_batch: the graph takes batch 1 only: a batch runs frame by frame."""

    def __init__(self, ov, path: Path, spec, input_size: Tuple[int, int], outputs: List[str],
                 fixed_batch: bool = False, channels: int = 3):
        self.core = ov.Core()
        if spec.precision not in OV_HINTS:
            raise BackendUnavailable(f"the openvino backend runs fp32, bf16 and int8, not {spec.precision}"
                                     + ("; on a CPU use bf16" if spec.precision == "fp16" else ""))
        if spec.precision == "bf16":
            reason = bf16_unavailable_reason(self.core)
            if reason:
                raise BackendUnavailable(reason)
        self.path, self.precision, self.input_size = Path(path), spec.precision, input_size
        self.outputs, self.fixed_batch, self.channels = outputs, fixed_batch, channels
        self.model = self.core.read_model(str(path))
        self.config = {"INFERENCE_PRECISION_HINT": OV_HINTS[spec.precision], "PERFORMANCE_HINT": "LATENCY",
                       "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": cpu_threads(spec.threads),
                       # no pinning: on a shared machine (other stages, other jobs) pinned threads cannot
                       # move off a busy core; the pipeline's own CPU placement is sched_setaffinity
                       "ENABLE_CPU_PINNING": False,
                       # compiled models kept on disk (OpenVINO's model cache, keyed by the model, its
                       # shape and these settings; a folder per CPU and ONEDNN_MAX_CPU_ISA cap): a later
                       # start loads instead of compiling (default model 0.2 -> 0.09 s per batch size,
                       # its int8 1.8 -> 0.4 s on a Zen 4)
                       "CACHE_DIR": str(compiled_cache_dir(spec.cache_dir))}
        self._compiled: Dict[int, Tuple[object, object, list]] = {}
        self.request(1)  # compile now: a precision the CPU cannot run fails here, not mid-stream

    def _compile(self):
        """Compile (or load from the cache) the model as reshaped. OpenVINO's cache is not safe for
        two processes writing one file (two infer workers: "cannot set permissions"): one process
        at a time holds the cache folder's lock; a cache that still fails is bypassed."""
        import fcntl  # noqa: PLC0415
        cache = Path(self.config["CACHE_DIR"])
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with open(cache / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                return self.core.compile_model(self.model, "CPU", self.config)
        except (RuntimeError, OSError) as e:
            log.debug("compiled-model cache %s not used: %s", cache, e)
        return self.core.compile_model(self.model, "CPU", {k: v for k, v in self.config.items() if k != "CACHE_DIR"})

    def request(self, batch: int):
        if batch not in self._compiled:
            w, h = self.input_size
            self.model.reshape([batch, self.channels, h, w])
            try:
                compiled = self._compile()
            except RuntimeError as e:
                raise BackendUnavailable(f"OpenVINO cannot compile {self.path.name} in {self.precision} "
                                         f"on {cpu_info().describe()}: {str(e).strip().splitlines()[-1]}")
            outputs = [compiled.output(n) for n in self.outputs]
            self._compiled[batch] = (compiled, compiled.create_infer_request(), outputs)
        return self._compiled[batch]

    def run(self, blob: np.ndarray) -> List[np.ndarray]:
        if self.fixed_batch and len(blob) > 1:
            outs = [self.run(blob[i:i + 1]) for i in range(len(blob))]
            return [np.concatenate(o) for o in zip(*outs)]
        _, request, outputs = self.request(blob.shape[0])
        request.infer({0: np.ascontiguousarray(blob, np.float32)}, share_inputs=True)
        return [request.get_tensor(o).data.copy() for o in outputs]

    def close(self) -> None:
        self._compiled.clear()


class _OnOpenVINO:
    """What both OpenVINO detectors share: the model file of spec.precision, run by a `CpuModel`."""

    name = "openvino"

    def _open(self, spec, model, fp32: Callable[[], Path], outputs: List[str], **kw) -> None:
        """model: a darknet Network or an ONNX file's layout; fp32: its fp32 model file (made when called)."""
        ov = import_openvino()
        self.int8_method = ""
        if spec.precision == "int8":
            path, self.int8_method = int8_model_file(spec, model, ov)
        else:
            path = fp32()
        self.model_path = path
        self.runner = CpuModel(ov, path, spec, self.input_size, outputs, **kw)

    def describe(self) -> str:
        return f"{self.name}-{self.precision}" + (f" ({self.int8_method})" if self.int8_method else "")

    def infer(self, blob: np.ndarray) -> List[np.ndarray]:
        """(B, 3, h, w) float32 -> the model's outputs, each (B, ...) float32."""
        return self.runner.run(blob)

    def close(self) -> None:
        self.runner.close()


class OpenVINODetector(_OnOpenVINO, Detector):
    """OpenVINO on the CPU; spec.precision fp32, bf16 or int8 (spec.calib)."""

    def __init__(self, spec, network, names):
        super().__init__(spec, network, names)
        self._open(spec, network, lambda: openvino_onnx(export_onnx(network, spec.cache_dir)),
                   [f"head_{k}" for k in range(len(network.yolo_layers))], channels=network.channels)


class OpenVINOFileDetector(_OnOpenVINO, OnnxFileBase):
    """An ONNX file of another family (`onnx_model`) on OpenVINO: the same pre-processing and
    decoding as on ONNX Runtime; fp32, bf16 (where the CPU has it), int8 (spec.calib)."""

    def __init__(self, spec, layout):  # noqa: D107
        super().__init__(spec, layout)
        self._open(spec, layout, lambda: layout.path, [layout.output_name], fixed_batch=layout.batch == 1)

    @property
    def precision(self) -> str:
        return self.spec.precision
