"""ONNX files of other families (`--model-file`) on every CPU path: OpenVINO (fp32; bf16 where the
CPU has it) with the same pre-processing and decoding as ONNX Runtime, INT8 calibrated on real
frames (ONNX Runtime Q/DQ, OpenVINO Q/DQ and NNCF), and `auto` choosing among them with its
accuracy check, speed race and cache.

The fixtures (tests/fixtures/onnx) have random weights: their int8 boxes may well disagree with
fp32 beyond auto's bar, and auto then keeps fp32. What is tested is that every path builds, runs,
is cached, and that auto records what it measured and follows its rule.
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import VIDEO_360
from test_onnx_families import DOG, FIX, PARITY, REFS, _image, _spec, _unmatched

pytest.importorskip("openvino")

# ONNX Runtime's own graph optimizations move yolo11t's scores by 2e-4 (its attention block on random
# weights; `test_yolo11t_scores_move_within_onnx_runtime_itself`): two fp32 runtimes cannot agree closer
SCORE_TOL = {"yolo11t": 5e-4}


def _ort_and_ov(name: str, **kw):
    from trackpipe.models.factory import build_detector

    spec = _spec(name, **kw).resolve()
    return (build_detector(spec.with_(backend="onnx", precision="fp32")),
            build_detector(spec.with_(backend="openvino", precision="fp32")))


def _above(dets, conf: float):
    keep = dets.score >= conf
    return dets.xyxy[keep], dets.score[keep], dets.class_id[keep]


@pytest.mark.parametrize("name", PARITY)
def test_openvino_fp32_matches_onnx_runtime(name):
    """The same file on OpenVINO fp32: boxes within 1 px, same classes, scores within 1e-4 of ONNX
    Runtime's on every reference image (a detection within the tolerance of the threshold may be on
    one side only)."""
    ort_det, ov_det = _ort_and_ov(name)
    assert (ort_det.describe(), ov_det.describe()) == ("onnx-fp32", "openvino-fp32")
    tol = SCORE_TOL.get(name, 1e-4)
    conf = REFS["conf"] + tol
    compared = 0
    for ref in REFS["models"][name]:
        frame = _image(ref["image"])
        a, b = ort_det.detect(frame), ov_det.detect(frame)
        assert not _unmatched(_above(a, conf), b, 1.0, tol), ref["image"]
        assert not _unmatched(_above(b, conf), a, 1.0, tol), ref["image"]
        compared += len(a)
    assert compared >= 5


def test_yolo11t_scores_move_within_onnx_runtime_itself():
    """Why yolo11t's score tolerance is wider: ONNX Runtime with and without its graph optimizations
    differs by more than 1e-4 in that fixture's class scores."""
    import onnxruntime as ort

    from trackpipe.models.factory import build_detector

    det = build_detector(_spec("yolo11t", backend="onnx", precision="fp32").resolve())
    blob, _ = det.preprocess([_image("dog.jpg")])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(str(FIX / "yolo11t.onnx"), so, providers=["CPUExecutionProvider"])
    spread = np.abs(plain.run(None, {det.layout.input_name: blob})[0] - det.infer(blob)[0])[0, 4:].max()
    assert 1e-4 < spread < SCORE_TOL["yolo11t"]


def test_openvino_batch_equals_frames_one_by_one():
    _, det = _ort_and_ov("yolo11t")
    frames = [_image(r["image"]) for r in REFS["models"]["yolo11t"][:3]]
    for one, batched in zip([det.detect(f) for f in frames], det.detect_batch(frames)):
        np.testing.assert_array_equal(one.xyxy, batched.xyxy)
        np.testing.assert_array_equal(one.score, batched.score)


def test_openvino_bf16_runs_where_the_cpu_has_it_else_one_line():
    from trackpipe.models.cpu import cpu_info
    from trackpipe.models.errors import BackendUnavailable
    from trackpipe.models.factory import build_detector

    spec = _spec("yolov8t", backend="openvino", precision="bf16").resolve()
    if not cpu_info().has_bf16:
        with pytest.raises(BackendUnavailable, match="bf16 needs a CPU with AVX512-BF16 or AMX") as e:
            build_detector(spec)
        assert "\n" not in str(e.value)
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX: bf16 is refused in one line (checked)")
    det = build_detector(spec)
    assert det.describe() == "openvino-bf16"
    dets = det.detect(_image("dog.jpg"))
    assert len(dets) and dets.xyxy.dtype == np.float32


def test_other_backends_refuse_a_model_file_in_one_line():
    from trackpipe.models.errors import BackendUnavailable
    from trackpipe.models.factory import build_detector

    with pytest.raises(BackendUnavailable, match="an ONNX model file runs on the onnx and openvino backends, not tf"):
        build_detector(_spec("yolov8t", backend="tf", precision="fp32").resolve())
    with pytest.raises(BackendUnavailable, match="fp32 or int8"):
        build_detector(_spec("yolov8t", backend="onnx", precision="fp16").resolve())


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    """yolov8t calibrated on 16 real frames of a video, as `python -m trackpipe.models calibrate --model-file` does."""
    from trackpipe.models.factory import load_model
    from trackpipe.models.quantize import calibrate

    tmp = tmp_path_factory.mktemp("calib")
    spec = _spec("yolov8t", cache_dir=tmp / "cache").resolve()
    return spec, calibrate(load_model(spec), str(VIDEO_360), tmp / "calib", frames=16, method="minmax",
                           cache_dir=spec.cache_dir)


