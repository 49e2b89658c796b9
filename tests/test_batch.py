"""Detector.detect_batch: N frames (of different sizes) in one call give what N detect() calls give,
on every CPU backend."""

import importlib.util

import cv2
import numpy as np
import pytest

from trackpipe.models.darknet import load_network
from trackpipe.models.factory import build_detector
from trackpipe.models.quantize import read_calibration_frames
from trackpipe.models.spec import ModelSpec
from tests.assets import FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, IMAGES, NAMES, VIDEO

BACKENDS = ["onnx", "openvino", "opencv", "tf"]


@pytest.fixture(scope="module")
def frames():
    video = read_calibration_frames(str(VIDEO / "aiguys_video.mp4"), 3)  # 640x360
    return [cv2.imread(str(IMAGES / "dog.jpg"))] + video + [video[0][:, ::-1].copy()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_equals_one_by_one(backend, frames):
    if backend == "tf" and importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow (the [tf] extra) is not installed")
    spec = ModelSpec(cfg=FASTEST_XL_CFG, weights=FASTEST_XL_WEIGHTS, names=NAMES, backend=backend)
    with build_detector(spec, load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS)) as det:
        batch = det.detect_batch(frames)
        single = [det.detect(f) for f in frames]
        assert det.detect_batch([]) == []
        two = det.detect_batch(frames[1:3])  # another batch size after the first
    assert len(batch) == len(frames) and sum(len(d) for d in batch) > 10
    for b, s in zip(batch, single):
        assert len(b) == len(s)
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=0.05)
        np.testing.assert_allclose(b.score, s.score, atol=1e-4)
        assert b.class_id.tolist() == s.class_id.tolist()
    for b, s in zip(two, single[1:3]):
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=0.05)
