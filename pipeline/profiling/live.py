"""What a run shows on stderr while it runs: a progress bar, a live per-stage table or log lines."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from .profiler import Profiler

log = logging.getLogger(__name__)


class _WriteHandler(logging.Handler):
    """A console log handler that writes through ``write(line)`` (tqdm.write, rich's console),
    so that log lines go above the progress bar or the live table instead of into them."""

    def __init__(self, write: Callable[[str], None], like: logging.Handler):
        super().__init__(like.level)
        self.write = write
        self.setFormatter(like.formatter)
        for f in like.filters:
            self.addFilter(f)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record))
        except Exception:
            self.handleError(record)


class LiveView:
    """Progress bar (files), live per-stage table (live sources) or a stats log line, on stderr.
    While the bar or the table is shown, the root logger's stderr handlers write through it."""

    def __init__(self, prof: Profiler, cfg, info, mode: str, live: bool, frames_out: Callable[[], float]):
        self.prof = prof
        self.cfg, self.info, self.mode, self.is_live = cfg, info, mode, live
        self.frames_out = frames_out
        self.bar = None
        self.table = None           # rich.live.Live of the per-stage table
        self._swapped = []          # (original handler, its replacement) on the root logger
        self.next_log = time.monotonic() + cfg.profile.log_interval_s
        tty = sys.stderr.isatty()
        want = cfg.profile.table
        want_table = want == "on" or (want == "auto" and live and tty and not cfg.output.headless)
        if want_table:
            from rich.console import Console
            from rich.live import Live
            console = Console(stderr=True)
            self.table = Live(self._table(), console=console, refresh_per_second=2, transient=False)
            self.table.start()
            self._redirect_logs(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
        self.want_bar = not want_table and not live and tty
        self._last = 0.0
        self._t_last = None         # monotonic time the bar last moved

    def started(self) -> None:
        """The stages run: the progress bar starts now, so that its rate is the run's, not the
        start-up's. Its rate is the average over the run (smoothing 0), as the profile's FPS."""
        if not self.want_bar or self.bar is not None:
            return
        from tqdm import tqdm
        total = self.info.frames or None
        if total and self.cfg.pipeline.max_frames:
            total = min(total, self.cfg.pipeline.max_frames)
        self.bar = tqdm(total=total, unit="frame", desc="trackpipe", file=sys.stderr, dynamic_ncols=True,
                        smoothing=0)
        self._redirect_logs(lambda line: tqdm.write(line, file=sys.stderr))

    def _redirect_logs(self, write: Callable[[str], None]) -> None:
        root = logging.getLogger()
        for h in list(root.handlers):
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__):
                repl = _WriteHandler(write, h)
                root.removeHandler(h)
                root.addHandler(repl)
                self._swapped.append((h, repl))

    def _restore_logs(self) -> None:
        root = logging.getLogger()
        for h, repl in self._swapped:
            root.removeHandler(repl)
            root.addHandler(h)
        self._swapped.clear()

    def _table(self):
        from rich.table import Table
        p = self.prof
        t = Table(title=f"trackpipe {self.info.kind} {self.mode}", expand=False)
        for c in ("stage", "fps", "ms p50", "ms p95", "wait p50", "queue", "drops", "restarts"):
            t.add_column(c, justify="right" if c != "stage" else "left")
        rows = p.timeline[-1] if p.timeline else {}
        for n in p.stages:
            agg = p.group(n)
            r = agg.report() if agg.total() else {}
            t.add_row(n, f"{rows.get(n, 0.0):.1f}", _fmt(r.get("ms_p50")), _fmt(r.get("ms_p95")),
                      _fmt(r.get("wait_ms_p50")), f"{p.queue_depth(n):.0f}", str(r.get("drops", 0)),
                      str(agg.restarts))
        lat = p.hist("render", "latency")
        if lat.n:
            t.caption = f"latency p50 {_fmt(lat.percentile(50))} ms, p95 {_fmt(lat.percentile(95))} ms"
        return t

    def update(self) -> None:
        now = time.monotonic()
        p = self.prof
        if self.bar is not None:
            out = self.frames_out()
            if out > self._last:
                self.bar.update(int(out - self._last))
                self._last = out
                self._t_last = now
        elif self.table is not None:
            if now - getattr(self, "_t_tab", 0) > 0.5:
                self._t_tab = now
                self.table.update(self._table())
        elif self.is_live and self.cfg.profile.log_interval_s and now >= self.next_log:
            self.next_log = now + self.cfg.profile.log_interval_s
            row = p.timeline[-1] if p.timeline else {}
            cams = [f"{k[7:]} {v:.1f}" for k, v in row.items() if k.startswith("camera:")]
            log.info("stats: " + ", ".join(f"{n} {row.get(n, 0.0):.1f} fps/{p.group(n).report()['drops']} drops"
                                           for n in p.stages)
                     + (f"; cameras (fps): {', '.join(cams)}" if len(cams) > 1 else ""))

    def close(self) -> None:
        self._restore_logs()
        if self.bar is not None:
            if self._t_last is not None:  # the final rate: frames over the time they took, not the shutdown's
                self.bar.start_t += time.monotonic() - self._t_last
            self.bar.close()
        if self.table is not None:
            self.table.update(self._table())
            self.table.stop()


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"
