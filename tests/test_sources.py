"""Sources: kind detection, probing real assets, decoding into a given buffer, clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import ASSETS, VIDEO_1080, VIDEO_360
from trackpipe.pipeline.config import SourceConfig
from trackpipe.pipeline.errors import SourceError
from trackpipe.pipeline.media.sources import ScreenSource, make_source, probe, source_kind

IMAGES = ASSETS / "coco_val2017" / "images"


@pytest.mark.parametrize("uri, kind", [
    ("0", "camera"), ("12", "camera"), ("rtsp://cam/stream", "stream"), ("http://h:8080/v.mjpg", "stream"),
    ("screen", "screen"), ("screen:2", "screen"), ("screen:1@0,0,640,480", "screen"),
    ("video.mp4", "file"), ("frames/*.jpg", "images"), ("one.png", "images"),
])
def test_source_kind(uri, kind):
    assert source_kind(uri) == kind


def test_probe_video_file():
    info = probe(str(VIDEO_1080), SourceConfig())
    assert (info.kind, info.width, info.height, info.frames, info.live) == ("file", 1920, 1080, 302, False)
    assert abs(info.fps - 30.0) < 0.01 and info.shape == (1080, 1920, 3)
    assert probe(str(VIDEO_360), SourceConfig(realtime=True)).live  # a paced file acts as live


def test_file_decodes_into_given_buffer_and_counts_frames():
    src = make_source(str(VIDEO_360), SourceConfig())
    src.open()
    buf = np.zeros((360, 640, 3), np.uint8)
    n = 0
    try:
        while True:
            img = src.read_into(buf)
            if img is None:
                break
            assert img is buf  # decoded straight into the (shared-memory) buffer: no copy
            n += 1
    finally:
        src.close()
    assert n == 319 and buf.any()


def test_image_folder_and_glob():
    info = probe(str(IMAGES), SourceConfig())
    assert info.kind == "images" and info.frames == 66 and not info.live
    src = make_source(str(IMAGES / "*.jpg"), SourceConfig())
    src.open()
    frames = [src.read_into(None) for _ in range(3)]
    src.close()
    assert all(f is not None and f.ndim == 3 for f in frames)


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing.mp4"), "source not found"),
    (lambda p: (p / "garbage.mp4").write_bytes(b"\x00not a video" * 1000) and str(p / "garbage.mp4"),
     "cannot read video"),
    (lambda p: (p / "empty.mp4").write_bytes(b"") or str(p / "empty.mp4"), "cannot read video"),
    (lambda p: str(p), "no images found"),
    (lambda p: str(p / "*.png"), "source not found"),
    (lambda p: "screen:1@0,0,-5,10", "invalid screen source"),
    (lambda p: "", "no source given"),
])
def test_bad_sources_give_one_line(tmp_path, make, message):
    with pytest.raises(SourceError) as e:
        probe(make(tmp_path), SourceConfig())
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.timeout(30)
def test_unreachable_stream_times_out_with_clear_error():
    """In a fresh interpreter (FFmpeg reads its log level once, at its first use)."""
    import subprocess
    import sys

    from conftest import ROOT
    from tests.rtsp.fixtures import free_port
    code = ("from trackpipe.pipeline.media.sources import probe\nfrom trackpipe.pipeline.config import SourceConfig\n"
            "from trackpipe.pipeline.errors import SourceError\n"
            "try:\n    probe(%r, SourceConfig(open_timeout_s=2.0, read_timeout_s=2.0))\n"
            "except SourceError as e:\n    print(e)\n") % f"rtsp://user:secret@127.0.0.1:{free_port()}/none"
    p = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=25)
    assert p.stdout.startswith("cannot open stream rtsp://user:***@127.0.0.1:"), p.stdout
    assert "secret" not in p.stdout  # credentials are not printed
    assert p.stderr == ""  # FFmpeg/OpenCV warnings stay off stderr


def test_stream_ffmpeg_options_and_timed_out_reads():
    rtsp = make_source("rtsp://127.0.0.1:8554/cam", SourceConfig(read_timeout_s=2.0))
    assert rtsp.ffmpeg_options() == "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay|analyzeduration;500000"
    assert make_source("http://127.0.0.1/x.mjpg", SourceConfig()).ffmpeg_options() == \
        "fflags;nobuffer|flags;low_delay|analyzeduration;500000"
    assert make_source("rtsp://h/p", SourceConfig(ffmpeg_options="rtsp_transport;udp")).ffmpeg_options() == \
        "rtsp_transport;udp"
    # a read ended by the 2 s read timeout returned a stale frame; a slow but normal one did not
    assert rtsp.timed_out(2.02) and rtsp.timed_out(1.85)
    assert not rtsp.timed_out(0.5)
    assert not make_source(str(VIDEO_360), SourceConfig()).timed_out(60.0)  # files have no read timeout


def test_stream_options_do_not_leak_into_later_sources(monkeypatch):
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    src = make_source("rtsp://127.0.0.1:9/none", SourceConfig(open_timeout_s=0.5))
    with pytest.raises(SourceError):
        src.open()  # nothing listens on port 9
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ  # a file opened next must not get nobuffer
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "user;choice")
    with pytest.raises(SourceError):
        src.open()
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "user;choice"


def test_screen_region_parsing():
    s = ScreenSource("screen:2@10,20,300,200", SourceConfig())
    assert s.monitor == 2 and s.region == (10, 20, 300, 200)
    assert ScreenSource("screen", SourceConfig()).monitor == 1


@pytest.mark.timeout(60)
def test_screen_capture_under_xvfb():
    """mss grabbing a real (virtual) X display: full monitor and a region, BGR frames."""
    from xvfb import Xvfb, xvfb_available
    ok, why = xvfb_available(("Xvfb",))
    if not ok:
        pytest.skip(why)
    with Xvfb() as x:
        x.activate()  # DISPLAY for this process; restored by stop()
        info = probe("screen", SourceConfig())
        assert (info.width, info.height, info.live) == (1920, 1080, True)
        src = make_source("screen:1@100,50,320,240", SourceConfig(fps=100))
        src.open()
        buf = np.empty((240, 320, 3), np.uint8)
        assert src.read_into(buf) is buf
        src.close()


def test_a_paced_source_keeps_its_own_clock(monkeypatch):
    """Frames are due at start + k / fps: a reader woken late gets the late frames at once and is
    back on time after them (a camera does not slow down); a stall over PACE_RESYNC_S restarts the clock."""
    from trackpipe.pipeline.media import sources

    clock = {"t": 100.0}
    slept = []
    monkeypatch.setattr(sources.time, "monotonic", lambda: clock["t"])

    def sleep(s):
        slept.append(round(s, 6))
        clock["t"] += s

    monkeypatch.setattr(sources.time, "sleep", sleep)
    src = sources.Source("x", SourceConfig(fps=10.0))
    src._paced = True
    src.pace()                     # frame 0 at 100.0, frame 1 due at 100.1
    clock["t"] += 0.25             # the reader is 0.15 s late for frame 1
    src.pace()                     # frame 1: at once
    src.pace()                     # frame 2 (due 100.2): at once
    src.pace()                     # frame 3 (due 100.3): 0.05 s
    assert slept == [0.05]
    clock["t"] += 5.0              # a stall: the clock starts again
    src.pace()
    src.pace()
    assert slept == [0.05, 0.1]
