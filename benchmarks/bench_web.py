#!/usr/bin/env python
"""Live view cost and latency: MJPEG latency, first frame in a browser, detector FPS with viewers.

One process holds a ``LiveViewHub``, the ``WebServer`` (its own thread and loop) and a thread that
runs the real Yolo-Fastest detector (ONNX Runtime) + SORT on aiguys_video.mp4 frames as fast as
it can, publishing every frame with its tracks, as the pipeline's feeder would. Viewers are
separate processes reading ``/api/cameras/street/stream.mjpeg`` on 127.0.0.1 (like browsers).

1. MJPEG latency: the frame's publish time (``X-Frame-Time``) -> the viewer has parsed the whole
   part; p50/p95 over ``--latency-s`` seconds with one viewer.
2. First frame in a browser (when chromium + playwright are installed): navigation start -> the
   camera <img> has loaded its first part; median over ``--page-opens`` page opens.
3. Detector FPS with 0, 1 and 3 viewers: ``--rounds`` rounds of ``--window-s`` s per condition,
   interleaved (the order rotates each round); medians; ratio = 3 viewers / none.
4. The server's own CPU (this process's CPU time per second) with 0, 1 and 3 viewers, the same
   frames and tracks replayed at 30 fps without the detector: what viewers take from the CPUs
   whatever else runs (figure 3 is noisy where other programs share the CPUs).

The detector thread shares this process (and its GIL) with the server: a harder case than the
pipeline, where the detector runs in a process of its own.

``--pipeline``: the same figures on one real run of the whole pipeline, ``run_tracker.py --source
aiguys_video.mp4 --loop --headless --http-port 0`` (its web stage, in a process of its own; add
``--realtime`` to play the file at 30 fps as a live source instead of as fast as it decodes):
MJPEG latency from the frame's capture time to the viewer's parsed part, first frame in
chromium, and, in ``--rounds`` interleaved windows of 0 and 3 viewer processes, the detector's
FPS from the run's live profile (``/api/stats``, the supervisor's aggregate): the detector's own
speed during the run (frames / detect() time, x workers: what CPU contention takes from it) and
the infer stage's delivered FPS (frames detected per second), per window; medians.

    python benchmarks/bench_web.py [--rounds 5] [--window-s 4] [--latency-s 10] [--page-opens 5]
    python benchmarks/bench_web.py --pipeline [--realtime] [--rounds 5] [--window-s 6]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "..", "shared", "assets")
VIDEO = os.path.join(ASSETS, "video", "aiguys_video.mp4")
YF = os.path.join(ASSETS, "darknet", "yolo-fastest-1.1_coco")
STREAM = "/api/cameras/street/stream.mjpeg"


def viewer(port: int, parse: bool, ready, stop, out, path: str = STREAM) -> None:
    """A viewer process. ``parse``: read parts and send back [(seq, latency_s)]; else only drain
    the socket (as little CPU of its own as a viewer can take). Counts itself in ``ready`` once
    the first bytes arrived."""
    import socket
    if not parse:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        buf = bytearray(1 << 20)
        s.recv_into(buf)
        with ready.get_lock():
            ready.value += 1
        while not stop.is_set() and s.recv_into(buf):
            pass
        s.close()
        out.put([])
        return
    from trackpipe.pipeline.web.mjpeg import read_mjpeg_part
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    got = []
    while not stop.is_set():
        part = read_mjpeg_part(resp)
        if part is None:
            break
        if not got:
            with ready.get_lock():
                ready.value += 1
        h, _ = part
        got.append((int(h["x-frame-seq"]), time.time() - float(h["x-frame-time"])))
    conn.close()
    out.put(got)


class Detecting:
    """The detector thread: detect + track every frame as fast as it can, publish each one.
    With ``replay`` (a list of (frame, tracks)), publish those at ``replay_fps`` instead (no
    detector: what is left is the server's own cost)."""

    def __init__(self, hub, frames, detector, replay=None, replay_fps: float = 30.0):
        from trackpipe.trackers import build_tracker
        self.hub, self.frames, self.detector = hub, frames, detector
        self.replay, self.replay_fps = replay, replay_fps
        self.tracker = build_tracker("sort")
        self.count = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(30)

    def _run(self):
        seq = 0
        while self.replay and not self._stop.wait(1.0 / self.replay_fps):
            frame, tracks = self.replay[seq % len(self.replay)]
            self.hub.publish_frame("street", seq, time.time(), frame, tracks, copy=False)
            seq += 1
            self.count = seq
        while not self._stop.is_set():
            frame = self.frames[seq % len(self.frames)]
            tracks = self.tracker.update(self.detector.detect(frame), frame)
            self.hub.publish_frame("street", seq, time.time(), frame, tracks, copy=False)
            seq += 1
            self.count = seq


def fps_window(det: Detecting, seconds: float) -> tuple[float, float]:
    """(detector frames/s, this process's CPU s/s: detector + server + encoding) over ``seconds``."""
    n0, t0, c0 = det.count, time.perf_counter(), time.process_time()
    time.sleep(seconds)
    dt = time.perf_counter() - t0
    return (det.count - n0) / dt, (time.process_time() - c0) / dt


def with_viewers(port: int, k: int, fn, parse: bool = False, path: str = STREAM):
    """Run ``fn()`` once ``k`` viewer processes stream (all have had their first bytes);
    returns (fn's result, the viewers' records)."""
    ctx = mp.get_context("spawn")
    stop, out, ready = ctx.Event(), ctx.Queue(), ctx.Value("i", 0)
    procs = [ctx.Process(target=viewer, args=(port, parse, ready, stop, out, path), daemon=True) for _ in range(k)]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + 60
        while ready.value < k:
            if time.monotonic() > deadline:
                raise RuntimeError("viewers did not start within 60 s")
            time.sleep(0.05)
        result = fn()
    finally:
        stop.set()
        records = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(10)
    return result, records


def first_frame_ms(url: str, opens: int):
    """Median ms from navigation start to the camera image's first part, or None without a browser."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from browser import browser_missing, chromium
    if browser_missing():
        print(f"first frame: skipped ({browser_missing()})")
        return None, []
    out = []
    with chromium() as b:
        for _ in range(opens):
            page = b.new_page()
            page.goto(url)
            page.wait_for_function("() => { const i = document.querySelector('img.cam');"
                                   " return i && i.dataset.firstFrameMs; }", timeout=30_000)
            out.append(float(page.evaluate("() => document.querySelector('img.cam').dataset.firstFrameMs")))
            page.close()
    return statistics.median(out), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--window-s", type=float, default=4.0)
    ap.add_argument("--latency-s", type=float, default=10.0)
    ap.add_argument("--page-opens", type=int, default=5)
    ap.add_argument("--max-fps", type=float, default=15.0)
    ap.add_argument("--pipeline", action="store_true", help="measure a real run_tracker.py run (its web stage)")
    ap.add_argument("--realtime", action="store_true", help="--pipeline: play the file at its fps (live source)")
    args = ap.parse_args()
    if args.pipeline:
        return pipeline_main(args)

    from trackpipe.models.factory import build_detector
    from trackpipe.models.spec import ModelSpec
    from trackpipe.pipeline.web import LiveViewHub, WebConfig, WebServer
    from trackpipe.trackers import build_tracker

    cap = cv2.VideoCapture(VIDEO)
    frames = []
    while len(frames) < 150:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    det = build_detector(ModelSpec(cfg=os.path.join(YF, "yolo-fastest-1.1-xl.cfg"),
                                   weights=os.path.join(YF, "yolo-fastest-1.1-xl.weights"),
                                   names=os.path.join(ASSETS, "darknet", "data", "coco.names"),
                                   size=(320, 320), backend="onnx"))
    hub = LiveViewHub()
    server = WebServer(hub, WebConfig(port=0, max_fps=args.max_fps), names=det.names).start()
    feeder = Detecting(hub, frames, det).start()
    h, w = frames[0].shape[:2]
    print(f"{len(frames)} frames {w}x{h}, {os.cpu_count()} CPUs, max_fps {args.max_fps:g}, "
          f"{args.rounds} rounds x {args.window_s:g} s per condition")
    try:
        time.sleep(2.0)                                             # detector warm-up
        _, recs = with_viewers(server.port, 1, lambda: time.sleep(args.latency_s), parse=True)
        lat = np.array([ms for _, ms in recs[0]][3:]) * 1000.0     # first parts: connection set-up
        lat_p50, lat_p95 = float(np.percentile(lat, 50)), float(np.percentile(lat, 95))
        print(f"MJPEG latency, 1 viewer: p50 {lat_p50:.1f} ms, p95 {lat_p95:.1f} ms over {len(lat)} parts "
              f"({len(lat) / args.latency_s:.1f} parts/s)")

        ff_med, ff_all = first_frame_ms(server.url, args.page_opens)
        if ff_med is not None:
            print(f"first frame in chromium: median {ff_med:.0f} ms after navigation start ({ff_all})")

        conds = [0, 1, 3]
        fps = {k: [] for k in conds}
        cpu = {k: [] for k in conds}
        for r in range(args.rounds):
            order = conds[r % 3:] + conds[:r % 3]
            for k in order:
                def window():
                    time.sleep(1.0)                                 # settle after the viewers started
                    return fps_window(feeder, args.window_s)
                (f, c), _ = with_viewers(server.port, k, window) if k else (window(), [])
                fps[k].append(f)
                cpu[k].append(c)
        med = {k: statistics.median(v) for k, v in fps.items()}
        cmed = {k: statistics.median(v) for k, v in cpu.items()}
        print(f"{'viewers':>8s} {'detector fps (median)':>22s} {'x none':>7s} {'process cpu s/s':>16s}   fps per round")
        for k in conds:
            print(f"{k:8d} {med[k]:22.2f} {med[k] / med[0]:7.3f} {cmed[k]:16.2f}   {[round(x, 1) for x in fps[k]]}")
        feed = server.live.feeds.get("street")
        encodes = feed.encodes if feed else 0
        encode_ms = 1000.0 * feed.encode_s / feed.encodes if encodes else 0.0
        print(f"annotate + JPEG encode: {encode_ms:.2f} ms/frame (wall, in the server's pool) over {encodes} frames")

        # the server's own CPU: the same frames and tracks replayed at 30 fps, no detector
        feeder.stop()
        tracker = build_tracker("sort")
        replay = [(f, tracker.update(det.detect(f), f)) for f in frames]
        feeder = Detecting(hub, frames, None, replay=replay, replay_fps=30.0).start()
        srv_cpu = {k: [] for k in conds}
        for r in range(args.rounds):
            order = conds[r % 3:] + conds[:r % 3]
            for k in order:
                def window():
                    time.sleep(1.0)
                    return fps_window(feeder, args.window_s)[1]
                c, _ = with_viewers(server.port, k, window) if k else (window(), [])
                srv_cpu[k].append(c)
        smed = {k: 1000.0 * statistics.median(v) for k, v in srv_cpu.items()}
        print("server CPU, 30 fps published, no detector: " +
              ", ".join(f"{k} viewers {smed[k]:.0f} ms/s" for k in conds) +
              f" -> 3 viewers cost {smed[3] - smed[0]:.0f} ms of CPU per second")
    finally:
        feeder.stop()
        server.stop()
    print(json.dumps({"bench": "web", "video": os.path.basename(VIDEO), "cpus": os.cpu_count(),
                      "max_fps": args.max_fps, "mjpeg_latency_ms": {"p50": round(lat_p50, 1), "p95": round(lat_p95, 1)},
                      "first_frame_ms": None if ff_med is None else round(ff_med, 1),
                      "detector_fps": {str(k): round(v, 2) for k, v in med.items()},
                      "ratio_3_viewers": round(med[3] / med[0], 3), "ratio_1_viewer": round(med[1] / med[0], 3),
                      "process_cpu_s_per_s": {str(k): round(v, 3) for k, v in cmed.items()},
                      "server_only_cpu_ms_per_s": {str(k): round(v, 1) for k, v in smed.items()},
                      "encodes": encodes, "encode_ms_per_frame": round(encode_ms, 2), "rounds": args.rounds,
                      "window_s": args.window_s}))
    return 0


# --- --pipeline: one real run of the whole pipeline -----------------------------------------------

PIPE_STREAM = "/api/cameras/cam0/stream.mjpeg"   # pipeline.camera's default name


def _get_json(url: str) -> dict:
    import urllib.request
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def start_pipeline(realtime: bool, max_fps: float, log_path: str):
    """run_tracker.py on aiguys_video.mp4 in a loop with the live view on a free port -> (Popen, url)."""
    import re
    import subprocess
    cmd = [sys.executable, os.path.join(ROOT, "run_tracker.py"), "--source", VIDEO, "--loop", "--headless",
           "--cfg", os.path.join(YF, "yolo-fastest-1.1-xl.cfg"),
           "--weights", os.path.join(YF, "yolo-fastest-1.1-xl.weights"),
           "--names", os.path.join(ASSETS, "darknet", "data", "coco.names"), "--size", "320", "--backend", "onnx",
           "--http-port", "0", "--set", "profile.table=off"]
    if realtime:
        cmd.append("--realtime")
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = Path(log_path).read_text()
        m = re.search(r"live view on (http://\S+/)", text)
        if m:
            return p, m.group(1)
        if p.poll() is not None:
            raise RuntimeError(f"the run ended: {text[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError("no 'live view on' line")


def profile_point(url: str) -> dict:
    """The live profile's cumulative figures now: infer items, detect() seconds x workers, render items, wall."""
    r = _get_json(url + "api/stats")
    inf = r["stages"]["infer"]
    # detect() time during the run (x workers): the profile's detector.in_run_fps, else (older
    # profiles) detector_only_fps; its items / fps is the detect() seconds so far (/ workers)
    det = (r.get("detector") or {}).get("in_run_fps") or r.get("detector_only_fps") or 0.0
    return {"items": inf["items"], "detect_s": inf["items"] / det if det else 0.0,
            "out": r["stages"]["render"]["items"], "wall": r["wall_s"]}


def profile_window(url: str, seconds: float) -> tuple[float, float, float]:
    """(detector-only fps, infer fps, pipeline fps) over ``seconds`` from two live-profile points
    (the profile is refreshed once a second: a window is measured between two refreshes)."""
    def fresh(prev_wall):
        while True:
            pt = profile_point(url)
            if prev_wall is None or pt["wall"] > prev_wall:
                return pt
            time.sleep(0.05)
    a = fresh(profile_point(url)["wall"])
    time.sleep(seconds)
    b = fresh(a["wall"])
    dt = b["wall"] - a["wall"]
    n = b["items"] - a["items"]
    ds = b["detect_s"] - a["detect_s"]
    return (n / ds if ds > 0 else 0.0), n / dt, (b["out"] - a["out"]) / dt


def pipeline_main(args) -> int:
    import signal
    import tempfile
    log_path = os.path.join(tempfile.mkdtemp(prefix="bench_web_"), "run.log")
    p, url = start_pipeline(args.realtime, args.max_fps, log_path)
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    mode = "realtime (30 fps, latest frame)" if args.realtime else "lossless, as fast as it decodes"
    print(f"pipeline run: aiguys_video.mp4 640x360 --loop, {mode}; live view {url}; {os.cpu_count()} CPUs; "
          f"{args.rounds} rounds x {args.window_s:g} s per condition")
    try:
        deadline = time.monotonic() + 180
        while not any(c["seq"] >= 0 for c in _get_json(url + "api/cameras")["cameras"]):
            if time.monotonic() > deadline:
                raise RuntimeError("no frame on the live view")
            time.sleep(0.2)
        time.sleep(3.0)                                             # warm-up
        _, recs = with_viewers(port, 1, lambda: time.sleep(args.latency_s), parse=True, path=PIPE_STREAM)
        lat = np.array([ms for _, ms in recs[0]][3:]) * 1000.0
        lat_p50, lat_p95 = float(np.percentile(lat, 50)), float(np.percentile(lat, 95))
        print(f"MJPEG latency (capture -> viewer parsed the part), 1 viewer: p50 {lat_p50:.1f} ms, "
              f"p95 {lat_p95:.1f} ms over {len(lat)} parts ({len(lat) / args.latency_s:.1f} parts/s)")
        ff_med, ff_all = first_frame_ms(url, args.page_opens)
        if ff_med is not None:
            print(f"first frame in chromium: median {ff_med:.0f} ms after navigation start ({ff_all})")

        conds = [0, 3]
        det, inf, pipe = ({k: [] for k in conds} for _ in range(3))
        for r in range(args.rounds):
            for k in (conds if r % 2 == 0 else conds[::-1]):
                def window():
                    time.sleep(1.0)                                 # settle after the viewers started
                    return profile_window(url, args.window_s)
                (d, i, o), _ = with_viewers(port, k, window, path=PIPE_STREAM) if k else (window(), [])
                det[k].append(d)
                inf[k].append(i)
                pipe[k].append(o)
        med = {k: statistics.median(v) for k, v in det.items()}
        imed = {k: statistics.median(v) for k, v in inf.items()}
        pmed = {k: statistics.median(v) for k, v in pipe.items()}
        print(f"{'viewers':>8s} {'detector-only fps':>18s} {'x none':>7s} {'infer fps':>10s} {'x none':>7s} "
              f"{'pipeline fps':>13s}   detector-only fps per window")
        for k in conds:
            print(f"{k:8d} {med[k]:18.2f} {med[k] / med[0]:7.3f} {imed[k]:10.2f} {imed[k] / imed[0]:7.3f} "
                  f"{pmed[k]:13.2f}   {[round(x, 1) for x in det[k]]}")
        web = _get_json(url + "api/stats")["stages"]["web"]
    finally:
        os.killpg(p.pid, signal.SIGINT)
        code = p.wait(30)
    print(f"web stage: {web.get('copied')} frames copied out of the ring, {web.get('late_frames')} too late "
          f"(slot reused), {web.get('cpu_ms_per_item')} ms CPU per message; run exit code {code}")
    print(json.dumps({"bench": "web_pipeline", "video": os.path.basename(VIDEO), "cpus": os.cpu_count(),
                      "realtime": bool(args.realtime), "max_fps": args.max_fps,
                      "mjpeg_latency_ms": {"p50": round(lat_p50, 1), "p95": round(lat_p95, 1)},
                      "first_frame_ms": None if ff_med is None else round(ff_med, 1),
                      "detector_only_fps": {str(k): round(v, 2) for k, v in med.items()},
                      "infer_fps": {str(k): round(v, 2) for k, v in imed.items()},
                      "pipeline_fps": {str(k): round(v, 2) for k, v in pmed.items()},
                      "ratio_3_viewers_detector_only": round(med[3] / med[0], 3),
                      "ratio_3_viewers_infer": round(imed[3] / imed[0], 3),
                      "web_copied": web.get("copied"), "web_late": web.get("late_frames"),
                      "rounds": args.rounds, "window_s": args.window_s, "exit_code": code}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
