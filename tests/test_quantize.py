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
from trackpipe.models.cpu import cpu_info
from trackpipe.models.quantize import calibrate, int8_model_path, qdq_name, read_calibration_frames
from trackpipe.models.spec import ModelSpec
from tests.assets import COCO, FASTEST, FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, IMAGES, NAMES, ROOT, VIDEO

SPEC = ModelSpec(cfg=FASTEST_XL_CFG, weights=FASTEST_XL_WEIGHTS, names=NAMES, backend="onnx")


@pytest.fixture(scope="module")
def calib_dir(yf_calibration):
    return yf_calibration  # the session's one calibration (tests/conftest.py), shared with test_openvino


@pytest.fixture(scope="module")
def fp32_ap50():
    from trackpipe.models.evaluate import evaluate_coco

    with build_detector(SPEC.with_(conf_threshold=0.005)) as det:
        return evaluate_coco(det, COCO / "instances_val2017_subset66.json", COCO / "images")["map50"]


@pytest.mark.parametrize("bits", [7, 8])
def test_int8_keeps_coco_ap50(calib_dir, fp32_ap50, bits):
    """Calibrated on video frames (not the COCO images it is scored on): AP50 at most 0.015 below fp32.
    7-bit weights (what CPUs without VNNI run) cannot overflow a u8 x s8 pair sum
    (test_int8_pair_sums_fit_int16), so their result is the same on every x86 CPU and is measured
    on any; 8-bit weights only where they run, CPUs with VNNI."""
    from trackpipe.models.evaluate import evaluate_coco

    if bits == 8 and cpu_info().int8_saturates:
        pytest.skip(f"8-bit weights are not used on this CPU ({cpu_info().describe()}): its int8 kernels saturate")
    spec = SPEC.with_(conf_threshold=0.005, precision="int8", calib=calib_dir, extra={"int8_weight_bits": bits})
    with build_detector(spec) as det:
        int8 = evaluate_coco(det, COCO / "instances_val2017_subset66.json", COCO / "images")["map50"]
    assert int8 >= fp32_ap50 - 0.015, (fp32_ap50, int8)
    assert abs(int8 - fp32_ap50) < 0.05, (fp32_ap50, int8)


def test_int8_pair_sums_fit_int16(calib_dir):
    """The arithmetic of a CPU without VNNI (u8 x s8 products summed in pairs into int16), done
    exactly on real activations of real frames: the 8-bit model overflows it in many
    convolutions (why 8 bits are wrong there), the 7-bit model never does."""
    from trackpipe.models.int8check import INT16_MAX, pair_overflow
    from trackpipe.models.preprocess import preprocess

    net = load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS)
    blobs = [preprocess([f], net.input_size, False)[0] for f in read_calibration_frames(str(COCO / "images"), 3)]
    spec = SPEC.with_(precision="int8", calib=calib_dir)
    full = pair_overflow(int8_model_path(spec, net, 8), blobs)
    reduced = pair_overflow(int8_model_path(spec, net, 7), blobs)
    assert len(full) == len(reduced) > 20 and all(r.pairs > 0 for r in reduced)
    assert sum(r.overflows > 0 for r in full) >= 5 and max(r.max_abs for r in full) > INT16_MAX
    assert all(r.weight_max <= 64 and r.overflows == 0 and r.max_abs <= INT16_MAX for r in reduced)


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
    model = onnx.load(str(calib_dir / qdq_name(cpu_info().int8_weight_bits)))
    ops = {n.op_type for n in model.graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_cache_rebuilds_identical_model_without_frames(calib_dir, tmp_path):
    """Delete the Q/DQ model; int8_model_path rebuilds it from calib_cache.json alone, bit-identically."""
    first = onnx.load(str(calib_dir / qdq_name(cpu_info().int8_weight_bits)))
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
