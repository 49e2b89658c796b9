"""fp32 -> fp16 ONNX conversion (the model TensorRT builds its strongly typed FP16 engine
from), checked on ONNX Runtime CPU with real Yolo-Fastest-xl weights on dog.jpg, and on a
small cfg with random weights that uses every op the exporter emits."""

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from trackpipe.models.darknet import load_cfg, load_network, write_random_weights
from trackpipe.models.onnx_export import export_onnx, network_to_onnx
from trackpipe.models.onnx_fp16 import DATA_INPUTS, convert_float_to_float16, export_onnx_fp16
from trackpipe.models.preprocess import preprocess
from tests.assets import FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, IMAGES

# every layer type and activation the darknet builder supports, at 64x64
ALL_OPS_CFG = """
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=mish

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=swish

[route]
layers=-1
groups=2
group_id=1

[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=logistic

[shortcut]
from=-2
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=relu

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask=3,4,5
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=2
num=6

[route]
layers=-3

[upsample]
stride=2

[route]
layers=-1,4

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=2
num=6
"""


def _rel_err(ref, out):
    return float(np.abs(ref - out).max() / np.abs(ref).max())


def _run(model_or_path, blob):
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": blob})


@pytest.fixture(scope="module")
def dog():
    return cv2.imread(str(IMAGES / "dog.jpg"))


def _check_types(m16):
    """fp32 only at the boundary: graph I/O and the two kinds of Cast; every other float is fp16."""
    g = m16.graph
    assert [i.type.tensor_type.elem_type for i in g.input] == [TensorProto.FLOAT]
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in g.output)
    inferred = onnx.shape_inference.infer_shapes(m16, strict_mode=True)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    casts_out = {n.output[0] for n in g.node if n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT}
    graph_out = {o.name for o in g.output}
    assert casts_out == graph_out
    floats = {name: t for name, t in types.items() if t in (TensorProto.FLOAT, TensorProto.FLOAT16)}
    assert floats and all(t == TensorProto.FLOAT16 for n, t in floats.items() if n not in graph_out), \
        [n for n, t in floats.items() if t == TensorProto.FLOAT]
    conv_weights = {n.input[1] for n in g.node if n.op_type == "Conv"}
    assert all(i.data_type == TensorProto.FLOAT16 for i in g.initializer if i.name in conv_weights)


def test_yolo_fastest_fp16_matches_fp32_on_ort_cpu(tmp_path, dog):
    network = load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, (320, 320))
    p32 = export_onnx(network, tmp_path)
    p16 = export_onnx_fp16(network, tmp_path)
    assert p16 != p32 and p16.parent == p32.parent
    m16 = onnx.load(str(p16))
    _check_types(m16)
    blob, _ = preprocess([dog], network.input_size)
    ref, out = _run(str(p32), blob), _run(str(p16), blob)
    assert [o.dtype for o in out] == [np.float32] * len(ref)
    assert [o.shape for o in out] == [r.shape for r in ref]
    errs = [_rel_err(r, o) for r, o in zip(ref, out)]
    assert max(errs) < 1e-2, errs
    assert min(errs) > 0, "no fp16 rounding at all: the model is still computing in fp32"
    # cached: a second call returns the same file without rewriting it
    mtime = p16.stat().st_mtime_ns
    assert export_onnx_fp16(network, tmp_path) == p16 and p16.stat().st_mtime_ns == mtime


def test_every_exported_op_converts(tmp_path, dog):
    cfg = tmp_path / "allops.cfg"
    cfg.write_text(ALL_OPS_CFG)
    write_random_weights(load_cfg(cfg), tmp_path / "allops.weights", seed=3)
    network = load_network(cfg, tmp_path / "allops.weights")
    m32 = network_to_onnx(network)
    assert {n.op_type for n in m32.graph.node} == set(DATA_INPUTS)  # the cfg covers every op
    m16 = convert_float_to_float16(m32)
    _check_types(m16)
    # Slice's int64 params and Resize's float32 scales keep their types
    inits = {i.name: i.data_type for i in m16.graph.initializer}
    for n in m16.graph.node:
        if n.op_type == "Slice":
            assert all(inits[x] == TensorProto.INT64 for x in n.input[1:])
        if n.op_type == "Resize":
            assert inits[n.input[2]] == TensorProto.FLOAT
    blob, _ = preprocess([dog], network.input_size)
    errs = [_rel_err(r, o) for r, o in zip(_run(m32, blob), _run(m16, blob))]
    assert max(errs) < 1e-2, errs
    assert m32.graph.node[0].op_type != "Cast", "the input model must not be modified"


def test_unsupported_op_is_an_error():
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Softmax", ["image"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="does not support op\\(s\\) Softmax"):
        convert_float_to_float16(model)


def test_weights_beyond_fp16_range_are_clipped():
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    w = onnx.numpy_helper.from_array(np.array([[1e6, -2.0]], np.float32), "w")
    graph = helper.make_graph([helper.make_node("Mul", ["image", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what this ONNX Runtime reads, as onnx_export does
    m16 = convert_float_to_float16(model)
    out = _run(m16, np.ones((1, 2), np.float32))[0]
    np.testing.assert_array_equal(out, [[np.finfo(np.float16).max, -2.0]])
