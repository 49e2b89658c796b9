#!/usr/bin/env python
"""Pipeline vs detector alone vs the one-process sequential loop, on the same video, model and
backend, in one run:

  (a) detector alone: ``detect()`` on decoded frames (only the detect calls are timed);
  (b) sequential, the tutorial design: read, detect, track, draw, write the video, in one loop
      in one process;
  (c) the multi-process pipeline (capture, infer, track, render + video writer, sink + MOT file),
      its steady-state FPS (first capture to last rendered frame; start-up excluded, as in a/b).

The variants run one after another, ``--repeat`` times interleaved (a, b, c, a, b, c, ...), and
the median of each is reported, so a busy neighbour on a shared machine hits all three alike.
Prints a table and one JSON line with the ratios c/a and c/b.

    python benchmarks/bench_pipeline.py --source ../shared/assets/video/aiguys_test.mp4 \\
        --cfg ../shared/assets/darknet/yolo-fastest-1.1_coco/yolo-fastest-1.1-xl.cfg \\
        --weights ../shared/assets/darknet/yolo-fastest-1.1_coco/yolo-fastest-1.1-xl.weights --size 320
    python benchmarks/bench_pipeline.py --source ../shared/assets/video/aiguys_test.mp4 \\
        --cfg ../shared/assets/darknet/cfg/yolov4-tiny.cfg --random-weights --size 416
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


def _frames(source: str, limit: int):
    cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
    n = 0
    while not limit or n < limit:
        ok, f = cap.read()
        if not ok:
            break
        n += 1
        yield f
    cap.release()


def detector_alone(spec, source: str, limit: int) -> dict:
    """(a): frames decoded first (untimed), then only ``detect()`` is timed."""
    from trackpipe.models.factory import build_detector
    det = build_detector(spec)
    total, n = 0.0, 0
    try:
        first = True
        for f in _frames(source, limit):
            if first:  # warm-up, as the pipeline's infer stage does
                det.detect(f)
                det.detect(f)
                first = False
            t0 = time.perf_counter()
            det.detect(f)
            total += time.perf_counter() - t0
            n += 1
    finally:
        det.close()
    return {"frames": n, "fps": n / total, "ms_mean": 1000 * total / n}


def sequential(spec, source: str, limit: int, tracker: str, out_dir: str) -> dict:
    """(b): the single-process tutorial loop: read, detect, track, draw, write video + MOT."""
    from trackpipe.models.factory import build_detector
    from trackpipe.pipeline.media.sinks import BoxAnnotator, MotWriter, VideoSink
    from trackpipe.trackers.base import build_tracker
    det = build_detector(spec)
    trk = build_tracker(tracker)
    cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    video = VideoSink(os.path.join(out_dir, "sequential.mp4"), fps, size)
    mot = MotWriter(os.path.join(out_dir, "sequential.txt"))
    ann = BoxAnnotator(det.names)
    ok, f = cap.read()
    det.detect(f)
    det.detect(f)  # warm-up
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    n = 0
    t0 = time.perf_counter()
    try:
        while not limit or n < limit:
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
    return {"frames": n, "fps": n / elapsed}


def pipelined(spec, source: str, limit: int, tracker: str, out_dir: str, slots: int) -> dict:
    """(c): the multi-process pipeline with the same outputs (video + MOT)."""
    from trackpipe.pipeline.runtime.app import run_pipeline
    from trackpipe.pipeline.config import Config
    cfg = Config()
    cfg.source.uri = source
    cfg.tracker.name = tracker
    cfg.output.headless = True
    cfg.output.video = os.path.join(out_dir, "pipeline.mp4")
    cfg.output.mot = os.path.join(out_dir, "pipeline.txt")
    cfg.pipeline.max_frames = limit
    cfg.pipeline.ring_slots = slots
    cfg.profile.path = os.path.join(out_dir, "profile.json")
    t0 = time.perf_counter()
    res = run_pipeline(cfg, spec)
    wall = time.perf_counter() - t0
    if res.exit_code != 0:
        raise SystemExit(f"pipeline failed: {res.error}")
    r = res.report
    if r["frames_out"] != r["frames_in"]:
        raise SystemExit(f"pipeline lost frames: {r['frames_in']} in, {r['frames_out']} out")
    return {"frames": r["frames_out"], "fps": r["pipeline_fps"], "wall_fps": r["frames_out"] / wall,
            "detector_only_fps_in_pipeline": r["detector_only_fps"], "latency_ms": r["latency_ms"],
            "stages": {k: {m: v.get(m) for m in ("fps", "ms_p50", "ms_p95", "cpu_ms_per_item", "workers")
                           if v.get(m) is not None} for k, v in r["stages"].items()}}


def _random_weights(cfg: Path, size) -> Path:
    from trackpipe.models.darknet import load_cfg, write_random_weights
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trackpipe" / "random-weights"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{cfg.stem}-random-seed0.weights"
    if not path.exists():
        write_random_weights(load_cfg(cfg, size), path, seed=0)
    return path


def main(argv=None) -> int:
    from trackpipe.models.cli_args import add_model_args, spec_from_args
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "assets" / "video" / "aiguys_test.mp4"))
    ap.add_argument("--frames", type=int, default=0, help="frames per variant (0: the whole video)")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds; the median is reported")
    ap.add_argument("--tracker", default="sort")
    ap.add_argument("--ring-slots", type=int, default=8)
    ap.add_argument("--random-weights", action="store_true",
                    help="write random darknet weights for --cfg (architectures without real weights here)")
    ap.add_argument("--only", nargs="*", choices=("a", "b", "c"), default=["a", "b", "c"])
    add_model_args(ap)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if a.random_weights:
        if not a.cfg:
            ap.error("--random-weights needs --cfg")
        a.weights = _random_weights(a.cfg, a.size or (0, 0))
    if not a.model and not a.cfg:
        a.cfg = ROOT.parent / "shared/assets/darknet/yolo-fastest-1.1_coco/yolo-fastest-1.1-xl.cfg"
        a.weights = ROOT.parent / "shared/assets/darknet/yolo-fastest-1.1_coco/yolo-fastest-1.1-xl.weights"
        a.size = a.size or (320, 320)
    spec = spec_from_args(a)
    if spec.backend == "auto":  # resolve once so that all three variants use the same backend
        from trackpipe.models.factory import build_detector
        d = build_detector(spec)
        spec = spec.with_(backend=d.name)
        d.close()
    threads = [a.threads] if a.threads else sorted({1, os.cpu_count() or 1})
    runs = {(k, t): [] for k in a.only for t in threads}
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as out:
        for _ in range(a.repeat):
            for t in threads:
                sp = spec.with_(threads=t)
                if "a" in a.only:
                    runs["a", t].append(detector_alone(sp, a.source, a.frames))
                if "b" in a.only:
                    runs["b", t].append(sequential(sp, a.source, a.frames, a.tracker, out))
                if "c" in a.only:
                    runs["c", t].append(pipelined(sp, a.source, a.frames, a.tracker, out, a.ring_slots))
    med = {kt: statistics.median(r["fps"] for r in v) for kt, v in runs.items()}
    best = {k: max((med[k, t], t) for t in threads) for k in a.only}  # (fps, threads) of the best setting
    cap = cv2.VideoCapture(a.source)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    label = a.model or Path(spec.cfg).stem + (" (random weights)" if a.random_weights else "")
    print(f"{label} {spec.size[0]}x{spec.size[1]}, backend {spec.backend}, conf {spec.conf_threshold}; "
          f"{Path(a.source).name} {w}x{h}, {runs[a.only[0], threads[0]][0]['frames']} frames; "
          f"{os.cpu_count()} CPUs; median of {a.repeat} interleaved runs")
    names = {"a": "(a) detector alone", "b": "(b) sequential loop", "c": "(c) pipeline"}
    print(f"{'variant':<22} {'threads':>7} {'FPS':>8}   runs")
    for k in a.only:
        for t in threads:
            mark = " *" if best[k][1] == t and len(threads) > 1 else ""
            print(f"{names[k]:<22} {t:>7} {med[k, t]:>8.2f}   " + ", ".join(f"{r['fps']:.2f}" for r in runs[k, t])
                  + mark)
    if len(threads) > 1:
        print("(* the best thread setting of each variant; the ratios compare best with best)")
    result = {"bench": "pipeline", "model": label, "size": list(spec.size), "backend": spec.backend,
              "conf": spec.conf_threshold, "source": Path(a.source).name,
              "frames": runs[a.only[0], threads[0]][0]["frames"], "repeat": a.repeat, "cpu_count": os.cpu_count(),
              "fps": {f"{k}_threads{t}": round(v, 3) for (k, t), v in med.items()},
              "best": {k: {"fps": round(v[0], 3), "threads": v[1]} for k, v in best.items()}}
    if "c" in best:
        c = sorted(runs["c", best["c"][1]], key=lambda r: r["fps"])[len(runs["c", best["c"][1]]) // 2]
        result["pipeline"] = {k: c[k] for k in ("wall_fps", "detector_only_fps_in_pipeline", "latency_ms", "stages")}
        if "a" in best:
            result["ratio_c_over_a"] = round(best["c"][0] / best["a"][0], 3)
            print(f"pipeline / detector alone  = {result['ratio_c_over_a']:.3f}")
        if "b" in best:
            result["ratio_c_over_b"] = round(best["c"][0] / best["b"][0], 3)
            print(f"pipeline / sequential loop = {result['ratio_c_over_b']:.3f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
