"""CPU placement: which cores each stage process may run on, and the detector's threads.

``pipeline.cpus``:

- ``auto`` (default), from `MIN_CORES` (4) cores on: infer gets cores of its own and capture,
  track, render and sink share the rest: ``max(1, n // 4)`` cores for them (decode, drawing,
  H.264 encoding, tracking: about one core's worth per 1080p stream at 30 fps), the other
  ``n - that`` for infer. Files with an even number (>= 2) of infer cores get two infer
  workers, each on its own half (two frames in flight scale better than intra-op threads on
  few cores); live sources get one. With fewer
  cores the plan is ``off``'s and one log line says so: on 2 cores a fixed split leaves one side
  idle (measured: see `MIN_CORES`).
- ``off``: no placement (the OS schedules; the earlier plan: files get 2 infer workers of
  ``(cores - 1) // 2`` threads).
- a mapping ``{stage: [cores]}`` (stages capture, infer, track, render, sink): those cores;
  stages not named share the cores nobody named (or all of them).

The backend's threads are sized to the cores its worker got (unless ``model.threads`` is set).
The supervisor applies a plan with ``os.sched_setaffinity`` to every thread of each stage
process right after starting it (`apply`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

from trackpipe.pipeline.errors import ConfigError

log = logging.getLogger(__name__)

STAGES = ("capture", "infer", "track", "render", "sink", "web")
# auto places stages from this many cores on. Measured on 2 cores (docs/benchmarks.md, bench_pipeline.py): a
# core of its own for infer and one for the rest leaves either side idle (yolov4-tiny: 13.4 FPS
# placed vs 19.8 unplaced; Yolo-Fastest: the 1080p decode + H.264 encode core caps it at 34 FPS),
# so with fewer cores the OS balances them and one log line says so
MIN_CORES = 4


@dataclass(frozen=True)
class Placement:
    """``cores``: process name ('capture', 'infer', 'infer.1', ...) -> cores; empty: not placed.
    ``workers``/``threads``: infer processes and backend threads per process. ``note``: the
    log line when the plan could not be followed ('' otherwise). ``mode``: auto | off | map."""

    workers: int
    threads: int
    mode: str
    cores: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    note: str = ""
    others: Tuple[int, ...] = ()   # the cores of stages the table does not name

    def cores_of(self, process: str) -> Tuple[int, ...]:
        if not self.cores:
            return ()
        return self.cores.get(process, () if process.startswith("infer") else self.others)

    @property
    def placed(self) -> bool:
        return bool(self.cores)

    def describe(self, processes: Optional[Sequence[str]] = None) -> str:
        """One line for the log, e.g. 'infer on core 0; capture,track,render,sink on core 1'."""
        if not self.cores:
            return "no CPU placement"
        groups: Dict[Tuple[int, ...], List[str]] = {}
        for p in (list(processes) if processes is not None else list(self.cores)):
            if self.cores_of(p):
                groups.setdefault(self.cores_of(p), []).append(p)
        return "; ".join(f"{','.join(ps)} on {_cores_text(c)}" for c, ps in groups.items())

    def to_dict(self, processes: Optional[Sequence[str]] = None) -> dict:
        """For the profile: the cores of ``processes`` (default: every process the plan names)."""
        names = list(processes) if processes is not None else list(self.cores)
        return {"mode": self.mode, "cores": {p: list(self.cores_of(p)) for p in names if self.cores_of(p)},
                "infer_workers": self.workers, "infer_threads": self.threads, "note": self.note}


def _cores_text(cores: Sequence[int]) -> str:
    return "core " + str(cores[0]) if len(cores) == 1 else "cores " + ",".join(map(str, cores))


def available_cores() -> List[int]:
    """The cores this process may run on (its affinity mask), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def check_cpus(value) -> Optional[str]:
    """Config check of ``pipeline.cpus``: None when valid, else what is wrong (one line). YAML 1.1
    reads ``off`` as false, which is accepted as off."""
    if value is False:
        return None
    if isinstance(value, str):
        return None if value in ("auto", "off") else f"invalid value {value!r} (allowed: auto, off, or a mapping " \
                                                     f"stage: [cores], stages {', '.join(STAGES)})"
    if not isinstance(value, dict) or not value:
        return f"expected auto, off or a mapping stage: [cores], got {value!r}"
    for k, v in value.items():
        if k not in STAGES:
            return f"unknown stage {k!r} (stages: {', '.join(STAGES)})"
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                      for c in v):
            return f"{k}: expected a list of core numbers, got {v!r}"
    return None


