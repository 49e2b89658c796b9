"""Detector speed side by side in one run: ONNX Runtime fp32 (the baseline), OpenCV, OpenVINO
and `auto` (the measured backend/precision choice), plus auto's accuracy on COCO.

For each model it reports FPS per entry (median of round-robin slices), the ratios
onnx/opencv and auto/onnx (with the pair auto chose), and the fraction of the float32
ceiling: numpy's measured matrix-product GFLOP/s divided by the model's GFLOP per image.

    python benchmarks/bench_detector.py [--seconds 20] [--backends onnx,opencv,auto] [--threads 2]

Random-valued weights (darknet layout) are written for yolov4/yolov4-tiny, whose
official weights are not on this machine; speed does not depend on the values.
auto's first use measures its candidates (a fresh cache per run, so it really measures)
and judges bf16/int8 against fp32 on 12 real frames of aiguys_video.mp4; int8 joins its
candidates calibrated on 32 other frames of that video (what a run does on its source's
frames; `--no-self-calib`: fp32/bf16 only; `--calib`: a calibration made beforehand). For
Yolo-Fastest-1.1-xl (real weights) the AP50 of the pair auto chose is measured on the
66 COCO images beside fp32's (target: within 0.01). Speed targets for auto/onnx
depend on the CPU: >= 3.0x (yolov4-tiny) and 4.0x (yolov4) with AMX,
>= 2.0x for both with AVX512-BF16/VNNI but no AMX (e.g. Zen 4), >= 1.0x elsewhere.
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
from trackpipe.models.cpu import cpu_info  # noqa: E402
from trackpipe.models.darknet import load_cfg, load_network, write_random_weights  # noqa: E402
from trackpipe.models.quantize import read_calibration_frames  # noqa: E402
from trackpipe.models.spec import ModelSpec  # noqa: E402

ASSETS = ROOT.parent / "shared" / "assets" / "darknet"
TARGETS = {"yolov4-tiny-416": 1.2, "yolov4-416": 1.3}
COCO = ROOT.parent / "shared" / "assets" / "coco_val2017"
VIDEO = ROOT.parent / "shared" / "assets" / "video" / "aiguys_video.mp4"


def auto_targets(tier: str) -> dict:
    """auto/onnx-fp32 speed targets for this CPU's class."""
    if tier == "amx":
        return {"yolov4-tiny-416": 3.0, "yolov4-416": 4.0}
    if tier in ("avx512-bf16", "vnni"):
        return {"yolov4-tiny-416": 2.0, "yolov4-416": 2.0}
    return {"yolov4-tiny-416": 1.0, "yolov4-416": 1.0}


