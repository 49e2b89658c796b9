"""Detector throughput per backend and precision, measured side by side in one run."""

from __future__ import annotations

import gc
import logging
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .darknet import load_network
from .errors import ModelError
from .frames import synthetic_frame  # noqa: F401  (re-exported)
from .spec import ModelSpec

log = logging.getLogger(__name__)


def time_infer(detector, blob: np.ndarray, seconds: float, min_iters: int = 5) -> Dict[str, float]:
    """Time `detector.infer(blob)` (network only, no pre/post) for about `seconds`."""
    detector.infer(blob)  # warm-up: lazy allocation, graph compilation
    times: List[float] = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < min_iters:
        t0 = time.perf_counter()
        detector.infer(blob)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000.0
    b = blob.shape[0]
    return {"fps": round(float(b * 1000.0 / np.median(ms)), 2), "ms_p50": round(float(np.median(ms)), 2),
            "ms_p95": round(float(np.percentile(ms, 95)), 2), "iters": len(times)}


# `--backends all`: every backend with the precisions it can run (unavailable ones say why)
ALL_PAIRS = (("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
             ("opencv", "fp32"), ("tf", "fp32"), ("tensorrt", "fp32"), ("tensorrt", "fp16"), ("tensorrt", "int8"))


def bench_pairs(backends: List[str], precisions: List[str]) -> List[Tuple[str, str, str]]:
    """(key, backend, precision) to measure. 'all' expands to ALL_PAIRS plus auto; 'auto' is
    backend and precision auto (the measured choice), keyed 'auto'. Keys are '<backend>' when
    only fp32 is asked for, else '<backend>-<precision>'."""
    if "all" in backends:
        pairs = [(f"{b}-{p}", b, p) for b, p in ALL_PAIRS]
        return pairs + [("auto", "auto", "auto")]
    out = []
    for backend in backends:
        if backend == "auto":
            out.append(("auto", "auto", "auto"))
            continue
        for precision in precisions:
            out.append((backend if precisions == ["fp32"] else f"{backend}-{precision}", backend, precision))
    return out


def bench_backends(spec: ModelSpec, backends: List[str], precisions: List[str], seconds: float,
                   image: Optional[np.ndarray] = None, batch: int = 1,
                   probe_frames: Optional[Sequence[np.ndarray]] = None,
                   calib_source: Optional[str] = None) -> Dict[str, Dict]:
    """{"<key>": {"fps", "ms_p50", "ms_p95", "iters"}} per `bench_pairs` key; the "auto" entry
    also has "choice" (e.g. "openvino-bf16") and "choice_measured" (what auto saw).

    Backends are measured round-robin in short slices (so load changes on a
    shared machine hit all of them alike), and the medians reported. probe_frames:
    real frames for auto's accuracy check, calib_source: where they came from (int8 calibrated
    on it; see `auto.choose`).
    """
    from .factory import build_detector, load_model  # noqa: PLC0415

    network = load_model(spec)
    image = synthetic_frame() if image is None else image
    detectors = {}
    for key, backend, precision in bench_pairs(backends, precisions):
        try:
            detectors[key] = build_detector(spec.with_(backend=backend, precision=precision), network,
                                            probe_frames=probe_frames, calib_source=calib_source)
        except ModelError as e:
            log.warning("skipping %s: %s", key, e)
            detectors[key] = str(e)
    live = {k: d for k, d in detectors.items() if not isinstance(d, str)}
    if not live:
        raise ModelError("no backend could be built: " + "; ".join(f"{k}: {v}" for k, v in detectors.items()))
    blob, _ = next(iter(live.values())).preprocess([image] * batch)
    slices = max(1, int(seconds // 2))
    runs: Dict[str, List[Dict]] = {k: [] for k in live}
    for _ in range(slices):
        for k, d in live.items():
            runs[k].append(time_infer(d, blob, seconds / slices))
    out: Dict[str, Dict] = {}
    for k, d in detectors.items():
        if isinstance(d, str):
            out[k] = {"error": d}
            continue
        ms = np.concatenate([[r["ms_p50"]] for r in runs[k]])
        p50 = float(np.median(ms))
        out[k] = {"fps": round(batch * 1000.0 / p50, 2), "ms_p50": round(p50, 2),
                  "ms_p95": round(float(max(r["ms_p95"] for r in runs[k])), 2),
                  "iters": int(sum(r["iters"] for r in runs[k]))}
        if k == "auto":
            out[k]["choice"] = d.describe().split(" ")[0]
            if d.choice is not None:
                out[k]["choice_measured"] = d.choice.measured
                if d.choice.calib:   # int8 calibrated on the probe's source
                    out[k]["calib"] = d.choice.calib
        d.close()
    gc.collect()
    return out


def format_table(results: Dict[str, Dict]) -> str:
    rows = [f"{'backend':<16}{'FPS':>9}{'ms p50':>9}{'ms p95':>9}{'iters':>7}"]
    for k, r in results.items():
        if "error" in r:
            rows.append(f"{k:<16}  unavailable: {r['error']}")
        else:
            chose = f"  -> {r['choice']}" if "choice" in r else ""
            rows.append(f"{k:<16}{r['fps']:>9.2f}{r['ms_p50']:>9.2f}{r['ms_p95']:>9.2f}{r['iters']:>7}{chose}")
    return "\n".join(rows)


# --- the model guide: the zoo's models side by side on this machine ---------------------------

# COCO AP50 of the zoo's models. coco66: measured here on the 66 COCO val2017 images of the test
# assets (`python -m trackpipe.models evaluate --model NAME`, fp32, conf 0.005); published: the
# authors' figure on full COCO (val2017 for Yolo-Fastest, test-dev for YOLOv4, the paper for YOLOv3).
KNOWN_AP50 = {
    "yolo-fastest-1.1-xl": {"coco66": 0.434, "published": 0.343},
    "yolo-fastest-1.1": {"coco66": 0.313, "published": 0.244},
    "yolov4-tiny": {"coco66": None, "published": 0.402},
    "yolov4": {"coco66": None, "published": 0.628},
    "yolov3-tiny": {"coco66": None, "published": 0.331},
    "yolov3": {"coco66": None, "published": 0.553},
}
GUIDE_MODELS = ("yolo-fastest-1.1-xl", "yolo-fastest-1.1", "yolov4-tiny", "yolov4")


def guide_files(name: str, folders: Sequence, scratch) -> Tuple[Optional[object], Optional[object], str]:
    """(cfg, weights, kind) of zoo model ``name`` without downloading: kind "real" (packaged,
    cached, or the upstream file in one of ``folders``, size and sha256 checked), "random"
    (only its cfg is here: weights of random values written to ``scratch``, for its speed), or
    "missing" (cfg None)."""
    from pathlib import Path  # noqa: PLC0415

    from . import zoo  # noqa: PLC0415
    from .darknet import load_cfg, write_random_weights  # noqa: PLC0415

    e = zoo.entry(name)
    if zoo.cached(name):
        files = zoo.resolve(name)
        return files.cfg, files.weights, "real"
    dirs = [zoo.weights_dir()] + [Path(f) for f in folders]
    cfg = next((d / e.cfg.filename for d in dirs if (d / e.cfg.filename).is_file()), None)
    if cfg is None:
        return None, None, "missing"
    for d in dirs:
        w = d / e.weights.filename
        if w.is_file() and (e.weights.size is None or w.stat().st_size == e.weights.size) and (
                e.weights.sha256 is None or zoo.sha256_of(w) == e.weights.sha256):
            return cfg, w, "real"
    w = Path(scratch) / f"{name}-random.weights"
    write_random_weights(load_cfg(cfg), w)
    return cfg, w, "random"


def model_guide(spec: ModelSpec, names: Sequence[str], seconds: float, folders: Sequence = (),
                probe_frames: Optional[Sequence[np.ndarray]] = None) -> List[Dict]:
    """One row per zoo model: its weights ("real", "random", "missing"), input size, FPS of
    ``spec``'s backend and precision at batch 1 on this machine (network only, on a real frame
    of the probe when given), COCO AP50 where known (`KNOWN_AP50`). Models are timed one after
    the other, each for ``seconds``."""
    import tempfile  # noqa: PLC0415

    from .classes import coco_names_path  # noqa: PLC0415
    from .factory import build_detector  # noqa: PLC0415
    from .zoo import entry  # noqa: PLC0415

    rows = []
    with tempfile.TemporaryDirectory(prefix="trackpipe-guide-") as scratch:
        for name in names:
            e = entry(name)
            row = {"model": name, "size": e.size, **KNOWN_AP50.get(name, {"coco66": None, "published": None})}
            cfg, weights, row["weights"] = guide_files(name, folders, scratch)
            if cfg is None:
                row["error"] = f"not here: python -m trackpipe.models download {name}"
                rows.append(row)
                continue
            try:
                s = spec.with_(model=None, cfg=cfg, weights=weights, size=(e.size, e.size),
                               names=coco_names_path().with_name(e.names))
                net = load_network(s.cfg, s.weights, s.size)
                det = build_detector(s, net)
            except ModelError as err:
                row["error"] = str(err)
                rows.append(row)
                continue
            frame = probe_frames[0] if probe_frames else synthetic_frame()
            blob, _ = det.preprocess([frame])
            row.update(time_infer(det, blob, seconds), backend=det.describe().split(" ")[0])
            det.close()
            del det, net
            gc.collect()
            rows.append(row)
    return rows


def format_guide(rows: List[Dict]) -> str:
    """The guide's table, and what its columns mean."""
    def ap(v):
        return f"{v:.3f}" if v is not None else "-"

    out = [f"{'model':<22}{'size':>5}{'weights':>9}{'backend':>15}{'FPS':>8}{'ms p50':>8}"
           f"{'AP50 here':>10}{'AP50 COCO':>10}"]
    for r in rows:
        head = f"{r['model']:<22}{r['size']:>5}{r['weights']:>9}"
        if "error" in r:
            out.append(f"{head}  {r['error']}")
            continue
        out.append(f"{head}{r['backend']:>15}{r['fps']:>8.1f}{r['ms_p50']:>8.1f}{ap(r['coco66']):>10}"
                   f"{ap(r['published']):>10}")
    out += ["",
            "FPS: the detector alone at batch 1 on this machine, now (network only; the pipeline adds decoding, "
            "tracking, drawing).",
            "weights random: the official weights are not here, so the model ran with random values of the same "
            "shapes: its speed is real, its boxes are not (python -m trackpipe.models download NAME).",
            "AP50 here: COCO AP50 on the 66 COCO val2017 images of the test assets (fp32); AP50 COCO: the authors' "
            "published figure on full COCO.",
            "More accurate models find smaller and farther objects; choose the most accurate one whose FPS covers "
            "your cameras' frame rate (run_tracker.py --model NAME)."]
    return "\n".join(out)
