"""Supervisor (main process): owns the ring and the run folder, starts and watches the stages.

It builds the processes from the topology table (`runtime.processes`), waits until all are
ready, then lets capture go. Every ~100 ms it reads State / Stats / Log messages, notices a
stage that died (exit code) or stopped heart-beating (`runtime.watchdog`), and either
restarts it (live sources, at most ``max_restarts_per_min``, after a growing backoff, on a
cleared board row with a start-up grace) or stops the run with a clear message (files).
SIGINT / SIGTERM set one stop request (`runtime.signals`); stages get
``stop_timeout_s`` to finish (render finalises the video) and are then SIGKILLed. The shared
memory and the ipc folder are removed on every exit path; the profile (`profiling`) is
written on every exit path too.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
import time
from typing import Callable, Dict, List, Optional

from trackpipe.pipeline.config import Config
from trackpipe.pipeline.errors import PipelineError
from trackpipe.pipeline.profiling.profiler import IN, OUT, Profiler
from trackpipe.pipeline.stages.base import RunContext, StageProcess
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.bus import STATS, WEB, Bus
from trackpipe.pipeline.transport.messages import LiveStats, Log, StageState, State, Stats
from trackpipe.pipeline.transport.ring import FrameRing

from . import cleanup
from .inputs import display_mode, display_region
from .cameras import Camera
from .processes import ProcessFactory, RunPlan
from trackpipe.pipeline.common.shared import Flag, StageBoard
from .signals import StopSignals, start_with_signals_blocked
from trackpipe.pipeline.common import placement as placing
from .topology import Topology
from .watchdog import RestartPolicy, describe_exit, kill, not_ready, silent_stages, slow_restarts

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
_BOARD_FIELD = {IN: StageBoard.IN, OUT: StageBoard.OUT}


class Supervisor:
    """Runs one pipeline to completion; ``run()`` returns the process exit code."""

    def __init__(self, cfg: Config, spec, cameras: List[Camera], names: Optional[List[str]] = None,
                 detector_factory: Optional[Callable] = None):
        """``cameras``: `runtime.cameras.Camera` list, probed (``info`` set): `runtime.inputs.prepare`."""
        self.cfg = cfg
        self.spec = spec
        self.cameras = list(cameras)
        self.info = info = self.cameras[0].info
        self.names = names
        self.mode = cfg.source.mode if cfg.source.mode != "auto" else ("latest" if info.live else "lossless")
        self.live = self.mode == "latest"
        self.placement_error: Optional[str] = None
        try:
            self.placement = placing.plan(cfg.pipeline.cpus, self.mode, placing.gpu_backend(spec),
                                          cfg.pipeline.infer_workers, getattr(spec, "threads", 0) or 0,
                                          cameras=len(self.cameras))
        except PipelineError as e:  # reported as one line by run()
            self.placement_error = str(e)
            self.placement = placing.plan("off", self.mode, placing.gpu_backend(spec), cfg.pipeline.infer_workers,
                                          getattr(spec, "threads", 0) or 0)
        workers, threads = self.placement.workers, self.placement.threads
        self.topology = Topology.build(workers, sink=bool(any(c.mot or c.events for c in self.cameras) or cfg.mqtt
                                                          or cfg.webhooks or cfg.record.dir),
                                       web=cfg.output.http_port is not None, cameras=len(self.cameras))
        display = display_mode(cfg)
        self.plan = RunPlan(cfg, spec, info, names, self.mode, self.topology, threads, display,
                            display_region(cfg, info) if display in ("overlay", "mirror") else None,
                            detector_factory, self.placement, self.cameras)
        self.error: Optional[str] = None
        self.failed_at: Optional[float] = None  # monotonic time a failure was noticed
        self.exit_code = EXIT_OK
        self.outcome = "completed"
        self.signals = StopSignals()
        self._stop_requested: Optional[str] = None
        self.report: Optional[dict] = None
        self.on_tick: Optional[Callable[["Supervisor"], None]] = None  # tests/benchmarks hook
        self.procs: Dict[str, StageProcess] = {}
        self.state: Dict[str, StageState] = {}
        self.incarnation: Dict[str, int] = {n: 0 for n in self.topology.processes}
        self.restarts = RestartPolicy(cfg.pipeline.max_restarts_per_min)
        self.rc: Optional[RunContext] = None
        self.profiler: Optional[Profiler] = None
        self.go_at: Optional[float] = None
        self._hung: Dict[str, str] = {}     # stage -> why it was killed as hung, for the message once it is dead
        self._pending: Dict[str, float] = {}  # stage -> monotonic time its restart is due (backoff)
        self._started: Dict[str, float] = {}  # stage -> monotonic start of its current process
        self._restarted: Dict[str, float] = {}  # the same, for restarted processes only

    # views used by hooks and tests
    @property
    def aggs(self):
        return self.profiler.aggs

    @property
    def timeline(self) -> List[dict]:
        return self.profiler.timeline if self.profiler else []

    def request_stop(self, outcome: str = "stopped") -> None:
        """Stop the run from the main thread (hooks, embedding code); exit code 0."""
        self._stop_requested = outcome

    def _count(self, process: str, field: str) -> float:
        return self.board.get(self.rc.stage_index[process], _BOARD_FIELD[field])

    # --- main --------------------------------------------------------------------------------
    def run(self) -> int:
        cleanup.clean_stale()
        self.run_id = cleanup.new_run_id()
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:  # signal handlers can only be set there; elsewhere use request_stop()
            self.signals.install()
        rings: List[FrameRing] = []
        bus = None
        self.t_start = time.monotonic()
        self.metrics = self.ui = self.web_sock = None
        try:
            if self.placement_error:
                from trackpipe.pipeline.errors import ConfigError
                raise ConfigError(self.placement_error)
            if "web" in self.topology:  # an exposed live view without a token: one line, exit 2, nothing started
                from trackpipe.pipeline.stages.web import web_config
                web_config(self.cfg)
            run_dir = cleanup.make_run_dir(self.run_id)
            for cam in self.cameras:  # one ring per camera, sized for its frames
                name = cleanup.ring_name(self.run_id) + (f"{cam.index}" if cam.index else "")
                rings.append(FrameRing.create(name, self.cfg.pipeline.ring_slots, cam.info.shape))
            ctx = mp.get_context(self.cfg.pipeline.start_method)
            processes = self.topology.processes
            self.board = StageBoard(len(processes), ctx)
            self.rc = RunContext(run_id=self.run_id, run_dir=run_dir, ring_name=rings[0].name, mode=self.mode,
                                 stop=Flag(ctx), go=Flag(ctx), board=self.board,
                                 stage_index={n: i for i, n in enumerate(processes)},
                                 stats_interval_s=self.cfg.profile.interval_s,
                                 log_level=logging.getLogger().getEffectiveLevel(),
                                 ring_slots=self.cfg.pipeline.ring_slots,
                                 cameras=tuple(c.name for c in self.cameras),
                                 ring_names=tuple(r.name for r in rings))
            bus = Bus(run_dir)
            self.stats_sock = bus.pull(STATS, hwm=100000)
            self.profiler = Profiler(self.topology, self._count, self.cfg.profile.interval_s,
                                     [c.name for c in self.cameras])
            if self.cfg.metrics_port or "web" in self.topology:  # port 0: the live view's /metrics only
                from trackpipe.pipeline.profiling.metrics import Metrics
                self.metrics = Metrics(self.cfg.metrics_port)
            if "web" in self.topology:
                self.web_sock = bus.push(WEB, hwm=4, flush=False)
            self.factory = ProcessFactory(self.plan, self.rc)
            for n in processes:
                self._start(n)
            from trackpipe.pipeline.profiling.live import LiveView
            render = self.rc.stage_index["render"]
            self.ui = LiveView(self.profiler, self.cfg, self.info, self.mode, self.live,
                               lambda: self.board.get(render, StageBoard.OUT))
            self._loop()
        except PipelineError as e:
            self.error, self.exit_code, self.outcome = str(e), e.exit_code, "failed"
        finally:
            try:
                self._shutdown()
            finally:
                for ring in rings:
                    ring.close()
                    ring.unlink()
                if bus is not None:
                    bus.close()
                cleanup.remove_run(self.run_id)
                if in_main:
                    self.signals.restore()
        return self.exit_code

    def _start(self, name: str) -> None:
        # a fresh board row: no ready flag, no heartbeat of the previous process (counters kept)
        self.board.reset(self.rc.stage_index[name])
        self.procs[name] = self.factory.make(name, self.incarnation[name])
        start_with_signals_blocked(self.procs[name])
        self._started[name] = time.monotonic()
        if self.incarnation[name]:
            self._restarted[name] = self._started[name]
        cores = self.placement.cores_of(name)
        if cores and not placing.apply(self.procs[name].pid, cores):
            log.warning("could not place stage '%s' on cores %s", name, ",".join(map(str, cores)))

    def _loop(self) -> None:
        cfg = self.cfg
        while True:
            if self.signals.received is not None:
                self.outcome = "interrupted"
                self.exit_code = EXIT_SIGINT if self.signals.received == signal.SIGINT else EXIT_SIGTERM
                log.info("interrupted: stopping")
                return
            if self._stop_requested:
                self.outcome = self._stop_requested
                return
            self._drain(busmod.POLL_MS)
            if self.error:
                return
            if self.state.get("render") == StageState.QUIT:
                self.outcome = "quit"
                return
            now = time.monotonic()
            if not self._check_processes(now):
                return
            self._restart_due(now)
            if self.go_at is None:
                self._maybe_go(now)
            elif cfg.pipeline.duration_s and now - self.go_at >= cfg.pipeline.duration_s:
                self.outcome = "completed"
                return
            # done when the last consumers have seen the end of the stream (idle infer workers
            # that got no end-of-stream message are stopped by the shutdown)
            if all(self.state.get(n) == StageState.FINISHED for n in self.topology.terminal):
                return
            if self.profiler.due(now):
                row = self.profiler.sample(now, running=self.go_at is not None)
                if self.metrics:
                    self.metrics.update(self.profiler, row)
                if self.web_sock is not None:
                    self._send_live()
            self.ui.update()
            if self.on_tick:
                self.on_tick(self)

    def _send_live(self) -> None:
        """The live profile (the report's shape, no timeline) and the metrics text to the web stage;
        dropped when its queue is full."""
        from prometheus_client import generate_latest

        from trackpipe.pipeline.profiling.report import build_report
        prof = self.profiler
        report = build_report({n: prof.group(n) for n in prof.stages},
                              {"mode": self.mode, "outcome": "running" if self.go_at is not None else "starting",
                               "wall_s": round(time.monotonic() - self.t_start, 3)})
        report["cameras"] = prof.camera_report()    # per camera: fps, frame age, detected / motion shares
        busmod.try_send(self.web_sock, LiveStats(report, generate_latest(self.metrics.reg).decode()))

    def _maybe_go(self, now: float) -> None:
        processes = self.topology.processes
        waiting = not_ready(self.board, self.rc.stage_index, processes)
        if not waiting:
            self.go_at = now
            log.info("ready in %.1fs: %s", now - self.t_start,
                     describe_run(self.cfg, self.spec, self.cameras, self.names))
            log.debug("run details: tracker %s; %s; %d infer worker(s) x %d thread(s); %s; run %s",
                      self.cfg.tracker.name, self.mode, self.topology.spec("infer").processes,
                      self.plan.infer_threads, self.placement.describe(processes)
                      + (f" ({self.placement.note})" if self.placement.note else ""), self.run_id)
            self.rc.go.set()
            self.ui.started()
        elif now - self.t_start > self.cfg.pipeline.start_timeout_s:
            raise PipelineError(f"stages not ready after {self.cfg.pipeline.start_timeout_s:g}s: {', '.join(waiting)}")

    def _check_processes(self, now: float) -> bool:
        """Exit codes first (a dead stage is seen within one poll), then heartbeats. -> False
        when the run must stop."""
        for n, p in list(self.procs.items()):
            if n in self._pending:  # failed and handled; its restart waits for its backoff
                continue
            if p.exitcode is None or self.state.get(n) in (StageState.DONE, StageState.FINISHED):
                if p.exitcode is not None:
                    self.state[n] = StageState.FINISHED
                continue
            if p.exitcode >= 0:  # its last messages (DONE, an error line) may still be in flight
                self._drain(200)
            if self.procs.get(n) is not p or n in self._pending:  # already handled while draining
                continue
            if self.state.get(n) == StageState.DONE:
                self.state[n] = StageState.FINISHED
                continue
            if self.state.get(n) == StageState.ERROR or self.error:
                if self.error:
                    return False
                continue  # reported (and handled) with its own message
            hung = self._hung.pop(n, None)
            self._stage_failed(n, f"stage '{n}' hung ({hung}) and was killed" if hung
                               else f"stage '{n}' died ({describe_exit(p.exitcode)})")
            if self.error:
                return False
        c = self.cfg.pipeline
        live = {n: p for n, p in self.procs.items() if n not in self._pending}
        hung = {n: f"no heartbeat for {s:.1f}s" for n, s in
                silent_stages(self.board, live, self.rc.stage_index, c.heartbeat_timeout_s, now, self._started).items()}
        hung.update({n: f"not ready {s:.1f}s after its restart" for n, s in
                     slow_restarts(self.board, live, self.rc.stage_index, self._restarted, c.start_timeout_s,
                                   now).items()})
        for n, why in hung.items():
            if n not in self._hung:
                self._hung[n] = why
                self.state[n] = StageState.HUNG
                kill(self.procs[n])
        return True

    def _restart_due(self, now: float) -> None:
        """Start the restarts whose backoff is over, once the failed process is gone (its board
        row is cleared then, and nothing of it can write there any more)."""
        for n, due in list(self._pending.items()):
            if now >= due and self.procs[n].exitcode is not None:
                del self._pending[n]
                self._start(n)

    def _drain(self, timeout_ms: int) -> None:
        msg = busmod.recv(self.stats_sock, timeout_ms)
        while msg is not None:
            self._handle(msg)
            msg = busmod.recv_nowait(self.stats_sock)

    def _handle(self, msg) -> None:
        if isinstance(msg, Stats):
            self.profiler.on_stats(msg.snapshot)
        elif isinstance(msg, Log):
            logging.getLogger(msg.name).log(msg.level, "%s: %s", msg.stage, msg.msg)
        elif isinstance(msg, State):
            n = msg.stage
            if msg.state == StageState.ERROR:
                self.state[n] = StageState.ERROR
                was_ready = self.board.get(self.rc.stage_index[n], StageBoard.READY)
                self._stage_failed(n, f"{n}: {msg.message}", setup_error=not was_ready)
            elif msg.state == StageState.QUIT:
                self.state["render"] = StageState.QUIT
            else:
                self.state[n] = msg.state

    def _stage_failed(self, n: str, message: str, setup_error: bool = False) -> None:
        """A stage died or reported an error: restart it (live, runtime failures) or stop."""
        if self.error or self.signals.received is not None or self.rc.stop.is_set():
            return
        self.failed_at = time.monotonic()
        if setup_error:  # deterministic (bad model, unwritable file...): restarting cannot help
            self.error, self.exit_code, self.outcome = message, EXIT_BAD_INPUT, "failed"
            return
        if not self.live and n != "web":  # the live view holds no frame: restarted in any mode
            self.error, self.exit_code, self.outcome = message + "; stopping (a file source cannot skip frames)", \
                EXIT_FAILED, "failed"
            return
        p = self.procs[n]
        if p.exitcode is None:  # reported an error but still alive: make sure it is gone
            kill(p)
        limit = self.restarts.max_per_min
        if not self.restarts.allow(n):
            self.error, self.exit_code, self.outcome = (
                f"{message}; it failed {self.restarts.recent(n) + 1} times within a minute (limit {limit}); stopping",
                EXIT_FAILED, "failed")
            return
        self.incarnation[n] += 1
        wait = self.restarts.backoff_s(n)
        log.warning("%s; restarting it%s (%d/%d this minute)", message, f" in {wait:g}s" if wait else "",
                    self.restarts.recent(n), limit)
        self.profiler.new_incarnation(n)
        self.state.pop(n, None)
        self._restarted.pop(n, None)
        self._pending[n] = time.monotonic() + wait

    # --- shutdown ------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        rc = self.rc
        if rc is not None:
            rc.stop.set()
        procs = list(self.procs.values())
        if rc is not None:  # a stage still starting (importing, loading a model) has nothing to save
            for n, p in self.procs.items():
                if p.exitcode is None and not self.board.get(rc.stage_index[n], StageBoard.READY):
                    kill(p)
        deadline = time.monotonic() + self.cfg.pipeline.stop_timeout_s
        while any(p.exitcode is None for p in procs) and time.monotonic() < deadline:
            if hasattr(self, "stats_sock"):
                self._drain_quiet(50)
            else:
                time.sleep(0.05)
        for p in procs:
            if p.exitcode is None:
                log.warning("stage '%s' did not stop in %.1fs; killing it",
                            p.name.replace("trackpipe-", ""), self.cfg.pipeline.stop_timeout_s)
                kill(p)
        for p in procs:
            p.join(timeout=2.0)
            if p.pid is not None:   # a stage killed (e.g. still setting up) could not remove its own
                cleanup.remove_shm_of(p.pid)
        if hasattr(self, "stats_sock"):
            self._drain_quiet(100)
            if self.ui is not None:
                self.ui.close()
            self._write_profile()
        if self.metrics:
            self.metrics.close()

    def _drain_quiet(self, timeout_ms: int) -> None:
        try:
            msg = busmod.recv(self.stats_sock, timeout_ms)
            while msg is not None:
                if isinstance(msg, (Stats, Log)):
                    self._handle(msg)
                msg = busmod.recv_nowait(self.stats_sock)
        except Exception:
            pass

    def _write_profile(self) -> None:
        if self.profiler is None:
            return
        meta = {"outcome": self.outcome, "mode": self.mode, "wall_s": round(time.monotonic() - self.t_start, 3),
                "source": {k: getattr(self.info, k)
                           for k in ("kind", "uri", "width", "height", "fps", "frames", "live")},
                "model": {"cfg": str(getattr(self.spec, "cfg", "")), "backend": getattr(self.spec, "backend", ""),
                          "threads": self.plan.infer_threads, "infer_workers": self.topology.spec("infer").processes,
                          "size": list(getattr(self.spec, "size", ())),
                          "precision": getattr(self.spec, "precision", "")},
                "tracker": self.cfg.tracker.name, "ring_slots": self.cfg.pipeline.ring_slots,
                "placement": self.placement.to_dict(self.topology.processes)}
        if self.error:
            meta["error"] = self.error
        if len(self.cameras) > 1:
            meta["sources"] = {c.name: {k: getattr(c.info, k) for k in ("kind", "uri", "width", "height", "fps",
                                                                         "frames", "live")} for c in self.cameras}
        report = self.profiler.build(meta)
        report["cameras"] = self.profiler.camera_report()
        if self.plan.display in ("overlay", "mirror"):
            st = report["stages"]
            ren = st.get("render", {})
            report["overlay"] = {"mode": self.plan.display, "region": list(self.plan.region), "stage": "render",
                                 "fps": ren.get("fps", 0.0), "infer_fps": st.get("infer", {}).get("fps", 0.0),
                                 "redraw_fps": ren.get("redraw_fps", 0.0),
                                 "masked_frames": st.get("capture", {}).get("masked_frames", 0)}
        self.report = report
        # a run that never started for a bad input (model, file...) writes no profile file; one
        # stopped by the user while starting does (its outcome says so)
        if self.rc.go.is_set() or self.outcome == "interrupted":
            err = self.profiler.write(self.cfg.profile.path, self.cfg.profile.plot)
            if err and self.error:  # the run's own error is the CLI's line; this one is logged
                log.error("%s", err)
            elif err:  # one line from the CLI, exit 1; the run's outputs stay as written
                self.error = err
                self.exit_code = self.exit_code or EXIT_FAILED


def describe_run(cfg: Config, spec, cameras, names=None) -> str:
    """The one start-up line, short: sources, model, backend and precision, classes where set
    (the model's, or each camera's own), outputs and where the live view is."""
    from pathlib import Path

    def class_text(ids) -> str:
        return ",".join(names[i] if names and 0 <= i < len(names) else str(i) for i in ids)

    srcs = ", ".join(f"{c.name} {c.uri} ({c.info.width}x{c.info.height}"
                     + (f", {c.info.frames} frames" if c.info.frames else "") + ")"
                     + (f" classes {class_text(c.classes)}" if c.classes else "") for c in cameras)
    model = getattr(spec, "model_name", None) or (Path(spec.cfg).stem if getattr(spec, "cfg", None) else "model")
    size = "x".join(str(v) for v in getattr(spec, "size", ()) or ())
    classes = getattr(spec, "classes", None)
    outs = []
    for c in cameras:
        for what, path in (("video", c.video), ("MOT", c.mot), ("snapshots", c.snapshots)):
            if path:
                outs.append(f"{what} {path}")
    outs += sorted({f"events {c.events}" for c in cameras if c.events})
    if cfg.profile.path:
        outs.append(f"profile {cfg.profile.path}")
    if cfg.mqtt:
        outs.append("MQTT")
    if cfg.webhooks:
        outs.append(f"{len(cfg.webhooks)} webhook(s)")
    if cfg.record.dir:
        outs.append(f"recording {cfg.record.dir}")
    port = cfg.output.http_port
    if port is not None:
        host = cfg.output.http_host or "127.0.0.1"
        outs.append(f"live view http://{host}:{port}/" if port else "live view (its URL below)")
    return (f"{srcs}; model {model} {size} {spec.backend}-{spec.precision}"
            + (f" classes {class_text(classes)}" if classes else "")
            + f"; outputs: {', '.join(outs) or 'none'}")
