"""Sinks: MOT format, event lifecycle, video file finalised with the source's fps/size, annotator."""

from __future__ import annotations

import json

import cv2
import numpy as np

from trackpipe.models.types import Tracks
from trackpipe.pipeline.drawing.boxes import BoxAnnotator
from trackpipe.pipeline.events.jsonl import EventFile, EventFileConfig
from trackpipe.pipeline.media.mot import MotWriter


def _tracks(ids, x=10.0):
    n = len(ids)
    xyxy = np.array([[x + 50 * k, 20, x + 50 * k + 30, 80] for k in range(n)], np.float32).reshape(-1, 4)
    return Tracks(xyxy, np.full(n, 0.75, np.float32), np.zeros(n, np.int32), track_id=np.array(ids, np.int64))


def test_mot_format(tmp_path):
    p = tmp_path / "sub" / "t.txt"
    w = MotWriter(str(p))
    w.write(1, _tracks([1, 2]))
    w.write(2, Tracks.empty())
    w.write(3, _tracks([2]))
    w.close()
    w.close()
    lines = p.read_text().splitlines()
    assert lines == ["1,1,10.00,20.00,30.00,60.00,0.7500,-1,-1,-1", "1,2,60.00,20.00,30.00,60.00,0.7500,-1,-1,-1",
                     "3,2,10.00,20.00,30.00,60.00,0.7500,-1,-1,-1"]


def test_video_of_frames_of_several_sizes(tmp_path):
    """render writes every frame through fit_frame into the VideoWriter: a frame of another size
    (image folders) is placed top-left on black, shrunk only if it is larger, never dropped."""
    from trackpipe.pipeline.stages.render import fit_frame
    from trackpipe.pipeline.video import VideoWriter
    p = tmp_path / "v.mp4"
    v = VideoWriter.open(str(p), 25.0, (240, 320))
    frames = [np.full((240, 320, 3), i * 20, np.uint8) for i in range(10)]
    frames += [np.full((100, 100, 3), 255, np.uint8), np.zeros((480, 640, 3), np.uint8)]
    for f in frames:
        v.write(fit_frame(f, v.frame_hw))
    v.close()
    v.close()
    placed = fit_frame(frames[10], (240, 320))
    assert placed.shape == (240, 320, 3) and placed[:100, :100].min() == 255 and placed[100:, 100:].max() == 0
    assert fit_frame(frames[11], (240, 320)).shape == (240, 320, 3)
    cap = cv2.VideoCapture(str(p))
    assert cap.get(cv2.CAP_PROP_FPS) == 25.0
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 240)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 12


def test_annotator_draws_in_place():
    img = np.zeros((200, 300, 3), np.uint8)
    out = BoxAnnotator(["person"]).annotate(img, _tracks([1, 2]))
    assert out is img and img.any()
    assert not BoxAnnotator().annotate(np.zeros((10, 10, 3), np.uint8), Tracks.empty()).any()


def _pred_tracks(ids, predicted, x=10.0):
    t = _tracks(ids, x)
    t.predicted = np.array(predicted, bool)
    return t


def test_mot_predicted_rows_flagged_conf_minus_one(tmp_path):
    p = tmp_path / "t.txt"
    w = MotWriter(str(p))
    w.write(1, _pred_tracks([1, 2], [False, True]))
    w.close()
    assert p.read_text().splitlines() == ["1,1,10.00,20.00,30.00,60.00,0.7500,-1,-1,-1",
                                          "1,2,60.00,20.00,30.00,60.00,-1.0000,-1,-1,-1"]
    assert w.predicted == 1 and w.rows == 2


