"""Would a Q/DQ model's int8 convolutions saturate on a CPU without VNNI? Checked arithmetically.

x86 CPUs without VNNI/AMX multiply uint8 activations by int8 weights with `vpmaddubsw`: the
products of adjacent K elements are summed in pairs into saturating int16 before the int32
accumulation. A pair sum beyond [-32768, 32767] is clipped and the convolution's result is
wrong. Such a CPU cannot be had on every machine, and ONNX Runtime picks its kernels from CPUID
(no switch makes a VNNI CPU run them), so this module computes those pair sums exactly on the
model's real activations: the uint8 tensors its QuantizeLinear nodes produce for real frames,
and the int8 weight initializers of each convolution.

The pairs are taken as the GEMM of an NHWC convolution sees them: K ordered (kh, kw, channel),
adjacent input channels at one kernel tap. Grouped (depthwise) convolutions go through other
kernels and are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

INT16_MIN, INT16_MAX = -32768, 32767


@dataclass(frozen=True)
class PairOverflow:
    """One convolution: `pairs` pair sums computed, `overflows` of them outside int16,
    `max_abs` the largest |pair sum|, `weight_max` the largest |int8 weight|."""

    conv: str
    pairs: int
    overflows: int
    max_abs: int
    weight_max: int


@dataclass(frozen=True)
class _QConv:
    name: str
    act: str            # the uint8 tensor (QuantizeLinear output) feeding the convolution
    act_zero: int       # its zero point (the padding value)
    weight: np.ndarray  # (M, C, kh, kw) int8
    strides: tuple
    pads: tuple         # (top, left, bottom, right)
    dilations: tuple


def _quantized_convs(model) -> List[_QConv]:
    from onnx import helper, numpy_helper  # noqa: PLC0415

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("group", 1) != 1:
            continue
        dq_a, dq_w = producer.get(node.input[0]), producer.get(node.input[1])
        if not (dq_a is not None and dq_w is not None and dq_a.op_type == dq_w.op_type == "DequantizeLinear"
                and dq_w.input[0] in inits):
            continue
        weight = numpy_helper.to_array(inits[dq_w.input[0]])
        if weight.dtype != np.int8:
            continue
        zero = numpy_helper.to_array(inits[dq_a.input[2]]) if len(dq_a.input) > 2 and dq_a.input[2] in inits \
            else np.uint8(0)
        if np.asarray(zero).dtype != np.uint8:
            continue
        kh, kw = weight.shape[2:]
        pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
        out.append(_QConv(node.name or node.output[0], dq_a.input[0], int(np.asarray(zero).reshape(-1)[0]), weight,
                          tuple(attrs.get("strides", (1, 1))), pads, tuple(attrs.get("dilations", (1, 1)))))
    return out


def _activations(model, convs: Sequence[_QConv], blobs: Sequence[np.ndarray]) -> Dict[str, List[np.ndarray]]:
    """The uint8 input tensor (N, C, H, W) of every conv for every blob, from ONNX Runtime."""
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    names = list(dict.fromkeys(c.act for c in convs))
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UINT8, None) for n in names)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the Q/DQ nodes as written
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    acts: Dict[str, List[np.ndarray]] = {n: [] for n in names}
    for blob in blobs:
        for n, a in zip(names, sess.run(names, {inp: blob})):
            acts[n].append(a)
    return acts


def _patches(act: np.ndarray, conv: _QConv, positions: np.ndarray) -> np.ndarray:
    """(P, kh*kw, C) uint8 input patches at flat output positions of one image act (C, H, W)."""
    c, h, w = act.shape
    kh, kw = conv.weight.shape[2:]
    (sh, sw), (dh, dw) = conv.strides, conv.dilations
    top, left, bottom, right = conv.pads
    padded = np.full((c, h + top + bottom, w + left + right), conv.act_zero, np.uint8)
    padded[:, top:top + h, left:left + w] = act
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    oy, ox = positions // ow, positions % ow
    ty, tx = np.meshgrid(np.arange(kh) * dh, np.arange(kw) * dw, indexing="ij")
    ys = oy[:, None] * sh + ty.reshape(-1)[None]
    xs = ox[:, None] * sw + tx.reshape(-1)[None]
    return padded[:, ys, xs].transpose(1, 2, 0)  # (P, T, C)


def _output_count(act_shape, conv: _QConv) -> int:
    _, h, w = act_shape
    kh, kw = conv.weight.shape[2:]
    (sh, sw), (dh, dw) = conv.strides, conv.dilations
    top, left, bottom, right = conv.pads
    return (((h + top + bottom - dh * (kh - 1) - 1) // sh + 1)
            * ((w + left + right - dw * (kw - 1) - 1) // sw + 1))


def pair_overflow(qdq_path: Path, blobs: Sequence[np.ndarray], positions: int = 256, seed: int = 0,
                  chunk: int = 32) -> List[PairOverflow]:
    """Pair sums of every ungrouped int8 convolution of the Q/DQ model at `qdq_path`, on the
    pre-processed frames `blobs` (each (1, 3, H, W) float32), at up to `positions` output
    positions per frame (a fixed random sample; all of them when fewer)."""
    import onnx  # noqa: PLC0415

    model = onnx.load(str(qdq_path))
    convs = _quantized_convs(model)
    acts = _activations(model, convs, blobs)
    rng = np.random.default_rng(seed)
    out = []
    for conv in convs:
        m, c = conv.weight.shape[:2]
        cp = c + c % 2
        w = np.zeros((m, conv.weight.shape[2] * conv.weight.shape[3], cp), np.int32)
        w[:, :, :c] = conv.weight.transpose(0, 2, 3, 1).reshape(m, -1, c)
        w_even, w_odd = w[:, :, 0::2].reshape(m, -1), w[:, :, 1::2].reshape(m, -1)  # (M, K/2)
        pairs = overflows = max_abs = 0
        for batch in acts[conv.act]:
            for img in batch:
                n = _output_count(img.shape, conv)
                pos = np.arange(n) if n <= positions else np.sort(rng.choice(n, positions, replace=False))
                x = np.zeros((len(pos), w.shape[1], cp), np.int32)
                x[:, :, :c] = _patches(img, conv, pos)
                x_even, x_odd = x[:, :, 0::2].reshape(len(pos), -1), x[:, :, 1::2].reshape(len(pos), -1)
                for s in range(0, len(pos), chunk):
                    sums = (x_even[s:s + chunk, None] * w_even[None] + x_odd[s:s + chunk, None] * w_odd[None])
                    pairs += sums.size
                    overflows += int(np.count_nonzero((sums > INT16_MAX) | (sums < INT16_MIN)))
                    max_abs = max(max_abs, int(np.abs(sums).max()))
        out.append(PairOverflow(conv.name, pairs, overflows, max_abs, int(np.abs(conv.weight.astype(np.int32)).max())))
    return out
