"""Every command in the README's ```bash blocks, run as written.

The commands are read from README.md itself, so a command added there without a way to run it
here fails `test_every_readme_command_is_covered`. Each runs as a real subprocess in a temporary
folder with the repository on PYTHONPATH (as from the repository root), with only what a user
would supply themselves filled in:

- paths relative to the repository root (``configs/``, ``samples/``, ``../shared/``, the two
  scripts) -> absolute paths, so that every file a command names must exist in the repository;
- placeholders: ``CFG``/``W`` -> Yolo-Fastest-1.1-xl from ../shared/assets, ``VIDEO`` ->
  aiguys_video.mp4, ``--coco-json ... --images ...`` -> the COCO subset in ../shared/assets;
- servers the command names: ``rtsp://cam...`` -> real RTSP cameras (tests/rtsp), the MQTT URL
  -> a real mosquitto, the webhook URL -> a real local HTTP server, ``screen:``/``run_capture.py``
  -> a real Xvfb display;
- a bound, so that the suite stays short: ``--max-frames`` for files, ``--duration`` for live
  sources, ``--seconds`` for ``models bench``; ports the machine may use already (``--metrics-port``,
  ``--http-port``) -> free ones.

The set-up commands (``pip install ...``) and the test command are run by CI itself
(.ci/run, tests/test_install.py) and skipped here.
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import ASSETS, ROOT, YF_CFG, YF_WEIGHTS

README = ROOT / "README.md"
SKIP = {
    "pip install -e .": "the set-up: .ci/run and tests/test_install.py run it in fresh environments",
    'pip install -e ".[dev,gui,tf,eval,int8]"': "the test set-up: .ci/run runs it",
    "python -m pytest -q -n 2 --dist loadfile": "this suite",
}
REPO_DIRS = ("configs/", "samples/")  # README paths relative to the repository root


def readme_commands() -> List[str]:
    """The commands of README.md's bash blocks: comments stripped, ``&&`` chains split."""
    text = README.read_text()
    out = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                out += [c.strip() for c in line.split("&&")]
    return out


def _bounded(argv: List[str]) -> List[str]:
    """The command's own arguments plus a bound on its length."""
    joined = " ".join(argv)
    if argv[:3] == ["-m", "models", "bench"]:
        return argv + ["--seconds", "1"]
    if argv[:2] == ["-m", "models"]:
        return argv
    live = any(k in joined for k in ("rtsp://", "screen:", "run_capture.py"))
    return argv + (["--duration", "3"] if live else ["--max-frames", "20"])


