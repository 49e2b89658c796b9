"""SortTracker lifecycle and association on small synthetic scenes."""

import numpy as np
import pytest

from trackpipe.models.types import Detections, Tracks
from trackpipe.trackers.factory import build_tracker
from trackpipe.trackers.sort import SortConfig, SortTracker


def dets(boxes, scores=None, classes=None):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    n = len(boxes)
    return Detections(boxes, np.full(n, 0.9) if scores is None else scores,
                      np.zeros(n, np.int32) if classes is None else classes)


def box(x, y, w=20, h=50):
    return [x, y, x + w, y + h]


def ids_of(tr: Tracks):
    return tr.track_id.tolist()


def test_single_object_one_id_and_min_hits():
    t = SortTracker(SortConfig(min_hits=2, output_warmup=False))
    out = [t.update(dets([box(10 + 5 * k, 100)])) for k in range(10)]
    # created at frame 1, two more consecutive matches -> output from frame 3 on
    assert [len(o) for o in out] == [0, 0] + [1] * 8
    assert {i for o in out for i in ids_of(o)} == {1}
    # output box is the Kalman posterior, close to the detection
    np.testing.assert_allclose(out[-1].xyxy[0], box(55, 100), atol=1.0)
    assert out[-1].hits[0] == 10 and out[-1].age[0] == 9


def test_warmup_outputs_new_tracks_in_first_frames_like_abewley_sort():
    t = SortTracker(SortConfig(min_hits=3, output_warmup=True))
    assert ids_of(t.update(dets([box(10, 10)]))) == [1]
    t2 = SortTracker(SortConfig(min_hits=3, output_warmup=False))
    assert len(t2.update(dets([box(10, 10)]))) == 0


def test_crossing_objects_keep_ids_thanks_to_motion_model():
    t = SortTracker(SortConfig(min_hits=1))
    seen = {"a": set(), "b": set()}
    for k in range(30):
        a = box(100 + 6 * k, 100)          # moving right
        b = box(280 - 6 * k, 120)          # moving left, crossing a at k = 15 (IoU 0.43 there)
        out = t.update(dets([a, b]))
        for tid, xyxy in zip(out.track_id, out.xyxy):
            seen["a" if xyxy[1] < 110 else "b"].add(int(tid))
    assert seen == {"a": {1}, "b": {2}}
    assert t.num_tracks == 2


def test_coasting_track_is_not_output_and_is_recovered():
    t = SortTracker(SortConfig(max_age=5, min_hits=1))
    for k in range(5):
        assert ids_of(t.update(dets([box(10 + 4 * k, 10)])))[-1:] in ([], [1])
    for k in range(5, 8):                   # 3 missed frames: coasting, not output
        assert len(t.update(dets([]))) == 0
        assert t.num_tracks == 1
    out = t.update(dets([box(10 + 4 * 8, 10)]))
    assert ids_of(out) == [1]


def test_track_deleted_after_max_age_gets_new_id():
    t = SortTracker(SortConfig(max_age=2, min_hits=1))
    for k in range(4):
        t.update(dets([box(10, 10)]))
    for _ in range(3):
        t.update(dets([]))
    assert t.num_tracks == 0
    t.update(dets([box(10, 10)]))
    assert ids_of(t.update(dets([box(10, 10)]))) == [2]


def test_tentative_track_dies_at_first_miss():
    t = SortTracker(SortConfig(max_age=30, min_hits=3, output_warmup=False))
    t.update(dets([box(10, 10)]))
    t.update(dets([]))
    assert t.num_tracks == 0
    keep = SortTracker(SortConfig(max_age=30, min_hits=3, delete_tentative_on_miss=False))
    keep.update(dets([box(10, 10)]))
    keep.update(dets([]))
    assert keep.num_tracks == 1


def test_reset_and_per_instance_ids():
    a, b = SortTracker(SortConfig(min_hits=0)), SortTracker(SortConfig(min_hits=0))
    assert ids_of(a.update(dets([box(0, 0), box(100, 0)]))) == [1, 2]
    assert ids_of(b.update(dets([box(0, 0)]))) == [1]
    a.reset()
    assert a.num_tracks == 0 and ids_of(a.update(dets([box(300, 0)]))) == [1]


def test_empty_frames_return_empty_tracks():
    t = build_tracker("sort")
    for _ in range(3):
        out = t.update(Detections.empty())
        assert isinstance(out, Tracks) and len(out) == 0 and out.xyxy.shape == (0, 4)


def test_score_thresholds_and_second_pass():
    cfg = dict(min_hits=1, det_thresh=0.6, new_track_thresh=0.8, output_warmup=False)
    # a 0.7 detection does not start a track, a 0.9 one does
    t = SortTracker(SortConfig(**cfg))
    t.update(dets([box(10, 10)], np.array([0.7])))
    assert t.num_tracks == 0
    for k in range(3):
        out = t.update(dets([box(10 + 2 * k, 10)], np.array([0.9])))
    assert ids_of(out) == [1]
    # a low-score (0.4) detection: dropped without the second pass, matched with it
    plain = SortTracker(SortConfig(**cfg))
    byte = SortTracker(SortConfig(**cfg, low_thresh=0.3))
    for tr in (plain, byte):
        for k in range(3):
            tr.update(dets([box(10 + 2 * k, 10)], np.array([0.9])))
    assert len(plain.update(dets([box(16, 10)], np.array([0.4])))) == 0
    assert ids_of(byte.update(dets([box(16, 10)], np.array([0.4])))) == [1]
    # low-score detections never start tracks
    byte.update(dets([box(500, 500)], np.array([0.4])))
    assert byte.num_tracks == 1


def test_class_aware_matching():
    t = SortTracker(SortConfig(min_hits=0))
    t.update(dets([box(10, 10)], classes=np.array([0], np.int32)))
    out = t.update(dets([box(11, 10)], classes=np.array([2], np.int32)))
    assert ids_of(out) == [2] and out.class_id.tolist() == [2]


def test_memory_is_bounded_over_a_long_run():
    rng = np.random.default_rng(0)
    t = build_tracker("sort", det_thresh=0.0, new_track_thresh=None)
    sizes = []
    for k in range(3000):
        n = rng.integers(0, 8)
        xy = rng.uniform(0, 1000, size=(n, 2))
        out = t.update(dets(np.hstack([xy, xy + 40])))
        sizes.append(t.num_tracks)
        assert len(out) <= n
    # random clutter: tentative tracks die at once, confirmed ones after max_age misses
    assert max(sizes) < 60
    assert not any(isinstance(v, list) for v in vars(t).values())


def test_presets():
    c = build_tracker("sort-ref").config
    assert (c.max_age, c.min_hits, c.iou_threshold) == (1, 3, 0.3)
    assert not c.persistent_confirm and c.output_warmup
    generic, tuned = build_tracker("sort").config, build_tracker("sort-mot15").config
    assert generic.det_thresh == 0.0 and generic.new_track_thresh is None
    assert (tuned.det_thresh, tuned.new_track_thresh) == (0.75, 0.97)
    assert build_tracker("bytetrack").config.low_thresh == 0.1
    assert build_tracker("sort", max_age=5).config.max_age == 5
    with pytest.raises(ValueError, match="unknown SortConfig key"):
        build_tracker("sort", max_ag=3)
    with pytest.raises(ValueError, match="unknown tracker"):
        build_tracker("nope")
