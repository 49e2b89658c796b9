"""Bad input at the command line and in config files: each is one ``error:`` line naming the flag
or key, exit 2, no traceback, and nothing written: no output, no shared memory, nothing in the
model cache. Run as a user runs it (run_tracker.py in its own process group, the real video and
Yolo-Fastest files); the memory estimate also as a unit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conftest import COCO_NAMES, DARKNET, ROOT, VIDEO_360, YF_CFG, YF_WEIGHTS, leftovers
from procs import run_to_exit

MODEL = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES)]
BOMB = ("[&a0 [" + ", ".join(["lol"] * 9) + "], "
        + ", ".join(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)) + "]")
HOOK = "webhooks:\n  - url: http://127.0.0.1:9/hook\n    headers:\n      Authorization: Bearer ${TP_UNSET_TOKEN}\n"

CASES = {
    "camera ..": (["--camera", "..", "--output", "{tmp}/out/{camera}/o.mp4"],
                  "error: --camera: camera names are 1-64 of A-Z a-z 0-9 _ . -, first a letter, digit or _ "
                  "(pattern [A-Za-z0-9_][A-Za-z0-9_.-]{0,63}), got '..'"),
    "camera with a newline": (["--camera", "cam0\n"], r"error: --camera: camera names are"),
    "camera with a separator": (["--camera", "a/b"], "error: --camera: camera names are"),
    "camera in the config": (["--set", "pipeline.camera=."], "error: pipeline.camera: camera names are"),
    "size too large": (["--size", "32000"], "error: argument --size: must be multiples of 32 (the models' largest "
                                            "stride) from 32 to 4096, got 32000x32000"),
    "size 0": (["--size", "0"], "error: argument --size: must be multiples of 32"),
    "duration nan": (["--duration", "nan", "--loop"],
                     "error: --duration (pipeline.duration_s): expected a finite number, got nan"),
    "duration inf": (["--duration", "inf", "--loop"], "error: --duration (pipeline.duration_s): expected a finite "
                                                      "number, got inf"),
    "fps nan": (["--set", "source.fps=.nan"], "error: source.fps: expected a finite number, got nan"),
    "alias bomb in zones": (["--config", "{tmp}/bomb.yaml"],
                            "bomb.yaml: line 4 invalid YAML: its aliases expand to more than 100000 values"),
    "5000 levels": (["--config", "{tmp}/deep.yaml"], "deep.yaml: line 1 invalid YAML: nested deeper than 64 levels"),
    "unset webhook variable": (["--config", "{tmp}/hook.yaml"],
                               "hook.yaml: webhooks[0].headers.Authorization: environment variable TP_UNSET_TOKEN is "
                               "not set (the value uses ${TP_UNSET_TOKEN})"),
}


def _run_bad(args, tmp_path: Path, timeout: float = 60):
    """run_tracker.py with ``args`` (``{tmp}`` -> tmp_path) on the 640x360 video, precision auto (a
    run that would calibrate int8 into the cache), a fresh cache -> (exit code, stderr, pid)."""
    (tmp_path / "bomb.yaml").write_text("zones:\n  - name: z\n    points: [[0, 0], [1, 0], [1, 1]]\n"
                                        f"    classes: {BOMB}\n")
    (tmp_path / "deep.yaml").write_text("pipeline: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "hook.yaml").write_text(HOOK)
    env = {k: v for k, v in os.environ.items() if k != "TP_UNSET_TOKEN"}
    env.update(PYTHONUNBUFFERED="1", TRACKPIPE_CACHE=str(tmp_path / "cache"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    return run_to_exit([sys.executable, str(ROOT / "run_tracker.py"), "--source", str(VIDEO_360), *MODEL,
                        "--headless", "--mot", str(tmp_path / "t.txt"), *args], ROOT, env, timeout)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, case):
    args, expected = CASES[case]
    code, err, pid = _run_bad(args, tmp_path)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert expected in err, err
    # no cache, no MOT file, no video (with --camera .. it would be tmp_path/out/../o.mp4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml", "deep.yaml", "hook.yaml"]
    assert leftovers(pid) == []


@pytest.mark.timeout(90)
def test_a_run_that_cannot_fit_in_memory_is_refused_before_it_starts(tmp_path):
    """YOLOv4 at 4096x4096 holds ~29 GiB of layer outputs per frame, ~234 GiB for the 8 frames of
    an int8 calibration: refused from the cfg's layer shapes, before the weights are read (these are
    Yolo-Fastest's, the wrong size: never opened) and before anything is allocated or cached."""
    from trackpipe.pipeline.runtime.inputs import available_memory
    if (available_memory() or 0) > 200 * 2**30:
        pytest.skip("more than 200 GiB available: this run might fit")
    code, err, pid = _run_bad(["--cfg", str(DARKNET / "cfg" / "yolov4.cfg"), "--size", "4096"], tmp_path)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: memory: this run needs about 234.1 GiB but "), err
    assert "detector tensors 234.1 GiB (8 frames at model.size 4096x4096)" in err and "use a smaller --size" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml", "deep.yaml", "hook.yaml"]
    assert leftovers(pid) == []


def test_memory_estimate_from_sizes(yf_spec):
    """Rings: slots x frame bytes per camera; tensors: the cfg's layer outputs at the spec's size,
    times the frames held at once (fp32: workers x batch, at most the slots; auto/int8: 8)."""
    from types import SimpleNamespace

    from trackpipe.models.darknet import load_cfg
    from trackpipe.pipeline.config import Config
    from trackpipe.pipeline.errors import ConfigError
    from trackpipe.pipeline.runtime.inputs import check_memory, estimate_memory

    cfg = Config()
    cfg.pipeline.ring_slots, cfg.pipeline.infer_workers, cfg.pipeline.batch = 6, 1, 2
    cams = [SimpleNamespace(info=SimpleNamespace(shape=(360, 640, 3))),
            SimpleNamespace(info=SimpleNamespace(shape=(1080, 1920, 3)))]
    per_frame = 4 * sum(h * w * c for h, w, c in (layer.shape for layer in load_cfg(YF_CFG, (320, 320)).layers))
    est = estimate_memory(cfg, yf_spec.with_(precision="fp32"), cams)
    assert est.ring_bytes == 6 * (360 * 640 * 3 + 1080 * 1920 * 3)
    assert (est.tensor_bytes, est.frames, est.size) == (per_frame, 2, (320, 320))
    assert estimate_memory(cfg, yf_spec.with_(precision="auto"), cams).frames == 8   # a calibration may run
    cfg.pipeline.infer_workers, cfg.pipeline.batch = 0, "auto"     # auto: up to 2 workers, one frame each
    assert estimate_memory(cfg, yf_spec.with_(precision="fp32"), cams).frames == 2
    cfg.pipeline.infer_workers, cfg.pipeline.batch = 4, 8          # never more frames than ring slots
    assert estimate_memory(cfg, yf_spec.with_(precision="fp32"), cams).frames == 6
    cfg.pipeline.infer_workers, cfg.pipeline.batch = 1, 2
    big = estimate_memory(cfg, yf_spec.with_(precision="fp32", size=(640, 640)), cams)
    assert big.tensor_bytes == 4 * per_frame
    check_memory(est, available=est.total_bytes)     # fits exactly: no error
    with pytest.raises(ConfigError) as e:
        check_memory(est, available=est.total_bytes - 1)
    assert str(e.value).startswith("memory: this run needs about ") and "x 2 cameras" in str(e.value)
    assert "\n" not in str(e.value)
