#!/usr/bin/env python
"""A new user's first run, timed: ``run_tracker.py`` on a 10 s video with an empty cache.

Each repeat runs ``run_tracker.py --source VIDEO --output OUT.mp4 --profile P.json`` (default
settings: backend and precision ``auto``) twice on a fresh empty ``$TRACKPIPE_CACHE``: first
(nothing cached: the run starts on fp32 and the backend is chosen after it, int8 calibration
included), then again (everything cached). stderr is a pseudo-terminal, as a user's, so the
progress bar is drawn. Columns, medians over ``--repeat``:

- lines: the lines left on stderr besides the progress bar (the goal: at most 3 on a first run);
- start-up: seconds from the launch to the ready line (the first frame follows at once);
- run: ready line -> end of the progress bar;
- after: the end of the bar -> exit (the backend measurement of a first run);
- bar / pipeline_fps: the bar's final rate over the profile's ``pipeline_fps`` (goal: 0.9-1.1).

The load average before and after is printed: on a shared machine compare the rows of one run.
The last line is one JSON object.

    python benchmarks/bench_first_run.py [--repeat 3] [--video PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.procs import run_on_terminal, screen_lines  # noqa: E402

VIDEO = (REPO / ".." / "shared" / "assets" / "video" / "aiguys_video.mp4").resolve()
BAR = re.compile(r"^trackpipe:")
RATE = re.compile(r"([0-9.]+)frame/s")


def one_run(video: Path, folder: Path, cache: Path) -> dict:
    stamps = []
    prof = folder / "profile.json"
    env = dict(os.environ, TRACKPIPE_CACHE=str(cache), PYTHONUNBUFFERED="1")
    code, text = run_on_terminal([sys.executable, str(REPO / "run_tracker.py"), "--source", str(video),
                                  "--output", str(folder / "out.mp4"), "--profile", str(prof)], env, timeout=900,
                                 cwd=str(REPO), stamps=stamps)
    lines = screen_lines(text)
    said = [ln for ln in lines if not BAR.match(ln)]
    seen = ""
    t_ready = t_bar_end = None
    for t, piece in stamps:
        seen += piece
        if t_ready is None and " ready in " in seen:
            t_ready = t
        if t_bar_end is None and re.search(r"trackpipe: 100%[^\n]*\n", seen):
            t_bar_end = t
    bars = [ln for ln in lines if BAR.match(ln)]
    rate = float(RATE.findall(bars[-1])[-1]) if bars and RATE.findall(bars[-1]) else None
    fps = json.loads(prof.read_text())["pipeline_fps"] if prof.is_file() else None
    t_end = stamps[-1][0] if stamps else None
    return {"exit": code, "lines": len(said), "said": said, "startup_s": t_ready,
            "run_s": round(t_bar_end - t_ready, 2) if t_bar_end and t_ready else None,
            "after_s": round(t_end - t_bar_end, 2) if t_end and t_bar_end else None,
            "bar_fps": rate, "pipeline_fps": fps,
            "bar_over_pipeline": round(rate / fps, 3) if rate and fps else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--video", type=Path, default=VIDEO)
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    rows = {"first": [], "cached": []}
    for _ in range(a.repeat):
        with tempfile.TemporaryDirectory(prefix="trackpipe-first-run-") as tmp:
            cache = Path(tmp) / "cache"
            for kind in ("first", "cached"):
                folder = Path(tmp) / kind
                folder.mkdir()
                r = one_run(a.video, folder, cache)
                rows[kind].append(r)
                print(f"{kind}: {json.dumps({k: v for k, v in r.items() if k != 'said'})}")
                if kind == "first":
                    print("  " + "\n  ".join(r["said"]))
    print(f"load average after: {os.getloadavg()}")

    def med(kind, key):
        vals = [r[key] for r in rows[kind] if r[key] is not None]
        return round(statistics.median(vals), 3) if vals else None

    keys = ("lines", "startup_s", "run_s", "after_s", "bar_fps", "pipeline_fps", "bar_over_pipeline")
    print(f"{'run':<8}" + "".join(f"{k:>19}" for k in keys))
    summary = {}
    for kind in rows:
        summary[kind] = {k: med(kind, k) for k in keys}
        print(f"{kind:<8}" + "".join(f"{str(summary[kind][k]):>19}" for k in keys))
    print(json.dumps({"bench": "first_run", "video": a.video.name, "repeat": a.repeat, "medians": summary,
                      "runs": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
