"""Test helpers around a real GStreamer RTSP server (``tests/rtsp/rtsp_server.py``).

The server runs under the SYSTEM ``/usr/bin/python3`` (PyGObject + GStreamer are Debian
packages, not pip ones); this module runs in the project's venv and only starts, signals and
reads from it. Use::

    ok, reason = rtsp_available()
    if not ok: pytest.skip(reason)            # names the missing Debian package(s)
    srv = RtspServer()                        # free port on 127.0.0.1, mount /live
    srv.start(); srv.wait_ready(10)
    cap = open_capture(srv.url, open_timeout_ms=3000, read_timeout_ms=2000)
    srv.kill()    # SIGKILL       srv.start()  # same port again
    srv.freeze()  # SIGSTOP       srv.resume() # SIGCONT
    srv.stop()    # SIGTERM, then SIGKILL after 5 s; idempotent

Every process is started in its own session (process group) and ``stop()`` signals the group,
so nothing outlives a test. Frames from the server carry a stamp (counter + wall clock, see
the server's docstring) that ``decode_stamp`` reads back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
STAMP_BITS, STAMP_ROWS, STAMP_BLOCK_H, STAMP_MAGIC = 32, 3, 16, 0xA5A5A5A5

_available: Optional[Tuple[bool, str]] = None


def _system_env() -> dict:
    """Environment for the system interpreter: nothing from the venv leaks in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("GST_DEBUG", "0")
    return env


