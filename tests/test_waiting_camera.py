"""A camera that never comes: "still waiting for <camera> (since HH:MM:SS)" again and again with a
growing gap (`media.waiting`, ``source.still_waiting_s``), and its state "waiting" in the profile's
``cameras`` (what the live view's API reads), against real RTSP URLs where no server listens."""

from __future__ import annotations

import logging
import re
import time

import pytest

from conftest import fake_detector_factory
from rtsp.fixtures import rtsp_server_factory  # noqa: F401 - fixture
from trackpipe.pipeline.config import Config, Layer, build_config
from trackpipe.pipeline.media.waiting import STILL_WAITING_S, StillWaiting
from trackpipe.pipeline.profiling.profiler import source_state

HMS = r"\d\d:\d\d:\d\d"


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_still_waiting_gaps_grow_then_repeat():
    clock = FakeClock()
    w = StillWaiting(clock=clock, wall=lambda: 1796609160.0)
    assert not w.due()                      # not waiting: never due
    w.begin()
    said = []
    while clock.t < 60 + 300 + 900 + 3 * 3600 + 1:
        clock.t += 1.0
        if w.due():
            said.append(clock.t)
    assert said == [60.0, 360.0, 1260.0, 4860.0, 8460.0, 12060.0]
    assert re.fullmatch(rf"still waiting for cam1 \(since {HMS}\)", w.line("cam1"))
    w.end()
    clock.t += 10_000
    assert not w.due() and not w.waiting
    w.begin()                               # a new wait starts the schedule afresh
    clock.t += STILL_WAITING_S[0]
    assert w.due()
    with pytest.raises(ValueError):
        StillWaiting([])


def test_source_state_from_capture_gauges():
    assert source_state({}) == ""                                        # a file's capture
    assert source_state({"source_up": 1, "frames_grabbed": 0}) == "starting"
    assert source_state({"source_up": 0, "frames_grabbed": 0}) == "waiting"
    assert source_state({"source_up": 0, "frames_grabbed": 12}) == "lost"
    assert source_state({"source_up": 1, "frames_grabbed": 12}) == "live"


def test_absent_camera_at_start_says_still_waiting_with_backoff(caplog):
    """One camera, absent at start: probed again and again (a real connection refused each
    time); the lines follow the default schedule on a fake clock, at the retries."""
    from tests.rtsp.fixtures import free_port
    from trackpipe.pipeline.runtime.inputs import probe_source

    cfg = Config()
    cfg.source.uri = f"rtsp://user:secret@127.0.0.1:{free_port()}/cam"
    cfg.source.open_timeout_s = 2.0
    cfg.source.backoff_max_s = 600.0
    clock = FakeClock()
    tries = []

    def sleep(s):
        tries.append(clock.t)
        clock.t += s
        if clock.t > 10_000:
            raise KeyboardInterrupt

    at = []     # the fake clock when each line was said
    logger = logging.getLogger("trackpipe.pipeline.runtime.inputs")
    hook = logging.Filter()
    hook.filter = lambda record: at.append(clock.t) or True
    logger.addFilter(hook)
    try:
        with caplog.at_level(logging.WARNING, logger="trackpipe.pipeline.runtime.inputs"):
            with pytest.raises(KeyboardInterrupt):
                probe_source(cfg.source, clock=clock, sleep=sleep, name="door")
    finally:
        logger.removeFilter(hook)
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith("waiting for door rtsp://") and "secret" not in said[0]
    still = said[1:]
    assert still and all(re.fullmatch(rf"still waiting for door rtsp://\S+ \(since {HMS}\)", m) for m in still)
    assert "secret" not in " ".join(still)
    # 1, 5, 15 min, then hourly, each at the first try after it was due (late by at most one backoff)
    gaps = [b - a for a, b in zip(at, at[1:])]
    want = [*STILL_WAITING_S, STILL_WAITING_S[-1]][:len(gaps)]
    assert len(gaps) >= 4 and all(w <= g <= w + 2 * cfg.source.backoff_max_s for g, w in zip(gaps, want)), gaps
    assert len(tries) < 40


@pytest.mark.timeout(180)
def test_camera_that_never_comes_is_waiting_while_the_other_runs(rtsp_server_factory, tmp_path, yf_spec,  # noqa: F811
                                                                  caplog):
    from tests.rtsp.fixtures import free_port
    from trackpipe.pipeline.runtime.app import run_pipeline

    srv = rtsp_server_factory(width=320, height=240, fps=15)
    absent = f"rtsp://127.0.0.1:{free_port()}/never"
    cfg = build_config([Layer({
        "cameras": [{"name": "yard", "uri": srv.url}, {"name": "door", "uri": absent}],
        "source": {"open_timeout_s": 2.0, "backoff_initial_s": 0.2, "backoff_max_s": 0.5,
                   "still_waiting_s": [1.0, 2.0]},
        "output": {"headless": True},
        "profile": {"path": str(tmp_path / "profile.json"), "interval_s": 0.2}}, "test")])
    st = {"t": None}

    def hook(sup):
        now = time.monotonic()
        st["t"] = st["t"] or now
        assert now - st["t"] < 90, "the run never showed the waiting camera"
        states = {n: c.get("state") for n, c in sup.profiler.camera_report().items()}
        lines = [r for r in caplog.records if "still waiting for door" in r.getMessage()]
        if states == {"yard": "live", "door": "waiting"} and len(lines) >= 3:
            sup.request_stop()

    with caplog.at_level(logging.INFO):
        res = run_pipeline(cfg, yf_spec.with_(extra={}), fake_detector_factory, on_tick=hook)
    assert res.exit_code == 0, res.error
    cams = res.report["cameras"]
    assert cams["door"]["state"] == "waiting" and cams["door"]["frames_in"] == 0
    assert cams["yard"]["state"] == "live" and cams["yard"]["frames_in"] > 0
    msgs = [r.getMessage() for r in caplog.records]
    assert all(re.search(rf"still waiting for door \(since {HMS}\)$", m) for m in msgs if "still waiting" in m)
    assert not [m for m in msgs if "reconnecting in" in m]   # each retry is a DEBUG detail
