"""Backend triton against a real Triton Inference Server on this machine: parity, overhead, sharing.

    python benchmarks/bench_triton.py [--seconds 20] [--repeat 1] [--outage 10]
        [--skip parity,overhead,sharing,fault,shm] [--shm-sizes 320,608]

The server is `python -m models serve`'s (the nvidia-pytriton wheel's tritonserver, python backend
running our detector with ``--backend auto`` probed on the camera's video, dynamic batching up to 8
with a 2 ms queue delay), started here on free ports and shared by every run.

- parity: the default model (Yolo-Fastest-1.1-xl, 320) on dog.jpg and on the first 20 frames of
  aiguys_video.mp4, backend triton vs the pair the server runs, in-process (e.g. openvino-bf16):
  detections count and the largest box coordinate difference (px).
- overhead: one pipeline, one camera (``aiguys_video.mp4`` at 30 fps, ``--realtime --loop``, headless,
  ``--duration`` seconds, motion gating off): backend triton vs in-process ``auto``, runs alternating; camera FPS,
  their ratio, end-to-end latency p50/p95 and what triton adds; the client's request latency beside
  Triton's own queue and compute times over the run (its statistics API).
- sharing: two pipelines at once (two processes, each two such cameras) against the one server, vs
  the same two pipelines each with its own in-process ``auto`` detector: the total detector
  throughput (frames through infer per second, both pipelines) and its ratio, and the batch sizes
  Triton formed meanwhile (its statistics).
- fault: one live camera on backend triton, the server SIGKILLed for ``--outage`` seconds and started
  again: the run stays up, the API's infer row says ``detector: lost`` then ``ok``, the camera's FPS
  during the outage, and from the events file when the loss was noticed and how long after the
  server's return detection resumed (``detector_restored``).

- shm: Triton system shared memory on vs off (``--triton-shm on|off``), at each of ``--shm-sizes``
  (network input sides): a server of its own per size (our python backend on onnx fp32: the same
  server for both modes, so only the transport differs), then ``--repeat`` pairs of overhead-like
  pipeline runs, the pair's order alternating (on/off, off/on, ...): camera FPS, the client's
  request latency p50/p95 (the infer row's ``remote``) and end-to-end latency p50/p95; and the
  detector alone: ``detect()`` on one frame, 30 calls per mode per round, 3 interleaved rounds,
  the request's median and p95 (ms).

Each figure is the median over ``--repeat`` runs; the load average is printed with them. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from assets import IMAGES, VIDEO  # noqa: E402
from mqtt_broker import free_port  # noqa: E402
from bench_cameras import run_tracker  # noqa: E402

CAMERA = VIDEO / "aiguys_video.mp4"
MODEL = "trackpipe_yolo"


def start_server(tmp: Path, **spec_kw):
    """-> (TritonServer ready, grpc url). ``spec_kw``: the served ModelSpec's fields (default: backend
    auto, the measured best pair here, as the pipeline's, probed on the camera's video)."""
    from trackpipe.models.darknet import load_network
    from trackpipe.models.serve import TritonServer, write_served_repo
    from trackpipe.models.spec import ModelSpec

    spec = ModelSpec(**spec_kw).resolve()
    write_served_repo(spec, load_network(spec.cfg, spec.weights, spec.size), tmp / "repo", MODEL, 8, 2000, 1,
                      probe=None if spec_kw else str(CAMERA))
    grpc_port, http_port = free_port(), free_port()
    server = TritonServer(tmp / "repo", grpc_port, http_port, work=tmp / "server")
    server.start().wait_ready(MODEL)
    return server, f"grpc://127.0.0.1:{grpc_port}"


def served_backend(server) -> str:
    """What the server's model runs on (`TritonPythonModel` says it in the server log)."""
    for ln in server.log_path.read_text(errors="replace").splitlines():
        if f"trackpipe: {MODEL} runs on " in ln:
            return ln.rsplit(" ", 1)[1]
    return "onnx-fp32"


