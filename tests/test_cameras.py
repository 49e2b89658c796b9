"""Several cameras in one run: the camera list (names, per-camera outputs, zones and lines),
bad input (one line, exit 2), and real runs: two video files through one shared detector with
per-camera outputs, and three real RTSP cameras (tests/rtsp's GStreamer server) where one is
killed and one frozen while the others keep going."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from conftest import ASSETS, COCO_NAMES, ROOT, YF_CFG, YF_WEIGHTS

from trackpipe.pipeline.config import load_config
from trackpipe.pipeline.errors import ConfigError
from trackpipe.pipeline.runtime.cameras import resolve_cameras

MODEL = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES), "--size", "320",
         "--backend", "onnx", "--precision", "fp32"]
TRAFFIC = ASSETS / "video" / "traffic-cars.mp4"     # 1280x720, 29.97 fps
WALK = ASSETS / "video" / "aiguys_video.mp4"        # 640x360, 30 fps


def _cfg(data: dict):
    return load_config(data=data)


# --- the camera list ------------------------------------------------------------------------------

def test_one_source_is_one_camera_with_its_name_and_paths():
    cams = resolve_cameras(_cfg({"source": {"uri": "a.mp4"}, "pipeline": {"camera": "door"},
                                 "output": {"video": "o.mp4", "mot": "t.txt"},
                                 "zones": [{"name": "z", "points": [[0, 0], [1, 0], [1, 1]]}]}))
    assert len(cams) == 1
    c = cams[0]
    assert (c.index, c.name, c.uri, c.video, c.mot) == (0, "door", "a.mp4", "o.mp4", "t.txt")
    assert c.zones and c.zones[0].name == "z" and c.lines is None


def test_several_cameras_get_names_and_their_own_outputs():
    cams = resolve_cameras(_cfg({"cameras": ["a.mp4", {"name": "yard", "uri": "b.mp4", "output": "y.mp4"}],
                                 "output": {"video": "out/v.mp4", "mot": "out/{camera}.txt", "events": "e.jsonl",
                                            "snapshots": "snaps"},
                                 "lines": [{"name": "gate", "camera": "yard", "points": [[0, 0.5], [1, 0.5]]}]}))
    assert [c.name for c in cams] == ["cam0", "yard"]
    assert [c.video for c in cams] == ["out/v_cam0.mp4", "y.mp4"]       # a path without {camera}: _<name>
    assert [c.mot for c in cams] == ["out/cam0.txt", "out/yard.txt"]
    assert [c.events for c in cams] == ["e.jsonl", "e.jsonl"]            # one events file: events name the camera
    assert [c.snapshots for c in cams] == [str(Path("snaps") / "cam0"), str(Path("snaps") / "yard")]
    assert cams[0].lines is None and cams[1].lines[0].name == "gate"


@pytest.mark.parametrize("data, message", [
    ({"cameras": [{"name": "a", "uri": "x.mp4"}, {"name": "a", "uri": "y.mp4"}]}, "two cameras are named 'a'"),
    ({"cameras": ["x.mp4", "y.mp4"], "zones": [{"name": "z", "camera": "cam7", "points": [[0, 0], [1, 0], [1, 1]]}]},
     "zones[0].camera: unknown camera 'cam7' (cameras: cam0, cam1)"),
    ({"cameras": ["x.mp4", "y.mp4"], "lines": [{"name": "l", "points": [[0, 0], [1, 1]]}]},
     "lines[0]: name its camera"),
    ({"cameras": [{"uri": "x.mp4", "fps": 3}]}, "cameras[0]: unknown key 'fps'"),
    ({"cameras": [{"name": "a b", "uri": "x.mp4"}]}, "camera names are"),
    ({"cameras": [{"uri": "x.mp4", "mot": "t.txt"}, {"uri": "y.mp4", "mot": "t.txt"}]},
     "write the same mot file"),
])
def test_bad_camera_lists_are_one_clear_error(data, message):
    with pytest.raises(ConfigError) as e:
        resolve_cameras(_cfg(data))
    assert message in str(e.value)


def _cli(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_tracker.py"), *args], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_bad_camera_input_from_the_command_line_exits_2(tmp_path):
    (tmp_path / "c.yaml").write_text("zones:\n  - name: door\n    camera: cam0\n    points: [[0, 0], [1, 1]]\n")
    runs = {
        "duplicate": _cli("--source", str(WALK), "--source", str(TRAFFIC), "--camera", "a", "--camera", "a",
                          "--headless", *MODEL),
        "two points": _cli("--source", str(WALK), "--source", str(TRAFFIC), "--config", str(tmp_path / "c.yaml"),
                           "--headless", *MODEL),
        "window": _cli("--source", str(WALK), "--source", str(TRAFFIC), "--window", "on", *MODEL),
    }
    for what, r in runs.items():
        assert r.returncode == 2, (what, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (what, r.stderr)
    assert "two cameras are named 'a'" in runs["duplicate"].stderr
    assert "at least 3 points" in runs["two points"].stderr or "3 points" in runs["two points"].stderr
    assert "shows one camera" in runs["window"].stderr


# --- two files, one detector ----------------------------------------------------------------------

CAMERAS = f"""cameras:
  - name: road
    uri: {TRAFFIC}
    lines:
      - name: across
        points: [[150, 430], [1080, 430]]
        classes: [car, motorbike, bus, truck]
  - name: walk
    uri: {WALK}
    classes: [person]
