"""INT8 accuracy on each class of x86 CPU: COCO AP50 of Yolo-Fastest-1.1-xl (real weights) in fp32
and in int8 for ONNX Runtime and OpenVINO (NNCF and the calibration's Q/DQ model), with the weight
bits each CPU class gets, plus the int16 pair-sum overflows of each model on real activations.

CPU classes this machine is not are run with oneDNN's ISA cap (`ONEDNN_MAX_CPU_ISA`), which
OpenVINO's CPU plugin honours: `AVX2` is an AVX2-only CPU, `AVX512_CORE` an AVX-512 one without
VNNI. ONNX Runtime reads CPUID and ignores the cap: its 7-bit-weight figure is exact on every
x86 CPU (no pair sum can overflow, see `models/int8check.py`), its 8-bit one holds only on CPUs
with VNNI. Each row also runs the model a capped CPU would NOT get (8-bit weights), to show
what it would lose.

    python benchmarks/bench_int8_cpus.py [--caps none,AVX512_CORE,AVX2] [--frames 64]

One calibration (entropy, 64 frames of aiguys_video.mp4: never the COCO images it is scored on).
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ASSETS = ROOT.parent / "shared" / "assets"
CFG = ASSETS / "darknet" / "yolo-fastest-1.1_coco" / "yolo-fastest-1.1-xl.cfg"
WEIGHTS = CFG.with_suffix(".weights")
NAMES = ASSETS / "darknet" / "data" / "coco.names"
COCO = ASSETS / "coco_val2017"
VIDEO = ASSETS / "video" / "aiguys_video.mp4"

# run in a child so that the ISA cap is set before OpenVINO loads
_CHILD = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from trackpipe.models.cpu import cpu_info
from trackpipe.models.darknet import load_network
from trackpipe.models.evaluate import evaluate_coco
from trackpipe.models.factory import build_detector
from trackpipe.models.int8check import pair_overflow
from trackpipe.models.preprocess import preprocess
from trackpipe.models.quantize import int8_model_path, read_calibration_frames
from trackpipe.models.spec import ModelSpec
cfg, weights, names, coco, calib, cache = map(Path, sys.argv[2:8])
spec = ModelSpec(cfg=cfg, weights=weights, names=names, conf_threshold=0.005, cache_dir=cache)
cpu = cpu_info()
native = cpu.int8_weight_bits
out = {"cpu": cpu.describe(), "bits": native, "ap50": {}}
def ap(s):
    with build_detector(s) as det:
        return round(evaluate_coco(det, coco / "instances_val2017_subset66.json", coco / "images")["map50"], 4)
out["ap50"]["fp32"] = ap(spec.with_(backend="openvino", precision="fp32"))
for bits in sorted({native, 8}):
    tag = f"w{bits}" + ("" if bits == native else " (not used here)")
    for backend, method in (("onnx", ""), ("openvino", "nncf"), ("openvino", "qdq")):
        extra = {"int8_weight_bits": bits, **({"int8_method": method} if method else {})}
        name = f"{backend}{'-' + method if method else ''} {tag}"
        out["ap50"][name] = ap(spec.with_(backend=backend, precision="int8", calib=calib, extra=extra))
net = load_network(cfg, weights)
blobs = [preprocess([f], net.input_size, False)[0] for f in read_calibration_frames(str(coco / "images"), 3)]
out["overflow"] = {}
for bits in (8, 7):
    rows = pair_overflow(int8_model_path(spec.with_(precision="int8", calib=calib), net, bits), blobs)
    out["overflow"][f"w{bits}"] = {"convs": len(rows), "convs_overflowing": sum(r.overflows > 0 for r in rows),
                                   "pairs": sum(r.pairs for r in rows), "overflows": sum(r.overflows for r in rows),
                                   "max_abs": max(r.max_abs for r in rows)}
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caps", default="none,AVX512_CORE,AVX2", help="ONEDNN_MAX_CPU_ISA values; none: no cap")
    ap.add_argument("--frames", type=int, default=64, help="calibration frames")
    args = ap.parse_args()
    from trackpipe.models.darknet import load_network  # noqa: PLC0415
    from trackpipe.models.quantize import calibrate  # noqa: PLC0415

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        calib, cache = Path(tmp) / "calib", Path(tmp) / "cache"
        calibrate(load_network(CFG, WEIGHTS), str(VIDEO), calib, frames=args.frames, method="entropy",
                  cache_dir=cache)
        for cap in args.caps.split(","):
            env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
            if cap != "none":
                env["ONEDNN_MAX_CPU_ISA"] = cap
            r = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), str(CFG), str(WEIGHTS), str(NAMES), str(COCO),
                                str(calib), str(cache / cap)], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                print(f"cap {cap}: failed: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                return 1
            results.append({"cap": cap, **json.loads(r.stdout.strip().splitlines()[-1])})
    print(f"{'ISA cap':<12} {'CPU class':<34} {'path':<34} {'AP50':>7} {'vs fp32':>8}")
    for res in results:
        fp32 = res["ap50"]["fp32"]
        for name, value in res["ap50"].items():
            print(f"{res['cap']:<12} {res['cpu']:<34} {name:<34} {value:7.4f} {value - fp32:+8.4f}")
    for bits, o in results[0]["overflow"].items():
        print(f"pair sums outside int16, {bits}: {o['overflows']} of {o['pairs']} in {o['convs_overflowing']} of "
              f"{o['convs']} convolutions (max |sum| {o['max_abs']})")
    print(json.dumps({"bench": "int8_cpus", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
