"""Per-stage profiling: bounded latency histograms, stage counters, the JSON report and plot.

Each stage owns a `StageStats` and sends ``snapshot()`` to the supervisor about once a
second (and once more when it exits). Snapshots are cumulative, so the newest one
replaces the previous; the supervisor adds the totals of earlier incarnations of a
restarted stage. Memory is bounded for runs of weeks: histograms have fixed log-spaced
bins (percentiles within ~2.5%).
"""

from __future__ import annotations

import json
import math
import time
from ctypes import c_double, c_int
from typing import Dict, List, Optional

import numpy as np

STAGES = ("capture", "infer", "track", "render", "sink")

# --- histogram -------------------------------------------------------------------------------
_LO_MS = 0.001
_RATIO = 1.05
_NBINS = int(math.ceil(math.log(1e6 / _LO_MS) / math.log(_RATIO))) + 1  # 1 us .. ~17 min


def _r3(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 3)


class Histogram:
    """Counts of millisecond values in log-spaced bins (ratio 1.05), plus exact min/max/sum."""

    __slots__ = ("counts", "n", "total", "min", "max")

    def __init__(self):
        self.counts = np.zeros(_NBINS, np.int64)
        self.n = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def add(self, ms: float) -> None:
        b = 0 if ms <= _LO_MS else min(_NBINS - 1, int(math.log(ms / _LO_MS) / math.log(_RATIO)) + 1)
        self.counts[b] += 1
        self.n += 1
        self.total += ms
        if ms < self.min:
            self.min = ms
        if ms > self.max:
            self.max = ms

    def merge(self, other: "Histogram") -> "Histogram":
        self.counts += other.counts
        self.n += other.n
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    def percentile(self, p: float) -> Optional[float]:
        """Value at percentile ``p`` (0-100): geometric centre of its bin, clamped to [min, max]."""
        if self.n == 0:
            return None
        rank = max(1, int(math.ceil(p / 100.0 * self.n)))
        b = int(np.searchsorted(np.cumsum(self.counts), rank))
        v = _LO_MS if b == 0 else _LO_MS * _RATIO ** (b - 0.5)
        return float(min(max(v, self.min), self.max))

    def mean(self) -> Optional[float]:
        return self.total / self.n if self.n else None

    def to_dict(self) -> dict:
        nz = np.nonzero(self.counts)[0]
        return {"b": nz.tolist(), "c": self.counts[nz].tolist(), "n": self.n, "sum": self.total,
                "min": self.min if self.n else 0.0, "max": self.max}

    @classmethod
    def from_dict(cls, d: dict) -> "Histogram":
        h = cls()
        if d:
            h.counts[np.asarray(d["b"], np.int64)] = d["c"]
            h.n, h.total, h.max = int(d["n"]), float(d["sum"]), float(d["max"])
            h.min = float(d["min"]) if h.n else math.inf
        return h

    def percentiles(self) -> dict:
        """{p50, p95, p99, max}, rounded; None where empty."""
        return {"p50": _r3(self.percentile(50)), "p95": _r3(self.percentile(95)),
                "p99": _r3(self.percentile(99)), "max": _r3(self.max if self.n else None)}

    def summary(self, prefix: str = "ms_") -> dict:
        return {f"{prefix}p50": _r3(self.percentile(50)), f"{prefix}p95": _r3(self.percentile(95)),
                f"{prefix}mean": _r3(self.mean())}


# --- per-stage statistics --------------------------------------------------------------------

