"""Real X11 for tests: an Xvfb server, windows showing images, and an overlay runner.

    ok, reason = xvfb_available()            # names the missing Debian/pip package
    with Xvfb() as x:                        # Xvfb -displayfd .. -screen 0 1920x1080x24 -nolisten tcp -noreset
        win = ImageWindow(x, "dog.jpg", 200, 150, clicks="clicks.txt").start()
        ... mss grabs on x.display, xdotool on x.env() ...
        win.stop()

Xvfb picks a free display number itself (``-displayfd``: no race between two test runs) and
``-noreset`` keeps it from resetting when the last client leaves (without it, connections fail
intermittently). Every process here starts in its own session and is stopped by process group.

Run as a program (used by the helpers above, in a subprocess with DISPLAY set):
    python tests/xvfb.py show-image --image dog.jpg --x 200 --y 150 [--clicks FILE]
    python tests/xvfb.py overlay --region X,Y,W,H --tracks JSON [--names FILE] [--mode overlay]
    python tests/xvfb.py probe        # can Qt open its xcb platform plugin here?
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
XVFB_ARGS = ("-screen", "0", "1920x1080x24", "-nolisten", "tcp", "-noreset")


def _clean_env(base: Optional[dict] = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.pop("WAYLAND_DISPLAY", None)
    for key in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):   # set by `import cv2`
        if f"{os.sep}cv2{os.sep}" in env.get(key, "") + os.sep:
            env.pop(key)
    env["QT_QPA_PLATFORM"] = "xcb"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def xvfb_available(need: Sequence[str] = ("Xvfb", "xdotool", "PySide6")) -> Tuple[bool, str]:
    """(True, "") or (False, the missing package); ``need`` picks what the test uses."""
    missing = []
    if "Xvfb" in need and not shutil.which("Xvfb"):
        missing.append("Debian package xvfb (no Xvfb in PATH)")
    if "xdotool" in need and not shutil.which("xdotool"):
        missing.append("Debian package xdotool (no xdotool in PATH)")
    if "PySide6" in need:
        try:
            import PySide6  # noqa: F401
        except ImportError:
            missing.append("pip package PySide6-Essentials (cannot import PySide6)")
    if "mss" in need:
        try:
            import mss  # noqa: F401
        except ImportError:
            missing.append("pip package mss")
    return (not missing, "; ".join(missing))


def running_xvfb():
    """Generator for a pytest fixture: a started, probed and activated Xvfb, stopped afterwards.
    Skips when Qt's xcb platform plugin cannot start on it."""
    import pytest  # noqa: PLC0415 - this module also runs as a script without pytest

    x = Xvfb().start()
    try:
        ok, why = x.run_probe()
        if not ok:
            pytest.skip(f"Qt xcb platform plugin cannot start (see .ci/apt-packages.txt): {why}")
        x.activate()
        yield x
    finally:
        x.stop()


def _stop_group(proc: Optional[subprocess.Popen], timeout: float = 5.0) -> Optional[int]:
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
    try:                                     # leftovers of the group, if any
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.returncode