def parity(url: str, served: str) -> dict:
    """Backend triton vs the same backend/precision pair in-process (``served``, e.g. openvino-bf16)."""
    import cv2

    from trackpipe.models.factory import build_detector
    from trackpipe.models.spec import ModelSpec

    cap = cv2.VideoCapture(str(CAMERA))
    frames = [cv2.imread(str(IMAGES / "dog.jpg"))] + [cap.read()[1] for _ in range(20)]
    cap.release()
    backend, precision = served.split("-")
    spec = ModelSpec(backend=backend, precision=precision).resolve()
    remote = spec.with_(backend="triton", triton_url=url, precision="auto")
    with build_detector(spec) as ref, build_detector(remote) as det:
        got, want = det.detect_batch(frames[:1]) + det.detect_batch(frames[1:]), ref.detect_batch(frames)
    same = all(len(a) == len(b) and np.array_equal(a.class_id, b.class_id) for a, b in zip(got, want))
    diff = max((float(np.abs(a.xyxy - b.xyxy).max()) for a, b in zip(got, want) if len(a) and len(a) == len(b)),
               default=0.0)
    return {"in_process": served, "images": len(frames), "detections": sum(len(d) for d in want),
            "same_count_and_classes": same, "max_box_diff_px": round(diff, 4)}


def camera_args(n: int) -> list:
    """``n`` live 30 fps cameras; motion gating off: every frame is detected (the figures are the
    detector's, not the gate's)."""
    args = ["--headless", "--realtime", "--loop", "--set", "detect.motion=off"]
    for _ in range(n):
        args += ["--source", str(CAMERA)]
    return args


def backend_args(url) -> list:
    return ["--backend", "triton", "--triton-url", url] if url else ["--backend", "auto"]


def overhead_run(url, seconds: float, tmp: Path, i: int) -> dict:
    from trackpipe.models.backends.triton import server_statistics, since

    before = server_statistics(url, MODEL) if url else {}
    p, _, _ = run_tracker(camera_args(1) + backend_args(url), seconds, tmp / f"o{i}_{bool(url)}.json")
    served = since(server_statistics(url, MODEL), before) if url else {}
    cam = next(iter(p["cameras"].values()))
    infer = p["stages"]["infer"]
    lat = p["latency_ms"]
    out = {"fps": cam["fps"], "latency_p50_ms": lat.get("p50"), "latency_p95_ms": lat.get("p95"),
           "backend": infer.get("backend", "")}
    remote = infer.get("remote") or {}
    if remote:
        out.update(client_ms_p50=remote.get("client_ms_p50"), client_ms_p95=remote.get("client_ms_p95"),
                   server_queue_ms=served.get("queue_ms"), server_compute_ms=served.get("compute_ms"))
    return out


def shm_run(url: str, size: int, mode: str, seconds: float, tmp: Path, i: int) -> dict:
    """One overhead-like run (one live camera) at network input ``size`` with --triton-shm ``mode``."""
    p, _, _ = run_tracker(camera_args(1) + backend_args(url) + ["--size", str(size), "--triton-shm", mode], seconds,
                          tmp / f"shm{size}_{mode}_{i}.json")
    remote = p["stages"]["infer"].get("remote") or {}
    if remote.get("shm") is not (mode == "on"):
        raise SystemExit(f"--triton-shm {mode}: the run says shm={remote.get('shm')}")
    cam = next(iter(p["cameras"].values()))
    return {"fps": cam["fps"], "client_ms_p50": remote.get("client_ms_p50"),
            "client_ms_p95": remote.get("client_ms_p95"), "latency_p50_ms": p["latency_ms"].get("p50"),
            "latency_p95_ms": p["latency_ms"].get("p95")}


def shm_direct(url: str, size: int, calls: int = 30, rounds: int = 3) -> dict:
    """The detector alone: ``detect()`` of one camera frame, shm on vs off in interleaved rounds
    -> {mode: {request_ms_p50, request_ms_p95}} (the client's request latency)."""
    import cv2

    from trackpipe.models.factory import build_detector
    from trackpipe.models.spec import ModelSpec

    cap = cv2.VideoCapture(str(CAMERA))
    frame = cap.read()[1]
    cap.release()
    dets = {m: build_detector(ModelSpec(backend="triton", triton_url=url, size=size, triton_shm=m).resolve())
            for m in ("on", "off")}
    lat = {m: [] for m in dets}
    try:
        for d in dets.values():
            d.detect(frame)
        for r in range(rounds):
            for m in (("on", "off") if r % 2 == 0 else ("off", "on")):
                dets[m].latency_ms.clear()
                for _ in range(calls):
                    dets[m].detect(frame)
                lat[m] += list(dets[m].latency_ms)
    finally:
        for d in dets.values():
            d.close()
    return {m: {"request_ms_p50": round(float(np.percentile(v, 50)), 2),
                "request_ms_p95": round(float(np.percentile(v, 95)), 2)} for m, v in lat.items()}


