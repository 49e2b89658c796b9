"""Motion-gated detection on footage that stands still part of the time, and whole frame vs
crops around the motion.

    python benchmarks/bench_motion.py [--videos traffic-cars supervision_walking aiguys_test] [--still-s 4]
                                      [--pipeline aiguys_test] [--repeat 2]

For each real video a test clip (tests/motion_clips.py): ``--still-s`` seconds of its first
frame frozen with camera noise (Gaussian, 4 grey levels), every real frame, ``--still-s``
seconds of its last frame frozen, re-encoded H.264. One pass over the clip runs the motion
detector and the gate (pipeline/motion: the defaults of ``detect:``), detects every frame on the
whole frame (the baseline, and what a gated frame gets), and on the frames the gate detects
because of motion also on crops around the motion (`motion.regions`). Then the same tracking
object the track stage runs (`motion.tracking.GatedTracking`, hybrid tracker) three ways:
detection on every frame; gated on the whole frame; gated on crops.

Per clip: the moving share (real frames / all), the share of frames detected when gated,
``track_started`` per class for each way, the objects that move for 1 s or more in the baseline
(observed on >= fps frames, centre travelling >= a quarter of the box height) and how many of them
the gated runs miss (neither a detection the gated run made nor a gated track of the class
overlaps it, IoU >= 0.5, on at least half of its frames; ``missed_tracks`` counts tracks only:
two trackers fed slightly different inputs may pair boxes differently in a crowd), the motion
detector's ms per frame it looked at (capture's `FrameGate`: every other frame while things
move) and the share it looked at, and for whole frame vs crops the detector ms
per detected motion frame and the small objects found (boxes under 32x32 pixels of the frame).
Pipeline part (``--pipeline VIDEO``, a video that moves all the time): ``run_tracker.py`` on it
with ``detect.motion=off`` and ``on``, alternating, ``--repeat`` times each (Yolo-Fastest-1.1-xl
320, ONNX Runtime fp32, headless, events file, profile): pipeline FPS (median) on / off and
the events of each kind.

Filters part (``--filters VIDEO``): the video's detections on every frame tracked with no
filter, an object mask over the left half, ``min_area`` 32x32 px, and ``threshold`` 0.5 for
every class: tracks, one-frame tracks (and under 3 frames), observed track rows whose bottom centre is in the left
half, boxes under 32x32 px reaching the tracker.

Targets: detected <= moving share + 0.10; track_started per class within 10 %; none missed;
pipeline part: FPS on >= 0.95x off, events within 5 %. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ASSETS = (REPO / ".." / "shared" / "assets").resolve()
YF = ASSETS / "darknet" / "yolo-fastest-1.1_coco"
CONF = 0.25
SMALL = 32 * 32


def detector():
    from trackpipe.models.factory import build_detector
    from trackpipe.models.spec import ModelSpec
    spec = ModelSpec(cfg=YF / "yolo-fastest-1.1-xl.cfg", weights=YF / "yolo-fastest-1.1-xl.weights",
                     names=ASSETS / "darknet" / "data" / "coco.names", size=(320, 320),
                     backend="onnx", conf_threshold=CONF, nms_threshold=0.45)
    return build_detector(spec), spec


def one_pass(clip, det) -> dict:
    """Motion, gate, whole-frame and crop detections of every frame of ``clip``."""
    import cv2
    from trackpipe.pipeline.config.tree import DetectConfig
    from trackpipe.pipeline.motion.frames import FrameGate
    from trackpipe.pipeline.motion.regions import detect_regions, regions
    from trackpipe.pipeline.motion.setup import CameraMotion
    from trackpipe.pipeline.transport.messages import FrameMeta
    fg = FrameGate(CameraMotion(DetectConfig(motion="on")), "lossless", clip.fps)   # what capture runs
    cap = cv2.VideoCapture(clip.path)
    out = {"whole": [], "crops": [], "detect": [], "moving": [], "reason": [], "t_motion": [], "t_whole": [],
           "t_crops": [], "n_crops": []}
    i = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        t0 = time.perf_counter()
        msg = fg.frame(FrameMeta(i, 0, 0.0, 0.0, f.shape), f)
        t1 = time.perf_counter()
        g = fg.decision
        m_boxes = msg.motion
        whole = det.detect(f)
        t2 = time.perf_counter()
        crops, t_c, n_c = whole, None, 0
        if g.reason == "motion":
            r = regions(m_boxes, (f.shape[1], f.shape[0]))
            t3 = time.perf_counter()
            if r is not None:
                crops, n_c = detect_regions(det, f, r), len(r)
            t_c = time.perf_counter() - t3 if r is not None else t2 - t1
            out["t_whole"].append(t2 - t1)
            out["t_crops"].append(t_c)
            out["n_crops"].append(n_c)
        for k, v in (("whole", whole), ("crops", crops), ("detect", g.detect), ("moving", len(m_boxes) > 0),
                     ("reason", g.reason), ("t_motion", t1 - t0)):
            out[k].append(v)
        i += 1
    cap.release()
    out["motion_ms_looked"] = 1000.0 * fg.motion_s / max(1, fg.looked)
    out["looked"] = fg.looked / max(1, fg.frames)
    return out


def track(dets, detect, names, fps: float) -> dict:
    """The track stage's per-camera object over the frames: ``dets`` per frame, ``detect`` per
    frame (False: skipped). -> per-frame output rows and per-id summaries."""
    from trackpipe.pipeline.motion.tracking import GatedTracking
    from trackpipe.trackers.factory import build_tracker
    gt = GatedTracking(build_tracker("hybrid", score_floor=CONF))
    rows, ids = [], {}
    for i, (d, on) in enumerate(zip(dets, detect)):
        s = gt.step(d if on else None, (0, 0))
        tr = s.tracks
        rows.append(tr)
        for k, tid in enumerate(tr.track_id.tolist()):
            if tr.predicted[k]:
                continue
            st = ids.setdefault(tid, {"cls": int(tr.class_id[k]), "frames": [], "boxes": []})
            st["frames"].append(i)
            st["boxes"].append(tr.xyxy[k].astype(np.float64))
    started = Counter(names[v["cls"]] for v in ids.values())
    return {"rows": rows, "ids": ids, "started": dict(started), "stationary": gt.book.stationary_ids()}


def iou1(a, b) -> np.ndarray:
    """(4,) vs (N,4) -> (N,) IoU."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter + 1e-9)


