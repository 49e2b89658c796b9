"""Throughput per batch size: `Detector.detect_batch` on B frames (pre-processing, inference,
decoding, NMS: what the infer stage pays), for each backend, side by side in one run.

    python benchmarks/bench_batch.py [--seconds 4] [--batches 1,2,4,8] [--threads 2]
        [--models yolo-fastest-xl-320,yolov4-tiny-416] [--backends onnx-fp32,openvino-fp32,openvino-bf16]

Frames: 8 real 640x360 frames of aiguys_video.mp4, cycled. Every (backend, batch)
pair is measured in interleaved slices (medians), so machine load hits all alike.
Reported: frames/s and ms per call; `gain` = FPS at B / FPS at 1 of the same backend.
(opencv, the oracle, runs a batch frame by frame and decodes floods with its own slow NMS:
left out by default.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trackpipe.models.cpu import cpu_info  # noqa: E402
from trackpipe.models.darknet import load_cfg, load_network, write_random_weights  # noqa: E402
from trackpipe.models.errors import ModelError  # noqa: E402
from trackpipe.models.factory import build_one  # noqa: E402
from trackpipe.models.quantize import read_calibration_frames  # noqa: E402
from trackpipe.models.spec import ModelSpec  # noqa: E402

ASSETS = ROOT.parent / "shared" / "assets"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=4.0, help="measuring time per (backend, batch)")
    p.add_argument("--batches", default="1,2,4,8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default="yolo-fastest-xl-320,yolov4-tiny-416")
    p.add_argument("--backends", default="onnx-fp32,openvino-fp32,openvino-bf16")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="trackpipe-batch-"))
    frames = read_calibration_frames(str(ASSETS / "video" / "aiguys_video.mp4"), 8)
    batches = [int(b) for b in args.batches.split(",")]
    xl = ASSETS / "darknet" / "yolo-fastest-1.1_coco" / "yolo-fastest-1.1-xl.cfg"
    models = {"yolo-fastest-xl-320": (xl, xl.with_suffix(".weights"), 320)}
    for name in ("yolov4-tiny", "yolov4"):
        cfg = ASSETS / "darknet" / "cfg" / f"{name}.cfg"
        models[f"{name}-416"] = (cfg, tmp / f"{name}.weights", 416)
    summary = {"cpu": cpu_info().describe(), "threads": args.threads}
    rows = []
    for key in args.models.split(","):
        cfg, weights, size = models[key]
        if not weights.is_file():
            write_random_weights(load_cfg(cfg), weights)
        net = load_network(cfg, weights, (size, size))
        spec = ModelSpec(cfg=cfg, weights=weights, size=(size, size), threads=args.threads, cache_dir=tmp / "cache")
        dets = {}
        for pair in args.backends.split(","):
            b, prec = pair.rsplit("-", 1)
            try:
                dets[pair] = build_one(spec.with_(backend=b, precision=prec), net)
            except ModelError as e:
                summary.setdefault(key, {})[pair] = {"error": str(e)}
        times = {(k, b): [] for k in dets for b in batches}
        for k, d in dets.items():  # warm-up: every batch size compiles / allocates once
            for b in batches:
                d.detect_batch([frames[i % len(frames)] for i in range(b)])
        slices = 3
        for _ in range(slices):
            for (k, b), ts in times.items():
                d, t_end, i = dets[k], time.perf_counter() + args.seconds / slices, 0
                while time.perf_counter() < t_end or i < 2:
                    batch = [frames[(i * b + j) % len(frames)] for j in range(b)]
                    t0 = time.perf_counter()
                    d.detect_batch(batch)
                    ts.append(time.perf_counter() - t0)
                    i += 1
        entry = summary.setdefault(key, {})
        for k in dets:
            base = None
            for b in batches:
                ms = float(np.median(times[(k, b)])) * 1000
                fps = b * 1000.0 / ms
                base = base or fps
                entry.setdefault(k, {})[str(b)] = {"fps": round(fps, 2), "ms_per_call": round(ms, 2),
                                                   "gain": round(fps / base, 2)}
                rows.append((key, k, b, fps, ms, fps / base))
            dets[k].close()
        best = {k: max(v, key=lambda b: v[b]["fps"]) for k, v in entry.items() if "error" not in v}
        entry["best_batch"] = best
    print(f"CPU: {summary['cpu']}; threads {args.threads}")
    print(f"{'model':<22}{'backend':<16}{'batch':>6}{'FPS':>9}{'ms/call':>10}{'gain':>7}")
    for m, k, b, fps, ms, g in rows:
        print(f"{m:<22}{k:<16}{b:>6}{fps:>9.2f}{ms:>10.2f}{g:>7.2f}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
