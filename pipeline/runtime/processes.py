"""Stage processes built from the topology table: one settings object per stage, made in one place.

`StageSettingsBuilder.settings(process, incarnation)` turns the run's plan (the config tree, the
probed cameras, the topology) into the stage's frozen settings (`stages.settings`); `STAGES`
names each stage's class; `ProcessFactory.make(process_name, incarnation)` returns the
unstarted `StageProcess` ``cls(rc, settings)``. An incarnation above 0 is a restart (the
tracker numbers its ids from ``incarnation * 1e6``, the video continues in ``out.partN.mp4``,
the sink appends).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from trackpipe.pipeline.config import Config
from trackpipe.pipeline.media.sources import SourceInfo
from trackpipe.pipeline.stages.base import RunContext, StageProcess
from trackpipe.pipeline.stages.settings import (
    CaptureSettings,
    InferSettings,
    RenderSettings,
    SinkSettings,
    TrackSettings,
    WebSettings,
)

from .cameras import Camera
from .topology import Topology

# stage -> (module, class): every class is built as ``cls(rc, settings)``
STAGES: Dict[str, Tuple[str, str]] = {
    "capture": ("trackpipe.pipeline.stages.capture", "CaptureProcess"),
    "infer": ("trackpipe.pipeline.stages.infer", "InferProcess"),
    "track": ("trackpipe.pipeline.stages.track", "TrackProcess"),
    "render": ("trackpipe.pipeline.stages.render", "RenderProcess"),
    "sink": ("trackpipe.pipeline.stages.sink", "SinkProcess"),
    "web": ("trackpipe.pipeline.stages.web", "WebProcess"),
}


@dataclass
class RunPlan:
    """What the parent decided before starting anything (picklable parts go to the stages)."""

    cfg: Config
    spec: object                        # models.spec.ModelSpec
    info: SourceInfo                    # camera 0's
    names: Optional[List[str]]
    mode: str                           # lossless | latest
    topology: Topology
    infer_threads: int
    display: str                        # window | overlay | mirror | none
    region: Optional[Tuple[int, int, int, int]] = None
    detector_factory: Optional[Callable] = None   # picklable spec -> Detector (tests)
    placement: Optional[object] = None            # common.placement.Placement
    cameras: List[Camera] = field(default_factory=list)   # runtime.cameras.Camera, info set


class StageSettingsBuilder:
    """The one place where the config tree and the plan become each stage's settings."""

    def __init__(self, plan: RunPlan):
        self.plan = plan
        self.cameras = tuple(plan.cameras)
        self.names = tuple(plan.names) if plan.names else None
        from trackpipe.pipeline.recording.settings import resolve
        self.record = resolve(plan.cfg, self.cameras, plan.mode == "lossless", names=self.names or ())

    def settings(self, process: str, incarnation: int = 0):
        stage = Topology.stage_of(process)
        return getattr(self, stage)(Topology.worker_of(process), incarnation)

    def capture(self, worker: int, incarnation: int) -> CaptureSettings:
        p, c = self.plan, self.plan.cfg
        return CaptureSettings(self.cameras[worker], c.source, c.pipeline.max_frames, c.pipeline.reclaim_after_s,
                               consumers=p.topology.spec("infer").processes, mask_overlay=p.display == "overlay")

    def infer(self, worker: int, incarnation: int) -> InferSettings:
        from trackpipe.pipeline.stages.infer import SOLO_SECONDS
        p, c = self.plan, self.plan.cfg.pipeline
        spec = p.spec.with_(threads=p.infer_threads) if hasattr(p.spec, "with_") else p.spec
        workers = p.topology.spec("infer").processes
        # every frame in an infer batch holds a ring slot: leave half of each camera's to the other stages
        max_batch = max(1, c.ring_slots // (2 * workers)) * len(self.cameras)
        probe = p.info.uri if p.info.kind == "file" else None  # the detector alone on a real frame
        shape = max((cam.info.shape for cam in self.cameras), key=lambda s: s[0] * s[1])
        return InferSettings(spec, tuple(shape), worker=worker, batch=c.batch, max_batch=max_batch,
                             batch_timeout_ms=c.batch_timeout_ms, probe_uri=probe,
                             solo_seconds=0.0 if p.detector_factory else SOLO_SECONDS, factory=p.detector_factory,
                             restart=incarnation > 0)

    def track(self, worker: int, incarnation: int) -> TrackSettings:
        p, t = self.plan, self.plan.cfg.tracker
        return TrackSettings(self.cameras, t.name, dict(t.options), self.names, to_sink="sink" in p.topology,
                             to_web="web" in p.topology, id_offset=incarnation * 1_000_000,
                             workers=p.topology.spec("infer").processes)

    def render(self, worker: int, incarnation: int) -> RenderSettings:
        p, o = self.plan, self.plan.cfg.output
        preset = None if o.preset == "auto" else o.preset   # None: by its CPU cost at the source's fps
        if preset is None and p.mode == "lossless" and not (p.placement and p.placement.placed):
            # a file is encoded as fast as the pipeline runs, on the detector's cores: the cheapest
            # preset (measured, yolov4-tiny bf16 on 1080p, 2 cores: 30.8-38.2 FPS vs 26.9-31.0 with
            # superfast; files 1.7x larger)
            preset = "ultrafast"
        mqtt = p.cfg.mqtt
        return RenderSettings(
            self.cameras, self.names, p.display, tuple(int(v) for v in p.region) if p.region else None,
            o.codec, preset, o.labels,
            # ids, resolved once by runtime.inputs.prepare
            snapshot_classes=tuple(o.snapshot_classes) if o.snapshot_classes else None,
            snapshot_quality=o.snapshot_quality,
            snapshots_to_sink=bool(mqtt is not None and mqtt.snapshots and "sink" in p.topology),
            incarnation=incarnation, clean_slots="web" in p.topology,
            record=self.record if "sink" in p.topology else None)

    def sink(self, worker: int, incarnation: int) -> SinkSettings:
        from trackpipe.pipeline.events.targets import target_configs
        c, append = self.plan.cfg, incarnation > 0
        return SinkSettings(self.cameras, self.names, tuple(target_configs(c, self.cameras, append)), append=append,
                            interpolate=c.tracker.interpolate or 0, record=self.record)

    def web(self, worker: int, incarnation: int) -> WebSettings:
        from trackpipe.pipeline.stages.web import web_config
        return WebSettings(web_config(self.plan.cfg), self.cameras, self.names, record=self.record)


class ProcessFactory:
    def __init__(self, plan: RunPlan, rc: RunContext):
        self.plan = plan
        self.rc = rc
        self.builder = StageSettingsBuilder(plan)

    def make(self, process: str, incarnation: int = 0) -> StageProcess:
        module, cls = STAGES[Topology.stage_of(process)]
        return getattr(importlib.import_module(module), cls)(self.rc, self.builder.settings(process, incarnation))
