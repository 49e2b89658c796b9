"""Supervisor (main process): owns the ring and the run folder, starts and watches the stages.

It starts capture, infer, track, render (always: it releases slots) and sink (when a
MOT or events file is asked for) as spawn processes, waits until all are ready, then
lets capture go. Every ~100 ms it reads stats/log/state messages, notices a stage that
died (exit code) or stopped heart-beating, and either restarts it (live sources, at
most ``max_restarts_per_min``) or stops the run with a clear message (files). SIGINT /
SIGTERM set one stop event; stages get ``stop_timeout_s`` to finish (render finalises
the video) and are then SIGKILLed. The shared memory and the ipc folder are removed on
every exit path; the profile JSON is written on every exit path too.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Dict, List, Optional

from . import bus as busmod
from . import cleanup
from .bus import STATS, Bus
from .config import Config
from .errors import PipelineError
from .ring import FrameRing
from .sources import SourceInfo
from .stage import RunContext, StageProcess
from .stats import Flag, GroupAggregate, StageAggregate, StageBoard, build_report, plot_timeline, write_report

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143


def _describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class EarlyStop:
    """SIGINT/SIGTERM handler for a command's start-up (parsing, probing, loading models): raises
    KeyboardInterrupt and remembers the signal, which the supervisor honours when it takes over."""

    def __init__(self):
        self.received: List[int] = []

    def __call__(self, signum, frame):
        self.received.append(signum)
        raise KeyboardInterrupt


class Supervisor:
    """Runs one pipeline to completion; ``run()`` returns the process exit code."""

    def __init__(self, cfg: Config, spec, info: SourceInfo, names: Optional[List[str]] = None,
                 detector_factory: Optional[Callable] = None):
        self.cfg = cfg
        self.detector_factory = detector_factory  # picklable callable spec -> Detector (tests)
        self.spec = spec
        self.info = info
        self.names = names
        self.mode = cfg.source.mode if cfg.source.mode != "auto" else ("latest" if info.live else "lossless")
        self.live = self.mode == "latest"
        self.error: Optional[str] = None
        self.failed_at: Optional[float] = None  # monotonic time a failure was noticed
        self.exit_code = EXIT_OK
        self.outcome = "completed"
        self._signal: Optional[int] = None
        self._stop_requested: Optional[str] = None
        self.report: Optional[dict] = None
        self.timeline: List[dict] = []
        self.on_tick: Optional[Callable[["Supervisor"], None]] = None  # tests/benchmarks hook

    # --- topology --------------------------------------------------------------------------
    def _stage_names(self) -> List[str]:
        """Process names; infer workers are ``infer``, ``infer.1``, ... (one stage in the report)."""
        o = self.cfg.output
        self.workers, self.infer_threads = infer_plan(self.spec, self.mode, self.cfg.pipeline.infer_workers)
        names = ["capture", "infer"] + [f"infer.{i}" for i in range(1, self.workers)] + ["track", "render"]
        if o.mot or o.events:
            names.append("sink")
        self.groups: Dict[str, List[str]] = {}
        for n in names:
            self.groups.setdefault(n.split(".")[0], []).append(n)
        self.bases = list(self.groups)
        return names

    def group(self, base: str):
        """The aggregate of a stage across its processes."""
        return GroupAggregate(base, [self.aggs[n] for n in self.groups[base]])

    def group_count(self, base: str, field: int) -> float:
        return sum(self.board.get(self.rc.stage_index[n], field) for n in self.groups.get(base, ()))

    def _window_on(self) -> bool:
        o = self.cfg.output
        if o.headless or o.window == "off":
            return False
        from .sinks import display_available
        return o.window == "on" or display_available()

    def _make(self, name: str, incarnation: int) -> StageProcess:
        cfg, rc = self.cfg, self.rc
        base = name.split(".")[0]
        if name == "capture":
            from .capture import CaptureProcess
            return CaptureProcess(rc, self.info.uri, cfg.source, self.info, cfg.pipeline.max_frames,
                                  cfg.pipeline.reclaim_after_s, consumers=self.workers)
        if base == "infer":
            from .infer import InferProcess
            spec = self.spec.with_(threads=self.infer_threads) if hasattr(self.spec, "with_") else self.spec
            return InferProcess(rc, spec, self.info.shape, factory=self.detector_factory,
                                worker=int(name.split(".")[1]) if "." in name else 0)
        if name == "track":
            from .track import TrackProcess
            return TrackProcess(rc, cfg.tracker.name, cfg.tracker.options, "sink" in self.stages,
                                id_offset=incarnation * 1_000_000)
        if name == "render":
            from .render import RenderProcess
            video = cfg.output.video
            if video and incarnation:  # never overwrite what an earlier incarnation wrote
                p = Path(video)
                video = str(p.with_name(f"{p.stem}.part{incarnation}{p.suffix}"))
            from .app import resolve_classes
            o = cfg.output
            snaps = None if not o.snapshots else dict(
                folder=o.snapshots, classes=resolve_classes(o.snapshot_classes, self.names),
                quality=o.snapshot_quality)
            return RenderProcess(rc, video, self.info.fps, (self.info.width, self.info.height),
                                 o.fourcc, self._window_on(), self.names, o.labels, snaps)
        if name == "sink":
            from .sink import SinkProcess
            return SinkProcess(rc, cfg.output.mot, cfg.output.events, self.names, cfg.output.track_end_frames,
                               append=incarnation > 0)
        raise ValueError(name)

    def request_stop(self, outcome: str = "stopped") -> None:
        """Stop the run from the main thread (hooks, embedding code); exit code 0."""
        self._stop_requested = outcome

    # --- signals ----------------------------------------------------------------------------
    def _take_signals(self) -> dict:
        """Install the stop handlers; -> the previous ones. A signal an :class:`EarlyStop`
        handler received before (its KeyboardInterrupt may have been swallowed by a library)
        stops this run at once."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        for h in old.values():
            if isinstance(h, EarlyStop) and h.received and self._signal is None:
                self._signal = h.received[0]
        return old

    def _on_signal(self, signum, frame) -> None:
        if self._signal is None:
            self._signal = signum
        # the main loop sees the flag within ~100 ms; never touch locks in a handler

    def _start(self, proc: StageProcess) -> None:
        """Start a child with SIGINT and SIGTERM blocked from its first instruction (the mask is
        inherited through fork and exec): a Ctrl-C during the child's interpreter start-up must
        not kill it; StageProcess.run ignores SIGINT, then unblocks. Only this thread's mask
        changes: setting SIG_IGN here instead would make the process drop a Ctrl-C that another
        thread (FFmpeg's, ONNX Runtime's) picks up meanwhile (start-up Ctrl-Cs lost: 7 in 280 before, 0 in 150)."""
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    # --- main --------------------------------------------------------------------------------
    def run(self) -> int:
        cleanup.clean_stale()
        self.run_id = cleanup.new_run_id()
        self.stages = self._stage_names()
        self._in_main = threading.current_thread() is threading.main_thread()
        old_handlers = {}
        if self._in_main:  # signal handlers can only be set there; elsewhere use request_stop()
            old_handlers = self._take_signals()
        ring = bus = None
        self.procs: Dict[str, StageProcess] = {}
        self.t_start = time.monotonic()
        try:
            run_dir = cleanup.make_run_dir(self.run_id)
            ring = FrameRing.create(cleanup.ring_name(self.run_id), self.cfg.pipeline.ring_slots, self.info.shape)
            ctx = mp.get_context(self.cfg.pipeline.start_method)
            self.board = StageBoard(len(self.stages), ctx)
            self.rc = RunContext(run_id=self.run_id, run_dir=run_dir, ring_name=ring.name, mode=self.mode,
                                 stop=Flag(ctx), go=Flag(ctx), board=self.board,
                                 stage_index={n: i for i, n in enumerate(self.stages)},
                                 stats_interval_s=self.cfg.profile.interval_s,
                                 log_level=logging.getLogger().getEffectiveLevel(),
                                 ring_slots=self.cfg.pipeline.ring_slots)
            bus = Bus(run_dir)
            self.stats_sock = bus.pull(STATS, hwm=100000)
            self.aggs = {n: StageAggregate(n) for n in self.stages}
            self.state: Dict[str, str] = {}
            self.restart_times: Dict[str, deque] = {n: deque() for n in self.stages}
            self.incarnation = {n: 0 for n in self.stages}
            self._hung: Dict[str, float] = {}
            self.metrics = _Metrics(self.cfg.metrics_port) if self.cfg.metrics_port else None
            for n in self.stages:
                self.procs[n] = self._make(n, 0)
                self._start(self.procs[n])
            self._ui = _Ui(self)
            self._loop()
        except PipelineError as e:
            self.error, self.exit_code, self.outcome = str(e), e.exit_code, "failed"
        finally:
            try:
                self._shutdown()
            finally:
                if ring is not None:
                    ring.close()
                    ring.unlink()
                if bus is not None:
                    bus.close()
                cleanup.remove_run(self.run_id)
                for s, h in old_handlers.items():
                    signal.signal(s, h)
        return self.exit_code

    def _loop(self) -> None:
        cfg = self.cfg
        go_at = None
        next_sample = time.monotonic() + cfg.profile.interval_s
        last_out = {n: 0.0 for n in self.bases}
        last_t = time.monotonic()
        while True:
            if self._signal is not None:
                self.outcome = "interrupted"
                self.exit_code = EXIT_SIGINT if self._signal == signal.SIGINT else EXIT_SIGTERM
                log.info("interrupted: stopping")
                return
            if self._stop_requested:
                self.outcome = self._stop_requested
                return
            self._drain(busmod.POLL_MS)
            if self.error:
                return
            if self.state.get("render") == "quit":
                self.outcome = "quit"
                return
            now = time.monotonic()
            # liveness: exit codes first (a dead stage is seen within one poll)
            for n, p in list(self.procs.items()):
                if p.exitcode is None or self.state.get(n) in ("done", "finished"):
                    if p.exitcode is not None:
                        self.state[n] = "finished"
                    continue
                if p.exitcode >= 0:  # its last messages ("done", an error line) may still be in flight
                    self._drain(200)
                if self.procs.get(n) is not p:  # already restarted while draining
                    continue
                if self.state.get(n) == "done":
                    self.state[n] = "finished"
                    continue
                if self.state.get(n) == "error" or self.error:
                    if self.error:
                        return
                    continue  # reported (and handled) with its own message
                hung = self._hung.pop(n, None)
                self._stage_failed(n, f"stage '{n}' hung (no heartbeat for {hung:.1f}s) and was killed" if hung
                                   else f"stage '{n}' died ({_describe_exit(p.exitcode)})")
                if self.error:
                    return
            # heartbeats of ready stages
            for n, p in self.procs.items():
                i = self.rc.stage_index[n]
                if p.exitcode is None and self.board.get(i, StageBoard.READY):
                    silent = now - self.board.get(i, StageBoard.BEAT)
                    if silent > cfg.pipeline.heartbeat_timeout_s:
                        self._hung[n] = silent
                        self.state[n] = "hung"
                        _kill(p)
            if go_at is None:
                if all(self.board.get(self.rc.stage_index[n], StageBoard.READY) for n in self.stages):
                    go_at = now
                    i = self.info
                    log.info("ready in %.1fs: %s %s %dx%d @ %.2f fps%s; %s; %d infer worker(s) x %d thread(s); run %s",
                             now - self.t_start, i.kind, i.uri, i.width, i.height, i.fps,
                             f", {i.frames} frames" if i.frames else "", self.mode, self.workers, self.infer_threads,
                             self.run_id)
                    self.rc.go.set()
                elif now - self.t_start > cfg.pipeline.start_timeout_s:
                    waiting = [n for n in self.stages if not self.board.get(self.rc.stage_index[n], StageBoard.READY)]
                    raise PipelineError(f"stages not ready after {cfg.pipeline.start_timeout_s:g}s: "
                                        f"{', '.join(waiting)}")
            # done when the last consumers have seen the end of the stream (idle infer workers
            # that got no end-of-stream message are stopped by the shutdown)
            if all(self.state.get(n) == "finished" for n in self.stages if n in ("render", "sink")):
                return
            if now >= next_sample:
                dt = now - last_t
                row = {"t": time.time()}
                for n in self.bases:
                    out = self.group_count(n, StageBoard.OUT)
                    row[n] = round((out - last_out[n]) / dt, 3) if dt > 0 else 0.0
                    last_out[n] = out
                    self.aggs[n].sample_depth(self.queue_depth(n))
                if go_at is not None:
                    self.timeline.append(row)
                    if len(self.timeline) > 100000:
                        del self.timeline[::2]
                last_t, next_sample = now, now + cfg.profile.interval_s
                if self.metrics:
                    self.metrics.update(self, row)
            self._ui.update()
            if self.on_tick:
                self.on_tick(self)

    def queue_depth(self, n: str) -> float:
        """Items waiting at the input of stage ``n`` (capture: frames in flight, i.e. slots in use)."""
        c = self.group_count
        if n == "capture":
            return max(0.0, c("capture", StageBoard.OUT) - c("render", StageBoard.OUT))
        up = {"infer": "capture", "track": "infer", "render": "track", "sink": "track"}[n]
        return max(0.0, c(up, StageBoard.OUT) - c(n, StageBoard.IN))

    def _drain(self, timeout_ms: int) -> None:
        msg = busmod.recv(self.stats_sock, timeout_ms)
        while msg is not None:
            self._handle(*msg)
            msg = busmod.recv_nowait(self.stats_sock)

    def _handle(self, kind: str, h: dict, arrays) -> None:
        if kind == "stats":
            agg = self.aggs.get(h["stage"])
            if agg is not None:
                agg.update(h)
        elif kind == "log":
            logging.getLogger(h.get("name", "pipeline")).log(h.get("level", logging.INFO), "%s: %s",
                                                             h.get("stage"), h.get("msg"))
        elif kind == "state":
            n, st = h.get("stage"), h.get("state")
            if st == "error":
                self.state[n] = "error"
                was_ready = self.board.get(self.rc.stage_index[n], StageBoard.READY)
                self._stage_failed(n, f"{n}: {h.get('message')}", setup_error=not was_ready)
            elif st == "quit":
                self.state["render"] = "quit"
            else:
                self.state[n] = st

    def _stage_failed(self, n: str, message: str, setup_error: bool = False) -> None:
        """A stage died or reported an error: restart it (live, runtime failures) or stop."""
        if self.error or self._signal is not None or self.rc.stop.is_set():
            return
        self.failed_at = time.monotonic()
        if setup_error:  # deterministic (bad model, unwritable file...): restarting cannot help
            self.error, self.exit_code, self.outcome = message, EXIT_BAD_INPUT, "failed"
            return
        if not self.live:
            self.error, self.exit_code, self.outcome = message + "; stopping (a file source cannot skip frames)", \
                EXIT_FAILED, "failed"
            return
        p = self.procs[n]
        if p.exitcode is None:  # reported an error but still alive: make sure it is gone
            _kill(p)
        now = time.monotonic()
        times = self.restart_times[n]
        while times and now - times[0] > 60.0:
            times.popleft()
        limit = self.cfg.pipeline.max_restarts_per_min
        if len(times) >= limit:
            self.error, self.exit_code, self.outcome = (
                f"{message}; it failed {len(times) + 1} times within a minute (limit {limit}); stopping",
                EXIT_FAILED, "failed")
            return
        times.append(now)
        self.incarnation[n] += 1
        log.warning("%s; restarting it (%d/%d this minute)", message, len(times), limit)
        self.aggs[n].new_incarnation()
        self.state.pop(n, None)
        self.procs[n] = self._make(n, self.incarnation[n])
        self._start(self.procs[n])

    # --- shutdown ------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        rc = getattr(self, "rc", None)
        if rc is not None:
            rc.stop.set()
        procs = list(self.procs.values())
        if rc is not None:  # a stage still starting (importing, loading a model) has nothing to save
            for n, p in self.procs.items():
                if p.exitcode is None and not self.board.get(rc.stage_index[n], StageBoard.READY):
                    _kill(p)
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
                _kill(p)
        for p in procs:
            p.join(timeout=2.0)
        if hasattr(self, "stats_sock"):
            self._drain_quiet(100)
            if hasattr(self, "_ui"):
                self._ui.close()
            self._write_profile()
        if getattr(self, "metrics", None):
            self.metrics.close()

    def _drain_quiet(self, timeout_ms: int) -> None:
        try:
            msg = busmod.recv(self.stats_sock, timeout_ms)
            while msg is not None:
                kind, h, a = msg
                if kind in ("stats", "log"):
                    self._handle(kind, h, a)
                msg = busmod.recv_nowait(self.stats_sock)
        except Exception:
            pass

    def _write_profile(self) -> None:
        meta = {"outcome": self.outcome, "mode": self.mode, "wall_s": round(time.monotonic() - self.t_start, 3),
                "source": {k: getattr(self.info, k)
                           for k in ("kind", "uri", "width", "height", "fps", "frames", "live")},
                "model": {"cfg": str(getattr(self.spec, "cfg", "")), "backend": getattr(self.spec, "backend", ""),
                          "threads": self.infer_threads, "infer_workers": self.workers,
                          "size": list(getattr(self.spec, "size", ())),
                          "precision": getattr(self.spec, "precision", "")},
                "tracker": self.cfg.tracker.name, "ring_slots": self.cfg.pipeline.ring_slots,
                "cpu_count": os.cpu_count(), "timeline": self.timeline}
        if self.error:
            meta["error"] = self.error
        self.report = build_report({b: self.group(b) for b in self.bases}, meta)
        if not self.rc.go.is_set():
            return  # the run never started (bad model, ...): no profile file
        p = self.cfg.profile
        try:
            if p.path:
                Path(p.path).parent.mkdir(parents=True, exist_ok=True)
                write_report(self.report, p.path)
            if p.plot:
                Path(p.plot).parent.mkdir(parents=True, exist_ok=True)
                plot_timeline(self.timeline, p.plot)
        except OSError as e:
            log.error("cannot write the profile: %s", e)


