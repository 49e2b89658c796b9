#!/usr/bin/env python
"""The pipeline's end-to-end figures, in one run: every variant ``--repeat`` times,
interleaved (round 1: all variants, round 2: all variants, ...), medians reported, so a busy
neighbour on a shared machine hits all of them alike. Prints a table and one JSON line.

Pipeline variants run ``run_tracker.py``'s own command-line parsing (`pipeline.cli.load`), in
this process, on aiguys_test.mp4 (1920x1080, 302 frames), random-weight yolov4-tiny 416:

- ``tiny``: ``--conf 0.5``, tracking (sort), drawing, H.264 video and MOT file, default
  settings (backend/precision auto, ``pipeline.cpus`` auto, ``pipeline.batch`` auto);
- ``tiny_onnx``: the same with ``--backend onnx --precision fp32`` (the plain ONNX Runtime path);
- ``tiny_noplace``: the same as ``tiny`` with ``--set pipeline.cpus=off`` (no CPU placement);
- ``tiny_prec_auto``: the same as ``tiny`` with ``--precision auto`` (bf16/int8 kept only when their
  boxes agree with fp32's on the source's first frames);
- ``tiny_placed``: the same with infer alone on the first core and the other stages on the rest
  (``--set "pipeline.cpus={infer: [FIRST]}"``: what ``auto`` does from 4 cores on);
- ``flood25`` / ``flood50``: ``--conf 0.25`` / ``0.5``, 100 frames, ``--headless``, no outputs;
- ``yf``: Yolo-Fastest-1.1-xl 320 (real weights), as ``tiny``.

One-process references, all cores (backend threads = every core), the backend and precision
``auto`` chose: ``tiny_alone`` / ``yf_alone`` (``detect()`` on decoded frames, only the detect
calls timed) and ``tiny_loop`` / ``yf_loop`` (read, detect, track, draw, write H.264 + MOT in one
loop: the tutorial design).

    python benchmarks/bench_pipeline.py --repeat 3
    python benchmarks/bench_pipeline.py --repeat 3 --only tiny tiny_onnx
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

ASSETS = ROOT.parent / "shared" / "assets"
VIDEO = ASSETS / "video" / "aiguys_test.mp4"
TINY_CFG = ASSETS / "darknet" / "cfg" / "yolov4-tiny.cfg"
YF_DIR = ASSETS / "darknet" / "yolo-fastest-1.1_coco"
YF = ["--cfg", str(YF_DIR / "yolo-fastest-1.1-xl.cfg"), "--weights", str(YF_DIR / "yolo-fastest-1.1-xl.weights"),
      "--names", str(ASSETS / "darknet" / "data" / "coco.names"), "--size", "320"]
VARIANTS = ("tiny", "tiny_onnx", "tiny_noplace", "tiny_placed", "tiny_prec_auto", "flood25", "flood50", "yf",
            "tiny_alone", "tiny_loop", "yf_alone", "yf_loop")


LOOP_PRESET = "ultrafast"   # what render uses for a file on fewer than 4 cores (runtime/processes.py)


def random_weights(cfg: Path) -> Path:
    """Random darknet weights for ``cfg`` (seed 0), cached under ~/.cache/trackpipe/random-weights."""
    from trackpipe.models.darknet import load_cfg, write_random_weights
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trackpipe" / "random-weights"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{cfg.stem}-random-seed0.weights"
    if not path.exists():
        write_random_weights(load_cfg(cfg), path, seed=0)
    return path


def tiny_model(conf: float) -> list:
    return ["--cfg", str(TINY_CFG), "--weights", str(random_weights(TINY_CFG)), "--size", "416", "--conf", str(conf)]


def pipeline_args(variant: str, out: str) -> list:
    """The run_tracker.py command line of a pipeline variant."""
    full = ["--source", str(VIDEO), "--tracker", "sort", "--headless", "--output", f"{out}/{variant}.mp4",
            "--mot", f"{out}/{variant}.txt"]
    if variant == "tiny":
        return full + tiny_model(0.5)
    if variant == "tiny_onnx":
        return full + tiny_model(0.5) + ["--backend", "onnx", "--precision", "fp32"]
    if variant == "tiny_noplace":
        return full + tiny_model(0.5) + ["--set", "pipeline.cpus=off"]
    if variant == "tiny_prec_auto":
        return full + tiny_model(0.5) + ["--precision", "auto"]
    if variant == "tiny_placed":
        first = sorted(os.sched_getaffinity(0))[0]
        return full + tiny_model(0.5) + ["--set", f"pipeline.cpus={{infer: [{first}]}}"]
    if variant in ("flood25", "flood50"):
        return ["--source", str(VIDEO), "--tracker", "sort", "--headless", "--max-frames", "100",
                *tiny_model(0.25 if variant == "flood25" else 0.5)]
    if variant == "yf":
        return full + YF
    raise KeyError(variant)


def run_pipeline_variant(variant: str, out: str) -> dict:
    from trackpipe.pipeline.cli import load
    from trackpipe.pipeline.runtime.app import run_pipeline
    cfg, spec = load(pipeline_args(variant, out) + ["--profile", f"{out}/{variant}.json"])
    res = run_pipeline(cfg, spec)
    if res.exit_code != 0:
        raise SystemExit(f"{variant}: pipeline failed: {res.error}")
    r = res.report
    if r["frames_out"] != r["frames_in"]:
        raise SystemExit(f"{variant}: lost frames: {r['frames_in']} in, {r['frames_out']} out")
    st = r["stages"]
    bound = r.get("cpu", {}).get("bound_fps")
    return {"fps": r["pipeline_fps"], "frames": r["frames_out"], "detector_only_fps": r["detector_only_fps"],
            "ratio": r.get("pipeline_over_detector", 0.0), "detector": r.get("detector", {}),
            "placement": r.get("placement", {}).get("cores", {}),
            "cpu_ms": {k: v.get("cpu_ms_per_item") for k, v in st.items()},
            "cpu": r.get("cpu", {}),
            "over_bound": round(r["pipeline_fps"] / bound, 3) if bound else None,
            "video": {k: st.get("render", {}).get(k) for k in ("video_codec", "video_preset")}}


def _frames(limit: int = 0):
    cap = cv2.VideoCapture(str(VIDEO), cv2.CAP_FFMPEG)
    n = 0
    while not limit or n < limit:
        ok, f = cap.read()
        if not ok:
            break
        n += 1
        yield f
    cap.release()


def _spec(model_args: list):
    """The model spec a run_tracker.py run on VIDEO would resolve to: backend/precision auto
    chosen as the pipeline chooses them (probe frames and int8 calibration from VIDEO)."""
    from types import SimpleNamespace

    from trackpipe.pipeline.cli import load
    from trackpipe.pipeline.runtime.app import resolve_auto
    return resolve_auto(load(["--source", str(VIDEO), *model_args])[1], SimpleNamespace(kind="file", uri=str(VIDEO)))


def detector_alone(model_args: list) -> dict:
    """Frames decoded first (untimed), then only ``detect()`` is timed; all cores."""
    from trackpipe.models.factory import build_detector
    det = build_detector(_spec(model_args))
    frames = list(_frames(100))
    total = 0.0
    try:
        det.detect(frames[0])
        det.detect(frames[0])
        for f in frames:
            t0 = time.perf_counter()
            det.detect(f)
            total += time.perf_counter() - t0
        name = det.describe() if hasattr(det, "describe") else det.name
    finally:
        det.close()
    return {"fps": len(frames) / total, "frames": len(frames), "backend": name}


def sequential(model_args: list, out: str, tag: str) -> dict:
    """The one-process loop: read, detect, track, draw, write H.264 (same writer and preset as
    render: ultrafast for a file on unplaced cores, ``--preset``) and the MOT file; all cores."""
    from trackpipe.models.factory import build_detector
    from trackpipe.pipeline.drawing.boxes import BoxAnnotator
    from trackpipe.pipeline.media.mot import MotWriter
    from trackpipe.pipeline.video import VideoWriter
    from trackpipe.trackers.factory import build_tracker
    det = build_detector(_spec(model_args))
    trk = build_tracker("sort")
    cap = cv2.VideoCapture(str(VIDEO), cv2.CAP_FFMPEG)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    hw = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
    video = VideoWriter.open(os.path.join(out, f"{tag}.mp4"), fps, hw, preset=LOOP_PRESET)
    mot = MotWriter(os.path.join(out, f"{tag}.txt"))
    ann = BoxAnnotator(det.names)
    ok, f = cap.read()
    det.detect(f)
    det.detect(f)  # warm-up
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    n = 0
    t0 = time.perf_counter()
    try:
        while True:
            ok, f = cap.read()
            if not ok:
                break
            tracks = trk.update(det.detect(f), frame=None)
            ann.annotate(f, tracks)
            video.write(f)
            mot.write(n + 1, tracks)
            n += 1
        elapsed = time.perf_counter() - t0
    finally:
        video.close()
        mot.close()
        cap.release()
        det.close()
    return {"fps": n / elapsed, "frames": n}


def run_variant(v: str, out: str) -> dict:
    if v == "tiny_alone":
        return detector_alone(tiny_model(0.5))
    if v == "yf_alone":
        return detector_alone(YF)
    if v == "tiny_loop":
        return sequential(tiny_model(0.5), out, v)
    if v == "yf_loop":
        return sequential(YF, out, v)
    return run_pipeline_variant(v, out)


def _median_run(runs: list) -> dict:
    return sorted(runs, key=lambda r: r["fps"])[len(runs) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the median is reported")
    ap.add_argument("--only", nargs="*", choices=VARIANTS, default=list(VARIANTS))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    runs = {v: [] for v in a.only}
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as out:
        for v in a.only:  # backend auto measures once per model (cached): keep that out of the rounds
            if v in ("tiny_alone", "yf_alone"):
                detector_alone(tiny_model(0.5) if v == "tiny_alone" else YF)
        for i in range(a.repeat):
            for v in a.only:
                r = run_variant(v, out)
                runs[v].append(r)
                print(f"round {i + 1} {v}: {r['fps']:.2f} FPS"
                      + (f", pipeline/detector {r['ratio']:.3f}" if "ratio" in r else ""), file=sys.stderr)
    med = {v: statistics.median(r["fps"] for r in rs) for v, rs in runs.items()}
    result = {"bench": "pipeline", "source": VIDEO.name, "repeat": a.repeat, "cpu_count": os.cpu_count(),
              "fps": {v: round(f, 2) for v, f in med.items()},
              "runs": {v: [round(r["fps"], 2) for r in rs] for v, rs in runs.items()}}
    print(f"{VIDEO.name}, {os.cpu_count()} CPUs, median of {a.repeat} interleaved rounds")
    print(f"{'variant':<14} {'FPS':>8} {'det-only':>9} {'pipe/det':>9}  backend / detail; runs")
    for v in a.only:
        m = _median_run(runs[v])
        det = m.get("detector", {})
        detail = m.get("backend") or det.get("backend", "")
        if "detector_only_fps" in m:
            detail += f", batch {det.get('batch', '?')}"
            result.setdefault("pipeline", {})[v] = {k: m[k] for k in ("detector_only_fps", "ratio", "detector",
                                                                       "placement", "cpu_ms", "cpu", "over_bound",
                                                                       "video")}
        print(f"{v:<14} {med[v]:>8.2f} {m.get('detector_only_fps', 0):>9.2f} {m.get('ratio', 0):>9.3f}  {detail}; "
              + ", ".join(f"{r['fps']:.2f}" for r in runs[v]))
    ratios = {}
    pairs = {"tiny_over_onnx": ("tiny", "tiny_onnx"), "prec_auto_over_onnx": ("tiny_prec_auto", "tiny_onnx"),
             "auto_over_off": ("tiny", "tiny_noplace"),
             "placed_over_unplaced": ("tiny_placed", "tiny_noplace"),
             "flood25_over_flood50": ("flood25", "flood50"), "tiny_pipeline_over_loop": ("tiny", "tiny_loop"),
             "yf_pipeline_over_loop": ("yf", "yf_loop"), "tiny_pipeline_over_alone": ("tiny", "tiny_alone"),
             "yf_pipeline_over_alone": ("yf", "yf_alone")}
    for name, (x, y) in pairs.items():
        if x in med and y in med and med[y]:
            ratios[name] = round(med[x] / med[y], 3)
            print(f"{name:<28} {ratios[name]:.3f}")
    for v in ("tiny", "yf", "tiny_onnx", "tiny_placed", "tiny_prec_auto"):
        if v in runs:
            ratios[f"{v}_pipeline_over_detector_only"] = round(statistics.median(r["ratio"] for r in runs[v]), 3)
            print(f"{v + '_pipeline_over_detector_only':<28} {ratios[f'{v}_pipeline_over_detector_only']:.3f}")
            bounded = [r["over_bound"] for r in runs[v] if r.get("over_bound")]
            if bounded:   # unplaced: how close the pipeline gets to what its stages' CPU allows on shared cores
                ratios[f"{v}_pipeline_over_cpu_bound"] = round(statistics.median(bounded), 3)
                print(f"{v + '_pipeline_over_cpu_bound':<28} {ratios[f'{v}_pipeline_over_cpu_bound']:.3f}")
    result["ratios"] = ratios
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
