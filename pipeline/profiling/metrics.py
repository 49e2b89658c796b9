"""Prometheus metrics of a run on 127.0.0.1 (``metrics_port``)."""

from __future__ import annotations

from trackpipe.pipeline.errors import PipelineError

from .profiler import Profiler


class Metrics:
    """Prometheus metrics on 127.0.0.1 (a registry of our own; the server thread is a daemon).
    ``port`` 0: the registry only, served by nobody (the live view reads it)."""

    def __init__(self, port: int):
        from prometheus_client import CollectorRegistry, Gauge, start_http_server
        self.reg = CollectorRegistry()
        self.fps = Gauge("trackpipe_stage_fps", "items per second", ["stage"], registry=self.reg)
        self.items = Gauge("trackpipe_stage_items", "items processed", ["stage"], registry=self.reg)
        self.drops = Gauge("trackpipe_stage_drops", "items dropped", ["stage"], registry=self.reg)
        self.depth = Gauge("trackpipe_stage_queue_depth", "items waiting", ["stage"], registry=self.reg)
        self.restarts = Gauge("trackpipe_stage_restarts", "restarts", ["stage"], registry=self.reg)
        self.latency = Gauge("trackpipe_latency_ms", "capture-to-render latency", ["quantile"], registry=self.reg)
        self.source_up = Gauge("trackpipe_source_up", "1 while the source delivers frames", registry=self.reg)
        self.source_lost = Gauge("trackpipe_source_lost_total", "times the source was lost", registry=self.reg)
        self.reconnects = Gauge("trackpipe_source_reconnects_total", "times frames flowed again after a loss",
                                registry=self.reg)
        self.age = Gauge("trackpipe_frame_age_ms", "age of the newest frame when the tracker took it "
                         "(capture after decode -> tracker)", registry=self.reg)
        tgt = ["target"]   # an event delivery target (MQTT broker, webhook URL): docs/events.md
        self.dlv_sent = Gauge("trackpipe_delivery_delivered", "events the target took", tgt, registry=self.reg)
        self.dlv_pending = Gauge("trackpipe_delivery_pending", "events waiting for the target (its outbox on disk "
                                 "and memory)", tgt, registry=self.reg)
        self.dlv_dropped = Gauge("trackpipe_delivery_dropped", "events dropped (a full queue or outbox)", tgt,
                                 registry=self.reg)
        cam = ["camera"]
        self.cam_frames = Gauge("trackpipe_camera_frames", "frames tracked", cam, registry=self.reg)
        self.cam_fps = Gauge("trackpipe_camera_fps", "frames captured per second", cam, registry=self.reg)
        self.cam_drops = Gauge("trackpipe_camera_drops", "frames dropped (capture, infer, track)", cam,
                               registry=self.reg)
        self.cam_up = Gauge("trackpipe_camera_source_up", "1 while the camera delivers frames", cam, registry=self.reg)
        self.cam_lost = Gauge("trackpipe_camera_source_lost_total", "times the camera was lost", cam,
                              registry=self.reg)
        self.cam_detect = Gauge("trackpipe_camera_detect_fraction", "share of the camera's frames detected (motion "
                                "gating skips the others)", cam, registry=self.reg)
        self.cam_motion = Gauge("trackpipe_camera_motion_fraction", "share of the camera's frames with motion", cam,
                                registry=self.reg)
        self.cam_still = Gauge("trackpipe_camera_stationary_objects", "tracked objects standing still", cam,
                               registry=self.reg)
        self.output_up = Gauge("trackpipe_output_up", "1 while an output file is written, 0 while it is stopped "
                               "(a full or unwritable disk)", ["output", "camera"], registry=self.reg)
        self.server = None
        if not port:
            return
        try:
            res = start_http_server(port, addr="127.0.0.1", registry=self.reg)
        except OSError as e:
            raise PipelineError(f"cannot serve metrics on 127.0.0.1:{port}: {e.strerror}") from None
        self.server = res[0] if isinstance(res, tuple) else None

    def update(self, prof: Profiler, row: dict) -> None:
        for n in prof.stages:
            g = prof.group(n)
            r = g.report()
            self.fps.labels(n).set(row.get(n, 0.0))
            self.items.labels(n).set(r["items"])
            self.drops.labels(n).set(r["drops"])
            self.depth.labels(n).set(prof.queue_depth(n))
            self.restarts.labels(n).set(g.restarts)
        cap = prof.gauges("capture")
        if cap:
            self.source_up.set(cap.get("source_up", 1))
            self.source_lost.set(cap.get("source_lost", 0))
            self.reconnects.set(cap.get("reconnects", 0))
        trk = prof.gauges("track")
        if "frame_age_ms" in trk:
            self.age.set(trk["frame_age_ms"])
        for d in prof.gauges("sink").get("delivery") or ():
            self.dlv_sent.labels(d["target"]).set(d["sent"])
            self.dlv_pending.labels(d["target"]).set(d.get("pending", 0))
            self.dlv_dropped.labels(d["target"]).set(d["dropped"])
        cams = prof.camera_report()
        for proc, name in prof.cameras.items():
            gauges = (prof.aggs[proc].total() or {}).get("gauges", {})
            self.cam_fps.labels(name).set(row.get(f"camera:{name}", 0.0))
            self.cam_frames.labels(name).set(cams[name]["frames_out"])
            self.cam_drops.labels(name).set(cams[name]["drops"])
            self.cam_up.labels(name).set(gauges.get("source_up", 1))
            self.cam_lost.labels(name).set(gauges.get("source_lost", 0))
            for g, key in ((self.cam_detect, "detect_fraction"), (self.cam_motion, "motion_fraction")):
                if cams[name].get(key) is not None:
                    g.labels(name).set(cams[name][key])
            self.cam_still.labels(name).set(len(cams[name].get("stationary") or ()))
        for stage in ("render", "sink"):   # output files: video, snapshots, MOT, events
            for o in prof.gauges(stage).get("outputs") or ():
                self.output_up.labels(o["output"], o["camera"]).set(0 if o["state"] == "stopped" else 1)
        lat = prof.hist("render", "latency")
        if lat.n:
            for q in (50, 95, 99):
                v = lat.percentile(q)
                if v is not None:
                    self.latency.labels(f"p{q}").set(v)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