def shm_part(sizes: list, seconds: float, repeat: int, tmp: Path) -> dict:
    """Shared memory on vs off at each input size (module docstring)."""
    out = {}
    for size in sizes:
        server, url = start_server(tmp / f"shm{size}", backend="onnx", precision="fp32", size=size)
        try:
            direct = shm_direct(url, size)
            print(f"shm {size} detector alone: {direct}", flush=True)
            rows = {"on": [], "off": []}
            for i in range(repeat):
                for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
                    rows[mode].append(shm_run(url, size, mode, seconds, tmp, i))
                    print(f"shm {size} {mode} #{i}: {rows[mode][-1]}", flush=True)
        finally:
            server.close()
        med = {m: {k: median(r, k) for k in r[0]} for m, r in rows.items()}
        on, off = med["on"], med["off"]
        out[str(size)] = {"on": on, "off": off, "detector_alone": direct,
                          "fps_ratio": round(on["fps"] / off["fps"], 3) if off["fps"] else None,
                          "client_p50_saved_ms": round(off["client_ms_p50"] - on["client_ms_p50"], 2),
                          "client_p95_saved_ms": round(off["client_ms_p95"] - on["client_ms_p95"], 2),
                          "alone_p50_saved_ms": round(direct["off"]["request_ms_p50"]
                                                      - direct["on"]["request_ms_p50"], 2)}
        print(f"shm {size}:", out[str(size)], flush=True)
    return out