def test_interpolate_mot_file_fills_gaps_atomically_and_stays_readable(tmp_path):
    """Id 1 observed at frames 1 and 5 (predicted at 2-3, missing at 4): frames 2-4 become
    interpolated rows (conf 0) on the straight line; id 2's gap of 4 > max_gap 3 stays open; the
    predicted row after id 2's last observation is kept. The result reads back with the trackers'
    own MOT reader and py-motmetrics (min_confidence=0 drops only the predicted rows)."""
    from trackpipe.pipeline.media.mot import interpolate_mot_file
    from trackpipe.trackers.mot import read_mot_file
    p = tmp_path / "t.txt"
    w = MotWriter(str(p))
    w.write(1, _tracks([1], x=10.0))
    w.write(2, _pred_tracks([1], [True], x=12.0))
    w.write(3, _pred_tracks([1], [True], x=14.0))
    w.write(5, _tracks([1], x=50.0))
    w.write(6, _tracks([2], x=200.0))
    w.write(11, _tracks([2], x=210.0))
    w.write(12, _pred_tracks([2], [True], x=212.0))
    w.close()
    before = p.read_text()
    res = interpolate_mot_file(str(p), 3)
    assert res == {"rows_before": 7, "rows_after": 8, "interpolated": 3}
    assert not (tmp_path / "t.txt.part").exists()
    rows = read_mot_file(p, kind="res")
    id1 = rows[rows[:, 1] == 1]
    assert id1[:, 0].tolist() == [1, 2, 3, 4, 5]
    assert id1[:, 2].tolist() == [10.0, 20.0, 30.0, 40.0, 50.0]        # linear, predicted rows replaced
    assert id1[:, 6].tolist() == [0.75, 0.0, 0.0, 0.0, 0.75]
    id2 = rows[rows[:, 1] == 2]
    assert id2[:, 0].tolist() == [6, 11, 12] and id2[-1, 6] == -1.0
    import motmetrics as mm
    scored = mm.io.loadtxt(str(p), fmt="mot15-2D", min_confidence=0)
    assert len(scored) == 7 and len(mm.io.loadtxt(str(p), fmt="mot15-2D")) == 8
    # off (0) or an empty file: nothing changes
    assert interpolate_mot_file(str(p), 0)["interpolated"] == 0
    (tmp_path / "e.txt").write_text("")
    assert interpolate_mot_file(str(tmp_path / "e.txt"), 5)["rows_after"] == 0
    assert before != p.read_text()


# --- a full disk stops a file, never the caller; nothing half-written; a restart appends ---------

def _disk(tmp_path):
    from tests.tmpfs import small_disk
    return small_disk(tmp_path / "disk", "1m")


def test_mot_rows_reach_the_file_at_least_every_flush_interval(tmp_path):
    import time
    p = tmp_path / "t.txt"
    held = MotWriter(str(tmp_path / "held.txt"), flush_s=3600)
    held.write(1, _tracks([1]))
    assert (tmp_path / "held.txt").read_text() == ""     # buffered until its interval passed
    held.close()
    assert len((tmp_path / "held.txt").read_text().splitlines()) == 1
    w = MotWriter(str(p))                       # default: at least once a second
    w.write(1, _tracks([1]))
    time.sleep(1.05)
    w.write(2, _tracks([1]))                    # a second has passed: both rows are in the file
    assert [ln.split(",")[0] for ln in p.read_text().splitlines()] == ["1", "2"]
    w.write(3, _tracks([1]))
    w.flush()                                   # the sink's flush (track_ended, idle)
    assert len(p.read_text().splitlines()) == 3
    w.close()


def test_mot_append_keeps_rows_and_cuts_a_half_written_line(tmp_path):
    """A restarted sink appends (never truncates); a last line cut short by a kill is removed
    so that every line of the file stays a whole MOT row."""
    p = tmp_path / "t.txt"
    w = MotWriter(str(p))
    w.write(1, _tracks([1, 2]))
    w.close()
    with open(p, "a") as f:
        f.write("2,1,10.0")                    # a half-written row
    w = MotWriter(str(p), append=True)
    w.write(3, _tracks([1]))
    w.close()
    assert [ln.split(",")[0] for ln in p.read_text().splitlines()] == ["1", "1", "3"]
    assert MotWriter(str(p)).close() is None and p.read_text() == ""   # a first start truncates


