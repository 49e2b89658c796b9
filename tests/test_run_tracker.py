"""run_tracker.py as a user runs it: a real subprocess (own process group), the real Yolo-Fastest
detector, real signals; afterwards no process, no /dev/shm entry and no ipc folder may remain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from conftest import COCO_NAMES, ROOT, VIDEO_360, VIDEO_1080, YF_CFG, YF_WEIGHTS, leftovers
from tests.procs import running_in_group

MODEL = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES), "--size", "320",
         "--backend", "onnx", "--precision", "fp32"]


def _start(args, tmp_path, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(ROOT / "run_tracker.py"), *args], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "stderr.txt", "w+"), text=True,
                            start_new_session=True, **kw)


def _wait_group_gone(proc: subprocess.Popen, timeout: float) -> float:
    """Wait until no process of ``proc``'s group is left running (reaping ``proc`` itself). Zombies do
    not count: an orphan's zombie waits for init, which here (a VM's process_api) reaps seconds late."""
    pgid = proc.pid
    t0 = time.monotonic()
    while proc.poll() is None or running_in_group(pgid):
        if time.monotonic() - t0 > timeout:
            os.killpg(pgid, signal.SIGKILL)
            pytest.fail(f"processes of group {pgid} still alive after {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - t0


def _stage_pid(parent: int, stage: str) -> int:
    """The child of ``parent`` named tp-<stage> (stages set their process name)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "comm").read_text().strip() == f"tp-{stage}" and \
                    int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                return int(d.name)
        except (OSError, ValueError, IndexError):
            continue
    return -1


def _wait_frames_written(path: Path, min_bytes: int, proc, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while not (path.exists() and path.stat().st_size >= min_bytes):
        assert proc.poll() is None, f"exited early: {proc.returncode}"
        assert time.monotonic() - t0 < timeout, "no output written"
        time.sleep(0.05)


def _frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def _stderr(tmp_path) -> str:
    return (tmp_path / "stderr.txt").read_text()


@pytest.mark.timeout(180)
def test_full_1080p_video_every_frame(tmp_path):
    out = tmp_path / "out.mp4"
    p = _start(["--source", str(VIDEO_1080), *MODEL, "--output", str(out), "--mot", str(tmp_path / "t.txt"),
                "--events", str(tmp_path / "e.jsonl"), "--profile", str(tmp_path / "p.json"),
                "--profile-plot", str(tmp_path / "p.png"), "--headless", "--snapshots", str(tmp_path / "snaps"),
                "--snapshot-classes", "person"], tmp_path)
    assert p.wait(170) == 0, _stderr(tmp_path)
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["frames_in"] == prof["frames_out"] == 302
    assert prof["pipeline_fps"] > 0 and prof["detector_only_fps"] > 0 and prof["latency_ms"]["p99"] > 0
    cpu = prof["cpu"]   # where the CPU went per frame, and the ceiling it leaves on shared cores
    assert set(cpu["ms_per_frame"]) >= {"capture", "infer", "track", "render", "sink"}
    assert cpu["total_ms_per_frame"] == pytest.approx(sum(cpu["ms_per_frame"].values()), abs=0.01)
    if not prof["placement"]["cores"]:
        assert cpu["cores"] >= 1 and prof["pipeline_fps"] <= 1.05 * cpu["bound_fps"]
        assert cpu["bound_over_detector"] == round(min(1.0, cpu["bound_fps"] / prof["detector_only_fps"]), 3)
    cap = cv2.VideoCapture(str(out))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FPS)) == \
        (1920, 1080, 30)
    assert _frames(out) == 302
    rows = [ln.split(",") for ln in (tmp_path / "t.txt").read_text().splitlines()]
    assert len(rows) > 300 and all(len(r) == 10 and r[7:] == ["-1", "-1", "-1"] for r in rows)
    assert {int(r[0]) for r in rows} <= set(range(1, 303))
    ev = [json.loads(ln) for ln in (tmp_path / "e.jsonl").read_text().splitlines()]
    started = {e["track_id"] for e in ev if e["event"] == "track_started"}
    ended = {e["track_id"] for e in ev if e["event"] == "track_ended"}
    assert started and started == ended  # every track ends by the end of the file
    # one track_started and one track_ended per id, ever; durations in media time (302 frames at 30 fps)
    starts = [e["track_id"] for e in ev if e["event"] == "track_started"]
    ends = [e for e in ev if e["event"] == "track_ended"]
    assert len(starts) == len(set(starts)) and len(ends) == len(started)
    assert all(0 <= e["duration_s"] <= 302 / 30 and e["first_seq"] <= e["last_seq"] for e in ends)
    # without flicker: rows per id cover the frames from its first to its last appearance (predicted
    # boxes of missed frames are written with conf -1, gaps interpolated at the end with conf 0)
    conf = [float(r[6]) for r in rows]
    assert all(c in (-1.0, 0.0) or 0.0 < c <= 1.0 for c in conf) and -1.0 in conf and 0.0 in conf
    frames_of = {}
    for r in rows:
        frames_of.setdefault(int(r[1]), set()).add(int(r[0]))
    coverage = [len(f) / (max(f) - min(f) + 1) for f in frames_of.values()]
    assert sum(coverage) / len(coverage) >= 0.97, coverage
    assert prof["stages"]["sink"]["mot_interpolated"] > 0 and not (tmp_path / "t.txt.part").exists()
    # one snapshot per new person track, named after its track_started event, the frame at full size
    people = {(e["seq"], e["track_id"]) for e in ev if e["event"] == "track_started" and e["class"] == "person"}
    snaps = sorted((tmp_path / "snaps").iterdir())
    assert people and {(int(f.name.split("_seq")[1][:7]), int(f.name.split("_id")[1].split("_")[0])) for f in snaps} \
        == people and all(f.name.endswith("_person.jpg") for f in snaps)
    assert cv2.imread(str(snaps[0])).shape == (1080, 1920, 3)
    assert prof["stages"]["render"]["snapshots"] == len(people)
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert leftovers(p.pid) == []