def two_pipelines(url, seconds: float, tmp: Path, i: int) -> dict:
    """Both pipelines at once; -> total detector FPS and each pipeline's."""
    procs, profs = [], []
    for k in range(2):
        prof = tmp / f"s{i}_{bool(url)}_{k}.json"
        cmd = [sys.executable, str(REPO / "run_tracker.py"), *camera_args(2), *backend_args(url), "--duration",
               str(seconds), "--profile", str(prof), "--log-level", "warning"]
        procs.append(subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        profs.append(prof)
    for p in procs:
        _, err = p.communicate(timeout=seconds + 600)
        if p.returncode != 0:
            raise SystemExit(f"run failed ({p.returncode}): {err.strip()[-500:]}")
    fps = [json.loads(f.read_text())["stages"]["infer"]["fps"] for f in profs]
    return {"detector_fps_total": round(sum(fps), 2), "detector_fps_each": fps}


def _get(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def fault_run(tmp: Path, outage_s: float) -> dict:
    """One live camera on backend triton; the server SIGKILLed for ``outage_s`` and started again:
    does the run stay up, what do the API and the events say, when do detections resume."""
    server, url = start_server(tmp / "fault")
    port, events = free_port(), tmp / "fault_events.jsonl"
    cmd = [sys.executable, str(REPO / "run_tracker.py"), *camera_args(1), *backend_args(url), "--duration",
           str(30 + outage_s), "--http-port", str(port), "--events", str(events), "--log-level", "warning"]
    run = subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out = {"outage_s": outage_s}
    try:
        def infer_row():
            st = _get(port, "/api/stats") or {}
            return (st.get("stages") or {}).get("infer") or {}

        def cam_fps():
            cams = (_get(port, "/api/cameras") or {}).get("cameras") or []
            return cams[0].get("fps", 0.0) if cams else 0.0

        def api_events():
            evs = (_get(port, "/api/events?since=0") or {}).get("events") or []
            return [e["event"] for e in evs if str(e.get("event", "")).startswith("detector_")]

        deadline = time.monotonic() + 300
        while infer_row().get("items", 0) < 30 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3.0)
        out["camera_fps_before"] = cam_fps()
        server.kill()
        t_kill = time.time()
        time.sleep(min(outage_s, 5.0))
        out["api_detector_during"] = infer_row().get("detector")
        out["camera_fps_during"] = cam_fps()
        time.sleep(max(0.0, outage_s - 5.0))
        out["run_alive_during"] = run.poll() is None
        server.close()
        server = start_server_on(tmp / "fault2", url)
        t_ready = time.time()
        while infer_row().get("detector") != "ok" and time.monotonic() < deadline:
            time.sleep(0.2)
        out["api_detector_after"] = infer_row().get("detector")
        time.sleep(2.0)
        out["api_events"] = api_events()
        _, err = run.communicate(timeout=300)
        out["run_exit_code"] = run.returncode
        ev = [json.loads(ln) for ln in events.read_text().splitlines()] if events.exists() else []
        lost = [e for e in ev if e["event"] == "detector_lost"]
        back = [e for e in ev if e["event"] == "detector_restored"]
        out["events"] = [e["event"] for e in ev if e["event"].startswith("detector_")]
        if lost:
            out["lost_noticed_after_s"] = round(lost[0]["t"] - t_kill, 2)
        if back:
            out["detections_resumed_after_ready_s"] = round(back[0]["t"] - t_ready, 2)
    finally:
        if run.poll() is None:
            run.kill()
        server.close()
    return out


def start_server_on(work: Path, url: str):
    """The served repository of `start_server` again, on ``url``'s port (a restart)."""
    from trackpipe.models.serve import TritonServer

    grpc_port = int(url.rsplit(":", 1)[1])
    server = TritonServer(work.parent / "fault" / "repo", grpc_port, free_port(), work=work)
    server.start().wait_ready(MODEL)
    return server


def median(rows: list, key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="running time of each pipeline run (default 20)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each kind, alternating (default 1)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: parity, overhead, sharing, fault, shm")
    ap.add_argument("--shm-sizes", default="320,608", help="shm: network input sides (default 320,608)")
    ap.add_argument("--outage", type=float, default=10.0, help="fault: seconds the server is away (default 10)")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    from trackpipe.models.backends.triton import server_statistics

    result = {"load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as d:
        tmp = Path(d)
        server, url = start_server(tmp) if not {"parity", "overhead", "sharing"} <= skip else (None, "")
        try:
            if "parity" not in skip:
                result["parity"] = parity(url, served_backend(server))
                print("parity:", result["parity"], flush=True)
            if "overhead" not in skip:
                rows = {"triton": [], "auto": []}
                for i in range(a.repeat):
                    for name, u in (("auto", None), ("triton", url)):
                        rows[name].append(overhead_run(u, a.seconds, tmp, i))
                        print(f"overhead {name} #{i}: {rows[name][-1]}", flush=True)
                med = {n: {k: median(r, k) for k in r[0] if k != "backend"} for n, r in rows.items()}
                t, b = med["triton"], med["auto"]
                result["overhead"] = {
                    "auto": med["auto"], "triton": med["triton"], "auto_backend": rows["auto"][0]["backend"],
                    "fps_ratio": round(t["fps"] / b["fps"], 3) if b["fps"] else None,
                    "added_latency_p50_ms": round(t["latency_p50_ms"] - b["latency_p50_ms"], 1),
                    "added_latency_p95_ms": round(t["latency_p95_ms"] - b["latency_p95_ms"], 1)}
                print("overhead:", result["overhead"], flush=True)
            if "sharing" not in skip:
                rows = {"triton": [], "auto": []}
                for i in range(a.repeat):
                    for name, u in (("auto", None), ("triton", url)):
                        before = server_statistics(url, MODEL)
                        rows[name].append(two_pipelines(u, a.seconds, tmp, i))
                        if u:
                            after = server_statistics(url, MODEL)
                            formed = {k: v - before["batches"].get(k, 0) for k, v in after["batches"].items()}
                            rows[name][-1]["triton_batches"] = {k: v for k, v in formed.items() if v}
                        print(f"sharing {name} #{i}: {rows[name][-1]}", flush=True)
                t, b = median(rows["triton"], "detector_fps_total"), median(rows["auto"], "detector_fps_total")
                result["sharing"] = {"triton_total_fps": t, "in_process_total_fps": b,
                                     "ratio": round(t / b, 3) if b else None,
                                     "triton_batches": rows["triton"][-1].get("triton_batches"),
                                     "runs": rows}
                print("sharing:", {k: v for k, v in result["sharing"].items() if k != "runs"}, flush=True)
        finally:
            if server is not None:
                server.close()
        if "fault" not in skip:
            result["fault"] = fault_run(tmp, a.outage)
            print("fault:", result["fault"], flush=True)
        if "shm" not in skip:
            result["shm"] = shm_part([int(v) for v in a.shm_sizes.split(",")], a.seconds, a.repeat, tmp)
    result["load_after"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
