"""The supervisor's profiling: stage aggregates, queue depths, the per-second timeline, the live
table, the metrics server and the report, with the stage list taken from the topology."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from trackpipe.pipeline.common.placement import available_cores
from trackpipe.pipeline.motion.profile import motion_report
from trackpipe.pipeline.transport.messages import StatsSnapshot

from .aggregate import GroupAggregate, StageAggregate
from .report import build_report, plot_timeline, write_report

log = logging.getLogger(__name__)

IN, OUT = "in", "out"


class Profiler:
    """``topology``: the run's `runtime.topology.Topology`; ``counts(process, IN|OUT)``: items a
    process took / passed on (the stage board, read without messages)."""

    def __init__(self, topology, counts: Callable[[str, str], float], interval_s: float = 1.0,
                 cameras: Optional[List[str]] = None):
        self.topology = topology
        self.counts = counts
        self.interval_s = interval_s
        self.stages: List[str] = topology.names
        self.aggs: Dict[str, StageAggregate] = {p: StageAggregate(p) for p in topology.processes}
        self.timeline: List[dict] = []
        self._last_out = {n: 0.0 for n in self.stages}
        # per camera: frames its capture passed on per second (row key ``camera:<name>``)
        self.cameras = dict(zip(topology.members("capture"), cameras or ["cam0"])) if "capture" in topology else {}
        self._last_cam = {p: 0.0 for p in self.cameras}
        self._last_t = time.monotonic()
        self.next_sample = self._last_t + interval_s
        self.report: Optional[dict] = None

    # --- inputs -----------------------------------------------------------------------------
    def on_stats(self, snap: StatsSnapshot) -> None:
        agg = self.aggs.get(snap.stage)
        if agg is not None:
            agg.update(snap)

    def new_incarnation(self, process: str) -> None:
        self.aggs[process].new_incarnation()

    # --- views --------------------------------------------------------------------------------
    def group(self, stage: str) -> GroupAggregate:
        """The aggregate of a stage across its processes."""
        return GroupAggregate(stage, [self.aggs[p] for p in self.topology.members(stage)])

    def count(self, stage: str, field: str) -> float:
        return sum(self.counts(p, field) for p in self.topology.members(stage))

    def queue_depth(self, stage: str) -> float:
        """Items waiting at the input of ``stage`` (capture: frames in flight, i.e. slots in use)."""
        spec = self.topology.spec(stage)
        if spec.upstream is None:
            return max(0.0, self.count(stage, OUT) - (self.count(spec.released_by, OUT) if spec.released_by else 0.0))
        return max(0.0, self.count(spec.upstream, OUT) - self.count(stage, IN))

    def gauges(self, stage: str) -> dict:
        t = self.group(stage).total() if stage in self.topology else None
        return (t or {}).get("gauges", {})

    def hist(self, stage: str, name: str):
        from .stats import Histogram
        t = self.group(stage).total() if stage in self.topology else None
        return Histogram.from_dict((t or {}).get("hists", {}).get(name))

    def camera_report(self) -> dict:
        """Per camera (the profile's ``cameras`` section and the camera metrics): ``frames_in``
        (its capture's frames), ``frames_out`` (tracked), ``fps`` (tracked per second of its
        capture's run), ``drops`` (capture's plus the frames infer or track dropped),
        ``frame_age_ms`` p50/p95 (capture to tracker), the motion gating's figures
        (`motion_report`) and, with the tracker's camera-motion compensation on, ``camera_moving``
        (the share of frames in which the camera moved); live cameras: ``state`` (`source_state`)."""
        from .stats import Histogram
        trk = (self.group("track").total() or {}) if "track" in self.topology else {}
        per = (trk.get("gauges") or {}).get("cameras", {})
        out = {}
        for proc, name in self.cameras.items():
            cap = self.aggs[proc].total() or {}
            t0, t1 = cap.get("t_first"), trk.get("t_last")
            tracked = int(per.get(name, {}).get("frames", 0))
            age = Histogram.from_dict((trk.get("hists") or {}).get(f"frame_age.{name}")).percentiles()
            out[name] = {"frames_in": int(cap.get("items", 0)), "frames_out": tracked,
                         "fps": round(tracked / (t1 - t0), 3) if t0 is not None and t1 and t1 > t0 else 0.0,
                         "drops": int(cap.get("drops", 0)) + int(per.get(name, {}).get("drops", 0)),
                         "frame_age_ms": {k: age[k] for k in ("p50", "p95") if k in age}}
            out[name].update(motion_report(per.get(name, {}), tracked, (cap.get("gauges") or {})))
            state = source_state(cap.get("gauges") or {})
            if state:
                out[name]["state"] = state
            if "camera_moving" in per.get(name, {}):  # the tracker's camera-motion compensation
                out[name]["camera_moving"] = per[name]["camera_moving"]
        return out

    # --- once a second -------------------------------------------------------------------------
    def due(self, now: float) -> bool:
        return now >= self.next_sample

    def sample(self, now: float, running: bool) -> dict:
        """Per-stage FPS since the last sample; queue depths; -> the row (kept once running)."""
        dt = now - self._last_t
        row = {"t": time.time()}
        for n in self.stages:
            out = self.count(n, OUT)
            row[n] = round((out - self._last_out[n]) / dt, 3) if dt > 0 else 0.0
            self._last_out[n] = out
            self.aggs[n].sample_depth(self.queue_depth(n))  # the stage's depth, kept on its first process
        for p, name in self.cameras.items():
            out = self.counts(p, OUT)
            row[f"camera:{name}"] = round((out - self._last_cam[p]) / dt, 3) if dt > 0 else 0.0
            self._last_cam[p] = out
        if running:
            self.timeline.append(row)
            if len(self.timeline) > 100000:
                del self.timeline[::2]
        self._last_t, self.next_sample = now, now + self.interval_s
        return row

    # --- the report ---------------------------------------------------------------------------
    def build(self, meta: dict) -> dict:
        meta = dict(meta, cpu_count=os.cpu_count(), cores_usable=len(available_cores()), timeline=self.timeline)
        self.report = build_report({n: self.group(n) for n in self.stages}, meta)
        return self.report

    def write(self, path: Optional[str], plot: Optional[str]) -> Optional[str]:
        """The report (atomically) and the plot. -> None, or one line saying what could not be
        written (the caller reports it and exits non-zero)."""
        target = path
        try:
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                write_report(self.report, path)
            if plot:
                target = plot
                Path(plot).parent.mkdir(parents=True, exist_ok=True)
                plot_timeline(self.timeline, plot, self.stages)
        except OSError as e:
            return f"cannot write the profile {target}: {e.strerror or e}"
        return None


def source_state(gauges: dict) -> str:
    """A live camera's state from its capture's gauges: "starting" (no frame yet, none failed),
    "waiting" (not there, and never was), "lost" (not there now), "live"; '' for other sources
    (files)."""
    if "frames_grabbed" not in gauges:
        return ""
    if not gauges.get("source_up", 1):
        return "lost" if gauges.get("frames_grabbed") else "waiting"
    return "live" if gauges.get("frames_grabbed") else "starting"
