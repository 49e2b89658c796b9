"""Detector speed: ONNX Runtime vs OpenCV's darknet backend (and TF), side by side in one run.

For each model it reports FPS per backend (median of round-robin slices), the
onnx/opencv ratio, and the fraction of the float32 ceiling: numpy's measured
matrix-product GFLOP/s divided by the model's GFLOP per image.

    python benchmarks/bench_detector.py [--seconds 20] [--backends onnx,opencv,tf]

Random-valued weights (darknet layout) are written for yolov4/yolov4-tiny, whose
official weights are not on this machine; speed does not depend on the values.
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

from trackpipe.models.bench import bench_backends  # noqa: E402
from trackpipe.models.darknet import load_cfg, write_random_weights  # noqa: E402
from trackpipe.models.spec import ModelSpec  # noqa: E402

ASSETS = ROOT.parent / "shared" / "assets" / "darknet"
TARGETS = {"yolov4-tiny-416": 1.2, "yolov4-416": 1.3}


def gemm_gflops(n: int = 2048, seconds: float = 3.0) -> float:
    """Median float32 GFLOP/s of numpy's matrix product (the BLAS ceiling on this CPU)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b
    rates, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        rates.append(2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return float(np.median(rates))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="measuring time per backend and model")
    p.add_argument("--backends", default="onnx,opencv")
    p.add_argument("--models", default="yolo-fastest-xl-320,yolov4-tiny-416,yolov4-416")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="trackpipe-bench-"))
    models = {"yolo-fastest-xl-320": (ASSETS / "yolo-fastest-1.1_coco" / "yolo-fastest-1.1-xl.cfg",
                                      ASSETS / "yolo-fastest-1.1_coco" / "yolo-fastest-1.1-xl.weights", 320)}
    for name in ("yolov4-tiny", "yolov4"):
        cfg = ASSETS / "cfg" / f"{name}.cfg"
        weights = tmp / f"{name}-random.weights"
        write_random_weights(load_cfg(cfg), weights)
        models[f"{name}-416"] = (cfg, weights, 416)
    gflops = gemm_gflops()
    rows, summary = [], {"numpy_gemm_gflops": round(gflops, 1)}
    for key in args.models.split(","):
        cfg, weights, size = models[key]
        gf = load_cfg(cfg, (size, size)).flops() / 1e9
        res = bench_backends(ModelSpec(cfg=cfg, weights=weights, size=(size, size)), args.backends.split(","),
                             ["fp32"], args.seconds)
        entry = {"gflop_per_image": round(gf, 2), "ceiling_fps": round(gflops / gf, 2), **res}
        if "onnx" in res and "opencv" in res and "fps" in res["opencv"]:
            entry["onnx_vs_opencv"] = round(res["onnx"]["fps"] / res["opencv"]["fps"], 2)
        if "onnx" in res and "fps" in res["onnx"]:
            entry["onnx_fraction_of_ceiling"] = round(res["onnx"]["fps"] / (gflops / gf), 3)
        summary[key] = entry
        for b, r in res.items():
            rows.append((key, b, r.get("fps", float("nan")), r.get("ms_p50", float("nan")), r.get("ms_p95", float("nan"))))
    print(f"numpy float32 GEMM: {gflops:.0f} GFLOP/s")
    print(f"{'model':<22}{'backend':<9}{'FPS':>8}{'ms p50':>9}{'ms p95':>9}")
    for r in rows:
        print(f"{r[0]:<22}{r[1]:<9}{r[2]:>8.2f}{r[3]:>9.2f}{r[4]:>9.2f}")
    for key, e in summary.items():
        if isinstance(e, dict) and "onnx_vs_opencv" in e:
            target = TARGETS.get(key)
            verdict = "" if target is None else f"  (target >= {target}x: {'met' if e['onnx_vs_opencv'] >= target else 'MISSED'})"
            print(f"{key}: onnx/opencv = {e['onnx_vs_opencv']:.2f}x, {e['gflop_per_image']} GFLOP/img, "
                  f"onnx at {100 * e['onnx_fraction_of_ceiling']:.0f}% of the {e['ceiling_fps']} FPS float32 ceiling{verdict}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
