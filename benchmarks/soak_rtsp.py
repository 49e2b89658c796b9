"""Soak benchmark (not a CI test): run_tracker.py --headless on the real RTSP test server for a
long time with camera faults injected, sampling the pipeline's resources.

    python benchmarks/soak_rtsp.py --minutes 60 [--fault-every 180] [--file VIDEO|none]

The server streams a real video in a loop (default ../shared/assets/video/aiguys_video.mp4: people,
cars; so detection, tracking, events and snapshots of new ``car`` tracks all run), or with
``--file none`` its synthetic stamped pattern. Faults alternate: SIGKILL of the server + restart
5 s later, SIGSTOP for 10 s + SIGCONT. Every
``--sample-every`` s (10): RSS, open fds and threads of every pipeline process (psutil when
installed, else /proc) and the /dev/shm + temp entries of the run. At the end: a table (first,
last, max, linear-fit slope per hour) and one JSON line; everything is stopped cleanly (SIGINT).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ASSETS = (ROOT / ".." / "shared" / "assets").resolve()
YF = ASSETS / "darknet" / "yolo-fastest-1.1_coco"

from tests.procs import running_in_group  # noqa: E402
from tests.rtsp.fixtures import RtspServer, rtsp_available  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_sample(pid: int):
    """-> (name, rss MiB, fds, threads) or None if gone."""
    try:
        import psutil
        p = psutil.Process(pid)
        with p.oneshot():
            return p.name(), p.memory_info().rss / 2 ** 20, p.num_fds(), p.num_threads()
    except ImportError:
        pass
    except Exception:
        return None
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        threads = len(os.listdir(f"/proc/{pid}/task"))
        return name, int(statm[1]) * PAGE / 2 ** 20, fds, threads
    except OSError:
        return None


def shm_entries(pgid: int) -> int:
    pat = f"trackpipe_{pgid}_*"
    return len(glob.glob(os.path.join("/dev/shm", pat)) + glob.glob(os.path.join(tempfile.gettempdir(), pat)))


def slope_per_hour(ts, ys) -> float:
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return 0.0 if var == 0 else sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var * 3600.0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--fault-every", type=float, default=180.0, help="seconds between faults")
    ap.add_argument("--sample-every", type=float, default=10.0)
    ap.add_argument("--workdir", default=None, help="events/profile/logs here (default: a temp folder)")
    ap.add_argument("--file", default=str(ASSETS / "video" / "aiguys_video.mp4"),
                    help="video the server loops ('none': the synthetic live pattern)")
    ap.add_argument("--snapshot-classes", default="car", help="snapshots of new tracks of these classes")
    args = ap.parse_args(argv)
    # stop early with Ctrl-C or SIGTERM: the pipeline and the server are still stopped and the
    # summary printed (set explicitly: a background job may have inherited SIGINT ignored)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    ok, why = rtsp_available()
    if not ok:
        print(f"error: RTSP test server unavailable: {why}", file=sys.stderr)
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="soak_rtsp_"))
    work.mkdir(parents=True, exist_ok=True)
    srv = RtspServer(width=640, height=480, fps=25) if args.file == "none" else RtspServer(file=args.file)
    srv.start()
    srv.wait_ready(20)
    cmd = [sys.executable, str(ROOT / "run_tracker.py"), "--source", srv.url, "--headless",
           "--cfg", str(YF / "yolo-fastest-1.1-xl.cfg"), "--weights", str(YF / "yolo-fastest-1.1-xl.weights"),
           "--names", str(ASSETS / "darknet" / "data" / "coco.names"), "--size", "320", "--backend", "onnx",
           "--events", str(work / "events.jsonl"), "--profile", str(work / "profile.json"),
           "--mot", str(work / "mot.txt"), "--snapshots", str(work / "snaps"),
           "--snapshot-classes", args.snapshot_classes]
    p = subprocess.Popen(cmd, cwd=str(ROOT), stdout=open(work / "stdout.txt", "w"),
                         stderr=open(work / "stderr.txt", "w"), start_new_session=True)
    pgid = p.pid
    print(f"soak: {args.minutes:g} min, fault every {args.fault_every:g}s, server {srv.url}, pipeline pid {pgid}, "
          f"logs in {work}", flush=True)
    samples, faults, died = [], [], None
    t0 = time.monotonic()
    end = t0 + args.minutes * 60.0
    next_sample, next_fault, kind = t0 + 15.0, t0 + args.fault_every, 0   # first sample after start-up
    pending = None  # (time, action) of the second half of a fault
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if p.poll() is not None:
                died = p.returncode
                break
            if pending and now >= pending[0]:
                if pending[1] == "start":
                    srv.start()
                    srv.wait_ready(20)
                else:
                    srv.resume()
                pending = None
            elif pending is None and now >= next_fault:
                if kind % 2 == 0:
                    srv.kill()
                    pending = (now + 5.0, "start")
                    faults.append(("kill+restart", round(now - t0, 1)))
                else:
                    srv.freeze()
                    pending = (now + 10.0, "resume")
                    faults.append(("freeze+resume", round(now - t0, 1)))
                kind += 1
                next_fault = now + args.fault_every
            if now >= next_sample:
                procs = {}
                for pid in running_in_group(pgid):
                    s = proc_sample(pid)
                    if s:  # the supervisor is "main"; its helpers (resource tracker) are "python"
                        procs[f"{'main' if pid == pgid else s[0]}:{pid}"] = s[1:]
                row = {"t": now - t0, "procs": len(procs),
                       "rss_total_mib": sum(v[0] for v in procs.values()),
                       "fds_total": sum(v[1] for v in procs.values()),
                       "threads_total": sum(v[2] for v in procs.values()),
                       "shm_entries": shm_entries(pgid),
                       "snapshots": len(os.listdir(work / "snaps")) if (work / "snaps").is_dir() else 0}
                for k, (rss, _, _) in procs.items():
                    key = f"rss_mib[{k.split(':')[0]}]"
                    row[key] = row.get(key, 0.0) + rss
                samples.append(row)
                print(f"{row['t']:7.0f}s procs {row['procs']} rss {row['rss_total_mib']:.0f} MiB "
                      f"fds {row['fds_total']} threads {row['threads_total']} shm {row['shm_entries']}", flush=True)
                next_sample = now + args.sample_every
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("stopped early", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        if pending and pending[1] == "start" and not srv.running():
            srv.start()
        srv.resume()
        t_sig = time.monotonic()
        code = died
        if p.poll() is None:
            os.killpg(pgid, signal.SIGINT)
            try:
                code = p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                code = p.wait(5)
        while running_in_group(pgid) and time.monotonic() - t_sig < 10:
            time.sleep(0.05)
        stop_s = time.monotonic() - t_sig
        orphans = running_in_group(pgid)
        left = shm_entries(pgid)
        srv.close()

    metrics = sorted({k for r in samples for k in r if k != "t"})
    summary = {}
    print(f"\n{'metric':34} {'first':>9} {'last':>9} {'max':>9} {'slope/h':>10}")
    for m in metrics:
        pts = [(r["t"], r[m]) for r in samples if m in r]
        ts, ys = [a for a, _ in pts], [b for _, b in pts]
        s = {"first": round(ys[0], 2), "last": round(ys[-1], 2), "max": round(max(ys), 2),
             "slope_per_h": round(slope_per_hour(ts, ys), 2)}
        summary[m] = s
        print(f"{m:34} {s['first']:9.1f} {s['last']:9.1f} {s['max']:9.1f} {s['slope_per_h']:10.1f}")
    events = []
    try:
        events = [json.loads(ln)["event"] for ln in (work / "events.jsonl").read_text().splitlines()]
    except (OSError, ValueError):
        pass
    try:
        prof = json.loads((work / "profile.json").read_text())
        frames = {"frames_in": prof.get("frames_in"), "frames_out": prof.get("frames_out"),
                  "restarts": {k: v.get("restarts") for k, v in prof.get("stages", {}).items()}}
    except (OSError, ValueError):
        frames = {}
    counts = {e: events.count(e) for e in ("track_started", "track_ended")}
    result = {"minutes": round((time.monotonic() - t0) / 60.0, 2), "samples": len(samples), "faults": faults,
              "source_lost": events.count("source_lost"), "source_restored": events.count("source_restored"), **counts,
              "pipeline_died": died, "exit_code": code, "stop_s": round(stop_s, 2), "orphans": orphans,
              "shm_left": left, **frames, "metrics": summary}
    print(json.dumps(result))
    return 0 if died is None and not orphans and not left and code in (0, 130) else 1


if __name__ == "__main__":
    sys.exit(main())
