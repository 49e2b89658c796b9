"""HybridTracker (the default): OC-SORT / ByteTrack steps, relative thresholds, predicted output,
lifecycle events, the independent-images tracker, and gap interpolation."""

import dataclasses

import numpy as np
import pytest
from trackpipe.models.types import Detections, Tracks, to_xyah
from trackpipe.trackers import kalman
from trackpipe.trackers.factory import build_tracker
from trackpipe.trackers.hybrid import HybridConfig, HybridTracker
from trackpipe.trackers.interpolate import INTERPOLATED, OBSERVED, PREDICTED, interpolate_gaps
from trackpipe.trackers.lifecycle import LifecycleLog


def dets(boxes, scores=None, classes=None):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    n = len(boxes)
    return Detections(boxes, np.full(n, 0.95) if scores is None else np.asarray(scores, float),
                      np.zeros(n, np.int32) if classes is None else classes)


def box(x, y, w=20, h=50):
    return [x, y, x + w, y + h]


def plain(**kw):
    """Hybrid with every optional step off unless asked for (score_floor 0.5 like MOT15)."""
    base = dict(score_floor=0.5, score_norm="linear", high_rel=0.5, new_rel=None, low_rel=None,
                inertia=0.0, recovery=False, reupdate=False, min_hits=1, output_warmup=False,
                max_predict=0)
    base.update(kw)
    return HybridTracker(HybridConfig(**base))


def test_quantile_scale_follows_the_detector_score_distribution():
    from trackpipe.trackers.scores import ScoreNormalizer

    rng = np.random.default_rng(0)
    low_scores = rng.uniform(0.25, 0.45, 5000)        # a detector that never scores high
    q = ScoreNormalizer(0.25, "quantile", prior_weight=100)
    first = q(np.array([0.35]))[0]
    assert first == pytest.approx(0.1 / 0.75 * 100 / 101 + 0.5 / 101, abs=0.01)   # ~linear at start
    for chunk in np.split(low_scores, 50):
        q(chunk)
    assert q.seen == pytest.approx(5001)
    # its median becomes rel 0.5, its 90th percentile rel 0.9 (prior: 100 of 5101)
    assert q(np.array([0.35]))[0] == pytest.approx(0.5, abs=0.03)
    assert q.threshold_for(0.9) == pytest.approx(np.quantile(low_scores, 0.9), abs=0.02)
    lin = ScoreNormalizer(0.25, "linear")
    np.testing.assert_allclose(lin(np.array([0.25, 0.625, 1.0])), [0, 0.5, 1])
    with pytest.raises(ValueError):
        ScoreNormalizer(0.25, "rank")


def test_one_object_one_id_confirmation_delay():
    t = plain(min_hits=2)
    out = [t.update(dets([box(10 + 5 * k, 100)])) for k in range(8)]
    assert [len(o) for o in out] == [0, 0] + [1] * 6
    assert {int(i) for o in out for i in o.track_id} == {1}
    np.testing.assert_allclose(out[-1].xyxy[0], box(45, 100), atol=1.0)
    assert not out[-1].predicted.any()


def test_missed_confirmed_track_is_output_at_its_predicted_box_then_recovered():
    t = plain(max_predict=3, max_age=10)
    for k in range(6):
        t.update(dets([box(10 + 5 * k, 100)]))
    outs = [t.update(dets([])) for _ in range(5)]
    assert [len(o) for o in outs] == [1, 1, 1, 0, 0]          # max_predict frames, then hidden
    for k, o in enumerate(outs[:3]):
        assert o.predicted.tolist() == [True] and o.track_id.tolist() == [1]
        # constant velocity: 5 px per frame along x
        assert o.xyxy[0, 0] == pytest.approx(10 + 5 * (6 + k), abs=2.0)
    np.testing.assert_array_equal(t.last_predicted, [])
    back = t.update(dets([box(10 + 5 * 11, 100)]))
    assert back.track_id.tolist() == [1] and back.predicted.tolist() == [False]


def test_max_predict_zero_outputs_only_matched_tracks():
    t = plain(max_predict=0)
    for k in range(4):
        t.update(dets([box(10, 10)]))
    assert len(t.update(dets([]))) == 0 and t.num_tracks == 1


