"""The infer process' detector thread and per-camera order (stages/infer_thread.py): a frame the
motion gate skipped goes on while another camera's detection runs, never before its own
camera's earlier frames."""

from __future__ import annotations

import select
import threading

import numpy as np
import pytest

from trackpipe.pipeline.stages.infer_thread import CameraOrder, DetectThread


def _readable(fd: int, timeout_s: float = 30.0) -> bool:
    return bool(select.select([fd], [], [], timeout_s)[0])


def test_order_holds_a_camera_behind_its_pending_detection_only():
    order = CameraOrder()
    pending = order.add(0)                 # camera 0: a frame being detected
    order.add(0, "cam0 skipped")           # ... then one the gate skipped
    order.add(1, "cam1 skipped")           # camera 1: skipped, nothing before it
    assert list(order.ready()) == ["cam1 skipped"] and len(order) == 2
    assert order.holds(0) and not order.holds(1) and not order.holds(2)
    pending.msg = "cam0 detected"
    assert list(order.ready()) == ["cam0 detected", "cam0 skipped"] and len(order) == 0


def test_detect_thread_runs_beside_the_caller_and_signals_the_end():
    release, seen = threading.Event(), []

    def detect_batch(views):
        seen.append([v.shape for v in views])
        assert release.wait(30)
        return [len(views)] * len(views)

    worker = DetectThread(detect_batch)
    try:
        views = [np.zeros((4, 6, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)]
        worker.submit(views, job="batch 1")
        assert worker.busy and worker.done() is None and not _readable(worker.fd, 0.05)
        release.set()
        assert _readable(worker.fd)
        done = worker.done()
        assert (done.job, done.found, seen) == ("batch 1", [2, 2], [[(4, 6, 3), (4, 6, 3)]])
        assert views == [] and not worker.busy and done.t1 >= done.t0   # no view outlives the call
    finally:
        release.set()
        assert worker.close(30)


def test_detect_thread_hands_the_calls_exception_to_the_caller():
    def detect_batch(views):
        raise ValueError("bad model output")

    worker = DetectThread(detect_batch)
    worker.submit([np.zeros((2, 2, 3), np.uint8)], job=None)
    assert _readable(worker.fd)
    with pytest.raises(ValueError, match="bad model output"):
        worker.done()
    assert not worker.busy and worker.close(30)


def test_close_reports_a_call_that_does_not_end():
    release = threading.Event()
    worker = DetectThread(lambda views: [release.wait(30)])
    worker.submit([np.zeros((2, 2, 3), np.uint8)], job=None)
    assert worker.close(0.05) is False     # hung: the caller must leave what it reads open
    release.set()
    assert worker.close(30)


@pytest.mark.timeout(180)
def test_a_still_camera_is_not_held_up_by_another_cameras_slow_detections(tmp_path, yf_spec):
    """Two live cameras, a detector that takes 0.3 s a frame: the moving camera gets about 3
    frames/s detected; the still one's frames (skipped by its gate) go on meanwhile, at its
    own rate (with the detector in the loop they went at the moving camera's pace)."""
    from conftest import VIDEO_360, fake_detector_factory

    from tests.motion_clips import static_camera
    from trackpipe.pipeline.config import Config
    from trackpipe.pipeline.runtime.app import run_pipeline

    still = static_camera(VIDEO_360, tmp_path / "still.mp4", seconds=4.0, size=(320, 180), fps=15.0)
    c = Config(cameras=[str(VIDEO_360), still.path])
    c.source.realtime, c.source.loop = True, True
    c.detect.motion = "on"
    c.output.headless = True
    c.profile.path = str(tmp_path / "profile.json")
    c.pipeline.duration_s = 8.0
    c.pipeline.stop_timeout_s = 5.0
    res = run_pipeline(c, yf_spec.with_(extra={"delay_s": 0.3}), fake_detector_factory)
    assert res.exit_code == 0, res.error
    cams = res.report["cameras"]
    moving, still_cam = cams["cam0"], cams["cam1"]
    assert moving["detect_fraction"] == 1.0 and still_cam["detect_fraction"] < 0.5, (moving, still_cam)
    assert still_cam["frames_out"] >= 3 * moving["frames_out"] > 0, (moving, still_cam)
