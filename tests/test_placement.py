"""CPU placement (`pipeline.common.placement`): the plan for a given set of cores, the config
checks, and real affinity on a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from trackpipe.pipeline.config import Config, set_value
from trackpipe.pipeline.errors import ConfigError
from trackpipe.pipeline.common import placement as P


def test_auto_on_two_cores_is_unplaced_and_says_why():
    """Measured on 2 cores: a fixed split leaves one side idle, so auto leaves it to the OS."""
    p = P.plan("auto", "lossless", available=[0, 1])
    assert not p.placed and (p.workers, p.threads) == (2, 1) and p.cores_of("infer") == ()
    assert p.note.startswith("pipeline.cpus auto: 2 cores available, the placement needs 4")
    assert p.describe() == "no CPU placement"


def test_map_on_two_cores_gives_infer_a_core_of_its_own():
    p = P.plan({"infer": [0]}, "lossless", available=[0, 1])
    assert (p.workers, p.threads, p.note) == (1, 1, "")
    assert p.cores_of("infer") == (0,)
    for s in ("capture", "track", "render", "sink", "web"):
        assert p.cores_of(s) == (1,)
    assert p.describe(["capture", "infer", "track", "render"]) == "capture,track,render on core 1; infer on core 0"


@pytest.mark.parametrize("cores, mode, workers, threads, infer, others", [
    (list(range(4)), "latest", 1, 3, [(0, 1, 2)], (3,)),
    (list(range(4)), "lossless", 1, 3, [(0, 1, 2)], (3,)),   # 3 infer cores: one worker, 3 threads
    (list(range(6)), "lossless", 1, 5, [(0, 1, 2, 3, 4)], (5,)),
    (list(range(8)), "lossless", 2, 3, [(0, 1, 2), (3, 4, 5)], (6, 7)),
    (list(range(8)), "latest", 1, 6, [(0, 1, 2, 3, 4, 5)], (6, 7)),
    ([2, 5, 7, 9], "lossless", 1, 3, [(2, 5, 7)], (9,)),     # the cores this process may use
])
def test_auto_sizes_infer_and_threads_to_the_cores(cores, mode, workers, threads, infer, others):
    p = P.plan("auto", mode, available=cores)
    assert (p.workers, p.threads) == (workers, threads)
    assert [p.cores_of("infer" if i == 0 else f"infer.{i}") for i in range(workers)] == infer
    assert p.cores_of("render") == p.cores_of("capture") == others
    placed = {c for i in range(workers) for c in p.cores_of("infer" if i == 0 else f"infer.{i}")}
    assert placed.isdisjoint(others)


def test_one_core_is_not_placed_and_says_why():
    p = P.plan("auto", "lossless", available=[3])
    assert not p.placed and p.cores_of("infer") == () and (p.workers, p.threads) == (1, 1)
    assert p.note.startswith("pipeline.cpus auto: 1 core available, the placement needs 4")


def test_gpu_backend_gets_one_infer_process():
    assert P.plan("auto", "lossless", gpu=True, available=list(range(8))).workers == 1


def test_explicit_settings_are_kept():
    p = P.plan({"infer": [0]}, "lossless", workers=2, threads=4, available=[0, 1])
    assert (p.workers, p.threads) == (2, 4)
    assert p.cores_of("infer") == p.cores_of("infer.1") == (0,)  # they share infer's one core
    assert "2 infer workers on 1 core(s)" in p.note


def test_off_is_the_unplaced_plan():
    p = P.plan("off", "lossless", available=[0, 1])
    assert not p.placed and (p.workers, p.threads) == (2, 1) and p.cores_of("render") == ()
    assert P.plan("off", "latest", available=list(range(8))).workers == 1


def test_map_names_cores_and_the_rest_share_the_others():
    p = P.plan({"infer": [1, 2], "render": [3]}, "latest", available=[0, 1, 2, 3])
    assert p.cores_of("infer") == (1, 2) and p.threads == 2
    assert p.cores_of("render") == (3,)
    assert p.cores_of("capture") == p.cores_of("track") == (0,)
    # nothing left over: the unnamed stages may use every core
    q = P.plan({"infer": [0], "capture": [1]}, "latest", available=[0, 1])
    assert q.cores_of("track") == (0, 1) and q.cores_of("capture") == (1,)


def test_map_with_a_core_not_available_is_one_line():
    with pytest.raises(ConfigError, match=r"pipeline.cpus: infer: core 9 is not available \(this process may use "
                                          r"0,1\)"):
        P.plan({"infer": [9]}, "lossless", available=[0, 1])


@pytest.mark.parametrize("value, message", [
    ("fast", "pipeline.cpus: invalid value 'fast'"),
    ({"decode": [0]}, "pipeline.cpus: unknown stage 'decode'"),
    ({"infer": []}, "pipeline.cpus: infer: expected a list of core numbers"),
    ({"infer": [-1]}, "pipeline.cpus: infer: expected a list of core numbers"),
    ([0, 1], "pipeline.cpus: expected"),
])
def test_config_rejects_bad_cpus(value, message):
    with pytest.raises(ConfigError) as e:
        set_value(Config(), "pipeline.cpus", value)
    assert str(e.value).startswith(message), str(e.value)


def test_config_accepts_cpus_and_batch():
    c = Config()
    assert (c.pipeline.cpus, c.pipeline.batch) == ("auto", "auto")
    set_value(c, "pipeline.cpus", {"infer": [0], "render": 1})
    set_value(c, "pipeline.batch", 4)
    assert c.pipeline.cpus == {"infer": [0], "render": 1} and c.pipeline.batch == 4
    for bad in (0, 65, "many", True):
        with pytest.raises(ConfigError, match="pipeline.batch"):
            set_value(c, "pipeline.batch", bad)


def test_apply_pins_every_thread_of_a_real_process():
    """A child with a second thread: both end up on the given core (sched_getaffinity per thread)."""
    cores = P.available_cores()
    code = "import threading, time; threading.Thread(target=time.sleep, args=(30,), daemon=True).start(); " \
           "print('up', flush=True); time.sleep(30)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "up"
        target = cores[-1:]
        assert P.apply(p.pid, target)
        tids = [int(t) for t in os.listdir(f"/proc/{p.pid}/task")]
        assert len(tids) >= 2
        assert all(sorted(os.sched_getaffinity(t)) == target for t in tids)
        assert P.affinity(p.pid) == target
    finally:
        p.kill()
        p.wait()
    time.sleep(0.01)
    assert not P.apply(p.pid, cores)  # gone: False, no exception


# --- the infer stage's batch size (`pipeline.batch: auto`), measured on infer's cores -----------

def test_auto_batch_needs_a_real_gain_over_batch_1():
    from trackpipe.pipeline.stages.infer import pick_batch
    assert pick_batch({1: (10, 1.0), 4: (40, 3.2)}) == 4      # 12.5 vs 10 frames/s: 1.25x
    assert pick_batch({1: (10, 1.0), 4: (40, 3.8)}) == 1      # 1.05x: not worth 4x the latency
    assert pick_batch({1: (10, 1.0), 4: (40, 5.0)}) == 1
    assert pick_batch({4: (40, 1.0)}) == 4


def test_time_batches_counts_frames_per_batch_size():
    from trackpipe.pipeline.stages.infer import time_batches
    calls = []
    out = time_batches(lambda frames: calls.append(len(frames)), object(), [1, 4], seconds=0.05)
    assert set(calls) == {1, 4}
    assert out[1][0] == calls.count(1) and out[4][0] == 4 * calls.count(4) and out[1][1] > 0


def _infer(mode: str, cameras: int, batch, max_batch: int = 8):
    """An infer stage's batch bookkeeping without its process (a unit test of the code around the detector)."""
    from types import SimpleNamespace

    from trackpipe.pipeline.stages.infer import InferProcess
    st = InferProcess.__new__(InferProcess)
    st.rc = SimpleNamespace(mode=mode, cameras=[f"cam{i}" for i in range(cameras)])
    st.batch_request, st.max_batch = batch, max_batch
    return st


