"""Darknet `Network` -> ONNX model (NCHW), emitted from the same resolved graph and
weights as the Keras model, with batch-norm folded into each convolution.

Why not tf2onnx on the Keras model: `tf2onnx.convert.from_keras` is broken on
TensorFlow >= 2.16 (onnx/tensorflow-onnx#2348), tf2onnx pins an old protobuf that
conflicts with current onnx, and the NHWC->NCHW transposes it inserts cost speed
on ONNX Runtime. The parity tests hold the TF and ONNX models to the same OpenCV
oracle, so both emitters are checked against one reference.

Graph: input "image" (B, 3, H, W) float32 RGB [0,1]; outputs "head_<i>"
(B, A*(5+C), h, w), the raw tensors feeding each yolo layer.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import List, Optional

import numpy as np

from .darknet import Network, fused_conv_params, maxpool_padding

log = logging.getLogger(__name__)

OPSET = 17
EXPORTER_VERSION = "2"  # bump when the emitted graph changes: invalidates cached exports
MISH_INNER = "_mish_"  # marks the float-only inner nodes of a mish activation


def _emit_activation(nodes, helper, x: str, act: str, name: str) -> str:
    if act == "linear":
        return x
    y = f"{name}_out"
    if act == "leaky":
        nodes.append(helper.make_node("LeakyRelu", [x], [y], alpha=0.1, name=name))
    elif act == "relu":
        nodes.append(helper.make_node("Relu", [x], [y], name=name))
    elif act == "logistic":
        nodes.append(helper.make_node("Sigmoid", [x], [y], name=name))
    elif act == "swish":
        nodes.append(helper.make_node("Sigmoid", [x], [f"{name}_sig"], name=f"{name}_sig"))
        nodes.append(helper.make_node("Mul", [x, f"{name}_sig"], [y], name=name))
    elif act == "mish":
        # mish(x) = x * tanh(softplus(x)) = x * n / (n + 2), n = e^x (e^x + 2): exact, and built
        # from fast vectorised ops (ONNX Runtime's Softplus kernel alone took 70% of yolov4's
        # INT8 time). x is clamped at 20 before exp, where the ratio is 1 in float32 anyway.
        m = f"{name}{MISH_INNER}"
        nodes += [
            helper.make_node("Min", [x, "mish_clamp"], [f"{m}clamp"], name=f"{m}clamp"),
            helper.make_node("Exp", [f"{m}clamp"], [f"{m}exp"], name=f"{m}exp"),
            helper.make_node("Add", [f"{m}exp", "mish_two"], [f"{m}exp2"], name=f"{m}exp2"),
            helper.make_node("Mul", [f"{m}exp", f"{m}exp2"], [f"{m}n"], name=f"{m}n"),
            helper.make_node("Add", [f"{m}n", "mish_two"], [f"{m}n2"], name=f"{m}n2"),
            helper.make_node("Div", [f"{m}n", f"{m}n2"], [f"{m}ratio"], name=f"{m}ratio"),
            helper.make_node("Mul", [x, f"{m}ratio"], [y], name=name),
        ]
    else:
        raise ValueError(f"activation {act!r}")
    return y


def network_to_onnx(network: Network):
    """Return an onnx.ModelProto computing the raw yolo head tensors."""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    w, h = network.input_size
    nodes, inits = [], []
    names: List[str] = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def src(j: int) -> str:
        return "image" if j < 0 else names[j]

    for layer in network.layers:
        i, a, x = layer.index, layer.attrs, src(layer.inputs[0])
        if layer.type == "convolutional":
            kernel, bias = fused_conv_params(layer)
            y = f"conv_{i}"
            p = a["pad"]
            nodes.append(helper.make_node(
                "Conv", [x, const(f"conv_{i}.W", kernel), const(f"conv_{i}.B", bias)], [y], name=y,
                kernel_shape=[a["size"]] * 2, strides=[a["stride"]] * 2, pads=[p, p, p, p], group=a["groups"]))
            y = _emit_activation(nodes, helper, y, a["activation"], f"act_{i}")
        elif layer.type == "shortcut":
            y = f"shortcut_{i}"
            nodes.append(helper.make_node("Add", [x, src(layer.inputs[1])], [y], name=y))
            y = _emit_activation(nodes, helper, y, a["activation"], f"act_{i}")
        elif layer.type == "route":
            parts = []
            for j in layer.inputs:
                t = src(j)
                if a["groups"] > 1:
                    c = network.layers[j].shape[2] // a["groups"]
                    s = f"route_{i}_from{j}"
                    nodes.append(helper.make_node(
                        "Slice", [t, const(f"{s}.starts", np.array([a["group_id"] * c], np.int64)),
                                  const(f"{s}.ends", np.array([(a["group_id"] + 1) * c], np.int64)),
                                  const(f"{s}.axes", np.array([1], np.int64))], [s], name=s))
                    t = s
                parts.append(t)
            if len(parts) == 1:
                y = parts[0]
            else:
                y = f"route_{i}"
                nodes.append(helper.make_node("Concat", parts, [y], name=y, axis=1))
        elif layer.type == "maxpool":
            top, bottom, left, right = maxpool_padding(network, layer)
            y = f"maxpool_{i}"
            nodes.append(helper.make_node("MaxPool", [x], [y], name=y, kernel_shape=[a["size"]] * 2,
                                          strides=[a["stride"]] * 2, pads=[top, left, bottom, right]))
        elif layer.type == "upsample":
            y = f"upsample_{i}"
            scales = const(f"{y}.scales", np.array([1, 1, a["stride"], a["stride"]], np.float32))
            nodes.append(helper.make_node("Resize", [x, "", scales], [y], name=y, mode="nearest",
                                          coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
        else:  # dropout, yolo: identity
            y = x
        names.append(y)

    if any(n.name.find(MISH_INNER) >= 0 for n in nodes):
        const("mish_clamp", np.array(20.0, np.float32))
        const("mish_two", np.array(2.0, np.float32))
    outputs = []
    for k, head in enumerate(network.yolo_layers):
        out = f"head_{k}"
        nodes.append(helper.make_node("Identity", [names[head.source]], [out], name=out))
        gh, gw = head.grid
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                     ["batch", network.layers[head.source].shape[2], gh, gw]))
    graph = helper.make_graph(
        nodes, "darknet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", network.channels, h, w])],
        outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="trackpipe")
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model, full_check=True)
    return model


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("TRACKPIPE_CACHE", Path.home() / ".cache" / "trackpipe"))


def model_key(network: Network) -> str:
    """Identity of a (cfg, weights, input size) triple, for artefact caches."""
    h = hashlib.sha256()
    h.update(file_sha256(network.cfg_path).encode())
    h.update(file_sha256(network.weights_path).encode())
    h.update(("%dx%d" % network.input_size).encode())
    return h.hexdigest()[:16]


def export_onnx(network: Network, cache_dir: Optional[Path] = None, variant: str = "") -> Path:
    """Write (or reuse) the cached ONNX export of `network`; returns its path.

    variant tags a transformed network with the same files (e.g. "cle" for the
    cross-layer-equalized weights used by INT8), so the caches never mix.
    """
    cache_dir = Path(cache_dir or default_cache_dir()) / "onnx"
    stem = network.cfg_path.stem if network.cfg_path else "model"
    tag = f"-{variant}" if variant else ""
    path = cache_dir / f"{stem}-{'%dx%d' % network.input_size}-{model_key(network)}{tag}-e{EXPORTER_VERSION}.onnx"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    model = network_to_onnx(network)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, path)  # atomic: a concurrent reader never sees a partial file
    log.info("exported ONNX model to %s", path)
    return path
