"""Run one pipeline: check the inputs (`runtime.inputs`), then run the supervisor."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from trackpipe.pipeline.config import Config
from trackpipe.pipeline.errors import PipelineError

from .inputs import prepare, read_names, wait_for_server
from .supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    exit_code: int
    error: Optional[str]
    report: Optional[dict]
    outcome: str
    backend_note: str = ""   # a first file run: what later runs will use (measured after this one)


def run_pipeline(cfg: Config, spec, detector_factory: Optional[Callable] = None,
                 on_tick: Optional[Callable] = None) -> RunResult:
    """Run to completion (or stop); never raises for bad input: see ``RunResult.error``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # children: keep stderr for our own messages
    from trackpipe.models.errors import ModelError, error_line

    t0 = time.monotonic()
    later = None
    try:
        cameras = prepare(cfg, spec)
        wait_for_server(cfg, spec)
        names = read_names(getattr(spec, "names", None))
        if detector_factory is None:
            spec, later = plan_auto(spec, cameras[0].info, cfg.source, defer=True)
    except KeyboardInterrupt:  # Ctrl-C while probing or waiting for the source or server, or choosing the backend
        write_startup_profile(cfg, time.monotonic() - t0)
        raise
    except PipelineError as e:
        return RunResult(e.exit_code, str(e), None, "bad_input")
    except ModelError as e:
        return RunResult(2, error_line(e, typed=False), None, "bad_input")
    sup = Supervisor(cfg, spec, cameras, names, detector_factory=detector_factory)
    sup.on_tick = on_tick
    code = sup.run()
    res = RunResult(code, sup.error, sup.report, sup.outcome)
    if later is not None and code == 0 and sup.outcome in ("completed", "quit"):
        res.backend_note = later()
    return res


def write_startup_profile(cfg: Config, wall_s: float) -> None:
    """The profile of a run stopped before any stage started: what it was doing, nothing else."""
    if not cfg.profile.path:
        return
    from pathlib import Path

    from trackpipe.pipeline.profiling.report import write_report
    try:
        Path(cfg.profile.path).parent.mkdir(parents=True, exist_ok=True)
        write_report({"outcome": "interrupted", "phase": "start-up (probing the source, choosing the backend)",
                      "frames_in": 0, "frames_out": 0, "wall_s": round(wall_s, 3), "stages": {}}, cfg.profile.path)
    except OSError as e:
        log.warning("profile not written: %s", e)


LIVE_PROBE_S = 3.0     # a live source's probe frames: at most this long to read (first use only)


FIRST_USE = "choosing the fastest accurate backend for this CPU{when}: once per model, about {s:.0f} s"


def resolve_auto(spec, info, source_cfg=None):
    """`plan_auto` measuring now, if it must: -> the spec to run."""
    return plan_auto(spec, info, source_cfg)[0]


def plan_auto(spec, info, source_cfg=None, defer: bool = False):
    """backend/precision ``auto`` measured (or read from its cache) once, here in the parent, so
    that every infer worker runs the same pair; precision auto judges reduced precision on the
    source's own frames: a file's first frames (and calibrates int8 on others of it), a live
    source's next frames, read only when no choice is cached (bf16; int8 with --calib only).
    A machine with TensorRT is left to the infer stage (its engine is built there).

    First use (nothing cached) says so in one line, the steps' own lines at DEBUG. With ``defer``,
    a file run does not wait for it: it runs at once with `auto.interim`'s fp32 pair and gets
    ``later``, a function that measures after the run and returns the line to show (''). ->
    (spec, later or None)."""
    if spec.backend not in ("auto", "onnx", "openvino") or "auto" not in (spec.backend, spec.precision):
        return spec, None
    if spec.backend == "auto":
        import importlib.util
        if importlib.util.find_spec("tensorrt") is not None:
            return spec, None
    from trackpipe.models import auto
    from trackpipe.models.factory import load_model
    from trackpipe.models.identity import is_file_model, model_name
    from trackpipe.pipeline.stages.infer import PROBE_FRAMES, read_frames

    network = load_model(spec)   # a darknet network, or an ONNX file's layout (--model-file)
    name = model_name(network)
    file_probe = info.kind == "file" and spec.precision == "auto"
    calib_source = info.uri if file_probe else None
    live_probe = (getattr(info, "live", False) and info.kind != "file" and spec.precision == "auto"
                  and source_cfg is not None)
    cached = auto.cached_choice(spec, network, file_probe or live_probe, calib_source)
    if cached is not None:
        log.debug("%s: auto -> %s", name, cached.summary())
        return auto.chosen_spec(spec, cached), None

    def choose(when: str):
        log.info(FIRST_USE.format(when=when, s=auto.first_use_seconds(spec, file_probe or live_probe, calib_source)))
        probe = read_frames(info.uri, PROBE_FRAMES) if file_probe else None
        read_probe = None
        if live_probe:
            from trackpipe.pipeline.media.sources import read_live_frames

            def read_probe():
                return read_live_frames(info.uri, source_cfg, PROBE_FRAMES, LIVE_PROBE_S)
        with auto.details_at_debug():
            choice = auto.choose(spec, network, probe, calib_source=calib_source, read_probe=read_probe)
        log.debug("%s: auto -> %s", name, choice.summary())
        return choice

    if defer and info.kind == "file" and spec.precision in ("auto", "fp32"):  # fp32 meanwhile: nothing to check
        first = auto.interim(spec)
        if not is_file_model(network):
            from trackpipe.models.onnx_export import export_onnx
            with auto.details_at_debug():  # once here, not in every infer worker at once
                export_onnx(network, spec.cache_dir)

        def later() -> str:
            try:
                choice = choose(" for the next runs")
            except KeyboardInterrupt:
                return "backend not chosen (Ctrl-C): the next run measures again"
            except Exception as e:  # noqa: BLE001  (this run's outputs are written: one line, not a failure)
                from trackpipe.models.errors import error_line
                return f"backend not chosen: {error_line(e)}"
            if choice.label == first.label:
                return f"next runs: {choice.label} too"
            return (f"next runs: {choice.label}" + (f", {choice.speedup():.1f}x {'-'.join(auto.BASELINE)}"
                                                    if choice.baseline_fps else ""))
        return auto.chosen_spec(spec, first), later
    return auto.chosen_spec(spec, choose("")), None


def run(cfg: Config, spec, detector_factory: Optional[Callable] = None) -> int:
    """Run and return the exit code; errors are logged as one line."""
    res = run_pipeline(cfg, spec, detector_factory)
    if res.error:
        log.error("%s", res.error)
    return res.exit_code
