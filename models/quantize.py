"""INT8 calibration on real frames -> Q/DQ ONNX model + reusable calibration cache.

`calibrate()` reads K real frames (video, image folder or glob), pre-processes
them exactly as inference does, collects per-tensor activation statistics with
ONNX Runtime's calibrators (entropy = TensorRT's KL-divergence threshold search,
percentile, or min-max), and writes into the output directory:

    calib_cache.json   per-tensor ranges (ONNX Runtime's TensorsData JSON): the scales
    model.int8.onnx    the Q/DQ model with 8-bit weights (runs INT8 on ONNX Runtime and
                       OpenVINO on CPUs with VNNI/AMX)
    model.int8-w7.onnx the same with 7-bit weights (reduced range), for x86 CPUs without
                       VNNI, whose u8 x s8 kernels sum pairs of products in saturating int16
                       (`cpu.CpuInfo.int8_saturates`); built when such a CPU first needs it
    meta.json          which fp32 model, size, method, frames and float layers it belongs to

The ranges do not depend on the CPU; the Q/DQ model does, through its weight bits. It is a pure
function of (fp32 model, cache, settings, weight bits): `build_qdq` rebuilds it from the cache
alone, without frames, bit-identically. Never calibrates on random data: the frames come from
the user's source.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np

from .cpu import cpu_info
from .darknet import Network
from .errors import ModelError, check_dir
from .identity import model_id, model_source
from .onnx_export import export_onnx
from .preprocess import preprocess

log = logging.getLogger(__name__)

MIN_FRAMES = 16
METHODS = ("entropy", "percentile", "minmax")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class CalibMeta:
    model_key: str
    cfg: str
    size: List[int]
    method: str
    frames: int
    source: str
    float_layers: List[str]
    per_channel: bool = True
    equalized: bool = True
    version: int = 1


def read_calibration_frames(source: str, count: int, max_read: int = 0) -> List[np.ndarray]:
    """Up to `count` BGR frames spread evenly over a video, an image folder or a glob.
    max_read > 0: spread over a video's first `max_read` frames only (it is read sequentially)."""
    import cv2  # noqa: PLC0415

    path = Path(source)
    if path.is_dir() or any(ch in source for ch in "*?["):
        files = sorted(p for p in (path.iterdir() if path.is_dir() else map(Path, glob.glob(source)))
                       if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise ModelError(f"no images in {source}")
        picks = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)]
        frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in dict.fromkeys(picks)]
        return [f for f in frames if f is not None]
    if not path.is_file():
        raise ModelError(f"calibration source not found: {source}")
    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not cap.isOpened() or total <= 0:
            raise ModelError(f"cannot read video {source}")
        if max_read > 0:
            total = min(total, max_read)
        wanted = set(np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist())
        frames = []
        for i in range(total):  # sequential read: exact frames, no keyframe-seek surprises
            ok, frame = cap.read()
            if not ok:
                break
            if i in wanted:
                frames.append(frame)
        return frames
    finally:
        cap.release()


class _OrtAdvice(logging.Filter):
    """Drops ONNX Runtime quantization's generic advice (logged on the root logger as warnings:
    'Please consider to run pre-processing before quantization...'), which is no news to a user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or record.levelno > logging.WARNING


@contextlib.contextmanager
def quiet_ort_quantization():
    """While calibrating or quantizing: ONNX Runtime's advice lines are not shown."""
    root, f = logging.getLogger(), _OrtAdvice()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


class _BlobReader:
    """ONNX Runtime CalibrationDataReader over pre-processed blobs (1, 3, H, W)."""

    def __init__(self, input_name: str, blobs: Sequence[np.ndarray]):
        self._it: Iterator = iter([{input_name: b} for b in blobs])

    def get_next(self):
        return next(self._it, None)


def head_and_stem_nodes(network: Network) -> List[str]:
    """Names of the ONNX Conv nodes kept in float by default: the first conv (raw
    pixels) and the convs feeding the yolo heads (box regression)."""
    convs = [l.index for l in network.conv_layers()]
    return [f"conv_{convs[0]}"] + [f"conv_{i}" for i in network.output_layers]


def _calibrate_ranges(fp32_path: Path, blobs: List[np.ndarray], method: str, chunk: int = 8):
    """Collect statistics chunk by chunk (bounded memory) and return ORT TensorsData."""
    from onnxruntime.quantization.calibrate import create_calibrator  # noqa: PLC0415

    extra = {"percentile": 99.999} if method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="trackpipe-calib-") as tmp:
        calibrator = create_calibrator(fp32_path, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=_ort_method(method), extra_options=extra)
        input_name = calibrator.infer_session.get_inputs()[0].name
        for start in range(0, len(blobs), chunk):
            calibrator.collect_data(_BlobReader(input_name, blobs[start:start + chunk]))
        return calibrator.compute_data()


