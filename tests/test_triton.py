"""Backend triton against a real Triton Inference Server (the tritonserver of the nvidia-pytriton
wheel, started by `python -m trackpipe.models serve`), the model repository writer, and the faults:
an unreachable server, a wrong model, a server killed and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from assets import IMAGES, VIDEO
from mqtt_broker import free_port
from procs import wait_for

ROOT = Path(__file__).resolve().parents[1]
DOG = IMAGES / "dog.jpg"


def _server_missing() -> str:
    try:
        import tritonclient.grpc  # noqa: F401

        from trackpipe.models.serve import check_interpreter, find_server
        find_server()
        check_interpreter()
    except Exception as e:  # noqa: BLE001
        return str(e)
    return ""


needs_server = pytest.mark.skipif(bool(_server_missing()), reason=_server_missing() or "-")


def _models(*args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "trackpipe.models", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kw)


def _spec(**kw):
    from trackpipe.models.spec import ModelSpec
    return ModelSpec(**{"backend": "onnx", "precision": "fp32", **kw}).resolve()


# --- unit: URLs, config.pbtxt -----------------------------------------------------------------

def test_parse_url():
    from trackpipe.models.errors import ModelConfigError
    from trackpipe.models.triton_repo import parse_url

    assert parse_url("grpc://gpu-box:9001").address == "gpu-box:9001"
    u = parse_url("http://10.0.0.2")
    assert (u.protocol, u.address, u.ssl) == ("http", "10.0.0.2:8000", False)
    assert parse_url("grpcs://h").ssl and parse_url("grpc://h").address == "h:8001"
    for bad in ("ftp://h:1", "grpc://", "h:8001", "grpc://h:8001/v2", "grpc://h:99999"):
        with pytest.raises(ModelConfigError, match="triton_url: expected grpc://HOST:PORT"):
            parse_url(bad)
    with pytest.raises(ModelConfigError, match="triton_url"):
        _spec(backend="triton", triton_url="tcp://h:1")


def test_export_writes_a_repository_triton_reads(tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    r = _models("export", "--format", "triton", "--out", tmp_path / "repo", "--max-batch", "4",
                "--queue-delay-us", "500", "--instances", "2")
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "repo" / "trackpipe_yolo"
    assert Path(r.stdout.strip()) == folder and (folder / "1" / "model.onnx").stat().st_size > 1_000_000
    cfg = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("trackpipe_yolo", "onnxruntime_onnx", 4)
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("image", [3, 320, 320])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("head_0", [255, 10, 10]), ("head_1", [255, 20, 20])]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    group = cfg.instance_group[0]
    assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    again = _models("export", "--format", "triton", "--out", tmp_path / "repo")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr


def test_unreachable_server_is_one_line_exit_2():
    url = f"grpc://127.0.0.1:{free_port()}"
    r = _models("detect", "--backend", "triton", "--triton-url", url, "--image", DOG, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: cannot reach the Triton server at {url}") and r.stderr.count("\n") == 1


def test_pipeline_with_an_unreachable_server_is_one_line_exit_2():
    url = f"grpc://127.0.0.1:{free_port()}"
    r = subprocess.run([sys.executable, "run_tracker.py", "--source", VIDEO / "aiguys_video.mp4", "--headless",
                        "--backend", "triton", "--triton-url", url, "--max-frames", "5"], cwd=ROOT, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach the Triton server at {url}" in lines[0], r.stderr


# --- against the real server ------------------------------------------------------------------

def _start_serve(log: Path, *extra) -> tuple:
    """`python -m trackpipe.models serve` (onnx fp32) on free ports, ready -> (grpc url, http url, process)."""
    grpc_port, http_port = free_port(), free_port()
    with open(log, "w") as out:
        p = subprocess.Popen([sys.executable, "-m", "trackpipe.models", "serve", "--backend", "onnx", "--precision",
                              "fp32", "--port", str(grpc_port), "--http-port", str(http_port), *extra], cwd=ROOT,
                             stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "serving" in log.read_text() or p.poll() is not None, 180, "the Triton server")
        assert p.poll() is None, log.read_text()
    except BaseException:
        _stop(p)
        raise
    return f"grpc://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", p


def _stop(p) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        p.wait(60)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the module's tests -> (grpc url, http url, process)."""
    if _server_missing():
        pytest.skip(_server_missing())
    s = _start_serve(tmp_path_factory.mktemp("serve") / "serve.log", "--queue-delay-us", "5000")
    try:
        yield s
    finally:
        _stop(s[2])


def _same(a, b):
    assert len(a) == len(b) and len(a) > 0
    assert np.array_equal(a.class_id, b.class_id)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1.0)
    np.testing.assert_allclose(a.score, b.score, atol=1e-3)


