"""What a run shows on stderr while it runs: a progress bar, a live per-stage table or log lines."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from .profiler import Profiler

log = logging.getLogger(__name__)


class LiveView:
    """Progress bar (files), live per-stage table (live sources) or a stats log line, on stderr."""

    def __init__(self, prof: Profiler, cfg, info, mode: str, live: bool, frames_out: Callable[[], float]):
        self.prof = prof
        self.cfg, self.info, self.mode, self.live = cfg, info, mode, live
        self.frames_out = frames_out
        self.bar = None
        self.live = None
        self.next_log = time.monotonic() + cfg.profile.log_interval_s
        tty = sys.stderr.isatty()
        table = cfg.profile.table
        want_table = table == "on" or (table == "auto" and live and tty and not cfg.output.headless)
        if want_table:
            from rich.console import Console
            from rich.live import Live
            self.live = Live(self._table(), console=Console(stderr=True), refresh_per_second=2, transient=False)
            self.live.start()
        elif not live and tty:
            from tqdm import tqdm
            total = info.frames or None
            if total and cfg.pipeline.max_frames:
                total = min(total, cfg.pipeline.max_frames)
            self.bar = tqdm(total=total, unit="frame", desc="trackpipe", file=sys.stderr, dynamic_ncols=True)
        self._last = 0.0

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
        elif self.live is not None:
            if now - getattr(self, "_t_tab", 0) > 0.5:
                self._t_tab = now
                self.live.update(self._table())
        elif self.live and self.cfg.profile.log_interval_s and now >= self.next_log:
            self.next_log = now + self.cfg.profile.log_interval_s
            row = p.timeline[-1] if p.timeline else {}
            log.info("stats: " + ", ".join(f"{n} {row.get(n, 0.0):.1f} fps/{p.group(n).report()['drops']} drops"
                                           for n in p.stages))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.live is not None:
            self.live.update(self._table())
            self.live.stop()


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"
