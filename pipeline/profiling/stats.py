"""Per-stage measurements inside a stage process: bounded histograms and `StageStats`.

Each stage owns a `StageStats` and sends ``snapshot()`` (a `StatsSnapshot` message) to the
supervisor about once a second and once more when it exits. Snapshots are cumulative, so
the newest replaces the previous (`profiling.aggregate` adds up restarts and workers).
Memory is bounded for runs of weeks: histograms have fixed log-spaced bins (percentiles
within ~2.5%).
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, Optional

import numpy as np

from trackpipe.pipeline.transport.messages import StatsSnapshot

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
    """Measurements of one stage process. ``proc``: ms of work per item; ``wait``: ms spent
    waiting for input (or, for capture in lossless mode, for a free slot). ``counters`` are
    summed across processes and restarts (``detect_s``, ``cpu_s``...); ``gauges`` are reported
    as the newest value (``source_up``, ``frames_grabbed``, ``backend``...)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.items = 0
        self.drops = 0
        self.proc = Histogram()
        self.wait = Histogram()
        self.counters: Dict[str, float] = {}
        self.gauges: Dict[str, Any] = {}
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

    def add(self, counter: str, value: float = 1.0) -> None:
        """Add to a summed counter."""
        self.counters[counter] = self.counters.get(counter, 0) + value

    def snapshot(self) -> StatsSnapshot:
        now = time.monotonic()
        dt = now - self._window_t
        if dt > 0:
            self.window_fps = self._window_items / dt
        self._window_items, self._window_t = 0, now
        if self._cpu0 is not None:  # CPU of this process (all threads) since its first item
            self.counters["cpu_s"] = time.process_time() - self._cpu0
        return StatsSnapshot(self.stage, self.items, self.drops, self.t_first, self.t_last, self.window_fps,
                             self.proc.to_dict(), self.wait.to_dict(), dict(self.counters), dict(self.gauges),
                             {k: h.to_dict() for k, h in self.hists.items()})
