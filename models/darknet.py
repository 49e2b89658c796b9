"""Darknet cfg parsing, layer graph with shapes, and .weights reading/writing.

The cfg drives everything: `parse_cfg` gives sections, `build_network` resolves
every layer's inputs and output shape (h, w, c) for a given input size, and
`read_weights` fills each convolution's parameters from a darknet .weights file,
checking the exact byte count first. Backends (TensorFlow, ONNX) are emitters of
this one `Network`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import ModelError, UnsupportedLayerError, WeightsError, check_file

log = logging.getLogger(__name__)

ACTIVATIONS = ("leaky", "mish", "linear", "logistic", "swish", "relu")
SUPPORTED = ("convolutional", "shortcut", "route", "maxpool", "upsample", "dropout", "yolo")


@dataclass
class Section:
    """One `[type]` block of a cfg file; `line` is where it starts (1-based)."""

    type: str
    line: int
    options: Dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default, cast=int):
        if key not in self.options:
            return default
        try:
            return cast(self.options[key])
        except ValueError:
            raise ModelError(f"line {self.line}: [{self.type}] {key}={self.options[key]!r} is not a valid "
                             f"{cast.__name__}")

    def ints(self, key: str, default: Optional[List[int]] = None) -> List[int]:
        if key not in self.options:
            return list(default or [])
        return [int(v) for v in self.options[key].split(",") if v.strip()]


def parse_cfg(text: str, source: str = "cfg") -> List[Section]:
    """Split darknet cfg text into sections. Comments (#, ;) and blank lines are skipped."""
    sections: List[Section] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ModelError(f"{source}:{lineno}: malformed section header {line!r}")
            sections.append(Section(line[1:-1].strip().lower(), lineno))
        elif "=" in line:
            if not sections:
                raise ModelError(f"{source}:{lineno}: option outside any section")
            key, value = line.split("=", 1)
            sections[-1].options[key.strip()] = value.strip()
        else:
            raise ModelError(f"{source}:{lineno}: cannot parse {line!r}")
    if not sections or sections[0].type not in ("net", "network"):
        raise ModelError(f"{source}: the first section must be [net]")
    return sections


@dataclass
class YoloHead:
    """A yolo output layer.

    anchors: (A, 2) float32 anchor (w, h) in network-input pixels for this head's mask.
    source: index of the layer whose output is the raw head tensor (A*(5+C) channels).
    """

    index: int
    source: int
    anchors: np.ndarray
    classes: int
    scale_x_y: float = 1.0
    new_coords: bool = False
    grid: Tuple[int, int] = (0, 0)  # (h, w)


@dataclass
class Layer:
    """A resolved layer. shape is the output (h, w, c); inputs are absolute layer indices
    (-1 means the network input). params holds numpy arrays once weights are read:
    conv: kernel (out, in/groups, k, k), bias (out,), and with batch-norm scale/mean/var (out,).
    """

    index: int
    type: str
    line: int
    options: Dict[str, str]
    inputs: List[int]
    shape: Tuple[int, int, int]
    attrs: dict = field(default_factory=dict)
    params: Dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Network:
    """A darknet network resolved for one input size."""

    layers: List[Layer]
    input_size: Tuple[int, int]  # (w, h)
    channels: int
    yolo_layers: List[YoloHead]
    letterbox: bool
    cfg_path: Optional[Path] = None
    weights_path: Optional[Path] = None

    @property
    def num_classes(self) -> int:
        return self.yolo_layers[0].classes if self.yolo_layers else 0

    @property
    def output_layers(self) -> List[int]:
        return [y.source for y in self.yolo_layers]

    def conv_layers(self) -> List[Layer]:
        return [l for l in self.layers if l.type == "convolutional"]

    def param_count(self) -> int:
        return sum(conv_param_count(l) for l in self.conv_layers())

    def weights_bytes(self, header_bytes: int = 20) -> int:
        return header_bytes + 4 * self.param_count()

    def flops(self) -> int:
        """Multiply-adds x 2 of all convolutions for one image (the usual "GFLOPs" figure)."""
        total = 0
        for l in self.conv_layers():
            a = l.attrs
            oh, ow, oc = l.shape
            total += 2 * oh * ow * oc * (a["in_channels"] // a["groups"]) * a["size"] ** 2
        return total


def maxpool_padding(network: "Network", layer: Layer) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) padding that reproduces darknet's maxpool output size:
    padding // 2 before, the rest after (darknet's w_offset = -padding / 2)."""
    a = layer.attrs
    j = layer.inputs[0]
    in_h, in_w = network.layers[j].shape[:2] if j >= 0 else network.input_size[::-1]
    out_h, out_w = layer.shape[:2]
    top = left = a["padding"] // 2
    bottom = max((out_h - 1) * a["stride"] + a["size"] - in_h, 0) - top
    right = max((out_w - 1) * a["stride"] + a["size"] - in_w, 0) - left
    return top, bottom, left, right


def conv_param_count(layer: Layer) -> int:
    a = layer.attrs
    n = a["filters"]
    count = n * (a["in_channels"] // a["groups"]) * a["size"] ** 2 + n
    if a["batch_normalize"]:
        count += 3 * n
    return count


def _resolve(index: int, ref: int, line: int) -> int:
    target = index + ref if ref < 0 else ref
    if not 0 <= target < index:
        raise ModelError(f"line {line}: layer reference {ref} points outside the network (layer {index})")
    return target


def build_network(sections: List[Section], size: Tuple[int, int] = (0, 0), source: str = "cfg") -> Network:
    """Resolve every layer's inputs and output shape for the given (w, h) input size."""
    net = sections[0]
    w = size[0] or net.get("width", 416)
    h = size[1] or net.get("height", 416)
    c = net.get("channels", 3)
    if w % 32 or h % 32:
        raise ModelError(f"input size {w}x{h} must be a multiple of 32")
    layers: List[Layer] = []
    yolos: List[YoloHead] = []
    prev = (h, w, c)
    for i, s in enumerate(sections[1:]):
        if s.type not in SUPPORTED:
            raise UnsupportedLayerError(f"{source}:{s.line}: unsupported layer type [{s.type}] (layer {i}); "
                                        f"supported: {', '.join(SUPPORTED)}")
        inputs = [i - 1]
        attrs: dict = {}
        if s.type == "convolutional":
            ph, pw, pc = prev
            k = s.get("size", 1)
            stride = s.get("stride", 1)
            pad = s.get("padding", k // 2 if s.get("pad", 0) else 0)
            groups = s.get("groups", 1)
            filters = s.get("filters", 1)
            act = s.options.get("activation", "logistic")
            if act not in ACTIVATIONS:
                raise UnsupportedLayerError(f"{source}:{s.line}: unsupported activation {act!r} in [convolutional] "
                                            f"(layer {i}); supported: {', '.join(ACTIVATIONS)}")
            if s.get("stride_x", stride) != stride or s.get("stride_y", stride) != stride or s.get("dilation", 1) != 1:
                raise UnsupportedLayerError(f"{source}:{s.line}: [convolutional] with stride_x/stride_y/dilation "
                                            f"(layer {i})")
            if pc % groups or filters % groups:
                raise ModelError(f"{source}:{s.line}: groups={groups} does not divide channels {pc} / "
                                 f"filters {filters}")
            attrs = dict(filters=filters, size=k, stride=stride, pad=pad, groups=groups, activation=act,
                         batch_normalize=bool(s.get("batch_normalize", 0)), in_channels=pc)
            shape = ((ph + 2 * pad - k) // stride + 1, (pw + 2 * pad - k) // stride + 1, filters)
        elif s.type == "shortcut":
            src = _resolve(i, s.get("from", -3), s.line)
            inputs = [i - 1, src]
            act = s.options.get("activation", "linear")
            if act not in ACTIVATIONS:
                raise UnsupportedLayerError(f"{source}:{s.line}: unsupported activation {act!r} in [shortcut]")
            if layers[src].shape != prev:
                raise UnsupportedLayerError(f"{source}:{s.line}: [shortcut] of different shapes {layers[src].shape} "
                                            f"and {prev} (layer {i})")
            if "weights_type" in s.options and s.options["weights_type"] != "none":
                raise UnsupportedLayerError(f"{source}:{s.line}: weighted [shortcut] (layer {i})")
            attrs = dict(activation=act)
            shape = prev
        elif s.type == "route":
            refs = s.ints("layers")
            if not refs:
                raise ModelError(f"{source}:{s.line}: [route] without layers=")
            inputs = [_resolve(i, r, s.line) for r in refs]
            groups, gid = s.get("groups", 1), s.get("group_id", 0)
            hw = {layers[j].shape[:2] for j in inputs}
            if len(hw) != 1:
                raise ModelError(f"{source}:{s.line}: [route] inputs differ in size: {sorted(hw)}")
            chans = sum(layers[j].shape[2] // groups for j in inputs)
            attrs = dict(groups=groups, group_id=gid)
            shape = (*hw.pop(), chans)
        elif s.type == "maxpool":
            ph, pw, pc = prev
            k = s.get("size", 1)
            stride = s.get("stride", 1)
            padding = s.get("padding", k - 1)
            if s.get("maxpool_depth", 0):
                raise UnsupportedLayerError(f"{source}:{s.line}: maxpool_depth (layer {i})")
            attrs = dict(size=k, stride=stride, padding=padding)
            shape = ((ph + padding - k) // stride + 1, (pw + padding - k) // stride + 1, pc)
        elif s.type == "upsample":
            stride = s.get("stride", 2)
            if stride < 1:
                raise UnsupportedLayerError(f"{source}:{s.line}: downsampling [upsample] stride={stride}")
            attrs = dict(stride=stride, scale=s.get("scale", 1.0, float))
            shape = (prev[0] * stride, prev[1] * stride, prev[2])
        elif s.type == "dropout":
            shape = prev
        else:  # yolo
            mask = s.ints("mask", list(range(s.get("num", 1))))
            anchors = np.array(s.ints("anchors"), dtype=np.float32).reshape(-1, 2)
            classes = s.get("classes", 20)
            if max(mask) >= len(anchors):
                raise ModelError(f"{source}:{s.line}: [yolo] mask {mask} refers to missing anchors")
            if prev[2] != len(mask) * (5 + classes):
                raise ModelError(f"{source}:{s.line}: [yolo] expects {len(mask) * (5 + classes)} input channels "
                                 f"({len(mask)} anchors x (5 + {classes} classes)), got {prev[2]}")
            yolos.append(YoloHead(index=i, source=i - 1, anchors=anchors[mask], classes=classes,
                                  scale_x_y=s.get("scale_x_y", 1.0, float),
                                  new_coords=bool(s.get("new_coords", 0)), grid=prev[:2]))
            shape = prev
        layers.append(Layer(i, s.type, s.line, s.options, inputs, shape, attrs))
        prev = shape
    if not yolos:
        raise ModelError(f"{source}: no [yolo] layer: not a detector cfg")
    if len({y.classes for y in yolos}) != 1:
        raise ModelError(f"{source}: [yolo] layers disagree on classes")
    return Network(layers, (w, h), c, yolos, letterbox=bool(net.get("letter_box", 0)))


def load_cfg(path, size: Tuple[int, int] = (0, 0)) -> Network:
    path = check_file(path, "cfg file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read cfg {path}: {e}")
    network = build_network(parse_cfg(text, str(path)), size, str(path))
    network.cfg_path = path
    return network


def _header_size(buf: bytes, path) -> int:
    if len(buf) < 16:
        raise WeightsError(f"{path}: {len(buf)} bytes is too short for a darknet weights header")
    major, minor, _rev = np.frombuffer(buf[:12], dtype="<i4")
    if major < 0 or minor < 0 or major > 1000 or minor > 1000:
        raise WeightsError(f"{path}: not a darknet weights file (header version {major}.{minor})")
    return 20 if major * 10 + minor >= 2 else 16


def read_weights(network: Network, path) -> None:
    """Fill each conv layer's params from a darknet .weights file.

    Raises WeightsError naming expected vs actual bytes unless the file size is exact.
    """
    try:
        path = check_file(path, "weights file")
    except ModelError as e:
        raise WeightsError(str(e)) from None
    buf = path.read_bytes()
    header = _header_size(buf, path)
    expected = network.weights_bytes(header)
    if len(buf) != expected:
        hint = "truncated" if len(buf) < expected else "too long"
        cfg = network.cfg_path.name if network.cfg_path else "the cfg"
        raise WeightsError(f"{path}: {len(buf):,} bytes but {cfg} needs exactly {expected:,} "
                           f"({hint}; wrong weights for this cfg?)")
    data = np.frombuffer(buf, dtype="<f4", offset=header)
    pos = 0

    def take(n: int) -> np.ndarray:
        nonlocal pos
        out = data[pos:pos + n]
        pos += n
        return out.astype(np.float32)

    for layer in network.conv_layers():
        a = layer.attrs
        n = a["filters"]
        p = {"bias": take(n)}
        if a["batch_normalize"]:
            p["scale"], p["mean"], p["var"] = take(n), take(n), take(n)
        p["kernel"] = take(n * (a["in_channels"] // a["groups"]) * a["size"] ** 2).reshape(
            n, a["in_channels"] // a["groups"], a["size"], a["size"])
        layer.params = p
    network.weights_path = path


def write_random_weights(network: Network, path, seed: int = 0) -> int:
    """Write a darknet-layout .weights file of random values; returns its size in bytes.

    Kernels are He-scaled so activations stay bounded through deep networks, and
    batch-norm variances are kept away from zero: a realistic numeric range for
    parity and speed tests.
    """
    rng = np.random.default_rng(seed)
    chunks = [np.array([0, 2, 5], "<i4").tobytes(), np.array([0], "<u8").tobytes()]
    for layer in network.conv_layers():
        a = layer.attrs
        n, fan_in = a["filters"], (a["in_channels"] // a["groups"]) * a["size"] ** 2
        chunks.append(rng.normal(0, 0.1, n).astype("<f4").tobytes())
        if a["batch_normalize"]:
            chunks.append(rng.uniform(0.5, 1.5, n).astype("<f4").tobytes())
            chunks.append(rng.normal(0, 0.1, n).astype("<f4").tobytes())
            chunks.append(rng.uniform(0.5, 2.0, n).astype("<f4").tobytes())
        chunks.append((rng.standard_normal(n * fan_in) * np.sqrt(1.0 / fan_in)).astype("<f4").tobytes())
    blob = b"".join(chunks)
    Path(path).write_bytes(blob)
    return len(blob)


def load_network(cfg, weights, size: Tuple[int, int] = (0, 0)) -> Network:
    """Parse the cfg for the given input size and read its weights."""
    network = load_cfg(cfg, size)
    read_weights(network, weights)
    return network


BN_EPSILON = 1e-6  # OpenCV's darknet importer (our parity oracle); cuDNN darknet uses 1e-5


def fused_conv_params(layer: Layer, eps: float = BN_EPSILON) -> Tuple[np.ndarray, np.ndarray]:
    """Fold batch-norm into the convolution: returns kernel (out, in/g, k, k), bias (out,).

    y = scale * (x - mean) / sqrt(var + eps) + bias, as OpenCV computes it; with
    eps = 1e-6 the heads match OpenCV to ~1e-6 relative, with 1e-5 only to ~5e-4.
    """
    p = layer.params
    if not layer.attrs["batch_normalize"]:
        return p["kernel"], p["bias"]
    scale = p["scale"] / np.sqrt(p["var"] + eps)
    kernel = p["kernel"] * scale[:, None, None, None]
    bias = p["bias"] - p["mean"] * scale
    return kernel.astype(np.float32), bias.astype(np.float32)
