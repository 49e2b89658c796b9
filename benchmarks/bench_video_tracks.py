"""Track quality on the real videos: IDs, short tracks, coverage (flicker), duplicate starts.

    python benchmarks/bench_video_tracks.py [--videos DIR] [--trackers sort,hybrid] [--repeats 3]

The real detector (Yolo-Fastest-1.1-xl, 320x320, ONNX Runtime, conf 0.25 and NMS 0.45 as in
``configs/default.yaml``, all classes) runs once over every video; its detections are cached
in ``.cache/video_dets/<video>.npz`` (not committed; keyed by the video's size and mtime).
Then each tracker runs over the cached detections, with the frames (``deepsort`` and the
camera-motion compensation, ``--set cmc=auto``, read them), and per video and tracker this prints:

- ids: distinct track IDs written;
- short: IDs written in fewer than 10 frames;
- coverage: mean over IDs of (frames in which the ID is written) / (frames from its first to
  its last written frame), predicted boxes counting as written (a measure of flicker);
- dup_starts (API): IDs whose ``track_started`` would be emitted twice by the tracker's
  lifecycle events (``trackers.lifecycle.LifecycleLog``: started when first output, ended when
  the tracker deletes it);
- dup_starts (unseen 30): the same under a simpler rule (ended after 30 frames
  without output, started again when output again);
- recall50: share of the detections scoring >= 0.5 that an output box (same class, IoU >= 0.5)
  covers in the same frame: a tracker that started few tracks would look flicker-free while
  showing nothing, this says how much of what the detector sees is shown;
- ms/frame: time inside ``Tracker.update`` (median of ``--repeats`` runs).

``--set KEY=VALUE`` overrides hybrid config fields (e.g. ``--set max_predict=5``).
``--images DIR`` instead runs the detector on a folder of unrelated images and counts, per
tracker (``independent``, ``hybrid``, ``sort``), the images with at least one output box.

The hybrid tracker gets ``score_floor`` = the detector's conf (0.25): its thresholds are
relative to it (docs/tracking.md). One JSON line last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ASSETS = REPO / ".." / "shared" / "assets"
YF = ASSETS / "darknet" / "yolo-fastest-1.1_coco"
CONF = 0.25
CACHE = REPO / ".cache" / "video_dets"


def read_frames(video: Path):
    """Yield the video's frames, (H,W,3) uint8 BGR (decoded on demand: 1080p frames are 6 MB)."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return
            yield img
    finally:
        cap.release()


def detect_video(video: Path):
    """-> list of Detections per frame (cached)."""
    from trackpipe.models.types import Detections

    st = video.stat()
    cache = CACHE / f"{video.stem}_{st.st_size}_{int(st.st_mtime)}_c{CONF}.npz"
    if cache.exists():
        z = np.load(cache)
        bounds = z["bounds"]
        return [Detections(z["xyxy"][a:b], z["score"][a:b], z["class_id"][a:b])
                for a, b in zip(bounds[:-1], bounds[1:])]
    from trackpipe.models.factory import build_detector
    from trackpipe.models.spec import ModelSpec

    spec = ModelSpec(cfg=YF / "yolo-fastest-1.1-xl.cfg", weights=YF / "yolo-fastest-1.1-xl.weights",
                     names=ASSETS / "darknet" / "data" / "coco.names", size=(320, 320),
                     backend="onnx", conf_threshold=CONF, nms_threshold=0.45)
    det = build_detector(spec)
    dets = [det.detect(f) for f in read_frames(video)]
    CACHE.mkdir(parents=True, exist_ok=True)
    bounds = np.cumsum([0] + [len(d) for d in dets])
    np.savez(cache, bounds=bounds, xyxy=np.concatenate([d.xyxy for d in dets]),
             score=np.concatenate([d.score for d in dets]),
             class_id=np.concatenate([d.class_id for d in dets]))
    return dets


def build(name: str, overrides: dict):
    from trackpipe.trackers.factory import build_tracker

    if name.startswith("hybrid"):
        return build_tracker(name, **{"score_floor": CONF, **overrides})
    return build_tracker(name)


