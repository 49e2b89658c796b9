"""TensorRT backend.

Here (no TensorRT, no GPU): the engine cache key, version and device checks, the
BackendUnavailable messages through `build_detector`, `auto` falling through to onnx,
and the symmetric INT8 Q/DQ model TensorRT builds from (run on ONNX Runtime CPU).

On an NVIDIA machine (`pip install -e ".[tensorrt]"`): fp32/fp16/int8 engines for
Yolo-Fastest-xl 320 against the onnx backend, the engine cache, dynamic batch. Those
tests skip with "TensorRT not installed" or "no CUDA GPU visible" elsewhere.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from trackpipe.models import factory
from trackpipe.models.backends import tensorrt_backend as trtb
from trackpipe.models.darknet import load_network
from trackpipe.models.errors import BackendUnavailable, ModelError
from trackpipe.models.factory import build_detector
from trackpipe.models.onnx_export import default_cache_dir
from trackpipe.models.postprocess import box_iou
from trackpipe.models.quantize import calibrate, head_and_stem_nodes
from tests.assets import COCO, FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, IMAGES

KEY_ARGS = dict(model_key="a29b1b0e3a48d189", size=(320, 320), precision="fp16",
                gpu_name="NVIDIA H100 80GB HBM3 sm_90", trt_version="10.13.0.35", source_id="fp16-e1-c1", max_batch=8)


def _trt_skip_reason():
    """None where TensorRT and a CUDA GPU are usable, else the reason to skip."""
    try:
        trtb.import_tensorrt()
    except BackendUnavailable:
        return "TensorRT not installed"
    try:
        trtb.cuda_gpu_name(trtb.import_cudart())
    except BackendUnavailable:
        return "no CUDA GPU visible"
    return None


TRT_SKIP = _trt_skip_reason()


def need_trt_gpu():
    if TRT_SKIP:
        pytest.skip(TRT_SKIP)


def _rel_err(ref, out):
    return float(np.abs(ref - out).max() / np.abs(ref).max())


def _missed(ref, out, iou=0.5):
    """fp32 detections with no INT8 twin (same class, IoU >= iou). INT8 may add a confusion
    (with the default cross-layer-equalized calibration both INT8 models see a cat on the dog),
    but must find every object fp32 finds."""
    if len(out) == 0:
        return [int(c) for c in ref.class_id]
    ious = box_iou(ref.xyxy, out.xyxy)
    return [int(c) for i, c in enumerate(ref.class_id) if not ((out.class_id == c) & (ious[i] >= iou)).any()]


@pytest.fixture(scope="module")
def network():
    return load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, (320, 320))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("trt-cache")


@pytest.fixture(scope="module")
def calib_dir(network, cache, tmp_path_factory):
    """Real calibration: 32 COCO val2017 images, min-max ranges (the CPU path of quantize.py)."""
    return calibrate(network, str(COCO / "images"), tmp_path_factory.mktemp("calib"), frames=32, method="minmax",
                     cache_dir=cache)


@pytest.fixture(scope="module")
def dog():
    return cv2.imread(str(IMAGES / "dog.jpg"))


# --- engine cache key ------------------------------------------------------------------------

def test_engine_cache_key_is_stable_across_processes():
    key = trtb.engine_cache_key(**KEY_ARGS)
    assert key == trtb.engine_cache_key(**KEY_ARGS) and len(key) == 20
    code = ("from trackpipe.models.backends.tensorrt_backend import engine_cache_key as k;"
            f"print(k(**{KEY_ARGS!r}))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, cwd=str(Path(__file__).parents[1]))
        assert out.stdout.strip() == key


@pytest.mark.parametrize("field,value", [
    ("model_key", "b29b1b0e3a48d189"), ("size", (416, 416)), ("size", (320, 416)), ("precision", "int8"),
    ("precision", "fp32"), ("gpu_name", "NVIDIA A100-SXM4-80GB sm_80"), ("gpu_name", "NVIDIA H100 80GB HBM3 sm_89"),
    ("trt_version", "10.13.2.6"), ("trt_version", "11.0.0.1"), ("source_id", "fp16-e1-c2"), ("max_batch", 16)])
def test_engine_cache_key_changes_with_each_field(field, value):
    assert trtb.engine_cache_key(**{**KEY_ARGS, field: value}) != trtb.engine_cache_key(**KEY_ARGS)


def test_engine_cache_key_rejects_unknown_precision():
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, int8"):
        trtb.engine_cache_key(**{**KEY_ARGS, "precision": "bf16"})


def test_engine_cache_path_is_under_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TRACKPIPE_CACHE", str(tmp_path))
    key = trtb.engine_cache_key(**KEY_ARGS)
    path = trtb.engine_cache_path(key, "yolo-fastest-1.1-xl", (320, 320), "fp16")
    assert default_cache_dir() == tmp_path
    assert path == tmp_path / "engines" / f"yolo-fastest-1.1-xl-320x320-fp16-{key}.engine"
    other = trtb.engine_cache_path(key, "m", (320, 320), "fp16", tmp_path / "other")
    assert other.parent == tmp_path / "other" / "engines"


# --- versions, flags, devices ----------------------------------------------------------------

@pytest.mark.parametrize("version,major", [("10.0.1.6", 10), ("10.13.0.35", 10), ("11.0.0", 11), ("11.4.1.2", 11)])
def test_supported_tensorrt_versions(version, major):
    assert trtb.trt_major(version) == major


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0.1", "12.0.0"])
def test_unsupported_tensorrt_version_message(version):
    with pytest.raises(BackendUnavailable) as e:
        trtb.trt_major(version)
    assert str(e.value) == (f"TensorRT {version} is not supported; trackpipe supports TensorRT 10 and 11 "
                            f"(pip install 'trackpipe[tensorrt]')")


def test_network_creation_flags_per_major():
    assert trtb.creation_flags(10, 1) == 2  # STRONGLY_TYPED opted in
    assert trtb.creation_flags(11, 1) == 0  # always strongly typed; the flag is deprecated


def test_missing_tensorrt_message_through_build_detector(yf_spec, network):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailable) as e:
        build_detector(yf_spec.with_(backend="tensorrt"), network)
    assert str(e.value) == "TensorRT is not installed (No module named 'tensorrt'); pip install 'trackpipe[tensorrt]'"


def test_no_gpu_probe_is_real():
    try:
        cudart = trtb.import_cudart()
    except BackendUnavailable:
        pytest.skip("cuda-python not installed")
    err, count = cudart.cudaGetDeviceCount()
    if err == cudart.cudaError_t.cudaSuccess and count > 0:
        pytest.skip("a CUDA GPU is visible here")
    with pytest.raises(BackendUnavailable) as e:
        trtb.cuda_gpu_name(cudart)
    assert str(e.value).startswith("no CUDA GPU visible (")
    err, driver = cudart.cudaDriverGetVersion()
    if err == cudart.cudaError_t.cudaSuccess and driver == 0:  # this machine: no NVIDIA driver at all
        assert str(e.value) == "no CUDA GPU visible (cudaErrorInsufficientDriver: no NVIDIA driver is loaded)"


@pytest.mark.parametrize("args,why", [
    (("cudaErrorInsufficientDriver", 0, 13040), "no NVIDIA driver is loaded"),
    (("cudaErrorInsufficientDriver", 12040, 13040),
     "the driver supports CUDA 12.4 but this cuda-python needs CUDA 13.4: pip install 'cuda-python==12.*' "
     "or update the driver"),
    (("cudaErrorNoDevice", 12040, 12040, ""), "CUDA_VISIBLE_DEVICES='' hides every GPU"),
    (("cudaErrorNoDevice", 12040, 12040, None), "no NVIDIA GPU found"),
])
def test_no_gpu_messages(args, why):
    assert trtb.describe_no_gpu(*args) == f"no CUDA GPU visible ({args[0]}: {why})"


def test_auto_tries_tensorrt_first_and_falls_through(yf_spec, network, tmp_path):
    assert factory._BACKENDS["tensorrt"] == ("trackpipe.models.backends.tensorrt_backend", "TensorRTDetector"), \
        "register the backend in models/factory.py"
    det = build_detector(yf_spec.with_(backend="auto", precision="fp32", cache_dir=tmp_path), network)  # own cache
    assert det.name in (("onnx", "openvino") if TRT_SKIP else ("tensorrt",))  # a GPU first, else the CPU choice
    det.close()


# --- the INT8 model TensorRT builds from (runs here, on ONNX Runtime CPU) ----------------------

def test_tensorrt_qdq_model_is_symmetric_int8_and_finds_what_fp32_finds(yf_spec, network, cache, calib_dir, dog):
    spec = yf_spec.with_(precision="int8", calib=calib_dir, cache_dir=cache)
    path, digest = trtb.tensorrt_qdq_model_path(spec, network)
    assert trtb.tensorrt_qdq_model_path(spec, network) == (path, digest)  # cached
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 100
    for n in qdq:  # TensorRT: signed INT8, zero point 0, nothing else (no int32 bias DQ)
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]].dtype == np.int8, n.name
    quantized_convs = {n.name for n in m.graph.node if n.op_type == "Conv"
                       and any(p.op_type == "DequantizeLinear" and p.output[0] == n.input[1] for p in qdq)}
    assert quantized_convs and not quantized_convs & set(head_and_stem_nodes(network))
    ref = build_detector(spec.with_(precision="fp32"), network)
    blob, boxes = ref.preprocess([dog])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    heads = sess.run(None, {"image": blob})
    assert [h.shape for h in heads] == [h.shape for h in ref.infer(blob)]
    got, want = ref.postprocess(heads, boxes)[0], ref.detect(dog)
    assert set(want.class_id.tolist()) == {1, 2, 7, 16}  # bicycle, car, truck, dog
    assert _missed(want, got) == []


def test_tensorrt_int8_without_calibration_is_an_error(yf_spec, network, cache):
    with pytest.raises(ModelError, match="int8 needs --calib DIR"):
        trtb.tensorrt_qdq_model_path(yf_spec.with_(precision="int8", cache_dir=cache), network)


# --- on an NVIDIA GPU with TensorRT ---------------------------------------------------------

_built = {}


def _detector(spec, network, precision):
    """One detector per precision for the module, built into a fresh cache (timed)."""
    if precision not in _built:
        t0 = time.perf_counter()
        det = build_detector(spec.with_(backend="tensorrt", precision=precision), network)
        _built[precision] = (det, time.perf_counter() - t0)
    return _built[precision]


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_engine_heads_match_onnx(yf_spec, network, cache, dog, precision, tol):
    need_trt_gpu()
    spec = yf_spec.with_(cache_dir=cache)
    det, _ = _detector(spec, network, precision)
    assert det.name == "tensorrt" and det.built and det.engine_path.parent == cache / "engines"
    assert f"-{precision}-" in det.engine_path.name
    ref = build_detector(spec, network)
    blob, _ = ref.preprocess([dog])
    want, got = ref.infer(blob), det.infer(blob)
    assert [g.shape for g in got] == [w.shape for w in want] and all(g.dtype == np.float32 for g in got)
    errs = [_rel_err(w, g) for w, g in zip(want, got)]
    assert max(errs) < tol, errs
    assert set(det.detect(dog).class_id.tolist()) == set(ref.detect(dog).class_id.tolist())


def test_int8_engine_finds_what_fp32_finds(yf_spec, network, cache, calib_dir, dog):
    need_trt_gpu()
    spec = yf_spec.with_(cache_dir=cache, calib=calib_dir)
    det, _ = _detector(spec, network, "int8")
    assert det.built and "-int8-" in det.engine_path.name
    ref = build_detector(spec.with_(precision="fp32"), network)
    assert _missed(ref.detect(dog), det.detect(dog)) == []


def test_second_build_is_a_cache_hit(yf_spec, network, cache, dog):
    need_trt_gpu()
    spec = yf_spec.with_(cache_dir=cache)
    first, first_seconds = _detector(spec, network, "fp32")
    engines = sorted((cache / "engines").glob("*.engine"))
    mtime = first.engine_path.stat().st_mtime_ns
    t0 = time.perf_counter()
    second = build_detector(spec.with_(backend="tensorrt", precision="fp32"), network)
    seconds = time.perf_counter() - t0
    assert not second.built and second.engine_path == first.engine_path
    assert first.engine_path.stat().st_mtime_ns == mtime and sorted((cache / "engines").glob("*.engine")) == engines
    assert seconds < first_seconds / 3, (seconds, first_seconds)
    blob, _ = first.preprocess([dog])
    for a, b in zip(first.infer(blob), second.infer(blob)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max())
    second.close()


def test_dynamic_batch_1_and_4(yf_spec, network, cache):
    need_trt_gpu()
    spec = yf_spec.with_(cache_dir=cache)
    det, _ = _detector(spec, network, "fp32")
    ref = build_detector(spec, network)
    frames = [cv2.imread(str(IMAGES / n)) for n in ("dog.jpg", "horses.jpg", "person.jpg", "giraffe.jpg")]
    blob, _ = det.preprocess(frames)
    batch4 = det.infer(blob)
    assert [h.shape[0] for h in batch4] == [4, 4]
    for i in range(4):
        one = det.infer(blob[i:i + 1])
        assert [h.shape[0] for h in one] == [1, 1]
        for a, b, r in zip(one, batch4, ref.infer(blob[i:i + 1])):
            assert _rel_err(a[0], b[i]) < 1e-4
            assert _rel_err(r[0], b[i]) < 1e-3
    big = np.concatenate([blob, blob, blob[:2]])  # 10 > max batch 8: runs in chunks
    for a, b in zip(det.infer(big), batch4):
        assert a.shape[0] == 10 and _rel_err(b, a[4:8]) < 1e-4
    assert [len(d) > 0 for d in det.detect_batch(frames)] == [True] * 4


def test_convert_writes_the_cached_engine(yf_spec, network, cache, tmp_path):
    need_trt_gpu()
    from trackpipe.models.convert import convert

    spec = yf_spec.with_(cache_dir=cache, precision="fp32")
    det, _ = _detector(spec, network, "fp32")
    out = convert(spec, network, "tensorrt", tmp_path / "yf.engine")
    assert out.read_bytes() == det.engine_path.read_bytes()