@pytest.mark.parametrize("norm", ["quantile", "linear"])
def test_relative_thresholds_are_invariant_to_the_detector_score_scale(norm):
    """The same relative config on two score scales (floor 0.5 vs 0.25, scores mapped
    affinely) gives identical tracks: thresholds follow the detector's conf."""
    rng = np.random.default_rng(3)
    frames = []
    for k in range(60):
        n = rng.integers(0, 6)
        xy = rng.uniform(0, 300, (n, 2)) + k
        frames.append((np.hstack([xy, xy + 30]), rng.uniform(0, 1, n)))
    cfg = dict(high_rel=0.5, new_rel=0.8, low_rel=0.1, inertia=0.2, recovery=True, reupdate=True,
               score_norm=norm)
    a = HybridTracker(HybridConfig(score_floor=0.5, **cfg))
    b = HybridTracker(HybridConfig(score_floor=0.25, **cfg))
    for xyxy, rel in frames:
        ta = a.update(Detections(xyxy, 0.5 + 0.5 * rel, np.zeros(len(rel), np.int32)))
        tb = b.update(Detections(xyxy, 0.25 + 0.75 * rel, np.zeros(len(rel), np.int32)))
        assert ta.track_id.tolist() == tb.track_id.tolist()
        np.testing.assert_allclose(ta.xyxy, tb.xyxy)
    if norm == "linear":
        assert b.thresholds()["high"] == pytest.approx(0.625)


def test_score_thresholds_births_and_second_pass():
    # rel = (s - 0.5) / 0.5: 0.7 -> 0.4 (low), 0.95 -> 0.9 (high)
    t = plain(high_rel=0.5, new_rel=0.8)
    t.update(dets([box(10, 10)], [0.8]))                    # rel 0.6: high, but below new_rel
    assert t.num_tracks == 0
    byte = plain(low_rel=0.0)
    nobyte = plain()
    for tr in (byte, nobyte):
        for k in range(3):
            tr.update(dets([box(10 + 2 * k, 10)], [0.95]))
    assert byte.update(dets([box(16, 10)], [0.7])).track_id.tolist() == [1]
    assert len(nobyte.update(dets([box(16, 10)], [0.7]))) == 0
    byte.update(dets([box(500, 500)], [0.7]))               # low scores never start tracks
    assert byte.num_tracks == 1


def test_recovery_by_last_observation_after_the_prediction_drifted():
    """OCR: a walker stops behind an occluder; the prediction runs on, the last observed box
    still overlaps the re-detection."""
    def run(recovery):
        t = plain(recovery=recovery, max_age=30, iou_threshold=0.3)
        for k in range(10):
            t.update(dets([box(100 + 8 * k, 100)]))
        for _ in range(6):
            t.update(dets([]))
        return t.update(dets([box(100 + 8 * 9 + 2, 100)])).track_id.tolist()
    assert run(True) == [1]
    assert run(False) == []          # a new tentative track instead


def test_reupdate_runs_the_filter_along_the_virtual_trajectory():
    """ORU: a track matched again after a gap of g frames ends in the state of a filter that
    got g observations on the line from its last observation to the new one."""
    t = plain(reupdate=True, recovery=True, max_age=30, iou_threshold=0.1)
    for k in range(10):
        t.update(dets([box(100 + 6 * k, 100, 60, 120)]))
    post_mean, post_cov = t._t.mean.copy(), t._t.cov.copy()
    for _ in range(4):
        t.update(dets([]))
    new = box(100 + 6 * 9 + 6, 100, 60, 120)
    t.update(dets([new]))
    p = t.config.kalman
    z0 = kalman.to_state(to_xyah(np.array([box(154, 100, 60, 120)], float)), p.space)[0]
    z1 = kalman.to_state(to_xyah(np.array([new], float)), p.space)[0]
    m, c = post_mean, post_cov
    for i in range(1, 6):
        m, c = kalman.predict(m, c, p)
        m, c = kalman.update(m, c, (z0 + (z1 - z0) * i / 5)[None], p)
    np.testing.assert_allclose(t._t.mean, m, rtol=1e-9)
    np.testing.assert_allclose(t._t.cov, c, rtol=1e-9)
    # without ORU the same re-match is one plain update of the coasted state
    u = plain(reupdate=False, recovery=True, max_age=30, iou_threshold=0.1)
    for k in range(10):
        u.update(dets([box(100 + 6 * k, 100, 60, 120)]))
    for _ in range(4):
        u.update(dets([]))
    coast_m, coast_c = kalman.predict(u._t.mean, u._t.cov, p)
    u.update(dets([new]))
    np.testing.assert_allclose(u._t.mean, kalman.update(coast_m, coast_c, z1[None], p)[0], rtol=1e-9)


