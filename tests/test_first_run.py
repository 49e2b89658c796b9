"""A new user's first run: run_tracker.py on a real video with an empty cache, its stderr a
terminal (a pseudo-terminal here, so that the progress bar is drawn as a user sees it).

What it must show: only lines a user needs at the default log level (at most three: the ready
line, the one line about choosing the backend, the completed line), the backend measurement
after the run (it starts at once on fp32), and a progress bar whose final rate is the run's
FPS (start-up not counted), as the profile's ``pipeline_fps``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from conftest import ROOT, VIDEO_360
from tests.procs import run_on_terminal, screen_lines

BAR = re.compile(r"^trackpipe:")
RATE = re.compile(r"([0-9.]+)frame/s")


def test_first_run_is_short_deferred_and_honest(tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, TRACKPIPE_CACHE=str(cache), PYTHONUNBUFFERED="1")
    prof = tmp_path / "profile.json"
    # precision fp32: the backend is still measured on first use (onnx vs OpenVINO), without the
    # int8 calibration that precision auto adds (about 15 s more; the same code path otherwise)
    code, text = run_on_terminal([sys.executable, str(ROOT / "run_tracker.py"), "--source", str(VIDEO_360),
                                  "--output", str(tmp_path / "out.mp4"), "--profile", str(prof), "--max-frames", "200",
                                  "--precision", "fp32"], env, cwd=str(ROOT))
    lines = screen_lines(text)
    assert code == 0, text
    said = [ln for ln in lines if not BAR.match(ln)]
    assert len(said) <= 3, "\n".join(said)
    ready = [i for i, ln in enumerate(said) if " ready in " in ln]
    choosing = [i for i, ln in enumerate(said) if "choosing the fastest accurate backend" in ln]
    done = [i for i, ln in enumerate(said) if " completed: 200 frames in, 200 out" in ln]
    assert ready and choosing and done and ready[0] < choosing[0] < done[0], "\n".join(said)
    assert "openvino-fp32" in said[ready[0]] or "onnx-fp32" in said[ready[0]]   # fp32 at once
    assert "next runs: " in said[done[0]] and "None" not in said[done[0]]
    short = said[ready[0]].replace(str(tmp_path), "T").replace(str(VIDEO_360.parent), "V")
    assert len(short) < 200 and "worker" not in short and "placement" not in short, short  # details: --verbose
    assert list((cache / "auto").glob("*.json")), "the choice is cached for the next runs"

    bars = [ln for ln in lines if BAR.match(ln)]
    assert bars and "200/200" in bars[-1], bars[-1:]
    rate = float(RATE.findall(bars[-1])[-1])
    fps = json.loads(prof.read_text())["pipeline_fps"]
    assert abs(rate - fps) <= 0.10 * fps, f"bar {rate} frame/s vs profile pipeline_fps {fps}"


def test_model_guide_compares_the_zoo_here(tmp_path):
    """`python -m trackpipe.models bench` without a model: the zoo's models side by side, real
    weights where they are here, random ones (said so) where not, COCO AP50 where known."""
    from conftest import DARKNET

    env = dict(os.environ, TRACKPIPE_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "trackpipe.models", "bench",
                        "--models", "yolo-fastest-1.1-xl,yolov4-tiny", "--weights-from", str(DARKNET / "cfg"),
                        "--probe", str(VIDEO_360), "--seconds", "1"],
                       cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = {row["model"]: row for row in json.loads(r.stdout.strip().splitlines()[-1])}
    xl, tiny = rows["yolo-fastest-1.1-xl"], rows["yolov4-tiny"]
    assert xl["weights"] == "real" and xl["coco66"] == 0.434 and xl["fps"] > 0
    assert tiny["weights"] == "random" and tiny["published"] == 0.402 and tiny["fps"] > 0 and tiny["coco66"] is None
    table = r.stdout
    assert "weights random" in table and "yolov4-tiny" in table and "--model NAME" in table


def test_ready_line_names_each_cameras_classes(tmp_path):
    import dataclasses

    from trackpipe.models.spec import ModelSpec
    from trackpipe.pipeline.config import Layer, build_config
    from trackpipe.pipeline.media.sources import SourceInfo
    from trackpipe.pipeline.runtime.cameras import resolve_cameras
    from trackpipe.pipeline.runtime.supervisor import describe_run

    cfg = build_config([Layer({
        "cameras": [{"name": "road", "uri": "a.mp4", "classes": ["car"]}, {"name": "gate", "uri": "b.mp4"}],
        "output": {"mot": str(tmp_path / "{camera}.txt"), "http_port": 8080}}, "test")])
    names = ["person", "bicycle", "car"]
    info = SourceInfo("file", "a.mp4", 640, 360, 25.0, 100, False)
    cams = [dataclasses.replace(c, info=info) for c in resolve_cameras(cfg, names)]
    line = describe_run(cfg, ModelSpec(backend="openvino", precision="bf16"), cams, names)
    assert "road a.mp4 (640x360, 100 frames) classes car" in line
    assert "gate b.mp4 (640x360, 100 frames);" in line and "classes all" not in line
    assert "openvino-bf16" in line and "live view http://127.0.0.1:8080/" in line
