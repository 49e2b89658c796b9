"""Screen capture and overlay costs: mss grabs/s, mask_overlay, overlay and mirror redraws.

    python benchmarks/bench_screen.py [--seconds 2] [--boxes 20] [--no-qt]

Uses $DISPLAY, or starts its own Xvfb (1920x1080x24) when DISPLAY is unset. Prints a table,
then one JSON line with every figure. Note that on Xvfb a grab is a memory copy inside the X
server; a real GPU-backed desktop can be slower (compositor read-back) or faster (XShm).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rate(fn, seconds: float) -> dict:
    fn()                                            # warm-up
    n, t0 = 0, time.perf_counter()
    times = []
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        n += 1
    dt = time.perf_counter() - t0
    ms = np.array(times) * 1000
    return {"per_s": n / dt, "ms_p50": float(np.percentile(ms, 50)), "ms_p95": float(np.percentile(ms, 95)),
            "n": n}


def _random_boxes(n: int, w: int, h: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    wh = rng.uniform(40, 300, (n, 2))
    xy = rng.uniform(0, 1, (n, 2)) * (np.array([w, h]) - wh)
    return np.hstack([xy, xy + wh]).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    ap.add_argument("--boxes", type=int, default=20)
    ap.add_argument("--no-qt", action="store_true", help="skip the overlay/mirror redraw figures")
    args = ap.parse_args(argv)

    xvfb = None
    if not os.environ.get("DISPLAY"):
        from tests.xvfb import Xvfb
        xvfb = Xvfb().start()
        xvfb.activate()
    try:
        import mss
        try:
            import cv2
        except ImportError:
            cv2 = None
        from trackpipe.models.types import Tracks
        from trackpipe.pipeline.display.geometry import labels_for, overlay_rects
        from trackpipe.pipeline.display.masking import mask_overlay

        cls = getattr(mss, "MSS", None) or mss.mss
        rows, res = [], {"display": os.environ.get("DISPLAY"), "xvfb": xvfb is not None,
                         "mss": getattr(mss, "__version__", "?"), "cpus": os.cpu_count(),
                         "machine": platform.machine()}
        with cls() as sct:
            mon = sct.monitors[1]
            full = {k: mon[k] for k in ("left", "top", "width", "height")}
            small = {"left": mon["left"], "top": mon["top"], "width": 640, "height": 480}
            for name, m in (("full", full), ("640x480", small)):
                size = f"{m['width']}x{m['height']}"
                r = _rate(lambda: sct.grab(m), args.seconds)
                rows.append((f"mss grab {size} (BGRA ScreenShot)", r))
                res[f"grab_{name}"] = r
                r = _rate(lambda: np.ascontiguousarray(np.asarray(sct.grab(m))[..., :3]), args.seconds)
                rows.append((f"mss grab {size} -> BGR numpy slicing copy", r))
                res[f"grab_bgr_numpy_{name}"] = r
                if cv2 is not None:
                    r = _rate(lambda: cv2.cvtColor(np.asarray(sct.grab(m)), cv2.COLOR_BGRA2BGR),
                              args.seconds)
                    rows.append((f"mss grab {size} -> BGR cv2.cvtColor", r))
                    res[f"grab_bgr_cv2_{name}"] = r
            frame = np.ascontiguousarray(np.asarray(sct.grab(full))[..., :3])

        H, W = frame.shape[:2]
        xyxy = _random_boxes(args.boxes, W, H)
        tracks = Tracks(xyxy, np.full(len(xyxy), 0.9, np.float32), np.zeros(len(xyxy), np.int32),
                        track_id=np.arange(1, len(xyxy) + 1))
        names = ["person"]
        rects = overlay_rects(xyxy, labels_for(tracks, names), (W, H))[0]
        r = _rate(lambda: overlay_rects(xyxy, labels_for(tracks, names), (W, H)), args.seconds)
        rows.append((f"overlay_rects, {args.boxes} boxes", r))
        res["overlay_rects"] = r
        r = _rate(lambda: mask_overlay(frame, rects, inplace=False), args.seconds)
        rows.append((f"mask_overlay {W}x{H}, {args.boxes} boxes ({len(rects)} rects)", r))
        res["mask_overlay"] = r

        if not args.no_qt:
            from trackpipe.pipeline.display.qt_env import qt_app
            app = qt_app()
            from trackpipe.pipeline.display.windows import MirrorWindow, OverlayWindow
            ov = OverlayWindow((0, 0, W, H), names)
            moved = [0]

            def redraw_overlay():
                moved[0] = (moved[0] + 3) % 60
                t = Tracks(xyxy + moved[0], tracks.score, tracks.class_id, track_id=tracks.track_id)
                ov.set_tracks(t)
                app.processEvents()             # the paint of the changed region
                app.sync()                      # flushed to and processed by the X server

            r = _rate(redraw_overlay, args.seconds)
            rows.append((f"overlay set_tracks+paint+X sync, {args.boxes} moving boxes, {W}x{H}", r))
            res["overlay_redraw"] = r
            ov.hide()
            ov.close()
            mw = MirrorWindow((0, 0, W, H), names)
            mw.show()

            def redraw_mirror():
                mw.set_frame(frame, tracks)
                app.processEvents()
                app.sync()

            r = _rate(redraw_mirror, args.seconds)
            rows.append((f"mirror set_frame+paint+X sync {W}x{H} -> {mw.width()}x{mw.height()}", r))
            res["mirror_redraw"] = r
            mw.close()
            app.processEvents()
    finally:
        if xvfb is not None:
            xvfb.stop()

    print(f"{'measurement':62s} {'per s':>9s} {'ms p50':>8s} {'ms p95':>8s}")
    for name, r in rows:
        print(f"{name:62s} {r['per_s']:9.1f} {r['ms_p50']:8.2f} {r['ms_p95']:8.2f}")
    print(json.dumps({"benchmark": "screen", **{k: (round(v, 3) if isinstance(v, float) else v)
                                               for k, v in res.items() if not isinstance(v, dict)},
                      **{k: {kk: round(vv, 3) for kk, vv in v.items()}
                         for k, v in res.items() if isinstance(v, dict)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
