"""TF-TRT backend.

Here (TensorFlow 2.21, no TensorRT in it, no GPU): the availability decision read from
the installed TensorFlow and its one-line BackendUnavailable through `build_detector`,
and the SavedModel output ordering the backend relies on.

Where TensorFlow <= 2.17 with TensorRT and a GPU are present: fp32/fp16/int8 TF-TRT
conversions of Yolo-Fastest-xl 320 against the onnx backend, the conversion cache and
batching. Elsewhere those tests skip with the reason TF-TRT is unavailable.
"""

import functools
import time

import cv2
import numpy as np
import pytest

from trackpipe.models.backends import tftrt_backend as tftrt
from trackpipe.models.darknet import load_network
from trackpipe.models.errors import BackendUnavailable
from trackpipe.models.factory import build_detector
from trackpipe.models.quantize import calibrate
from tests.assets import COCO, FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, IMAGES
from tests.test_tensorrt_backend import _missed


@functools.cache
def _tf_status():
    """(tensorflow, its TF-TRT status), imported by the first test that asks, not at collection (~0.7 GB)."""
    import tensorflow as tf
    return tf, tftrt.tftrt_status(tf)


def need_tftrt():
    reason = tftrt.unavailable_reason(**_tf_status()[1])
    if reason:
        pytest.skip(f"TF-TRT unavailable: {reason}")


def _rel_err(ref, out):
    return float(np.abs(ref - out).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def network():
    return load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, (320, 320))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tftrt-cache")


@pytest.fixture(scope="module")
def dog():
    return cv2.imread(str(IMAGES / "dog.jpg"))


def test_status_is_read_from_this_tensorflow():
    tf, status = _tf_status()
    assert status["tf_version"] == tf.__version__
    built_with_trt = tf.sysconfig.get_build_info().get("is_tensorrt_build", False)
    assert status["trt_enabled"] == (bool(built_with_trt) and tf.test.is_built_with_gpu_support())
    if not status["trt_enabled"]:
        assert status["linked"] == status["loaded"] == (0, 0, 0)


def test_tensorflow_without_tensorrt_message_through_build_detector(yf_spec, network):
    tf, status = _tf_status()
    if status["trt_enabled"]:
        pytest.skip("this TensorFlow has TensorRT")
    major_minor = ".".join(tf.__version__.split(".")[:2])
    with pytest.raises(BackendUnavailable) as e:
        build_detector(yf_spec.with_(backend="tftrt"), network)
    assert str(e.value) == (f"TF-TRT needs TensorFlow <= 2.17 built with TensorRT; "
                            f"installed TensorFlow {major_minor} has none")


@pytest.mark.parametrize("status,reason", [
    (dict(tf_version="2.21.0", trt_enabled=False),
     "TF-TRT needs TensorFlow <= 2.17 built with TensorRT; installed TensorFlow 2.21 has none"),
    (dict(tf_version="2.16.2", trt_enabled=False),  # a CPU-only wheel of an old enough TensorFlow
     "TF-TRT needs TensorFlow <= 2.17 built with TensorRT; installed TensorFlow 2.16 has none"),
    (dict(tf_version="2.15.1", trt_enabled=True, linked=(8, 6, 1), loaded=(0, 0, 0), gpu_count=1),
     "TensorFlow 2.15.1 was built with TensorRT 8.6.1 but cannot load it (libnvinfer.so.8 not found); "
     "install TensorRT 8.x"),
    (dict(tf_version="2.15.1", trt_enabled=True, linked=(8, 6, 1), loaded=(10, 3, 0), gpu_count=1),
     "TensorFlow 2.15.1 was built with TensorRT 8.6.1 but TensorRT 10.3.0 is loaded; install TensorRT 8.x"),
    (dict(tf_version="2.15.1", trt_enabled=True, linked=(8, 6, 1), loaded=(8, 6, 1), gpu_count=0),
     "no CUDA GPU visible to TensorFlow 2.15.1"),
    (dict(tf_version="2.15.1", trt_enabled=True, linked=(8, 6, 1), loaded=(8, 6, 1), gpu_count=1), None),
])
def test_unavailable_reason(status, reason):
    assert tftrt.unavailable_reason(**status) == reason


def test_signature_heads_keep_model_output_order():
    outputs = {f"output_{i}": np.full((2, 3, 4, 5), i, np.float32) for i in (10, 2, 0, 1, 9)}
    heads = tftrt.signature_heads(outputs)
    assert [int(h[0, 0, 0, 0]) for h in heads] == [0, 1, 2, 9, 10]
    assert all(h.shape == (2, 5, 3, 4) and h.flags.c_contiguous for h in heads)


# --- with TF-TRT and a GPU -------------------------------------------------------------------

_built = {}


def _detector(spec, network, precision):
    if precision not in _built:
        t0 = time.perf_counter()
        _built[precision] = (build_detector(spec.with_(backend="tftrt", precision=precision), network),
                             time.perf_counter() - t0)
    return _built[precision]


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_tftrt_heads_match_onnx(yf_spec, network, cache, dog, precision, tol):
    need_tftrt()
    spec = yf_spec.with_(cache_dir=cache)
    det, _ = _detector(spec, network, precision)
    assert det.name == "tftrt" and det.built and det.saved_model_dir.parent == cache / "tftrt"
    ref = build_detector(spec, network)
    blob, _ = ref.preprocess([dog])
    errs = [_rel_err(w, g) for w, g in zip(ref.infer(blob), det.infer(blob))]
    assert max(errs) < tol, errs
    assert set(det.detect(dog).class_id.tolist()) == set(ref.detect(dog).class_id.tolist())


def test_tftrt_int8_calibrated_on_real_frames(yf_spec, network, cache, dog, tmp_path_factory):
    need_tftrt()
    calib = calibrate(network, str(COCO / "images"), tmp_path_factory.mktemp("calib"), frames=32, method="minmax",
                      cache_dir=cache)
    spec = yf_spec.with_(cache_dir=cache, calib=calib)
    det, _ = _detector(spec, network, "int8")
    assert det.built
    assert _missed(build_detector(spec, network).detect(dog), det.detect(dog)) == []


def test_tftrt_cache_hit_and_batch(yf_spec, network, cache, dog):
    need_tftrt()
    spec = yf_spec.with_(cache_dir=cache)
    first, first_seconds = _detector(spec, network, "fp32")
    t0 = time.perf_counter()
    second = build_detector(spec.with_(backend="tftrt", precision="fp32"), network)
    assert not second.built and second.saved_model_dir == first.saved_model_dir
    assert time.perf_counter() - t0 < first_seconds
    frames = [cv2.imread(str(IMAGES / n)) for n in ("dog.jpg", "horses.jpg", "person.jpg", "giraffe.jpg")]
    blob, _ = second.preprocess(frames)
    batch = second.infer(blob)
    for i in range(4):
        for a, b in zip(second.infer(blob[i:i + 1]), batch):
            assert _rel_err(a[0], b[i]) < 1e-3
