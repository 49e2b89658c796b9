"""ONNX detectors of today's families (`--model-file`): layouts read from the graph, parity with the
producing library's own post-processing, bad files refused in one line, a run end to end.

The fixtures (tests/fixtures/onnx, made by make_fixtures.py there with Ultralytics and YOLOX
themselves, random weights) hold those libraries' own predictions on dog.jpg and frames of
aiguys_test.mp4 on the same ONNX files: no PyTorch here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import COCO_NAMES, ROOT, VIDEO_1080, VIDEO_360, leftovers
from procs import run_to_exit

FIX = ROOT / "tests" / "fixtures" / "onnx"
DOG = ROOT / ".." / "shared" / "assets" / "darknet" / "data" / "dog.jpg"
REFS = json.loads((FIX / "reference.json").read_text())
PARITY = sorted(REFS["models"])
PRESET = REFS.get("preprocess", {})     # fixtures without metadata: their family, given
ULTRALYTICS = [n for n in PARITY if n not in PRESET]


def _spec(name: str, **kw):
    """The fixture's spec, on ONNX Runtime fp32 (the references' runtime) unless kw says otherwise."""
    from trackpipe.models.spec import ModelSpec

    kw = {"backend": "onnx", "precision": "fp32", **kw}
    return ModelSpec(file=FIX / f"{name}.onnx", conf_threshold=REFS["conf"], nms_threshold=REFS["iou"],
                     preprocess=PRESET.get(name, "auto"), **kw)


def _image(key: str) -> np.ndarray:
    if key == "dog.jpg":
        return cv2.imread(str(DOG))
    video, _, index = key.partition("#")
    cap = cv2.VideoCapture(str(VIDEO_1080.parent / video))
    try:
        for _ in range(int(index) + 1):
            ok, frame = cap.read()
            assert ok
        return frame
    finally:
        cap.release()


def test_layouts_are_read_from_the_graph_and_metadata():
    from trackpipe.models.classes import read_names
    from trackpipe.models.onnx_layouts import read_layout

    coco = tuple(read_names(COCO_NAMES))
    kinds = {name: read_layout(FIX / f"{name}.onnx") for name in ULTRALYTICS}
    assert {n: lay.kind for n, lay in kinds.items()} == {"yolo11t": "anchor_free", "yolo11t-nms": "nms",
                                                          "yolov5tu": "anchor_free", "yolov8t": "anchor_free",
                                                          "rtdetr-t": "rtdetr_topk"}
    for name, lay in kinds.items():
        assert (lay.preset, lay.input_size) == ("rtdetr" if name == "rtdetr-t" else "ultralytics", (320, 320))
        if name != "yolov5tu":  # Ultralytics' COCO names (darknet's say motorbike, aeroplane, sofa, ...)
            assert len(lay.names) == 80 and lay.names[:3] == coco[:3] and lay.names[3] == "motorcycle"
    voc = kinds["yolov5tu"]
    assert (voc.num_classes, voc.names[0], voc.names[-1]) == (20, "aeroplane", "tvmonitor")
    assert kinds["yolov8t"].output_shape == (1, 84, 2100)
    assert kinds["rtdetr-t"].preset == "rtdetr" and kinds["rtdetr-t"].kind == "rtdetr_topk"
    yolox = read_layout(FIX / "yolox-t.onnx", preset="yolox")   # YOLOX's export has no metadata
    assert (yolox.kind, yolox.num_classes, yolox.names, yolox.output_shape) == ("yolox", 80, None, (1, 2100, 85))


@pytest.mark.parametrize("name", PARITY)
def test_parity_with_the_producing_librarys_own_postprocessing(name):
    """Boxes within 1 px, the same classes, scores within 1e-4 on every reference image (YOLOX's
    own boxes clipped to the frame, as every detector's here are: YOLOX leaves them unclipped)."""
    from trackpipe.models.factory import build_detector

    det = build_detector(_spec(name).resolve())
    assert det.describe() == "onnx-fp32"
    total = 0
    for ref in REFS["models"][name]:
        frame = _image(ref["image"])
        got = det.detect(frame)
        xyxy = np.asarray(ref["xyxy"], np.float32).reshape(-1, 4)
        np.clip(xyxy, 0, [frame.shape[1], frame.shape[0]] * 2, out=xyxy)
        want = (xyxy, np.asarray(ref["score"], np.float32),
                np.asarray(ref["class_id"], np.int32))
        assert len(got) == len(want[1]), (ref["image"], len(got), len(want[1]))
        unmatched = _unmatched(want, got)
        assert not unmatched, (ref["image"], unmatched[:3])
        total += len(got)
    assert total >= 5  # the references hold boxes to compare


def _unmatched(want, got, px: float = 1.0, score_tol: float = 1e-4) -> list:
    """Reference detections (xyxy, score, class_id) without a detection of ours of the same class,
    its score within score_tol and every coordinate within px (each of ours used once)."""
    free = np.ones(len(got), bool)
    missing = []
    for box, score, cls in zip(*want):
        ok = free & (got.class_id == cls) & (np.abs(got.score - score) <= score_tol)
        ok &= np.abs(got.xyxy - box).max(axis=1) <= px
        hits = np.flatnonzero(ok)
        if len(hits) == 0:
            missing.append((box.tolist(), float(score), int(cls)))
            continue
        free[hits[np.abs(got.score[hits] - score).argmin()]] = False
    return missing


def test_classes_filter_and_max_det():
    from trackpipe.models.factory import build_detector

    full = build_detector(_spec("yolov8t").resolve()).detect(cv2.imread(str(DOG)))
    top = int(np.bincount(full.class_id).argmax())
    only = build_detector(_spec("yolov8t", classes=(top,)).resolve()).detect(cv2.imread(str(DOG)))
    assert len(only) and set(only.class_id.tolist()) == {top}
    capped = build_detector(_spec("yolov8t", max_det=2).resolve()).detect(cv2.imread(str(DOG)))
    np.testing.assert_allclose(capped.score, full.score[:2])


def test_config_model_file_is_relative_to_the_config_and_names_come_from_metadata(tmp_path):
    """``model: {file: ...}`` in a config file: relative to it; a --model on the command line replaces
    it; the metadata's names become a names file in the cache that every stage reads."""
    from trackpipe.models.classes import read_names
    from trackpipe.pipeline.cli import load

    (tmp_path / "m").mkdir()
    os.symlink(FIX / "yolov5tu.onnx", tmp_path / "m" / "voc.onnx")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  file: m/voc.onnx\n  classes: [person, dog]\n")
    _, spec = load(["--config", str(cfg), "--source", str(VIDEO_360), "--cache-dir", str(tmp_path / "cache")])
    assert (spec.file, spec.size, spec.backend, spec.precision) == (tmp_path / "m" / "voc.onnx", (320, 320), "auto",
                                                                    "auto")
    names = read_names(spec.names)
    assert spec.names.parent == tmp_path / "cache" / "onnx-names" and len(names) == 20
    assert spec.classes == (names.index("person"), names.index("dog"))
    cfg.write_text("model:\n  file: m/voc.onnx\n  preprocess: ultralytics\n")
    _, spec = load(["--config", str(cfg), "--source", str(VIDEO_360), "--model", "yolo-fastest-1.1-xl"], resolve=False)
    assert (spec.file, spec.model, spec.preprocess) == (None, "yolo-fastest-1.1-xl", "auto")


def test_batch_of_frames_equals_frames_one_by_one():
    from trackpipe.models.factory import build_detector

    det = build_detector(_spec("yolo11t").resolve())
    frames = [_image(r["image"]) for r in REFS["models"]["yolo11t"][:3]]
    for one, batched in zip([det.detect(f) for f in frames], det.detect_batch(frames)):
        np.testing.assert_array_equal(one.xyxy, batched.xyxy)


def test_decoders_of_the_other_layouts():
    """YOLOv5 (anchor-based), YOLOX (grid offsets x strides) and RT-DETR (normalised) rows."""
    from trackpipe.models.onnx_layouts import decode_anchor_based, decode_rtdetr, decode_yolox, yolox_grid

    rows = np.zeros((3, 5 + 2), np.float32)
    rows[:, 0:4] = [[50, 60, 20, 10], [10, 10, 4, 4], [100, 100, 8, 8]]
    rows[:, 4] = [0.9, 0.2, 0.6]                         # objectness: row 1 fails
    rows[:, 5:] = [[0.1, 0.5], [1.0, 1.0], [0.3, 0.1]]   # row 2: 0.6 x 0.3 = 0.18 fails
    xyxy, score, cls = decode_anchor_based(rows, 0.25)
    np.testing.assert_allclose(xyxy, [[40, 55, 60, 65]])
    np.testing.assert_allclose(score, [0.45])
    assert cls.tolist() == [1]
    grid = yolox_grid((64, 32))
    assert len(grid[0]) == 8 * 4 + 4 * 2 + 2 * 1
    raw = np.zeros((len(grid[0]), 5 + 1), np.float32)
    raw[9] = [0.5, 0.5, np.log(2.0), 0.0, 0.8, 0.5]      # stride 8, cell (1, 1): centre 12, 12, 16 x 8
    xyxy, score, cls = decode_yolox(raw, 0.25, grid=grid)
    np.testing.assert_allclose(xyxy, [[4, 8, 20, 16]])
    np.testing.assert_allclose(score, [0.4])
    det = np.asarray([[0.5, 0.5, 0.25, 0.5, 0.1, 0.7], [0.1, 0.1, 0.1, 0.1, 0.2, 0.1]], np.float32)
    xyxy, score, cls = decode_rtdetr(det, 0.25, input_size=(320, 160))
    np.testing.assert_allclose(xyxy, [[120, 40, 200, 120]])
    assert cls.tolist() == [1]


def _onnx_with(tmp_path: Path, in_shape, out_shapes) -> Path:
    """A real ONNX file of the given input and output shapes (outputs: a reduction of the input
    reshaped; no metadata)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0)]
    outs = []
    for i, shape in enumerate(out_shapes):
        shape_name = f"s{i}"
        nodes.append(helper.make_node("Constant", [], [shape_name], value=helper.make_tensor(
            shape_name, TensorProto.INT64, [len(shape)], list(shape))))
        nodes.append(helper.make_node("Expand", ["m", shape_name], [f"y{i}"]))
        outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, list(shape)))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              outs)
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _run(args, tmp_path: Path, timeout: float = 90):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TRACKPIPE_CACHE=str(tmp_path / "cache"))
    return run_to_exit([sys.executable, str(ROOT / "run_tracker.py"), "--source", str(VIDEO_360), "--headless",
                        *args], ROOT, env, timeout)

BAD = {
    "classification model": (lambda t: ["--model-file", str(FIX / "yolov8t-cls.onnx")],
                             "a classify model (metadata task='classify'); only detection models are supported"),
    "segmentation model": (lambda t: ["--model-file", str(FIX / "yolov8t-seg.onnx")],
                           "a segment model (metadata task='segment'); only detection models are supported"),
    "segmentation without metadata": (
        lambda t: ["--model-file", str(_onnx_with(t, (1, 3, 320, 320), [(1, 116, 2100), (1, 32, 80, 80)])),
                   "--preprocess", "ultralytics"],
        "2 outputs ((1, 116, 2100), (1, 32, 80, 80)): a segmentation or pose model?"),
    "classification without metadata": (
        lambda t: ["--model-file", str(_onnx_with(t, (1, 3, 224, 224), [(1, 1000)])), "--preprocess", "ultralytics"],
        "output (1, 1000) is a classification model's"),
    "wrong input rank": (lambda t: ["--model-file", str(_onnx_with(t, (3, 320, 320), [(1, 84, 2100)]))],
                         "input 'x' has rank 3 (3, 320, 320); a detector's is (B, 3, H, W)"),
    "names not matching": (lambda t: ["--model-file", str(FIX / "yolov8t.onnx"), "--names",
                                      str(_names(t, ["a", "b", "c"]))],
                           "the names file has 3 names but the model has 80 classes"),
    "no family": (lambda t: ["--model-file", str(_onnx_with(t, (1, 3, 320, 320), [(1, 84, 2100)]))],
                  "no family in the model's metadata: give --preprocess"),
    "unknown layout": (lambda t: ["--model-file", str(_onnx_with(t, (1, 3, 320, 320), [(1, 2100, 84)])),
                                  "--preprocess", "ultralytics"],
                       "output (1, 2100, 84) is no ultralytics detection layout I know"),
    "not onnx": (lambda t: ["--model-file", str(_names(t, ["x"]))], "not an ONNX model"),
    "preprocess without a file": (lambda t: ["--preprocess", "yolox"],
                                  "--preprocess: yolox is for an ONNX model file (model.file, --model-file)"),
    "with --cfg": (lambda t: ["--model-file", str(FIX / "yolov8t.onnx"), "--model", "yolov4-tiny"],
                   "give one of --model-file, --model or --cfg/--weights"),
}


def _names(tmp_path: Path, names) -> Path:
    path = tmp_path / "x.names"
    path.write_text("".join(f"{n}\n" for n in names))
    return path


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(BAD))
def test_bad_model_file_is_one_line_exit_2(tmp_path, case):
    make, expected = BAD[case]
    code, err, pid = _run([*make(tmp_path), "--mot", str(tmp_path / "t.txt")], tmp_path)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert expected in err, err
    assert not (tmp_path / "t.txt").exists() and leftovers(pid) == []


@pytest.mark.timeout(180)
def test_run_tracker_end_to_end_with_an_onnx_file(tmp_path):
    """run_tracker.py --model-file: tracks written in the MOT file, the metadata's names used; a first
    run starts at once on fp32 and measures the backend after the run, as for darknet models
    (--precision fp32 here: the same path without the int8 calibration precision auto adds)."""
    mot, prof = tmp_path / "t.txt", tmp_path / "p.json"
    code, err, pid = _run(["--model-file", str(FIX / "yolov8t.onnx"), "--max-frames", "40", "--mot", str(mot),
                           "--profile", str(prof), "--conf", "0.3", "--precision", "fp32"], tmp_path, timeout=150)
    assert code == 0, err
    assert leftovers(pid) == []
    report = json.loads(prof.read_text())
    assert report["frames_out"] == 40
    assert "openvino-fp32" in json.dumps(report) or "onnx-fp32" in json.dumps(report)
    assert "next runs: " in err and list((tmp_path / "cache" / "auto").glob("yolov8t-320x320-*.json")), err
    rows = [ln.split(",") for ln in mot.read_text().splitlines()]
    assert rows and all(1 <= int(r[0]) <= 40 for r in rows)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", [["convert", "--format", "triton", "--out", "repo"], ["serve"]])
def test_convert_and_serve_of_a_model_file_are_one_line_exit_2(tmp_path, command):
    r = subprocess.run([sys.executable, "-m", "trackpipe.models", *command, "--model-file", str(FIX / "yolov8t.onnx")],
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=50)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"error: {command[0]} takes a darknet model" in r.stderr and not (tmp_path / "repo").exists(), r.stderr
