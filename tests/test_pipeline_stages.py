"""The multi-process pipeline end to end with real processes, shared memory, ZeroMQ and real
videos; the detector is a small fake here (the real one runs in test_run_tracker.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import cv2
import pytest

from conftest import ASSETS, VIDEO_360, fake_detector_factory, leftovers
from trackpipe.pipeline.runtime.app import run_pipeline
from trackpipe.pipeline.config import Config

pytestmark = pytest.mark.timeout(90)


def _cfg(tmp_path, uri=VIDEO_360, **kw) -> Config:
    c = Config()
    c.source.uri = str(uri)
    c.output.headless = True
    c.output.video = str(tmp_path / "out.mp4")
    c.output.mot = str(tmp_path / "mot.txt")
    c.output.events = str(tmp_path / "events.jsonl")
    c.profile.path = str(tmp_path / "profile.json")
    c.profile.interval_s = 0.25
    c.pipeline.stop_timeout_s = 3.0
    for k, v in kw.items():
        section, key = k.split("__")
        setattr(getattr(c, section), key, v)
    return c


def _spec(yf_spec, **extra):
    return yf_spec.with_(extra=extra)


def _video_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def test_lossless_file_every_frame_once_in_order(tmp_path, yf_spec):
    res = run_pipeline(_cfg(tmp_path), _spec(yf_spec), fake_detector_factory)
    assert res.exit_code == 0, res.error
    r = res.report
    assert r["frames_in"] == r["frames_out"] == 319
    assert _video_frames(tmp_path / "out.mp4") == 319
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert (cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == (30.0, 640.0)
    frames = [int(ln.split(",")[0]) for ln in (tmp_path / "mot.txt").read_text().splitlines()]
    assert frames == sorted(frames) and frames[-1] == 319  # MOT frame numbers follow the input
    events = [json.loads(ln) for ln in (tmp_path / "events.jsonl").read_text().splitlines()]
    kinds = {e["event"] for e in events}
    assert {"track_started", "track_ended"} <= kinds and all({"event", "t", "seq"} <= set(e) for e in events)
    prof = json.loads((tmp_path / "profile.json").read_text())
    for k in ("frames_in", "frames_out", "pipeline_fps", "detector_only_fps", "latency_ms", "stages"):
        assert k in prof
    assert set(prof["latency_ms"]) >= {"p50", "p95", "p99"} and prof["latency_ms"]["p50"] > 0
    for st in ("capture", "infer", "track", "render"):
        assert {"fps", "ms_p50", "ms_p95", "drops"} <= set(prof["stages"][st])
        assert prof["stages"][st]["drops"] == 0 and prof["stages"][st]["items"] == 319
    assert prof["pipeline_fps"] > 0 and prof["detector_only_fps"] > 0
    assert leftovers(os.getpid()) == []


def test_two_infer_workers_out_of_order_results_tracked_in_order(tmp_path, yf_spec):
    """Two infer processes finish frames out of order; track restores the sequence."""
    cfg = _cfg(tmp_path, pipeline__max_frames=80, pipeline__infer_workers=2)
    cfg.output.video = None
    res = run_pipeline(cfg, _spec(yf_spec, jitter_s=0.03), fake_detector_factory)
    assert res.exit_code == 0, res.error
    r = res.report
    assert r["frames_in"] == r["frames_out"] == 80 and r["stages"]["infer"]["workers"] == 2
    assert r["stages"]["track"]["reorder_max"] >= 1  # results did arrive out of order
    frames = [int(ln.split(",")[0]) for ln in (tmp_path / "mot.txt").read_text().splitlines()]
    assert frames == sorted(frames) and set(frames) == set(range(1, 81))
    assert leftovers(os.getpid()) == []


def test_image_folder_max_frames_two_slots(tmp_path, yf_spec):
    cfg = _cfg(tmp_path, ASSETS / "coco_val2017" / "images", pipeline__max_frames=20, pipeline__ring_slots=2)
    cfg.output.events = None
    res = run_pipeline(cfg, _spec(yf_spec), fake_detector_factory)
    assert res.exit_code == 0, res.error
    assert res.report["frames_in"] == res.report["frames_out"] == 20
    assert _video_frames(tmp_path / "out.mp4") == 20  # images of other sizes are resized for the video
    assert "sink" in res.report["stages"]
    assert leftovers(os.getpid()) == []


@pytest.mark.alone
def test_latest_frame_mode_drops_and_bounded_age(tmp_path, yf_spec):
    """A paced (live) source faster than inference: capture never waits, drops are counted,
    and the frame age at the renderer does not grow."""
    import socket
    import urllib.request
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    cfg = _cfg(tmp_path, source__realtime=True, pipeline__max_frames=45)
    cfg.metrics_port = port
    scraped = []

    def hook(sup):  # Prometheus metrics while it runs
        if not scraped and sup.timeline and sup.timeline[-1].get("render", 0) > 0:
            scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())

    res = run_pipeline(cfg, _spec(yf_spec, delay_s=0.06), fake_detector_factory, on_tick=hook)
    assert res.exit_code == 0, res.error
    assert 'trackpipe_stage_fps{stage="infer"}' in scraped[0] and "trackpipe_source_up 1.0" in scraped[0]
    r = res.report
    assert r["mode"] == "latest"
    assert r["frames_out"] == r["frames_in"] == 45
    assert r["stages"]["capture"]["drops"] > 10  # ~30 fps in, ~15 fps through
    assert r["latency_ms"]["p95"] < 250, r["latency_ms"]
    assert r["stages"]["infer"]["queue_depth_max"] <= 1  # infer is never handed a backlog
    assert leftovers(os.getpid()) == []


def test_file_stage_crash_stops_cleanly(tmp_path, yf_spec):
    t0 = time.monotonic()
    res = run_pipeline(_cfg(tmp_path), _spec(yf_spec, crash_at=40), fake_detector_factory)
    assert res.exit_code == 1 and res.outcome == "failed"
    assert re.search(r"stage 'infer(\.1)?' died \(exit code 3\)", res.error) and "stopping" in res.error
    assert time.monotonic() - t0 < 30
    n = _video_frames(tmp_path / "out.mp4")  # what was written is finalised and playable
    assert 0 < n < 319
    assert res.report["outcome"] == "failed" and json.loads((tmp_path / "profile.json").read_text())["error"]
    assert leftovers(os.getpid()) == []


@pytest.mark.alone
def test_sigkill_of_a_stage_noticed_within_2s(tmp_path, yf_spec):
    killed = {}

    def hook(sup):
        if not killed and sup.board.get(sup.rc.stage_index["render"], 2) >= 30:
            killed["t"], killed["sup"] = time.monotonic(), sup
            os.kill(sup.procs["track"].pid, signal.SIGKILL)

    cfg = _cfg(tmp_path)
    res = run_pipeline(cfg, _spec(yf_spec, delay_s=0.01), fake_detector_factory, on_tick=hook)
    assert res.exit_code == 1 and "stage 'track' died (killed by SIGKILL)" in res.error
    assert killed["sup"].failed_at - killed["t"] < 2.0
    assert _video_frames(tmp_path / "out.mp4") >= 25
    assert leftovers(os.getpid()) == []


def test_hung_stage_is_killed_and_reported(tmp_path, yf_spec):
    # 3 s: long enough that no healthy stage of a loaded machine goes that long without a beat
    cfg = _cfg(tmp_path, pipeline__heartbeat_timeout_s=3.0)
    res = run_pipeline(cfg, _spec(yf_spec, hang_at=15), fake_detector_factory)
    assert res.exit_code == 1 and re.search(r"stage 'infer(\.1)?' hung \(no heartbeat for 3\.", res.error), res.error
    assert leftovers(os.getpid()) == []


def test_live_stage_crash_is_restarted(tmp_path, yf_spec):
    marker = tmp_path / "crashed-once"
    cfg = _cfg(tmp_path, source__realtime=True, pipeline__max_frames=40)
    res = run_pipeline(cfg, _spec(yf_spec, crash_at=10, crash_marker=str(marker)), fake_detector_factory)
    assert marker.exists()
    assert res.exit_code == 0, res.error
    assert res.report["stages"]["infer"]["restarts"] == 1
    assert res.report["frames_out"] >= 30
    assert leftovers(os.getpid()) == []


def test_live_restart_limit_stops_with_message(tmp_path, yf_spec):
    cfg = _cfg(tmp_path, source__realtime=True, pipeline__max_restarts_per_min=1)
    res = run_pipeline(cfg, _spec(yf_spec, crash_at=5), fake_detector_factory)  # crashes every time
    assert res.exit_code == 1
    assert "failed 2 times within a minute (limit 1); stopping" in res.error
    assert leftovers(os.getpid()) == []


def test_setup_error_is_bad_input(tmp_path, yf_spec):
    res = run_pipeline(_cfg(tmp_path), yf_spec.with_(backend="tensorrt"))  # no TensorRT here
    assert res.exit_code == 2 and res.error.startswith("infer: ")
    assert leftovers(os.getpid()) == []


def test_stale_artifacts_of_dead_runs_are_removed():
    from multiprocessing import shared_memory
    from trackpipe.pipeline.runtime import cleanup
    dead = 4_000_000  # above pid_max: never alive
    name = f"trackpipe_{dead}_deadbeef_ring"
    shm = shared_memory.SharedMemory(name=name, create=True, size=4096)
    from multiprocessing import resource_tracker
    resource_tracker.unregister(shm._name, "shared_memory")  # simulate a SIGKILLed owner
    shm.close()
    d = os.path.join(cleanup.ipc_root(), f"trackpipe_{dead}_deadbeef")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "frames.ipc"), "w").close()
    mine = cleanup.make_run_dir(cleanup.new_run_id())  # a live run's folder is kept
    try:
        cleanup.clean_stale()
        assert not os.path.exists(f"/dev/shm/{name}") and not os.path.exists(d)
        assert os.path.exists(mine)
    finally:
        os.rmdir(mine)


def test_camera_motion_compensation_gets_the_frames_of_a_hand_held_camera(tmp_path, yf_spec):
    """With ``cmc: auto`` the track stage reads each frame from shared memory for the tracker:
    on the hand-held street video most frames are found moving (a still camera's would not)."""
    c = _cfg(tmp_path)
    c.pipeline.max_frames = 60
    c.tracker.name, c.tracker.options = "hybrid", {"cmc": "auto"}
    res = run_pipeline(c, _spec(yf_spec), fake_detector_factory)
    assert res.exit_code == 0, res.error
    cams = json.loads((tmp_path / "profile.json").read_text())["cameras"]
    assert next(iter(cams.values()))["camera_moving"] > 0.5