class StageStats:
    """Counters of one stage process. ``proc``: ms of work per item; ``wait``: ms spent
    waiting for input (or, for capture in lossless mode, for a free slot)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.items = 0
        self.drops = 0
        self.proc = Histogram()
        self.wait = Histogram()
        self.extra: Dict[str, float] = {}
        self.hists: Dict[str, Histogram] = {}
        self.t_first: Optional[float] = None  # monotonic time of the first item's start
        self.t_last: Optional[float] = None   # ... and of the last item's end
        self._window_items = 0
        self._window_t = time.monotonic()
        self.window_fps = 0.0
        self._cpu0: Optional[float] = None

    def item(self, t_start: float, t_end: float, wait_s: float = 0.0) -> None:
        self._count(t_start, t_end)
        self.proc.add((t_end - t_start) * 1000.0)
        if wait_s >= 0:
            self.wait.add(wait_s * 1000.0)

    def count_item(self, t: float) -> None:
        """Count an item whose processing time is recorded elsewhere (``proc.add``)."""
        self._count(t, t)

    def _count(self, t_start: float, t_end: float) -> None:
        if self.t_first is None:
            self.t_first = t_start
            self._cpu0 = time.process_time()
        self.t_last = t_end
        self.items += 1
        self._window_items += 1

    def hist(self, name: str) -> Histogram:
        h = self.hists.get(name)
        if h is None:
            h = self.hists[name] = Histogram()
        return h

    def snapshot(self) -> dict:
        now = time.monotonic()
        dt = now - self._window_t
        if dt > 0:
            self.window_fps = self._window_items / dt
        self._window_items, self._window_t = 0, now
        if self._cpu0 is not None:  # CPU of this process (all threads) since its first item
            self.extra["_sum_cpu_s"] = time.process_time() - self._cpu0
        return {"stage": self.stage, "items": self.items, "drops": self.drops,
                "t_first": self.t_first, "t_last": self.t_last, "window_fps": self.window_fps,
                "proc": self.proc.to_dict(), "wait": self.wait.to_dict(), "extra": dict(self.extra),
                "hists": {k: h.to_dict() for k, h in self.hists.items()}}


class Flag:
    """A cross-process boolean with Event's set / is_set / wait, on a RawValue.

    multiprocessing.Event is built on named POSIX semaphores (``/dev/shm/sem.mp-*``) that,
    under spawn, only the resource tracker unlinks: SIGKILL the process group (tracker
    included) and they stay behind. A RawValue lives in memory that is unlinked at creation.
    """

    def __init__(self, ctx=None):
        import multiprocessing as mp
        self._v = (ctx or mp).RawValue(c_int, 0)

    def set(self) -> None:
        self._v.value = 1

    def is_set(self) -> bool:
        return bool(self._v.value)

    def wait(self, timeout: float) -> bool:
        """True once set; False after `timeout` seconds (polls every 5 ms)."""
        deadline = time.monotonic() + timeout
        while not self._v.value:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.005, left))
        return True


class StageBoard:
    """Lock-free shared counters, one row per stage: heartbeat, items in, items out, ready.

    Each field has one writer (the stage); the supervisor reads them for liveness,
    queue depths and the progress bar without waiting on messages."""

    BEAT, IN, OUT, READY, DEPTH = range(5)
    WIDTH = 5

    def __init__(self, n: int, ctx=None):
        import multiprocessing as mp
        self.n = n
        self.arr = (ctx or mp).RawArray(c_double, n * self.WIDTH)

    def set(self, i: int, field: int, value: float) -> None:
        self.arr[i * self.WIDTH + field] = value

    def get(self, i: int, field: int) -> float:
        return self.arr[i * self.WIDTH + field]

    def beat(self, i: int) -> None:
        self.arr[i * self.WIDTH + self.BEAT] = time.monotonic()

    def reset(self, i: int) -> None:
        for f in range(self.WIDTH):
            if f not in (self.IN, self.OUT):
                self.set(i, f, 0.0)


# --- aggregation in the supervisor -----------------------------------------------------------

class StageAggregate:
    """The supervisor's view of one stage across restarts."""

    def __init__(self, stage: str):
        self.stage = stage
        self.base: Optional[dict] = None   # merged totals of previous incarnations
        self.last: Optional[dict] = None   # newest snapshot of the current incarnation
        self.restarts = 0
        self.depth_max = 0.0
        self.depth_sum = 0.0
        self.depth_n = 0

    def update(self, snap: dict) -> None:
        self.last = snap

    def new_incarnation(self) -> None:
        if self.last is not None:
            self.base = _merge(self.base, self.last)
        self.last = None
        self.restarts += 1

    def sample_depth(self, depth: float) -> None:
        self.depth_max = max(self.depth_max, depth)
        self.depth_sum += depth
        self.depth_n += 1

    def total(self) -> Optional[dict]:
        if self.last is None:
            return self.base
        return _merge(self.base, self.last) if self.base else self.last

    def report(self) -> dict:
        return _report(self.total(), self.depth_max, self.depth_sum / self.depth_n if self.depth_n else 0.0,
                       self.restarts)


class GroupAggregate:
    """Several processes of one stage (infer workers) seen as one: items add up, histograms
    merge, the time span runs from the first start to the last end."""

    def __init__(self, stage: str, members: List[StageAggregate]):
        self.stage = stage
        self.members = members

    @property
    def restarts(self) -> int:
        return sum(m.restarts for m in self.members)

    def total(self) -> Optional[dict]:
        out = None
        for m in self.members:
            t = m.total()
            if t is not None:
                out = t if out is None else _merge_parallel(out, t)
        return out

    def report(self) -> dict:
        r = _report(self.total(), max(m.depth_max for m in self.members),
                    sum(m.depth_sum / m.depth_n if m.depth_n else 0.0 for m in self.members), self.restarts)
        if len(self.members) > 1:
            r["workers"] = len(self.members)
        return r


def _merge_parallel(a: dict, b: dict) -> dict:
    out = _merge(a, b)
    firsts = [t for t in (a["t_first"], b["t_first"]) if t is not None]
    lasts = [t for t in (a["t_last"], b["t_last"]) if t is not None]
    out["t_first"] = min(firsts) if firsts else None
    out["t_last"] = max(lasts) if lasts else None
    return out


