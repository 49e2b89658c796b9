"""Camera faults against the REAL CLI (``python run_tracker.py --source rtsp://... --headless``, its
own process group, real detectors) and the real GStreamer RTSP server of tests/rtsp: a killed and
restarted camera, a frozen one, a camera absent at start, a consumer much slower than the camera,
and SIGTERM / SIGINT in the middle of those. Every run must end within 5 s of the signal with
0/130/143, leave nothing in /dev/shm or the temp folder and no process of its group.

Timing sources: event ``t`` (wall clock when capture noticed), the Prometheus endpoint
(``--metrics-port``, refreshed every ``profile.interval_s`` = 0.2 s) for counters during the run,
the profile JSON at exit, and the server's frame stamps (``decode_stamp``) in the output video.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import COCO_NAMES, DARKNET, ROOT, YF_CFG, YF_WEIGHTS, leftovers
from test_run_tracker import _wait_group_gone
from tests.procs import running_in_group
from tests.rtsp.fixtures import RtspServer, decode_stamp, free_port, open_capture, rtsp_available

YF = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES), "--size", "320",
      "--backend", "onnx", "--precision", "fp32"]
FPS = 25
WATCHDOG_S = 5.0          # the default, named by the issue
BACKOFF = (0.5, 30.0)     # defaults: initial, max (doubling)
pytestmark = pytest.mark.alone  # time bounds on live runs: no other test of the session beside them


@pytest.fixture
def server():
    ok, why = rtsp_available()
    if not ok:
        pytest.skip(f"RTSP test server unavailable: {why}")
    srv = RtspServer(width=640, height=480, fps=FPS)
    yield srv
    srv.close()


class Tracker:
    """``run_tracker.py`` on an RTSP url as a real subprocess in its own process group."""

    def __init__(self, tmp_path: Path, url: str, model=YF, extra=()):
        self.tmp = tmp_path
        self.ev, self.prof, self.port = tmp_path / "events.jsonl", tmp_path / "profile.json", free_port()
        args = [sys.executable, str(ROOT / "run_tracker.py"), "--source", url, "--headless", "--events",
                str(self.ev), "--profile", str(self.prof), *model, "--metrics-port", str(self.port),
                "--set", "profile.interval_s=0.2", "--cache-dir", str(tmp_path.parent / "tp-cache"), *extra]
        self.p = subprocess.Popen(args, cwd=str(ROOT), env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                  stdout=open(tmp_path / "stdout.txt", "w"),
                                  stderr=open(tmp_path / "stderr.txt", "w"), start_new_session=True)

    def stderr(self) -> str:
        return (self.tmp / "stderr.txt").read_text()

    def alive(self) -> None:
        assert self.p.poll() is None, f"pipeline exited ({self.p.returncode}): {self.stderr()[-2000:]}"

    def events(self, name=None) -> list:
        if not self.ev.exists():
            return []
        out = []
        for ln in self.ev.read_text().splitlines():
            try:
                e = json.loads(ln)
            except ValueError:  # a line being written
                continue
            if name is None or e["event"] == name:
                out.append(e)
        return out

    def metrics(self) -> dict:
        try:
            txt = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=1).read().decode()
        except OSError:
            return {}
        out = {}
        for ln in txt.splitlines():
            if ln.startswith("trackpipe_"):
                k, v = ln.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def items(self, stage="render") -> float:
        return self.metrics().get(f'trackpipe_stage_items{{stage="{stage}"}}', 0.0)

    def wait(self, cond, timeout: float, what: str):
        t0 = time.monotonic()
        while True:
            self.alive()  # the pipeline never exits during a fault
            v = cond()
            if v:
                return v
            assert time.monotonic() - t0 < timeout, f"timed out after {timeout}s waiting for {what}"
            time.sleep(0.05)

    def wait_event(self, name: str, n: int, timeout: float) -> dict:
        return self.wait(lambda: (lambda evs: evs[n - 1] if len(evs) >= n else None)(self.events(name)),
                         timeout, f"{name} #{n}")

    def wait_frames(self, n: float, timeout: float = 60) -> float:
        return self.wait(lambda: self.items() >= n and self.items(), timeout, f"{n} rendered frames")

    def stop(self, sig: int, codes) -> float:
        """Signal the whole group (like a terminal / systemd); -> seconds until no process is left."""
        pgid = self.p.pid
        os.killpg(pgid, sig)
        took = _wait_group_gone(self.p, 5.0)
        code = self.p.wait(1)
        err = self.stderr()
        assert code in codes, err[-2000:]
        assert took < 5.0
        assert "Traceback" not in err, err[-3000:]
        assert running_in_group(pgid) == []
        assert leftovers(pgid) == []
        return took

    def kill(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(5)


@pytest.fixture
def tracker():
    runs = []

    def make(*a, **kw) -> Tracker:
        t = Tracker(*a, **kw)
        runs.append(t)
        return t

    yield make
    for t in runs:
        t.kill()


def backoff_bound(lost_t: float, ready_t: float) -> float:
    """The backoff interval in effect when the server came back: reconnect attempts start at the
    loss and wait 0.5, 1, 2, 4 ... s (capped at 30) between them (failed opens take < 0.2 s)."""
    t, b = lost_t, BACKOFF[0]
    while t + b < ready_t:
        t += b
        b = min(2 * b, BACKOFF[1])
    return b


def _serving(url: str, timeout: float) -> float:
    """Once a client of our own reads a frame from ``url`` -> that time (time.time())."""
    deadline = time.monotonic() + timeout
    while True:
        cap = open_capture(url, 3000, 3000)
        try:
            if cap.isOpened() and cap.read()[0]:
                return time.time()
        finally:
            cap.release()
        assert time.monotonic() < deadline, f"{url} serves no frame {timeout:g}s after its restart"
        time.sleep(0.2)


@pytest.mark.timeout(90)
def test_killed_camera_restarted_5s_later_then_sigterm(server, tracker, tmp_path):
    server.start()
    server.wait_ready(20)
    tr = tracker(tmp_path, server.url, extra=["--log-level", "debug"])   # each reconnect attempt logged
    tr.wait_frames(20)
    t_kill = time.time()
    server.kill()
    lost = tr.wait_event("source_lost", 1, 10)
    detect = lost["t"] - t_kill
    time.sleep(max(0.0, t_kill + 5.0 - time.time()))
    t_restart = time.time()
    server.start()
    server.wait_ready(20)
    t_ready = _serving(server.url, 20)   # back means serving frames, not only listening
    restored = tr.wait_event("source_restored", 1, 40)
    recovery = restored["t"] - t_restart
    bound = backoff_bound(lost["t"], t_ready) + 3.0
    after = tr.items()
    tr.wait_frames(after + 10, 20)  # frames flow again
    m = tr.metrics()  # what a monitoring system sees
    assert (m["trackpipe_source_lost_total"], m["trackpipe_source_reconnects_total"], m["trackpipe_source_up"]) \
        == (1, 1, 1), m
    print(f"\nkill: source_lost after {detect:.2f}s, source_restored {recovery:.2f}s after the restart "
          f"(bound {bound:.1f}s)")
    assert detect < 2.0
    attempts = [ln for ln in (tmp_path / "stderr.txt").read_text().splitlines() if "reconnecting in" in ln]
    assert recovery < bound, f"served again {t_ready - t_restart:.1f}s after the restart; attempts:\n" + \
        "\n".join(attempts)
    # SIGTERM while the camera is gone again (capture is between reconnect attempts)
    server.kill()
    tr.wait_event("source_lost", 2, 10)
    took = tr.stop(signal.SIGTERM, (143, 0))
    print(f"SIGTERM during backoff: gone in {took:.2f}s")
    kinds = [e["event"] for e in tr.events() if e["event"].startswith("source_")]
    assert kinds == ["source_lost", "source_restored", "source_lost"], kinds


def _stamps(video: Path) -> list:
    cap = cv2.VideoCapture(str(video))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(decode_stamp(f))  # None where a drawn box covers the stamp


@pytest.mark.timeout(100)
def test_frozen_camera_no_stale_frames_then_sigint_while_frozen(server, tracker, tmp_path):
    server.start()
    server.wait_ready(20)
    video = tmp_path / "out.mp4"
    tr = tracker(tmp_path, server.url, extra=["--output", str(video)])
    tr.wait_frames(20)
    t_freeze = time.time()
    server.freeze()
    time.sleep(max(0.0, t_freeze + 1.5 - time.time()))
    frozen_items = (tr.items("capture"), tr.items())  # in-flight frames (~0.2 s) are done by now
    # counts lag the stages by <= ~0.5 s (0.2 s stats period + the supervisor's 0.2 s sample), so take
    # them 1 s before the resume: render count C covers every frame rendered before ~8.5 s of freeze
    time.sleep(max(0.0, t_freeze + 9.0 - time.time()))
    resume_items = (tr.items("capture"), tr.items())
    time.sleep(max(0.0, t_freeze + 10.0 - time.time()))
    t_resume = time.time()
    server.resume()
    lost = tr.wait_event("source_lost", 1, 20)
    restored = tr.wait_event("source_restored", 1, 30)
    detect = lost["t"] - t_freeze
    after = tr.items()
    tr.wait_frames(after + 20, 20)
    print(f"\nfreeze: source_lost {detect:.2f}s after SIGSTOP ({lost['reason']}), source_restored "
          f"{restored['t'] - t_resume:.2f}s after SIGCONT; capture/render counts 1.5 s into the freeze "
          f"{frozen_items}, 1 s before the resume {resume_items}")
    # a second freeze, and Ctrl-C while capture's read is blocked on the frozen server
    server.freeze()
    time.sleep(2.0)
    took = tr.stop(signal.SIGINT, (130, 0))
    print(f"SIGINT while frozen: gone in {took:.2f}s")
    server.resume()
    assert restored["t"] >= t_resume - 0.05  # restored only once the camera delivers again
    # capture's sequence did not move between the loss and the restore: no frame passed in between
    assert restored["seq"] == lost["seq"]
    # The written frames, by the server's own stamps (render dropped none, so video frame i is the
    # i-th rendered frame): server wall stamps strictly increase (no frame passed twice or out of
    # order; the server's counter may repeat after a SIGSTOP, its clock does not), and every frame
    # rendered after index C (rendered >= 8.5 s into the freeze or later) was made after the resume:
    # no frame from before the freeze (buffered by FFmpeg or held in a slot) is passed on as new.
    prof = json.loads(tr.prof.read_text())
    assert prof["stages"]["render"]["drops"] == 0
    st = _stamps(video)
    ok = [s for s in st if s is not None]
    assert len(ok) > 40
    walls = [s.wall for s in ok]
    assert all(b > a for a, b in zip(walls, walls[1:]))
    after_resume = [s for s in st[int(resume_items[1]):] if s is not None]
    assert after_resume
    stale = [s for s in after_resume if s.wall < t_resume - 0.05]
    late = [s for s in st[int(frozen_items[1]):int(resume_items[1])] if s is not None]
    print(f"stamps: first frame after the resume made {after_resume[0].wall - t_resume:+.2f}s after SIGCONT; "
          f"{len(late)} frame(s) rendered between 1 and 9 s into the freeze, made "
          f"{[round(s.wall - t_freeze, 2) for s in late]} s relative to SIGSTOP")
    # the criteria: the stall is noticed within 6 s while the server is still frozen, and
    # nothing made before the freeze is rendered after it (FFmpeg hands out its buffered frames when
    # the read timeout interrupts it: capture must drop them)
    assert detect < 6.0, f"stall noticed {detect:.2f}s after SIGSTOP ({lost['reason']})"
    assert not stale, (f"{len(stale)} frame(s) made before the freeze rendered after it, stale by "
                       f"{[round(t_resume - s.wall, 1) for s in stale]} s")


@pytest.mark.timeout(60)
def test_camera_absent_at_start(server, tracker, tmp_path):
    tr = tracker(tmp_path, server.url)
    time.sleep(4.0)
    tr.alive()
    server.start()
    server.wait_ready(20)
    tr.wait(lambda: tr.events("source_restored") or tr.items() >= 10, 40, "frames after the camera appeared")
    tr.stop(signal.SIGTERM, (143, 0))


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    """YOLOv4 (full) with random weights at 224: ~0.17 s per frame here, ~5.5 FPS vs the 25 fps camera
    (slow enough that a queue would show at once, fast enough that the 0.5 s bound has margin on
    this shared 2-core machine: at 288, 0.29 s per frame, one sample in ~100 reached 501 ms)."""
    from trackpipe.models.darknet import load_cfg, write_random_weights
    cfg = DARKNET / "cfg" / "yolov4.cfg"
    if not cfg.exists():
        pytest.skip(f"{cfg} missing")
    w = tmp_path_factory.mktemp("yolov4") / "yolov4-random.weights"
    write_random_weights(load_cfg(cfg), w)
    return ["--cfg", str(cfg), "--weights", str(w), "--names", str(COCO_NAMES), "--size", "224",
            "--conf", "0.9", "--backend", "onnx", "--precision", "fp32"]


def _slow_consumer_run(tr) -> dict:
    """Sample the frame age every 0.5 s for 14 s once frames flow (the gauge is refreshed every
    0.2 s), stop with SIGINT; -> the figures."""
    tr.wait_frames(3, 90)
    t0 = time.monotonic()
    samples = []  # (s since start, age of the newest tracked frame ms)
    while time.monotonic() - t0 < 14.0:
        tr.alive()
        m = tr.metrics()
        if "trackpipe_frame_age_ms" in m:
            samples.append((time.monotonic() - t0, m["trackpipe_frame_age_ms"]))
        time.sleep(0.5)
    took = tr.stop(signal.SIGINT, (130,))
    prof = json.loads(tr.prof.read_text())
    age, lat, cap, inf = prof["frame_age_at_tracker_ms"], prof["latency_ms"], prof["stages"]["capture"], \
        prof["stages"]["infer"]
    fps = prof["stages"]["render"]["fps"]
    grab_rate = cap["frames_grabbed"] / max(1e-9, cap["items"] / cap["fps"]) if cap["fps"] else 0.0
    ages = [a for _, a in samples]
    first, last = sorted(ages[:10])[len(ages[:10]) // 2], sorted(ages[-10:])[len(ages[-10:]) // 2]
    slope = float(np.polyfit([t for t, _ in samples], ages, 1)[0])  # ms of age per s of run
    print(f"\nslow consumer: infer {inf['ms_p50']:.0f} ms/frame, {fps:.1f} FPS rendered; frame age at the "
          f"tracker p50/p95/p99/max {age['p50']:.0f}/{age['p95']:.0f}/{age['p99']:.0f}/{age['max']:.0f} ms; "
          f"sampled {len(ages)}x over {samples[-1][0] - samples[0][0]:.0f}s: max {max(ages):.0f} ms, median of "
          f"the first 10 {first:.0f} -> last 10 {last:.0f} ms, trend {slope:+.1f} ms/s; capture-to-render p50 "
          f"{lat['p50']:.0f} ms; grabber {grab_rate:.1f} fps of {FPS}; SIGINT -> gone in {took:.2f}s")
    return dict(fps=fps, ages=ages, age=age, slope=slope, grab_rate=grab_rate)


@pytest.mark.timeout(200)
def test_slow_consumer_frame_age_bounded_then_sigint(server, tracker, tmp_path, slow_model):
    """Frame age at the tracker: capture's t_mono (taken right after the frame is decoded) to the
    moment the tracker takes the frame, sampled twice a second from ``trackpipe_frame_age_ms`` and
    summarised in the profile (``frame_age_at_tracker_ms``). It does not include the camera ->
    decode delay before t_mono (~0.09 s here, docs/live.md)."""
    server.start()
    server.wait_ready(20)
    r = _slow_consumer_run(tracker(tmp_path, server.url, model=slow_model))
    if r["grab_rate"] <= 0.8 * FPS:
        # the capture thread itself could not keep up with a 25 fps 640x480 stream: the VM was
        # starved (seen once in CI: inference 1.6x slower than usual, grabber 14.6 fps), and no
        # frame-age bound can hold then. Measure once more; a second starved run fails below.
        print(f"grabber {r['grab_rate']:.1f} fps of {FPS}: machine starved, measuring again")
        (tmp_path / "again").mkdir()
        r = _slow_consumer_run(tracker(tmp_path / "again", server.url, model=slow_model))
    fps, ages, age, slope, grab_rate = r["fps"], r["ages"], r["age"], r["slope"], r["grab_rate"]
    assert fps < FPS / 3  # genuinely slower than the camera
    assert len(ages) >= 20 and max(ages) < 500.0
    # p95, not max: the histogram covers the whole run, including the first (ONNX warm-up) frames
    # and scheduling spikes of this shared 2-core machine; max is printed above
    assert age["p95"] < 500.0
    # no upward trend: a queue growing at the camera's pace would add ~800 ms of age per second
    # (docs/live.md); the fitted slope stays within load noise (the machine is shared: inference
    # itself slows and speeds up by tens of ms over 20-30 s, seen +2.5 ms/s with a soak beside it)
    assert slope < 10.0
    # ... and the grabber drains the stream at the camera's rate, so nothing queues in FFmpeg
    assert grab_rate > 0.8 * FPS
