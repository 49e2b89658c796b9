"""The output video writer: H.264 in fragmented MP4 read back by OpenCV and PyAV, exact frame
rates, mp4v (PyAV and the OpenCV fallback), bad paths, and a SIGKILL mid-run that loses at
most the last 2 s of video."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction

import cv2
import numpy as np
import pytest
from trackpipe.pipeline.video import VideoWriter, VideoWriterError, choose_preset, writer

from tests.conftest import ROOT, VIDEO_360, VIDEO_1080

av = pytest.importorskip("av")


def read_frames(path, n):
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while len(frames) < n:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames, fps


def decode_opencv(path):
    """(frames, fps, width, height) as OpenCV reads them; stops at the first unreadable frame."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps = cap.get(cv2.CAP_PROP_FPS)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out, fps, w, h


def decode_pyav(path):
    """(frames, stream) as PyAV decodes them; a truncated tail ends the list (no exception)."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = {"rate": s.average_rate, "codec": s.codec_context.name, "w": s.width, "h": s.height}
        try:
            for frame in c.decode(s):
                out.append(frame.to_ndarray(format="bgr24"))
        except av.error.FFmpegError:
            pass
    return out, info


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.fixture(scope="module")
def frames360():
    frames, fps = read_frames(VIDEO_360, 45)
    assert len(frames) == 45 and fps == pytest.approx(30.0)
    return frames


def test_h264_roundtrip_opencv_and_pyav(frames360, tmp_path):
    path = tmp_path / "out.mp4"
    with VideoWriter.open(path, 30.0, frames360[0].shape[:2]) as vw:
        assert (vw.codec, vw.backend, vw.crash_safe) == ("h264", "pyav", True)
        assert vw.preset == choose_preset((360, 640), 30.0) == "veryfast"
        for f in frames360:
            vw.write(f)
    vw.close()                                       # idempotent
    assert vw.frames == 45
    got, fps, w, h = decode_opencv(path)
    assert (len(got), w, h) == (45, 640, 360) and fps == pytest.approx(30.0)
    dec, info = decode_pyav(path)
    assert len(dec) == 45 and info["codec"] == "h264" and info["rate"] == 30 and (info["w"], info["h"]) == (640, 360)
    # same frames, same order, same colours (BT.601 both ways)
    for i in (0, 17, 44):
        assert psnr(got[i], frames360[i]) > 30 and psnr(dec[i], frames360[i]) > 30
    assert psnr(got[17], frames360[30]) < psnr(got[17], frames360[17]) - 3
    with open(path, "rb") as fh:                      # fragmented: empty moov, then moof+mdat pairs
        data = fh.read()
    assert data.count(b"moof") >= 2 and data.count(b"mvex") == 1


def test_ntsc_rate_is_exact(frames360, tmp_path):
    path = tmp_path / "ntsc.mp4"
    with VideoWriter.open(path, 30000 / 1001, (360, 640), preset="ultrafast") as vw:
        for f in frames360[:30]:
            vw.write(f)
    dec, info = decode_pyav(path)
    assert info["rate"] == Fraction(30000, 1001) and len(dec) == 30
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = [p.pts for p in c.demux(s) if p.pts is not None]
        time_base = s.time_base      # a closed container's streams cannot be read (PyAV >= 18.1.1)
        assert float(s.duration * time_base) == pytest.approx(30 * 1001 / 30000, abs=1e-3)
    step = np.diff(sorted(pts)) * time_base
    assert set(step) == {Fraction(1001, 30000)}
    _, fps, _, _ = decode_opencv(path)
    assert fps == pytest.approx(29.97003, abs=1e-4)


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_mp4v_by_choice_and_opencv_fallback(frames360, tmp_path, backend):
    path = tmp_path / f"mp4v_{backend}.mp4"
    with VideoWriter.open(path, 30.0, (360, 640), codec="mp4v", backend=backend) as vw:
        assert vw.codec == "mp4v" and vw.backend == backend and vw.preset is None
        assert vw.crash_safe == (backend == "pyav")
        for f in frames360[:20]:
            vw.write(f)
    got, fps, w, h = decode_opencv(path)
    assert (len(got), w, h) == (20, 640, 360) and fps == pytest.approx(30.0)
    dec, info = decode_pyav(path)
    assert len(dec) == 20 and info["codec"] == "mpeg4"
    assert psnr(got[10], frames360[10]) > 28


def test_auto_without_pyav_falls_back_to_opencv_mp4v_with_one_log_line(frames360, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(writer, "_pyav", lambda: None)
    with caplog.at_level(logging.WARNING, logger=writer.__name__), \
            VideoWriter.open(tmp_path / "auto.mp4", 30.0, (360, 640)) as vw:
        vw.write(frames360[0])
    assert (vw.codec, vw.backend) == ("mp4v", "opencv")
    assert len([r for r in caplog.records if "PyAV" in r.getMessage()]) == 1
    assert len(decode_opencv(tmp_path / "auto.mp4")[0]) == 1
    with pytest.raises(VideoWriterError, match="pip install av"):
        VideoWriter.open(tmp_path / "h264.mp4", 30.0, (360, 640), codec="h264")


def test_bad_paths_and_arguments_are_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = {
        tmp_path / "missing" / "out.mp4": "does not exist",
        tmp_path: "is a folder",
        tmp_path / "file" / "out.mp4": "is not a folder",
    }
    for path, msg in cases.items():
        with pytest.raises(VideoWriterError, match=msg) as e:
            VideoWriter.open(path, 30.0, (360, 640))
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    for kw, msg in [({"codec": "hevc"}, "unknown video codec"), ({"preset": "quick"}, "unknown x264 preset"),
                    ({"threads": -1}, "threads")]:
        with pytest.raises(VideoWriterError, match=msg):
            VideoWriter.open(tmp_path / "x.mp4", 30.0, (360, 640), **kw)
    with pytest.raises(VideoWriterError, match="fps"):
        VideoWriter.open(tmp_path / "x.mp4", 0, (360, 640))
    assert not (tmp_path / "x.mp4").exists()


def test_write_checks_the_frame_and_close_is_idempotent(frames360, tmp_path):
    vw = VideoWriter.open(tmp_path / "a.mp4", 30.0, (360, 640))
    with pytest.raises(ValueError, match="360x640x3 uint8"):
        vw.write(frames360[0][:100])
    vw.write(frames360[0])
    vw.close()
    vw.close()
    with pytest.raises(VideoWriterError, match="closed"):
        vw.write(frames360[0])
    # odd sizes are padded to even (yuv420p) and still decode
    odd = np.ascontiguousarray(frames360[0][:359, :639])
    with VideoWriter.open(tmp_path / "odd.mp4", 30.0, (359, 639)) as vw:
        for _ in range(3):
            vw.write(odd)
    got, _, w, h = decode_opencv(tmp_path / "odd.mp4")
    assert (len(got), w, h) == (3, 640, 360) and psnr(got[0][:359, :639], odd) > 30


CHILD = textwrap.dedent("""
    import sys, time, cv2
    from trackpipe.pipeline.video import VideoWriter
    src, out, progress, fps, n_src = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
    cap = cv2.VideoCapture(src)
    frames = [cap.read()[1] for _ in range(n_src)]
    vw = VideoWriter.open(out, fps, frames[0].shape[:2])
    with open(progress, "w") as log:
        log.write(f"open {vw.preset} {vw.threads}\\n")
        log.flush()
        t0 = time.monotonic()
        i = 0
        while True:
            vw.write(frames[i % n_src])
            i += 1
            log.write(f"{i}\\n")      # frame i written (write returned)
            log.flush()
            delay = t0 + i / fps - time.monotonic()
            if delay > 0:             # a steady pace: the source's frame rate, or as fast as it goes
                time.sleep(delay)