@pytest.mark.timeout(120)
def test_image_folder_every_image_detected_independently(tmp_path):
    """Unrelated images (the default tracker for a folder is ``independent``): every image's
    detections are written at once, each with its own id that starts and ends in that image."""
    p = _start(["--source", str(ROOT.parent / "shared" / "assets" / "coco_val2017" / "images"), *MODEL,
                "--mot", str(tmp_path / "t.txt"), "--events", str(tmp_path / "e.jsonl"), "--headless"], tmp_path)
    assert p.wait(110) == 0, _stderr(tmp_path)
    rows = [ln.split(",") for ln in (tmp_path / "t.txt").read_text().splitlines()]
    assert len({int(r[0]) for r in rows}) >= 60          # of the 66 images
    assert all(0.0 < float(r[6]) <= 1.0 for r in rows)  # observed boxes only: nothing predicted
    ids = [int(r[1]) for r in rows]
    assert len(ids) == len(set(ids))
    ev = [json.loads(ln) for ln in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert sorted(e["seq"] for e in ev if e["event"] == "track_started") == \
        sorted(e["seq"] for e in ev if e["event"] == "track_ended") == sorted(int(r[0]) - 1 for r in rows)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("moment", ["startup", "loading", "running"])
def test_ctrl_c_at_any_moment(tmp_path, moment):
    out = tmp_path / "out.mp4"
    p = _start(["--source", str(VIDEO_360), *MODEL, "--output", str(out), "--mot", str(tmp_path / "t.txt"),
                "--profile", str(tmp_path / "p.json"), "--headless"], tmp_path)
    if moment == "startup":
        time.sleep(0.3)          # the interpreter is still importing
    elif moment == "loading":
        time.sleep(1.8)          # stage processes are starting / loading the model
    else:
        _wait_frames_written(out, 200_000, p)
    os.killpg(p.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole group
    took = _wait_group_gone(p, 5.0)
    code = p.wait(1)
    assert code in (130, 0), _stderr(tmp_path)
    assert took < 5.0
    assert "Traceback" not in _stderr(tmp_path)
    assert leftovers(p.pid) == []
    if moment == "running":
        assert code == 130
        assert _frames(out) > 5  # the partial video is finalised and playable
        assert json.loads((tmp_path / "p.json").read_text())["outcome"] == "interrupted"
    elif out.exists() and out.stat().st_size > 0:
        cv2.VideoCapture(str(out)).isOpened()


@pytest.mark.timeout(90)
def test_sigkill_of_a_stage_stops_a_file_run_cleanly(tmp_path):
    out = tmp_path / "out.mp4"
    p = _start(["--source", str(VIDEO_360), *MODEL, "--output", str(out), "--headless"], tmp_path)
    _wait_frames_written(out, 200_000, p)
    pid = _stage_pid(p.pid, "infer")
    assert pid > 0
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    code = p.wait(10)
    assert time.monotonic() - t0 < 2 + 3.0  # noticed within 2 s, then a graceful stop
    _wait_group_gone(p, 2.0)
    err = _stderr(tmp_path)
    assert code == 1
    assert "error: stage 'infer' died (killed by SIGKILL); stopping" in err
    assert _frames(out) > 5
    assert leftovers(p.pid) == []


@pytest.mark.timeout(90)
def test_killed_supervisor_leaves_nothing_after_next_start(tmp_path):
    """SIGKILL of the main process: stages exit (parent-death signal), the shared memory goes
    with the resource tracker, and the next run removes the stale ipc folder."""
    out = tmp_path / "out.mp4"
    p = _start(["--source", str(VIDEO_360), *MODEL, "--output", str(out), "--headless"], tmp_path)
    _wait_frames_written(out, 100_000, p)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(5)
    t0 = time.monotonic()
    while running_in_group(p.pid):  # the stages got SIGTERM from the kernel and finish
        assert time.monotonic() - t0 < 5.0, f"still running: {running_in_group(p.pid)}"
        time.sleep(0.05)
    from trackpipe.pipeline.runtime import cleanup
    cleanup.clean_stale()
    assert leftovers(p.pid) == []


@pytest.mark.alone  # compares all of /dev/shm before and after
@pytest.mark.timeout(90)
def test_sigkill_of_the_whole_group_leaves_no_semaphores(tmp_path):
    """SIGKILL of every process at once, Python's resource tracker included: nothing may stay in
    /dev/shm but the ring, which the next start removes (multiprocessing.Event's named
    semaphores would stay forever: the pipeline must not use them)."""
    before = set(os.listdir("/dev/shm"))
    out = tmp_path / "out.mp4"
    p = _start(["--source", str(VIDEO_360), *MODEL, "--output", str(out), "--headless"], tmp_path)
    _wait_frames_written(out, 100_000, p)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(5)
    from trackpipe.pipeline.runtime import cleanup
    cleanup.clean_stale()
    assert leftovers(p.pid) == []
    assert sorted(set(os.listdir("/dev/shm")) - before) == []


BAD = {
    "missing file": (["--source", "nope/missing.mp4"], "error: source not found: nope/missing.mp4"),
    "unreadable video": (["--source", "{tmp}/bad.mp4"], "error: cannot read video"),
    "invalid key": (["--source", str(VIDEO_360), "--config", "{tmp}/key.yaml"],
                    "unknown key 'pipline' (allowed: source, model, tracker, pipeline"),
    "invalid value": (["--source", str(VIDEO_360), "--set", "pipeline.ring_slots=1"],
                      "error: pipeline.ring_slots: 1 is below the minimum 2"),
    "unknown backend": (["--source", str(VIDEO_360), "--backend", "cuda"], "error: argument --backend: invalid choice"),
    "unknown backend in yaml": (["--source", str(VIDEO_360), "--config", "{tmp}/backend.yaml"],
                                "model.backend: invalid value 'cuda'"),
    "missing weights": (["--source", str(VIDEO_360), "--cfg", str(YF_CFG), "--weights", "{tmp}/none.weights"],
                        "error: weights file not found"),
    "weights without cfg": (["--source", str(VIDEO_360), "--weights", "{tmp}/none.weights"],
                            "error: cfg and weights go together"),
    "unknown snapshot class": (["--source", str(VIDEO_360), *MODEL, "--snapshots", "{tmp}/s", "--snapshot-classes",
                                "person,unicorn"], "error: output.snapshot_classes: unknown class 'unicorn'"),
    "snapshots folder is a file": (["--source", str(VIDEO_360), *MODEL, "--snapshots", "{tmp}/bad.mp4"],
                                   "error: the snapshots folder"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_nonzero_nothing_left(tmp_path, case):
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x01garbage" * 5000)
    (tmp_path / "key.yaml").write_text("pipline:\n  ring_slots: 4\n")
    (tmp_path / "backend.yaml").write_text("model:\n  backend: cuda\n")
    args, expected = BAD[case]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    p = _start(args + ["--output", str(tmp_path / "o.mp4"), "--headless"], tmp_path)
    assert p.wait(50) == 2
    err = _stderr(tmp_path)
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert expected in err, err
    assert not (tmp_path / "o.mp4").exists()
    assert leftovers(p.pid) == []


@pytest.mark.timeout(90)
def test_window_q_quits(tmp_path):
    """The live window (cv2.imshow on a real, virtual X display): pressing q ends the run, exit 0."""
    from xvfb import Xvfb, xvfb_available
    ok, why = xvfb_available(("Xvfb", "xdotool"))
    if not ok:
        pytest.skip(why)
    with Xvfb() as x:
        env = x.env()
        p = subprocess.Popen([sys.executable, str(ROOT / "run_tracker.py"), "--source", str(VIDEO_360), "--loop",
                              *MODEL, "--window", "on"], cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL,
                             stderr=open(tmp_path / "stderr.txt", "w+"), start_new_session=True)
        try:
            found = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--name", "trackpipe"],
                                   env=env, capture_output=True, text=True, timeout=60)
            wid = found.stdout.split()[0]
            time.sleep(0.5)
            subprocess.run(["xdotool", "key", "--window", wid, "q"], env=env, check=True, timeout=10)
            assert p.wait(10) == 0, _stderr(tmp_path)
            _wait_group_gone(p, 5.0)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert "window closed by the user" in _stderr(tmp_path)
    assert leftovers(p.pid) == []


@pytest.mark.timeout(60)
def test_unavailable_backend_one_line_nothing_written(tmp_path):
    import importlib.util
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    p = _start(["--source", str(VIDEO_360), *MODEL[:-2], "--backend", "tensorrt", "--output",
                str(tmp_path / "o.mp4"), "--mot", str(tmp_path / "t.txt"), "--profile", str(tmp_path / "p.json")],
               tmp_path)
    assert p.wait(50) == 2
    err = _stderr(tmp_path)
    assert err.count("\n") == 1 and err.startswith("error: infer: "), err
    assert list(tmp_path.iterdir()) == [tmp_path / "stderr.txt"]  # no output, no profile
    assert leftovers(p.pid) == []


def _affinity_of(parent: int, stage: str) -> list:
    pid = _stage_pid(parent, stage)
    return sorted(os.sched_getaffinity(pid)) if pid > 0 else []


@pytest.mark.timeout(120)
def test_cpu_placement_and_detector_only_on_infer_cores(tmp_path):
    """pipeline.cpus {infer: [first core]}: infer alone on that core, the other stages on the rest,
    seen on the running processes; the profile names the placement, the backend, and the
    detector-only figure measured alone on infer's core before the run."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("placement needs 2 cores")
    out = tmp_path / "out.mp4"
    p = _start(["--source", str(VIDEO_1080), *MODEL, "--output", str(out), "--profile", str(tmp_path / "p.json"),
                "--headless", "--max-frames", "120", "--set", f"pipeline.cpus={{infer: [{cores[0]}]}}", "--verbose"],
               tmp_path)
    _wait_frames_written(out, 300_000, p, timeout=100)
    infer, render, capture = (_affinity_of(p.pid, s) for s in ("infer", "render", "capture"))
    assert p.wait(100) == 0, _stderr(tmp_path)
    assert infer == cores[:1] and render == capture == cores[1:], (infer, render, capture)
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["placement"]["mode"] == "map" and prof["placement"]["cores"]["render"] == cores[1:]
    assert (prof["model"]["threads"], prof["model"]["infer_workers"]) == (1, 1)  # sized to infer's one core
    det = prof["detector"]
    assert det["source"] == "alone on infer's cores before the run" and det["backend"] == "onnx-fp32"
    assert det["probe"] == "first frame" and prof["detector_only_fps"] > 0 and det["in_run_fps"] > 0
    assert prof["pipeline_over_detector"] == round(prof["pipeline_fps"] / prof["detector_only_fps"], 3)
    assert "bound_fps" not in prof["cpu"] and prof["cpu"]["ms_per_frame"]["infer"] > 0  # placed: no shared ceiling
    assert f"infer on core {cores[0]}" in _stderr(tmp_path)  # the placement: a detail of --verbose


@pytest.mark.timeout(120)
def test_one_core_means_no_placement_and_one_log_line(tmp_path):
    p = subprocess.Popen([sys.executable, str(ROOT / "run_tracker.py"), "--source", str(VIDEO_360), *MODEL,
                          "--headless", "--max-frames", "20", "--verbose"], cwd=str(ROOT), stdout=subprocess.DEVNULL,
                         stderr=open(tmp_path / "stderr.txt", "w+"), start_new_session=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}))
    assert p.wait(100) == 0, _stderr(tmp_path)
    lines = [ln for ln in _stderr(tmp_path).splitlines() if "pipeline.cpus" in ln]
    assert len(lines) == 1 and "1 core available, the placement needs 4" in lines[0], _stderr(tmp_path)
    assert "no CPU placement" in _stderr(tmp_path)


@pytest.mark.timeout(150)
def test_batched_inference_gives_the_frames_batch_1_gives(tmp_path):
    """pipeline.batch 4: frames already waiting run in one detect_batch call (the profile's mean
    batch is above 1); every frame's tracks equal those of batch 1 (MOT rows, boxes within 0.05 px)."""
    rows = {}
    for b in (1, 4):
        mot, prof = tmp_path / f"t{b}.txt", tmp_path / f"p{b}.json"
        p = _start(["--source", str(VIDEO_360), *MODEL, "--mot", str(mot), "--profile", str(prof), "--headless",
                    "--max-frames", "120", "--tracker", "sort", "--set", f"pipeline.batch={b}",
                    "--ring-slots", "16"], tmp_path)  # a batch holds ring slots: at most slots / (2 x workers)
        assert p.wait(140) == 0, _stderr(tmp_path)
        r = json.loads(prof.read_text())
        assert r["frames_in"] == r["frames_out"] == 120
        inf = r["stages"]["infer"]
        assert inf["batch"] == b
        mean = r["detector"]["mean_batch"]
        assert mean == 1.0 if b == 1 else 1.2 < mean <= 4, mean  # b == 4: frames did wait and ran together
        rows[b] = [ln.split(",") for ln in mot.read_text().splitlines()]
    assert len(rows[1]) == len(rows[4]) > 100
    for a, c in zip(rows[1], rows[4]):
        assert a[:2] == c[:2]  # frame, id
        assert all(abs(float(x) - float(y)) <= 0.05 for x, y in zip(a[2:6], c[2:6])), (a, c)


@pytest.mark.timeout(60)
def test_placement_on_a_core_not_available_is_one_line(tmp_path):
    p = _start(["--source", str(VIDEO_360), *MODEL, "--output", str(tmp_path / "o.mp4"), "--headless",
                "--set", "pipeline.cpus={infer: [999]}"], tmp_path)
    assert p.wait(50) == 2
    err = _stderr(tmp_path)
    assert err.count("\n") == 1 and err.startswith("error: pipeline.cpus: infer: core 999 is not available"), err
    assert not (tmp_path / "o.mp4").exists() and leftovers(p.pid) == []
