"""SnapshotWriter: which tracks are new, file names, pixels, and a failing disk."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from trackpipe.models.types import Tracks
from trackpipe.pipeline.media.snapshots import SnapshotWriter

NAMES = ["person", "bicycle", "car"]


def _tracks(ids, classes, boxes=None) -> Tracks:
    n = len(ids)
    boxes = np.array(boxes if boxes is not None else [[10 + 30 * i, 10, 40 + 30 * i, 60] for i in range(n)],
                     np.float32).reshape(n, 4)
    return Tracks(xyxy=boxes, score=np.full(n, 0.9, np.float32), class_id=np.array(classes, np.int64),
                  track_id=np.array(ids, np.int64))


def test_due_only_new_ids_of_chosen_classes(tmp_path):
    w = SnapshotWriter(str(tmp_path), classes=[0, 2], names=NAMES)
    assert w.due(0, _tracks([1, 2, 3], [0, 1, 2])).tolist() == [0, 2]      # the bicycle is not chosen
    assert w.due(1, _tracks([1, 2, 3, 4], [0, 1, 2, 0])).tolist() == [3]   # only id 4 is new
    assert w.due(2, None).tolist() == [] and w.due(3, _tracks([], [])).tolist() == []
    everything = SnapshotWriter(str(tmp_path / "all"))
    assert everything.due(0, _tracks([5, 6], [1, 2])).tolist() == [0, 1]


def test_ids_are_forgotten_after_a_while_and_unsee(tmp_path):
    w = SnapshotWriter(str(tmp_path), forget_after=100)
    w.due(0, _tracks([1], [0]))
    for seq in range(1, 300):  # id 1 unseen since seq 0: forgotten, memory stays bounded
        w.due(seq, _tracks([], []))
    assert 1 not in w.seen and w.due(300, _tracks([1], [0])).tolist() == [0]
    w.unsee(np.array([1]))
    assert w.due(301, _tracks([1], [0])).tolist() == [0]


def test_write_names_pixels_and_frame_untouched(tmp_path):
    w = SnapshotWriter(str(tmp_path / "snaps"), names=NAMES, quality=95)
    frame = np.full((120, 160, 3), 80, np.uint8)
    before = frame.copy()
    tr = _tracks([7, 8], [0, 2], [[20, 20, 60, 100], [100, 10, 150, 50]])
    paths = w.write(frame, 42, 1_795_000_000.25, tr, np.array([1]))
    assert np.array_equal(frame, before)
    assert [p.name[-len("_seq0000042_id8_car.jpg"):] for p in paths] == ["_seq0000042_id8_car.jpg"]
    assert paths[0].name.split("_")[0].endswith(".250")  # milliseconds of t_capture
    img = cv2.imread(str(paths[0]))
    assert img.shape == frame.shape
    assert np.abs(img[30:40, 55:65].astype(int) - 80).max() < 6     # id 7 (not new) has no box
    assert np.abs(img[10:50, 100].astype(int) - 80).max() > 40      # id 8's box edge is drawn
    assert w.written == 1 and not list((tmp_path / "snaps").glob("*.part"))


def test_a_failing_disk_is_counted_not_raised(tmp_path):
    w = SnapshotWriter(str(tmp_path / "snaps"))
    (tmp_path / "snaps").rmdir()
    (tmp_path / "snaps").write_text("now a file")  # every write fails with ENOTDIR
    frame = np.zeros((64, 64, 3), np.uint8)
    assert w.write(frame, 0, 0.0, _tracks([1], [0]), np.array([0])) == []
    assert w.errors == 1 and w.written == 0


def test_best_frames_keep_a_tracks_best_frame_clean_and_only_for_recorded_classes():
    from trackpipe.pipeline.recording.best import BestFrames
    best = BestFrames(classes=["car"], names=NAMES, min_gain=0.05, max_width=80, interval_s=0.0)
    frame = np.full((120, 160, 3), 80, np.uint8)
    frame[10:50, 100:150] = 200                                  # the object
    tr = _tracks([7, 8], [0, 2], [[20, 20, 60, 100], [100, 10, 150, 50]])
    tr.score[:] = [0.9, 0.6]
    assert best.due(tr, 1.25).tolist() == [1]                    # the person is not recorded
    best.keep(frame, 5, 1.25, tr, best.due(tr, 1.25))
    frame[:] = 0                                                 # render draws on it next: the kept copy is its own
    tr.score[1] = 0.63
    assert best.due(tr, 1.3).tolist() == []                      # not better by min_gain
    tr.score[1], tr.predicted[1] = 0.9, True
    assert best.due(tr, 1.35).tolist() == []                     # a predicted box never scores
    assert best.ended([7]) == []
    [b] = best.ended([8])
    assert (b.track_id, b.seq, b.t, b.box.tolist()) == (8, 5, 1.25, [100, 10, 150, 50])
    assert b.score == pytest.approx(0.6) and best.best == {}
    img = cv2.imdecode(np.frombuffer(b.jpeg(), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (60, 80, 3)                              # shrunk to max_width (the API scales the box)
    assert abs(int(img[15, 62, 0]) - 200) < 12 and abs(int(img[50, 20, 0]) - 80) < 12   # the object, clean
    assert np.ptp(img.astype(int), axis=2).max() < 20           # no box drawn (no colour)
