"""Every CPU precision path side by side in one run: FPS and COCO AP50 per model.

ONNX Runtime fp32 / int8 (the calibration's Q/DQ model), OpenVINO fp32 / bf16 (where the
CPU has it) / int8 two ways from the same calibration: "nncf" (NNCF post-training
quantization fed the calibration's frames) and "qdq" (the same Q/DQ model ONNX Runtime runs).

    python benchmarks/bench_precision.py [--seconds 20] [--threads 2]
        [--models yolo-fastest-xl-320,yolov4-tiny-416,yolov4-416]

INT8 is calibrated on real frames of ../shared/assets/video (entropy, 100 frames,
cross-layer-equalized), never on the COCO images it is scored on. AP50 is measured
for Yolo-Fastest-1.1-xl (real weights) on the 66 COCO images; yolov4/yolov4-tiny
run with random-valued weights (the official files are not on this machine), so
only their speed is meaningful (calibrated with min-max on 16 frames: the scales
do not change the speed). fp16 is listed only where the hardware has it (TensorRT
on an NVIDIA GPU); ONNX Runtime's CPU provider has no fast fp16 kernels.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trackpipe.models.bench import time_infer  # noqa: E402
from trackpipe.models.darknet import load_cfg, load_network, write_random_weights  # noqa: E402
from trackpipe.models.errors import ModelError  # noqa: E402
from trackpipe.models.evaluate import evaluate_coco  # noqa: E402
from trackpipe.models.factory import build_one  # noqa: E402
from trackpipe.models.quantize import calibrate  # noqa: E402
from trackpipe.models.spec import ModelSpec  # noqa: E402

ASSETS = ROOT.parent / "shared" / "assets"
DARKNET = ASSETS / "darknet"
VIDEO = ASSETS / "video" / "aiguys_video.mp4"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--models", default="yolo-fastest-xl-320,yolov4-tiny-416,yolov4-416")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="trackpipe-precision-"))
    summary, rows = {}, []
    for key in args.models.split(","):
        if key == "yolo-fastest-xl-320":
            cfg = DARKNET / "yolo-fastest-1.1_coco" / "yolo-fastest-1.1-xl.cfg"
            weights, size, real = cfg.with_suffix(".weights"), 320, True
        else:
            name, size = key.rsplit("-", 1)
            cfg, size, real = DARKNET / "cfg" / f"{name}.cfg", int(size), False
            weights = tmp / f"{name}.weights"
            write_random_weights(load_cfg(cfg), weights)
        net = load_network(cfg, weights, (size, size))
        calib = tmp / f"calib-{key}"
        with contextlib.redirect_stdout(io.StringIO()):
            calibrate(net, str(VIDEO), calib, frames=100 if real else 16, method="entropy" if real else "minmax",
                      cache_dir=tmp / "cache")
        spec = ModelSpec(cfg=cfg, weights=weights, size=(size, size), backend="onnx", calib=calib,
                         names=DARKNET / "data" / "coco.names", cache_dir=tmp / "cache", threads=args.threads)
        paths = {"onnx-fp32": ("onnx", "fp32", {}), "onnx-int8": ("onnx", "int8", {}),
                 "openvino-fp32": ("openvino", "fp32", {}), "openvino-bf16": ("openvino", "bf16", {}),
                 "openvino-int8-nncf": ("openvino", "int8", {"int8_method": "nncf"}),
                 "openvino-int8-qdq": ("openvino", "int8", {"int8_method": "qdq"})}
        specs, dets, entry = {}, {}, {}
        for k, (b, prec, extra) in paths.items():
            specs[k] = spec.with_(backend=b, precision=prec, extra=extra)
            try:
                dets[k] = build_one(specs[k], net)
            except ModelError as e:
                entry[k] = {"error": str(e)}
        blob, _ = dets["onnx-fp32"].preprocess([cv2.imread(str(DARKNET / "data" / "dog.jpg"))])
        slices = max(1, int(args.seconds // 2))
        runs = {k: [] for k in dets}
        for _ in range(slices):  # interleaved: load changes hit every path alike
            for k, d in dets.items():
                runs[k].append(time_infer(d, blob, args.seconds / slices)["ms_p50"])
        for k, d in dets.items():
            ms = float(np.median(runs[k]))
            entry[k] = {"fps": round(1000.0 / ms, 2), "ms_p50": round(ms, 2)}
            if real:
                d.close()
                with build_one(specs[k].with_(conf_threshold=0.005), net) as det:
                    ap = evaluate_coco(det, ASSETS / "coco_val2017" / "instances_val2017_subset66.json",
                                       ASSETS / "coco_val2017" / "images")
                entry[k].update(map50=ap["map50"], map50_95=ap["map50_95"])
            else:
                d.close()
        base = entry["onnx-fp32"]["fps"]
        for k, e in entry.items():
            if "fps" in e:
                e["vs_onnx_fp32"] = round(e["fps"] / base, 2)
        entry["int8_speedup"] = entry.get("onnx-int8", {}).get("vs_onnx_fp32")
        summary[key] = entry
        for k, e in entry.items():
            if isinstance(e, dict) and "fps" in e:
                rows.append((key, k, e["fps"], e["ms_p50"], e.get("map50"), e.get("map50_95"), e["vs_onnx_fp32"]))
            elif isinstance(e, dict):
                rows.append((key, k, float("nan"), float("nan"), None, None, float("nan")))
    print(f"{'model':<22}{'path':<20}{'FPS':>8}{'ms p50':>9}{'x onnx':>8}{'AP50':>8}{'AP':>8}")
    for m, pr, fps, ms, ap50, ap, ratio in rows:
        ap50_s, ap_s = (f"{v:>8.3f}" if v is not None else f"{'n/a':>8}" for v in (ap50, ap))
        print(f"{m:<22}{pr:<20}{fps:>8.2f}{ms:>9.2f}{ratio:>8.2f}{ap50_s}{ap_s}")
    for key, e in summary.items():
        for k, v in e.items():
            if isinstance(v, dict) and "error" in v:
                print(f"{key} {k}: unavailable: {v['error']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
