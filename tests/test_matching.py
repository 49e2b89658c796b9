"""Association building blocks on small hand-made cases."""

import numpy as np
import pytest

from trackpipe.trackers import kalman, matching
from trackpipe.models.types import to_xyah


def test_iou_matrix_hand_cases():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 5]], float)      # last: zero area
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    iou = matching.iou_matrix(a, b)
    assert iou.shape == (3, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_allclose(iou[2], [0.0, 0.0, 0.0])
    assert matching.iou_matrix(a[:0], b).shape == (0, 3)
    np.testing.assert_allclose(matching.iou_cost(a[:1], b[:1]), [[0.0]])


def test_linear_assignment_finds_optimum_and_rejects_expensive_pairs():
    cost = np.array([[0.9, 0.1, 0.8],
                     [0.2, 0.3, 0.9],
                     [0.5, 0.4, 0.95]])
    m, ur, uc = matching.linear_assignment(cost, max_cost=0.7)
    # optimum over all: (0,1), (1,0), (2,2) costs 0.1+0.2+0.95; (2,2) is above max_cost
    assert {tuple(x) for x in m} == {(0, 1), (1, 0)}
    assert ur.tolist() == [2] and uc.tolist() == [2]
    # pairs above max_cost must not steer the solution: unclipped, Hungarian would take
    # (0,1)+(1,0) to avoid the 50 and then drop (0,1); clipped, it keeps the good (0,0)
    m, ur, uc = matching.linear_assignment(np.array([[0.1, 5.0], [0.2, 50.0]]), max_cost=0.5)
    assert m.tolist() == [[0, 0]] and ur.tolist() == [1] and uc.tolist() == [1]
    m, ur, uc = matching.linear_assignment(np.zeros((0, 3)), 0.5)
    assert m.shape == (0, 2) and ur.size == 0 and uc.tolist() == [0, 1, 2]


def test_iou_assign_respects_threshold_and_classes():
    tracks = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], float)
    dets = np.array([[1, 1, 11, 11], [101, 101, 111, 111], [300, 300, 310, 310]], float)
    m = matching.iou_assign(tracks, dets, 0.3)
    assert {tuple(x) for x in m} == {(0, 0), (1, 1)}
    m = matching.iou_assign(tracks, dets, 0.3, np.array([0, 1]), np.array([0, 2, 1]))
    assert m.tolist() == [[0, 0]]
    assert matching.iou_assign(tracks, dets, 0.9).shape == (0, 2)


def test_gate_cost_matrix_forbids_implausible_pairs():
    mean, cov = kalman.initiate(to_xyah(np.array([[100, 100, 140, 200]], float)))
    mean, cov = kalman.predict(mean, cov)
    dets = to_xyah(np.array([[102, 101, 142, 201], [400, 100, 440, 200]], float))
    gated = matching.gate_cost_matrix(np.zeros((1, 2)), mean, cov, dets)
    assert gated[0, 0] == 0.0 and gated[0, 1] == matching.INFTY_COST


def test_matching_cascade_gives_priority_to_recent_tracks():
    # Track 0 was updated last frame (tsu 1), track 1 has been lost for 3 frames; both fit
    # detection 0, the lost one even better. Plain Hungarian picks the lost track,
    # the cascade lets the recent track choose first.
    cost = np.array([[0.3], [0.1]])
    tsu = np.array([1, 3])
    m, ur, uc = matching.matching_cascade(cost, max_cost=0.5, cascade_depth=30, time_since_update=tsu)
    assert m.tolist() == [[0, 0]] and ur.tolist() == [1] and uc.size == 0
    m_plain, _, _ = matching.linear_assignment(cost, 0.5)
    assert m_plain.tolist() == [[1, 0]]
    # tracks older than the cascade depth are not matched
    m, ur, _ = matching.matching_cascade(np.array([[0.1]]), 0.5, 2, np.array([3]))
    assert m.shape == (0, 2) and ur.tolist() == [0]


def test_cosine_distance():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[3.0, 0.0], [1.0, 1.0]])
    d = matching.cosine_distance(a, b)
    np.testing.assert_allclose(d, [[0.0, 1 - 1 / np.sqrt(2)], [1.0, 1 - 1 / np.sqrt(2)]], atol=1e-6)


def test_feature_gallery_is_bounded_and_uses_nearest_sample():
    g = matching.FeatureGallery(budget=5)
    rng = np.random.default_rng(0)
    for _ in range(250):
        g.add(np.array([1, 2]), rng.normal(size=(2, 16)))
    assert g.samples(1).shape == (5, 16) and g.samples(2).shape == (5, 16)
    assert sum(b.nbytes for b in g._buf.values()) == 2 * 5 * 16 * 4
    # nearest-neighbour distance: one sample equal to the query -> distance 0
    q = rng.normal(size=(1, 16))
    g.add(np.array([1]), q)
    d = g.distance(np.array([1, 2, 99]), q)
    assert d[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert d[1, 0] > 0.01 and d[2, 0] == matching.INFTY_COST
    g.retain([2])
    assert len(g) == 1 and g.samples(1).shape == (0, 0)
    with pytest.raises(ValueError):
        matching.FeatureGallery(0)