""")


def test_sigkill_mid_run_loses_at_most_two_seconds(tmp_path):
    out, progress, fps, n_src = tmp_path / "killed.mp4", tmp_path / "progress.txt", 30.0, 30
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(VIDEO_1080), str(out), str(progress), str(fps),
                              str(n_src)], cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE)
    pgid = os.getpgid(child.pid)
    try:
        deadline = time.monotonic() + 60
        written = 0
        while written < 4 * fps and time.monotonic() < deadline and child.poll() is None:   # >= 4 s of video
            time.sleep(0.1)
            lines = progress.read_text().splitlines()[1:] if progress.exists() else []  # after "open ..."
            written = max((int(t) for t in lines if t.strip().isdigit()), default=0)
    finally:
        os.killpg(pgid, signal.SIGKILL)
        child.wait(10)
        err = child.stderr.read().decode(errors="replace")
    assert child.returncode == -signal.SIGKILL, err
    lines = progress.read_text().splitlines()
    assert lines[0].startswith("open superfast 1"), lines[0]   # the default for 1080p at 30 fps
    written = max(int(t) for t in lines[1:] if t.isdigit())
    assert written >= 4 * fps, f"only {written} frames written before the deadline"
    src, _ = read_frames(VIDEO_1080, n_src)
    cv_frames, cv_fps, w, h = decode_opencv(out)
    av_frames, info = decode_pyav(out)
    lost_cv, lost_av = written - len(cv_frames), written - len(av_frames)
    print(f"written {written}, decoded OpenCV {len(cv_frames)}, PyAV {len(av_frames)}")
    assert (w, h) == (1920, 1080) and cv_fps == pytest.approx(fps) and info["rate"] == 30
    assert 0 <= lost_cv <= 2 * fps and 0 <= lost_av <= 2 * fps
    for i in (0, len(cv_frames) // 2, len(cv_frames) - 1):       # the right frames, in order
        assert psnr(cv_frames[i], src[i % n_src]) > 30
        assert psnr(av_frames[i], src[i % n_src]) > 30


def test_full_disk_keeps_whole_fragments_and_leaves_no_empty_file(frames360, tmp_path):
    """A real 512 KB tmpfs fills mid-video: write raises VideoWriterError with errno ENOSPC, the
    file is cut back to its last whole fragment (it decodes to the end without an error), no
    descriptor is left open, and an open on the full disk leaves no header-only file."""
    import errno

    from trackpipe.pipeline.video.writer import next_part_path

    from tests.tmpfs import small_disk
    fds = len(os.listdir("/proc/self/fd"))
    with small_disk(tmp_path / "disk", "512k") as disk:
        path = disk / "out.mp4"
        vw = VideoWriter.open(path, 30.0, (360, 640), preset="veryfast")
        with pytest.raises(VideoWriterError) as exc:
            for k in range(3000):
                vw.write(frames360[k % len(frames360)])
        assert exc.value.errno == errno.ENOSPC and "No space left on device" in str(exc.value)
        assert vw.landed
        vw.close()
        vw.close()
        n = 0
        with av.open(str(path)) as c:       # every packet decodes: no half fragment at the end
            for _ in c.decode(c.streams.video[0]):
                n += 1
        assert 30 <= n <= vw.frames
        assert len(os.listdir("/proc/self/fd")) == fds
        part = next_part_path(path)
        assert part.name == "out.part1.mp4"
        from tests.tmpfs import fill
        fill(disk, leave=0)
        with pytest.raises(VideoWriterError) as exc:
            VideoWriter.open(part, 30.0, (360, 640))
        assert exc.value.errno == errno.ENOSPC and not part.exists()


def test_next_part_numbers_on_from_the_highest_part(tmp_path):
    from trackpipe.pipeline.video.writer import next_part_path
    v = tmp_path / "out.mp4"
    assert next_part_path(v) == tmp_path / "out.part1.mp4"
    for name in ("out.part1.mp4", "out.part3.mp4", "out.partx.mp4", "other.part9.mp4", "out.part5.mkv"):
        (tmp_path / name).write_bytes(b"x")
    assert next_part_path(v) == tmp_path / "out.part4.mp4"
