"""Recording core on real videos: segments are keyframe-aligned copies of the camera's packets,
clips and exports cut without re-encoding, snapshots, the index and its reconciliation with the
files, retention, bad input (an unwritable folder, a codec MP4 cannot take). The live camera
(the real RTSP server) and a SIGKILLed recorder are at the end."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import ASSETS, ROOT
from rtsp.fixtures import rtsp_server_factory  # noqa: F401 - fixture
from trackpipe.pipeline.recording.clips import NoFootage, cut
from trackpipe.pipeline.recording.events import EventBuilder
from trackpipe.pipeline.recording.index import EventRecord, RecordIndex, Segment
from trackpipe.pipeline.recording.recorder import CameraRecording, Recorder, RecorderSettings, reconcile
from trackpipe.pipeline.recording.retention import CameraPolicy, Retention
from trackpipe.pipeline.recording.segmenter import CameraRecorder

from tests.procs import wait_for

TRAFFIC = ASSETS / "video" / "traffic-cars.mp4"     # 1280x720, 29.97 fps, B-frames, keyframes at 0, 3.0, 6.01, 9.01 s
BASE = 1_000_000.0                                  # the clock of a file recorded lossless: BASE + media time


def source_packets(path):
    """[(pts seconds, keyframe, sha1 of the bytes)] of a file's video packets, in decode order."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(float(p.pts * s.time_base), p.is_keyframe, hashlib.sha1(bytes(p)).hexdigest())
                for p in c.demux(s) if p.dts is not None and p.size]


def record_file(root: Path, path=TRAFFIC, segment_s=2.0, camera="cam"):
    """Remux ``path`` into ``root`` (lossless file: BASE + media time); -> (index, segments)."""
    index = RecordIndex(root, writer=True)
    rec = CameraRecorder(camera, str(path), root, segment_s, index.add_segment, threading.Event(), live=False,
                         t_base=BASE)
    rec.run()                      # in this thread: a file ends
    assert rec.state == "stopped", rec.error
    return index, index.segments(camera)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    index, segs = record_file(root)
    yield root, index, segs
    index.close()


def decode_all(path) -> list:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def cv2_count(path) -> int:
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


# --- segments ----------------------------------------------------------------------------------

def test_segments_are_keyframe_aligned_copies_of_the_packets(recorded):
    root, _, segs = recorded
    src = source_packets(TRAFFIC)
    keys = [t for t, k, _ in src if k]
    assert [round(s.start - BASE, 2) for s in segs] == [round(k, 2) for k in keys]   # a segment per GOP of 3 s >= 2 s
    for a, b in itertools.pairwise(segs):
        assert a.end == pytest.approx(b.start)                                        # no gap, no overlap
    got = []
    for s in segs:
        assert (root / s.path).stat().st_size == s.bytes
        assert s.path.startswith("cam/1970-01-12/")                                   # <camera>/<date>/<start_ms>.mp4
        pk = source_packets(root / s.path)
        assert pk[0][1], "a segment starts with a keyframe"
        got += pk
    assert [h for *_, h in got] == [h for *_, h in src]          # the same bytes: copied, never re-encoded
    n = sum(len(decode_all(root / s.path)) for s in segs)
    assert n == len(src) == sum(cv2_count(root / s.path) for s in segs)


def test_a_clip_starts_on_the_keyframe_at_or_before_its_start_and_covers_its_end(recorded, tmp_path):
    root, _, segs = recorded
    info = cut(root, segs, BASE + 4.0, BASE + 7.0, tmp_path / "clip.mp4")
    assert info.start == pytest.approx(BASE + 3.0, abs=0.02)        # the keyframe at 3.0 s <= 4.0 s
    assert info.end >= BASE + 7.0
    frames = decode_all(info.path)
    assert len(frames) == info.frames == cv2_count(info.path)
    assert (info.end - info.start) * 29.97 - 1 <= info.frames <= (info.end - info.start) * 29.97 + 5
    cap = cv2.VideoCapture(str(TRAFFIC))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 90)                          # frame 90 = 3.003 s, the keyframe
    ok, want = cap.read()
    assert ok and np.array_equal(frames[0], want)                 # the same pixels: no re-encoding
    with av.open(str(info.path)) as c:                            # plays from 0 for browsers
        assert c.streams.video[0].start_time in (0, None) or float(c.streams.video[0].start_time
                                                                   * c.streams.video[0].time_base) < 0.1


