"""Outputs that degrade instead of dying, and nothing written lost on a crash.

Real components: ``run_tracker.py`` as a subprocess (Yolo-Fastest, a real video played at its
frame rate in a loop), a real tmpfs of 2 MB as the full disk, real SIGKILLs. Unit tests of the
snapshot and profile writers on a real tmpfs too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import cv2
import numpy as np
import pytest
from conftest import VIDEO_360, leftovers

from tests.procs import metrics, wait_for
from tests.test_run_tracker import MODEL, _stage_pid, _start, _stderr, _wait_group_gone
from tests.tmpfs import fill, small_disk

LIVE = ["--source", str(VIDEO_360), "--realtime", "--loop", "--headless", *MODEL]


def _lines(path) -> list:
    """Whole lines of a file being written (a last line without its newline is left out)."""
    if not path.exists():
        return []
    text = path.read_text()
    return text[:text.rfind("\n") + 1].splitlines()


def _events(path) -> list:
    return [json.loads(ln) for ln in _lines(path)]


def _mot(path) -> np.ndarray:
    rows = [ln.split(",") for ln in _lines(path)]
    assert all(len(r) == 10 for r in rows), "a MOT line that is not a whole row"
    return np.array(rows, np.float64).reshape(-1, 10)


def _wait(cond, timeout: float, what: str, tmp_path):
    """`wait_for`, with the run's stderr in the message when it times out."""
    try:
        return wait_for(cond, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}; stderr:\n{_stderr(tmp_path)}") from None


def _decoded(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(150)
def test_a_full_disk_stops_the_video_only_and_it_resumes_in_a_new_part(tmp_path):
    """The annotated video on a 2 MB tmpfs that fills ~4 s into a live run: one log line, the
    video's state in the profile and the metrics, detection/MOT/events go on (they are on another
    disk); once space returns the video continues in out.part1.mp4; the run reaches its duration
    with exit 0 and leaves no empty part file."""
    port = _free_port()
    with small_disk(tmp_path / "disk", "2m") as disk:
        filler = fill(disk, leave=384 << 10)
        out, mot, ev = disk / "out.mp4", tmp_path / "t.txt", tmp_path / "e.jsonl"
        p = _start([*LIVE, "--duration", "18", "--output", str(out), "--mot", str(mot), "--events", str(ev),
                    "--profile", str(tmp_path / "p.json"), "--metrics-port", str(port)], tmp_path)
        try:
            _wait(lambda: "No space left on device" in _stderr(tmp_path), 90, "the video to stop", tmp_path)
            t_stopped = time.time()
            assert p.poll() is None
            up = 'trackpipe_output_up{camera="cam0",output="video"}'
            _wait(lambda: metrics(port).get(up) == 0.0, 10, "trackpipe_output_up 0 for the video", tmp_path)
            filler.unlink()                      # room again
            _wait(lambda: "is written again" in _stderr(tmp_path), 30, "the video to resume", tmp_path)
            assert p.wait(60) == 0, _stderr(tmp_path)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        _wait_group_gone(p, 5.0)
        err = _stderr(tmp_path)
        assert "Traceback" not in err
        lines = err.splitlines()
        stops = [k for k, ln in enumerate(lines) if "No space left on device" in ln]
        resumed = next(k for k, ln in enumerate(lines) if "is written again" in ln)
        assert sum(k < resumed for k in stops) == 1, err     # one line until the disk had room again
        videos = sorted(f.name for f in disk.iterdir() if f.suffix == ".mp4")
        assert videos == ["out.mp4", "out.part1.mp4"], videos    # no empty part beside them
        in_main, in_part = _decoded(out), _decoded(disk / "out.part1.mp4")
        assert in_main >= 30 and in_part >= 30
    prof = json.loads((tmp_path / "p.json").read_text())
    video = next(o for o in prof["outputs"] if o["output"] == "video")
    # the part may fill the disk again before the end: one more stop, with its own one line
    assert video["stops"] == len(stops) and video["reason"] == "No space left on device"
    assert video["state"] == ("resumed" if len(stops) == 1 else "stopped")
    assert video["lost"] >= 30 and video["path"].endswith("out.part1.mp4")
    assert {o["output"]: o["state"] for o in prof["outputs"] if o["output"] != "video"} == \
        {"mot": "ok", "events": "ok"}
    # detection, tracking, MOT and events went on while the video was stopped
    rows = _mot(mot)
    assert rows[:, 0].max() > in_main + 150
    assert any(e["t"] > t_stopped + 3 for e in _events(ev))
    assert leftovers(p.pid) == []


@pytest.mark.timeout(120)
def test_sigkill_of_the_whole_run_keeps_mot_rows_up_to_two_seconds_before(tmp_path):
    """SIGKILL of the supervisor and every stage at once: every track that started at least 2 s
    before the kill (its ``track_started`` event) has its first MOT row on disk."""
    mot, ev = tmp_path / "t.txt", tmp_path / "e.jsonl"
    p = _start([*LIVE, "--mot", str(mot), "--events", str(ev)], tmp_path)
    try:
        _wait(lambda: sum(e["event"] == "track_started" for e in _events(ev)) >= 3, 90, "three tracks", tmp_path)
        time.sleep(3.0)                          # the run goes on for a few seconds
        t_kill = time.time()
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    rows = _mot(mot)
    have = {(int(f), int(i)) for f, i in rows[:, :2]}
    started = [e for e in _events(ev) if e["event"] == "track_started" and e["t"] <= t_kill - 2.0]
    assert len(started) >= 3
    missing = [(e["seq"] + 1, e["track_id"]) for e in started if (e["seq"] + 1, e["track_id"]) not in have]
    assert missing == [], f"MOT rows lost: {missing}"
    from trackpipe.pipeline.runtime import cleanup
    cleanup.clean_stale()
    assert leftovers(p.pid) == []


@pytest.mark.timeout(150)
def test_sigkill_of_the_sink_loses_no_written_row(tmp_path):
    """The sink stage SIGKILLed in a live run: the supervisor restarts it, and the restarted sink
    appends to the MOT and events files: every row and event on disk before the kill is still
    there, in order, followed by new ones; the run reaches its duration with exit 0."""
    mot, ev = tmp_path / "t.txt", tmp_path / "e.jsonl"
    p = _start([*LIVE, "--duration", "16", "--mot", str(mot), "--events", str(ev),
                "--profile", str(tmp_path / "p.json")], tmp_path)
    try:
        _wait(lambda: len(_lines(mot)) >= 100, 90, "100 MOT rows on disk", tmp_path)
        pid = _stage_pid(p.pid, "sink")
        assert pid > 0
        mot_before, ev_before = _lines(mot), _lines(ev)
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: "restarting it" in _stderr(tmp_path), 30, "the sink's restart", tmp_path)
        _wait(lambda: len(_lines(mot)) > len(mot_before) + 100, 60, "new MOT rows after the restart", tmp_path)
        assert p.wait(60) == 0, _stderr(tmp_path)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    _wait_group_gone(p, 5.0)
    mot_after, ev_after = _lines(mot), _lines(ev)
    assert mot_after[:len(mot_before)] == mot_before and len(mot_after) > len(mot_before)
    assert ev_after[:len(ev_before)] == ev_before
    _mot(mot)                                   # every line a whole row
    assert len(ev_after) > len(ev_before)
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["stages"]["sink"]["restarts"] == 1
    assert leftovers(p.pid) == []


