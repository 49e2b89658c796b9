"""DeepSortTracker lifecycle and appearance; encoders on synthetic and real video frames."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trackpipe.models.types import Detections
from trackpipe.trackers.factory import build_tracker
from trackpipe.trackers.deepsort import DeepSortConfig, DeepSortTracker
from trackpipe.trackers.encoders import (HistogramEncoder, MarsSmall128Encoder, OnnxReidEncoder,
                               build_encoder, mars_patch_boxes, sample_patches)
from trackpipe.trackers.matching import iou_matrix
from trackpipe.trackers.reid_eval import MeanColourEncoder, detect_video, iou_chains, reid_scores

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / ".." / "shared" / "assets"


def dets(boxes, feats=None, scores=None):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    n = len(boxes)
    return Detections(boxes, np.full(n, 0.9) if scores is None else scores,
                      np.zeros(n, np.int32), feats)


def box(x, y, w=20, h=50):
    return [x, y, x + w, y + h]


# --------------------------------------------------------------------------- lifecycle


def test_n_init_confirmation_and_tentative_deletion():
    t = DeepSortTracker(DeepSortConfig(n_init=3, max_age=5))
    out = [t.update(dets([box(10 + 3 * k, 10)])) for k in range(4)]
    assert [len(o) for o in out] == [0, 0, 1, 1]          # output from the 3rd detection
    assert out[-1].track_id.tolist() == [1]
    # a tentative track is deleted at its first miss
    t2 = DeepSortTracker(DeepSortConfig(n_init=3))
    t2.update(dets([box(10, 10)]))
    t2.update(dets([]))
    assert t2.num_tracks == 0


def test_confirmed_track_coasts_up_to_max_age():
    t = DeepSortTracker(DeepSortConfig(n_init=2, max_age=3))
    for _ in range(3):
        t.update(dets([box(50, 50)]))
    for _ in range(3):
        assert len(t.update(dets([]))) == 0 and t.num_tracks == 1
    t.update(dets([]))
    assert t.num_tracks == 0
    t.reset()
    t.update(dets([box(50, 50)]))
    assert t._next_id == 2                                  # counter restarted at 1


def _swap_scene(tracker, with_features):
    """Two still objects 8 px apart swap places at frame 10 (e.g. passing behind a pillar).
    Returns {x1 of the output box: track id} after the swap."""
    fa, fb = np.eye(8, dtype=np.float32)[:2]
    p1, p2 = box(100, 100), box(108, 100)
    for _ in range(10):
        tracker.update(dets([p1, p2], np.stack([fa, fb]) if with_features else None))
    for _ in range(3):
        out = tracker.update(dets([p2, p1], np.stack([fa, fb]) if with_features else None))
    return dict(zip(np.round(out.xyxy[:, 0]).astype(int).tolist(), out.track_id.tolist()))


def test_appearance_overrides_position_when_features_are_given():
    with_app = _swap_scene(DeepSortTracker(DeepSortConfig(n_init=2)), True)
    motion = _swap_scene(DeepSortTracker(DeepSortConfig(n_init=2)), False)
    # object a (feature fa) got id 1 at p1 (x 100). With appearance, id 1 follows a to
    # x 108; motion-only keeps id 1 at x 100.
    assert with_app[108] == 1 and with_app[100] == 2
    assert motion[100] == 1 and motion[108] == 2


def test_gallery_is_bounded_and_tracks_only_live_ids():
    rng = np.random.default_rng(0)
    t = DeepSortTracker(DeepSortConfig(n_init=2, nn_budget=7, max_age=5))
    for k in range(400):
        n = 3 if k < 300 else 0
        feats = rng.normal(size=(n, 16)).astype(np.float32)
        t.update(dets([box(100 * i + k % 5, 50) for i in range(n)], feats if n else None))
        assert len(t.gallery) <= t.num_tracks
        for tid in t._tracks.track_id:
            assert len(t.gallery.samples(tid)) <= 7
    assert t.num_tracks == 0 and len(t.gallery) == 0


def test_motion_only_mode_and_presets():
    t = build_tracker("deepsort")
    assert t.config.max_age == 30 and t.config.n_init == 3 and t.config.nn_budget == 100
    assert isinstance(t.encoder, HistogramEncoder)
    for k in range(5):                       # no frame, no features: motion only
        out = t.update(dets([box(10 + 2 * k, 10)], scores=np.array([0.99])))
    assert out.track_id.tolist() == [1] and len(t.gallery) == 0
    assert build_tracker("deepsort-mot15", encoder=None).encoder is None
    with pytest.raises(ValueError, match="motion_cost"):
        DeepSortConfig(motion_cost="euclid")


def test_encoder_is_used_when_a_frame_is_given():
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[50:150, 20:60] = (0, 0, 255)
    t = DeepSortTracker(DeepSortConfig(n_init=1), encoder=HistogramEncoder())
    t.update(dets([[20, 50, 60, 150]]), frame=frame)
    assert t.gallery.samples(1).shape == (1, 128)


# --------------------------------------------------------------------------- encoders


def test_histogram_encoder_shapes_and_separation():
    enc = HistogramEncoder()
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[20:120, 10:50] = (0, 0, 200)          # red person
    frame[20:120, 100:140] = (200, 0, 0)        # blue person
    frame[130:230, 10:50] = (0, 0, 190)         # another red one
    boxes = np.array([[10, 20, 50, 120], [100, 20, 140, 120], [10, 130, 50, 230],
                      [300, 200, 360, 300]], float)  # last box partly outside the frame
    f = enc(frame, boxes)
    assert f.shape == (4, enc.dim) == (4, 128) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    d = 1 - f @ f.T
    assert d[0, 2] < 0.05 and d[0, 1] > 0.4        # 200 vs 190 red: soft bins keep them close
    np.testing.assert_array_equal(enc(frame, boxes), f)       # deterministic
    assert enc(frame, np.zeros((0, 4))).shape == (0, 128)
    gray = enc(frame[:, :, 1], boxes[:2])                       # grayscale frames work
    assert gray.shape == (2, 128) and np.all(np.isfinite(gray))


def test_sample_patches_bilinear_matches_pixels():
    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    # a box covering exactly pixels [5,10) x [2,6) sampled at its own resolution
    p = sample_patches(img, np.array([[5, 2, 10, 6]]), 4, 5)
    np.testing.assert_allclose(p[0], img[2:6, 5:10].astype(np.float32), atol=1e-4)


def _tiny_onnx(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 8])
    out = helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", 3])
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["feat"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "reid", [inp], [out]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_onnx_reid_encoder_runs_a_model_from_path(tmp_path):
    pytest.importorskip("onnxruntime")
    _tiny_onnx(tmp_path / "reid.onnx")
    enc = build_encoder("onnx", path=tmp_path / "reid.onnx")
    assert enc.input_size == (16, 8) and not enc.nhwc
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[:, :50] = (255, 0, 0)
    frame[:, 50:] = (0, 255, 0)
    boxes = np.array([[0, 0, 40, 90], [60, 0, 100, 90], [0, 0, 100, 90]], float)
    f = enc(frame, boxes)
    batch = enc.preprocess(frame, boxes)
    assert batch.shape == (3, 3, 16, 8)
    expect = batch.mean(axis=(2, 3))
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(f, expect, rtol=1e-5, atol=1e-6)
    assert 1 - f[0] @ f[1] > 0.1


def test_onnx_reid_encoder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ONNX re-ID model not found"):
        OnnxReidEncoder(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxReidEncoder(bad)


def test_mars_loader_error_path_and_patch_geometry(tmp_path):
    with pytest.raises(FileNotFoundError, match="mars-small128.pb"):
        MarsSmall128Encoder(tmp_path / "mars-small128.pb")
    # geometry of deep_sort's extract_image_patch: height kept, width = height / 2, same centre
    b = mars_patch_boxes(np.array([[10, 20, 110, 120], [0, 0, 10, 100]], float))
    np.testing.assert_allclose(b, [[35, 20, 85, 120], [-20, 0, 30, 100]])


def test_mars_loader_on_a_synthetic_frozen_graph(tmp_path):
    """The real mars-small128.pb is not available here; this checks the loader's graph
    handling on a frozen graph with the same interface (images uint8 (N,128,64,3) ->
    features (N,128)), not the network's weights."""
    tf = pytest.importorskip("tensorflow")
    g = tf.Graph()
    with g.as_default():
        images = tf.compat.v1.placeholder(tf.uint8, (None, 128, 64, 3), name="images")
        x = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2])          # (N,3)
        w_np = np.random.default_rng(0).normal(size=(3, 128)).astype(np.float32)
        tf.identity(tf.matmul(x, tf.constant(w_np)), name="features")
    pb = tmp_path / "mars-small128.pb"
    pb.write_bytes(g.as_graph_def().SerializeToString())
    enc = MarsSmall128Encoder(pb)
    assert enc.patch_hw == (128, 64) and enc.dim == 128
    frame = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 110], [100, 50, 180, 230]], float)
    f = enc(frame, boxes)
    patches = enc.preprocess(frame, boxes)
    assert patches.shape == (2, 128, 64, 3) and patches.dtype == np.uint8
    expect = patches.astype(np.float32).mean(axis=(1, 2)) @ w_np
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(f, expect, rtol=1e-4, atol=1e-5)
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError):
        MarsSmall128Encoder(garbage)


