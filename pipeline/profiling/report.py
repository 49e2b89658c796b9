"""The ``--profile`` JSON report and the per-stage FPS plot."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Dict, List, Sequence

from .aggregate import StageAggregate
from .stats import Histogram, _r3


def build_report(aggs: Dict[str, StageAggregate], meta: dict) -> dict:
    """The ``--profile`` JSON: totals, pipeline vs detector-only FPS, latency, per-stage rows, and
    ``outputs``: every output file's state (`pipeline.media.outputs.OutputState.to_dict`), taken
    out of the rows of the stages that write them."""
    stages = {name: agg.report() for name, agg in aggs.items()}
    outputs = [o for row in stages.values() for o in (row.pop("outputs", None) or ())]
    cap, inf, ren = aggs.get("capture"), aggs.get("infer"), aggs.get("render")
    frames_in = (cap.total() or {}).get("items", 0) if cap else 0
    frames_out = (ren.total() or {}).get("items", 0) if ren else 0
    t0 = (cap.total() or {}).get("t_first") if cap else None
    t1 = (ren.total() or {}).get("t_last") if ren else None
    pipeline_fps = round(frames_out / (t1 - t0), 3) if t0 is not None and t1 and t1 > t0 else 0.0
    det_fps = det_fps_worker = run_fps = 0.0
    detector = {}
    if inf and inf.total():
        ex = inf.total()["counters"]
        workers = len(getattr(inf, "members", [None]))
        if ex.get("detect_s", 0) > 0:
            # frames / detect() time of one worker during the run; the infer stage (``workers``
            # processes that run at once) can deliver that many times as much on its compute time
            run_fps = ex.get("detect_n", 0) / ex["detect_s"] * workers
        if ex.get("solo_s", 0) > 0:
            # the detector alone on the cores infer was placed on, measured before the run started
            # (the other stages idle): pipeline_fps / detector_only_fps says what they take from it
            det_fps_worker = ex.get("solo_n", 0) / ex["solo_s"]
            source = "alone on infer's cores before the run"
        elif run_fps:
            det_fps_worker = run_fps / workers
            source = "detect() time during the run"
        det_fps = det_fps_worker * workers
        g = inf.total().get("gauges", {})
        if det_fps:
            detector = {"source": source, "backend": g.get("backend", ""), "batch": g.get("batch", 1),
                        "batch_fps": g.get("batch_fps", {}), "probe": g.get("solo_probe", ""),
                        "in_run_fps": round(run_fps, 3),
                        "mean_batch": round(ex.get("detect_n", 0) / ex["batches"], 3) if ex.get("batches") else 0.0}
            if g.get("backend_choice"):
                detector["backend_choice"] = g["backend_choice"]
    lat = Histogram()
    if ren and ren.total():
        lat = Histogram.from_dict(ren.total().get("hists", {}).get("latency"))
    trk = aggs.get("track")
    age = Histogram.from_dict((trk.total() or {}).get("hists", {}).get("frame_age")) if trk else Histogram()
    report = {"frames_in": int(frames_in), "frames_out": int(frames_out), "pipeline_fps": pipeline_fps,
              "detector_only_fps": round(det_fps, 3), "detector_only_fps_per_worker": round(det_fps_worker, 3),
              "pipeline_over_detector": round(pipeline_fps / det_fps, 3) if det_fps else 0.0,
              "detector": detector,
              "cpu": cpu_budget(aggs, frames_out, det_fps, meta),
              "latency_ms": {**lat.percentiles(), "mean": _r3(lat.mean())},
              "frame_age_at_tracker_ms": age.percentiles(),
              "outputs": outputs,
              "stages": stages}
    if "sink" in stages and stages["sink"].get("delivery"):   # per target: delivered, pending, dropped
        from trackpipe.pipeline.events.delivery import delivery_summary
        report["delivery"] = delivery_summary(stages["sink"]["delivery"])
    report.update(meta)
    return report


def cpu_budget(aggs: Dict[str, StageAggregate], frames_out: int, det_fps: float, meta: dict) -> dict:
    """Where the CPU went, per frame out: ``ms_per_frame`` per stage (process CPU time from its
    first item on, all threads, divided by the frames written), their total, and, when the stages
    share every core (no CPU placement), the most the pipeline could do on those cores,
    ``bound_fps`` = cores x 1000 / total, and ``bound_over_detector`` = bound_fps /
    detector_only_fps: the ceiling of pipeline_over_detector that decoding, drawing and encoding
    leave to the detector."""
    if not frames_out:
        return {}
    per = {}
    for name, agg in aggs.items():
        t = agg.total() or {}
        cpu_s = t.get("counters", {}).get("cpu_s")
        if cpu_s is not None:
            per[name] = round(1000.0 * cpu_s / frames_out, 3)
    if not per:
        return {}
    total = sum(per.values())
    out = {"ms_per_frame": per, "total_ms_per_frame": round(total, 3)}
    placed = bool((meta.get("placement") or {}).get("cores"))
    cores = 0 if placed else (meta.get("cores_usable") or meta.get("cpu_count") or 0)
    if cores and total > 0:
        out["cores"] = cores
        out["bound_fps"] = round(cores * 1000.0 / total, 3)
        if det_fps:
            out["bound_over_detector"] = round(min(1.0, out["bound_fps"] / det_fps), 3)
    return out


def write_report(report: dict, path) -> None:
    """``report`` as JSON at ``path``, atomically: a temporary file beside it, then renamed, so a
    reader (or a run killed meanwhile) sees the old file or the new one, never half of one.
    Raises OSError (nothing left behind) when the disk refuses it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def plot_timeline(timeline: List[dict], path, stages: Sequence[str]) -> None:
    """PNG of per-stage FPS over time (matplotlib, imported only here)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    if timeline:
        t0 = timeline[0]["t"]
        ts = [row["t"] - t0 for row in timeline]
        for stage in stages:
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
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")   # atomic, as the report
    try:
        fig.savefig(str(tmp), format=path.suffix.lstrip(".").lower() or "png")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        plt.close(fig)
