#!/usr/bin/env python
"""Faults injected into real live runs, one at a time: what each costs and how the run recovers.

Every fault runs one real ``run_tracker.py`` subprocess (its own process group): the 640x360
video ``aiguys_video.mp4`` played in real time and looped (``--realtime --loop``, a 30 fps live
source), Yolo-Fastest-1.1-xl at 320 on ONNX Runtime fp32, headless, with ``--mot``, ``--events``
and ``--profile`` (``profile.interval_s`` 0.5), for ``--duration`` seconds after start-up.
Default settings otherwise (``pipeline.heartbeat_timeout_s`` 10, 3 restarts a minute).

Faults (``--only NAME ...`` runs some of them):

- ``none``: no fault, the baseline of every column.
- ``freeze-infer``, ``freeze-track``, ``freeze-render``: the stage process is stopped
  (SIGSTOP) for ``--freeze-s`` (15) seconds, then continued (SIGCONT, when it still exists).
- ``kill-sink``: SIGKILL of the sink stage (MOT and events writer). Are the MOT rows of the
  frames before the kill still in the file?
- ``kill-run``: SIGKILL of every process of the run at once (a power cut of the program). Are
  the MOT rows up to at most 2 s before the kill on disk?
- ``disk-full``: ``--output`` (the annotated video) on a 2 MiB tmpfs (``mount -t tmpfs``; needs
  root; unmounted afterwards), 1 MiB of it taken by a filler file: full after ~7 s of the run.
  The MOT and events files are on another disk: are they whole? Is the video playable?
- ``mqtt-down``: ``--mqtt`` to a real mosquitto (tests/mqtt_broker.py) that is started only 12 s
  after the run; does every event of the events file reach it, in order?

Columns: the run's exit code; whether it reached its ``--duration`` (profile outcome
``completed`` after at least that long); frames lost (the profile's drops of every stage plus
its frames in minus frames out: frames read from the source and never rendered); the MOT hole
(the longest stretch of frames after the fault with no MOT row, in seconds: the street has
people in every frame); events lost (track ids with a
``track_started`` but no ``track_ended`` or the other way round; for ``mqtt-down`` events of the
file that never reached the broker); seconds to recover (fault -> frames through render again, or
through the sink for ``kill-sink``, from the profile's timeline; ``mqtt-down``: broker up -> first
event received); restarts per stage; and the fault's own check. The last line is one JSON object.

    python benchmarks/bench_faults.py [--only freeze-infer kill-sink ...] [--duration 20] [--freeze-s 15]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from tests.procs import running_in_group, stage_pid  # noqa: E402

ASSETS = (REPO / ".." / "shared" / "assets").resolve()
VIDEO = ASSETS / "video" / "aiguys_video.mp4"
FPS = 30.0
YF = ASSETS / "darknet" / "yolo-fastest-1.1_coco"
MODEL = ["--cfg", str(YF / "yolo-fastest-1.1-xl.cfg"), "--weights", str(YF / "yolo-fastest-1.1-xl.weights"),
         "--names", str(ASSETS / "darknet" / "data" / "coco.names"), "--size", "320", "--backend", "onnx",
         "--precision", "fp32"]


@dataclass
class Run:
    """One live run_tracker.py subprocess and its outputs."""

    name: str
    dir: Path
    duration: float
    extra: List[str] = field(default_factory=list)
    proc: Optional[subprocess.Popen] = None
    t_launch: float = 0.0        # wall clock (time.time(), as the profile's timeline and the events)
    t_ready: float = 0.0

    @property
    def mot(self) -> Path:
        return self.dir / "tracks.txt"

    @property
    def events(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def profile(self) -> Path:
        return self.dir / "profile.json"

    @property
    def stderr(self) -> str:
        try:
            return (self.dir / "stderr.txt").read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> "Run":
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, str(REPO / "run_tracker.py"), "--source", str(VIDEO), *MODEL, "--realtime", "--loop",
                "--duration", f"{self.duration:g}", "--headless", "--mot", str(self.mot), "--events", str(self.events),
                "--profile", str(self.profile), "--set", "profile.interval_s=0.5", *self.extra]
        self.t_launch = time.time()
        self.proc = subprocess.Popen(args, cwd=str(REPO), stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "stderr.txt", "w"), start_new_session=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        return self

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while "ready in" not in self.stderr:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: run not ready ({self.proc.poll()}): {self.stderr[-800:]}")
            time.sleep(0.1)
        self.t_ready = time.time()

    def pid(self, stage: str, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while (pid := stage_pid(self.proc.pid, stage)) < 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no tp-{stage} process")
            time.sleep(0.1)
        return pid

    def settle(self, seconds: float) -> None:
        """Let the run go on for ``seconds`` (returns early if it ended)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.1)

    def wait(self) -> Optional[int]:
        """Exit code (None if it had to be killed: still running well after its duration)."""
        try:
            return self.proc.wait(self.duration + 120)
        except subprocess.TimeoutExpired:
            self.kill_all()
            return None
        finally:
            deadline = time.monotonic() + 20
            while running_in_group(self.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)

    def kill_all(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


# --- reading a run's outputs ---------------------------------------------------------------------

def read_events(path: Path) -> List[dict]:
    out = []
    try:
        for ln in path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(ln))
            except ValueError:
                pass        # a line cut by a kill
    except OSError:
        pass
    return out


