"""Run one pipeline: check the inputs (`runtime.inputs`), then run the supervisor."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional

from trackpipe.pipeline.config import Config
from trackpipe.pipeline.errors import PipelineError

from .inputs import prepare, read_names, resolve_classes
from .supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    exit_code: int
    error: Optional[str]
    report: Optional[dict]
    outcome: str


def run_pipeline(cfg: Config, spec, detector_factory: Optional[Callable] = None,
                 on_tick: Optional[Callable] = None) -> RunResult:
    """Run to completion (or stop); never raises for bad input: see ``RunResult.error``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # children: keep stderr for our own messages
    try:
        info = prepare(cfg, spec)
        names = read_names(getattr(spec, "names", None))
        resolve_classes(cfg.output.snapshot_classes, names)  # an unknown class: one line, exit 2
    except PipelineError as e:
        return RunResult(e.exit_code, str(e), None, "bad_input")
    sup = Supervisor(cfg, spec, info, names, detector_factory=detector_factory)
    sup.on_tick = on_tick
    code = sup.run()
    return RunResult(code, sup.error, sup.report, sup.outcome)


def run(cfg: Config, spec, detector_factory: Optional[Callable] = None) -> int:
    """Run and return the exit code; errors are logged as one line."""
    res = run_pipeline(cfg, spec, detector_factory)
    if res.error:
        log.error("%s", res.error)
    return res.exit_code
