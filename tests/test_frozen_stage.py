"""A stage that freezes (SIGSTOP) in a live run is replaced and the run goes on: a real
``run_tracker.py --realtime --loop --duration`` subprocess on a real video with the real
Yolo-Fastest detector. The hung timeout is lowered through the config so that each freeze is
seconds, not the default 10+; infer, track and render freeze one after the other in one run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import COCO_NAMES, ROOT, VIDEO_360, YF_CFG, YF_WEIGHTS, leftovers
from tests.procs import running_in_group, stage_pid, wait_for

MODEL = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES), "--size", "320",
         "--backend", "onnx", "--precision", "fp32"]
HUNG_S = 2.5        # pipeline.heartbeat_timeout_s for this run
DURATION_S = 28
STATS = re.compile(r"(\w+) ([\d.]+) fps/")
pytestmark = pytest.mark.alone  # three restarts must fit in the run's duration


def _stats_after(text: str, mark: str) -> list:
    """The per-stage FPS ({stage: fps}) of every stats line logged after the first line that
    contains ``mark``."""
    at = text.find(mark)
    if at < 0:
        return []
    return [{m[0]: float(m[1]) for m in STATS.findall(ln)} for ln in text[at:].splitlines() if "stats: " in ln]


@pytest.mark.timeout(150)
def test_frozen_stages_are_replaced_and_the_run_reaches_its_duration(tmp_path):
    err = tmp_path / "stderr.txt"
    args = ["--source", str(VIDEO_360), *MODEL, "--realtime", "--loop", "--duration", str(DURATION_S), "--headless",
            "--mot", str(tmp_path / "t.txt"), "--profile", str(tmp_path / "p.json"),
            "--set", f"pipeline.heartbeat_timeout_s={HUNG_S}", "--set", "profile.interval_s=0.5",
            "--set", "profile.log_interval_s=0.5"]
    p = subprocess.Popen([sys.executable, str(ROOT / "run_tracker.py"), *args], cwd=str(ROOT),
                         env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.DEVNULL,
                         stderr=open(err, "w"), start_new_session=True)
    log = err.read_text
    try:
        wait_for(lambda: p.poll() is not None or "ready in" in log(), 120, "the run to be ready")
        for stage in ("infer", "track", "render"):
            assert p.poll() is None, log()
            old = wait_for(lambda: max(stage_pid(p.pid, stage), 0), 30, f"tp-{stage}")
            fd = os.pidfd_open(old)     # a pidfd signals this process only, never a reused pid
            try:
                signal.pidfd_send_signal(fd, signal.SIGSTOP)
                t0 = time.monotonic()
                mark = f"stage '{stage}' hung (no heartbeat for"
                # the line is logged once the watchdog's SIGKILL has ended the stopped process
                wait_for(lambda: mark in log() or p.poll() is not None, 60, f"{stage} killed as hung")
                try:
                    signal.pidfd_send_signal(fd, signal.SIGCONT)
                except ProcessLookupError:
                    pass                # killed by the watchdog, as it should be
            finally:
                os.close(fd)
            assert p.poll() is None and mark in log(), log()
            # the replacement takes frames: its stage and render move again
            wait_for(lambda: any(s.get(stage, 0) > 0 and s.get("render", 0) > 0 for s in _stats_after(log(), mark))
                     or p.poll() is not None, 60, f"frames through the new {stage}")
            assert p.poll() is None, f"the run ended before the new {stage} took frames:\n{log()}"
            assert stage_pid(p.pid, stage) not in (old, -1)
            print(f"\n{stage}: frozen, killed and replaced, frames again {time.monotonic() - t0:.1f}s after SIGSTOP")
        assert p.wait(DURATION_S + 60) == 0, log()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    text = log()
    assert "error" not in text.lower() and "completed:" in text, text
    for stage in ("infer", "track", "render"):
        assert text.count(f"stage '{stage}' hung") == 1, text
    r = json.loads((tmp_path / "p.json").read_text())
    assert r["outcome"] == "completed" and r["mode"] == "latest"
    assert {n: s["restarts"] for n, s in r["stages"].items()} == \
        {"capture": 0, "infer": 1, "track": 1, "render": 1, "sink": 0}
    assert r["wall_s"] >= DURATION_S
    # a restarted tracker numbers its tracks from 1,000,001: rows of the new tracker were written
    ids = [int(ln.split(",")[1]) for ln in (tmp_path / "t.txt").read_text().splitlines()]
    assert any(i < 1_000_000 for i in ids) and any(i > 1_000_000 for i in ids)
    wait_for(lambda: not running_in_group(p.pid), 20, "every process of the run to exit")
    assert leftovers(p.pid) == []
