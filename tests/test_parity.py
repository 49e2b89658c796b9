"""Parity of the tf, onnx and openvino (fp32) backends with OpenCV's darknet importer (the oracle).

Real Yolo-Fastest-1.1-xl weights at 320, and random-valued weight files written
in darknet layout for yolov4 and yolov4-tiny (416): raw head outputs within 1e-4
relative error, and the same final detections on dog.jpg. (The input size changes
only the grids; yolov4 at 608 is the 416 network with larger ones.)
"""

import cv2
import numpy as np
import pytest

from trackpipe.models.darknet import load_cfg, load_network, write_random_weights
from trackpipe.models.factory import build_detector
from trackpipe.models.postprocess import decode_head
from trackpipe.models.spec import ModelSpec
from tests.assets import CFG, FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, IMAGES, NAMES

CASES = [("yolo-fastest-xl", 320), ("yolov4-tiny", 416), ("yolov4", 416)]
OFFICIAL = {"yolov4": 257_717_640, "yolov4-tiny": 24_251_276}


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("random-weights")
    files = {"yolo-fastest-xl": (FASTEST_XL_CFG, FASTEST_XL_WEIGHTS)}
    for name in ("yolov4", "yolov4-tiny"):
        cfg = CFG / f"{name}.cfg"
        path = d / f"{name}.weights"
        assert write_random_weights(load_cfg(cfg), path, seed=1) == OFFICIAL[name]
        files[name] = (cfg, path)
    return files


def _rel_err(ref, out):
    return float(np.abs(ref - out).max() / np.abs(ref).max())


def _match(ref, out, conf, tol_px=1.0):
    """Every detection of `ref` clearly above the threshold has a twin in `out` (same class, boxes within tol)."""
    unmatched = []
    for b, s, c in zip(ref.xyxy, ref.score, ref.class_id):
        if s < conf + 0.01:
            continue  # a score on the threshold may fall either side: not a disagreement
        same = (out.class_id == c) & (np.abs(out.xyxy - b).max(axis=1) <= tol_px)
        if not same.any():
            unmatched.append((int(c), float(s), b.round(1).tolist()))
    return unmatched


@pytest.mark.parametrize("name,size", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_backends_match_opencv(weight_files, name, size):
    cfg, weights = weight_files[name]
    network = load_network(cfg, weights, (size, size))
    spec = ModelSpec(cfg=cfg, weights=weights, names=NAMES, size=(size, size), backend="opencv")
    img = cv2.imread(str(IMAGES / "dog.jpg"))
    oracle = build_detector(spec, network)
    blob, _ = oracle.preprocess([img])
    ref_heads = oracle.infer(blob)
    conf = 0.25
    if name != "yolo-fastest-xl":
        # random weights: no score means anything, so take the threshold that ~50 candidates pass
        scores = np.concatenate([decode_head(h[0], y, network.input_size)[:, 5:].ravel()
                                 for h, y in zip(ref_heads, network.yolo_layers)])
        conf = float(np.sort(scores)[-50])
        spec = spec.with_(conf_threshold=conf)
        oracle = build_detector(spec, network)
    ref_dets = oracle.detect(img)
    assert len(ref_dets) > 0
    for backend in ("onnx", "openvino", "tf"):
        det = build_detector(spec.with_(backend=backend), network)
        heads = det.infer(blob)
        assert [h.shape for h in heads] == [h.shape for h in ref_heads]
        errs = [_rel_err(r, h) for r, h in zip(ref_heads, heads)]
        assert max(errs) < 1e-4, f"{backend}: head relative errors {errs}"
        dets = det.detect(img)
        assert _match(ref_dets, dets, conf) == [], f"{backend}: detections missing vs opencv"
        assert _match(dets, ref_dets, conf) == [], f"{backend}: extra detections vs opencv"
        det.close()


def test_real_weights_find_dog_bicycle_car():
    spec = ModelSpec(cfg=FASTEST_XL_CFG, weights=FASTEST_XL_WEIGHTS, names=NAMES, backend="onnx")
    with build_detector(spec) as det:
        d = det.detect(cv2.imread(str(IMAGES / "dog.jpg")))
    found = {det.names[c]: s for c, s in zip(d.class_id, d.score)}
    assert found["dog"] > 0.9 and found["bicycle"] > 0.8 and found["car"] > 0.8