def _split(cores: Sequence[int], parts: int) -> List[Tuple[int, ...]]:
    """``cores`` in ``parts`` contiguous, near-equal groups."""
    n = len(cores)
    return [tuple(cores[i * n // parts:(i + 1) * n // parts]) for i in range(parts)]


def plan(cpus: Union[str, dict], mode: str, gpu: bool = False, workers: int = 0, threads: int = 0,
         available: Optional[Sequence[int]] = None, cameras: int = 1) -> Placement:
    """The placement of a run. ``mode``: lossless | latest; ``gpu``: the detector runs on a GPU
    (one infer process); ``workers``/``threads``: pipeline.infer_workers / model.threads when set
    (not 0); ``cameras``: sources of the run. Raises ConfigError for a mapping naming cores this
    process may not use.

    Unplaced (fewer than `MIN_CORES` cores, or ``off``), several live cameras give the shared
    detector every core (``n`` threads, not ``n - 1``): it is their one bottleneck, and the
    captures, the tracker and render together need a fraction of a core (bench_cameras.py)."""
    cores = list(available) if available is not None else available_cores()
    n = len(cores)
    if not threads and mode == "latest" and cameras > 1 and not gpu and not isinstance(cpus, dict) \
            and (cpus is False or cpus == "off" or n < MIN_CORES):
        threads = max(1, n // (workers or 1))
    if cpus is False or cpus == "off":
        w = workers or (2 if mode == "lossless" and not gpu and n >= 2 else 1)
        return Placement(w, threads or max(1, (n - 1) // w), "off")
    if isinstance(cpus, dict):
        return _from_map(cpus, cores, mode, gpu, workers, threads)
    if n < MIN_CORES:  # the unplaced plan (as ``off``), with the note
        w = workers or (2 if mode == "lossless" and not gpu and n >= 2 else 1)
        return Placement(w, threads or max(1, (n - 1) // w), "auto",
                         note=f"pipeline.cpus auto: {n} core{'s' if n != 1 else ''} available, the placement needs "
                              f"{MIN_CORES} (infer on its own cores, the other stages on another); stages are not "
                              f"placed")
    others = max(1, n // 4)
    return _assign(tuple(cores[:n - others]), tuple(cores[n - others:]), {}, mode, gpu, workers, threads, "auto")


def _from_map(cpus: dict, cores: List[int], mode: str, gpu: bool, workers: int, threads: int) -> Placement:
    named: Dict[str, Tuple[int, ...]] = {}
    for stage, cs in cpus.items():
        cs = [cs] if isinstance(cs, int) else list(cs)
        bad = sorted(set(cs) - set(cores))
        if bad:
            raise ConfigError(f"pipeline.cpus: {stage}: core {', '.join(map(str, bad))} is not available "
                              f"(this process may use {','.join(map(str, cores)) or 'none'})")
        named[stage] = tuple(sorted(set(cs)))
    used = {c for cs in named.values() for c in cs}
    rest = tuple(c for c in cores if c not in used) or tuple(cores)
    infer = named.pop("infer", rest)
    return _assign(infer, rest, named, mode, gpu, workers, threads, "map")


def _assign(infer: Tuple[int, ...], rest: Tuple[int, ...], named: Dict[str, Tuple[int, ...]], mode: str,
            gpu: bool, workers: int, threads: int, how: str) -> Placement:
    w = workers or (2 if mode == "lossless" and not gpu and len(infer) >= 2 and len(infer) % 2 == 0 else 1)
    out: Dict[str, Tuple[int, ...]] = {s: named.get(s, rest) for s in STAGES if s != "infer"}
    note = ""
    if w <= len(infer):
        groups = _split(infer, w)
    else:  # more workers than cores: they share them
        groups = [infer] * w
        note = (f"pipeline.cpus: {w} infer workers on {len(infer)} core(s): they share "
                f"{_cores_text(infer)}")
    for i, g in enumerate(groups):
        out["infer" if i == 0 else f"infer.{i}"] = g
    t = threads or max(1, min(len(g) for g in groups))
    return Placement(w, t, how, out, note, rest)


def gpu_backend(spec) -> bool:
    """The detector will run on an NVIDIA GPU (TensorRT / TF-TRT, or auto with TensorRT here)."""
    import importlib.util
    backend = getattr(spec, "backend", "auto")
    return backend in ("tensorrt", "tftrt") or (backend == "auto" and importlib.util.find_spec("tensorrt") is not None)


def apply(pid: int, cores: Sequence[int]) -> bool:
    """Pin every thread of process ``pid`` to ``cores`` (threads it starts later inherit it).
    -> False when the process is gone or the kernel refused."""
    if not cores:
        return True
    ok = False
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, set(cores))
            ok = True
        except (OSError, AttributeError):
            continue
    return ok


def affinity(pid: int) -> List[int]:
    """The cores process ``pid`` may run on (for tests and the profile)."""
    try:
        return sorted(os.sched_getaffinity(pid))
    except (OSError, AttributeError):
        return []


__all__ = ["Placement", "STAGES", "available_cores", "check_cpus", "plan", "apply", "affinity"]
