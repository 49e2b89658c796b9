"""The hybrid tracker's evidence birth rule (``new_rel=None``: no per-run score cut; the default
keeps the top-30 % cut, new_rel 0.7) and camera-motion compensation (trackers/cmc.py) on real
footage shifted by known amounts."""

import numpy as np
import pytest
from trackpipe.models.types import Detections
from trackpipe.trackers.cmc import IDENTITY, CameraMotion, warp_boxes, warp_state
from trackpipe.trackers.factory import build_tracker
from trackpipe.trackers.hybrid import HybridConfig, HybridTracker

from tests.assets import VIDEO


def dets(boxes, scores):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    return Detections(boxes.astype(np.float32), np.asarray(scores, np.float32),
                      np.zeros(len(boxes), np.int32))


def walkers(n_frames, n_people=6):
    """n_people boxes walking right, 3 px per frame -> list of (n_people,4) xyxy."""
    out = []
    for f in range(n_frames):
        out.append(np.array([[40 + 3 * f, 30 + 80 * k, 70 + 3 * f, 100 + 80 * k]
                             for k in range(n_people)], float))
    return out


def run(tracker, frames, scores):
    return [tracker.update(dets(b, s)) for b, s in zip(frames, scores)]


def test_every_person_is_tracked_whatever_the_score_distribution():
    frames = walkers(12)
    rng = np.random.default_rng(1)
    spread = [rng.uniform(0.5, 1.0, 6) for _ in frames]
    high = [0.99 + 0.009 * (s - 0.5) / 0.5 for s in spread]     # all near 1: 0.990-0.999
    for scores in (spread, high):
        out = run(build_tracker("hybrid", score_floor=0.5, new_rel=None), frames, scores)
        assert len(out[0]) == 6                                   # output_warmup: frame 1
        assert all(len(o) == 6 for o in out[2:])                  # confirmed: every person
        assert sorted({int(i) for o in out for i in o.track_id}) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("new_rel,tracked", [(None, True), (0.7, False)])
def test_late_arrivals_at_a_lower_but_high_score_are_tracked(new_rel, tracked):
    # 60 frames of scores 0.995-0.999 set the run's score scale; then people scoring 0.99
    # (correct detections, as on sequences whose detector scores are all high) arrive
    frames = walkers(70)
    rng = np.random.default_rng(3)
    t = build_tracker("hybrid", score_floor=0.5, new_rel=new_rel)
    for f, b in enumerate(frames):
        s = rng.uniform(0.995, 0.999, 6)
        if f >= 60:
            s[3:] = 0.99
        boxes = b if f >= 60 else b[:3]
        out = t.update(dets(boxes, s[:len(boxes)]))
    assert (len(out) == 6) is tracked       # the per-run top-30 % rule (new_rel 0.7) misses them


def test_births_do_not_change_when_scores_are_shifted_or_squashed():
    frames = walkers(10)
    rng = np.random.default_rng(2)
    scores = [rng.uniform(0.5, 1.0, 6) for _ in frames]
    ref = run(build_tracker("hybrid", score_floor=0.5, new_rel=None), frames, scores)
    for transform, floor in ((lambda s: s - 0.2, 0.3), (lambda s: 1 - (1 - s) / 10, 0.95)):
        out = run(build_tracker("hybrid", score_floor=floor, new_rel=None), frames, [transform(s) for s in scores])
        for a, b in zip(ref, out):
            assert a.track_id.tolist() == b.track_id.tolist()
            np.testing.assert_allclose(a.xyxy, b.xyxy)


def test_a_one_frame_detection_never_becomes_a_track():
    t = build_tracker("hybrid", score_floor=0.5)
    for f in range(5):                                      # past output_warmup
        t.update(dets([[10, 10, 40, 80]], [0.9]))
    out = t.update(dets([[10, 10, 40, 80], [300, 300, 330, 370]], [0.9, 0.99]))
    assert out.track_id.tolist() == [1]                      # the new one is tentative
    out = t.update(dets([[10, 10, 40, 80]], [0.9]))          # and dies at its first miss
    assert out.track_id.tolist() == [1] and t.num_tracks == 1


@pytest.mark.parametrize("rel,frames_to_confirm", [(1.0, 2), (0.5, 4)])
def test_confirm_score_needs_more_frames_for_lower_scores(rel, frames_to_confirm):
    cfg = HybridConfig(score_floor=0.5, score_norm="linear", high_rel=0.0, new_rel=None, min_hits=1,
                       confirm_score=2.0, output_warmup=False, max_predict=0)
    t = HybridTracker(cfg)
    score = 0.5 + 0.5 * rel
    shown = [len(t.update(dets([[10 + 2 * f, 10, 40 + 2 * f, 80]], [score]))) for f in range(6)]
    assert shown.index(1) + 1 == frames_to_confirm


def test_warp_helpers_move_boxes_and_states_by_a_translation():
    A = np.array([[1.0, 0.0, 7.0], [0.0, 1.0, -3.0]])
    np.testing.assert_allclose(warp_boxes(np.array([[0, 0, 10, 20.0]]), A), [[7, -3, 17, 17]])
    mean = np.array([[5.0, 6.0, 10.0, 20.0, 1.0, 2.0, 0.0, 0.0]])
    cov = np.eye(8)[None]
    m2, c2 = warp_state(mean, cov, A, "xywh")
    np.testing.assert_allclose(m2, [[12, 3, 10, 20, 1, 2, 0, 0]])
    np.testing.assert_allclose(c2, cov)
    np.testing.assert_allclose(warp_boxes(np.zeros((0, 4)), A), np.zeros((0, 4)))


def real_frame():
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(str(VIDEO / "traffic-cars.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame


def crop(frame, x, y, w=960, h=540):
    return np.ascontiguousarray(frame[y:y + h, x:x + w])


def test_camera_motion_of_a_shifted_real_frame():
    frame = real_frame()
    cam = CameraMotion()
    np.testing.assert_array_equal(cam.estimate(crop(frame, 100, 80)), IDENTITY)   # first frame
    np.testing.assert_array_equal(cam.estimate(crop(frame, 100, 80)), IDENTITY)   # still
    assert not cam.moving
    # the window moves 24 px right and 12 px down: the scene moves (-24, -12) in the frame
    A = cam.estimate(crop(frame, 124, 92))
    assert cam.moving
    np.testing.assert_allclose(A[:, 2], [-24, -12], atol=1.5)
    np.testing.assert_allclose(A[:, :2], np.eye(2), atol=0.02)


def test_cmc_keeps_the_id_of_a_still_object_under_a_fast_pan():
    # a synthetic pan of real footage: a 640x360 window moving 40 px per frame over one frame
    frame = real_frame()
    offsets = [(20 + 40 * k, 90) for k in range(12)]
    obj = np.array([[600.0, 300.0, 640.0, 400.0]])                        # still in the scene

    def run_with(cmc):
        t = build_tracker("hybrid", score_floor=0.5, cmc=cmc)
        ids = []
        for x, y in offsets:
            box = obj - [x, y, x, y]
            ids.append(t.update(dets(box, [0.9]), frame=crop(frame, x, y, 640, 360)).track_id.tolist())
        return ids

    on, off = run_with("auto"), run_with("off")
    assert all(i == [1] for i in on[1:])
    assert sum(i == [1] for i in off[1:]) < len(off) - 1    # without it the track is lost