@pytest.mark.timeout(90)
def test_a_profile_that_cannot_be_written_is_one_line_and_exit_1(tmp_path):
    """The profile on a full disk: one error line, exit 1; the MOT file is kept; no temporary
    file is left on the full disk."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        filler = fill(disk, leave=0)
        p = _start(["--source", str(VIDEO_360), *MODEL, "--headless", "--max-frames", "30",
                    "--mot", str(tmp_path / "t.txt"), "--profile", str(disk / "p.json")], tmp_path)
        assert p.wait(90) == 1
        err = _stderr(tmp_path)
        assert [ln for ln in err.splitlines() if " INFO " not in ln] == \
            [f"error: cannot write the profile {disk / 'p.json'}: No space left on device"], err
        assert err.endswith("No space left on device\n") and "Traceback" not in err
        assert list(disk.iterdir()) == [filler]
    assert len(_mot(tmp_path / "t.txt")) > 0
    assert leftovers(p.pid) == []


# --- unit tests of the writers on a real small disk ------------------------------------------------

def test_snapshots_stop_with_one_line_and_resume(tmp_path, caplog):
    import logging

    from trackpipe.models.types import Tracks
    from trackpipe.pipeline.media.snapshots import SnapshotWriter

    def tracks(ids):
        n = len(ids)
        return Tracks(np.array([[10, 10, 60, 90]] * n, np.float32), np.full(n, 0.9, np.float32),
                      np.zeros(n, np.int32), track_id=np.array(ids, np.int64))
    frame = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)   # ~100 KB a JPEG
    with small_disk(tmp_path / "disk", "1m") as disk, \
            caplog.at_level(logging.INFO, logger="trackpipe.pipeline.media.outputs"):
        w = SnapshotWriter(str(disk / "snaps"), quality=95)
        w.state.retry_s = 0.0
        filler = fill(disk, leave=0)
        for k in range(5):                      # the first fails and stops; then skipped or failing
            assert w.write(frame, k, 0.0, tracks([k]), np.array([0])) == []
        assert w.state.state == "stopped" and w.state.lost == 5 and w.written == 0
        assert not list((disk / "snaps").iterdir())            # no temporary file left
        filler.unlink()
        assert len(w.write(frame, 9, 0.0, tracks([9]), np.array([0]))) == 1
        assert w.state.state == "resumed" and w.written == 1
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("stopped: No space left on device" in m for m in msgs) == 1
    assert sum("is written again" in m for m in msgs) == 1


def test_profile_is_written_atomically(tmp_path):
    """A report that does not fit leaves the previous file whole and no temporary file."""
    from trackpipe.pipeline.profiling.report import write_report
    with small_disk(tmp_path / "disk", "1m") as disk:
        path = disk / "p.json"
        write_report({"frames_out": 1}, path)
        fill(disk, leave=0)
        with pytest.raises(OSError):
            write_report({"frames_out": 2, "timeline": ["x" * 1000] * 2000}, path)
        assert json.loads(path.read_text()) == {"frames_out": 1}
        assert sorted(f.name for f in disk.iterdir()) == ["filler", "p.json"]