def test_direction_consistency_keeps_ids_of_crossing_objects():
    t = HybridTracker(HybridConfig(score_floor=0.5, min_hits=1, inertia=0.2))
    seen = {"a": set(), "b": set()}
    for k in range(30):
        out = t.update(dets([box(100 + 6 * k, 100), box(280 - 6 * k, 110)]))
        for tid, xyxy, p in zip(out.track_id, out.xyxy, out.predicted):
            if not p:
                seen["a" if xyxy[1] < 105 else "b"].add(int(tid))
    assert seen == {"a": {1}, "b": {2}}


def test_xywh_state_follows_a_box_that_changes_shape():
    """A box widening 2 px per frame: xywh (BoT-SORT) follows it; xyah (DeepSORT: nearly
    constant aspect ratio) lags behind by several pixels."""
    err = {}
    for space in ("xyah", "xywh"):
        p = dataclasses.replace(HybridConfig().kalman, space=space)
        t = HybridTracker(HybridConfig(score_floor=0.5, min_hits=1, kalman=p))
        for k in range(20):
            out = t.update(dets([[100 + 3 * k, 100, 140 + 5 * k, 200]]))
        assert out.track_id.tolist() == [1]
        err[space] = np.abs(out.xyxy[0] - [157, 100, 235, 200]).max()
    assert err["xywh"] < 2.0
    assert err["xyah"] > 5.0


def test_xywh_noise_is_bot_sort_s():
    p = kalman.KalmanParams(space="xywh")
    mean, cov = kalman.initiate(np.array([[50.0, 60.0, 20.0, 40.0]]), p)
    w, h = 20.0, 40.0
    std = np.array([2 * w / 20, 2 * h / 20, 2 * w / 20, 2 * h / 20,
                    10 * w / 160, 10 * h / 160, 10 * w / 160, 10 * h / 160])
    np.testing.assert_allclose(np.diag(cov[0]), std ** 2)
    m2, c2 = kalman.predict(mean, cov, p)
    q = np.array([w / 20, h / 20, w / 20, h / 20, w / 160, h / 160, w / 160, h / 160]) ** 2
    f = kalman.transition()
    np.testing.assert_allclose(c2[0], f @ cov[0] @ f.T + np.diag(q))
    with pytest.raises(ValueError, match="space"):
        kalman.KalmanParams(space="xysr")