def test_int8_calibration_of_a_model_file_is_of_that_file(calib):
    from trackpipe.models.errors import ModelError
    from trackpipe.models.factory import load_model
    from trackpipe.models.identity import model_id
    from trackpipe.models.quantize import checked_meta, qdq_name
    from trackpipe.models.cpu import cpu_info

    spec, out = calib
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model_key"] == model_id(load_model(spec)) and meta["frames"] == 16 and not meta["equalized"]
    # float: the stem and the head (the last 1x1 convs, the DFL and the box arithmetic), nothing of the backbone
    assert meta["float_layers"][0] == "/model.0/conv/Conv" and "/model.22/dfl/conv/Conv" in meta["float_layers"]
    assert not any(n.startswith(("/model.2/", "/model.9/")) for n in meta["float_layers"])
    assert (out / qdq_name(cpu_info().int8_weight_bits)).is_file()
    other = _spec("yolo11t").resolve().with_(calib=out)
    with pytest.raises(ModelError, match="calibrated for another model"):
        checked_meta(other, load_model(other))


@pytest.mark.parametrize("backend,method", [("onnx", ""), ("openvino", "qdq"), ("openvino", "nncf")])
def test_int8_of_a_model_file_builds_and_runs(calib, backend, method):
    """int8 on both runtimes from the calibration; its agreement with fp32 on real frames is what
    auto judges (random weights: it need not pass the bar)."""
    from trackpipe.models import auto
    from trackpipe.models.factory import build_detector

    spec, out = calib
    det = build_detector(spec.with_(backend=backend, precision="int8", calib=out,
                                    extra={"int8_method": method} if method else {}))
    assert det.describe() == f"{backend}-int8" + (f" ({method})" if method else "")
    frame = _image("dog.jpg")
    dets = det.detect(frame)
    assert len(dets) and (dets.xyxy >= 0).all() and (dets.xyxy[:, 2] <= frame.shape[1]).all()
    agree = auto.judge(build_detector(spec.with_(backend="onnx", precision="fp32")), det, [frame])
    assert agree["ref_boxes"] > 0 and 0.0 <= agree["f1"] <= 1.0


def test_auto_for_a_model_file_measures_judges_and_caches(tmp_path):
    """backend and precision auto on a model file: onnx/openvino fp32, bf16 where the CPU has it, and
    int8 calibrated on the source's own frames; each reduced pair judged against fp32 on real frames
    and kept only above MIN_AGREEMENT; the choice cached under the file's identity (its sha256)."""
    from trackpipe.models import auto
    from trackpipe.models.factory import load_model
    from trackpipe.models.identity import model_id
    from trackpipe.models.quantize import read_calibration_frames

    spec = _spec("yolov8t", cache_dir=tmp_path / "cache", backend="auto", precision="auto").resolve()
    layout = load_model(spec)
    probe = read_calibration_frames(str(VIDEO_360), auto.PROBE_FRAMES)
    c = auto.choose(spec, layout, probe, seconds=1.0, calib_source=str(VIDEO_360))
    assert not c.cached
    assert {"onnx-fp32", "openvino-fp32", "onnx-int8", "openvino-int8", "openvino-bf16"} <= set(c.measured)
    for key in ("onnx-int8", "openvino-int8"):
        agree = c.measured[key]["agreement"]
        assert agree["ref_boxes"] >= auto.MIN_REF_BOXES
        rejected = "error" in c.measured[key]
        assert rejected == (agree["f1"] < auto.MIN_AGREEMENT), c.measured[key]
        if rejected:
            assert c.label != key
    assert c.label in [k for k, v in c.measured.items() if "error" not in v]
    entry = list((tmp_path / "cache" / "auto").glob("yolov8t-320x320-*.json"))
    assert len(entry) == 1
    data = json.loads(entry[0].read_text())
    assert data["fields"]["model"] == model_id(layout) and data["choice"]["measured"] == c.measured
    again = auto.choose(spec, layout, probe, calib_source=str(VIDEO_360))
    assert again.cached and again.label == c.label
    # another file (here: the same graph under another name with a changed byte of metadata) is another entry
    other = tmp_path / "copy.onnx"
    shutil.copy(FIX / "yolov8t.onnx", other)
    import onnx

    m = onnx.load(str(other))
    m.doc_string = "changed"
    onnx.save(m, str(other))
    spec2 = spec.with_(file=other, names=None).resolve()
    assert model_id(load_model(spec2)) != model_id(layout)
    assert auto.cached_choice(spec2, load_model(spec2), True, str(VIDEO_360)) is None


def test_bench_shows_auto_beside_onnx_runtime_for_a_model_file(tmp_path):
    """`python -m trackpipe.models bench --model-file F`: onnx, openvino and auto (with its choice) in one run."""
    from trackpipe.models.bench import bench_backends

    spec = _spec("yolox-t", cache_dir=tmp_path / "cache", extra={"auto_seconds": 1.0}).resolve()
    frame = cv2.imread(str(DOG))
    res = bench_backends(spec, ["onnx", "openvino", "auto"], ["fp32"], 1.0, frame)
    assert set(res) == {"onnx", "openvino", "auto"}
    assert all(r["fps"] > 0 for r in res.values()), res
    assert res["auto"]["choice"] in ("onnx-fp32", "openvino-fp32")   # without a probe: fp32 only
