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
    from .factory import build_detector  # noqa: PLC0415

    network = load_network(spec.cfg, spec.weights, spec.size)
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
