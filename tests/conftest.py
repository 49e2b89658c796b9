"""Shared fixtures: asset paths, the Yolo-Fastest model spec, leftover checks, and a fake
detector for the pipeline's unit tests (the only place a fake detector belongs)."""

from __future__ import annotations

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
        os.environ["TRACKPIPE_CACHE"] = str(Path(tempfile.gettempdir()) / f"trackpipe-tests-{os.getuid()}")
    for name in ("yolo-fastest-1.1-xl", "yolo-fastest-1.1"):
        seed(name, DARKNET / "yolo-fastest-1.1_coco")
    # events an earlier session left for an unreachable target (tests use free ports) are not this one's
    shutil.rmtree(Path(os.environ["TRACKPIPE_CACHE"]) / "outbox", ignore_errors=True)
    yield Path(os.environ["TRACKPIPE_CACHE"])
    if not before:
        os.environ.pop("TRACKPIPE_CACHE", None)


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
