"""The supervisor's parts alone: the topology table, the profiler's queue depths from it, the
restart policy and its backoff, the hung check of restarted stages, the stop signals, and the
checks made before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trackpipe.pipeline.config import Config
from trackpipe.pipeline.errors import ConfigError
from trackpipe.pipeline.profiling.profiler import IN, OUT, Profiler
from trackpipe.pipeline.runtime.inputs import check_display, check_tracker, display_mode
from trackpipe.pipeline.common.shared import StageBoard
from trackpipe.pipeline.runtime.topology import Topology
from trackpipe.pipeline.runtime.watchdog import RestartPolicy, describe_exit, silent_stages, slow_restarts


def test_topology_table():
    t = Topology.build(infer_workers=2, sink=True)
    assert t.names == ["capture", "infer", "track", "render", "sink"]
    assert t.processes == ["capture", "infer", "infer.1", "track", "render", "sink"]
    assert t.terminal == ["render", "sink"] and t.spec("track").downstream == ("render", "sink")
    assert Topology.stage_of("infer.1") == "infer" and Topology.worker_of("infer.1") == 1
    t = Topology.build(infer_workers=1, sink=False)
    assert "sink" not in t and t.terminal == ["render"] and t.spec("track").downstream == ("render",)


def test_profiler_queue_depths_follow_the_table():
    t = Topology.build(infer_workers=2, sink=True)
    counts = {("capture", OUT): 10, ("infer", IN): 4, ("infer.1", IN): 3, ("infer", OUT): 4, ("infer.1", OUT): 3,
              ("track", IN): 5, ("track", OUT): 5, ("render", IN): 5, ("render", OUT): 4, ("sink", IN): 5}
    p = Profiler(t, lambda proc, field: counts.get((proc, field), 0))
    assert p.queue_depth("capture") == 6        # frames in flight: captured, not yet released by render
    assert p.queue_depth("infer") == 3          # both workers' inputs together
    assert p.queue_depth("track") == 2 and p.queue_depth("render") == 0 and p.queue_depth("sink") == 0
    row = p.sample(p.next_sample, running=True)
    assert set(row) == {"t", *t.names, "camera:cam0"} and p.timeline == [row]


def test_one_capture_process_per_camera():
    t = Topology.build(infer_workers=2, sink=True, cameras=3)
    assert t.members("capture") == ["capture", "capture.1", "capture.2"]
    assert t.processes[:5] == ["capture", "capture.1", "capture.2", "infer", "infer.1"]
    counts = {("capture", OUT): 5, ("capture.1", OUT): 2, ("capture.2", OUT): 4}
    p = Profiler(t, lambda proc, field: counts.get((proc, field), 0), cameras=["door", "yard", "road"])
    row = p.sample(p.next_sample + 1.0, running=True)
    assert {k for k in row if k.startswith("camera:")} == {"camera:door", "camera:yard", "camera:road"}
    assert row["camera:door"] > row["camera:road"] > row["camera:yard"] > 0
    assert p.queue_depth("capture") == 11        # every camera's frames in flight


def test_restart_policy_window():
    now = [0.0]
    r = RestartPolicy(2, clock=lambda: now[0])
    assert r.allow("infer") and r.allow("infer") and not r.allow("infer") and r.allow("track")
    now[0] = 61.0
    assert r.allow("infer") and r.recent("infer") == 1
    assert describe_exit(-9) == "killed by SIGKILL" and describe_exit(3) == "exit code 3"


def test_restart_backoff_doubles_within_the_minute():
    now = [0.0]
    r = RestartPolicy(10, clock=lambda: now[0], backoff_initial_s=1.0, backoff_max_s=4.0)
    waits = []
    for _ in range(5):
        assert r.allow("infer")
        waits.append(r.backoff_s("infer"))
    assert waits == [0.0, 1.0, 2.0, 4.0, 4.0] and r.backoff_s("track") == 0.0
    now[0] = 200.0                              # a quiet minute later: at once again
    assert r.allow("infer") and r.backoff_s("infer") == 0.0


class _Proc:
    def __init__(self, exitcode=None):
        self.exitcode = exitcode


def test_hung_check_spares_a_restarted_stage_until_it_is_ready_and_its_grace_is_over():
    """The stage board row of a killed stage keeps its old heartbeat and ready flag: a restart
    starts on a cleared row, and its silence counts from its own start at the earliest."""
    board = StageBoard(2)
    index = {"infer": 0, "track": 1}
    board.set(0, StageBoard.READY, 1.0)
    board.set(0, StageBoard.BEAT, 100.0)         # the frozen process's last beat
    board.set(0, StageBoard.IN, 7.0)
    procs = {"infer": _Proc(), "track": _Proc()}
    assert silent_stages(board, procs, index, 10.0, now=111.0) == {"infer": 11.0}
    # restarted at 111: ready at once (a stale row) would still count from its start
    assert silent_stages(board, procs, index, 10.0, now=115.0, since={"infer": 111.0}) == {}
    assert silent_stages(board, procs, index, 10.0, now=121.5, since={"infer": 111.0}) == {"infer": 10.5}
    board.reset(0)                               # what the supervisor does before the restart
    assert board.get(0, StageBoard.READY) == 0.0 and board.get(0, StageBoard.BEAT) == 0.0
    assert board.get(0, StageBoard.IN) == 7.0    # counters go on across restarts
    assert silent_stages(board, procs, index, 10.0, now=500.0, since={"infer": 111.0}) == {}
    # ... but a restart that never becomes ready is hung after the start-up timeout
    assert slow_restarts(board, procs, index, {"infer": 111.0}, 30.0, now=140.0) == {}
    assert slow_restarts(board, procs, index, {"infer": 111.0}, 30.0, now=142.0) == {"infer": 31.0}
    board.set(0, StageBoard.READY, 1.0)
    assert slow_restarts(board, procs, index, {"infer": 111.0}, 30.0, now=142.0) == {}
    assert slow_restarts(board, {"infer": _Proc(-9), "track": _Proc()}, index, {"infer": 1.0}, 30.0, 142.0) == {}


_SIGNALS_CHECK = """
import os, signal
from trackpipe.pipeline.runtime.signals import EarlyStop, StopSignals
before = signal.getsignal(signal.SIGTERM)
s = StopSignals()
s.install()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    assert s.received == signal.SIGTERM, s.received
finally:
    s.restore()