def movers(base: dict, fps: float) -> dict:
    """Baseline ids that move for 1 s or more."""
    out = {}
    for tid, st in base["ids"].items():
        if len(st["frames"]) < fps:
            continue
        b = np.asarray(st["boxes"])
        c = (b[:, :2] + b[:, 2:]) / 2
        h = float(np.mean(b[:, 3] - b[:, 1]))
        if np.linalg.norm(np.diff(c, axis=0), axis=1).sum() >= 0.25 * h:
            out[tid] = st
    return out


def missed(mov: dict, gated: dict, dets=None) -> list:
    """Baseline movers the gated run did not see: on fewer than half of their frames a gated
    track (or, given ``dets``, a detection the gated run made) of the class overlaps them at
    IoU >= 0.5."""
    out = []
    for tid, st in mov.items():
        hits = 0
        for f, box in zip(st["frames"], st["boxes"]):
            for d in (gated["rows"][f], dets[f] if dets is not None else None):
                same = d.class_id == st["cls"] if d is not None else None
                if same is not None and same.any() and (iou1(box, d.xyxy[same].astype(np.float64)) >= 0.5).any():
                    hits += 1
                    break
        if hits < 0.5 * len(st["frames"]):
            out.append(tid)
    return out


def within(a: dict, b: dict, tol: float = 0.10) -> bool:
    """track_started per class of ``b`` within ``tol`` of ``a`` (classes with >= 1 track in either)."""
    return all(abs(b.get(k, 0) - a.get(k, 0)) <= tol * max(a.get(k, 0), b.get(k, 0)) for k in set(a) | set(b))


