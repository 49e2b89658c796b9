"""`models.convert.convert`: the written artefacts load in their own runtime and compute
the onnx backend's heads on dog.jpg; formats this machine cannot build say why."""

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from trackpipe.models.backends import tensorrt_backend as trtb
from trackpipe.models.backends.tftrt_backend import load_serving_fn, signature_heads, tftrt_status, unavailable_reason
from trackpipe.models.convert import convert
from trackpipe.models.darknet import load_network
from trackpipe.models.errors import BackendUnavailable, ModelError
from trackpipe.models.factory import build_detector
from trackpipe.models.spec import ModelSpec
from tests.assets import FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, IMAGES


def _rel_err(ref, out):
    return float(np.abs(ref - out).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def network():
    return load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, (320, 320))


@pytest.fixture(scope="module")
def reference(network, tmp_path_factory):
    """(blob of dog.jpg, onnx backend heads)."""
    spec = ModelSpec(cfg=FASTEST_XL_CFG, weights=FASTEST_XL_WEIGHTS, size=(320, 320), backend="onnx",
                     cache_dir=tmp_path_factory.mktemp("ref-cache"))
    det = build_detector(spec, network)
    blob, _ = det.preprocess([cv2.imread(str(IMAGES / "dog.jpg"))])
    return blob, det.infer(blob)


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_onnx(yf_spec, network, reference, tmp_path, precision, tol):
    out = convert(yf_spec.with_(precision=precision, cache_dir=tmp_path / "cache"), network, "onnx",
                  tmp_path / "out" / "yf.onnx")
    assert out == tmp_path / "out" / "yf.onnx"
    blob, want = reference
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": blob})
    errs = [_rel_err(w, g) for w, g in zip(want, got)]
    assert max(errs) < tol, errs


def test_savedmodel(yf_spec, network, reference, tmp_path):
    import tensorflow as tf

    out = convert(yf_spec, network, "savedmodel", tmp_path / "sm")
    _, fn, input_name = load_serving_fn(tf, out)
    assert input_name == "image"
    blob, want = reference
    got = signature_heads({k: v.numpy() for k, v in fn(image=tf.constant(blob.transpose(0, 2, 3, 1))).items()})
    assert [g.shape for g in got] == [w.shape for w in want]
    errs = [_rel_err(w, g) for w, g in zip(want, got)]
    assert max(errs) < 1e-4, errs
    with pytest.raises(ModelError, match="already exists"):
        convert(yf_spec, network, "savedmodel", out)


def test_savedmodel_is_fp32_only(yf_spec, network, tmp_path):
    with pytest.raises(ModelError, match="a SavedModel is fp32 only; for fp16 use --format tftrt, tensorrt or onnx"):
        convert(yf_spec.with_(precision="fp16"), network, "savedmodel", tmp_path / "sm")


def test_unknown_format(yf_spec, network, tmp_path):
    with pytest.raises(ModelError, match="format must be one of onnx, savedmodel, tftrt, tensorrt; got 'plan'"):
        convert(yf_spec, network, "plan", tmp_path / "x")


def test_tftrt_says_why_it_cannot_run_here(yf_spec, network, tmp_path):
    import tensorflow as tf

    reason = unavailable_reason(**tftrt_status(tf))
    if reason is None:
        pytest.skip("TF-TRT is available here")
    with pytest.raises(BackendUnavailable) as e:
        convert(yf_spec, network, "tftrt", tmp_path / "tftrt")
    assert str(e.value) == reason
    assert not (tmp_path / "tftrt").exists()


def test_tensorrt_says_why_it_cannot_run_here(yf_spec, network, tmp_path):
    try:
        trtb.import_tensorrt()
        trtb.cuda_gpu_name(trtb.import_cudart())
        pytest.skip("TensorRT and a GPU are available here")
    except BackendUnavailable as e:
        reason = str(e)
    with pytest.raises(BackendUnavailable) as e:
        convert(yf_spec, network, "tensorrt", tmp_path / "yf.engine")
    assert str(e.value) == reason
    assert not (tmp_path / "yf.engine").exists()