def rtsp_available() -> Tuple[bool, str]:
    """(True, "") when the RTSP server can run here, else (False, precise reason for a skip)."""
    global _available
    if _available is not None:
        return _available
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        _available = (False, f"{SYSTEM_PYTHON} not found (Debian package python3)")
        return _available
    try:
        p = subprocess.run([SYSTEM_PYTHON, str(SERVER_SCRIPT), "--check"], capture_output=True,
                           text=True, timeout=60, env=_system_env())
        res = json.loads(p.stdout.strip().splitlines()[-1])
        _available = (bool(res["ok"]), res.get("reason", ""))
    except (subprocess.TimeoutExpired, ValueError, IndexError, KeyError) as e:
        _available = (False, f"RTSP server check failed: {e!r}")
    return _available


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """One RTSP server process on 127.0.0.1:port (stable across kill()/start())."""

    def __init__(self, port: Optional[int] = None, path: Optional[str] = None,
                 file: Optional[os.PathLike] = None, width: int = 0, height: int = 0,
                 fps: float = 0, extra_args: Sequence[str] = ()):
        self.port = port or free_port()
        self.file = None if file is None else str(file)
        self.path = path or ("/file" if file else "/live")
        self.args = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--path", self.path]
        if self.file:
            self.args += ["--file", self.file]
        for flag, v in (("--width", width), ("--height", height), ("--fps", fps)):
            if v:
                self.args += [flag, str(v)]
        self.args += list(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self.frozen = False
        self.ready_line = ""
        self._ready = threading.Event()
        self._log = tempfile.NamedTemporaryFile(prefix="rtsp-server-", suffix=".log", delete=False)
        self.starts = 0

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "RtspServer":
        if self.running():
            raise RuntimeError("server already running")
        self._ready.clear()
        self.frozen = False
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, text=True, env=_system_env(),
                                     start_new_session=True)
        self.starts += 1
        threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True).start()
        return self

    def _read_stdout(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            if line.startswith("READY") and proc is self.proc:
                self.ready_line = line.strip()
                self._ready.set()
        proc.stdout.close()

    def wait_ready(self, timeout: float = 15.0) -> str:
        """Block until the server listens; returns the URL. Raises with the server's log on failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.05):
                return self.url
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"RTSP server exited (rc={self.proc and self.proc.returncode}): "
                                   f"{self.log()[-2000:]}")
        raise TimeoutError(f"RTSP server not ready after {timeout:.1f}s: {self.log()[-2000:]}")

    def log(self) -> str:
        try:
            return Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the server (a crashed camera); returns once it is reaped."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(10)
        self.frozen = False

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets open but sends nothing (a hung camera)."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.frozen = False

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        """SIGTERM (after SIGCONT if frozen), SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if self.frozen:
                self.resume()
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(5)
        else:
            # the leader is gone; make sure nothing of its group survives
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return self.proc.returncode

    def close(self) -> None:
        """stop() and remove the log file."""
        self.stop()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass

    def __enter__(self) -> "RtspServer":
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- reading frames

@dataclass
class Stamp:
    counter: int       # frame counter at the server (frames since it started, at its fps)
    wall: float        # server wall clock (time.time()) when the frame was made
    age: float         # seconds between that and the time of decoding

    def __str__(self) -> str:
        return f"#{self.counter} age={self.age * 1000:.0f}ms"


def decode_stamp(frame_bgr: np.ndarray, now: Optional[float] = None) -> Optional[Stamp]:
    """Read the server's stamp from a decoded frame at its served size; None if absent/garbled."""
    if frame_bgr is None or frame_bgr.ndim < 2 or frame_bgr.shape[0] < STAMP_ROWS * STAMP_BLOCK_H:
        return None
    gray = frame_bgr.mean(axis=2) if frame_bgr.ndim == 3 else frame_bgr.astype(np.float32)
    bw = frame_bgr.shape[1] // STAMP_BITS
    if bw < 4:
        return None
    xs = (np.arange(STAMP_BITS) * bw + bw // 2)
    values = []
    for r in range(STAMP_ROWS):
        yc = r * STAMP_BLOCK_H + STAMP_BLOCK_H // 2
        patch = gray[yc - 2:yc + 2][:, (xs[:, None] + np.arange(-1, 2)).ravel()]
        level = patch.reshape(4, STAMP_BITS, 3).mean(axis=(0, 2))
        if np.any(np.abs(level - 125.5) < 40):        # neither black (16) nor white (235)
            return None
        bits = (level > 125.5).astype(np.uint64)
        values.append(int((bits << np.arange(STAMP_BITS - 1, -1, -1, dtype=np.uint64)).sum()))
    counter, wall_ms, check = values
    if counter ^ wall_ms ^ STAMP_MAGIC != check:
        return None
    now = time.time() if now is None else now
    now_ms = int(now * 1000)
    full_ms = now_ms - ((now_ms - wall_ms) % (1 << 32))
    return Stamp(counter, full_ms / 1000.0, (now_ms - full_ms) / 1000.0)


def open_capture(url: str, open_timeout_ms: int = 5000, read_timeout_ms: int = 5000,
                 options: str = "rtsp_transport;tcp"):
    """cv2.VideoCapture on CAP_FFMPEG with FFmpeg options and OpenCV's open/read timeouts.

    OPENCV_FFMPEG_CAPTURE_OPTIONS is read by OpenCV at every open, so it is set here just for
    this call (and restored). The timeouts are passed as open parameters, which is the form
    that works for both (see docs/live.md for the measured behaviour).
    """
    import cv2
    old = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = options
    try:
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_ms),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_ms)])
    finally:
        if old is None:
            os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
        else:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = old


def read_stamps(cap, n: int, timeout: float = 10.0) -> List[Stamp]:
    """Read up to n frames; return their stamps (stops at the first failed read or timeout)."""
    out: List[Stamp] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        ok, frame = cap.read()
        if not ok:
            break
        s = decode_stamp(frame)
        if s is not None:
            out.append(s)
    return out


# ----------------------------------------------------------------------------- pytest fixture

def _make_factory_fixture():
    import pytest

    @pytest.fixture
    def rtsp_server_factory():
        """Yields ``make(**RtspServer kwargs) -> RtspServer`` (started, ready); all closed at teardown.

        Skips the test, naming the missing Debian package(s), when the server cannot run here.
        """
        ok, reason = rtsp_available()
        if not ok:
            pytest.skip(reason)
        servers: List[RtspServer] = []

        def make(start: bool = True, **kw) -> RtspServer:
            srv = RtspServer(**kw)
            servers.append(srv)
            if start:
                srv.start()
                srv.wait_ready(15)
            return srv

        try:
            yield make
        finally:
            for srv in servers:
                srv.close()

    return rtsp_server_factory


rtsp_server_factory = _make_factory_fixture()
