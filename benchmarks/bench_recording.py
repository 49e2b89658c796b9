"""Recording costs: what copying a camera's packets into segments costs beside detection.

1. ``remux``: CPU per packet of the recorder alone (PyAV demux + remux into fragmented-MP4
   segments) on the 1080p H.264 asset, and the decoding it avoids: OpenCV's and PyAV's decode of
   the same packets to BGR (what a one-connection design would move into capture).
2. ``run``: run_tracker.py on the 1080p asset played as a live camera (``--realtime --loop``)
   for ``--seconds`` with an events file (a monitoring run: the sink, which hosts the recorder,
   runs in both), with ``record.mode: all`` and without, interleaved ``--repeat`` times (off, all,
   off, all, ...): CPU per frame of the whole process tree (model loading included), of the sink
   (the recorder's threads) and of render (which encodes the events' best frames), and the
   detector's (infer stage's) FPS. Reported: the median of each, and the median of the pairs'
   differences (each pair ran back to back, so a machine loaded by other work weighs on both).

    python benchmarks/bench_recording.py [--seconds 40] [--repeat 5] [--only remux|run]

Prints a table and one JSON line. The figures are in docs/recording.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = (ROOT / ".." / "shared" / "assets").resolve()
VIDEO = ASSETS / "video" / "aiguys_test.mp4"          # 1920x1080 H.264, 30 fps, 302 frames
DARKNET = ASSETS / "darknet"
MODEL = ["--cfg", str(DARKNET / "yolo-fastest-1.1_coco" / "yolo-fastest-1.1-xl.cfg"),
         "--weights", str(DARKNET / "yolo-fastest-1.1_coco" / "yolo-fastest-1.1-xl.weights"),
         "--names", str(DARKNET / "data" / "coco.names"), "--size", "320", "--backend", "onnx", "--precision", "fp32"]


def bench_remux(repeat: int = 5) -> dict:
    import av
    import cv2
    sys.path.insert(0, str(ROOT.parent))
    from trackpipe.pipeline.recording.segmenter import CameraRecorder
    out = {}
    per = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            rec = CameraRecorder("cam", str(VIDEO), Path(d), 2.0, lambda s: None, threading.Event(), live=False)
            t0 = time.thread_time()
            rec.run()
            per.append((time.thread_time() - t0) * 1000 / rec.packets)
    out["remux_ms_per_packet"] = round(min(per), 3)
    cv = []
    for _ in range(2):
        cap = cv2.VideoCapture(str(VIDEO), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        t0, n = time.process_time(), 0
        while cap.read()[0]:
            n += 1
        cv.append((time.process_time() - t0) * 1000 / n)
    out["opencv_decode_ms_per_frame"] = round(min(cv), 2)
    pa = []
    for _ in range(2):
        with av.open(str(VIDEO)) as c:
            s = c.streams.video[0]
            s.codec_context.thread_count = 1
            t0, n = time.process_time(), 0
            for f in c.decode(s):
                f.to_ndarray(format="bgr24")
                n += 1
        pa.append((time.process_time() - t0) * 1000 / n)
    out["pyav_decode_bgr_ms_per_frame"] = round(min(pa), 2)
    return out


def run_once(record: bool, seconds: float, tmp: Path) -> dict:
    prof = tmp / f"profile-{int(record)}-{time.monotonic_ns()}.json"
    args = [sys.executable, str(ROOT / "run_tracker.py"), "--source", str(VIDEO), *MODEL, "--realtime", "--loop",
            "--headless", "--duration", str(seconds), "--profile", str(prof), "--events", str(tmp / "events.jsonl")]
    rec = tmp / f"rec-{time.monotonic_ns()}"
    if record:
        args += ["--record", str(rec), "--set", "record.min_free_gb=0"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 300, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-2000:])
    rep = json.loads(prof.read_text())
    stages = rep.get("stages", {})
    frames = stages.get("capture", {}).get("items") or stages.get("infer", {}).get("items") or 0
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"record": record, "cpu_s": round(cpu, 2), "frames": frames,
            "cpu_ms_per_frame": round(cpu * 1000 / max(frames, 1), 2),
            "infer_fps": stages.get("infer", {}).get("fps"), "pipeline_fps": rep.get("pipeline_fps"),
            "sink_ms_per_frame": rep.get("cpu", {}).get("ms_per_frame", {}).get("sink"),
            "render_ms_per_frame": rep.get("cpu", {}).get("ms_per_frame", {}).get("render"),
            "events": (stages.get("sink", {}).get("recording") or {}).get("events"),
            "snapshots": (stages.get("sink", {}).get("recording") or {}).get("snapshots"),
            "best_frames_kept": stages.get("render", {}).get("best_frames_kept"),
            "snapshot_score": snapshot_scores(rec) if record else None,
            "load": round(os.getloadavg()[0], 1)} | {
        # the recorder's work comes at the camera's rate, not the pipeline's: also per second of run
        f"{k}_ms_per_s": round(v * frames / seconds, 2) for k, v in
        (("sink", rep.get("cpu", {}).get("ms_per_frame", {}).get("sink")),
         ("render", rep.get("cpu", {}).get("ms_per_frame", {}).get("render"))) if v is not None}


def snapshot_scores(rec: Path) -> dict | None:
    """What the snapshots' frames give up to the tracks' best detections: per event, its
    snapshot's score over the best detected score of its track (its stored boxes, every frame of
    tracks under 4000 rows) -> {median, p10, events} of that ratio."""
    sys.path.insert(0, str(ROOT.parent))
    from trackpipe.pipeline.recording.index import RecordIndex
    index = RecordIndex(rec)
    try:
        ratios = sorted(e.score / top for e in index.events(limit=100000, with_boxes=True)
                        if e.snapshot and (top := max((b[5] for b in e.boxes), default=0.0)) > 0)
    finally:
        index.close()
    if not ratios:
        return None
    return {"median": round(statistics.median(ratios), 4), "p10": round(ratios[len(ratios) // 10], 4),
            "events": len(ratios)}


def bench_run(seconds: float, repeat: int) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(repeat):
            for record in (False, True):
                rows.append(run_once(record, seconds, Path(d)))
                print(rows[-1], flush=True)
    off = [r for r in rows if not r["record"]]
    on = [r for r in rows if r["record"]]

    def med(rs, k):
        return round(statistics.median(r[k] for r in rs if r[k] is not None), 3)

    def paired(k):                     # median of (all - off) over the back-to-back pairs
        return round(statistics.median(b[k] - a[k] for a, b in zip(off, on) if None not in (a[k], b[k])), 3)
    out = {"runs": rows, "repeat": repeat, "seconds": seconds}
    for k in ("cpu_ms_per_frame", "sink_ms_per_frame", "render_ms_per_frame", "sink_ms_per_s", "render_ms_per_s"):
        out[k] = {"off": med(off, k), "all": med(on, k), "paired_delta": paired(k)}
    out["infer_fps"] = {"off": med(off, "infer_fps"), "all": med(on, "infer_fps"),
                        "ratio": round(med(on, "infer_fps") / med(off, "infer_fps"), 3)}
    out["best_frames_kept_per_s"] = round(statistics.median(r["best_frames_kept"] / seconds for r in on
                                                            if r["best_frames_kept"] is not None), 2) \
        if any(r["best_frames_kept"] is not None for r in on) else None
    scores = [r["snapshot_score"] for r in on if r["snapshot_score"]]
    out["snapshot_score"] = {k: round(statistics.median(s[k] for s in scores), 4)
                             for k in ("median", "p10", "events")} if scores else None
    out["load"] = med(rows, "load")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", choices=("remux", "run"))
    a = ap.parse_args()
    res = {"cpu": os.cpu_count()}
    if a.only in (None, "remux"):
        res["remux"] = bench_remux()
        r = res["remux"]
        print(f"{'1080p H.264, per frame':<40} {'ms CPU':>8}")
        for k in ("remux_ms_per_packet", "opencv_decode_ms_per_frame", "pyav_decode_bgr_ms_per_frame"):
            print(f"{k:<40} {r[k]:>8}")
    if a.only in (None, "run"):
        res["run"] = bench_run(a.seconds, a.repeat)
        r = res["run"]
        print(f"medians of {a.repeat} interleaved pairs ({a.seconds:g} s each; load average {r['load']}):")
        print(f"{'CPU ms':<26} {'off':>7} {'all':>7} {'all-off (pairs)':>16}")
        for k in ("cpu_ms_per_frame", "sink_ms_per_frame", "render_ms_per_frame", "sink_ms_per_s", "render_ms_per_s"):
            print(f"{k.replace('_ms_', ' ms ').replace('_', ' '):<26} {r[k]['off']:>7} {r[k]['all']:>7} "
                  f"{r[k]['paired_delta']:>+16}")
        print(f"detector FPS all/off: {r['infer_fps']['ratio']}")
        print(f"best frames copied by render: {r['best_frames_kept_per_s']} per second")
        if r["snapshot_score"]:
            print(f"snapshot score / the track's best detected score: median {r['snapshot_score']['median']}, "
                  f"p10 {r['snapshot_score']['p10']} ({r['snapshot_score']['events']:g} events per run)")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