def run(name: str, video: Path, dets, repeats: int, overrides: dict) -> dict:
    from trackpipe.trackers.lifecycle import LifecycleLog
    from trackpipe.trackers.matching import iou_matrix

    times = []
    for _ in range(max(1, repeats)):
        tracker = build(name, overrides)
        covered = want = 0
        log = LifecycleLog()
        starts: dict[int, int] = {}
        written: dict[int, list[int]] = {}
        n_pred = 0
        total = 0.0
        reads = name.startswith("deepsort") or getattr(tracker, "needs_frame", False)  # appearance or cmc
        frames = read_frames(video) if reads else (None for _ in dets)
        for i, (f, d) in enumerate(zip(frames, dets)):
            t0 = time.perf_counter()
            tr = tracker.update(d, frame=f)
            total += time.perf_counter() - t0
            live = getattr(tracker, "live_track_ids", tr.track_id)
            ev = log.step(tr.track_id, live)
            for tid in ev.started.tolist():
                starts[tid] = starts.get(tid, 0) + 1
            n_pred += int(np.asarray(getattr(tr, "predicted", np.zeros(0, bool))).sum())
            for tid in tr.track_id.tolist():
                written.setdefault(tid, []).append(i)
            strong = d.score >= 0.5
            want += int(strong.sum())
            if strong.any() and len(tr):
                io = iou_matrix(d.xyxy[strong], tr.xyxy)
                io[d.class_id[strong][:, None] != tr.class_id[None, :]] = 0
                covered += int((io.max(axis=1) >= 0.5).sum())
        times.append(1000 * total / max(len(dets), 1))
    cov = [len(v) / (v[-1] - v[0] + 1) for v in written.values()]
    # the simpler rule: ended after 30 frames without output; output again -> started again
    dup_old = 0
    for v in written.values():
        gaps = np.diff(v) - 1
        dup_old += int((gaps > 30).any())
    return {"ids": len(written), "short": sum(len(v) < 10 for v in written.values()),
            "coverage": round(float(np.mean(cov)) if cov else 1.0, 4),
            "min_coverage": round(float(np.min(cov)) if cov else 1.0, 3),
            "dup_starts_api": sum(c > 1 for c in starts.values()), "dup_starts_unseen30": dup_old,
            "predicted_rows": n_pred, "recall50": round(covered / max(want, 1), 3),
            "ms_per_frame": round(float(np.median(times)), 3)}


def bench_images(folder: Path, names: list) -> dict:
    """Images of ``folder`` (sorted, as a folder source reads them) with >= 1 output box."""
    import cv2

    from trackpipe.models.factory import build_detector
    from trackpipe.models.spec import ModelSpec

    spec = ModelSpec(cfg=YF / "yolo-fastest-1.1-xl.cfg", weights=YF / "yolo-fastest-1.1-xl.weights",
                     names=ASSETS / "darknet" / "data" / "coco.names", size=(320, 320),
                     backend="onnx", conf_threshold=CONF, nms_threshold=0.45)
    det = build_detector(spec)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    dets = [det.detect(cv2.imread(str(p))) for p in files]
    out = {"images": len(files), "with_detections": sum(len(d) > 0 for d in dets)}
    for n in names:
        t = build(n, {})
        out[n] = sum(len(t.update(d)) > 0 for d in dets)
    print(f"{folder}: {out['images']} images, {out['with_detections']} with detections; images with "
          "output boxes: " + ", ".join(f"{n} {out[n]}" for n in names))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", default=str(ASSETS / "video"))
    ap.add_argument("--trackers", default="sort,deepsort,hybrid")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--images", default="", help="a folder of unrelated images (see above)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a hybrid config field (repeatable)")
    args = ap.parse_args()
    import ast
    overrides = {}
    for item in args.set:
        k, _, v = item.partition("=")
        try:
            overrides[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            overrides[k] = v
    names = [n for n in args.trackers.split(",") if n]
    if args.images:
        res = bench_images(Path(args.images), names)
        print(json.dumps({"conf": CONF, "images": res}))
        return 0
    out = {}
    head = (f"{'video':<24} {'tracker':<9} {'ids':>4} {'short<10':>8} {'coverage':>8} {'min':>5} "
            f"{'dup(API)':>8} {'dup(30)':>7} {'pred rows':>9} {'recall50':>8} {'ms/frame':>8}")
    print(head)
    print("-" * len(head))
    for video in sorted(Path(args.videos).glob("*.mp4")):
        dets = detect_video(video)
        out[video.name] = {"frames": len(dets),
                           "dets_per_frame": round(float(np.mean([len(d) for d in dets])), 2)}
        for n in names:
            r = run(n, video, dets, args.repeats, overrides)
            out[video.name][n] = r
            print(f"{video.name:<24} {n:<9} {r['ids']:4d} {r['short']:8d} {r['coverage']:8.3f} "
                  f"{r['min_coverage']:5.2f} {r['dup_starts_api']:8d} {r['dup_starts_unseen30']:7d} "
                  f"{r['predicted_rows']:9d} {r['recall50']:8.3f} {r['ms_per_frame']:8.3f}")
    summary = {}
    for n in names:
        rs = [v[n] for v in out.values()]
        summary[n] = {"ids": sum(r["ids"] for r in rs), "short": sum(r["short"] for r in rs),
                      "coverage_mean": round(float(np.mean([r["coverage"] for r in rs])), 4),
                      "coverage_min_video": min(r["coverage"] for r in rs),
                      "dup_starts_api": sum(r["dup_starts_api"] for r in rs),
                      "recall50_mean": round(float(np.mean([r["recall50"] for r in rs])), 3)}
        print(f"ALL {n:<9} ids {summary[n]['ids']}, short {summary[n]['short']}, coverage mean "
              f"{summary[n]['coverage_mean']:.3f} (lowest video {summary[n]['coverage_min_video']:.3f}), "
              f"duplicate starts {summary[n]['dup_starts_api']}, recall50 {summary[n]['recall50_mean']:.3f}")
    print(json.dumps({"conf": CONF, "overrides": overrides, "summary": summary, "videos": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
