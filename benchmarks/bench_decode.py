#!/usr/bin/env python
"""Decode + NMS of the ONNX families' outputs per image (`onnx_model.OnnxFileDetector.postprocess`):
target at most 2 ms at 8,400 candidates (YOLOv8/v11 at 640).

    python benchmarks/bench_decode.py [--repeats 50]

Cases (one image's output -> final Detections in frame pixels, median ms of ``--repeats``):
- scattered-8400: a (84, 8400) anchor-free output where every candidate passes conf 0.25, boxes
  scattered over the image, classes spread (most survive NMS: the worst case; max_det 300 stops it);
- crowd-8400: the same 8,400 candidates piled on 40 objects of one class (most are suppressed);
- typical-8400: 8,400 candidates of which 200 pass conf (a trained model on a busy street);
- fixture-2100: the yolov8t fixture's own output on dog.jpg at 320 (2,100 candidates).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trackpipe.models.factory import build_detector  # noqa: E402
from trackpipe.models.spec import ModelSpec  # noqa: E402

FIX = ROOT / "tests" / "fixtures" / "onnx"
DOG = ROOT / ".." / "shared" / "assets" / "darknet" / "data" / "dog.jpg"


def anchor_free(n: int, passing: int, crowd: bool, rng: np.random.Generator) -> np.ndarray:
    """(1, 84, n) output at 640: `passing` candidates with a class score above 0.25."""
    out = np.zeros((1, 84, n), np.float32)
    out[0, 4:] = rng.uniform(0, 0.2, (80, n))
    idx = rng.choice(n, passing, replace=False)
    if crowd:
        centres = rng.uniform(50, 590, (40, 2))
        c = centres[rng.integers(0, 40, passing)] + rng.normal(0, 3, (passing, 2))
        wh = np.full((passing, 2), 60.0)
        cls = np.zeros(passing, np.int64)
    else:
        c = rng.uniform(0, 640, (passing, 2))
        wh = rng.uniform(8, 40, (passing, 2))
        cls = rng.integers(0, 80, passing)
    out[0, 0:2, idx] = c
    out[0, 2:4, idx] = wh
    out[0, 4 + cls, idx] = rng.uniform(0.3, 1.0, passing)
    return out


def timed(fn, repeats: int) -> tuple:
    """-> (median wall ms, median CPU ms of this process) per call: on a loaded machine the CPU
    time is what the work costs, the wall time what the neighbours add to it."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    det = build_detector(ModelSpec(file=FIX / "yolov8t.onnx", threads=1, backend="onnx", precision="fp32").resolve())
    frame = cv2.imread(str(DOG))
    _, boxes = det.preprocess([cv2.resize(frame, (1280, 720))])
    cases = {"scattered-8400": anchor_free(8400, 8400, False, rng), "crowd-8400": anchor_free(8400, 8400, True, rng),
             "typical-8400": anchor_free(8400, 200, False, rng)}
    blob, dog_boxes = det.preprocess([frame])
    fixture = det.infer(blob)
    results = {}
    runs = {**{k: ([v], boxes) for k, v in cases.items()}, "fixture-2100": (fixture, dog_boxes)}
    for name, (out, lb) in runs.items():
        wall, cpu = timed(lambda: det.postprocess(out, lb), args.repeats)
        results[name] = {"wall_ms": round(wall, 3), "cpu_ms": round(cpu, 3),
                         "detections": len(det.postprocess(out, lb)[0])}
        print(f"{name:16s} wall {wall:8.3f} ms  cpu {cpu:8.3f} ms  {results[name]['detections']:4d} detections")
    print(json.dumps({"cases": results, "load": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