def coco_ap50(spec: ModelSpec, network) -> float:
    from trackpipe.models.evaluate import evaluate_coco  # noqa: PLC0415
    from trackpipe.models.factory import build_one  # noqa: PLC0415

    with build_one(spec.with_(conf_threshold=0.005), network) as det:
        return evaluate_coco(det, COCO / "instances_val2017_subset66.json", COCO / "images")["map50"]


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
    p.add_argument("--backends", default="onnx,opencv,auto")
    p.add_argument("--models", default="yolo-fastest-xl-320,yolov4-tiny-416,yolov4-416")
    p.add_argument("--threads", type=int, default=2, help="inference threads per backend (default 2)")
    p.add_argument("--auto-seconds", type=float, default=6.0, help="auto's own measuring time per model")
    p.add_argument("--calib", action="store_true",
                   help="give auto a calibration (16 frames of aiguys_video.mp4; entropy/100 for Yolo-Fastest), "
                        "so int8 joins its candidates")
    p.add_argument("--no-self-calib", action="store_true",
                   help="auto without int8 calibrated on the probe video's frames (fp32/bf16 only)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="trackpipe-bench-"))
    cpu = cpu_info()
    probe = read_calibration_frames(str(VIDEO), 12)
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
        calib = None
        if args.calib:
            import contextlib  # noqa: PLC0415
            import io  # noqa: PLC0415

            from trackpipe.models.quantize import calibrate  # noqa: PLC0415

            calib = tmp / f"calib-{key}"
            real = key == "yolo-fastest-xl-320"
            with contextlib.redirect_stdout(io.StringIO()):
                calibrate(load_network(cfg, weights, (size, size)), str(VIDEO), calib, frames=100 if real else 16,
                          method="entropy" if real else "minmax", cache_dir=tmp / "cache")
        spec = ModelSpec(cfg=cfg, weights=weights, size=(size, size), threads=args.threads, cache_dir=tmp / "cache",
                         calib=calib, extra={"auto_seconds": args.auto_seconds,
                                             "auto_calibrate": not args.no_self_calib})
        res = bench_backends(spec, args.backends.split(","), ["fp32"], args.seconds, image=probe[0],
                             probe_frames=probe, calib_source=str(VIDEO))
        entry = {"gflop_per_image": round(gf, 2), "ceiling_fps": round(gflops / gf, 2), **res}
        if "auto" in res and "fps" in res["auto"] and "fps" in res.get("onnx", {}):
            entry["auto_vs_onnx"] = round(res["auto"]["fps"] / res["onnx"]["fps"], 2)
            if key == "yolo-fastest-xl-320":
                net = load_network(cfg, weights, (size, size))
                b, prec = res["auto"]["choice"].split("-")
                entry["ap50_onnx_fp32"] = coco_ap50(spec.with_(backend="onnx", precision="fp32"), net)
                calib = Path(res["auto"]["calib"]) if res["auto"].get("calib") else spec.calib
                entry["ap50_auto"] = coco_ap50(spec.with_(backend=b, precision=prec, calib=calib), net)
        if "onnx" in res and "opencv" in res and "fps" in res["opencv"]:
            entry["onnx_vs_opencv"] = round(res["onnx"]["fps"] / res["opencv"]["fps"], 2)
        if "onnx" in res and "fps" in res["onnx"]:
            entry["onnx_fraction_of_ceiling"] = round(res["onnx"]["fps"] / (gflops / gf), 3)
        summary[key] = entry
        for b, r in res.items():
            nan = float("nan")
            rows.append((key, b, r.get("fps", nan), r.get("ms_p50", nan), r.get("ms_p95", nan)))
    summary["cpu"] = cpu.describe()
    print(f"CPU: {cpu.describe()}; threads {args.threads}")
    print(f"numpy float32 GEMM: {gflops:.0f} GFLOP/s")
    print(f"{'model':<22}{'backend':<9}{'FPS':>8}{'ms p50':>9}{'ms p95':>9}")
    for r in rows:
        print(f"{r[0]:<22}{r[1]:<9}{r[2]:>8.2f}{r[3]:>9.2f}{r[4]:>9.2f}")
    for key, e in summary.items():
        if isinstance(e, dict) and "onnx_vs_opencv" in e:
            target = TARGETS.get(key)
            met = "met" if target is not None and e["onnx_vs_opencv"] >= target else "MISSED"
            verdict = "" if target is None else f"  (target >= {target}x: {met})"
            print(f"{key}: onnx/opencv = {e['onnx_vs_opencv']:.2f}x, {e['gflop_per_image']} GFLOP/img, "
                  f"onnx at {100 * e['onnx_fraction_of_ceiling']:.0f}% of the {e['ceiling_fps']} FPS float32 "
                  f"ceiling{verdict}")
    goals = auto_targets(cpu.tier)
    for key, e in summary.items():
        if isinstance(e, dict) and "auto_vs_onnx" in e:
            line = f"{key}: auto -> {e['auto']['choice']}: {e['auto_vs_onnx']:.2f}x onnx fp32"
            if key in goals:
                ok = e["auto_vs_onnx"] >= goals[key]
                e["auto_goal"] = goals[key]
                line += f" (goal on a {cpu.tier} CPU >= {goals[key]}x: {'met' if ok else 'MISSED'})"
            if "ap50_auto" in e:
                ok = abs(e["ap50_auto"] - e["ap50_onnx_fp32"]) <= 0.01
                line += (f"; COCO AP50 {e['ap50_auto']:.4f} vs fp32 {e['ap50_onnx_fp32']:.4f} "
                         f"(goal within 0.01: {'met' if ok else 'MISSED'})")
            print(line)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
