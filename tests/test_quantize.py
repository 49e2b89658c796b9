"""INT8: calibration on real frames, the cache that rebuilds the Q/DQ model without frames, errors."""

import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest

from trackpipe.models.darknet import load_network
from trackpipe.models.errors import ModelError
from trackpipe.models.factory import build_detector
from trackpipe.models.quantize import calibrate, int8_model_path, read_calibration_frames
from trackpipe.models.spec import ModelSpec
from tests.assets import COCO, FASTEST, FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, IMAGES, NAMES, ROOT, VIDEO

SPEC = ModelSpec(cfg=FASTEST_XL_CFG, weights=FASTEST_XL_WEIGHTS, names=NAMES, backend="onnx")


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("calib")
    net = load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS)
    calibrate(net, str(VIDEO / "aiguys_video.mp4"), out, frames=64, method="entropy",
              cache_dir=tmp_path_factory.mktemp("cache"))
    return out


def test_int8_keeps_coco_ap50(calib_dir):
    """Calibrated on video frames (not the COCO images it is scored on): AP50 at most 0.015 below fp32."""
    from trackpipe.models.evaluate import evaluate_coco

    ann, images = COCO / "instances_val2017_subset66.json", COCO / "images"
    spec = SPEC.with_(conf_threshold=0.005)
    with build_detector(spec) as det:
        fp32 = evaluate_coco(det, ann, images)["map50"]
    with build_detector(spec.with_(precision="int8", calib=calib_dir)) as det:
        int8 = evaluate_coco(det, ann, images)["map50"]
    assert int8 >= fp32 - 0.015, (fp32, int8)
    assert abs(int8 - fp32) < 0.05, (fp32, int8)


def test_calibration_frames_are_real_and_spread():
    frames = read_calibration_frames(str(VIDEO / "aiguys_video.mp4"), 20)
    assert len(frames) == 20 and frames[0].shape == (360, 640, 3)
    assert not np.array_equal(frames[0], frames[-1])
    imgs = read_calibration_frames(str(COCO / "images"), 10)
    assert len(imgs) == 10 and all(i.ndim == 3 for i in imgs)


def test_int8_detects_dog_bicycle_car(calib_dir):
    with build_detector(SPEC.with_(precision="int8", calib=calib_dir)) as det:
        d = det.detect(cv2.imread(str(IMAGES / "dog.jpg")))
    assert {"dog", "bicycle", "car"} <= {det.names[c] for c in d.class_id}
    model = onnx.load(str(calib_dir / "model.int8.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_cache_rebuilds_identical_model_without_frames(calib_dir, tmp_path):
    """Delete the Q/DQ model; int8_model_path rebuilds it from calib_cache.json alone, bit-identically."""
    first = onnx.load(str(calib_dir / "model.int8.onnx"))
    copy = tmp_path / "calib"
    copy.mkdir()
    for name in ("calib_cache.json", "meta.json"):
        (copy / name).write_bytes((calib_dir / name).read_bytes())
    net = load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS)
    rebuilt = onnx.load(str(int8_model_path(SPEC.with_(precision="int8", calib=copy), net)))
    a = {i.name: onnx.numpy_helper.to_array(i) for i in first.graph.initializer}
    b = {i.name: onnx.numpy_helper.to_array(i) for i in rebuilt.graph.initializer}
    assert a.keys() == b.keys()
    scales = [k for k in a if k.endswith("_scale")]
    assert len(scales) > 50
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


def test_calibration_for_another_model_is_refused(calib_dir):
    net = load_network(FASTEST / "yolo-fastest-1.1.cfg", FASTEST / "yolo-fastest-1.1.weights")
    spec = SPEC.with_(cfg=FASTEST / "yolo-fastest-1.1.cfg", weights=FASTEST / "yolo-fastest-1.1.weights",
                      precision="int8", calib=calib_dir)
    with pytest.raises(ModelError, match="calibrated for another model"):
        int8_model_path(spec, net)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "trackpipe.models", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("source,frames,message", [
    ("video", 8, "--frames 8 is too few"),
    ("missing", 32, "calibration source not found"),
    ("empty-dir", 32, "no images in"),
    ("corrupt", 32, "cannot read video"),
])
def test_calibrate_refuses_bad_sources(tmp_path, source, frames, message):
    paths = {"video": VIDEO / "aiguys_video.mp4", "missing": tmp_path / "nope.mp4", "empty-dir": tmp_path}
    if source == "corrupt":
        paths["corrupt"] = tmp_path / "bad.mp4"
        paths["corrupt"].write_bytes(b"\x00" * 4096)
    r = _cli("calibrate", "--cfg", FASTEST_XL_CFG, "--weights", FASTEST_XL_WEIGHTS, "--calib-source",
             paths[source], "--frames", frames, "--out", tmp_path / "out")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error: ") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_int8_without_calib_is_a_clear_error():
    r = _cli("detect", "--cfg", FASTEST_XL_CFG, "--weights", FASTEST_XL_WEIGHTS, "--image", IMAGES / "dog.jpg",
             "--precision", "int8")
    assert r.returncode == 2 and "int8 needs --calib DIR" in r.stderr


def test_too_few_frames_in_source(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), cv2.imread(str(IMAGES / "dog.jpg")))
    with pytest.raises(ModelError, match="gave 3 readable frames"):
        calibrate(load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS), str(tmp_path), tmp_path / "o", frames=32)
