"""Entry points: check the inputs, then run the supervisor.

Everything that can be checked in the main process is checked before any process,
shared memory or file is created (source readable, model files present, output folders
writable), so bad input costs one ``error:`` line and leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from .config import Config
from .errors import ConfigError, PipelineError, SourceError
from .sources import SourceInfo, probe, source_kind

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    exit_code: int
    error: Optional[str]
    report: Optional[dict]
    outcome: str


def read_names(path) -> Optional[List[str]]:
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"names file not found: {path}")
    return [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]


def resolve_classes(classes, names: Optional[List[str]]):
    """``classes`` as ids or names -> tuple of ids (None keeps all)."""
    if classes is None:
        return None
    out = []
    for c in classes:
        if isinstance(c, int) or (isinstance(c, str) and c.strip().isdigit()):
            out.append(int(c))
        elif names and c in names:
            out.append(names.index(c))
        else:
            raise ConfigError(f"unknown class {c!r}" + (" (not in the names file)" if names else
                                                        " (give ids, or a names file for names)"))
    return tuple(out)


def _check_creatable(path: Path, what: str) -> None:
    """``path`` (a file, or a folder) can be written: it or its first existing ancestor is writable."""
    probe_dir = path.resolve() if path.is_dir() else path.resolve().parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not os.access(probe_dir, os.W_OK):
        raise ConfigError(f"cannot write the {what} {path}: {probe_dir} is not writable")


def _check_writable(path: Optional[str], what: str) -> None:
    if not path:
        return
    _check_creatable(Path(path), what)
    if Path(path).is_dir():
        raise ConfigError(f"the {what} {path} is a folder")


def prepare(cfg: Config, spec) -> SourceInfo:
    """Check outputs and model files, probe the source; raise PipelineError with one line."""
    o = cfg.output
    for path, what in ((o.video, "output video"), (o.mot, "MOT file"), (o.events, "events file"),
                       (cfg.profile.path, "profile"), (cfg.profile.plot, "profile plot")):
        _check_writable(path, what)
    if o.snapshots:
        d = Path(o.snapshots)
        if d.exists() and not d.is_dir():
            raise ConfigError(f"the snapshots folder {d} is a file")
        _check_creatable(d, "snapshots folder")
    if o.video and Path(o.video).suffix.lower() not in (".mp4", ".avi", ".mkv", ".mov", ".m4v"):
        raise ConfigError(f"output video {o.video}: use a .mp4, .avi, .mkv or .mov name")
    for attr in ("cfg", "weights", "names"):
        p = getattr(spec, attr, None)
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"{attr} file not found: {p}")
    return probe_source(cfg.source)


def probe_source(sc) -> SourceInfo:
    """Probe the source; an absent network camera is waited for (capped exponential backoff)
    when ``source.wait_for_stream`` is set. Nothing is created while waiting, so Ctrl-C exits
    cleanly."""
    backoff = sc.backoff_initial_s
    while True:
        try:
            return probe(sc.uri, sc)
        except SourceError as e:
            if not (sc.wait_for_stream and source_kind(sc.uri) == "stream"):
                raise
            log.warning("%s; waiting for the camera, next try in %.1fs (Ctrl-C stops)", e, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, sc.backoff_max_s)


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
    from .supervisor import Supervisor
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