def test_a_range_with_no_footage_is_refused(recorded, tmp_path):
    root, _, segs = recorded
    with pytest.raises(NoFootage):
        cut(root, segs, BASE + 100, BASE + 110, tmp_path / "none.mp4")
    assert not (tmp_path / "none.mp4").exists()


# --- the index and reconciliation --------------------------------------------------------------

def test_reconcile_indexes_unknown_files_and_drops_missing_ones(recorded, tmp_path):
    src_root, _, segs = recorded
    root = tmp_path / "rec"
    shutil.copytree(src_root, root, ignore=shutil.ignore_patterns("index.db*"))
    index = RecordIndex(root, writer=True)
    for s in segs[:2]:
        index.add_segment(s)
    index.add_segment(Segment("cam", BASE + 50, BASE + 52, "cam/1970-01-12/1000050000.mp4", 10))   # no file
    os.unlink(root / segs[1].path)                                             # indexed, then gone
    last = root / segs[3].path                                                 # cut short, as by a kill
    last.write_bytes(last.read_bytes()[: last.stat().st_size * 2 // 3])
    junk = root / "cam" / "1970-01-12" / "1000099000.mp4"
    junk.write_bytes(b"\0" * 100)
    res = reconcile(root, index)
    assert res == {"added": 2, "dropped": 2, "removed": 1}
    on_disk = sorted(str(p.relative_to(root)) for p in root.glob("cam/*/*.mp4"))
    assert sorted(s.path for s in index.segments()) == on_disk
    short = next(s for s in index.segments() if s.path == segs[3].path)
    assert segs[3].start < short.end < segs[3].end                             # what was written, no more
    info = cut(root, [short], short.start, short.end, tmp_path / "short.mp4")     # and it plays
    assert len(decode_all(info.path)) == info.frames == cv2_count(info.path) > 10


def test_event_builder_keeps_the_best_box_zones_and_classes():
    b = EventBuilder("cam", "r1", names=["person", "car"], classes=["car"], offset=10.0, max_boxes=16)
    for k in range(40):
        ids, boxes = np.array([1, 2]), np.array([[k, 0, k + 10, 10], [0, k, 10, k + 10]], np.float32)
        scores = np.array([0.5, {3: 0.95, 20: 0.8}.get(k, 0.6)], np.float32)
        b.observe(k / 10, ids, boxes, scores, np.array([0, 1]), np.array([False, k == 3]), (640, 360))
        b.on_event({"event": "zone_enter", "track_id": 2, "zone": "gate"})
    assert b.on_event({"event": "track_ended", "track_id": 1}) is None       # a person: not asked for
    rec = b.on_event({"event": "track_ended", "track_id": 2})
    assert (rec.id, rec.label, rec.zones, rec.width) == ("cam-r1-2", "car", ["gate"], 640)
    assert rec.start == 10.0 and rec.end == pytest.approx(13.9)
    assert rec.score == pytest.approx(0.8) and rec.t_best == pytest.approx(12.0)   # row 3 (predicted) never scores
    assert rec.box == [0.0, 20.0, 10.0, 30.0]
    assert 8 <= len(rec.boxes) <= 16 and rec.boxes[0][0] == 10.0                   # thinned, in time order
    assert rec.boxes[0][1:] == [0.0, 0.0, 10.0, 10.0, 0.6]                          # box and score
    assert all(a[0] < b_[0] for a, b_ in zip(rec.boxes, rec.boxes[1:]))


def best_recorder(root: Path, t_base: float) -> Recorder:
    rec = Recorder(RecorderSettings(root, [CameraRecording("cam", str(TRAFFIC), live=False)], run_tag="r",
                                    names=["person"], t_base=t_base))
    assert rec.start()
    return rec


def jpeg_of(value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((36, 64, 3), value, np.uint8))[1].tobytes()


def test_every_event_takes_the_last_best_frame_of_its_track_sent_before_or_after_it(tmp_path):
    now = time.time()                                      # (older events would go by age)
    rec = best_recorder(tmp_path, now)
    try:
        for tid in (1, 2, 3):
            rec.observe("cam", 1.0, np.array([tid]), np.array([[10, 10, 20, 20]], np.float32), np.array([0.5]),
                        np.array([0]), None, (64, 36))
        rec.best_frame("cam", 1, 1.0, [10, 10, 20, 20], 0.5, jpeg_of(50))
        rec.best_frame("cam", 1, 2.0, [11, 10, 21, 20], 0.8, jpeg_of(100))    # a better one replaces it
        assert rec.on_event("cam", {"event": "track_ended", "track_id": 1}) == "cam-r-1"
        rec.on_event("cam", {"event": "track_ended", "track_id": 2})            # render runs behind: it comes after
        rec.on_event("cam", {"event": "track_ended", "track_id": 3})            # never comes
        assert rec.missing_snapshots() == 2
        rec.best_frame("cam", 2, 1.5, [1, 2, 3, 4], 0.7, jpeg_of(200))
        assert rec.missing_snapshots() == 1 and rec.wait_idle()
        assert rec.counts["snapshots"] == 2
    finally:
        rec.close()
    assert rec.counts["snapshots_missing"] == 1
    index = RecordIndex(tmp_path)
    one, two = index.event("cam-r-1"), index.event("cam-r-2")
    assert (one.t_best, one.box, one.score) == (now + 2.0, [11.0, 10.0, 21.0, 20.0], 0.8)
    assert (two.t_best, two.box, two.score) == (now + 1.5, [1.0, 2.0, 3.0, 4.0], 0.7)
    assert abs(int(cv2.imread(str(tmp_path / one.snapshot))[5, 5, 0]) - 100) < 4
    assert abs(int(cv2.imread(str(tmp_path / two.snapshot))[5, 5, 0]) - 200) < 4
    assert index.event("cam-r-3").snapshot is None


# --- retention ---------------------------------------------------------------------------------

def fill(index, camera="cam", n=10, size=1000, start=BASE):
    segs = [Segment(camera, start + 10 * i, start + 10 * (i + 1), f"{camera}/x/{i}.mp4", size) for i in range(n)]
    for s in segs:
        index.add_segment(s)
    return segs


def test_retention_by_size_deletes_the_oldest_first_and_expires_their_events(tmp_path):
    index = RecordIndex(tmp_path, writer=True)
    segs = fill(index)
    index.add_event(EventRecord("e1", "cam", "car", BASE + 12, BASE + 14))
    index.add_event(EventRecord("e2", "cam", "car", BASE + 85, BASE + 88))
    r = Retention(tmp_path, index, {"cam": CameraPolicy("all", 2, 2, 0)}, max_gb=4500 / 1e9)
    res = r.apply()
    assert [s.path for s in index.segments()] == [s.path for s in segs[-4:]]
    assert res.deleted == 6 and index.total_bytes() <= 4500
    assert index.event("e1").state == "expired" and index.event("e2").state == "ok"


def test_retention_in_events_mode_keeps_what_events_need(tmp_path):
    index = RecordIndex(tmp_path, writer=True)
    fill(index)                                       # [BASE, BASE+100) in 10 s segments
    index.add_event(EventRecord("e1", "cam", "car", BASE + 31, BASE + 33))     # needs 26..38: segment 2 and 3
    r = Retention(tmp_path, index, {"cam": CameraPolicy("events", 5, 5, 0)})
    r.apply(tracked_until={"cam": BASE + 62}, open_tracks={"cam": [BASE + 58]})  # decided up to 53
    assert [s.start - BASE for s in index.segments()] == [20, 30, 50, 60, 70, 80, 90]
    r.apply(tracked_until={"cam": BASE + 200}, open_tracks={"cam": []})
    assert [s.start - BASE for s in index.segments()] == [20, 30]


def test_retention_by_age_and_the_free_space_floor(tmp_path, caplog):
    index = RecordIndex(tmp_path, writer=True)
    now = BASE + 10 * 86400
    fill(index, n=3)                                              # 10 days old
    fill(index, n=5, start=now - 100)
    index.add_event(EventRecord("old", "cam", "car", BASE + 1, BASE + 2))
    free = {"bytes": 0}
    r = Retention(tmp_path, index, {"cam": CameraPolicy("all", 5, 5, 7)}, min_free_gb=1.0,
                  disk_free=lambda p: free["bytes"])
    free["bytes"] = int(2e9)
    r.apply(now=now)
    assert len(index.segments()) == 5 and index.event("old") is None            # age: 7 days
    with caplog.at_level(logging.INFO, logger="trackpipe.pipeline.recording.retention"):
        def disk_free(p):                                   # each deleted segment frees 0.4 GB
            return int(0.1e9 + 0.4e9 * (5 - len(index.segments())))
        r.disk_free = disk_free
        r.apply(now=now)
        r.apply(now=now)
    assert len(index.segments()) == 2                       # 0.1 + 3 * 0.4 >= 1.0 GB free
    warnings = [x for x in caplog.records if x.levelno == logging.WARNING]
    assert len(warnings) == 1 and "under the floor of 1.0 GB" in warnings[0].getMessage()


# --- bad input ---------------------------------------------------------------------------------

def test_an_unwritable_record_folder_is_one_line_and_no_recording(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rec = Recorder(RecorderSettings(blocker / "rec", [CameraRecording("cam", str(TRAFFIC), live=False)]))
    with caplog.at_level(logging.WARNING):
        assert rec.start() is False
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "not writable" in lines[0] and "recording is off" in lines[0]
    rec.observe("cam", 1.0, np.array([1]), np.zeros((1, 4)), np.ones(1), np.zeros(1, int))   # a no-op
    rec.close()


def test_a_codec_mp4_cannot_take_by_copy_is_one_warning(tmp_path, caplog):
    mjpeg = tmp_path / "cam.avi"
    w = cv2.VideoWriter(str(mjpeg), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 360))
    cap = cv2.VideoCapture(str(ASSETS / "video" / "aiguys_video.mp4"))
    for _ in range(10):
        w.write(cap.read()[1])
    w.release()
    segs = []
    rec = CameraRecorder("cam", str(mjpeg), tmp_path / "rec", 2.0, segs.append, threading.Event(), live=False)
    with caplog.at_level(logging.WARNING):
        rec.run()
    assert rec.state == "unsupported" and segs == []
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "mjpeg" in lines[0] and "not recorded" in lines[0]


# --- the export command ------------------------------------------------------------------------

def run_export(*args):
    return subprocess.run([sys.executable, "-m", "trackpipe.pipeline", "export", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_export_command(recorded, tmp_path):
    root, _, _ = recorded
    out = tmp_path / "out.mp4"
    p = run_export("--record", root, "--camera", "cam", "--start", BASE + 1, "--end", BASE + 5, "--out", out)
    assert p.returncode == 0, p.stderr
    assert len(decode_all(out)) == cv2_count(out) >= 150
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE + 1))
    p = run_export("--record", root, "--camera", "cam", "--start", iso, "--end", BASE + 5, "--out", out)
    assert p.returncode == 0, p.stderr
    p = run_export("--record", root, "--camera", "cam", "--start", BASE + 500, "--end", BASE + 505, "--out", out)
    assert p.returncode == 1 and p.stderr.strip().count("\n") == 0 and "no footage" in p.stderr
    p = run_export("--record", root, "--camera", "cam", "--start", "yesterday", "--end", BASE + 5, "--out", out)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "invalid time" in p.stderr
    p = run_export("--record", tmp_path / "none", "--camera", "cam", "--start", 1, "--end", 5, "--out", out)
    assert p.returncode == 2 and "no recording" in p.stderr


# --- mode motion ---------------------------------------------------------------------------------

def test_motion_mode_keeps_the_segments_that_overlap_motion_with_their_roll(tmp_path):
    from trackpipe.pipeline.motion.detector import MotionDetector

    from tests.motion_clips import still_moving_still
    # 4 s of a still scene (a real frame with camera noise), 3 s of people walking, 4 s still; a keyframe each 0.5 s
    clip = still_moving_still(ASSETS / "video" / "aiguys_video.mp4", tmp_path / "c.mp4", still_s=4.0, start=100,
                              frames=90, gop=15)
    moving = (clip.moving[0] / clip.fps, clip.moving[1] / clip.fps)
    now = time.time()                                  # a file run lossless: its clock is now + media time
    cam = CameraRecording("cam", clip.path, mode="motion", segment_s=1.0, pre_s=0.5, post_s=0.5, live=False)
    rec = Recorder(RecorderSettings(tmp_path / "rec", [cam], t_base=now))
    assert rec.start()
    detector, cap, i = MotionDetector(), cv2.VideoCapture(clip.path), 0
    try:
        while True:                                    # what the sink hands over for each tracked frame
            ok, frame = cap.read()
            if not ok:
                break
            rec.motion("cam", i / clip.fps, detector.update(frame).moving)
            i += 1
        wait_for(lambda: rec.stats()["cameras"]["cam"]["state"] == "stopped", 30, "the file remuxed")
    finally:
        rec.close()
    kept = [(s.start - now, s.end - now) for s in RecordIndex(tmp_path / "rec").segments("cam")]
    assert kept and kept[0][0] <= moving[0] - 0.5 + 0.05 and kept[-1][1] >= moving[1] + 0.5 - 0.05, (kept, moving)
    for a, b in itertools.pairwise(kept):              # motion and its roll: one unbroken stretch
        assert a[1] == pytest.approx(b[0])
    still = [(0.5, moving[0] - 1.5), (moving[1] + 1.5, clip.frames / clip.fps - 0.5)]   # well inside the still
    assert not [s for s in kept for a, b in still if s[0] < b and s[1] > a], (kept, moving)
    assert rec.counts["deleted"] >= 4


# --- a live camera: the real RTSP server ---------------------------------------------------------

def test_a_live_camera_is_recorded_on_the_wall_clock_with_a_snapshot(rtsp_server_factory, tmp_path):  # noqa: F811
    srv = rtsp_server_factory(file=ASSETS / "video" / "aiguys_video.mp4")
    cam = CameraRecording("door", srv.url, segment_s=2.0, pre_s=1.0, post_s=1.0)
    rec = Recorder(RecorderSettings(tmp_path, [cam], run_tag="t", names=["person"]))
    assert rec.start()
    frame = cv2.VideoCapture(str(ASSETS / "video" / "aiguys_video.mp4")).read()[1]
    jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
    try:
        wait_for(lambda: rec.counts["segments"] >= 1, 60, "a first segment")
        t0 = time.time()
        while time.time() - t0 < 3.0:
            x = 100 + 50 * (time.time() - t0)
            rec.observe("door", time.time(), np.array([4]), np.array([[x, 40, x + 80, 300]], np.float32),
                        np.array([0.7]), np.array([0]), None, (640, 360))
            if abs(x - 150) < 3:                               # render's best frame of the track
                rec.best_frame("door", 4, time.time(), [x, 40, x + 80, 300], 0.9, jpeg)
            time.sleep(0.05)
        rec.on_events("door", [{"event": "track_ended", "track_id": 4}])
        wait_for(lambda: rec.counts["snapshots"] == 1, 30, "the snapshot")
        assert rec.stats()["cameras"]["door"]["state"] == "recording"
    finally:
        rec.close()
    index = RecordIndex(tmp_path)
    segs = index.segments("door")
    assert len(segs) >= 2 and abs(segs[-1].end - time.time()) < 10
    ev = index.event("door-t-4")
    assert (tmp_path / ev.snapshot).read_bytes() == jpeg and ev.score == 0.9
    assert ev.box[0] == pytest.approx(150, abs=3) and ev.start < ev.t_best < ev.end
    info = cut(tmp_path, segs, ev.start - 1, ev.end + 1, tmp_path / "clip.mp4")
    assert info.start <= ev.start - 1 and info.start >= ev.start - 1 - 1.1      # pre_s + at most one GOP (1 s)
    assert info.end >= ev.end and len(decode_all(info.path)) == cv2_count(info.path) > 30


def readable_index(root: Path) -> RecordIndex | None:
    """The index once its writer has made its tables (the file comes first), else None."""
    try:
        index = RecordIndex(root)
        index.segments(limit=1)
        return index
    except (FileNotFoundError, sqlite3.OperationalError):
        return None


CRASH_SCRIPT = """
import sys, time
from pathlib import Path
from trackpipe.pipeline.recording.recorder import CameraRecording, Recorder, RecorderSettings
rec = Recorder(RecorderSettings(Path(sys.argv[1]), [CameraRecording("cam", sys.argv[2], segment_s=1.0)]))
assert rec.start()
print("started", flush=True)
time.sleep(600)
"""


def test_sigkill_loses_at_most_the_segment_being_written(rtsp_server_factory, tmp_path):  # noqa: F811
    srv = rtsp_server_factory(file=ASSETS / "video" / "aiguys_video.mp4")
    p = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), srv.url], cwd=ROOT,
                         start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        index = wait_for(lambda: readable_index(tmp_path), 60, "the index")
        wait_for(lambda: len(index.segments()) >= 3, 60, "three segments")
        time.sleep(0.5)                                  # inside the next segment
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    files = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.glob("cam/*/*.mp4"))
    assert len(files) >= len(index.segments())
    rec = Recorder(RecorderSettings(tmp_path, [CameraRecording("cam", srv.url, mode="off")]))
    assert rec.start()                                   # reconciles
    rec.close()
    index = RecordIndex(tmp_path)
    segs = index.segments("cam")
    on_disk = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.glob("cam/*/*.mp4"))
    assert sorted(s.path for s in segs) == on_disk and set(on_disk) >= set(files[:-1])
    for s in segs:                                       # everything recorded plays
        assert len(decode_all(tmp_path / s.path)) > 0
    info = cut(tmp_path, segs, segs[0].start, segs[-1].end, tmp_path / "all.mp4")
    assert info.end == pytest.approx(segs[-1].end, abs=0.1)
