"""Line counting on a real video: Yolo-Fastest-1.1-xl (ONNX Runtime) + SORT + ZoneLineCounter.

    python benchmarks/bench_lines.py [--size 320] [--frames 0] [--png-dir /tmp] [--confirm 3]

traffic-cars.mp4 (335 frames, 1280x720, 29.97 fps): cars come towards the camera on the
main carriageway. One line across that carriageway (y=430, x 150..1080), directions named
"away" (up the screen) and "toward" (down); counted classes: car, motorbike, bus, truck.

Prints the counts per class and direction, every crossing (frame, track, class, direction),
checks that no track id is counted twice on the line, and writes annotated frames
(line, boxes, ids, counts) to PNG files for checking by eye:

    <png-dir>/lines_event_<frame>.png   the frame of each crossing
    <png-dir>/lines_sheet_<k>.png       strips around the line (rows 300..560), every 5th frame,
                                        raw pixels + the line, frame number top left: for
                                        counting the crossings by eye

Speed (ms per frame of ``ZoneLineCounter.update`` beside ``Tracker.update``, same frames,
medians) is informative only. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trackpipe.models.factory import build_detector  # noqa: E402
from trackpipe.models.spec import ModelSpec  # noqa: E402
from trackpipe.pipeline.events import Line, ZoneLineCounter  # noqa: E402
from trackpipe.pipeline.events.draw import ZoneLineAnnotator  # noqa: E402
from trackpipe.trackers.factory import build_tracker  # noqa: E402

ASSETS = (REPO / ".." / "shared" / "assets").resolve()
VIDEO = ASSETS / "video" / "traffic-cars.mp4"
DARKNET = ASSETS / "darknet"
CFG = DARKNET / "yolo-fastest-1.1_coco" / "yolo-fastest-1.1-xl.cfg"
WEIGHTS = DARKNET / "yolo-fastest-1.1_coco" / "yolo-fastest-1.1-xl.weights"
NAMES = DARKNET / "data" / "coco.names"
LINE = {"name": "road", "points": [[150, 430], [1080, 430]], "directions": ["away", "toward"],
        "classes": ["car", "motorbike", "bus", "truck"]}
STRIP = (300, 560)          # rows of the frame shown in the by-eye sheets
SHEET_EVERY, SHEET_ROWS = 5, 12


def draw(frame, tracks, names, annotator, counts, seq):
    out = frame.copy()
    annotator.annotate(out, counts)
    for k in range(len(tracks)):
        x1, y1, x2, y2 = (int(v) for v in tracks.xyxy[k])
        cid = int(tracks.class_id[k])
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), 2)
        cv2.circle(out, ((x1 + x2) // 2, y2), 4, (0, 0, 255), -1)      # the anchor (bottom centre)
        cv2.putText(out, f"{int(tracks.track_id[k])} {names[cid]}", (x1, max(12, y1 - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 255, 0), 2)
    cv2.putText(out, f"frame {seq}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 255), 2)
    return out


def scaling(repeats: int = 30) -> dict:
    """ms per ``update`` for N synthetic tracks moving down a 1280x720 frame across 10 zones
    (6-point polygons) and 10 lines: how the vectorised update grows with N."""
    from trackpipe.models.types import Tracks

    zones = [{"name": f"z{i}", "points": [[0.1 * i, 0.2], [0.1 * i + 0.08, 0.2], [0.1 * i + 0.09, 0.5],
                                          [0.1 * i + 0.08, 0.8], [0.1 * i, 0.8], [0.1 * i + 0.02, 0.5]]}
             for i in range(10)]
    lines = [{"name": f"l{i}", "points": [[0.0, 0.05 + 0.09 * i], [1.0, 0.05 + 0.09 * i]]} for i in range(10)]
    from trackpipe.pipeline.events import parse_shapes
    zs, ls = parse_shapes(zones, lines)
    rng = np.random.default_rng(0)
    out = {}
    for n in (10, 100, 1000):
        c = ZoneLineCounter("synthetic", zs, ls, frame_size=(1280, 720))
        x = rng.uniform(0, 1240, n)
        y0 = rng.uniform(0, 300, n)
        v = rng.uniform(2, 8, n)
        times = []
        for f in range(repeats + 60):
            y = y0 + v * f
            xyxy = np.stack([x, y - 40, x + 40, y], 1)
            tr = Tracks(xyxy, np.full(n, 0.9), np.full(n, 2), track_id=np.arange(1, n + 1))
            t0 = time.perf_counter()
            c.update(tr, f / 30.0, seq=f)
            times.append(time.perf_counter() - t0)
        out[n] = round(statistics.median(times[10:]) * 1000, 3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=320, help="detector input size")
    ap.add_argument("--frames", type=int, default=0, help="stop after N frames (0: all)")
    ap.add_argument("--confirm", type=int, default=3, help="confirm_frames of the line")
    ap.add_argument("--tracker", default="sort")
    ap.add_argument("--png-dir", default="/tmp")
    args = ap.parse_args()

    spec = ModelSpec(cfg=CFG, weights=WEIGHTS, names=NAMES, size=(args.size, args.size), backend="onnx")
    det = build_detector(spec)
    names = list(det.names)
    tracker = build_tracker(args.tracker)
    line = Line.from_dict({**LINE, "confirm_frames": args.confirm}, "line")
    cap = cv2.VideoCapture(str(VIDEO))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    counter = ZoneLineCounter("traffic", lines=[line], names=names)
    annotator = ZoneLineAnnotator(lines=[line])
    png = Path(args.png_dir)
    png.mkdir(parents=True, exist_ok=True)
    for old in png.glob("lines_*.png"):
        old.unlink()

    events, t_track, t_count, strips = [], [], [], []
    seq = 0
    while True:
        ok, frame = cap.read()
        if not ok or (args.frames and seq >= args.frames):
            break
        h, w = frame.shape[:2]
        dets = det.detect(frame)
        t0 = time.perf_counter()
        tracks = tracker.update(dets)
        t1 = time.perf_counter()
        new = counter.update(tracks, seq / fps, seq=seq, frame_size=(w, h))
        t2 = time.perf_counter()
        t_track.append(t1 - t0)
        t_count.append(t2 - t1)
        events += new
        if new or seq % SHEET_EVERY == 0:
            img = draw(frame, tracks, names, annotator, counter.counts(), seq)
            if new:
                cv2.imwrite(str(png / f"lines_event_{seq:04d}.png"), img)
            if seq % SHEET_EVERY == 0:      # raw pixels + the line only: nothing to bias the eye
                s = annotator.annotate(frame.copy())[STRIP[0]:STRIP[1]]
                s = cv2.resize(s, (s.shape[1] // 2, s.shape[0] // 2))
                cv2.putText(s, str(seq), (4, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 255), 2)
                strips.append(s)
        seq += 1
    events += counter.end_all(seq=seq)
    cap.release()
    for k in range(0, len(strips), SHEET_ROWS):
        cv2.imwrite(str(png / f"lines_sheet_{k // SHEET_ROWS}.png"), np.vstack(strips[k:k + SHEET_ROWS]))

    crossings = [e for e in events if e.event == "line_cross"]
    per_track = collections.Counter(e.track_id for e in crossings)
    twice = sorted(t for t, n in per_track.items() if n > 1)
    counts = counter.counts()["lines"]["road"]
    print(f"{seq} frames of {VIDEO.name}, line {LINE['points']} ({', '.join(LINE['classes'])}), "
          f"confirm_frames={args.confirm}, detector {args.size}x{args.size} onnx, tracker {args.tracker}")
    print(f"{'frame':>6} {'t_s':>7} {'track':>6} {'class':<10} direction")
    for e in crossings:
        print(f"{e.seq:6d} {e.t:7.2f} {e.track_id:6d} {e.class_label:<10} {e.direction}")
    print(f"\n{'class':<10} {'away':>5} {'toward':>7}")
    for cls, c in sorted(counts.items()):
        print(f"{cls:<10} {c['away']:5d} {c['toward']:7d}")
    total = sum(c["away"] + c["toward"] for c in counts.values())
    print(f"total crossings {total}, tracks counted {len(per_track)}, tracks counted twice: {twice or 'none'}")
    ms_track = statistics.median(t_track) * 1000
    ms_count = statistics.median(t_count) * 1000
    print(f"ms/frame (median): tracker {ms_track:.3f}, counter {ms_count:.3f}")
    sc = scaling()
    print("ZoneLineCounter.update, 10 zones + 10 lines, ms (median): "
          + ", ".join(f"{n} tracks {ms:.3f}" for n, ms in sc.items()))
    print(json.dumps({"bench": "lines", "video": VIDEO.name, "frames": seq, "size": args.size,
                      "confirm_frames": args.confirm, "counts": counts, "total": total,
                      "tracks_counted": len(per_track), "double_counted": twice,
                      "crossings": [[e.seq, e.track_id, e.class_label, e.direction] for e in crossings],
                      "ms_per_frame": {"tracker": round(ms_track, 4), "counter": round(ms_count, 4)},
                      "update_ms_10_zones_10_lines": sc}))
    return 1 if twice else 0


if __name__ == "__main__":
    sys.exit(main())