def mot_frames(path: Path) -> List[int]:
    """Sorted distinct frame numbers (seq + 1) of the MOT file's complete rows."""
    frames = set()
    try:
        for ln in path.read_text(errors="replace").splitlines():
            parts = ln.split(",")
            if len(parts) == 10:
                try:
                    frames.add(int(parts[0]))
                except ValueError:
                    pass
    except OSError:
        pass
    return sorted(frames)


def seq_clock(events: List[dict], t_ready: float) -> Callable[[float], float]:
    """seq -> wall time of its capture, interpolated between the events' (seq, t) pairs (every
    event carries its frame's seq and capture time; a frame the live capture drops gets no seq,
    so seq is not a clock of its own), at the source's rate past the last event."""
    import numpy as np
    pts = sorted({(e["seq"], e["t"]) for e in events if isinstance(e.get("seq"), int) and "t" in e})
    if not pts:
        return lambda seq: t_ready + seq / FPS
    s, t = [p[0] for p in pts], [p[1] for p in pts]
    return lambda seq: float(np.interp(seq, s, t)) if seq <= s[-1] else t[-1] + (seq - s[-1]) / FPS


def unpaired(events: List[dict]) -> int:
    started = {(e.get("camera"), e["track_id"]) for e in events if e.get("event") == "track_started"}
    ended = {(e.get("camera"), e["track_id"]) for e in events if e.get("event") == "track_ended"}
    return len(started ^ ended)


def mot_hole_s(frames: List[int], clock, t_from: float, t_to: float) -> float:
    """The longest stretch of frames captured within [t_from, t_to] with no MOT row, seconds."""
    if t_to <= t_from:
        return 0.0
    inside = [f for f in frames if t_from <= clock(f - 1) <= t_to]
    edges = [t_from] + [clock(f - 1) for f in inside] + [t_to]
    return round(max(b - a for a, b in zip(edges, edges[1:])), 2)


def recover_s(profile: Optional[dict], t_fault: float, stage: str = "render") -> Optional[float]:
    """Fault -> the first timeline sample with frames through ``stage`` after it had stopped
    (0.0 when it never stopped; None when it did not come back)."""
    rows = [r for r in (profile or {}).get("timeline", []) if r["t"] > t_fault]
    stopped = next((i for i, r in enumerate(rows) if r.get(stage, 0) == 0), None)
    if stopped is None:
        return 0.0
    back = next((r for r in rows[stopped:] if r.get(stage, 0) > 0), None)
    return round(back["t"] - t_fault, 2) if back else None


def result(run: Run, rc: Optional[int], t_fault: Optional[float], watch: str = "render", **check) -> dict:
    try:
        prof = json.loads(run.profile.read_text())
    except (OSError, ValueError):
        prof = None
    events = read_events(run.events)
    clock = seq_clock(events, run.t_ready)
    frames = mot_frames(run.mot)
    t_end = clock(frames[-1] - 1) if frames else run.t_ready
    reached = bool(prof and prof.get("outcome") == "completed" and
                   prof.get("wall_s", 0) >= run.duration) if rc != -9 else None
    return {"fault": run.name, "exit_code": rc, "reached_duration": reached,
            "frames_lost": (sum(int(st.get("drops", 0)) for st in prof["stages"].values())
                            + prof["frames_in"] - prof["frames_out"]) if prof else None,
            "frames_in": prof["frames_in"] if prof else None,
            "mot_hole_s": mot_hole_s(frames, clock, t_fault or run.t_ready, t_end) if frames else None,
            "events_lost": unpaired(events), "events": len(events),
            "recover_s": recover_s(prof, t_fault, watch) if t_fault and prof else None,
            "restarts": {n: s["restarts"] for n, s in (prof or {}).get("stages", {}).items() if s.get("restarts")},
            "error": last_error(run.stderr), **check}