def test_auto_times_batch_1_against_4_capped_by_the_cameras_live():
    assert _infer("latest", 16, "auto")._candidates() == [1, 4]
    assert _infer("latest", 3, "auto")._candidates() == [1, 3]      # one frame per camera
    assert _infer("latest", 1, "auto")._candidates() == [1]
    assert _infer("lossless", 1, "auto")._candidates() == [1, 4]
    assert _infer("lossless", 1, "auto", max_batch=2)._candidates() == [1, 2]
    assert _infer("latest", 16, 8)._candidates() == [8]
    assert _infer("latest", 16, "auto")._latest_batch() == 1         # unmeasured: unbatched


def test_a_short_batch_runs_frame_by_frame_so_no_new_size_is_compiled():
    st = _infer("latest", 16, "auto")
    calls = []
    st.detector = type("D", (), {"detect_batch": lambda self, v: calls.append(len(v)) or [len(calls)] * len(v)})()
    st.batch = 4
    assert st._detect(["a"] * 4) == [1] * 4 and st._detect(["b"]) == [2]
    assert st._detect(["c"] * 3) == [3, 4, 5]                         # one call per frame, in order
    assert calls == [4, 1, 1, 1, 1]


def test_off_from_yaml_or_set_is_no_placement():
    """`--set pipeline.cpus=off` / `cpus: off` in YAML 1.1 arrive as false: that is off."""
    from trackpipe.pipeline.config import parse_scalar
    c = Config()
    set_value(c, "pipeline.cpus", parse_scalar("off"))
    p = P.plan(c.pipeline.cpus, "lossless", available=[0, 1])
    assert not p.placed and p.mode == "off"
    with pytest.raises(ConfigError, match="pipeline.cpus: expected auto, off or a mapping"):
        set_value(c, "pipeline.cpus", True)


def test_several_live_cameras_give_the_unplaced_detector_every_core():
    plan = P.plan
    assert plan("auto", "latest", available=[0, 1], cameras=4).threads == 2
    assert plan("off", "latest", available=[0, 1, 2], cameras=2).threads == 3
    assert plan("auto", "latest", available=[0, 1], cameras=1).threads == 1      # one camera: as before
    assert plan("auto", "lossless", available=[0, 1], cameras=4).threads == 1    # files: two workers
    assert plan("auto", "latest", available=[0, 1], cameras=4, threads=1).threads == 1   # model.threads wins
