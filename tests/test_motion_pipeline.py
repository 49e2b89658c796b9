"""Motion gating, held objects, filters and masks in real runs of run_tracker.py (real model,
real clips built from ../shared/assets/video by tests/motion_clips.py), and their bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from conftest import COCO_NAMES, ROOT, YF_CFG, YF_WEIGHTS

from tests.assets import VIDEO
from tests.motion_clips import still_moving_still

MODEL = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES), "--size", "320",
         "--backend", "onnx", "--precision", "fp32"]
STREET = VIDEO / "aiguys_video.mp4"


def _cli(*args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_tracker.py"), *args], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"), check=False)


def _events(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def _started(events) -> Counter:
    return Counter(e.get("class", e["class_id"]) for e in events if e["event"] == "track_started")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """2 s still (a real frame + noise), 90 real frames (3 s) of people and a car, 2 s still."""
    return still_moving_still(STREET, tmp_path_factory.mktemp("clip") / "c.mp4", still_s=2.0, start=100, frames=90)


def test_gated_run_detects_the_moving_share_and_keeps_the_tracks(clip, tmp_path):
    runs = {}
    for mode in ("off", "on"):
        ev, prof = tmp_path / f"ev_{mode}.jsonl", tmp_path / f"p_{mode}.json"
        r = _cli("--source", clip.path, "--headless", "--events", str(ev), "--profile", str(prof),
                 "--set", f"detect.motion={mode}", *MODEL)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[mode] = (_events(ev), json.loads(prof.read_text())["cameras"]["cam0"])
    (ev_off, cam_off), (ev_on, cam_on) = runs["off"], runs["on"]
    assert cam_off["frames_out"] == cam_on["frames_out"] == clip.frames   # lossless: every frame tracked
    assert cam_off["detect_fraction"] == 1.0 and cam_off["motion_fraction"] is None   # files: gating off
    assert cam_on["gating"] is True and 0 < cam_on["motion_fraction"] <= 1
    assert cam_on["detect_fraction"] <= clip.moving_share + 0.10, (cam_on, clip.moving_share)
    a, b = _started(ev_off), _started(ev_on)
    for k in set(a) | set(b):
        assert abs(a[k] - b[k]) <= max(1, 0.10 * max(a[k], b[k])), (a, b)
    # held objects: every track started also ended, once
    for evs in (ev_off, ev_on):
        st = [e["track_id"] for e in evs if e["event"] == "track_started"]
        en = [e["track_id"] for e in evs if e["event"] == "track_ended"]
        assert sorted(st) == sorted(en) and len(set(st)) == len(st)
    # the objects seen in the last still stretch stand still at the end, and keep their ids
    assert cam_on["stationary"], cam_on


def test_object_mask_and_threshold_in_a_run(tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("object_masks:\n  - [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]\n"
                   "filters:\n  person: {threshold: 0.5}\n")
    ev, prof = tmp_path / "ev.jsonl", tmp_path / "p.json"
    r = _cli("--source", str(STREET), "--max-frames", "120", "--headless", "--config", str(cfg), "--events", str(ev),
             "--profile", str(prof), *MODEL)
    assert r.returncode == 0, r.stderr[-2000:]
    started = [e for e in _events(ev) if e["event"] == "track_started"]
    assert started
    for e in started:   # no track starts with its bottom centre in the left half
        x1, _, x2, _ = e["box"]
        assert (x1 + x2) / 2 >= 320 - 4, e
    cam = json.loads(prof.read_text())["cameras"]["cam0"]
    assert cam["filtered"]["mask"] > 0


@pytest.mark.parametrize("yaml, message", [
    ("filters:\n  persn: {min_area: 10}\n", "error: filters.persn: unknown class 'persn'"),
    ("filters:\n  person: {min_area: 10}\n  '0': {max_area: 99}\n",
     "error: filters: keys 'person' and '0' name the same class 0"),
    ("object_masks:\n  - [[0, 0], [1, 1], [1, 0], [0, 1]]\n",
     "object_masks[0].points: the polygon crosses itself (edges 0 and 2)"),
    ("object_masks:\n  - {points: [[0, 0], [1, 0], [1, 1]], classes: [unicorn]}\n",
     "error: object_masks[0].classes: unknown class 'unicorn'"),
    ("detect: {motion: sometimes}\n", "detect.motion: invalid value 'sometimes' (allowed: auto, on, off)"),
])
def test_bad_motion_settings_are_one_line_and_exit_2(tmp_path, yaml, message):
    (tmp_path / "c.yaml").write_text(yaml)
    r = _cli("--source", str(STREET), "--headless", "--config", str(tmp_path / "c.yaml"), *MODEL, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


def test_a_live_camera_is_gated_and_says_so_in_the_live_view_metrics_and_profile(clip, tmp_path):
    """A realtime (live) source: detect.motion auto is on; the live view's stats and /metrics
    carry each camera's detected share, motion share and stationary objects."""
    import re
    import signal
    import urllib.request

    from tests.procs import wait_for

    prof = tmp_path / "p.json"
    err = open(tmp_path / "stderr.txt", "w+")   # noqa: SIM115 (closed below, after the run)
    p = subprocess.Popen([sys.executable, str(ROOT / "run_tracker.py"), "--source", clip.path, "--realtime", "--loop",
                          "--headless", "--http-port", "0", "--profile", str(prof), "--set", "detect.motion_boxes=true",
                          *MODEL], cwd=str(ROOT),
                         env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.DEVNULL, stderr=err, text=True,
                         start_new_session=True)
    try:
        def url():
            m = re.search(r"live view on (http://\S+/)", (tmp_path / "stderr.txt").read_text())
            assert p.poll() is None, (tmp_path / "stderr.txt").read_text()
            return m and m.group(1)

        base = wait_for(url, 120, "the live view")

        def gated():
            s = json.loads(urllib.request.urlopen(base + "api/stats", timeout=5).read())
            c = (s.get("cameras") or {}).get("cam0") or {}
            return c if c.get("frames_out", 0) > clip.frames and c.get("motion_fraction") is not None else None

        cam = wait_for(gated, 120, "a loop of the clip in the live stats")
        assert cam["gating"] is True and cam["detect_fraction"] < 1.0
        text = urllib.request.urlopen(base + "metrics", timeout=5).read().decode()
        for name in ("trackpipe_camera_detect_fraction", "trackpipe_camera_motion_fraction",
                     "trackpipe_camera_stationary_objects"):
            assert re.search(rf'^{name}{{camera="cam0"}} [0-9.]+$', text, re.MULTILINE), name
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            raise
        err.close()
    assert p.returncode == 130, (tmp_path / "stderr.txt").read_text()[-2000:]
    cam = json.loads(prof.read_text())["cameras"]["cam0"]
    assert cam["gating"] is True and 0 < cam["detect_fraction"] < 1.0 and cam["motion_ms"] > 0


