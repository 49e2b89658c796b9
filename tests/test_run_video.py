"""The output video of a real run: H.264 in fragmented MP4 that survives a SIGKILL of the whole
run (power loss, the OOM killer, ``docker kill``), mp4v by choice, the output folder created.

run_tracker.py runs as a user runs it: a subprocess in its own process group, the real
Yolo-Fastest detector, the real 1080p video."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import cv2
import pytest

from conftest import COCO_NAMES, ROOT, VIDEO_360, VIDEO_1080, YF_CFG, YF_WEIGHTS, leftovers
from tests.procs import running_in_group

MODEL = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES), "--size", "320",
         "--backend", "onnx", "--precision", "fp32"]
FPS = 30  # both test videos


def _start(args, tmp_path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(ROOT / "run_tracker.py"), *args], cwd=str(ROOT), env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr.txt", "w+"),
                            start_new_session=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rendered(port: int) -> int:
    """Frames render had finished, as the supervisor last heard (a lower bound of the truth:
    stats reach the metrics every profile.interval_s); -1 while the endpoint is not up."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
    except OSError:
        return -1
    m = re.search(r'^trackpipe_stage_items\{stage="render"\} ([0-9.e+]+)$', text, re.M)
    return int(float(m.group(1))) if m else -1


def _opencv_frames(path) -> list:
    cap = cv2.VideoCapture(str(path))
    shapes = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        shapes.append(f.shape)
    cap.release()
    return shapes


def _pyav_frames(path) -> tuple:
    """-> (frames decoded until the end or the first error, the stream's codec name)."""
    import av
    n = 0
    with av.open(str(path)) as c:
        codec = c.streams.video[0].codec_context.name
        try:
            for _ in c.decode(video=0):
                n += 1
        except av.error.FFmpegError:  # a torn last fragment: what came before counts
            pass
    return n, codec


@pytest.mark.timeout(180)
def test_sigkill_of_the_whole_run_loses_at_most_2s_of_video(tmp_path):
    """SIGKILL of every process of the run mid-video: the frames rendered up to 2 s before the
    kill decode with OpenCV and PyAV. The frames rendered before the kill are read from the run's
    own metrics endpoint just before the kill (render's item count, at most one stats period
    old: a lower bound, so the check never passes by luck of a stale count)."""
    port = _free_port()
    out = tmp_path / "new" / "folder" / "out.mp4"   # created by render
    p = _start(["--source", str(VIDEO_1080), *MODEL, "--output", str(out), "--headless", "--metrics-port",
                str(port), "--set", "profile.interval_s=0.2", "--mot", str(tmp_path / "t.txt")], tmp_path)
    t0, rendered = time.monotonic(), -1
    try:
        while rendered < 4 * FPS:  # 4 s of video rendered: well past the first fragments
            assert p.poll() is None, f"exited early ({p.returncode}): {(tmp_path / 'stderr.txt').read_text()}"
            assert time.monotonic() - t0 < 150, "the run did not get going"
            time.sleep(0.05)
            rendered = _rendered(port)
        assert rendered < 302 - FPS, "the run was nearly done before the kill: no crash tested"
        os.killpg(p.pid, signal.SIGKILL)  # everything at once, as power loss or `docker kill`
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)
    t1 = time.monotonic()
    while running_in_group(p.pid):
        assert time.monotonic() - t1 < 5
        time.sleep(0.05)
    assert out.stat().st_size > 0
    shapes = _opencv_frames(out)
    n_av, codec = _pyav_frames(out)
    assert codec == "h264"  # the default (output.codec auto with PyAV installed)
    lost = rendered - len(shapes)
    assert len(shapes) >= rendered - 2 * FPS, f"{rendered} rendered before the kill, {len(shapes)} decode"
    assert n_av >= rendered - 2 * FPS and abs(n_av - len(shapes)) <= 1, (n_av, len(shapes))
    assert set(shapes) == {(1080, 1920, 3)}
    print(f"rendered >= {rendered} before the kill, {len(shapes)} decode (OpenCV), {n_av} (PyAV); "
          f"lost <= {max(lost, 0)} frames")
    from trackpipe.pipeline.runtime import cleanup
    cleanup.clean_stale()
    assert leftovers(p.pid) == []


@pytest.mark.timeout(120)
def test_h264_by_default_and_mp4v_by_choice(tmp_path):
    """output.codec: auto gives H.264 (browser-playable), mp4v when asked; every frame written."""
    import av
    for codec, expect in (("auto", "h264"), ("mp4v", "mpeg4")):
        out = tmp_path / codec / "out.mp4"
        p = _start(["--source", str(VIDEO_360), *MODEL, "--output", str(out), "--headless", "--max-frames", "40",
                    "--set", f"output.codec={codec}"], tmp_path)
        assert p.wait(100) == 0, (tmp_path / "stderr.txt").read_text()
        n, name = _pyav_frames(out)
        assert (n, name) == (40, expect)
        with av.open(str(out)) as c:
            s = c.streams.video[0]
            assert (s.codec_context.width, s.codec_context.height, s.average_rate) == (640, 360, FPS)


@pytest.mark.timeout(60)
def test_bad_codec_is_one_line(tmp_path):
    p = _start(["--source", str(VIDEO_360), *MODEL, "--output", str(tmp_path / "o.mp4"), "--headless",
                "--set", "output.codec=h265"], tmp_path)
    assert p.wait(50) == 2
    err = (tmp_path / "stderr.txt").read_text()
    assert err.count("\n") == 1 and "output.codec: invalid value 'h265' (allowed: auto, h264, mp4v)" in err, err
    assert not (tmp_path / "o.mp4").exists()
