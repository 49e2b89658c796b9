#!/usr/bin/env python
"""CPU cost and file size of the output-video encoders on real 1080p frames.

Decodes ``--frames`` frames of aiguys_test.mp4 (1920x1080) once into memory, then writes them
with ``trackpipe.pipeline.video.VideoWriter`` in each configuration, interleaved over
``--rounds`` rounds (the order rotates each round); reports medians over rounds of:

- cpu ms/frame: process CPU time (``time.process_time``: every thread of this process, the
  encoder's threads included) per frame, BGR->YUV conversion and muxing included: what the
  render stage takes from the CPU the detector also needs;
- wall ms/frame;
- KB/frame: file size / frames.

Baseline: mp4v through OpenCV's own writer, measured in the same rounds.

    python benchmarks/bench_encode.py [--frames 120] [--rounds 3] [--video PATH]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import cv2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEO = os.path.join(ROOT, "..", "shared", "assets", "video", "aiguys_test.mp4")

# (name, VideoWriter.open keyword arguments)
CONFIGS = [
    ("mp4v opencv", {"codec": "mp4v", "backend": "opencv"}),
    ("mp4v pyav", {"codec": "mp4v", "backend": "pyav", "threads": 1}),
    ("x264 ultrafast t1", {"codec": "h264", "preset": "ultrafast", "threads": 1}),
    ("x264 ultrafast auto", {"codec": "h264", "preset": "ultrafast", "threads": 0}),
    ("x264 superfast t1", {"codec": "h264", "preset": "superfast", "threads": 1}),
    ("x264 superfast auto", {"codec": "h264", "preset": "superfast", "threads": 0}),
    ("x264 veryfast t1", {"codec": "h264", "preset": "veryfast", "threads": 1}),
    ("x264 veryfast auto", {"codec": "h264", "preset": "veryfast", "threads": 0}),
]


def load_frames(path: str, n: int) -> tuple:
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        sys.exit(f"cannot open {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while len(frames) < n:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames, fps


def encode_once(VideoWriter, frames, fps, kw, path) -> dict:
    h, w = frames[0].shape[:2]
    c0, t0 = time.process_time(), time.perf_counter()
    with VideoWriter.open(path, fps, (h, w), **kw) as vw:
        for f in frames:
            vw.write(f)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    size = os.path.getsize(path)
    os.unlink(path)
    n = len(frames)
    return {"cpu_ms": 1000 * cpu / n, "wall_ms": 1000 * wall / n, "kb": size / 1024 / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=VIDEO)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from trackpipe.pipeline.video import VideoWriter, pyav_available
    if not pyav_available():
        sys.exit("PyAV with libx264 is needed: pip install av")
    frames, fps = load_frames(args.video, args.frames)
    h, w = frames[0].shape[:2]
    print(f"{len(frames)} frames {w}x{h} @ {fps:.3f} fps, {args.rounds} rounds, {os.cpu_count()} CPUs")
    results = {name: [] for name, _ in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
            for name, kw in order:
                results[name].append(encode_once(VideoWriter, frames, fps, kw, os.path.join(tmp, "out.mp4")))

    def med(name, key):
        return statistics.median(x[key] for x in results[name])

    base = med("mp4v opencv", "cpu_ms")
    print(f"{'config':22s} {'cpu ms/frame':>12s} {'x mp4v':>7s} {'wall ms/frame':>13s} {'KB/frame':>9s}")
    summary = {}
    for name, _ in CONFIGS:
        cpu, wall, kb = med(name, "cpu_ms"), med(name, "wall_ms"), med(name, "kb")
        summary[name] = {"cpu_ms_per_frame": round(cpu, 2), "wall_ms_per_frame": round(wall, 2),
                         "kb_per_frame": round(kb, 1), "cpu_vs_mp4v_opencv": round(cpu / base, 2),
                         "cpu_ms_rounds": [round(x["cpu_ms"], 2) for x in results[name]]}
        print(f"{name:22s} {cpu:12.1f} {cpu / base:7.2f} {wall:13.1f} {kb:9.1f}")
    print(json.dumps({"bench": "encode", "video": os.path.basename(args.video), "frames": len(frames),
                      "size": [w, h], "rounds": args.rounds, "cpus": os.cpu_count(), "results": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
