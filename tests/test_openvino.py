"""OpenVINO backend: bf16 and int8 keep Yolo-Fastest's COCO AP50 and its detections on dog.jpg;
the mish rewrite; one clear line for each precision that cannot run. (fp32 parity with OpenCV:
tests/test_parity.py.)"""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from trackpipe.models.cpu import cpu_info
from trackpipe.models.darknet import load_cfg, load_network, write_random_weights
from trackpipe.models.factory import build_detector
from trackpipe.models.spec import ModelSpec
from tests.assets import CFG, COCO, FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, IMAGES, NAMES, ROOT

pytest.importorskip("openvino")
SPEC = ModelSpec(cfg=FASTEST_XL_CFG, weights=FASTEST_XL_WEIGHTS, names=NAMES, backend="openvino")
needs_bf16 = pytest.mark.skipif(not cpu_info().has_bf16, reason="this CPU has neither AVX512-BF16 nor AMX")


@pytest.fixture(scope="module")
def calib_dir(yf_calibration):
    return yf_calibration  # the session's one calibration (tests/conftest.py), shared with test_quantize


@pytest.fixture(scope="module")
def fp32_ap50():
    from trackpipe.models.evaluate import evaluate_coco

    with build_detector(SPEC.with_(conf_threshold=0.005)) as det:
        return evaluate_coco(det, COCO / "instances_val2017_subset66.json", COCO / "images")["map50"]


def _ap50(spec):
    from trackpipe.models.evaluate import evaluate_coco

    with build_detector(spec.with_(conf_threshold=0.005)) as det:
        return evaluate_coco(det, COCO / "instances_val2017_subset66.json", COCO / "images")["map50"]


def _dog_classes(spec):
    with build_detector(spec) as det:
        d = det.detect(cv2.imread(str(IMAGES / "dog.jpg")))
        return {det.names[c] for c in d.class_id}, det.describe()


@needs_bf16
def test_bf16_keeps_coco_ap50_and_dog(fp32_ap50):
    ap = _ap50(SPEC.with_(precision="bf16"))
    assert abs(ap - fp32_ap50) <= 0.01, (fp32_ap50, ap)
    found, name = _dog_classes(SPEC.with_(precision="bf16"))
    assert {"dog", "bicycle", "car"} <= found and name == "openvino-bf16"


@pytest.mark.parametrize("method", ["nncf", "qdq"])
def test_int8_from_the_calibration_keeps_coco_ap50(calib_dir, fp32_ap50, method):
    if method == "nncf":
        pytest.importorskip("nncf")
    spec = SPEC.with_(precision="int8", calib=calib_dir, extra={"int8_method": method})
    ap = _ap50(spec)
    assert ap >= fp32_ap50 - 0.015 and abs(ap - fp32_ap50) < 0.05, (fp32_ap50, ap)
    found, name = _dog_classes(spec)
    assert {"dog", "bicycle", "car"} <= found and name == f"openvino-int8 ({method})"


_CAPPED_AP50 = """
import json, sys
from pathlib import Path
from trackpipe.models.cpu import cpu_info
from trackpipe.models.evaluate import evaluate_coco
from trackpipe.models.factory import build_detector
from trackpipe.models.spec import ModelSpec
from tests.assets import COCO, FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, NAMES
calib, cache, method = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
spec = ModelSpec(cfg=FASTEST_XL_CFG, weights=FASTEST_XL_WEIGHTS, names=NAMES, backend="openvino", precision="int8",
                 calib=calib, cache_dir=cache, conf_threshold=0.005, extra={"int8_method": method})
with build_detector(spec) as det:
    ap = evaluate_coco(det, COCO / "instances_val2017_subset66.json", COCO / "images")["map50"]
print(json.dumps({"ap50": ap, "bits": cpu_info().int8_weight_bits, "ran": det.describe()}))
"""