assert signal.getsignal(signal.SIGTERM) == before
early = EarlyStop()
early.received.append(signal.SIGINT)
old = signal.signal(signal.SIGINT, early)
try:
    s = StopSignals()
    s.install()                              # a Ctrl-C during start-up counts
    assert s.received == signal.SIGINT, s.received
    s.restore()
finally:
    signal.signal(signal.SIGINT, old)
print("ok")
"""


def test_stop_signals_record_and_restore():
    """A real SIGTERM to a process of its own (not to pytest's process, whose other threads,
    e.g. a browser driver's, are none of this test's business)."""
    r = subprocess.run([sys.executable, "-c", _SIGNALS_CHECK], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_tracker_options_checked_before_anything_starts():
    c = Config()
    c.tracker.options = {"max_age": 5}
    check_tracker(c)
    c.tracker.options = {"max_agee": 5}
    with pytest.raises(ConfigError, match="tracker: .*max_agee"):
        check_tracker(c)
    c.tracker.name, c.tracker.options = "sorty", {}
    with pytest.raises(ConfigError, match="tracker: unknown tracker 'sorty'"):
        check_tracker(c)


def test_display_modes(monkeypatch):
    c = Config()
    c.output.headless = True
    assert display_mode(c) == "none"
    c.output.headless, c.output.window = False, "on"
    assert display_mode(c) == "window"
    c.output.window = "off"
    assert display_mode(c) == "none"
    c.output.display = "mirror"
    assert display_mode(c) == "mirror"
    c.output.video = "x.mp4"
    with pytest.raises(ConfigError, match="output.display mirror: the annotated video"):
        check_display(c)
    c.output.video, c.output.display, c.source.uri = None, "overlay", "video.mp4"
    with pytest.raises(ConfigError, match="overlay needs a screen source"):
        check_display(c)
    c.output.region = [0, 0, 0, 10]
    with pytest.raises(ConfigError, match="output.region"):
        check_display(c)


def test_bad_tracker_option_stops_the_run_before_any_process(yf_spec):
    from conftest import VIDEO_360, leftovers
    from trackpipe.pipeline.runtime.app import run_pipeline
    c = Config()
    c.source.uri = str(VIDEO_360)
    c.output.headless = True
    c.tracker.options = {"max_agee": 5}
    res = run_pipeline(c, yf_spec)
    assert (res.exit_code, res.outcome, res.report) == (2, "bad_input", None)
    assert res.error.startswith("tracker: ") and "max_agee" in res.error
    assert leftovers(os.getpid()) == []


def test_each_stage_gets_one_picklable_settings_object_built_from_the_config_tree(tmp_path):
    """`StageSettingsBuilder`: per stage one frozen settings object, made once from the config tree
    and the cameras (paths, zones, classes resolved), that survives the pickling of spawn."""
    import dataclasses
    import pickle

    from trackpipe.models.spec import ModelSpec
    from trackpipe.pipeline.config import Layer, build_config
    from trackpipe.pipeline.media.sources import SourceInfo
    from trackpipe.pipeline.runtime.cameras import resolve_cameras
    from trackpipe.pipeline.runtime.processes import STAGES, RunPlan, StageSettingsBuilder

    cfg = build_config([Layer({
        "cameras": [{"name": "road", "uri": "a.mp4", "classes": [2]}, {"name": "gate", "uri": "b.mp4"}],
        "zones": [{"name": "door", "camera": "gate", "points": [[0, 0], [1, 0], [1, 1]]}],
        "output": {"mot": str(tmp_path / "{camera}.txt"), "events": str(tmp_path / "ev.jsonl"),
                   "snapshot_classes": [0], "labels": False},
        "mqtt": {"url": "mqtt://127.0.0.1:1883", "snapshots": True},
        "webhooks": ["http://127.0.0.1:9/hook"]}, "test")])
    info = SourceInfo("file", "a.mp4", 640, 360, 25.0, 100, False)
    cams = [dataclasses.replace(c, info=info) for c in resolve_cameras(cfg)]
    topo = Topology.build(infer_workers=2, sink=True, web=True, cameras=2)
    plan = RunPlan(cfg, ModelSpec(), info, ["person", "bicycle", "car"], "lossless", topo, 1, "none", cameras=cams)
    builder = StageSettingsBuilder(plan)
    got = {p: pickle.loads(pickle.dumps(builder.settings(p, incarnation=1))) for p in topo.processes}
    assert set(STAGES) == set(topo.names)
    for s in got.values():
        assert dataclasses.is_dataclass(s) and s.__dataclass_params__.frozen
    assert got["capture.1"].camera.name == "gate" and got["capture.1"].consumers == 2
    assert got["infer.1"].worker == 1 and got["infer"].frame_shape == (360, 640, 3)
    track = got["track"]
    assert track.to_sink and track.to_web and track.id_offset == 1_000_000
    assert track.names == ("person", "bicycle", "car")
    assert track.cameras[0].classes == (2,) and [z.name for z in track.cameras[1].zones] == ["door"]
    assert track.cameras[1].config.name == "gate"
    render = got["render"]
    assert render.snapshot_classes == (0,) and render.snapshots_to_sink and not render.labels and render.clean_slots
    sink = got["sink"]
    assert sink.append and [c.mot for c in sink.cameras] == [str(tmp_path / "road.txt"), str(tmp_path / "gate.txt")]
    assert [name for name, _ in sink.targets] == ["file", "mqtt", "webhook"]
    assert sink.targets[0][1].cameras == ("road", "gate") and sink.targets[0][1].append
    assert got["web"].web.port == 0


def test_a_single_source_camera_has_a_default_camera_config():
    from trackpipe.pipeline.runtime.cameras import resolve_cameras
    cfg = Config()
    cfg.source.uri = "a.mp4"
    (cam,) = resolve_cameras(cfg)
    assert cam.config.uri == "a.mp4" and cam.config.name == cam.name == "cam0" and cam.config.enabled