def test_mot_on_a_full_disk_stops_with_one_line_and_resumes(tmp_path, caplog):
    """A real 1 MB tmpfs: a flush that hits ENOSPC leaves no partial row, the file stops with
    one warning, rows meanwhile are counted as lost, and writing resumes once there is room."""
    import logging

    from trackpipe.trackers.mot import read_mot_file

    from tests.tmpfs import fill
    with _disk(tmp_path) as disk:
        p = disk / "t.txt"
        w = MotWriter(str(p), flush_s=0.0, retry_s=0.0)
        w.write(1, _tracks([1, 2]))
        filler = fill(disk, leave=0)
        with caplog.at_level(logging.INFO, logger="trackpipe.pipeline.media.outputs"):
            for frame in range(2, 400):         # ~20 KB of rows: more than one page
                w.write(frame, _tracks(list(range(1, 20))))
            assert w.state.to_dict()["state"] == "stopped" and w.state.reason == "No space left on device"
            assert w.state.lost > 0 and w.state.stops == 1
            assert p.read_text().endswith("\n")     # cut back to its last whole row
            filler.unlink()                     # room again: the next write resumes
            w.write(500, _tracks([7]))
            w.close()
        stopped = [r for r in caplog.records if "stopped" in r.getMessage()]
        assert len(stopped) == 1 and "No space left on device" in stopped[0].getMessage()
        assert any("written again" in r.getMessage() for r in caplog.records)
        assert w.state.state == "resumed"
        rows = read_mot_file(p, kind="res")
        assert rows[:2, 0].tolist() == [1, 1] and rows[-1, :2].tolist() == [500, 7]
        assert all(len(ln.split(",")) == 10 for ln in p.read_text().splitlines())


def test_events_on_a_full_disk_no_half_line_counted(tmp_path):
    from tests.tmpfs import fill
    with _disk(tmp_path) as disk:
        p = disk / "e.jsonl"
        ev = EventFile(EventFileConfig(str(p)))
        ev.offer({"event": "source_lost", "t": 1.0, "seq": 0, "reason": "x" * 100})
        fill(disk, leave=0)
        for k in range(100):
            ev.offer({"event": "source_lost", "t": 1.0, "seq": k, "reason": "x" * 100})
        ev.close()
        lines = p.read_text().splitlines()
        assert all(json.loads(ln)["event"] == "source_lost" for ln in lines)
        assert ev.state.state == "stopped" and ev.state.lost + len(lines) == 101 and ev.count == 101


def test_a_restarted_writer_on_an_unwritable_disk_stops_instead_of_raising(tmp_path):
    """append (a restarted sink): a file that cannot even be opened is a stopped output; a first
    start (no append) raises, so that a bad path is one clear error."""
    import pytest
    blocker = tmp_path / "f"
    blocker.write_text("a file where a folder should be")
    w = MotWriter(str(blocker / "t.txt"), append=True)
    w.write(1, _tracks([1]))
    w.close()
    assert w.state.state == "stopped" and w.state.lost == 1
    with pytest.raises(OSError):
        MotWriter(str(blocker / "t.txt"))


def test_a_restarted_writer_on_a_read_only_disk_resumes_when_it_is_writable(tmp_path):
    """EROFS: a restarted sink's MOT file on a disk remounted read-only is stopped (not an error),
    and is appended to once the disk is writable again."""
    import subprocess

    with _disk(tmp_path) as disk:
        p = disk / "t.txt"
        w = MotWriter(str(p), flush_s=0.0)
        w.write(1, _tracks([1]))
        w.close()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        w = MotWriter(str(p), append=True, flush_s=0.0, retry_s=0.0)
        w.write(2, _tracks([1]))
        assert w.state.state == "stopped" and w.state.reason == "Read-only file system" and w.state.lost == 1
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        w.write(3, _tracks([1]))
        w.close()
        assert w.state.state == "resumed"
        assert [ln.split(",")[0] for ln in p.read_text().splitlines()] == ["1", "3"]
