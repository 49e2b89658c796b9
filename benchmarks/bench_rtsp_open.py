#!/usr/bin/env python
"""Time to the first frame after opening an RTSP stream, and the age of the frames after it,
for sets of FFmpeg capture options, against the real GStreamer test server (tests/rtsp/).

For each repetition and option set: open (``cv2.VideoCapture`` with the pipeline's open/read
timeouts), time until the first ``read()`` returns a frame, then the age of the next 10 frames by
the server's wall-clock stamps. The baseline is plain ``rtsp_transport;tcp``; the pipeline's
default (``StreamSource.ffmpeg_options``) is marked.

    python benchmarks/bench_rtsp_open.py [--repeat 4]

Prints a table (medians) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trackpipe.pipeline.config import SourceConfig  # noqa: E402
from trackpipe.pipeline.media.sources import StreamSource  # noqa: E402
from tests.rtsp.fixtures import RtspServer, decode_stamp, rtsp_available  # noqa: E402

TCP = "rtsp_transport;tcp"
LOW = TCP + "|fflags;nobuffer|flags;low_delay"
OPTIONS = {
    "tcp (baseline)": TCP,
    "tcp + nobuffer + low_delay": LOW,
    "default: + analyzeduration 0.5 s": StreamSource("rtsp://x/y", SourceConfig()).ffmpeg_options(),
    "+ analyzeduration 0.1 s, probesize 32 KiB": LOW + "|analyzeduration;100000|probesize;32768",
}


def measure(url: str, options: str) -> tuple:
    """-> (open s, first frame s, median age of the next 10 frames s or None)."""
    import cv2
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = options
    t0 = time.monotonic()
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000,
                                                 cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000])
    t_open = time.monotonic() - t0
    ok, _ = cap.read()
    t_first = time.monotonic() - t0 if ok else float("nan")
    ages = []
    for _ in range(10):
        ok, frame = cap.read()
        stamp = decode_stamp(frame) if ok else None
        if stamp is not None:
            ages.append(time.time() - stamp.wall)
    cap.release()
    return t_open, t_first, statistics.median(ages) if ages else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=4)
    args = ap.parse_args(argv)
    ok, why = rtsp_available()
    if not ok:
        print(f"error: RTSP test server unavailable: {why}", file=sys.stderr)
        return 2
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    srv = RtspServer(width=640, height=480, fps=25)
    try:
        srv.start()
        srv.wait_ready(20)
        runs = {k: [] for k in OPTIONS}
        for _ in range(args.repeat):  # interleaved: the machine's noise hits every option alike
            for name, opts in OPTIONS.items():
                runs[name].append(measure(srv.url, opts))
    finally:
        srv.close()
    rows = {}
    print(f"{'options':44} {'open s':>7} {'first frame s':>14} {'age after s':>12}")
    for name, vals in runs.items():
        ages = [a for _, _, a in vals if a is not None]
        r = {"options": OPTIONS[name], "open_s": round(statistics.median(v[0] for v in vals), 3),
             "first_frame_s": round(statistics.median(v[1] for v in vals), 3),
             "age_after_s": round(statistics.median(ages), 3) if ages else None}
        rows[name] = r
        print(f"{name:44} {r['open_s']:7.2f} {r['first_frame_s']:14.2f} "
              f"{r['age_after_s'] if r['age_after_s'] is not None else float('nan'):12.3f}")
    base = rows["tcp (baseline)"]
    dflt = rows["default: + analyzeduration 0.5 s"]
    print(json.dumps({"bench": "rtsp_open", "repeat": args.repeat, "rows": rows,
                      "default_vs_baseline_first_frame": round(dflt["first_frame_s"] / base["first_frame_s"], 3),
                      "default_vs_baseline_age": round(dflt["age_after_s"] / base["age_after_s"], 3)
                      if dflt["age_after_s"] and base["age_after_s"] else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