@needs_server
@pytest.mark.parametrize("which", [0, 1], ids=["grpc", "http"])
def test_parity_on_dog(served, which):
    from trackpipe.models.factory import build_detector

    img = cv2.imread(str(DOG))
    with build_detector(_spec()) as ref, build_detector(_spec(backend="triton", triton_url=served[which])) as det:
        assert det.describe().startswith("triton-trackpipe_yolo@")
        _same(det.detect(img), ref.detect(img))


@needs_server
def test_parity_on_20_video_frames_in_batches(served):
    from trackpipe.models.factory import build_detector

    cap = cv2.VideoCapture(str(VIDEO / "aiguys_video.mp4"))
    frames = [cap.read()[1] for _ in range(20)]
    cap.release()
    with build_detector(_spec()) as ref, build_detector(_spec(backend="triton", triton_url=served[0])) as det:
        got = [d for i in range(0, 20, 4) for d in det.detect_batch(frames[i:i + 4])]
        want = ref.detect_batch(frames)
        for a, b in zip(got, want):
            assert len(a) == len(b)
            if len(a):
                _same(a, b)
        assert sum(len(d) for d in got) > 20
        assert det.profile()["requests"] == 5 and det.max_batch == 8
        whole = det.detect_batch(frames)   # more than the model's max_batch_size: three requests
        assert det.profile()["requests"] == 8
        for a, b in zip(whole, got):
            assert len(a) == len(b) and np.array_equal(a.xyxy, b.xyxy)


@needs_server
def test_wrong_model_name_or_shape_is_one_line(served):
    r = _models("detect", "--backend", "triton", "--triton-url", served[0], "--triton-model", "yolov9", "--image", DOG)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "has no ready model 'yolov9' (serving: trackpipe_yolo)" in r.stderr
    r = _models("detect", "--backend", "triton", "--triton-url", served[0], "--size", "416", "--image", DOG)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "takes image [-1, 3, 320, 320]; this detector sends image [-1, 3, 416, 416]" in r.stderr


@needs_server
def test_concurrent_clients_are_batched_by_triton(served):
    """Four clients at once: Triton's dynamic batching forms batches of more than one request
    (its statistics say so), and every client gets its own frame's detections."""
    from trackpipe.models.backends.triton import server_statistics
    from trackpipe.models.factory import build_detector

    img = cv2.imread(str(DOG))
    with build_detector(_spec()) as ref:
        want = ref.detect(img)
    dets = [build_detector(_spec(backend="triton", triton_url=served[0])) for _ in range(4)]
    errors = []

    def client(det, n):
        try:
            for _ in range(n):
                _same(det.detect(img), want)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    try:
        for _ in range(5):   # rounds until one shows a batch (normally the first)
            threads = [threading.Thread(target=client, args=(d, 6)) for d in dets]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not errors, errors
            stats = server_statistics(served[0], "trackpipe_yolo")
            if max(stats["batches"]) > 1:
                break
        assert max(stats["batches"]) > 1, stats
        assert stats["executions"] < stats["requests"] and stats["compute_ms"] > 0
    finally:
        for d in dets:
            d.close()


@needs_server
def test_server_killed_and_restarted_detection_resumes(tmp_path):
    """SIGKILL the server during a run: the detector reports lost, keeps its frame, and detects it
    as soon as a new server answers (well within 5 s of its readiness)."""
    from trackpipe.models.darknet import load_network
    from trackpipe.models.factory import build_detector
    from trackpipe.models.serve import TritonServer, write_served_repo

    spec = _spec()
    write_served_repo(spec, load_network(spec.cfg, spec.weights, spec.size), tmp_path / "repo", "trackpipe_yolo",
                      8, 1000, 1)
    grpc_port, http_port = free_port(), free_port()
    img = cv2.imread(str(DOG))
    states = []
    with TritonServer(tmp_path / "repo", grpc_port, http_port) as server:
        server.start().wait_ready("trackpipe_yolo")
        det = build_detector(_spec(backend="triton", triton_url=f"grpc://127.0.0.1:{grpc_port}"))
        det.on_wait = lambda lost, reason: states.append(lost) or True
        want = det.detect(img)
        server.kill()
        out, done = {}, threading.Event()

        def run():
            out["dets"] = det.detect(img)
            out["t"] = time.monotonic()
            done.set()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        wait_for(lambda: det.state == "lost", 30, "the detector to see the server lost")
        assert not done.wait(1.0)
        server2 = TritonServer(tmp_path / "repo", grpc_port, http_port, work=tmp_path / "work2")
        try:
            server2.start().wait_ready("trackpipe_yolo")
            t_ready = time.monotonic()
            assert done.wait(30)
            assert out["t"] - t_ready < 5.0
            _same(out["dets"], want)
            assert det.state == "ok" and det.lost_count == 1 and states[0] is True and states[-1] is False
        finally:
            det.close()
            server2.close()


