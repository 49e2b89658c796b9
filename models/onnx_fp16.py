"""fp32 ONNX model -> fp16 ONNX model with fp32 inputs and outputs.

TensorRT 11 has no FP16 builder flag: a network runs in FP16 only where its
tensors are FP16 (strong typing). This module makes that network from our own
fp32 export: every float weight and activation becomes float16, the graph input
is cast to float16 by a `Cast` right after it and every graph output is cast
back to float32 right before it, so callers keep feeding and reading float32.

Written for the ops `onnx_export.network_to_onnx` emits (Conv, LeakyRelu, Relu,
Sigmoid, Min, Exp, Div, Mul, Add, Concat, Slice, MaxPool, Resize, Identity);
any other op is an error, never a silently wrong model. Only the data inputs of
each op change type: Slice's starts/ends/axes stay int64 and Resize's roi and
scales stay float32, as the ONNX operator schemas require.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)

FP16_CONVERTER_VERSION = "2"  # bump when the conversion changes: invalidates cached fp16 models
FP16_MAX = float(np.finfo(np.float16).max)

# op -> indices of the inputs of type T (converted to float16); None: all inputs
DATA_INPUTS: Dict[str, Optional[Tuple[int, ...]]] = {
    "Conv": None, "LeakyRelu": None, "Relu": None, "Sigmoid": None,
    "Mul": None, "Add": None, "Concat": None, "Identity": None, "Min": None, "Exp": None, "Div": None,
    "MaxPool": (0,), "Slice": (0,), "Resize": (0,),
}


def _is_data_input(op_type: str, index: int) -> bool:
    idx = DATA_INPUTS[op_type]
    return idx is None or index in idx


def convert_float_to_float16(model, suffix: str = "_fp16"):
    """Return a new ModelProto: float16 weights and activations, float32 graph I/O.

    model: an fp32 onnx.ModelProto using only the ops in DATA_INPUTS.
    Raises ValueError on an unsupported op, an initializer used both as data and
    as a parameter, or a weight that is not finite.
    """
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    m = copy.deepcopy(model)
    g = m.graph
    unsupported = sorted({n.op_type for n in g.node if n.domain in ("", "ai.onnx")} - set(DATA_INPUTS)
                         | {f"{n.domain}.{n.op_type}" for n in g.node if n.domain not in ("", "ai.onnx")})
    if unsupported:
        raise ValueError(f"fp16 conversion does not support op(s) {', '.join(unsupported)}")

    init_names = {i.name for i in g.initializer}
    as_data, as_param = set(), set()
    for n in g.node:
        for k, name in enumerate(n.input):
            if name in init_names:
                (as_data if _is_data_input(n.op_type, k) else as_param).add(name)
    both = as_data & as_param
    if both:
        raise ValueError(f"initializer(s) used both as data and as parameters: {', '.join(sorted(both))}")

    # mish's exp(x) * (exp(x) + 2) overflows float16 beyond x = 5.5: clamp at 5 instead of 20
    # (mish(x) / x at 5 is 0.99991, well inside float16's 1e-3 precision)
    for init in g.initializer:
        if init.name == "mish_clamp":
            init.CopyFrom(numpy_helper.from_array(np.array(5.0, np.float32), init.name))
    clipped = 0
    for init in g.initializer:
        if init.name in as_data and init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init)
            if not np.isfinite(arr).all():
                raise ValueError(f"initializer {init.name} has non-finite values")
            over = np.abs(arr) > FP16_MAX
            clipped += int(over.sum())
            init.CopyFrom(numpy_helper.from_array(np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16), init.name))
    if clipped:
        log.warning("fp16 conversion: %d weight values beyond +-%g were clipped", clipped, FP16_MAX)

    # graph inputs: keep float32 at the boundary, cast to float16 inside
    head, rename = [], {}
    for inp in g.input:
        if inp.name in init_names or inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        rename[inp.name] = inp.name + suffix
        head.append(helper.make_node("Cast", [inp.name], [inp.name + suffix], to=TensorProto.FLOAT16,
                                     name=f"cast_in_{inp.name}"))
    for n in g.node:
        for k, name in enumerate(n.input):
            if name in rename:
                if not _is_data_input(n.op_type, k):
                    raise ValueError(f"graph input {name} feeds a parameter of {n.name} ({n.op_type})")
                n.input[k] = rename[name]

    # graph outputs: computed in float16, cast back to float32 at the boundary
    tail, out_rename = [], {}
    for out in g.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        if out.name in rename or out.name in init_names:
            raise ValueError(f"graph output {out.name} is a graph input or an initializer")
        out_rename[out.name] = out.name + suffix
        tail.append(helper.make_node("Cast", [out.name + suffix], [out.name], to=TensorProto.FLOAT,
                                     name=f"cast_out_{out.name}"))
    for n in g.node:
        for k, name in enumerate(n.output):
            if name in out_rename:
                n.output[k] = out_rename[name]
        for k, name in enumerate(n.input):
            if name in out_rename:
                n.input[k] = out_rename[name]

    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    # intermediate type annotations (if any) are now float16; shape inference recomputes the rest
    for vi in g.value_info:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    m.producer_name = (m.producer_name or "trackpipe") + "+fp16"
    onnx.checker.check_model(m, full_check=True)
    return m


def fp16_model_path(fp32_path: Path) -> Path:
    return Path(fp32_path).with_name(f"{Path(fp32_path).stem}-fp16c{FP16_CONVERTER_VERSION}.onnx")


def convert_file(fp32_path: Path, out_path: Optional[Path] = None) -> Path:
    """Convert an fp32 ONNX file (cached: reused when out_path already exists)."""
    import onnx  # noqa: PLC0415

    out_path = Path(out_path) if out_path else fp16_model_path(fp32_path)
    if out_path.is_file():
        return out_path
    model = convert_float_to_float16(onnx.load(str(fp32_path)))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, out_path)  # atomic: a concurrent reader never sees a partial file
    log.info("wrote fp16 ONNX model %s", out_path)
    return out_path


def export_onnx_fp16(network, cache_dir: Optional[Path] = None) -> Path:
    """The cached fp16 ONNX model of `network` (fp32 I/O), next to its fp32 export."""
    from .onnx_export import export_onnx  # noqa: PLC0415

    return convert_file(export_onnx(network, cache_dir))
