"""The supervisor's view of the stages' profiles: restarts and parallel workers merged.

Counters of a `StatsSnapshot` add up across incarnations and workers; gauges keep the
newest value; histograms merge; a stage's time span runs from its first start to its last end.
"""

from __future__ import annotations

from typing import List, Optional

from trackpipe.pipeline.transport.messages import StatsSnapshot

from .stats import Histogram


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

    def update(self, snap: StatsSnapshot) -> None:
        self.last = snap.to_dict()

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
    t = t or {"items": 0, "drops": 0, "proc": {}, "wait": {}, "counters": {}, "gauges": {}, "hists": {},
              "t_first": None, "t_last": None}
    proc, wait = Histogram.from_dict(t["proc"]), Histogram.from_dict(t["wait"])
    span = (t["t_last"] - t["t_first"]) if t["t_first"] is not None and t["t_last"] is not None else 0.0
    out = {"items": t["items"], "fps": round(t["items"] / span, 3) if span > 0 else 0.0}
    out.update(proc.summary("ms_"))
    out.update(wait.summary("wait_ms_"))
    out.update({"drops": t["drops"], "queue_depth_max": depth_max, "queue_depth_mean": round(depth_mean, 3),
                "restarts": restarts})
    out.update(t["gauges"])
    if t["items"] and t["counters"].get("cpu_s"):  # CPU time per item, all threads of the stage
        out["cpu_ms_per_item"] = round(1000.0 * t["counters"]["cpu_s"] / t["items"], 3)
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
    counters = dict(a.get("counters", {}))
    for k, v in b.get("counters", {}).items():
        counters[k] = counters.get(k, 0) + v
    out["counters"] = counters
    out["gauges"] = {**a.get("gauges", {}), **b.get("gauges", {})}
    return out