def test_detect_uri_is_decoded_and_detected_while_uri_stays_the_record_stream(clip, tmp_path):
    """A camera with a low-resolution detect stream: capture decodes detect_uri (the boxes are in
    its pixels), the record stream's size is probed for mapping boxes to it."""
    from trackpipe.pipeline.config import load_config
    from trackpipe.pipeline.runtime.inputs import prepare

    from tests.motion_clips import encode, read_video
    frames, fps = read_video(clip.path, 0, 90, size=(320, 180))
    small = tmp_path / "sub.mp4"
    encode(iter(frames), small, fps)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"cameras:\n  - {{name: door, uri: '{clip.path}', detect_uri: '{small}'}}\n")
    cfg = load_config(path=str(cfg_path))
    cams = prepare(cfg, cfg.model)
    cam = cams[0]
    assert (cam.info.width, cam.info.height) == (320, 180) and cam.uri == clip.path
    assert cam.motion.detect_uri == str(small) and cam.motion.record_size == (640, 360)
    m = cam.motion.box_map((320, 180))
    assert m is not None and m([[10, 10, 20, 20]]).tolist() == [[20, 20, 40, 40]]
    ev = tmp_path / "ev.jsonl"
    r = _cli("--config", str(cfg_path), "--headless", "--events", str(ev), *MODEL)
    assert r.returncode == 0, r.stderr[-2000:]
    boxes = [e["box"] for e in _events(ev) if e["event"] == "track_started"]
    assert boxes and all(b[2] <= 320.5 and b[3] <= 180.5 for b in boxes)
