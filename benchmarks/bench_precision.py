"""FP32 vs INT8 (ONNX Runtime CPU), side by side in one run: FPS and COCO AP50 per model.

    python benchmarks/bench_precision.py [--seconds 20] [--models yolo-fastest-xl-320,yolov4-tiny-416,yolov4-416]

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trackpipe.models.bench import bench_backends  # noqa: E402
from trackpipe.models.darknet import load_cfg, load_network, write_random_weights  # noqa: E402
from trackpipe.models.evaluate import evaluate_coco  # noqa: E402
from trackpipe.models.factory import build_detector  # noqa: E402
from trackpipe.models.quantize import calibrate  # noqa: E402
from trackpipe.models.spec import ModelSpec  # noqa: E402

ASSETS = ROOT.parent / "shared" / "assets"
DARKNET = ASSETS / "darknet"
VIDEO = ASSETS / "video" / "aiguys_video.mp4"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--models", default="yolo-fastest-xl-320,yolov4-tiny-416,yolov4-416")
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
                         names=DARKNET / "data" / "coco.names", cache_dir=tmp / "cache")
        speed = bench_backends(spec, ["onnx"], ["fp32", "int8"], args.seconds)
        entry = {k: dict(v) for k, v in speed.items()}
        if real:
            for prec in ("fp32", "int8"):
                with build_detector(spec.with_(precision=prec, conf_threshold=0.005), net) as det:
                    ap = evaluate_coco(det, ASSETS / "coco_val2017" / "instances_val2017_subset66.json",
                                       ASSETS / "coco_val2017" / "images")
                entry[f"onnx-{prec}"].update(map50=ap["map50"], map50_95=ap["map50_95"])
        entry["int8_speedup"] = round(entry["onnx-int8"]["fps"] / entry["onnx-fp32"]["fps"], 2)
        summary[key] = entry
        for prec in ("fp32", "int8"):
            e = entry[f"onnx-{prec}"]
            rows.append((key, prec, e["fps"], e["ms_p50"], e.get("map50"), e.get("map50_95")))
    print(f"{'model':<22}{'prec':<6}{'FPS':>8}{'ms p50':>9}{'AP50':>8}{'AP':>8}")
    for m, pr, fps, ms, ap50, ap in rows:
        f = (lambda v: f"{v:>8.3f}" if v is not None else f"{'n/a':>8}")
        print(f"{m:<22}{pr:<6}{fps:>8.2f}{ms:>9.2f}{f(ap50)}{f(ap)}")
    for key, e in summary.items():
        print(f"{key}: int8/fp32 speed {e['int8_speedup']:.2f}x")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
