"""Motion detector, gate, stationary bookkeeping, filters, masks and their config, on real frames
(../shared/assets/video) and clips built from them (tests/motion_clips.py)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from trackpipe.models.types import Detections, Tracks
from trackpipe.pipeline.errors import ConfigError, validation_line
from trackpipe.pipeline.motion import (
    BoxMap,
    ClassFilter,
    MotionDetector,
    MotionGate,
    MotionSettings,
    ObjectFilters,
    PolygonMask,
    StationaryBook,
    ThresholdGate,
)
from trackpipe.pipeline.motion.config import resolve_filters
from trackpipe.pipeline.motion.gate import resolve_mode

from tests.assets import VIDEO
from tests.motion_clips import read_video, still_moving_still

STREET = VIDEO / "aiguys_video.mp4"       # 640x360, people and a car


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """1 s of a frozen real frame with noise, 1 s of real motion, 1 s frozen: H.264, decoded."""
    c = still_moving_still(STREET, tmp_path_factory.mktemp("clip") / "c.mp4", still_s=1.0, start=60, frames=30)
    frames, _ = read_video(c.path)
    return c, frames


def run(det: MotionDetector, frames):
    return [det.update(f) for f in frames]


def test_still_noisy_frames_are_not_motion_and_real_motion_is(clip):
    c, frames = clip
    assert len(frames) == c.frames == 90 and c.moving == (30, 60)
    res = run(MotionDetector(), frames)
    moving = np.array([r.moving for r in res])
    assert not moving[:c.moving[0]].any()                       # noise + codec artefacts: still
    assert moving[c.moving[0] + 1:c.moving[1]].all()             # every real frame after the first moves
    # the change fades soon after the motion stops (alpha 0.1: ~14 frames for a strong edge)
    assert not moving[c.moving[1] + 20:].any()
    boxes = np.concatenate([r.boxes for r in res])
    assert boxes.shape[1] == 4 and (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 360).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_a_whole_frame_change_is_not_motion(clip):
    _, frames = clip
    det = MotionDetector()
    still = frames[:10]
    run(det, still)
    brighter = [np.clip(f.astype(np.int16) + 70, 0, 255).astype(np.uint8) for f in frames[10:20]]  # IR / lights
    res = run(det, brighter)
    assert res[0].whole_frame and not res[0].moving
    assert not any(r.moving for r in res)           # the background restarted from the new lighting


def test_a_motion_mask_over_the_moving_area_silences_it(clip):
    _, frames = clip
    res = run(MotionDetector(), frames)
    boxes = np.concatenate([r.boxes for r in res if r.moving])
    x1, y1 = boxes[:, :2].min(0) - 8
    x2, y2 = boxes[:, 2:].max(0) + 8
    mask = [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])]
    masked = run(MotionDetector(mask=mask), frames)
    assert not any(r.moving for r in masked)
    # half of it masked: motion remains, only outside the mask
    half = [np.array([[0, 0], [320, 0], [320, 360], [0, 360]])]
    part = run(MotionDetector(mask=half), frames)
    got = np.concatenate([r.boxes for r in part if r.moving]) if any(r.moving for r in part) else np.zeros((0, 4))
    assert (got[:, 2] >= 320 - 4 * 3).all()       # boxes lie right of the mask (a few small pixels of 4 px)


def test_small_frame_keeps_aspect_and_settings_apply(clip):
    _, frames = clip
    det = MotionDetector(MotionSettings(frame_height=50))
    assert det.small_grey(frames[0]).shape == (51, 91)          # 7x: a 4x4 grid per pixel, averaged


def test_gate_detects_on_motion_rechecks_and_bounds_the_gap():
    g = MotionGate(True, stationary_interval=5, max_gap_s=100.0)
    seq = [g.decide(m, t / 30) for t, m in enumerate([False] * 12 + [True] * 3 + [False] * 6)]
    reasons = [d.reason for d in seq]
    assert reasons[0] == "first"
    assert [i for i, r in enumerate(reasons) if r == "recheck"] == [5, 10, 19]
    assert reasons[12:15] == ["motion"] * 3
    assert g.detected == 7 and g.frames == 21 and g.moving == 3
    gap = MotionGate(True, stationary_interval=1000, max_gap_s=1.0)
    got = [gap.decide(False, t * 0.25).reason for t in range(10)]
    assert got == ["first", "", "", "", "gap", "", "", "", "gap", ""]
    off = MotionGate(False)
    assert all(off.decide(False, t).detect for t in range(5)) and off.detect_fraction == 1.0
    assert resolve_mode("auto", "latest") and not resolve_mode("auto", "lossless")
    assert resolve_mode("on", "lossless") and not resolve_mode("off", "latest")


def _tracks(ids, boxes, scores=None, cls=None, predicted=None):
    n = len(ids)
    return Tracks(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores or [0.8] * n, np.float32),
                  np.asarray(cls or [0] * n, np.int32), track_id=np.asarray(ids, np.int64),
                  predicted=None if predicted is None else np.asarray(predicted, bool))


def test_a_held_object_keeps_its_id_through_a_real_tracker_and_becomes_stationary():
    from trackpipe.pipeline.motion.tracking import GatedTracking
    from trackpipe.trackers.factory import build_tracker
    gt = GatedTracking(build_tracker("hybrid"), book=StationaryBook(threshold=10))
    car = Detections(np.array([[100, 100, 180, 150]], np.float32), np.array([0.97], np.float32),
                     np.array([2], np.int32))
    person = Detections(np.array([[300, 100, 330, 180]], np.float32), np.array([0.95], np.float32),
                        np.array([0], np.int32))
    for k in range(5):   # detected: the car stands, the person walks right and is seen
        p = Detections(person.xyxy + np.float32([8 * k, 0, 8 * k, 0]), person.score, person.class_id)
        gt.step(Detections.concatenate([car, p]), (640, 360))
    for _ in range(2):   # the person leaves while things move: two detections without it
        s = gt.step(car, (640, 360))
    car_id = int(s.tracks.track_id[s.tracks.class_id == 2][0])
    ids = set()
    for _ in range(100):  # nothing moves: skipped frames
        held = gt.book.held()
        assert len(held) == 1 and held.class_id[0] == 2         # the person is not held
        s = gt.step(None, (640, 360))
        assert s.held == 1
        ids.update(s.tracks.track_id[~s.tracks.predicted].tolist())
    assert ids == {car_id}
    assert s.stationary.tolist() == [True] and gt.book.stationary_ids() == [car_id]
    assert gt.book.stationary(np.array([car_id, 999])).tolist() == [True, False]
    assert set(s.live_ids.tolist()) == {car_id}      # the person's track ended as it would have
    # a re-check that misses the car once: still held (stationary, one miss), same id
    gt.step(Detections.empty(), (640, 360))
    s = gt.step(None, (640, 360))
    assert s.held == 1 and s.tracks.track_id[~s.tracks.predicted].tolist() == [car_id]
    # missed at a second re-check in a row: no longer held
    gt.step(Detections.empty(), (640, 360))
    assert gt.step(None, (640, 360)).held == 0


def test_filters_run_before_the_tracker_and_the_threshold_after_it():
    from trackpipe.pipeline.motion.tracking import GatedTracking
    from trackpipe.trackers.factory import build_tracker
    gt = GatedTracking(build_tracker("hybrid"), ObjectFilters({0: ClassFilter(min_area=1000, threshold=0.5)}),
                       gate=ThresholdGate({0: 0.5}))
    small = Detections(np.array([[0, 0, 20, 20]], np.float32), np.array([0.99], np.float32), np.array([0], np.int32))
    big = Detections(np.array([[100, 100, 160, 200]], np.float32), np.array([0.98], np.float32),
                     np.array([0], np.int32))
    first = gt.step(Detections.concatenate([small, big]), (640, 360))
    assert len(first.tracks) == 0 and gt.filters.removed["filter"] == 1      # one score: not yet
    second = gt.step(Detections.concatenate([small, big]), (640, 360))
    assert len(second.tracks) == 1 and second.tracks.xyxy[0][0] > 50         # the big one counts now


def test_filters_drop_by_area_ratio_score_and_mask():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 100, 50], [0, 0, 20, 80], [400, 200, 500, 300]], np.float32)
    dets = Detections(boxes, np.array([0.9, 0.3, 0.8, 0.9], np.float32), np.array([0, 0, 0, 2], np.int32))
    f = ObjectFilters({0: ClassFilter(min_area=200)})
    assert f.keep(dets, (640, 360)).tolist() == [False, True, True, True]
    assert ClassFilter(min_area=0.001).keep(boxes, dets.score, 640 * 360).tolist() == [False, True, True, True]
    assert ClassFilter(max_ratio=1.0).keep(boxes, dets.score, 1).tolist() == [True, False, True, True]
    assert ClassFilter(min_ratio=1.0).keep(boxes, dets.score, 1).tolist() == [True, True, False, True]
    assert ClassFilter(min_score=0.5).keep(boxes, dets.score, 1).tolist() == [True, False, True, True]
    m = ObjectFilters(mask=PolygonMask([np.array([[350, 250], [640, 250], [640, 360], [350, 360]])]))
    assert m.keep(dets, (640, 360)).tolist() == [True, True, True, False]     # bottom centre (450, 300)
    assert m.removed == {"filter": 0, "mask": 1}
    per = ObjectFilters(class_masks={0: PolygonMask([np.array([[0, 0], [640, 0], [640, 360], [0, 360]])])})
    assert per.keep(dets, (640, 360)).tolist() == [False, False, False, True]
    assert len(per.apply(dets, (640, 360))) == 1 and per.apply(None, (1, 1)) is None


def test_threshold_counts_an_object_once_the_median_of_its_first_scores_reaches_it():
    g = ThresholdGate({0: 0.5})
    # id 1: one frame at 0.9 (padded: median(0.9, 0, 0) = 0) -> never counts
    assert g.keep(_tracks([1], [[0, 0, 1, 1]], [0.9]), [1]).tolist() == [False]
    assert g.keep(_tracks([], np.zeros((0, 4))), []).tolist() == [] and g.held_back == 1
    # id 2: 0.6, 0.55 -> counts on its second frame, and from then on whatever its score
    assert g.keep(_tracks([2], [[0, 0, 1, 1]], [0.6]), [2]).tolist() == [False]
    assert g.keep(_tracks([2], [[0, 0, 1, 1]], [0.55]), [2]).tolist() == [True]
    assert g.keep(_tracks([2], [[0, 0, 1, 1]], [0.2]), [2]).tolist() == [True]
    # other classes count at once
    assert g.keep(_tracks([3], [[0, 0, 1, 1]], [0.1], cls=[2]), [2, 3]).tolist() == [True]


def test_box_map_between_detect_and_record_streams():
    m = BoxMap((640, 360), (1920, 1080))
    assert np.allclose(m(np.array([[10, 20, 30, 40]])), [[30, 60, 90, 120]])
    assert np.allclose(m.inverse()(m(np.array([[1, 2, 3, 4]]))), [[1, 2, 3, 4]])
    with pytest.raises(ValueError):
        BoxMap((0, 360), (1920, 1080))


NAMES = ["person", "bicycle", "car"]


def test_filters_resolve_by_name_and_id_with_one_line_errors():
    from trackpipe.pipeline.config.tree import Config
    cfg = Config.model_validate({"filters": {"person": {"min_area": 400}, 2: {"threshold": 0.6}},
                                 "cameras": [{"uri": "a", "filters": {"0": {"min_score": 0.4}}}]})
    glob = resolve_filters(cfg.filters, NAMES)
    assert glob == {0: ClassFilter(min_area=400), 2: ClassFilter(threshold=0.6)}
    cam = resolve_filters(cfg.cameras[0].filters, NAMES, "cameras[0].filters", base=glob)
    assert cam[0] == ClassFilter(min_area=400, min_score=0.4)
    bad = Config.model_validate({"filters": {"person": {"min_area": 1}, "0": {"min_area": 2}}})
    with pytest.raises(ConfigError, match=r"^filters: keys 'person' and '0' name the same class 0$"):
        resolve_filters(bad.filters, NAMES)
    with pytest.raises(ConfigError, match=r"^filters.persn: unknown class 'persn'"):
        resolve_filters(Config.model_validate({"filters": {"persn": {}}}).filters, NAMES)
    with pytest.raises(ConfigError, match=r"^filters.7: unknown class id 7 \(the model has 3 classes\)$"):
        resolve_filters(Config.model_validate({"filters": {7: {}}}).filters, NAMES)


@pytest.mark.parametrize("data, line", [
    ({"detect": {"motion": "sometimes"}}, "detect.motion: invalid value 'sometimes' (allowed: auto, on, off)"),
    ({"detect": {"stationary_interval": 0}}, "detect.stationary_interval: 0 is below the minimum 1"),
    ({"filters": {"car": {"min_ratio": 3, "max_ratio": 1}}}, "filters.car: min_ratio 3.0 is above max_ratio 1.0"),
    ({"filters": {"car": {"min_score": 2}}}, "filters.car.min_score: 2.0 is above the maximum 1.0"),
    ({"object_masks": [[[0, 0], [1, 1], [1, 0], [0, 1]]]},
     "object_masks[0].points: the polygon crosses itself (edges 0 and 2)"),
    ({"motion_masks": [{"points": [[0, 0], [5, 5], [9, 9]]}]},
     "motion_masks[0].points: the polygon has no area (its points are on one line)"),
    ({"cameras": ["a", "b"], "motion_masks": [[[0, 0], [1, 0], [1, 1]]]},
     "motion_masks[0]: name its camera (camera: NAME) when there are several (cameras: cam0, cam1)"),
    ({"cameras": [{"uri": "a", "detect": {"max_gap_s": -1}}]},
     "cameras[0].detect.max_gap_s: -1.0 is below the minimum 0.0"),
])
def test_bad_settings_are_one_line_naming_the_key(data, line):
    from trackpipe.pipeline.config.tree import Config
    with pytest.raises(ValidationError) as e:
        Config.model_validate(data)
    assert validation_line(e.value, Config) == line


def test_camera_detect_overrides_only_the_keys_it_sets():
    from trackpipe.pipeline.config.tree import Config
    cfg = Config.model_validate({"detect": {"motion": "on", "stationary_interval": 40},
                                 "cameras": [{"uri": "a", "detect": {"stationary_interval": 10}}]})
    eff = cfg.detect.merged(cfg.cameras[0].detect)
    assert (eff.motion, eff.stationary_interval) == ("on", 10)
    assert cfg.detect.merged(None) is cfg.detect


def test_motion_boxes_are_drawn_thin_and_in_place(clip):
    from trackpipe.pipeline.motion.draw import MOTION_COLOR, draw_motion
    frame = clip[1][0].copy()
    out = draw_motion(frame, np.array([[10, 20, 50, 60]], np.float32))
    assert out is frame
    assert tuple(frame[20, 30]) == MOTION_COLOR and tuple(frame[59, 30]) == MOTION_COLOR   # top, bottom edges
    assert tuple(frame[40, 30]) == tuple(clip[1][0][40, 30])                            # inside: untouched


def test_camera_motion_merges_global_and_camera_settings_and_names_the_key():
    from trackpipe.pipeline.config.tree import Config
    from trackpipe.pipeline.motion.setup import camera_motion
    cfg = Config.model_validate({
        "detect": {"motion": "on"}, "filters": {"person": {"min_area": 100}},
        "object_masks": [{"points": [[0, 0], [1, 0], [1, 1]], "camera": "b"}],
        "cameras": [{"uri": "x", "name": "a", "enabled": False},
                    {"uri": "y", "name": "b", "detect_uri": "y-sub", "detect": {"stationary_interval": 7},
                     "filters": {"person": {"min_score": 0.5}}, "motion_masks": [[[0, 0], [9, 0], [9, 9]]]}]})
    cm = camera_motion(cfg, "b", cfg.cameras[1], NAMES, index=0)
    assert cm.gating("lossless") and cm.detect.stationary_interval == 7 and cm.detect_uri == "y-sub"
    assert dict(cm.filters) == {0: ClassFilter(min_area=100, min_score=0.5)}
    assert len(cm.object_masks) == 1 and len(cm.motion_masks) == 1
    boxes = np.array([[580, 50, 620, 100], [0, 0, 640, 360]], np.float32)   # bottom centres (600, 100), (320, 360)
    dets = Detections(boxes, np.array([0.9, 0.9], np.float32), np.array([2, 2], np.int32))
    assert cm.object_filters((640, 360)).keep(dets, (640, 360)).tolist() == [False, True]   # the mask's triangle
    bad = Config.model_validate({"cameras": [{"uri": "x", "enabled": False},
                                             {"uri": "y", "filters": {"persn": {}}}]})
    with pytest.raises(ConfigError, match=r"^cameras\[1\]\.filters\.persn: unknown class 'persn'"):
        camera_motion(bad, "cam1", bad.cameras[1], NAMES, index=0)


def test_frame_gate_looks_at_every_other_frame_while_things_move(clip):
    from trackpipe.pipeline.motion.config import DetectConfig
    from trackpipe.pipeline.motion.frames import FrameGate
    from trackpipe.pipeline.motion.setup import CameraMotion
    from trackpipe.pipeline.transport.messages import FrameMeta
    c, frames = clip
    fg = FrameGate(CameraMotion(DetectConfig(motion="on", stationary_interval=1000)), "lossless", c.fps)
    out = [fg.frame(FrameMeta(i, 0, 0.0, 0.0, f.shape), f) for i, f in enumerate(frames)]
    detect = np.array([m.detect for m in out])
    assert detect[0] and not detect[1:c.moving[0]].any()           # the first frame, then still: skipped
    assert detect[c.moving[0] + 1:c.moving[1]].all()                # every moving frame detected
    assert fg.looked < fg.frames - (c.moving[1] - c.moving[0]) // 3   # every other frame while moving
    assert all(m.motion is not None for m in out)
    off = FrameGate(CameraMotion(DetectConfig(motion="auto")), "lossless", c.fps)
    assert not off.active and off.frame(out[0].meta, frames[0]).motion is None
