"""Stage processes built from the topology table: one builder per stage, nothing else.

`ProcessFactory.make(process_name, incarnation)` returns an unstarted `StageProcess`; an
incarnation above 0 is a restart (the tracker numbers its ids from ``incarnation * 1e6``,
the video continues in ``out.partN.mp4``, the sink appends).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from trackpipe.pipeline.config import Config
from trackpipe.pipeline.media.sources import SourceInfo
from trackpipe.pipeline.stages.base import RunContext, StageProcess

from .inputs import resolve_classes
from .topology import Topology


@dataclass
class RunPlan:
    """What the parent decided before starting anything (picklable parts go to the stages)."""

    cfg: Config
    spec: object                        # models.spec.ModelSpec
    info: SourceInfo
    names: Optional[List[str]]
    mode: str                           # lossless | latest
    topology: Topology
    infer_threads: int
    display: str                        # window | overlay | mirror | none
    region: Optional[Tuple[int, int, int, int]] = None
    detector_factory: Optional[Callable] = None   # picklable spec -> Detector (tests)
    placement: Optional[object] = None            # runtime.placement.Placement


class ProcessFactory:
    def __init__(self, plan: RunPlan, rc: RunContext):
        self.plan = plan
        self.rc = rc
        self._builders = {"capture": self._capture, "infer": self._infer, "track": self._track,
                          "render": self._render, "sink": self._sink, "web": self._web}

    def make(self, process: str, incarnation: int = 0) -> StageProcess:
        return self._builders[Topology.stage_of(process)](process, incarnation)

    def _capture(self, process: str, incarnation: int) -> StageProcess:
        from trackpipe.pipeline.stages.capture import CaptureProcess
        p, c = self.plan, self.plan.cfg
        return CaptureProcess(self.rc, p.info.uri, c.source, p.info, c.pipeline.max_frames, c.pipeline.reclaim_after_s,
                              consumers=p.topology.spec("infer").processes, mask_overlay=p.display == "overlay")

    def _infer(self, process: str, incarnation: int) -> StageProcess:
        from trackpipe.pipeline.stages.infer import SOLO_SECONDS, InferProcess
        p = self.plan
        spec = p.spec.with_(threads=p.infer_threads) if hasattr(p.spec, "with_") else p.spec
        c = p.cfg.pipeline
        workers = p.topology.spec("infer").processes
        # every frame in an infer batch holds a ring slot: leave half of them to the other stages
        max_batch = max(1, c.ring_slots // (2 * workers))
        probe = p.info.uri if p.info.kind == "file" else None  # the detector alone on a real frame
        return InferProcess(self.rc, spec, p.info.shape, factory=p.detector_factory,
                            worker=Topology.worker_of(process), batch=c.batch, max_batch=max_batch,
                            probe_uri=probe, solo_seconds=0.0 if p.detector_factory else SOLO_SECONDS)

    def _track(self, process: str, incarnation: int) -> StageProcess:
        from trackpipe.pipeline.stages.track import TrackProcess
        t = self.plan.cfg.tracker
        c = self.plan.cfg
        return TrackProcess(self.rc, t.name, t.options, "sink" in self.plan.topology,
                            id_offset=incarnation * 1_000_000, to_web="web" in self.plan.topology,
                            camera=c.pipeline.camera, names=self.plan.names, zones=c.zones, lines=c.lines,
                            fps=self.plan.info.fps)

    def _render(self, process: str, incarnation: int) -> StageProcess:
        from trackpipe.pipeline.stages.render import RenderProcess
        p, o = self.plan, self.plan.cfg.output
        video = o.video
        if video and incarnation:  # never overwrite what an earlier incarnation wrote
            v = Path(video)
            video = str(v.with_name(f"{v.stem}.part{incarnation}{v.suffix}"))
        snaps = None if not o.snapshots else dict(
            folder=o.snapshots, classes=resolve_classes(o.snapshot_classes, p.names), quality=o.snapshot_quality)
        return RenderProcess(self.rc, video, p.info.fps, (p.info.width, p.info.height), o.codec, p.display,
                             p.names, o.labels, snaps, p.region, preset=None if o.preset == "auto" else o.preset,
                             shapes={"zones": p.cfg.zones, "lines": p.cfg.lines})

    def _sink(self, process: str, incarnation: int) -> StageProcess:
        from trackpipe.pipeline.stages.sink import SinkProcess
        o = self.plan.cfg.output
        c = self.plan.cfg
        return SinkProcess(self.rc, o.mot, o.events, self.plan.names, o.track_end_frames, append=incarnation > 0,
                           interpolate=c.tracker.interpolate or 0, mqtt=c.mqtt, webhooks=c.webhooks,
                           camera=c.pipeline.camera)

    def _web(self, process: str, incarnation: int) -> StageProcess:
        from trackpipe.pipeline.stages.web import WebProcess, shapes_in_pixels, web_config
        p, c = self.plan, self.plan.cfg
        return WebProcess(self.rc, web_config(c), c.pipeline.camera, p.names,
                          shapes_in_pixels(c.zones, c.lines, p.info.width, p.info.height))
