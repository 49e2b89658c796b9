"""Stage processes built from the topology table: one builder per stage, nothing else.

`ProcessFactory.make(process_name, incarnation)` returns an unstarted `StageProcess`; an
incarnation above 0 is a restart (the tracker numbers its ids from ``incarnation * 1e6``,
the video continues in ``out.partN.mp4``, the sink appends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from trackpipe.pipeline.config import Config
from trackpipe.pipeline.media.sources import SourceInfo
from trackpipe.pipeline.stages.base import RunContext, StageProcess

from .cameras import Camera
from .topology import Topology


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
    placement: Optional[object] = None            # runtime.placement.Placement
    cameras: List[Camera] = field(default_factory=list)   # runtime.cameras.Camera, info set


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
        cam = p.cameras[Topology.worker_of(process)]
        return CaptureProcess(self.rc, cam.uri, c.source, cam.info, c.pipeline.max_frames, c.pipeline.reclaim_after_s,
                              consumers=p.topology.spec("infer").processes, mask_overlay=p.display == "overlay",
                              index=cam.index, camera=cam.name)

    def _infer(self, process: str, incarnation: int) -> StageProcess:
        from trackpipe.pipeline.stages.infer import SOLO_SECONDS, InferProcess
        p = self.plan
        spec = p.spec.with_(threads=p.infer_threads) if hasattr(p.spec, "with_") else p.spec
        c = p.cfg.pipeline
        workers = p.topology.spec("infer").processes
        # every frame in an infer batch holds a ring slot: leave half of each camera's to the other stages
        max_batch = max(1, c.ring_slots // (2 * workers)) * len(p.cameras)
        probe = p.info.uri if p.info.kind == "file" else None  # the detector alone on a real frame
        shape = max((cam.info.shape for cam in p.cameras), key=lambda s: s[0] * s[1])
        return InferProcess(self.rc, spec, shape, factory=p.detector_factory,
                            worker=Topology.worker_of(process), batch=c.batch, max_batch=max_batch,
                            probe_uri=probe, solo_seconds=0.0 if p.detector_factory else SOLO_SECONDS,
                            batch_timeout_ms=c.batch_timeout_ms)

    def _track(self, process: str, incarnation: int) -> StageProcess:
        from trackpipe.pipeline.stages.track import TrackProcess
        t = self.plan.cfg.tracker
        return TrackProcess(self.rc, t.name, t.options, "sink" in self.plan.topology,
                            id_offset=incarnation * 1_000_000, to_web="web" in self.plan.topology,
                            cameras=self.plan.cameras, names=self.plan.names,
                            workers=self.plan.topology.spec("infer").processes)

    def _render(self, process: str, incarnation: int) -> StageProcess:
        from trackpipe.pipeline.stages.render import RenderProcess
        p, o = self.plan, self.plan.cfg.output
        # snapshot_classes: ids, resolved once by runtime.inputs.prepare
        snaps = dict(classes=tuple(o.snapshot_classes) if o.snapshot_classes else None, quality=o.snapshot_quality)
        preset = None if o.preset == "auto" else o.preset   # None: by its CPU cost at the source's fps
        if preset is None and p.mode == "lossless" and not (p.placement and p.placement.placed):
            # a file is encoded as fast as the pipeline runs, on the detector's cores: the cheapest
            # preset (measured, yolov4-tiny bf16 on 1080p, 2 cores: 30.8-38.2 FPS vs 26.9-31.0 with
            # superfast; files 1.7x larger)
            preset = "ultrafast"
        return RenderProcess(self.rc, p.cameras, o.codec, p.display, p.names, o.labels, snaps, p.region,
                             preset=preset, incarnation=incarnation, clean_slots="web" in p.topology)

    def _sink(self, process: str, incarnation: int) -> StageProcess:
        from trackpipe.pipeline.stages.sink import SinkProcess
        c = self.plan.cfg
        return SinkProcess(self.rc, self.plan.cameras, self.plan.names, append=incarnation > 0,
                           interpolate=c.tracker.interpolate or 0, mqtt=c.mqtt, webhooks=c.webhooks)

    def _web(self, process: str, incarnation: int) -> StageProcess:
        from trackpipe.pipeline.stages.web import WebProcess, web_config
        p = self.plan
        return WebProcess(self.rc, web_config(p.cfg), p.cameras, p.names)