def infer_plan(spec, mode: str, workers: int = 0) -> tuple:
    """-> (infer processes, backend threads per process).

    On a CPU, files (lossless) get 2 infer processes of (cores - 1) // 2 threads each (at
    least 1): two frames in flight at once scale better than intra-op threads on few cores,
    and a core's worth of time stays for decoding, drawing and encoding. Live sources
    (latest frame) and GPU backends get one process. ``threads`` set in the spec (not 0)
    and ``workers`` set in the config (not 0) are kept."""
    cores = os.cpu_count() or 1
    backend = getattr(spec, "backend", "auto")
    gpu = backend in ("tensorrt", "tftrt") or (backend == "auto" and _has_tensorrt())
    if not workers:
        workers = 2 if (mode == "lossless" and not gpu and cores >= 2) else 1
    threads = getattr(spec, "threads", 0) or max(1, (cores - 1) // workers)
    return workers, threads


def _has_tensorrt() -> bool:
    import importlib.util
    return importlib.util.find_spec("tensorrt") is not None


def _kill(p) -> None:
    try:
        os.kill(p.pid, signal.SIGKILL)
    except (ProcessLookupError, TypeError):
        pass


class _Ui:
    """Progress bar (files) or live per-stage table (live sources), on stderr."""

    def __init__(self, sup: Supervisor):
        self.sup = sup
        cfg = sup.cfg
        self.bar = None
        self.live = None
        self.next_log = time.monotonic() + cfg.profile.log_interval_s
        tty = sys.stderr.isatty()
        table = cfg.profile.table
        want_table = table == "on" or (table == "auto" and sup.live and tty and not cfg.output.headless)
        if want_table:
            from rich.console import Console
            from rich.live import Live
            self.live = Live(self._table(), console=Console(stderr=True), refresh_per_second=2, transient=False)
            self.live.start()
        elif not sup.live and tty:
            from tqdm import tqdm
            total = sup.info.frames or None
            if total and cfg.pipeline.max_frames:
                total = min(total, cfg.pipeline.max_frames)
            self.bar = tqdm(total=total, unit="frame", desc="trackpipe", file=sys.stderr, dynamic_ncols=True)
        self._last = 0.0

    def _table(self):
        from rich.table import Table
        s = self.sup
        t = Table(title=f"trackpipe {s.info.kind} {s.mode}", expand=False)
        for c in ("stage", "fps", "ms p50", "ms p95", "wait p50", "queue", "drops", "restarts"):
            t.add_column(c, justify="right" if c != "stage" else "left")
        rows = s.timeline[-1] if s.timeline else {}
        for n in s.bases:
            agg = s.group(n)
            r = agg.report() if agg.total() else {}
            t.add_row(n, f"{rows.get(n, 0.0):.1f}", _fmt(r.get("ms_p50")), _fmt(r.get("ms_p95")),
                      _fmt(r.get("wait_ms_p50")), f"{s.queue_depth(n):.0f}", str(r.get("drops", 0)),
                      str(agg.restarts))
        ren = s.aggs["render"].total()
        if ren:
            from .stats import Histogram
            lat = Histogram.from_dict(ren.get("hists", {}).get("latency"))
            t.caption = f"latency p50 {_fmt(lat.percentile(50))} ms, p95 {_fmt(lat.percentile(95))} ms"
        return t

    def update(self) -> None:
        now = time.monotonic()
        s = self.sup
        if self.bar is not None:
            out = s.board.get(s.rc.stage_index["render"], StageBoard.OUT)
            if out > self._last:
                self.bar.update(int(out - self._last))
                self._last = out
        elif self.live is not None:
            if now - getattr(self, "_t_tab", 0) > 0.5:
                self._t_tab = now
                self.live.update(self._table())
        elif s.live and s.cfg.profile.log_interval_s and now >= self.next_log:
            self.next_log = now + s.cfg.profile.log_interval_s
            row = s.timeline[-1] if s.timeline else {}
            log.info("stats: " + ", ".join(f"{n} {row.get(n, 0.0):.1f} fps/{s.group(n).report()['drops']} drops"
                                           for n in s.bases))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.live is not None:
            self.live.update(self._table())
            self.live.stop()


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


class _Metrics:
    """Prometheus metrics on 127.0.0.1 (a registry of our own; the server thread is a daemon)."""

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
        try:
            res = start_http_server(port, addr="127.0.0.1", registry=self.reg)
        except OSError as e:
            raise PipelineError(f"cannot serve metrics on 127.0.0.1:{port}: {e.strerror}") from None
        self.server = res[0] if isinstance(res, tuple) else None

    def update(self, sup: Supervisor, row: dict) -> None:
        from .stats import Histogram
        for n in sup.bases:
            g = sup.group(n)
            r = g.report()
            self.fps.labels(n).set(row.get(n, 0.0))
            self.items.labels(n).set(r["items"])
            self.drops.labels(n).set(r["drops"])
            self.depth.labels(n).set(sup.queue_depth(n))
            self.restarts.labels(n).set(g.restarts)
        cap = sup.aggs["capture"].total()
        if cap:
            ex = cap.get("extra", {})
            self.source_up.set(ex.get("source_up", 1))
            self.source_lost.set(ex.get("source_lost", 0))
            self.reconnects.set(ex.get("reconnects", 0))
        trk = sup.aggs["track"].total() if "track" in sup.aggs else None
        if trk and "frame_age_ms" in trk.get("extra", {}):
            self.age.set(trk["extra"]["frame_age_ms"])
        ren = sup.aggs["render"].total()
        if ren:
            lat = Histogram.from_dict(ren.get("hists", {}).get("latency"))
            for q in (50, 95, 99):
                v = lat.percentile(q)
                if v is not None:
                    self.latency.labels(f"p{q}").set(v)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