def last_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:") or " ERROR " in ln]
    return lines[-1][:160] if lines else ""


def kept_before(run: Run, t_kill: float) -> float:
    """Seconds between the last frame with MOT rows captured before ``t_kill`` and the kill."""
    clock = seq_clock(read_events(run.events), run.t_ready)
    before = [clock(f - 1) for f in mot_frames(run.mot) if clock(f - 1) <= t_kill]
    return round(t_kill - max(before), 2) if before else float("inf")


# --- the faults -----------------------------------------------------------------------------------

def fault_none(tmp: Path, a) -> dict:
    run = Run("none", tmp / "none", a.duration).start()
    run.wait_ready()
    return result(run, run.wait(), None)


def _freeze(stage: str):
    def fault(tmp: Path, a) -> dict:
        run = Run(f"freeze-{stage}", tmp / f"freeze-{stage}", a.duration + a.freeze_s).start()
        run.wait_ready()
        run.settle(3)
        fd = os.pidfd_open(run.pid(stage))     # signals this process only, never a reused pid
        t_fault = time.time()
        signal.pidfd_send_signal(fd, signal.SIGSTOP)
        run.settle(a.freeze_s)
        try:
            signal.pidfd_send_signal(fd, signal.SIGCONT)
            alive = True
        except ProcessLookupError:
            alive = False                       # replaced by the watchdog
        os.close(fd)
        hung = re.search(rf"stage '{stage}' hung \(no heartbeat for ([\d.]+)s\)", run.stderr)
        return result(run, run.wait(), t_fault, check=f"killed as hung after {hung[1]}s" if hung else
                      ("still alive, continued" if alive else "gone (not as hung)"))
    fault.__name__ = f"fault_freeze_{stage}"
    return fault


def fault_kill_sink(tmp: Path, a) -> dict:
    run = Run("kill-sink", tmp / "kill-sink", a.duration).start()
    run.wait_ready()
    run.settle(6)
    pid = run.pid("sink")
    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)
    rc = run.wait()
    kept = kept_before(run, t_kill)
    return result(run, rc, t_kill, watch="sink", check=f"MOT rows up to {kept:.2f}s before the kill")