def _random_scene(seed, n_frames=400):
    """Objects that walk, vanish for random gaps (some longer than max_age) and come back."""
    rng = np.random.default_rng(seed)
    objs = [dict(p=rng.uniform(0, 600, 2), v=rng.normal(0, 3, 2)) for _ in range(8)]
    for k in range(n_frames):
        boxes, scores = [], []
        for o in objs:
            o["p"] += o["v"]
            if rng.random() < 0.75 and (k // 50) % 4 != 3:
                boxes.append(np.r_[o["p"], o["p"] + [30, 70]] + rng.normal(0, 1.5, 4))
                scores.append(rng.uniform(0.5, 1.0))
        yield dets(np.array(boxes).reshape(-1, 4), scores)


@pytest.mark.parametrize("name", ["hybrid", "sort", "sort-ref", "deepsort"])
def test_one_start_and_one_end_per_id(name):
    t = build_tracker(name, **({"score_floor": 0.5, "max_age": 20} if name == "hybrid" else {}))
    log = LifecycleLog()
    started, ended, output = [], [], set()
    for d in _random_scene(1):
        out = t.update(d)
        ev = log.step(out.track_id, t.live_track_ids)
        started += ev.started.tolist()
        ended += ev.ended.tolist()
        ids = set(out.track_id.tolist())
        assert not ids & set(ended), "an ended id was output again"
        output |= ids
    ended += log.finish().ended.tolist()
    assert sorted(started) == sorted(set(started)) == sorted(output)
    assert sorted(ended) == sorted(set(ended)) == sorted(output)
    assert len(output) > 8        # the gaps longer than max_age do end tracks


def test_hybrid_events_property_and_memory_bound():
    t = build_tracker("hybrid", score_floor=0.5)
    n_started = n_ended = 0
    sizes = []
    for d in _random_scene(2, 1500):
        t.update(d)
        n_started += len(t.events.started)
        n_ended += len(t.events.ended)
        sizes.append(t.num_tracks)
    n_ended += len(t.finish().ended)
    assert n_started == n_ended > 0
    assert max(sizes) < 60


def test_independent_images_output_every_detection_at_once():
    t = build_tracker("independent")
    a = t.update(dets([box(0, 0), box(50, 0)], [0.3, 0.9]))
    assert a.track_id.tolist() == [1, 2] and not a.predicted.any()
    assert t.events.started.tolist() == [1, 2] == t.events.ended.tolist()
    b = t.update(dets([box(0, 0)], [0.4]))                   # same place, unrelated image
    assert b.track_id.tolist() == [3]
    assert len(t.update(Detections.empty())) == 0
    assert build_tracker("independent", min_score=0.5).update(dets([box(0, 0)], [0.3])).track_id.size == 0


def test_tracks_predicted_field_is_backward_compatible():
    tr = Tracks(np.zeros((2, 4)), np.ones(2), np.zeros(2, np.int32), track_id=np.array([1, 2]))
    assert tr.predicted.tolist() == [False, False]
    assert tr[np.array([False, True])].predicted.tolist() == [False]
    with pytest.raises(ValueError):
        Tracks(np.zeros((2, 4)), np.ones(2), np.zeros(2, np.int32), track_id=np.array([1, 2]),
               predicted=np.array([True]))


def test_interpolate_gaps_fills_short_gaps_and_replaces_predicted_rows():
    def row(f, i, x, pred=False):
        return [f, i, x, 10, 20, 40, 1, -1, -1, -1], pred
    items = [row(1, 1, 0), row(2, 1, 10, True), row(3, 1, 20, True), row(4, 1, 30),   # gap 2
             row(5, 1, 40, True),                                                   # trailing
             row(1, 2, 100), row(8, 2, 170)]                                        # gap 6
    rows = np.array([r for r, _ in items], float)
    pred = np.array([p for _, p in items])
    out, src = interpolate_gaps(rows, 3, pred)
    one = out[out[:, 1] == 1]
    assert one[:, 0].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(one[:, 2], [0, 10, 20, 30, 40])
    assert src[out[:, 1] == 1].tolist() == [OBSERVED, INTERPOLATED, INTERPOLATED, OBSERVED, PREDICTED]
    assert out[out[:, 1] == 2][:, 0].tolist() == [1, 8]       # 6 > max_gap: not filled
    out6, src6 = interpolate_gaps(rows, 6, pred)
    two = out6[out6[:, 1] == 2]
    np.testing.assert_allclose(two[:, 2], [100, 110, 120, 130, 140, 150, 160, 170])
    assert (src6 == INTERPOLATED).sum() == 2 + 6
    assert np.all(np.diff(out6[:, 0]) >= 0)                   # sorted by frame
    same, s0 = interpolate_gaps(rows, 0, pred)
    assert len(same) == len(rows) and (s0 == PREDICTED).sum() == 3
    with pytest.raises(ValueError):
        interpolate_gaps(rows, -1)


def test_config_validation():
    for bad in (dict(score_floor=1.0), dict(high_rel=1.5), dict(low_rel=0.6, high_rel=0.5),
                dict(max_predict=40, max_age=30), dict(output_box="x"), dict(delta_t=0)):
        with pytest.raises(ValueError):
            HybridConfig(**bad)
    with pytest.raises(ValueError, match="unknown HybridConfig key"):
        build_tracker("hybrid", nope=1)


def test_encoder_is_selectable_from_a_config_string(tmp_path):
    from trackpipe.trackers.encoders import HistogramEncoder

    assert isinstance(build_tracker("deepsort", encoder="hist").encoder, HistogramEncoder)
    assert build_tracker("deepsort", encoder="none").encoder is None
    with pytest.raises(FileNotFoundError, match="mars-small128"):
        build_tracker("deepsort", encoder=f"mars:{tmp_path / 'mars-small128.pb'}")
    with pytest.raises(FileNotFoundError, match="ONNX re-ID model"):
        build_tracker("deepsort", encoder={"name": "onnx", "path": str(tmp_path / "x.onnx")})
    with pytest.raises(ValueError, match="unknown encoder"):
        build_tracker("deepsort", encoder="sift")
