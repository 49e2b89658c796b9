"""The topology of a run: one table of stages, read by everything that needs the stage list.

The supervisor builds the processes from it (`runtime.processes`), the watchdog knows when a
run is done from it (its terminal stages finished), the profile, the live table, the plot
and the metrics take their stage rows and queue depths from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple


@dataclass(frozen=True)
class StageSpec:
    """One stage. ``upstream``: whose items feed this stage's input (queue depth = upstream out -
    this stage in); ``released_by``: for capture, the stage that returns its slots (frames in
    flight = capture out - that stage's out); ``terminal``: the run is done when every terminal
    stage has seen the end of the stream; ``processes``: how many (infer workers)."""

    name: str
    upstream: Optional[str]
    downstream: Tuple[str, ...]
    processes: int = 1
    terminal: bool = False
    released_by: Optional[str] = None


# the full pipeline; `Topology.build` keeps the stages a run needs
PIPELINE: Tuple[StageSpec, ...] = (
    StageSpec("capture", None, ("infer",), released_by="render"),
    StageSpec("infer", "capture", ("track",)),
    StageSpec("track", "infer", ("render", "sink", "web")),
    StageSpec("render", "track", (), terminal=True),
    StageSpec("sink", "track", (), terminal=True),
    # the live view: fed by track without back-pressure, copies pixels without holding a slot
    StageSpec("web", "track", ()),
)


@dataclass(frozen=True)
class Topology:
    stages: Tuple[StageSpec, ...]

    @classmethod
    def build(cls, infer_workers: int = 1, sink: bool = True, web: bool = False, cameras: int = 1) -> "Topology":
        """The pipeline with ``infer_workers`` infer processes shared by ``cameras`` capture
        processes (one per camera: ``capture``, ``capture.1``, ...); the sink only when asked
        for (a MOT or events file, delivery); the web stage only with an http port; render
        always (it releases the slots)."""
        out = []
        for s in PIPELINE:
            if (s.name == "sink" and not sink) or (s.name == "web" and not web):
                continue
            if s.name == "infer":
                s = StageSpec(s.name, s.upstream, s.downstream, processes=max(1, infer_workers))
            elif s.name == "capture":
                s = StageSpec(s.name, s.upstream, s.downstream, processes=max(1, cameras), released_by=s.released_by)
            out.append(s)
        names = {s.name for s in out}
        return cls(tuple(StageSpec(s.name, s.upstream, tuple(d for d in s.downstream if d in names),
                                   s.processes, s.terminal, s.released_by) for s in out))

    @property
    def names(self) -> List[str]:
        """Stage names, in pipeline order (one row each in the profile)."""
        return [s.name for s in self.stages]

    def __contains__(self, name: str) -> bool:
        return any(s.name == name for s in self.stages)

    def spec(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def processes(self) -> List[str]:
        """Process names: a stage's first process has the stage's name, further ones ``infer.1``...
        (capture: one per camera, in camera order)"""
        return [p for s in self.stages for p in self.members(s.name)]

    def members(self, name: str) -> List[str]:
        n = self.spec(name).processes
        return [name] + [f"{name}.{i}" for i in range(1, n)]

    @property
    def groups(self) -> Dict[str, List[str]]:
        return {s.name: self.members(s.name) for s in self.stages}

    @staticmethod
    def stage_of(process: str) -> str:
        return process.split(".")[0]

    @staticmethod
    def worker_of(process: str) -> int:
        return int(process.split(".")[1]) if "." in process else 0

    @property
    def terminal(self) -> List[str]:
        return [s.name for s in self.stages if s.terminal]