def test_tracking_core_imports_no_cv2_or_tensorflow():
    code = ("import sys, trackpipe.trackers.sort, trackpipe.trackers.deepsort, trackpipe.trackers.kalman, "
            "trackpipe.trackers.matching, trackpipe.trackers.base, trackpipe.trackers.encoders, "
            "trackpipe.trackers.mot, trackpipe.trackers.reid_eval, trackpipe.trackers.hybrid, "
            "trackpipe.trackers.lifecycle, trackpipe.trackers.scores, trackpipe.trackers.interpolate, "
            "trackpipe.trackers.independent\n"
            "bad = [m for m in ('cv2', 'tensorflow', 'onnxruntime', 'torch') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------- real video

VIDEO_FRAMES = 40
YOLO = ASSETS / "darknet" / "yolo-fastest-1.1_coco"


def _video(name):
    """Frames and Yolo-Fastest-xl boxes (persons, vehicles) of the first VIDEO_FRAMES frames."""
    pytest.importorskip("cv2")
    video = ASSETS / "video" / name
    if not video.exists() or not (YOLO / "yolo-fastest-1.1-xl.weights").exists():
        pytest.skip("video or detector assets missing")
    return detect_video(video, YOLO / "yolo-fastest-1.1-xl.cfg",
                        YOLO / "yolo-fastest-1.1-xl.weights", VIDEO_FRAMES)


@pytest.mark.parametrize("video", ["aiguys_test.mp4", "supervision_walking.mp4"])
def test_histogram_encoder_reidentifies_real_people(video):
    """Method: trackers.reid_eval (pseudo-identities from unambiguous IoU links, rank-1
    across a 25-frame gap, positions never given to the encoder)."""
    frames, boxes = _video(video)
    ids = iou_chains(boxes)
    hist = reid_scores(frames, boxes, ids, HistogramEncoder(), gap=25)
    base = reid_scores(frames, boxes, ids, MeanColourEncoder(), gap=25)
    print(f"{video}: {hist} | mean-colour baseline {base}")
    assert hist.queries >= 50
    assert hist.rank1 >= 0.6 and hist.rank1 >= 4 * hist.chance and hist.auc >= 0.8
    assert hist.rank1 > base.rank1


def test_deepsort_with_builtin_encoder_on_video_keeps_ids_along_chains():
    frames, boxes = _video("aiguys_test.mp4")
    ids = iou_chains(boxes)
    t = DeepSortTracker(DeepSortConfig(n_init=2), encoder=HistogramEncoder())
    per_chain: dict[int, list[int]] = {}
    for f, b, cid in zip(frames, boxes, ids):
        out = t.update(Detections(b, np.full(len(b), 0.9), np.zeros(len(b), np.int32)), frame=f)
        if len(out) and len(b):
            io = iou_matrix(b, out.xyxy)
            for j in range(len(b)):
                k = io[j].argmax()
                if io[j, k] > 0.7:
                    per_chain.setdefault(int(cid[j]), []).append(int(out.track_id[k]))
    long_chains = [v for v in per_chain.values() if len(v) >= 20]
    assert len(long_chains) >= 3
    purity = np.mean([np.bincount(v).max() / len(v) for v in long_chains])
    assert purity >= 0.95
    assert all(len(t.gallery.samples(i)) <= 100 for i in t._tracks.track_id)