def bench_video(video: Path, still_s: float, det, names, tmp: Path) -> dict:
    sys.path.insert(0, str(REPO))
    from tests.motion_clips import still_moving_still
    clip = still_moving_still(video, tmp / f"{video.stem}_clip.mp4", still_s=still_s)
    p = one_pass(clip, det)
    n = len(p["detect"])
    base = track(p["whole"], [True] * n, names, clip.fps)
    gw = track(p["whole"], p["detect"], names, clip.fps)
    gc = track(p["crops"], p["detect"], names, clip.fps)
    mov = movers(base, clip.fps)
    small = {k: sum(int(((d.xyxy[:, 2] - d.xyxy[:, 0]) * (d.xyxy[:, 3] - d.xyxy[:, 1]) < SMALL).sum())
                    for d, r in zip(p[k], p["reason"]) if r == "motion") for k in ("whole", "crops")}
    return {"video": video.name, "size": list(clip.size), "frames": n, "fps": round(clip.fps, 2),
            "moving_share": round(clip.moving_share, 3),
            "motion_share": round(float(np.mean(p["moving"])), 3),
            "detected_share": round(float(np.mean(p["detect"])), 3),
            "reasons": dict(Counter(r or "skipped" for r in p["reason"])),
            "started": {"every": base["started"], "gated": gw["started"], "gated_crops": gc["started"]},
            "started_within_10pct": within(base["started"], gw["started"]),
            "started_within_10pct_crops": within(base["started"], gc["started"]),
            "movers_1s": len(mov),
            "missed": len(missed(mov, gw, [d if on else None for d, on in zip(p["whole"], p["detect"])])),
            "missed_crops": len(missed(mov, gc, [d if on else None for d, on in zip(p["crops"], p["detect"])])),
            "missed_tracks": len(missed(mov, gw)),
            "stationary_ids_end": len(gw["stationary"]),
            "motion_ms": round(p["motion_ms_looked"], 3), "motion_looked": round(p["looked"], 3),
            "whole_ms": round(1000 * float(np.mean(p["t_whole"])), 2) if p["t_whole"] else None,
            "crops_ms": round(1000 * float(np.mean(p["t_crops"])), 2) if p["t_crops"] else None,
            "crops_per_frame": round(float(np.mean(p["n_crops"])), 2) if p["n_crops"] else None,
            "crop_fallback_share": round(float(np.mean([c == 0 for c in p["n_crops"]])), 3) if p["n_crops"] else None,
            "small_found": small}


def filters_part(video: Path, det) -> dict:
    """Filters and masks on a real video's detections (every frame), the same tracking object
    as the track stage: an object mask over the left half, ``min_area`` 32x32 px (COCO's small
    objects), ``threshold`` 0.5 for every class; counts before and after."""
    import cv2

    from trackpipe.pipeline.events.geometry import anchor_points
    from trackpipe.pipeline.motion import ClassFilter, ObjectFilters, PolygonMask, ThresholdGate
    from trackpipe.pipeline.motion.tracking import GatedTracking
    from trackpipe.trackers.factory import build_tracker
    cap = cv2.VideoCapture(str(video))
    dets, size = [], None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        size = (f.shape[1], f.shape[0])
        dets.append(det.detect(f))
    cap.release()
    w, h = size
    half = np.array([[0, 0], [w / 2, 0], [w / 2, h], [0, h]], np.float64)
    classes = sorted({int(c) for d in dets for c in d.class_id})

    def run(filters=None, gate=None) -> dict:
        gt = GatedTracking(build_tracker("hybrid", score_floor=CONF), filters or ObjectFilters(), gate=gate)
        frames, small, in_mask = {}, 0, 0
        for d in dets:
            s = gt.step(d, size)
            tr = s.tracks[~s.tracks.predicted]
            for tid in tr.track_id.tolist():
                frames[tid] = frames.get(tid, 0) + 1
            in_mask += int(PolygonMask([half]).contains(anchor_points(tr.xyxy)).sum())
            b = gt.filters.apply(d, size) if gt.filters else d
            small += int((((b.xyxy[:, 2] - b.xyxy[:, 0]) * (b.xyxy[:, 3] - b.xyxy[:, 1])) < SMALL).sum())
        return {"tracks": len(frames), "one_frame_tracks": sum(v == 1 for v in frames.values()),
                "tracks_under_3_frames": sum(v < 3 for v in frames.values()),
                "observed_rows_in_left_half": in_mask, "boxes_under_32x32_to_tracker": small}

    th = {c: ClassFilter(threshold=0.5) for c in classes}
    return {"video": video.name, "none": run(),
            "object_mask_left_half": run(ObjectFilters(mask=PolygonMask([half]))),
            "min_area_1024": run(ObjectFilters({c: ClassFilter(min_area=float(SMALL)) for c in classes})),
            "threshold_0.5": run(ObjectFilters(th), ThresholdGate({c: 0.5 for c in classes}))}


