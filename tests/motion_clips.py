"""Test clips for motion gating, built from the real videos: a real frame frozen for a while
with camera noise added to every copy, then the real motion, then the last real frame frozen
again, re-encoded as H.264 (PyAV, libx264), so the still stretches carry real sensor-like noise
and real codec artefacts. Also a fully static camera (one real frame plus noise, looped).

    python tests/motion_clips.py VIDEO OUT.mp4 [--still-s 4] [--start 0] [--frames N] [--size 640x360]

Used by tests/test_motion*.py and benchmarks/bench_motion.py, bench_cameras.py.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Iterator, Optional, Tuple

import numpy as np

NOISE_SIGMA = 4.0    # grey levels: a typical sensor's noise at moderate gain


@dataclass(frozen=True)
class Clip:
    """A built clip: ``path``; ``frames`` in all; frames ``moving[0] <= i < moving[1]`` are the
    real (moving) ones, the others frozen copies with noise; ``fps``; ``size`` (W, H)."""

    path: str
    frames: int
    moving: Tuple[int, int]
    fps: float
    size: Tuple[int, int]

    @property
    def moving_share(self) -> float:
        return (self.moving[1] - self.moving[0]) / self.frames

    def to_dict(self) -> dict:
        return asdict(self)


def read_video(path, start: int = 0, count: Optional[int] = None, size: Optional[Tuple[int, int]] = None):
    """Frames ``start``..``start+count`` of a video: list of (H, W, 3) uint8 BGR, and its fps."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    out = []
    try:
        i = 0
        while count is None or len(out) < count:
            ok, f = cap.read()
            if not ok:
                break
            if i >= start:
                out.append(cv2.resize(f, size, interpolation=cv2.INTER_AREA) if size and f.shape[1::-1] != size else f)
            i += 1
    finally:
        cap.release()
    return out, float(fps)


def noisy(frame: np.ndarray, rng: np.random.Generator, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """A copy of ``frame`` (H, W, 3) uint8 with Gaussian noise of ``sigma`` grey levels."""
    n = rng.normal(0.0, sigma, frame.shape).astype(np.float32)
    return np.clip(frame.astype(np.float32) + n, 0, 255).astype(np.uint8)


def encode(frames: Iterator[np.ndarray], path, fps: float, crf: int = 23, gop: Optional[int] = None) -> int:
    """Write BGR frames as H.264 (libx264, yuv420p, ``crf``; a keyframe every ``gop`` frames at
    most, None: x264's default) into ``path``; -> frames written."""
    import av
    n = 0
    with av.open(str(path), "w") as c:
        rate = Fraction(fps).limit_denominator(1001)
        s = None
        for f in frames:
            if s is None:
                s = c.add_stream("libx264", rate=rate)
                s.width, s.height, s.pix_fmt = f.shape[1], f.shape[0], "yuv420p"
                s.options = {"crf": str(crf), "preset": "veryfast", **({"g": str(gop)} if gop else {})}
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="bgr24")):
                c.mux(p)
            n += 1
        if s is not None:
            for p in s.encode():
                c.mux(p)
    return n


def still_moving_still(video, out, still_s: float = 4.0, start: int = 0, frames: Optional[int] = None,
                       size: Optional[Tuple[int, int]] = None, sigma: float = NOISE_SIGMA, seed: int = 0,
                       gop: Optional[int] = None) -> Clip:
    """``still_s`` seconds of the first real frame (noise added to each copy), the real frames
    ``start``..``start+frames``, ``still_s`` seconds of the last one; H.264 into ``out`` (a
    keyframe every ``gop`` frames at most)."""
    real, fps = read_video(video, start, frames, size)
    if not real:
        raise ValueError(f"{video}: no frames from {start}")
    rng = np.random.default_rng(seed)
    k = int(round(still_s * fps))

    def gen():
        for _ in range(k):
            yield noisy(real[0], rng, sigma)
        yield from real
        for _ in range(k):
            yield noisy(real[-1], rng, sigma)

    n = encode(gen(), out, fps, gop=gop)
    h, w = real[0].shape[:2]
    return Clip(str(out), n, (k, k + len(real)), fps, (w, h))


def static_camera(video, out, seconds: float = 10.0, frame: int = 0, size: Optional[Tuple[int, int]] = None,
                  fps: Optional[float] = None, sigma: float = NOISE_SIGMA, seed: int = 0) -> Clip:
    """One real frame of ``video`` with fresh noise on every copy, ``seconds`` long: a camera
    looking at an unchanging scene; H.264 into ``out``."""
    real, vfps = read_video(video, frame, 1, size)
    fps = fps or vfps
    rng = np.random.default_rng(seed)
    n = encode((noisy(real[0], rng, sigma) for _ in range(int(round(seconds * fps)))), out, fps)
    h, w = real[0].shape[:2]
    return Clip(str(out), n, (0, 0), fps, (w, h))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("out")
    ap.add_argument("--still-s", type=float, default=4.0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--size", default=None, help="WxH")
    a = ap.parse_args()
    size = tuple(int(v) for v in a.size.split("x")) if a.size else None
    print(json.dumps(still_moving_still(a.video, a.out, a.still_s, a.start, a.frames, size).to_dict()))


if __name__ == "__main__":
    main()
