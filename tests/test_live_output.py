"""What a run writes on a terminal: log lines go above the progress bar and the live table
(never spliced into them), and the handlers are given back afterwards."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from trackpipe.pipeline.config import Config
from trackpipe.pipeline.media.sources import SourceInfo
from trackpipe.pipeline.profiling.live import LiveView
from trackpipe.pipeline.profiling.profiler import Profiler
from trackpipe.pipeline.runtime.topology import Topology


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch):
    """-> install(): a fake terminal as sys.stderr with the root logger writing to it (as cli.py
    sets it up). Called in the test itself: pytest swaps sys.stderr back between phases."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def install():
        term = _Tty()
        monkeypatch.setattr(sys, "stderr", term)
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        root.handlers[:] = [h]
        root.setLevel(logging.INFO)
        return term, h

    yield install
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _view(cfg: Config, live: bool, done=lambda: 5.0) -> LiveView:
    t = Topology.build(1, sink=False)
    prof = Profiler(t, lambda p, f: 0.0)
    info = SourceInfo("stream" if live else "file", "x", 640, 360, 30.0, 0 if live else 100, live)
    return LiveView(prof, cfg, info, "latest" if live else "lossless", live, done)


@pytest.mark.parametrize("kind", ["bar", "table"])
def test_log_lines_go_above_the_bar_and_the_table(terminal, kind):
    term, handler = terminal()
    cfg = Config()
    if kind == "table":
        cfg.profile.table = "on"
    view = _view(cfg, live=kind == "table")
    view.started()
    assert (view.bar is not None) == (kind == "bar") and (view.table is not None) == (kind == "table")
    view.update()
    logging.getLogger("trackpipe.test").warning("camera door lost")
    view.update()
    view.close()
    out = term.getvalue()
    # the line starts a line of its own and ends it (tqdm clears the bar first, rich prints above)
    assert re.search(r"(^|\n|\r)(\x1b\[[0-9;?]*[A-Za-z])*WARNING camera door lost\s*\n", out), repr(out[-800:])
    assert logging.getLogger().handlers == [handler]        # given back


def test_headless_live_runs_log_a_stats_line(terminal):
    term, _ = terminal()
    cfg = Config()
    cfg.output.headless = True
    cfg.profile.log_interval_s = 0.001
    view = _view(cfg, live=True)
    assert view.bar is None and view.table is None
    import time
    time.sleep(0.01)
    view.update()
    view.close()
    assert "INFO stats: capture" in term.getvalue()