def _report(t: Optional[dict], depth_max: float, depth_mean: float, restarts: int) -> dict:
    t = t or {"items": 0, "drops": 0, "proc": {}, "wait": {}, "extra": {}, "hists": {},
              "t_first": None, "t_last": None}
    proc, wait = Histogram.from_dict(t["proc"]), Histogram.from_dict(t["wait"])
    span = (t["t_last"] - t["t_first"]) if t["t_first"] is not None and t["t_last"] is not None else 0.0
    out = {"items": t["items"], "fps": round(t["items"] / span, 3) if span > 0 else 0.0}
    out.update(proc.summary("ms_"))
    out.update(wait.summary("wait_ms_"))
    out.update({"drops": t["drops"], "queue_depth_max": depth_max, "queue_depth_mean": round(depth_mean, 3),
                "restarts": restarts})
    out.update({k: v for k, v in t["extra"].items() if not k.startswith("_")})
    if t["items"] and t["extra"].get("_sum_cpu_s"):  # CPU time per item, all threads of the stage
        out["cpu_ms_per_item"] = round(1000.0 * t["extra"]["_sum_cpu_s"] / t["items"], 3)
    return out


def _merge(a: Optional[dict], b: dict) -> dict:
    if a is None:
        return dict(b)
    out = dict(b)
    out["items"] = a["items"] + b["items"]
    out["drops"] = a["drops"] + b["drops"]
    out["t_first"] = a["t_first"] if a["t_first"] is not None else b["t_first"]
    out["t_last"] = b["t_last"] if b["t_last"] is not None else a["t_last"]
    for k in ("proc", "wait"):
        out[k] = Histogram.from_dict(a[k]).merge(Histogram.from_dict(b[k])).to_dict()
    hists = dict(a.get("hists", {}))
    for k, v in b.get("hists", {}).items():
        hists[k] = Histogram.from_dict(hists[k]).merge(Histogram.from_dict(v)).to_dict() if k in hists else v
    out["hists"] = hists
    extra = dict(a.get("extra", {}))
    for k, v in b.get("extra", {}).items():
        extra[k] = extra.get(k, 0) + v if k.startswith("sum_") or k.startswith("_sum_") else v
    out["extra"] = extra
    return out


def build_report(aggs: Dict[str, StageAggregate], meta: dict) -> dict:
    """The ``--profile`` JSON: totals, pipeline vs detector-only FPS, latency, per-stage rows."""
    stages = {name: agg.report() for name, agg in aggs.items()}
    cap, inf, ren = aggs.get("capture"), aggs.get("infer"), aggs.get("render")
    frames_in = (cap.total() or {}).get("items", 0) if cap else 0
    frames_out = (ren.total() or {}).get("items", 0) if ren else 0
    t0 = (cap.total() or {}).get("t_first") if cap else None
    t1 = (ren.total() or {}).get("t_last") if ren else None
    pipeline_fps = round(frames_out / (t1 - t0), 3) if t0 is not None and t1 and t1 > t0 else 0.0
    det_fps = det_fps_worker = 0.0
    if inf and inf.total():
        ex = inf.total()["extra"]
        if ex.get("_sum_detect_s", 0) > 0:
            # frames / detect() time of one worker; the infer stage (``workers`` processes that
            # run at once) can deliver that many times as much on its own compute time
            det_fps_worker = ex.get("_sum_detect_n", 0) / ex["_sum_detect_s"]
            det_fps = det_fps_worker * len(getattr(inf, "members", [None]))
    lat = Histogram()
    if ren and ren.total():
        lat = Histogram.from_dict(ren.total().get("hists", {}).get("latency"))
    trk = aggs.get("track")
    age = Histogram.from_dict((trk.total() or {}).get("hists", {}).get("frame_age")) if trk else Histogram()
    report = {"frames_in": int(frames_in), "frames_out": int(frames_out), "pipeline_fps": pipeline_fps,
              "detector_only_fps": round(det_fps, 3), "detector_only_fps_per_worker": round(det_fps_worker, 3),
              "latency_ms": {**lat.percentiles(), "mean": _r3(lat.mean())},
              "frame_age_at_tracker_ms": age.percentiles(),
              "stages": stages}
    report.update(meta)
    return report


def write_report(report: dict, path) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


def plot_timeline(timeline: List[dict], path) -> None:
    """PNG of per-stage FPS over time (matplotlib, imported only here)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    if timeline:
        t0 = timeline[0]["t"]
        ts = [row["t"] - t0 for row in timeline]
        for stage in STAGES:
            ys = [row.get(stage, 0.0) for row in timeline]
            if any(ys):
                ax.plot(ts, ys, label=stage)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("FPS")
    ax.set_title("trackpipe per-stage throughput")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