def fault_kill_run(tmp: Path, a) -> dict:
    run = Run("kill-run", tmp / "kill-run", a.duration).start()
    run.wait_ready()
    run.settle(min(8.0, a.duration / 2))
    t_kill = time.time()
    os.killpg(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    kept = kept_before(run, t_kill)
    ev = [e["t"] for e in read_events(run.events) if isinstance(e.get("t"), (int, float)) and e["t"] <= t_kill]
    r = result(run, run.proc.returncode, None, check=f"MOT rows up to {kept:.2f}s before the kill "
                                                     f"({'ok' if kept <= 2.0 else 'more than 2 s lost'}); "
                                                     f"last event {t_kill - max(ev):.2f}s before it" if ev else
                                                     "; no event on disk")
    r["mot_hole_s"] = r["events_lost"] = None   # the run ends at the kill: its open tracks never end
    return r


def fault_disk_full(tmp: Path, a) -> dict:
    if os.geteuid() != 0:
        return {"fault": "disk-full", "skipped": "mount -t tmpfs needs root"}
    mnt = tmp / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        # the 640x360 video takes ~2 MiB in ~15 s: a filler leaves it 1 MiB, full after ~7 s
        (mnt / "filler").write_bytes(b"\0" * (1 << 20))
        video = mnt / "annotated.mp4"
        run = Run("disk-full", tmp / "disk-full", a.duration, ["--output", str(video)]).start()
        run.wait_ready()
        deadline = time.monotonic() + a.duration + 60
        while os.statvfs(mnt).f_bavail > 0 and run.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        t_full = time.time()
        rc = run.wait()
        frames = _video_frames(video)
        said = [ln for ln in run.stderr.splitlines()
                if re.search(r"WARNING|ERROR|error:", ln) and re.search(r"space|disk|full", ln, re.I)]
        return result(run, rc, t_full, check=f"video {video.stat().st_size if video.exists() else 0} B, "
                      f"{frames} frames readable; {len(said)} line(s) about it"
                      + (f": {said[0].split(' WARNING ', 1)[-1].split(' ERROR ', 1)[-1][:90]}" if said else ""))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _video_frames(path: Path) -> int:
    import cv2
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.isOpened() and cap.read()[0]:
        n += 1
    cap.release()
    return n


def fault_mqtt_down(tmp: Path, a) -> dict:
    from mqtt_broker import MosquittoBroker, Subscriber, mosquitto_available
    ok, why = mosquitto_available()
    if not ok:
        return {"fault": "mqtt-down", "skipped": why}
    broker = MosquittoBroker()
    sub = None
    try:
        run = Run("mqtt-down", tmp / "mqtt-down", a.duration, ["--mqtt", broker.url]).start()
        run.wait_ready()
        while time.time() < run.t_launch + a.broker_down_s:
            if run.proc.poll() is not None:
                break
            time.sleep(0.05)
        broker.start()
        t_up = time.monotonic()                 # the subscriber stamps messages with monotonic time
        sub = Subscriber(broker.port, ["trackpipe/+/events"])
        sub.subscribed.wait(10)
        rc = run.wait()
        time.sleep(2)                           # anything still in flight
        got = [(m.t, m.json()) for m in list(sub.messages) if m.topic.endswith("/events")]
        key = lambda e: (e.get("event"), e.get("camera"), e.get("track_id"), e.get("seq"))  # noqa: E731
        want = [key(e) for e in read_events(run.events)]
        have = [key(e) for _, e in got]
        missing = len(set(want) - set(have))
        in_order = [k for k in have if k in set(want)] == [k for k in want if k in set(have)]
        r = result(run, rc, None, check=f"{len(have)}/{len(want)} events at the broker, "
                                         f"{'in order' if in_order else 'OUT OF ORDER'}, {len(have) - len(set(have))} "
                                         f"duplicate(s)")
        r["events_lost"] = missing
        r["recover_s"] = round(got[0][0] - t_up, 2) if got else None
        return r
    finally:
        if sub is not None:
            sub.client.loop_stop()
            sub.client.disconnect()
        broker.close()


FAULTS: Dict[str, Callable] = {
    "none": fault_none,
    "freeze-infer": _freeze("infer"),
    "freeze-track": _freeze("track"),
    "freeze-render": _freeze("render"),
    "kill-sink": fault_kill_sink,
    "kill-run": fault_kill_run,
    "disk-full": fault_disk_full,
    "mqtt-down": fault_mqtt_down,
}


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(FAULTS), metavar="NAME",
                    help=f"run only these faults ({', '.join(FAULTS)})")
    ap.add_argument("--duration", type=float, default=20.0, help="run length after start-up, s (freezes add theirs)")
    ap.add_argument("--freeze-s", type=float, default=15.0, help="how long a stage stays stopped")
    ap.add_argument("--broker-down-s", type=float, default=12.0,
                    help="mqtt-down: the broker starts this long after the run")
    ap.add_argument("--keep", metavar="DIR", help="keep every run's outputs under DIR")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as d:
        tmp = Path(a.keep or d)
        tmp.mkdir(parents=True, exist_ok=True)
        for name in a.only or list(FAULTS):
            t0 = time.monotonic()
            try:
                row = FAULTS[name](tmp, a)
            except Exception as e:  # one fault's failure is a row, not the end of the table
                row = {"fault": name, "failed": f"{type(e).__name__}: {e}"[:300]}
            row["bench_s"] = round(time.monotonic() - t0, 1)
            rows.append(row)
            print(f"{name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    cols = [("fault", 14), ("exit_code", 4), ("reached_duration", 7), ("frames_lost", 6), ("mot_hole_s", 8),
            ("events_lost", 6), ("recover_s", 9), ("restarts", 16)]
    heads = ["fault", "rc", "to end", "lost", "MOT hole", "ev lost", "recover s", "restarts"]
    hdr = " ".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (h, (_, w)) in enumerate(zip(heads, cols))) + "  check"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if "skipped" in r or "failed" in r:
            print(f"{r['fault']:<14} {r.get('skipped') or 'FAILED ' + r['failed']}")
            continue
        rs = ",".join(f"{k}:{v}" for k, v in r["restarts"].items()) or "-"
        vals = [r["fault"], r["exit_code"], r["reached_duration"], r["frames_lost"], r["mot_hole_s"],
                r["events_lost"], r["recover_s"], rs]
        line = " ".join(f"{_fmt(v):>{w}}" if i else f"{_fmt(v):<{w}}" for i, (v, (_, w)) in enumerate(zip(vals, cols)))
        print(f"{line}  {r.get('check', '')}{'; ' + r['error'] if r.get('error') else ''}")
    print(json.dumps({"bench": "faults", "duration_s": a.duration, "freeze_s": a.freeze_s, "rows": rows,
                      "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