def pipeline_runs(video: Path, repeat: int, tmp: Path) -> dict:
    """``run_tracker.py`` on ``video`` with gating off and on, alternating; -> FPS and events."""
    import statistics
    import subprocess
    model = ["--cfg", str(YF / "yolo-fastest-1.1-xl.cfg"), "--weights", str(YF / "yolo-fastest-1.1-xl.weights"),
             "--names", str(ASSETS / "darknet" / "data" / "coco.names"), "--size", "320", "--backend", "onnx",
             "--precision", "fp32"]
    out = {"off": [], "on": []}
    events = {}
    for k in range(repeat):
        for mode in ("off", "on"):
            prof, ev = tmp / f"p_{mode}{k}.json", tmp / f"e_{mode}{k}.jsonl"
            r = subprocess.run([sys.executable, str(REPO / "run_tracker.py"), "--source", str(video), "--headless",
                                "--events", str(ev), "--profile", str(prof), "--set", f"detect.motion={mode}",
                                "--log-level", "warning", *model], cwd=str(REPO), capture_output=True, text=True,
                               check=False)
            if r.returncode != 0:
                raise SystemExit(f"run failed ({r.returncode}): {r.stderr.strip()[-500:]}")
            p = json.loads(prof.read_text())
            out[mode].append(p["pipeline_fps"])
            evs = [json.loads(ln) for ln in ev.read_text().splitlines()]
            events[mode] = dict(Counter(e["event"] for e in evs))
            events[mode + "_detect_fraction"] = p["cameras"]["cam0"].get("detect_fraction")
    fps = {m: statistics.median(v) for m, v in out.items()}
    diff = max((abs(events["on"].get(k, 0) - events["off"].get(k, 0)) / max(1, events["off"].get(k, 0))
                for k in set(events["on"]) | set(events["off"])), default=0.0)
    return {"video": video.name, "fps_off": fps["off"], "fps_on": fps["on"], "fps_runs": out,
            "fps_ratio": round(fps["on"] / fps["off"], 3) if fps["off"] else None, "events": events,
            "events_max_diff": round(diff, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", nargs="+", default=["traffic-cars", "supervision_walking", "aiguys_test"])
    ap.add_argument("--still-s", type=float, default=4.0)
    ap.add_argument("--pipeline", default="aiguys_test", help="a video that moves all the time ('' to skip)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--filters", default="supervision_walking", help="the filters part's video ('' to skip)")
    ap.add_argument("--no-clips", action="store_true", help="skip the clips part")
    a = ap.parse_args()
    det, spec = detector()
    names = Path(spec.names).read_text().splitlines()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-motion-") as d:
        for v in [] if a.no_clips else a.videos:
            rows.append(bench_video(ASSETS / "video" / f"{v}.mp4", a.still_s, det, names, Path(d)))
        filt = filters_part(ASSETS / "video" / f"{a.filters}.mp4", det) if a.filters else None
        det.close()
        pipe = pipeline_runs(ASSETS / "video" / f"{a.pipeline}.mp4", a.repeat, Path(d)) if a.pipeline else None
    hdr = (f"{'clip':<24} {'size':>9} {'frames':>6} {'moving':>6} {'detected':>8} {'ok':>3} "
           f"{'started every/gated':<34} "
           f"{'movers':>6} {'missed':>6} {'motion ms':>9} {'whole ms':>8} {'crops ms':>8} {'small w/c':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ok = "yes" if (r["detected_share"] <= r["moving_share"] + 0.10 and r["started_within_10pct"]
                       and not r["missed"]) else "NO"
        st = f"{sum(r['started']['every'].values())}/{sum(r['started']['gated'].values())}"
        print(f"{r['video']:<24} {r['size'][0]:>4}x{r['size'][1]:<4} {r['frames']:>6} {r['moving_share']:>6.2f} "
              f"{r['detected_share']:>8.2f} {ok:>3} {st:<34} {r['movers_1s']:>6} {r['missed']:>6} "
              f"{r['motion_ms']:>9.2f} {r['whole_ms'] or 0:>8.2f} {r['crops_ms'] or 0:>8.2f} "
              f"{r['small_found']['whole']:>4}/{r['small_found']['crops']:<4}")
    if filt:
        print(f"filters on {filt['video']}: " + "; ".join(f"{k}: {v}" for k, v in filt.items() if k != "video"))
    if pipe:
        print(f"{pipe['video']}: pipeline FPS gating on / off {pipe['fps_on']:.1f} / {pipe['fps_off']:.1f} = "
              f"{pipe['fps_ratio']:.3f}x; events off {pipe['events']['off']}, on {pipe['events']['on']} "
              f"(largest difference {100 * pipe['events_max_diff']:.1f} %)")
    print(json.dumps({"bench": "motion", "rows": rows, "pipeline": pipe, "filters": filt,
                      "cpu": platform.processor() or platform.machine(),
                      "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