@pytest.mark.parametrize("method", ["nncf", "qdq"])
def test_int8_keeps_coco_ap50_on_a_cpu_without_vnni(calib_dir, fp32_ap50, method, tmp_path):
    """ONEDNN_MAX_CPU_ISA=AVX2: OpenVINO runs oneDNN's AVX2 int8 kernels (u8 x s8 pairs summed in
    saturating int16), as on a CPU without VNNI; the model it gets has 7-bit weights and keeps
    AP50 (8-bit weights lose 0.04-0.06 there)."""
    if method == "nncf":
        pytest.importorskip("nncf")
    r = subprocess.run([sys.executable, "-c", _CAPPED_AP50, str(calib_dir), str(tmp_path), method], cwd=ROOT,
                       capture_output=True, text=True, timeout=240, env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["bits"] == 7 and out["ran"] == f"openvino-int8 ({method})"
    assert out["ap50"] >= fp32_ap50 - 0.015 and abs(out["ap50"] - fp32_ap50) < 0.05, (fp32_ap50, out)


def test_mish_op_rewrite_keeps_yolov4_heads(tmp_path):
    """yolov4 (mish) as OpenVINO reads it: the Mish op replaces our decomposed form; heads within 1e-4
    of ONNX Runtime on the original export, for a batch of 2."""
    import onnx

    from trackpipe.models.backends.openvino_backend import openvino_onnx
    from trackpipe.models.onnx_export import MISH_INNER, export_onnx

    w = tmp_path / "v4.weights"
    write_random_weights(load_cfg(CFG / "yolov4.cfg"), w, seed=2)
    net = load_network(CFG / "yolov4.cfg", w, (320, 320))
    src = export_onnx(net, tmp_path)
    model = onnx.load(str(openvino_onnx(src)), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Mish") == 72 and not any(MISH_INNER in n.name for n in model.graph.node)
    spec = ModelSpec(cfg=CFG / "yolov4.cfg", weights=w, size=(320, 320), cache_dir=tmp_path)
    img = cv2.imread(str(IMAGES / "dog.jpg"))
    with build_detector(spec.with_(backend="onnx"), net) as ref, \
            build_detector(spec.with_(backend="openvino"), net) as ov:
        blob, _ = ref.preprocess([img, img[:, ::-1].copy()])
        for a, b in zip(ref.infer(blob), ov.infer(blob)):
            assert a.shape == b.shape and a.shape[0] == 2
            assert np.abs(a - b).max() / np.abs(a).max() < 1e-4


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "trackpipe.models", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def _one_line(r, pattern):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert pattern in lines[0], lines[0]


MODEL = ["--cfg", FASTEST_XL_CFG, "--weights", FASTEST_XL_WEIGHTS, "--image", IMAGES / "dog.jpg"]


def test_bf16_on_a_cpu_without_it_is_one_line():
    """ONEDNN_MAX_CPU_ISA=AVX512_CORE: what a CPU without AVX512-BF16/AMX looks like (to us and to OpenVINO)."""
    for backend in ("openvino", "auto"):
        r = _cli("detect", *MODEL, "--backend", backend, "--precision", "bf16",
                 env={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})
        _one_line(r, "bf16 needs a CPU with AVX512-BF16 or AMX")


def test_int8_without_calibration_is_one_line():
    for backend in ("openvino", "auto"):
        _one_line(_cli("detect", *MODEL, "--backend", backend, "--precision", "int8"), "int8 needs --calib DIR")


def test_openvino_not_installed_is_one_line():
    code = ("import sys; sys.modules['openvino'] = None; from trackpipe.models.__main__ import main; "
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "detect", *map(str, MODEL), "--backend", "openvino"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    _one_line(r, "the openvino backend needs the openvino package, which is not installed")


def test_compiled_models_are_cached_per_cpu_and_a_damaged_file_is_compiled_again(tmp_path, monkeypatch):
    """A second detector of the same model loads OpenVINO's compiled file instead of compiling;
    a damaged file gives the same boxes (compiled again); another ISA cap uses another folder."""
    from trackpipe.models.backends.openvino_backend import compiled_cache_dir
    spec = ModelSpec(cfg=FASTEST_XL_CFG, weights=FASTEST_XL_WEIGHTS, size=(320, 320), backend="openvino",
                     precision="fp32", cache_dir=tmp_path, threads=1)
    img = cv2.imread(str(IMAGES / "dog.jpg"))
    with build_detector(spec) as det:
        first = det.detect(img)
    blobs = list(compiled_cache_dir(tmp_path).glob("*.blob"))
    assert len(blobs) == 1 and blobs[0].stat().st_size > 1 << 20
    for damage in (b"", b"\0" * 4096):
        blobs[0].chmod(0o600)
        blobs[0].write_bytes(damage)
        with build_detector(spec) as det:
            again = det.detect(img)
        np.testing.assert_allclose(again.xyxy, first.xyxy, atol=1e-3)
        assert len(first.xyxy) > 0
        assert blobs[0].stat().st_size > 1 << 20          # rewritten whole
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert compiled_cache_dir(tmp_path) != blobs[0].parent
