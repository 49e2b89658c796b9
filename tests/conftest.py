"""Shared fixtures: asset paths, the Yolo-Fastest model spec, leftover checks, and a fake
detector for the pipeline's unit tests (the only place a fake detector belongs)."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = (ROOT / ".." / "shared" / "assets").resolve()
VIDEO_1080 = ASSETS / "video" / "aiguys_test.mp4"     # 302 frames, 1920x1080, 30 fps
VIDEO_360 = ASSETS / "video" / "aiguys_video.mp4"     # 319 frames, 640x360, 30 fps
DARKNET = ASSETS / "darknet"
YF_CFG = DARKNET / "yolo-fastest-1.1_coco" / "yolo-fastest-1.1-xl.cfg"
YF_WEIGHTS = DARKNET / "yolo-fastest-1.1_coco" / "yolo-fastest-1.1-xl.weights"
COCO_NAMES = DARKNET / "data" / "coco.names"


def leftovers(pid: int) -> list:
    """Shared-memory segments and ipc folders a run supervised by ``pid`` left behind."""
    pat = f"trackpipe_{pid}_*"
    return sorted(glob.glob(os.path.join("/dev/shm", pat)) + glob.glob(os.path.join(tempfile.gettempdir(), pat)))


@pytest.fixture(scope="session", autouse=True)
def model_cache():
    """Tests never download a model: $TRACKPIPE_CACHE (unless already set) is the test runs' own
    cache folder, seeded with the zoo's Yolo-Fastest files from ../shared/assets, sha256-checked
    (what `python -m trackpipe.models download NAME --from FOLDER` does)."""
    from trackpipe.models.zoo import seed

    before = os.environ.get("TRACKPIPE_CACHE")
    if not before:
        os.environ["TRACKPIPE_CACHE"] = str(_test_cache())
    for name in ("yolo-fastest-1.1-xl", "yolo-fastest-1.1"):
        seed(name, DARKNET / "yolo-fastest-1.1_coco")
    if not _xdist_run():  # under pytest-xdist the controller does it once, before any worker starts
        _clear_outbox()
    yield Path(os.environ["TRACKPIPE_CACHE"])
    if not before:
        os.environ.pop("TRACKPIPE_CACHE", None)


def _test_cache() -> Path:
    """$TRACKPIPE_CACHE when set, else the test runs' own cache folder."""
    return Path(os.environ.get("TRACKPIPE_CACHE") or Path(tempfile.gettempdir()) / f"trackpipe-tests-{os.getuid()}")


def _clear_outbox() -> None:
    """Events an earlier session left for an unreachable target (tests use free ports) are not this one's."""
    shutil.rmtree(_test_cache() / "outbox", ignore_errors=True)


# --- pytest-xdist (``-n 2``): tests marked ``alone`` run while no other test of the session runs ---

LOCKS_ENV = "TRACKPIPE_TEST_LOCKS"  # the xdist controller's lock folder, inherited by its workers


def _xdist_run() -> bool:
    """True in an xdist worker."""
    return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def _is_xdist_controller(config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_configure(config):
    if _is_xdist_controller(config):  # before the workers start (they inherit the environment)
        os.environ[LOCKS_ENV] = tempfile.mkdtemp(prefix="trackpipe-test-locks-")
        _clear_outbox()


def pytest_unconfigure(config):
    if _is_xdist_controller(config) and os.environ.get(LOCKS_ENV):
        shutil.rmtree(os.environ.pop(LOCKS_ENV), ignore_errors=True)


@contextlib.contextmanager
def _session_lock(folder: str, exclusive: bool):
    """A readers-writer lock over the xdist run's workers (flock on two files of ``folder``): every
    test holds it shared, an ``alone`` test exclusively. Both take the gate first, so an ``alone``
    test that waits is never starved by the other workers' next tests."""
    with open(os.path.join(folder, "gate"), "a") as gate, open(os.path.join(folder, "lock"), "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """Set-up, call and teardown of each test inside the session lock (xdist workers only)."""
    folder = os.environ.get(LOCKS_ENV) if _xdist_run() else None
    if not folder:
        return (yield)
    with _session_lock(folder, exclusive=item.get_closest_marker("alone") is not None):
        return (yield)


@pytest.fixture(scope="session")
def yf_calibration(tmp_path_factory) -> Path:
    """Yolo-Fastest-XL's INT8 calibration folder (64 frames of aiguys_video.mp4, entropy), made once
    per session for the tests that only read it (they may add a Q/DQ model of another weight width,
    which is the same whoever builds it)."""
    from trackpipe.models.darknet import load_network
    from trackpipe.models.quantize import calibrate

    shared = os.environ.get(LOCKS_ENV) if _xdist_run() else None
    out = Path(shared) / "calib" if shared else tmp_path_factory.mktemp("calib")
    # under pytest-xdist one worker builds it in the run's shared folder, the other waits and reads it
    with open(f"{out}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "meta.json").is_file():
            calibrate(load_network(YF_CFG, YF_WEIGHTS), str(VIDEO_360), out, frames=64, method="entropy",
                      cache_dir=tmp_path_factory.mktemp("calib-cache"))
    return out


@pytest.fixture
def yf_spec():
    from trackpipe.models.spec import ModelSpec
    return ModelSpec(cfg=YF_CFG, weights=YF_WEIGHTS, names=COCO_NAMES, size=(320, 320), backend="onnx")


# --- fake detector: deterministic moving boxes, optional crash/delay --------------------------

def _fake_base():
    from trackpipe.models.detector import Detector

    class FakeDetector(Detector):
        """Two boxes drifting right one pixel per call; ``crash_at``: os._exit(3) on that call
        (only once per ``crash_marker`` file, when given); ``delay_s``: sleep per frame;
        ``hang_at``: block on that call (a hung stage); ``jitter_s``: random extra sleep."""

        name = "fake"

        def __init__(self, spec=None, crash_at=None, crash_marker=None, delay_s=0.0, hang_at=None, jitter_s=0.0):
            self.spec, self.network, self.names, self.input_size = spec, None, ["person", "car"], (320, 320)
            self.calls, self.crash_at, self.crash_marker, self.delay_s = 0, crash_at, crash_marker, delay_s
            self.hang_at, self.jitter_s = hang_at, jitter_s

        def infer(self, blob):
            return []

        def detect_batch(self, frames):
            from trackpipe.models.types import Detections
            out = []
            for f in frames:
                self.calls += 1
                if self.crash_at is not None and self.calls == self.crash_at:
                    if self.crash_marker is None or not os.path.exists(self.crash_marker):
                        if self.crash_marker:
                            Path(self.crash_marker).touch()
                        os._exit(3)
                if self.delay_s or self.jitter_s or self.calls == self.hang_at:
                    import random
                    import time
                    time.sleep(3600 if self.calls == self.hang_at else self.delay_s + random.uniform(0, self.jitter_s))
                h, w = f.shape[:2]
                x = float(self.calls % max(1, w // 2))
                xyxy = np.array([[x, 10, x + w / 8, 10 + h / 4], [w / 2, h / 2, w / 2 + w / 10, h / 2 + h / 5]],
                                np.float32)
                out.append(Detections(xyxy, np.array([0.9, 0.8], np.float32), np.array([0, 1], np.int32)))
            return out

    return FakeDetector


def fake_detector_factory(spec):
    """Picklable factory for ``detector_factory=``; options come from ``spec.extra``."""
    return _fake_base()(spec, **spec.extra)
