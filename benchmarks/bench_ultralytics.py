#!/usr/bin/env python
"""trackpipe against the tool its ONNX users run today: the same yolov8n ONNX at 320 tracked on
aiguys_test.mp4 (1920x1080, 302 frames), one after the other on this machine:

- ours: ``run_tracker.py --source VIDEO --model-file yolov8n.onnx --headless --tracker bytetrack``
  (no outputs; backend and precision auto, the default: the first round starts at once on fp32 and
  measures after the run, later rounds run the choice it cached); FPS: the profile's
  ``pipeline_fps`` (first frame in to last frame out; model loading not counted) and the backend
  it ran;
- theirs: Ultralytics' ``YOLO(onnx).track(VIDEO, tracker="bytetrack.yaml", stream=True)`` on ONNX
  Runtime, nothing saved; FPS: frames / time from the first result to the last, plus the first
  frame (model loading not counted).

Both at conf 0.25, NMS IoU 0.45, imgsz 320. The model: Ultralytics' own ``yolov8n.yaml`` (full
size), random weights made to give boxes as the test fixtures are (make_fixtures.build), exported
to ONNX by Ultralytics. Ultralytics runs in a side environment (never a dependency of this
project), its python given by --side-python (default /work/side/ultra/bin/python; made as
tests/fixtures/onnx/make_fixtures.py says, plus ``pip install lap`` for Ultralytics' trackers);
without it, the run says so and stops.

    python benchmarks/bench_ultralytics.py [--repeat 3] [--frames 302] [--onnx yolov8n.onnx]

The yolov8n/yolo11n files at 320 and 640 that docs/benchmarks.md measures with ``python -m
trackpipe.models bench --model-file``: ``/work/side/ultra/bin/python benchmarks/bench_ultralytics.py
--side-build /work/side/models/yolo11n-640.onnx --arch yolo11 --imgsz 640`` (and so on).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / ".." / "shared" / "assets" / "video" / "aiguys_test.mp4"
SIDE = Path("/work/side/ultra/bin/python")
CONF, IOU, IMGSZ = 0.25, 0.45, 320


# --arch: Ultralytics' yaml and its "n" scale (depth, width, max channels)
ARCHS = {"yolov8": ("cfg/models/v8/yolov8.yaml", [0.33, 0.25, 1024]),
         "yolo11": ("cfg/models/11/yolo11.yaml", [0.50, 0.25, 1024])}


def side_build(out: Path, arch: str = "yolov8", imgsz: int = IMGSZ) -> None:
    """(In the side environment) yolov8n or yolo11n, random weights with boxes, exported to ONNX at
    imgsz into out."""
    sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "onnx"))
    import shutil  # noqa: PLC0415

    from make_fixtures import build, dataset_names, reference_images  # noqa: PLC0415

    yaml, scale = ARCHS[arch]
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        model = build(f"{arch}n", yaml, dataset_names("coco"), 0, Path(tmp), reference_images(), scale=scale)
        shutil.copyfile(model.export(format="onnx", imgsz=imgsz, simplify=True, verbose=False), out)


def side_track(onnx: Path, video: Path, frames: int) -> None:
    """(In the side environment) Ultralytics' own tracking of the video: one JSON line."""
    from ultralytics import YOLO  # noqa: PLC0415

    model = YOLO(str(onnx), task="detect")
    t0 = time.perf_counter()
    n, first, boxes = 0, None, 0
    for r in model.track(str(video), tracker="bytetrack.yaml", imgsz=IMGSZ, conf=CONF, iou=IOU, stream=True,
                         save=False, verbose=False):
        n += 1
        boxes += len(r.boxes)
        if first is None:
            first = time.perf_counter()
        if n >= frames:
            break
    t1 = time.perf_counter()
    per_frame = (t1 - first) / max(1, n - 1)
    print(json.dumps({"frames": n, "fps": round(1.0 / per_frame, 2), "wall_s": round(t1 - t0, 2),
                      "boxes_per_frame": round(boxes / max(1, n), 1)}))


def ours(onnx: Path, video: Path, frames: int, tmp: Path) -> dict:
    prof = tmp / "profile.json"
    cmd = [sys.executable, str(ROOT / "run_tracker.py"), "--source", str(video), "--model-file", str(onnx),
           "--headless", "--tracker", "bytetrack", "--conf", str(CONF), "--nms", str(IOU), "--profile", str(prof),
           "--max-frames", str(frames)]
    subprocess.run(cmd, cwd=str(ROOT), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, TRACKPIPE_CACHE=str(tmp / "cache")))
    rep = json.loads(prof.read_text())
    return {"frames": rep["frames_out"], "fps": rep["pipeline_fps"],
            "detector_only_fps": rep.get("detector_only_fps"),
            "backend": (rep.get("detector") or {}).get("backend") or "?"}


def theirs(side: Path, onnx: Path, video: Path, frames: int) -> dict:
    out = subprocess.run([str(side), __file__, "--side-track", str(onnx), "--frames", str(frames)],
                         capture_output=True, text=True, env=dict(os.environ, YOLO_OFFLINE="1"))
    if out.returncode:
        raise SystemExit(f"error: Ultralytics' run failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side-python", type=Path, default=SIDE)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--frames", type=int, default=302)
    ap.add_argument("--onnx", type=Path, help="a yolov8n ONNX file (default: built in the side environment)")
    ap.add_argument("--side-build", type=Path, metavar="OUT.onnx",
                    help="(run with the side environment's python) only build the model into OUT.onnx: "
                         "yolov8n (or --arch) with random weights, exported at --imgsz")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="yolov8", help="with --side-build (default yolov8)")
    ap.add_argument("--imgsz", type=int, default=IMGSZ, help=f"with --side-build (default {IMGSZ})")
    ap.add_argument("--side-track", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side_build:
        side_build(args.side_build, args.arch, args.imgsz)
        return 0
    if args.side_track:
        side_track(args.side_track, VIDEO, args.frames)
        return 0
    if not args.side_python.is_file():
        print(f"error: no Ultralytics side environment at {args.side_python} (--side-python): "
              "see tests/fixtures/onnx/make_fixtures.py", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        onnx = args.onnx
        if onnx is None:
            onnx = tmp / "yolov8n.onnx"
            subprocess.run([str(args.side_python), __file__, "--side-build", str(onnx)], check=True,
                           capture_output=True, env=dict(os.environ, YOLO_OFFLINE="1"))
        rows = []
        for i in range(args.repeat):  # interleaved: a busy neighbour hits both alike
            a = ours(onnx, VIDEO, args.frames, tmp)
            b = theirs(args.side_python, onnx, VIDEO, args.frames)
            rows.append((a, b))
            print(f"round {i + 1}: trackpipe {a['fps']:.1f} FPS on {a['backend']} (detector alone "
                  f"{a['detector_only_fps']}), "
                  f"Ultralytics {b['fps']:.1f} FPS ({b['boxes_per_frame']} boxes/frame): "
                  f"{a['fps'] / b['fps']:.2f}x", flush=True)
    ours_fps = statistics.median(a["fps"] for a, _ in rows)
    their_fps = statistics.median(b["fps"] for _, b in rows)
    print(json.dumps({"trackpipe_fps": ours_fps, "ultralytics_fps": their_fps,
                      "ratio": round(ours_fps / their_fps, 2), "load": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