def _ort_method(method: str):
    from onnxruntime.quantization.calibrate import CalibrationMethod  # noqa: PLC0415

    return {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
            "minmax": CalibrationMethod.MinMax}[method]


def qdq_name(weight_bits: int) -> str:
    """File name of the Q/DQ model with `weight_bits` (8 or 7) in a calibration directory."""
    if weight_bits not in (7, 8):
        raise ModelError(f"int8 weights have 7 or 8 bits, not {weight_bits}")
    return "model.int8.onnx" if weight_bits == 8 else "model.int8-w7.onnx"


def build_qdq(fp32_path: Path, cache_path: Path, out_path: Path, float_nodes: Sequence[str], method: str,
              per_channel: bool = True, weight_bits: int = 8) -> Path:
    """Q/DQ model from the fp32 model and a calibration cache; no frames needed.

    Activations uint8 (asymmetric), weights int8 per output channel, symmetric: 8 bits
    ([-127, 127]) for CPUs with VNNI, 7 bits ([-64, 64], ONNX Runtime's reduce_range) for those
    whose int8 kernels saturate. Nodes in `float_nodes` stay float32.
    """
    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # noqa: PLC0415

    from .onnx_export import MISH_INNER  # noqa: PLC0415

    # the inner nodes of mish (exp, ratio) stay float: quantizing e^x to 8 bits would be ruinous
    inner = [n.name for n in onnx.load(str(fp32_path), load_external_data=False).graph.node if MISH_INNER in n.name]
    tmp = out_path.with_suffix(f".tmp{os.getpid()}")
    with quiet_ort_quantization():
        quantize_static(str(fp32_path), str(tmp), None, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=weight_bits == 7, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(float_nodes) + inner, calibration_cache_path=str(cache_path),
                        calibrate_method=_ort_method(method),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    os.replace(tmp, out_path)
    return out_path


def float_model(network: Network, equalized: bool, cache_dir: Optional[Path] = None) -> Path:
    """The fp32 ONNX model that INT8 quantizes: cross-layer-equalized unless told not to."""
    if not equalized:
        return export_onnx(network, cache_dir)
    from .equalize import equalize  # noqa: PLC0415

    return export_onnx(equalize(network), cache_dir, variant="cle")


def file_float_nodes(path: Path) -> List[str]:
    """Nodes of an ONNX file (`onnx_model`) kept float by default, as `head_and_stem_nodes` for
    darknet: the first Conv (raw pixels) and the head, i.e. every node other than a spatial Conv
    (kernel larger than 1x1) below which no spatial Conv follows: the detection head's last 1x1
    convolutions and the decoding after them (Ultralytics' DFL, box arithmetic in input pixels,
    sigmoids, concatenations)."""
    import onnx  # noqa: PLC0415

    nodes = list(onnx.load(str(path), load_external_data=False).graph.node)   # topological order
    consumers: dict = {}
    for j, n in enumerate(nodes):
        for t in n.input:
            consumers.setdefault(t, []).append(j)

    def spatial(n) -> bool:
        if n.op_type != "Conv":
            return False
        ks = next((list(a.ints) for a in n.attribute if a.name == "kernel_shape"), None)
        return ks is None or any(k > 1 for k in ks)

    below = [False] * len(nodes)   # a spatial Conv somewhere downstream of node i
    for i in reversed(range(len(nodes))):
        below[i] = any(spatial(nodes[j]) or below[j] for t in nodes[i].output for j in consumers.get(t, ()))
    stem = [n.name for n in nodes if n.op_type == "Conv"][:1]
    return stem + [n.name for n, b in zip(nodes, below) if not (b or spatial(n)) and n.name and n.name not in stem]


@dataclass(frozen=True)
class QuantTarget:
    """What INT8 quantizes for a model: its fp32 ONNX graph, how a BGR frame (H, W, 3) uint8 becomes
    its input (1, channels, h, w) float32, the nodes kept float by default, whether equalized."""

    fp32: Path
    blob: Callable[[np.ndarray], np.ndarray]
    float_nodes: List[str]
    channels: int
    equalized: bool


def quant_target(model, equalized: bool, cache_dir: Optional[Path] = None, letterbox: bool = False) -> QuantTarget:
    """The `QuantTarget` of a darknet Network (its export, cross-layer-equalized when asked) or of
    an ONNX file's layout (the file as it is: equalization needs darknet's graph; its family's
    pre-processing, `onnx_model.preprocess_file`)."""
    from .identity import is_file_model  # noqa: PLC0415

    if is_file_model(model):
        from .onnx_preprocess import preprocess_file  # noqa: PLC0415

        return QuantTarget(model.path, lambda f: preprocess_file([f], model)[0], file_float_nodes(model.path), 3,
                           False)
    return QuantTarget(float_model(model, equalized, cache_dir),
                       lambda f: preprocess([f], model.input_size, letterbox)[0],
                       head_and_stem_nodes(model), model.channels, equalized)


def calibrate(model, source: str, out_dir: Path, frames: int = 100, method: str = "entropy",
              float_layers: Optional[Sequence[str]] = None, letterbox: bool = False,
              cache_dir: Optional[Path] = None, equalized: bool = True) -> Path:
    """Calibrate `model` (a darknet Network, or an ONNX file's layout: `quant_target`) on real
    frames from `source`; returns the output directory."""
    if method not in METHODS:
        raise ModelError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if frames < MIN_FRAMES:
        raise ModelError(f"--frames {frames} is too few for a stable calibration (at least {MIN_FRAMES})")
    images = read_calibration_frames(source, frames)
    if len(images) < MIN_FRAMES:
        raise ModelError(f"{source} gave {len(images)} readable frames; calibration needs at least {MIN_FRAMES}")
    target = quant_target(model, equalized, cache_dir, letterbox)
    fp32 = target.fp32
    blobs = [target.blob(img) for img in images]
    log.info("calibrating %s on %d frames from %s (%s)", fp32.name, len(blobs), source, method)
    with quiet_ort_quantization():
        ranges = _calibrate_ranges(fp32, blobs, method)
    from onnxruntime.quantization.calibrate import save_tensors_data  # noqa: PLC0415

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_tensors_data(ranges, out_dir / "calib_cache.json")
    float_nodes = list(target.float_nodes if float_layers is None else float_layers)
    meta = CalibMeta(model_id(model), model_source(model), list(model.input_size), method, len(blobs),
                     str(source), float_nodes, equalized=target.equalized)
    bits = cpu_info().int8_weight_bits
    build_qdq(fp32, out_dir / "calib_cache.json", out_dir / qdq_name(bits), float_nodes, method, weight_bits=bits)
    (out_dir / "meta.json").write_text(json.dumps(asdict(meta), indent=2))
    return out_dir


def load_meta(calib_dir: Path) -> CalibMeta:
    path = check_dir(calib_dir, "calibration directory") / "meta.json"
    if not path.is_file():
        raise ModelError(f"{calib_dir} is not a calibration directory (no meta.json); "
                         f"create one with `python -m models calibrate`")
    try:
        return CalibMeta(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise ModelError(f"{path}: unreadable calibration metadata ({e})")


def checked_meta(spec, model) -> CalibMeta:
    """The metadata of spec.calib, checked to belong to `model` (a darknet Network or an ONNX
    file's layout: same files and input size)."""
    if spec.calib is None:
        raise ModelError("int8 needs --calib DIR (make one with `python -m models calibrate ... --out DIR`)")
    meta = load_meta(spec.calib)
    if meta.model_key != model_id(model):
        raise ModelError(f"{spec.calib} was calibrated for another model or input size "
                         f"({Path(meta.cfg).name} {meta.size[0]}x{meta.size[1]}); recalibrate")
    return meta


def int8_weight_bits(spec) -> int:
    """Weight bits of the int8 model `spec` runs: spec.extra["int8_weight_bits"] (7 or 8) when
    set (e.g. a model calibrated for other machines), else what this CPU needs
    (`CpuInfo.int8_weight_bits`)."""
    bits = (spec.extra or {}).get("int8_weight_bits")
    if bits is None:
        return cpu_info().int8_weight_bits
    if str(bits) not in ("7", "8"):
        raise ModelError(f"int8_weight_bits must be 7 or 8; got {bits!r}")
    return int(bits)


def int8_model_path(spec, model, weight_bits: Optional[int] = None) -> Path:
    """The Q/DQ model for `model` (a darknet Network or an ONNX file's layout) from spec.calib with
    `weight_bits` (default: `int8_weight_bits(spec)`); built from the calibration cache if missing."""
    meta = checked_meta(spec, model)
    bits = weight_bits or int8_weight_bits(spec)
    path = Path(spec.calib) / qdq_name(bits)
    if not path.is_file():
        cache = Path(spec.calib) / "calib_cache.json"
        if not cache.is_file():
            raise ModelError(f"{spec.calib}: neither {path.name} nor calib_cache.json is there")
        fp32 = quant_target(model, meta.equalized, spec.cache_dir, spec.letterbox).fp32
        build_qdq(fp32, cache, path, meta.float_layers, meta.method, meta.per_channel, weight_bits=bits)
    return path
