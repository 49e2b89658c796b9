"""BestFrames: which frames the render stage copies for the events' snapshots, and their JPEGs."""

from __future__ import annotations

import cv2
import numpy as np

from trackpipe.models.types import Tracks
from trackpipe.pipeline.recording.best import BestFrames, encoded

NAMES = ["person", "bicycle", "car"]


def _tracks(ids, scores, classes=None, predicted=None) -> Tracks:
    n = len(ids)
    boxes = np.array([[10 + 30 * i, 10, 40 + 30 * i, 60] for i in range(n)], np.float32).reshape(n, 4)
    return Tracks(xyxy=boxes, score=np.array(scores, np.float32),
                  class_id=np.array(classes if classes is not None else [0] * n, np.int64),
                  track_id=np.array(ids, np.int64),
                  predicted=None if predicted is None else np.array(predicted, bool))


def _frame(value: int, w: int = 1920, h: int = 1080) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def _step(bf: BestFrames, seq: int, t: float, tracks: Tracks) -> list:
    rows = bf.due(tracks, t)
    bf.keep(_frame(seq % 256), seq, t, tracks, rows)
    return rows.tolist()


def test_new_tracks_of_recorded_classes_are_copied_at_once():
    bf = BestFrames(classes=["person", "car"], names=NAMES)
    assert _step(bf, 0, 0.0, _tracks([1, 2, 3], [0.5, 0.5, 0.5], [0, 1, 2])) == [0, 2]   # no bicycle
    assert _step(bf, 1, 0.01, _tracks([1, 3, 4], [0.5, 0.5, 0.4], [0, 2, 0])) == [2]     # 4 is new
    assert bf.due(_tracks([5], [0.9], predicted=[True]), 0.02).tolist() == []        # predicted: no
    assert bf.due(None, 0.03).tolist() == [] and bf.due(_tracks([], []), 0.03).tolist() == []
    assert bf.best[1].image.shape == (540, 960, 3) and bf.kept == 2


def test_better_scores_are_copied_at_most_once_per_interval_unless_a_copy_is_made_anyway():
    bf = BestFrames(min_gain=0.02, interval_s=0.25)
    assert _step(bf, 0, 0.0, _tracks([1, 2], [0.5, 0.5])) == [0, 1]
    assert _step(bf, 1, 0.1, _tracks([1, 2], [0.6, 0.5])) == []           # better, within the interval
    assert _step(bf, 2, 0.2, _tracks([1, 2, 3], [0.6, 0.51, 0.3])) == [0, 2]   # new 3: 1 rides along, 2 gained < 0.02
    assert bf.best[1].seq == 2 and bf.best[2].seq == 0
    assert _step(bf, 3, 0.3, _tracks([1, 2, 3], [0.7, 0.6, 0.3])) == []   # 0.1 s since the last copy
    assert _step(bf, 4, 0.45, _tracks([1, 2, 3], [0.7, 0.6, 0.3])) == [0, 1]
    assert bf.kept == 3 and {k: b.score for k, b in bf.best.items()} == {1: np.float32(0.7), 2: np.float32(0.6),
                                                                         3: np.float32(0.3)}
    every = BestFrames(interval_s=0.0)     # no cap: every gain
    _step(every, 0, 0.0, _tracks([1], [0.5]))
    assert _step(every, 1, 0.0, _tracks([1], [0.6])) == [0]


def test_a_busy_scene_costs_a_copy_per_new_track_plus_one_per_interval():
    """40 tracks whose scores random-walk over 30 s at 30 fps: the copies stay near
    (new tracks + 30 s / interval), less than half of what they are uncapped."""
    rng = np.random.default_rng(0)
    ids = np.arange(1, 41)
    capped, uncapped = BestFrames(interval_s=0.25), BestFrames(interval_s=0.0)
    scores = rng.uniform(0.3, 0.6, len(ids))
    tiny = np.zeros((2, 2, 3), np.uint8)   # the bookkeeping, not the pixels
    for seq in range(900):
        scores = np.clip(scores + rng.normal(0, 0.03, len(ids)), 0.05, 0.99)
        tr = _tracks(ids, scores)
        for bf in (capped, uncapped):
            bf.keep(tiny, seq, seq / 30, tr, bf.due(tr, seq / 30))
    assert capped.kept <= 1 + 30 / 0.25 + 1, capped.kept
    assert uncapped.kept > 2 * capped.kept, (uncapped.kept, capped.kept)


def test_tracks_ending_on_one_frame_share_one_jpeg():
    bf = BestFrames()
    _step(bf, 0, 0.0, _tracks([1, 2], [0.5, 0.5]))
    _step(bf, 1, 0.01, _tracks([3], [0.5]))
    calls = []
    for b in bf.best.values():
        b.jpeg = (lambda f: lambda quality=85: calls.append(1) or f(quality))(b.jpeg)
    out = encoded(bf.ended([1, 2, 3, 9]))
    assert [b.track_id for b, _ in out] == [1, 2, 3] and len(calls) == 2
    assert out[0][1] is out[1][1]
    img = cv2.imdecode(np.frombuffer(out[2][1], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (540, 960, 3) and abs(int(img.mean()) - 1) <= 2
    assert bf.best == {}


def test_a_frame_reclaimed_while_it_was_shrunk_is_not_kept():
    bf = BestFrames()
    tr = _tracks([1], [0.5])
    assert bf.keep(_frame(9), 0, 0.0, tr, bf.due(tr, 0.0), intact=lambda: False) is False
    assert bf.best == {} and bf.kept == 0 and bf.due(tr, 0.0).tolist() == [0]    # still due
    assert bf.keep(_frame(9), 1, 0.04, tr, bf.due(tr, 0.04), intact=lambda: True) is True and bf.kept == 1