class Xvfb:
    """An Xvfb server on a free display; ``env()`` is the environment for X clients."""

    def __init__(self, width: int = 1920, height: int = 1080, depth: int = 24):
        self.size = (width, height)
        self.args = ["Xvfb", "-screen", "0", f"{width}x{height}x{depth}", "-nolisten", "tcp",
                     "-noreset"]
        self.proc: Optional[subprocess.Popen] = None
        self.display: Optional[str] = None
        self._log = tempfile.NamedTemporaryFile(prefix="xvfb-", suffix=".log", delete=False)
        self._saved_display: Optional[str] = None

    def start(self, timeout: float = 15.0) -> "Xvfb":
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(self.args[:1] + ["-displayfd", str(w)] + self.args[1:],
                                         pass_fds=(w,), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=self._log,
                                         start_new_session=True)
        finally:
            os.close(w)
        try:
            buf = b""
            deadline = time.monotonic() + timeout
            while not buf.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"Xvfb did not start: {self.log()[-1500:]}")
                ready, _, _ = select.select([r], [], [], min(left, 0.2))
                if ready:
                    chunk = os.read(r, 64)
                    if not chunk:
                        raise RuntimeError(f"Xvfb exited: {self.log()[-1500:]}")
                    buf += chunk
        finally:
            os.close(r)
        self.display = ":" + buf.decode().strip()
        # ready: the server wrote its number after it began listening; check a client connects
        sock = f"/tmp/.X11-unix/X{self.display[1:]}"
        while not os.path.exists(sock):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Xvfb socket {sock} missing")
            time.sleep(0.05)
        if shutil.which("xdpyinfo"):
            while subprocess.run(["xdpyinfo", "-display", self.display], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("Xvfb does not accept connections")
                time.sleep(0.05)
        return self

    def env(self, base: Optional[dict] = None) -> dict:
        env = _clean_env(base)
        env["DISPLAY"] = self.display
        return env

    def activate(self) -> None:
        """Point this process at the server too (mss, in-process Qt)."""
        self._saved_display = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = self.display

    def log(self) -> str:
        try:
            return Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self._saved_display is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = self._saved_display
        _stop_group(self.proc)
        try:
            os.unlink(self._log.name)
        except OSError:
            pass

    def __enter__(self) -> "Xvfb":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- X helpers ------------------------------------------------------------------------
    def grab(self, region: Optional[Tuple[int, int, int, int]] = None):
        """BGR numpy grab of the screen (or region x, y, w, h) with mss, on this display."""
        import mss
        import numpy as np
        cls = getattr(mss, "MSS", None) or mss.mss
        with cls(display=self.display.encode()) as sct:
            mon = sct.monitors[1] if region is None else \
                {"left": region[0], "top": region[1], "width": region[2], "height": region[3]}
            return np.ascontiguousarray(np.asarray(sct.grab(mon))[..., :3])

    def xdotool(self, *args: str, timeout: float = 10.0) -> str:
        p = subprocess.run(["xdotool", *args], env=self.env(), capture_output=True, text=True,
                           timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"xdotool {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def click(self, x: int, y: int, button: int = 1) -> None:
        self.xdotool("mousemove", "--sync", str(int(x)), str(int(y)), "click", str(button))

    def run_probe(self, timeout: float = 30.0) -> Tuple[bool, str]:
        """Can Qt's xcb plugin start on this display? (False, Qt's message) if not."""
        p = subprocess.run([sys.executable, str(Path(__file__)), "probe"], env=self.env(),
                           capture_output=True, text=True, timeout=timeout)
        return p.returncode == 0, (p.stderr.strip().splitlines() or [""])[-1] if p.returncode else ""


class _Child:
    """A helper program on an Xvfb display that prints one readiness line."""

    ready_prefix = "SHOWN"

    def __init__(self, xvfb: Xvfb, args: List[str]):
        self.xvfb, self.args = xvfb, args
        self.proc: Optional[subprocess.Popen] = None
        self.ready_line = ""
        self._err = tempfile.NamedTemporaryFile(prefix="xchild-", suffix=".log", delete=False)

    def start(self, timeout: float = 20.0) -> "_Child":
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__))] + self.args,
                                     env=self.xvfb.env(), stdout=subprocess.PIPE, stderr=self._err,
                                     stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        buf = ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise TimeoutError(f"{self.args[0]}: not ready: {self.stderr()[-1500:]}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 4096).decode()
                if not chunk:
                    raise RuntimeError(f"{self.args[0]} exited rc={self.proc.wait()}: "
                                       f"{self.stderr()[-1500:]}")
                buf += chunk
                for line in buf.splitlines():
                    if line.startswith(self.ready_prefix):
                        self.ready_line = line.strip()
                        self.output = buf
                        return self

    def stderr(self) -> str:
        try:
            return Path(self._err.name).read_text(errors="replace")
        except OSError:
            return self._stderr_text

    def stop(self) -> Optional[int]:
        """SIGTERM the process group (SIGKILL after 5 s); keeps the rest of stdout in .output."""
        rc = _stop_group(self.proc)
        if self.proc is not None and self.proc.stdout and not self.proc.stdout.closed:
            try:
                self.output += self.proc.stdout.read()
            finally:
                self.proc.stdout.close()
        self._stderr_text = self.stderr()
        try:
            os.unlink(self._err.name)
        except OSError:
            pass
        return rc

    output = ""
    _stderr_text = ""


class ImageWindow(_Child):
    """A frameless X window at (x, y) showing an image 1:1; records clicks to a file."""

    def __init__(self, xvfb: Xvfb, image: os.PathLike, x: int, y: int,
                 clicks: Optional[os.PathLike] = None):
        args = ["show-image", "--image", str(image), "--x", str(x), "--y", str(y)]
        if clicks:
            args += ["--clicks", str(clicks)]
        super().__init__(xvfb, args)
        self.pos = (x, y)


class OverlayProcess(_Child):
    """``run_overlay_loop`` in a subprocess, showing fixed tracks until stopped (SIGTERM)."""

    ready_prefix = "DRAWN"

    def __init__(self, xvfb: Xvfb, region: Tuple[int, int, int, int], xyxy, class_id, score,
                 track_id=None, names: Optional[Sequence[str]] = None, mode: str = "overlay",
                 image: Optional[os.PathLike] = None, then_empty_after: Optional[float] = None):
        tracks = {"xyxy": [list(map(float, b)) for b in xyxy], "class_id": [int(c) for c in class_id],
                  "score": [float(s) for s in score],
                  "track_id": [int(t) for t in (track_id if track_id is not None else
                                                range(1, len(class_id) + 1))]}
        args = ["overlay", "--region", ",".join(map(str, region)), "--tracks", json.dumps(tracks),
                "--mode", mode]
        if names is not None:
            args += ["--names", json.dumps(list(names))]
        if image is not None:
            args += ["--image", str(image)]
        if then_empty_after is not None:
            args += ["--then-empty-after", str(then_empty_after)]
        super().__init__(xvfb, args)

    @property
    def stats(self) -> dict:
        """run_overlay_loop's return value, once the process was stopped."""
        for line in self.output.splitlines():
            if line.startswith("STATS "):
                return json.loads(line[6:])
        return {}

    @property
    def rects(self):
        """The rectangles the overlay reported as drawn (region pixels, x1 y1 x2 y2)."""
        import numpy as np
        return np.array(json.loads(self.ready_line.split(" ", 1)[1]), np.int32).reshape(-1, 4)


# ----------------------------------------------------------------------------- programs

def _install_sigterm(app) -> None:
    from PySide6 import QtCore
    signal.signal(signal.SIGTERM, lambda *_: app.quit())
    signal.signal(signal.SIGINT, lambda *_: app.quit())
    t = QtCore.QTimer(app)
    t.timeout.connect(lambda: None)      # lets Python run its signal handlers
    t.start(50)


def _main_show_image(args) -> int:
    sys.path.insert(0, str(ROOT))
    from trackpipe.pipeline.display.qt_env import qt_app
    app = qt_app()
    from PySide6 import QtCore, QtGui, QtWidgets
    Qt = QtCore.Qt
    pix = QtGui.QPixmap(args.image)
    if pix.isNull():
        print(f"cannot read image {args.image}", file=sys.stderr)
        return 2
    clicks = args.clicks

    class Win(QtWidgets.QLabel):
        def mousePressEvent(self, ev):  # noqa: N802
            p, g = ev.position(), ev.globalPosition()
            if clicks:
                with open(clicks, "a") as f:
                    f.write(f"press {int(p.x())} {int(p.y())} {int(ev.button().value)} "
                            f"{int(g.x())} {int(g.y())}\n")

    w = Win()
    w.setWindowFlags(Qt.WindowType.FramelessWindowHint)
    w.setWindowTitle("test image " + os.path.basename(args.image))
    w.setPixmap(pix)
    w.setContentsMargins(0, 0, 0, 0)
    w.setGeometry(args.x, args.y, pix.width(), pix.height())
    w.show()
    _install_sigterm(app)

    def ready():
        g = w.geometry()
        print(f"SHOWN {g.x()} {g.y()} {g.width()} {g.height()}", flush=True)

    QtCore.QTimer.singleShot(300, ready)
    app.exec()
    return 0


def _main_overlay(args) -> int:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from trackpipe.models.types import Tracks
    from trackpipe.pipeline.display.qt_loop import run_overlay_loop
    t = json.loads(args.tracks)
    n = len(t["class_id"])
    tracks = Tracks(np.array(t["xyxy"], np.float32).reshape(-1, 4), np.array(t["score"], np.float32),
                    np.array(t["class_id"], np.int32), track_id=np.array(t["track_id"], np.int64)[:n])
    names = json.loads(args.names) if args.names else [str(i) for i in range(100)]
    region = tuple(int(v) for v in args.region.split(","))
    stop = {"flag": False, "sent": False, "t_drawn": None}

    def on_term(*_):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    frame = None
    if args.image:
        import cv2
        frame = cv2.imread(args.image)

    def poll():
        if stop["sent"]:
            if args.then_empty_after is not None and stop.get("t_first") is not None and \
                    time.monotonic() - stop["t_first"] > args.then_empty_after:
                stop["t_first"] = None
                return Tracks.empty(), frame
            return None
        stop["sent"] = True
        stop["t_first"] = time.monotonic()
        if args.mode == "mirror":
            stop["t_drawn"], stop["rects"] = time.monotonic(), []
        return tracks, frame

    def on_drawn(rects):
        if stop["t_drawn"] is None:
            stop["t_drawn"] = time.monotonic()
            stop["rects"] = rects.tolist()

    def stopper():
        # announce once the first paint had time to reach the X server
        if stop["t_drawn"] is not None and time.monotonic() - stop["t_drawn"] > 0.3:
            print("DRAWN " + json.dumps(stop["rects"]), flush=True)
            stop["t_drawn"] = float("inf")
        return stop["flag"]

    stats = run_overlay_loop(poll, stopper, region, names, mode=args.mode, on_drawn=on_drawn)
    print("STATS " + json.dumps(stats), flush=True)
    return 0


def _main_probe(args) -> int:
    sys.path.insert(0, str(ROOT))
    from trackpipe.pipeline.display.qt_env import qt_app
    app = qt_app()
    print(app.platformName(), flush=True)
    return 0


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="X11 test helpers")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("show-image")
    p.add_argument("--image", required=True)
    p.add_argument("--x", type=int, default=0)
    p.add_argument("--y", type=int, default=0)
    p.add_argument("--clicks")
    p = sub.add_parser("overlay")
    p.add_argument("--region", required=True)
    p.add_argument("--tracks", required=True)
    p.add_argument("--names")
    p.add_argument("--mode", default="overlay")
    p.add_argument("--image", help="mirror mode: the frame to show")
    p.add_argument("--then-empty-after", type=float, help="seconds; then show no tracks")
    sub.add_parser("probe")
    args = ap.parse_args(argv)
    return {"show-image": _main_show_image, "overlay": _main_overlay, "probe": _main_probe}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