class Env:
    """What the README's commands talk to, started once for the module."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.rtsp: Dict[str, object] = {}
        self.broker = None
        self.hook = None
        self.xvfb = None
        self.posts = 0

    def rtsp_url(self, name: str) -> str:
        from tests.rtsp.fixtures import RtspServer, rtsp_available
        if name not in self.rtsp:
            ok, why = rtsp_available()
            if not ok:
                pytest.skip(f"RTSP test server unavailable: {why}")
            srv = RtspServer(width=320, height=240, fps=15).start()
            srv.wait_ready(20)
            self.rtsp[name] = srv
        return self.rtsp[name].url

    def mqtt_url(self) -> str:
        from mqtt_broker import MosquittoBroker, mosquitto_available
        if self.broker is None:
            ok, why = mosquitto_available()
            if not ok:
                pytest.skip(why)
            self.broker = MosquittoBroker().start()
        return self.broker.url

    def hook_url(self) -> str:
        if self.hook is None:
            env = self

            class Hook(http.server.BaseHTTPRequestHandler):
                def do_POST(self):  # noqa: N802
                    self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    env.posts += 1
                    self.send_response(204)
                    self.end_headers()

                def log_message(self, *a):
                    pass

            self.hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
            threading.Thread(target=self.hook.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.hook.server_address[1]}/hook"

    def display(self) -> dict:
        from tests.xvfb import Xvfb, xvfb_available
        if self.xvfb is None:
            ok, why = xvfb_available(("Xvfb", "PySide6", "mss"))
            if not ok:
                pytest.skip(why)
            self.xvfb = Xvfb(width=1600, height=900).start()
            ok, why = self.xvfb.run_probe()
            if not ok:
                pytest.skip(f"Qt xcb platform plugin cannot start: {why}")
        return self.xvfb.env()

    def close(self) -> None:
        for s in self.rtsp.values():
            s.close()
        if self.broker is not None:
            self.broker.close()
        if self.hook is not None:
            self.hook.shutdown()
        if self.xvfb is not None:
            self.xvfb.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("readme"))
    yield e
    e.close()


def prepare(cmd: str, env: Env, cwd: Path):
    """-> (argv, environment) of a README command, or None to skip it (the reason in SKIP)."""
    if cmd in SKIP:
        return None
    from tests.rtsp.fixtures import free_port
    argv = shlex.split(cmd)
    assert argv[0] == "python", f"a README command not run by python: {cmd}"
    argv = argv[1:]
    proc_env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc_env.pop("DISPLAY", None)
    out = []
    for i, a in enumerate(argv):
        prev = argv[i - 1] if i else ""
        if a.startswith("../shared/"):
            a = str((ROOT / a).resolve())
        elif a in ("run_tracker.py", "run_capture.py") or a.startswith(REPO_DIRS):
            a = str(ROOT / a)
        elif (prev, a) == ("--cfg", "CFG"):
            a = str(YF_CFG)
        elif (prev, a) == ("--weights", "W"):
            a = str(YF_WEIGHTS)
        elif (prev, a) == ("--source", "VIDEO"):
            a = str(ASSETS / "video" / "aiguys_video.mp4")
        elif (prev, a) == ("--coco-json", "..."):
            a = str(ASSETS / "coco_val2017" / "instances_val2017_subset66.json")
        elif (prev, a) == ("--images", "..."):
            a = str(ASSETS / "coco_val2017" / "images")
        elif a.startswith("rtsp://"):
            a = env.rtsp_url(a)
        elif a.startswith("mqtt://"):
            a = env.mqtt_url()
        elif a.startswith("http://127.0.0.1:8000/"):
            a = env.hook_url()
        elif prev in ("--metrics-port", "--http-port"):
            a = str(free_port())
        out.append(a)
    if any(a.startswith("screen:") for a in out) or any(a.endswith("run_capture.py") for a in out):
        proc_env.update(env.display())
    if "--calib" in out:  # the calibration the README's calibrate command writes, first
        calib = cwd / out[out.index("--calib") + 1]
        if not calib.exists():
            c = [sys.executable, "-m", "models", "calibrate", "--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS),
                 "--calib-source", str(ASSETS / "video" / "aiguys_video.mp4"), "--out", str(calib)]
            r = subprocess.run(c, cwd=str(cwd), env=proc_env, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
    return [sys.executable, *_bounded(out)], proc_env


def test_every_readme_command_is_covered():
    cmds = readme_commands()
    assert len(cmds) >= 10, cmds
    for c in cmds:
        argv = shlex.split(c)
        assert c in SKIP or argv[0] == "python", f"no way to run this README command here: {c}"


def test_readme_files_exist():
    """A config or sample a README command names ships in the repository (no file made up here)."""
    named = [a for c in readme_commands() for a in shlex.split(c) if a.startswith(REPO_DIRS)]
    assert any(a.startswith("samples/") for a in named), named  # the main job runs on the sample video
    missing = [a for a in named if not (ROOT / a).is_file()]
    assert not missing, f"README commands name files the repository lacks: {missing}"


COMMANDS = [c for c in readme_commands() if c not in SKIP]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"{i}:{' '.join(shlex.split(c)[1:3])[:40]}"
                                                   for i, c in enumerate(COMMANDS)])
def test_readme_command_runs_as_written(cmd, env):
    cwd = env.tmp  # one folder for all, as one user's: the calibration one command writes, the next reads
    outputs = [a for a in shlex.split(cmd) if "{camera}" not in a and not a.startswith(("../",) + REPO_DIRS)
               and (a.startswith("out/") or a.endswith((".mp4", ".txt", ".jsonl", ".json", ".png")))]
    for path in outputs:
        (cwd / path).unlink(missing_ok=True)
    argv, proc_env = prepare(cmd, env, cwd)
    r = subprocess.run(argv, cwd=str(cwd), env=proc_env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, f"{cmd}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr and "error:" not in r.stderr, r.stderr[-3000:]
    for path in outputs:
        assert (cwd / path).exists(), f"{cmd}: {path} not written"