@needs_server
def test_serve_stops_cleanly_on_ctrl_c(tmp_path):
    p = _start_serve(tmp_path / "serve.log")[2]
    try:
        children = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        assert children, "serve runs tritonserver as its child"
        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 0
        for pid in children:
            wait_for(lambda: not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2],
                     30, "tritonserver to exit")
    finally:
        _stop(p)


@needs_server
def test_file_run_survives_the_server_killed_and_restarted(tmp_path):
    """A file run: the server SIGKILLed mid-run and back 3 s later: the pipeline never exits,
    detector_lost and detector_restored are in the events file, detection resumes within 5 s of
    the server's return, and every frame comes out."""
    import json

    from trackpipe.models.darknet import load_network
    from trackpipe.models.serve import TritonServer, write_served_repo

    spec = _spec()
    write_served_repo(spec, load_network(spec.cfg, spec.weights, spec.size), tmp_path / "repo", "trackpipe_yolo",
                      8, 1000, 1)
    grpc_port, http_port = free_port(), free_port()
    mot, events, profile = tmp_path / "mot.txt", tmp_path / "events.jsonl", tmp_path / "profile.json"
    with TritonServer(tmp_path / "repo", grpc_port, http_port, work=tmp_path / "w1") as first:
        first.start().wait_ready("trackpipe_yolo")
        run = subprocess.Popen([sys.executable, "run_tracker.py", "--source", VIDEO / "aiguys_video.mp4", "--headless",
                                "--backend", "triton", "--triton-url", f"grpc://127.0.0.1:{grpc_port}", "--mot", mot,
                                "--events", events, "--profile", profile, "--set", "pipeline.max_frames=60"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: mot.exists() and len(mot.read_text().splitlines()) > 10 or run.poll() is not None, 180,
                     "the run's first tracks")
            assert run.poll() is None, run.communicate()[0]
            first.kill()
            time.sleep(3.0)
            assert run.poll() is None
            with TritonServer(tmp_path / "repo", grpc_port, http_port, work=tmp_path / "w2") as second:
                second.start().wait_ready("trackpipe_yolo")
                t_ready = time.time()
                out = run.communicate(timeout=240)[0]
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 0, out
    rep = json.loads(profile.read_text())
    assert rep["frames_in"] == rep["frames_out"] == 60, rep
    ev = [json.loads(ln) for ln in events.read_text().splitlines()]
    kinds = [e["event"] for e in ev if e["event"].startswith("detector_")]
    assert kinds[:2] == ["detector_lost", "detector_restored"], kinds
    restored = next(e for e in ev if e["event"] == "detector_restored")
    assert restored["t"] - t_ready < 5.0 and restored["camera"] == "cam0"
    assert rep["stages"]["infer"]["detector"] == "ok" and rep["stages"]["infer"]["remote"]["lost"] >= 1


@needs_server
def test_bearer_token_from_the_environment(tmp_path, monkeypatch):
    """A server that asks for a token on its inference protocol: refused without one, served with
    $TRACKPIPE_TRITON_TOKEN."""
    from trackpipe.models.darknet import load_network
    from trackpipe.models.errors import ModelError
    from trackpipe.models.factory import build_detector
    from trackpipe.models.serve import TritonServer, write_served_repo

    spec = _spec()
    write_served_repo(spec, load_network(spec.cfg, spec.weights, spec.size), tmp_path / "repo", "trackpipe_yolo",
                      8, 1000, 1)
    grpc_port, http_port = free_port(), free_port()
    img = cv2.imread(str(DOG))
    with TritonServer(tmp_path / "repo", grpc_port, http_port,
                      extra=("--grpc-restricted-protocol=inference:authorization=Bearer s3cret",)) as server:
        server.start().wait_ready("trackpipe_yolo")
        url = f"grpc://127.0.0.1:{grpc_port}"
        monkeypatch.delenv("TRACKPIPE_TRITON_TOKEN", raising=False)
        with build_detector(_spec(backend="triton", triton_url=url)) as det:
            with pytest.raises(ModelError, match=r"refused the request: .*restricted.*\$TRACKPIPE_TRITON_TOKEN"):
                det.detect(img)
        monkeypatch.setenv("TRACKPIPE_TRITON_TOKEN", "s3cret")
        with build_detector(_spec(backend="triton", triton_url=url)) as det:
            assert len(det.detect(img)) >= 3
