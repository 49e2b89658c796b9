"""The RTSP test server itself, read with the venv's OpenCV (CAP_FFMPEG), and the FFmpeg/OpenCV
timeout behaviour the live capture relies on. Real GStreamer server processes on 127.0.0.1.

Measured facts these tests pin down (OpenCV 4.14, FFmpeg backend; see docs/live.md):
- timeouts only work as open parameters: ``VideoCapture(url, CAP_FFMPEG, [CAP_PROP_OPEN_TIMEOUT_MSEC,
  o, CAP_PROP_READ_TIMEOUT_MSEC, r])``; ``cap.set(...)`` of either returns False;
- a killed server: read() fails at once (TCP reset/FIN), and so does open() of an absent one;
- a frozen server (SIGSTOP): open() fails after exactly the open timeout; read() fails after
  about THREE read timeouts (the RTSP demuxer retries), then the capture is dead for good;
- a reader slower than the stream falls behind without bound (FFmpeg buffers everything):
  the capture must drain in its own thread and keep only the newest frame.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from tests.rtsp.fixtures import decode_stamp, free_port, open_capture, read_stamps  # noqa: E402
from tests.rtsp.fixtures import rtsp_server_factory  # noqa: E402,F401 (the fixture)

LOW_DELAY = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay"
pytestmark = pytest.mark.alone  # frame ages and read timeouts bounded to fractions of a second
ASSETS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "assets")


def _time_until_read_fails(cap, limit: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        ok, _ = cap.read()
        if not ok:
            return time.monotonic() - t0
    return float("inf")


def test_live_mount_serves_stamped_frames(rtsp_server_factory):
    srv = rtsp_server_factory()
    assert "x264enc" in srv.ready_line or "openh264enc" in srv.ready_line
    cap = open_capture(srv.url, 5000, 2000, options=LOW_DELAY)
    try:
        assert cap.isOpened()
        ok, frame = cap.read()
        assert ok and frame.shape == (480, 640, 3)
        stamps = read_stamps(cap, 60, timeout=10)
        assert len(stamps) == 60, "every frame must carry a readable stamp"
        counters = [s.counter for s in stamps]
        assert all(b > a for a, b in zip(counters, counters[1:])), counters
        # live at 30 fps: 60 frames span ~2 s of server time
        assert 1.5 < stamps[-1].wall - stamps[0].wall < 3.0
        # low-delay options: nothing old is delivered, not even right after open
        assert max(s.age for s in stamps) < 0.5, [str(s) for s in stamps]
    finally:
        cap.release()


def test_file_mount_loops_real_video(rtsp_server_factory, tmp_path):
    # a 1.5 s clip cut from a real asset, so that looping is seen within a few seconds
    src = os.path.join(ASSETS, "video", "aiguys_video.mp4")
    if not os.path.isfile(src):
        pytest.skip(f"asset missing: {src}")
    reader = cv2.VideoCapture(src)
    clip = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 360))
    firsts = []
    for _ in range(15):
        ok, f = reader.read()
        assert ok
        firsts.append(f)
        writer.write(f)
    writer.release()
    reader.release()

    srv = rtsp_server_factory(file=clip)
    assert "640x360@10" in srv.ready_line, srv.ready_line
    cap = open_capture(srv.url, 5000, 2000, options=LOW_DELAY)
    try:
        frames, stamps = [], []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4.5:          # three times the clip's length
            ok, f = cap.read()
            assert ok, "the file mount must keep serving past the end of the file"
            frames.append(f)
            stamps.append(decode_stamp(f))
        assert len(frames) >= 30 and all(s is not None for s in stamps)
        # the pictures are the file's (below the 48 stamp rows), and the file comes round again
        ref = firsts[5][48:].astype(np.int16)
        close = [i for i, f in enumerate(frames) if np.abs(f[48:].astype(np.int16) - ref).mean() < 6]
        assert len(close) >= 2 and close[-1] - close[0] >= 10, close
    finally:
        cap.release()


def test_killed_server_fails_read_at_once_and_restarts_on_same_port(rtsp_server_factory):
    srv = rtsp_server_factory()
    cap = open_capture(srv.url, 3000, 2000, options=LOW_DELAY)
    try:
        before = read_stamps(cap, 10)
        assert len(before) == 10
        srv.kill()
        dt = _time_until_read_fails(cap, 10)
        assert dt < 2.0, f"read kept succeeding {dt:.2f}s after SIGKILL"
        ok, _ = cap.read()
        assert not ok, "a capture that failed must be reopened, not read again"
    finally:
        cap.release()

    t0 = time.monotonic()
    gone = open_capture(srv.url, 3000, 2000, options=LOW_DELAY)
    assert not gone.isOpened() and time.monotonic() - t0 < 1.5, "connection refused must fail fast"
    gone.release()

    srv.start()
    srv.wait_ready(10)
    cap = open_capture(srv.url, 3000, 2000, options=LOW_DELAY)
    try:
        after = read_stamps(cap, 5)
        assert len(after) == 5 and max(s.age for s in after) < 0.5
        assert after[0].wall > before[-1].wall
    finally:
        cap.release()


def test_frozen_server_read_times_out_after_three_read_timeouts(rtsp_server_factory):
    read_timeout_ms = 1000
    srv = rtsp_server_factory()
    cap = open_capture(srv.url, 3000, read_timeout_ms, options=LOW_DELAY)
    try:
        before = read_stamps(cap, 10)
        srv.freeze()
        t_freeze = time.time()
        dt = _time_until_read_fails(cap, 15)
        # OpenCV's interrupt fires after each read timeout; the RTSP demuxer retries twice
        assert 0.9 * read_timeout_ms / 1000 < dt < 3 * read_timeout_ms / 1000 + 1.5, dt
        srv.resume()
        ok, _ = cap.read()
        assert not ok, "after a read timeout the capture stays dead: reopen it"
    finally:
        cap.release()
    cap = open_capture(srv.url, 3000, read_timeout_ms, options=LOW_DELAY)
    try:
        after = read_stamps(cap, 5)
        assert len(after) == 5
        # new frames after the resume, none from before the freeze
        assert min(s.wall for s in after) > t_freeze and after[0].counter > before[-1].counter
        assert max(s.age for s in after) < 0.5
    finally:
        cap.release()


def test_open_timeout_bounds_open_on_frozen_server(rtsp_server_factory):
    srv = rtsp_server_factory()
    srv.freeze()                       # the port accepts TCP (kernel backlog) but nobody answers
    t0 = time.monotonic()
    cap = open_capture(srv.url, 1500, 1000, options=LOW_DELAY)
    dt = time.monotonic() - t0
    assert not cap.isOpened()
    assert 1.3 < dt < 3.0, f"open took {dt:.2f}s with a 1.5 s open timeout"
    cap.release()
    # timeouts cannot be changed after open: the setters are refused
    srv.resume()
    cap = open_capture(srv.url, 3000, 1000, options=LOW_DELAY)
    assert cap.isOpened()
    assert not cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, 500)
    cap.release()


def test_slow_reader_falls_behind_unless_a_thread_drains(rtsp_server_factory):
    srv = rtsp_server_factory()
    # 1) reading 5 frames/s from a 30 frames/s stream: the age of what read() returns grows
    cap = open_capture(srv.url, 3000, 2000, options=LOW_DELAY)
    ages = []
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            ok, f = cap.read()
            assert ok
            ages.append(decode_stamp(f).age)
            time.sleep(0.2)
    finally:
        cap.release()
    assert ages[-1] > 1.0 and ages[-1] > ages[0] + 0.8, ages

    # 2) the same slow consumer behind a thread that keeps only the newest frame
    cap = open_capture(srv.url, 3000, 2000, options=LOW_DELAY)
    latest = {"frame": None}
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            ok, f = cap.read()
            if not ok:
                break
            latest["frame"] = f

    th = threading.Thread(target=drain, daemon=True)
    th.start()
    ages = []
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            time.sleep(0.2)
            f = latest["frame"]
            if f is not None:
                ages.append(decode_stamp(f).age)
    finally:
        stop.set()
        th.join(5)
        cap.release()
    assert len(ages) >= 10 and max(ages[3:]) < 0.5, ages


def test_sigterm_stops_server_cleanly_even_frozen_or_with_clients(rtsp_server_factory):
    srv = rtsp_server_factory()
    cap = open_capture(srv.url, 3000, 1000, options=LOW_DELAY)
    try:
        assert len(read_stamps(cap, 3)) == 3
        t0 = time.monotonic()
        assert srv.stop() == 0 and time.monotonic() - t0 < 3.0
        assert "frame error" not in srv.log()
    finally:
        cap.release()
    srv.start()
    srv.wait_ready(10)
    srv.freeze()
    assert srv.stop() == 0              # SIGCONT first, then SIGTERM
    with pytest.raises(ProcessLookupError):
        os.killpg(srv.pid, 0)           # the whole process group is gone


def test_port_is_free_again_after_kill(rtsp_server_factory):
    port = free_port()
    srv = rtsp_server_factory(port=port)
    srv.kill()
    srv2 = rtsp_server_factory(port=port)   # binds the same port at once
    assert srv2.url.endswith(f":{port}/live")