"""


@pytest.mark.timeout(180)
def test_two_files_share_the_detector_and_keep_their_own_outputs(tmp_path):
    (tmp_path / "c.yaml").write_text(CAMERAS)
    n = 60
    r = _cli("--config", str(tmp_path / "c.yaml"), "--headless", *MODEL, "--max-frames", str(n),
             "--output", str(tmp_path / "{camera}.mp4"), "--mot", str(tmp_path / "{camera}.txt"),
             "--events", str(tmp_path / "events.jsonl"), "--profile", str(tmp_path / "p.json"),
             "--set", "pipeline.infer_workers=1", timeout=170)
    assert r.returncode == 0, r.stderr
    for name, (w, h) in (("road", (1280, 720)), ("walk", (640, 360))):
        cap = cv2.VideoCapture(str(tmp_path / f"{name}.mp4"))
        assert (int(cap.get(3)), int(cap.get(4)), int(cap.get(7))) == (w, h, n), name
        cap.release()
        rows = [ln.split(",") for ln in (tmp_path / f"{name}.txt").read_text().splitlines()]
        assert rows and {int(x[0]) for x in rows} <= set(range(1, n + 1))
    ev = [json.loads(ln) for ln in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {e["camera"] for e in ev} == {"road", "walk"}
    # the walk camera keeps people only; its tracks started and ended in pairs
    walk = [e for e in ev if e["camera"] == "walk" and e["event"] == "track_started"]
    assert walk and all(e["class"] == "person" for e in walk)
    for cam in ("road", "walk"):
        started = {e["track_id"] for e in ev if e["camera"] == cam and e["event"] == "track_started"}
        ended = {e["track_id"] for e in ev if e["camera"] == cam and e["event"] == "track_ended"}
        assert started == ended, cam
    assert all(e["camera"] == "road" for e in ev if e["event"] == "line_cross")
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["frames_in"] == prof["frames_out"] == 2 * n
    cams = prof["cameras"]
    assert set(cams) == {"road", "walk"}
    for c in cams.values():
        assert c["frames_in"] == c["frames_out"] == n and c["drops"] == 0 and c["fps"] > 0
        assert c["frame_age_ms"]["p50"] is not None and c["frame_age_ms"]["p95"] >= c["frame_age_ms"]["p50"]
    assert set(prof["sources"]) == {"road", "walk"}
    assert "road" in prof["stages"]["track"]["counts"]


# --- three real RTSP cameras ------------------------------------------------------------------------

@pytest.mark.alone
@pytest.mark.timeout(150)
def test_a_killed_and_a_frozen_camera_never_stop_the_others(tmp_path):
    from test_rtsp_scenarios import Tracker
    from tests.rtsp.fixtures import RtspServer, rtsp_available
    ok, why = rtsp_available()
    if not ok:
        pytest.skip(f"RTSP test server unavailable: {why}")
    servers = [RtspServer(width=320, height=240, fps=15) for _ in range(3)]
    tr = None
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready(20)
        # reconnect attempts 0.5 s, then 1 s apart (the default goes on doubling to 30 s): the restarted
        # camera is back within a second of its server
        extra = ["--source", servers[1].url, "--source", servers[2].url, "--set", "source.watchdog_s=2",
                 "--set", "source.backoff_max_s=1"]
        tr = Tracker(tmp_path, servers[0].url, extra=extra)

        def frames(cam):
            return tr.metrics().get(f'trackpipe_camera_frames{{camera="{cam}"}}', 0.0)

        def lost_while_others_go_on(n, timeout, cam, others, seconds, gain):
            """The n-th source_lost (within timeout) is cam's; within the next seconds each of the
            others delivers at least gain more frames."""
            lost = tr.wait_event("source_lost", n, timeout)
            assert lost["camera"] == cam
            before = {c: frames(c) for c in others}
            t0 = time.monotonic()
            while not all(frames(c) >= before[c] + gain for c in others):
                assert time.monotonic() - t0 < seconds, (before, tr.metrics())
                time.sleep(0.1)

        tr.wait(lambda: all(frames(c) >= 15 for c in ("cam0", "cam1", "cam2")), 60, "frames from every camera")
        # cam1's server is killed: cam1 is lost, the other two keep delivering
        servers[1].kill()
        lost_while_others_go_on(1, 15, "cam1", ("cam0", "cam2"), 4.0, 20)
        servers[1].start()
        servers[1].wait_ready(20)
        restored = tr.wait_event("source_restored", 1, 40)
        assert restored["camera"] == "cam1"
        tr.wait(lambda: frames("cam1") >= 30, 30, "cam1 delivering again")
        # cam2's server freezes (SIGSTOP): the watchdog loses it, the others go on
        servers[2].freeze()
        lost_while_others_go_on(2, 20, "cam2", ("cam0", "cam1"), 3.0, 15)
        tr.wait(lambda: tr.metrics().get('trackpipe_camera_source_up{camera="cam2"}') == 0, 5, "cam2 down")
        assert tr.metrics()['trackpipe_camera_source_lost_total{camera="cam0"}'] == 0
        servers[2].resume()
        tr.stop(signal.SIGTERM, (143, 0))
        prof = json.loads(tr.prof.read_text())
        assert set(prof["cameras"]) == {"cam0", "cam1", "cam2"}
        assert all(c["frames_out"] > 0 for c in prof["cameras"].values())
        kinds = [(e["event"], e["camera"]) for e in tr.events() if e["event"].startswith("source_")]
        assert kinds[:3] == [("source_lost", "cam1"), ("source_restored", "cam1"), ("source_lost", "cam2")], kinds
    finally:
        if tr is not None:
            tr.kill()
        for s in servers:
            s.close()


def test_the_shipped_cameras_config_resolves():
    cfg = load_config(str(ROOT / "configs" / "cameras.yaml"))
    cams = resolve_cameras(cfg, [ln.strip() for ln in COCO_NAMES.read_text().splitlines()])
    assert [c.name for c in cams] == ["door", "street"]
    assert cams[0].classes == (0,) and cams[0].zones[0].name == "porch" and cams[1].lines[0].name == "kerb"
    assert [c.mot for c in cams] == ["out/door.txt", "out/street.txt"]


def test_a_per_camera_mot_file_alone_brings_the_sink_stage():
    from dataclasses import replace

    from trackpipe.models.spec import ModelSpec
    from trackpipe.pipeline.media.sources import SourceInfo
    from trackpipe.pipeline.runtime.supervisor import Supervisor
    cfg = _cfg({"cameras": [{"uri": "a.mp4", "mot": "a.txt"}, "b.mp4"], "output": {"headless": True}})
    info = SourceInfo("file", "a.mp4", 64, 48, 30.0, 10, False)
    cams = [replace(c, info=info) for c in resolve_cameras(cfg)]
    assert "sink" in Supervisor(cfg, ModelSpec(), cams).topology
    assert "sink" not in Supervisor(_cfg({"cameras": ["a.mp4", "b.mp4"], "output": {"headless": True}}), ModelSpec(),
                                    [replace(c, info=info) for c in resolve_cameras(
                                        _cfg({"cameras": ["a.mp4", "b.mp4"]}))]).topology
