"""`--backend auto` / `--precision auto`: the fastest backend/precision pair whose accuracy holds.

On first use of a (model files, input size, CPU, library versions, request, thresholds):

1. candidates: the CPU pairs the request allows, those that build here:
   onnx-fp32 (always, as the baseline when the backend is auto), openvino-fp32,
   openvino-bf16 (CPU with AVX512-BF16 or AMX), onnx-int8 and openvino-int8 (with a
   calibration directory, spec.calib; or, for precision auto with a real source to read,
   calibrated once on that source's frames by `autocalib`, the probe's frames held out);
2. accuracy, without labels: a reduced-precision pair (bf16, int8) runs on real frames
   (the probe: frames given by the caller, or read by its ``read_probe`` only when nothing
   is cached (a live source), spec.extra["auto_probe"], or the calibration's own frames)
   beside fp32, and fp32's detections are its ground truth: F1 of the boxes matched
   one-to-one (same class, IoU >= 0.5) must reach `MIN_AGREEMENT`. Without real
   frames no reduced precision is a candidate. fp32 pairs need no check (the parity
   tests hold every fp32 backend within 1e-4 of OpenCV);
3. speed: every remaining pair runs `infer` on a real frame (batch 1) in interleaved
   slices for about `seconds`; the medians decide. A pair must beat the baseline
   (onnx-fp32) by `MIN_GAIN` to replace it, so noise never picks something slower;
4. the choice, with every measured figure, is cached as JSON under <cache>/auto/. An
   entry that cannot be read, or was measured for other files, CPU, library versions
   or settings, is re-measured after one warning line; it is never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cpu import cpu_info
from .identity import Model, model_id, model_name
from .errors import BackendUnavailable, ModelError, error_line
from .onnx_export import default_cache_dir, file_sha256
from .types import Detections

log = logging.getLogger(__name__)

CACHE_VERSION = 1
MIN_AGREEMENT = 0.88  # tolerant F1 vs fp32 on real frames (docs/models.md): precisions that keep COCO AP50 score
#                       0.905-1.0 on Yolo-Fastest, int8 that loses 0.05-0.07 AP50 scores 0.766-0.857
MIN_REF_BOXES = 10     # fewer fp32 boxes on the probe frames: too little evidence, not chosen
JUDGE_CONF = 0.25      # judge at the spec's threshold, or at this one when it is lower
JUDGE_SLACK = 0.05     # the tolerant sets: this much below the judging threshold,
JUDGE_DEPTH = 3        # and this many times max_det boxes
MIN_GAIN = 1.05       # a pair replaces the baseline only when this much faster
IOU_MATCH = 0.5
PROBE_FRAMES = 12
DEFAULT_SECONDS = 6.0
CPU_PAIRS = (("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("onnx", "int8"), ("openvino", "int8"))
BASELINE = ("onnx", "fp32")
CALIB_SECONDS = 15.0   # about what auto's own int8 calibration adds on first use (2 cores: 6 s + NNCF 10 s)
# first-use work whose own lines are details (DEBUG): the caller shows one progress line for all of it
DETAIL_LOGGERS = (__name__, f"{__package__}.quantize", f"{__package__}.onnx_export",
                  f"{__package__}.backends.openvino_backend")


@dataclass
class Choice:
    """What auto chose and why. measured: '<backend>-<precision>' -> {"fps", "agreement", "error"}."""

    backend: str
    precision: str
    fps: float = 0.0
    baseline_fps: float = 0.0
    measured: Dict[str, Dict] = field(default_factory=dict)
    probe: str = ""
    cached: bool = False
    calib: str = ""       # the calibration directory an int8 choice runs with ('' otherwise)

    @property
    def label(self) -> str:
        return f"{self.backend}-{self.precision}"

    def speedup(self) -> float:
        return round(self.fps / self.baseline_fps, 2) if self.baseline_fps else 1.0

    def summary(self) -> str:
        if not self.measured:
            return f"{self.label} (the only pair the request allows)"
        how = "cached choice" if self.cached else "measured"
        base = f", {self.speedup():.2f}x {'-'.join(BASELINE)}" if self.baseline_fps else ""
        return f"{self.label} ({how}: {self.fps:.1f} FPS{base})"


# --- accuracy without labels --------------------------------------------------------------

def agreement(ref: Sequence[Detections], cand: Sequence[Detections], iou: float = IOU_MATCH,
              ref_all: Optional[Sequence[Detections]] = None,
              cand_all: Optional[Sequence[Detections]] = None) -> Dict[str, float]:
    """Box-level agreement of `cand` with `ref` (fp32, taken as ground truth), over frames.

    recall: the share of `ref`'s boxes that `cand_all` has (same class, IoU >= iou, one-to-one,
    greedy by score); precision: the share of `cand`'s boxes that `ref_all` has. `*_all` are
    the same detector's boxes at a slightly lower threshold and a deeper max_det cap (by
    default `ref`/`cand` themselves), so a score that moves across the threshold or the cap
    by a rounding is not a disagreement. Returns precision, recall, F1, ref_boxes.
    """
    ref_all = ref if ref_all is None else ref_all
    cand_all = cand if cand_all is None else cand_all
    hit_r = sum(_matched(r, c, iou) for r, c in zip(ref, cand_all))
    hit_c = sum(_matched(c, r, iou) for c, r in zip(cand, ref_all))
    n_ref, n_cand = sum(len(r) for r in ref), sum(len(c) for c in cand)
    if n_ref == 0 and n_cand == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0, "ref_boxes": 0}
    p = hit_c / n_cand if n_cand else 0.0
    r = hit_r / n_ref if n_ref else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4), "ref_boxes": n_ref}


def _matched(a: Detections, b: Detections, iou: float) -> int:
    """How many boxes of `a` have a partner in `b`: same class, IoU >= iou, one-to-one,
    greedy in `a`'s score order."""
    from .postprocess import box_iou  # noqa: PLC0415

    if not len(a) or not len(b):
        return 0
    hits = 0
    for c in np.intersect1d(a.class_id, b.class_id):
        ia, ib = np.flatnonzero(a.class_id == c), np.flatnonzero(b.class_id == c)
        m = box_iou(a.xyxy[ia].astype(np.float64), b.xyxy[ib].astype(np.float64))
        used = np.zeros(len(ib), bool)
        for i in np.argsort(-a.score[ia], kind="stable"):
            row = np.where(used, -1.0, m[i])
            j = int(np.argmax(row))
            if row[j] >= iou:
                used[j] = True
                hits += 1
    return hits


def judge(ref_det, cand_det, frames: Sequence[np.ndarray]) -> Dict[str, float]:
    """`agreement` of two detectors of one model on real frames, from one inference each per
    frame: judged at the spec's threshold, or at JUDGE_CONF when that is lower (more boxes,
    more evidence), with the max_det cap; the tolerant sets at JUDGE_SLACK lower, with
    JUDGE_DEPTH x max_det boxes. Each detector decodes its own output (`Detector.postprocess`:
    darknet heads, or an ONNX file's layout)."""
    spec = ref_det.spec
    conf = min(spec.conf_threshold, JUDGE_CONF)
    lo = max(conf - JUDGE_SLACK, 1e-4)
    sets = {k: [] for k in ("ref", "cand", "ref_all", "cand_all")}
    for f in frames:
        blob, boxes = ref_det.preprocess([f])
        for name, det in (("ref", ref_det), ("cand", cand_det)):
            out = det.infer(blob)
            sets[name] += det.postprocess(out, boxes, conf, det.max_det)
            sets[f"{name}_all"] += det.postprocess(out, boxes, lo, JUDGE_DEPTH * det.max_det)
    return agreement(sets["ref"], sets["cand"], ref_all=sets["ref_all"], cand_all=sets["cand_all"])


def probe_frames_for(spec, model: Model, given: Optional[Sequence[np.ndarray]]) -> Tuple[List[np.ndarray], str]:
    """Real frames to judge reduced precision on, and where they came from ('' if none)."""
    from .quantize import read_calibration_frames  # noqa: PLC0415

    if given is not None and len(given):
        return list(given)[:PROBE_FRAMES], f"{len(given)} given frames"
    source = (spec.extra or {}).get("auto_probe")
    if not source and spec.calib is not None:
        from .quantize import checked_meta  # noqa: PLC0415

        source = checked_meta(spec, model).source
    if not source:
        return [], ""
    path = Path(str(source))
    if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
        import cv2  # noqa: PLC0415

        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return ([img], str(path)) if img is not None else ([], "")
    try:
        frames = read_calibration_frames(str(source), PROBE_FRAMES)
    except ModelError as e:
        log.warning("auto: cannot read probe frames from %s (%s)", source, e)
        return [], ""
    return frames, f"{source} ({len(frames)} frames)"


# --- the cache ------------------------------------------------------------------------------

def _versions() -> Dict[str, str]:
    import importlib.metadata as md  # noqa: PLC0415

    out = {}
    for dist in ("onnxruntime", "openvino", "nncf", "numpy", "opencv-python"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = ""
    return out


def self_calibrates(spec, probe: bool, calib_source: Optional[str]) -> bool:
    """Whether int8 is offered from a calibration on the source's own frames (`autocalib`)."""
    return (spec.precision == "auto" and spec.calib is None and probe and bool(calib_source)
            and bool((spec.extra or {}).get("auto_calibrate", True)))


def cache_fields(spec, model: Model, probe: bool, self_calib: bool = False) -> Dict:
    """Everything the measurement depends on; a cached entry is used only when all are equal."""
    from .backends.openvino_backend import cpu_threads  # noqa: PLC0415  (no openvino import)

    calib = ""
    if spec.calib is not None and (Path(spec.calib) / "meta.json").is_file():
        calib = file_sha256(Path(spec.calib) / "meta.json")[:16]
    return {"version": CACHE_VERSION, "model": model_id(model), "size": list(model.input_size),
            "cpu": cpu_info().key(), "threads": cpu_threads(spec.threads), "libraries": _versions(),
            "request": [spec.backend, spec.precision], "calib": calib, "probe": probe,
            "conf": spec.conf_threshold, "nms": spec.nms_threshold, "letterbox": spec.letterbox,
            "int8_method": (spec.extra or {}).get("int8_method", ""), "self_calib": self_calib,
            "int8_weight_bits": (spec.extra or {}).get("int8_weight_bits", ""),
            "env": os.environ.get("ONEDNN_MAX_CPU_ISA", "")}


# What a request is (one cache file each); the other fields are the environment it was measured
# in: a change there makes the entry stale (one warning line, measured again).
REQUEST_FIELDS = ("model", "size", "request", "threads", "calib", "probe", "conf", "nms", "letterbox",
                  "int8_method", "self_calib")


def cache_path(spec, model: Model, fields: Optional[Dict] = None) -> Path:
    """One file per request: runs with another thread count or threshold keep their own entry
    instead of marking each other's stale."""
    w, h = model.input_size
    stem = model_name(model)
    fields = fields if fields is not None else cache_fields(spec, model, True)
    req = hashlib.sha256(json.dumps([fields.get(k) for k in REQUEST_FIELDS], sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    return Path(spec.cache_dir or default_cache_dir()) / "auto" / f"{stem}-{w}x{h}-{req}.json"


def read_cached(path: Path, fields: Dict) -> Optional[Choice]:
    """The cached choice when the entry is readable and was made under `fields`; else None
    after one warning line (a missing entry is silent)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data["fields"] != fields:
            changed = sorted(k for k in set(fields) | set(data["fields"]) if data["fields"].get(k) != fields.get(k))
            log.warning("auto: cached choice %s is stale (%s changed); measuring again", path, ", ".join(changed))
            return None
        choice = Choice(**data["choice"])
        if (choice.backend, choice.precision) not in CPU_PAIRS:
            raise ValueError(f"unknown pair {choice.label}")
        if choice.calib and not (Path(choice.calib) / "meta.json").is_file():
            raise ValueError(f"its calibration {choice.calib} is gone")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("auto: cached choice %s is unreadable (%s: %s); measuring again", path, type(e).__name__, e)
        return None
    choice.cached = True
    return choice


def write_cached(path: Path, fields: Dict, choice: Choice) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    data = asdict(choice)
    data.pop("cached")
    tmp.write_text(json.dumps({"fields": fields, "choice": data}, indent=1))
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file


# --- measuring ------------------------------------------------------------------------------

def candidate_pairs(spec, self_calib: bool = False) -> List[Tuple[str, str]]:
    """The CPU (backend, precision) pairs a request allows, baseline first."""
    pairs = []
    for b, p in CPU_PAIRS:
        if spec.backend not in ("auto", b) or spec.precision not in ("auto", p):
            continue
        if p == "int8" and spec.calib is None and not self_calib:
            continue
        pairs.append((b, p))
    return pairs


def _time_slices(detectors: Dict[str, object], blob: np.ndarray, seconds: float) -> Dict[str, float]:
    """Median ms of `infer(blob)` per detector, measured round-robin in slices."""
    for d in detectors.values():
        d.infer(blob)  # warm-up
    times: Dict[str, List[float]] = {k: [] for k in detectors}
    slices = 3
    per = seconds / slices / max(1, len(detectors))
    for _ in range(slices):
        for k, d in detectors.items():
            t_end = time.perf_counter() + per
            n = 0
            while n < 2 or time.perf_counter() < t_end:
                t0 = time.perf_counter()
                d.infer(blob)
                times[k].append(time.perf_counter() - t0)
                n += 1
    return {k: float(np.median(v)) * 1000.0 for k, v in times.items()}


def measure(spec, model: Model, probe: List[np.ndarray], seconds: float,
            calib_source: Optional[str] = None) -> Choice:
    """Build every candidate pair, judge reduced precision against fp32 on `probe`, time them.
    calib_source: a video/folder/glob to calibrate int8 on when the spec has no calibration
    (precision auto; `autocalib`)."""
    from .backends import build_one  # noqa: PLC0415
    from .classes import read_names  # noqa: PLC0415
    from .frames import synthetic_frame  # noqa: PLC0415

    names = read_names(spec.names, model.num_classes)
    measured: Dict[str, Dict] = {}
    live = {}
    self_calib = self_calibrates(spec, bool(probe), calib_source)
    int8_spec, calib_error = spec, ""
    for b, p in candidate_pairs(spec, self_calib):
        key = f"{b}-{p}"
        if p != "fp32" and spec.precision == "auto" and not probe:
            measured[key] = {"error": "no real frames to check its accuracy against fp32"}
            continue
        if p == "int8" and int8_spec.calib is None and not calib_error:
            from .autocalib import source_calibration  # noqa: PLC0415

            try:
                int8_spec = spec.with_(calib=source_calibration(model, calib_source, probe, spec.cache_dir,
                                                                spec.letterbox))
            except Exception as e:  # noqa: BLE001  (an optional speed-up: fp32/bf16 still run)
                calib_error = f"no calibration: {error_line(e, typed=not isinstance(e, (ModelError, OSError)))}"
                if not isinstance(e, (ModelError, OSError)):
                    log.warning("auto: int8 left out: %s", calib_error)
        if p == "int8" and calib_error:
            measured[key] = {"error": calib_error}
            continue
        try:
            live[key] = build_one((int8_spec if p == "int8" else spec).with_(backend=b, precision=p), model, names)
        except BackendUnavailable as e:
            measured[key] = {"error": str(e)}
        except Exception as e:  # noqa: BLE001  (int8 from a calibration auto made itself: never fatal;
            if p != "int8" or spec.calib is not None:  # a calibration the user gave: their error, one line)
                raise
            measured[key] = {"error": error_line(e, typed=not isinstance(e, (ModelError, OSError)))}
            log.warning("auto: %s left out: %s", key, measured[key]["error"])
    if not live:
        raise BackendUnavailable("auto: no backend runs here: " + "; ".join(f"{k}: {v['error']}"
                                                                             for k, v in measured.items()))
    log.debug("auto: measuring %s for %s at %dx%d on %s (first use; about %.0f s)", ", ".join(live),
                model_name(model), *model.input_size,
                cpu_info().describe(), seconds + 2)
    # accuracy (precision auto only: an explicit precision is the user's call): reduced precision
    # vs one fp32 reference, openvino's when it runs (faster), else onnx's
    judged = [k for k in live if not k.endswith("-fp32")] if spec.precision == "auto" else []
    if judged:
        ref_key = next((k for k in ("openvino-fp32", "onnx-fp32") if k in live), None)
        ref_det = live[ref_key] if ref_key else None
        if ref_det is None:
            try:
                ref_det = build_one(spec.with_(backend="onnx", precision="fp32"), model, names)
            except BackendUnavailable as e:
                ref_det = None
                for key in judged:
                    measured[key] = {"error": f"no fp32 reference to check it against ({e})"}
                    live.pop(key).close()
                judged = []
        for key in judged:
            agree = judge(ref_det, live[key], probe)
            measured[key] = {"agreement": agree}
            if agree["ref_boxes"] < MIN_REF_BOXES:
                measured[key]["error"] = (f"fp32 finds {agree['ref_boxes']} boxes on the probe frames: too few "
                                          f"(< {MIN_REF_BOXES}) to judge its accuracy")
            elif agree["f1"] < MIN_AGREEMENT:
                measured[key]["error"] = f"detections agree with fp32 at F1 {agree['f1']:.3f} < {MIN_AGREEMENT}"
            if "error" in measured[key]:
                live.pop(key).close()
        if judged and ref_key is None:
            ref_det.close()
    if not live:
        raise BackendUnavailable("auto: nothing passed: "
                                 + "; ".join(f"{k}: {v['error']}" for k, v in measured.items()))
    if len(live) > 1:
        frame = probe[0] if probe else synthetic_frame()
        blob, _ = next(iter(live.values())).preprocess([frame])
        for key, v in _time_slices(live, blob, seconds).items():
            measured.setdefault(key, {})["fps"] = round(1000.0 / v, 2)
    for d in live.values():
        d.close()
    ok = {k: measured.get(k, {}).get("fps", 0.0) for k in live}
    base_key = "-".join(BASELINE)
    best = max(ok, key=ok.get)
    if base_key in ok and best != base_key and ok[best] < MIN_GAIN * ok[base_key]:
        best = base_key
    b, p = best.rsplit("-", 1)
    calib = str(int8_spec.calib) if p == "int8" and spec.calib is None else ""
    return Choice(b, p, ok[best], ok.get(base_key, 0.0), measured, calib=calib)


def _lookup(spec, model: Model, probe: bool, self_calib: bool, use_cache: bool
            ) -> Tuple[Dict, Path, Optional[Choice]]:
    """The request's cache fields, its cache file, and the choice cached there (None when
    there is none, it is stale, or use_cache is off)."""
    fields = cache_fields(spec, model, probe, self_calib)
    path = cache_path(spec, model, fields)
    return fields, path, read_cached(path, fields) if use_cache else None


def chosen_spec(spec, choice: Choice):
    """`spec` set to run what auto chose (with the calibration it chose int8 with)."""
    spec = spec.with_(backend=choice.backend, precision=choice.precision)
    return spec.with_(calib=Path(choice.calib)) if choice.calib else spec


def choose(spec, model: Model, probe_frames: Optional[Sequence[np.ndarray]] = None,
           seconds: Optional[float] = None, use_cache: bool = True, calib_source: Optional[str] = None,
           read_probe: Optional[Callable[[], List[np.ndarray]]] = None) -> Choice:
    """The cached or freshly measured choice for this spec (backend and/or precision auto).

    calib_source: the source the probe frames came from (a video file, an image folder or
    glob): int8 joins the candidates, calibrated on it once (`autocalib`), when the spec has no
    calibration of its own. A chosen int8 pair runs with ``choice.calib``.
    read_probe: instead of probe_frames, a function that reads them (a live source: seconds
    of frames), called only when no choice made with probe frames is cached."""
    if spec.precision == "int8":
        from .quantize import checked_meta  # noqa: PLC0415

        checked_meta(spec, model)  # 'int8 needs --calib DIR', or a calibration of another model
    if read_probe is not None and probe_frames is None:
        if spec.precision == "auto" and len(candidate_pairs(spec)) > 1:
            cached = _lookup(spec, model, True, False, use_cache)[2]
            if cached is not None:
                return cached
        probe_frames = read_probe() or None
    probe, probe_id = probe_frames_for(spec, model, probe_frames)
    calib_source = calib_source or (spec.extra or {}).get("auto_probe")
    self_calib = self_calibrates(spec, bool(probe), calib_source)
    pairs = candidate_pairs(spec, self_calib)
    if len(pairs) == 1:  # e.g. backend auto with precision bf16: nothing to choose or measure
        return Choice(*pairs[0])
    fields, path, cached = _lookup(spec, model, bool(probe), self_calib, use_cache)
    if cached is not None:
        return cached
    seconds = float((spec.extra or {}).get("auto_seconds", DEFAULT_SECONDS) if seconds is None else seconds)
    choice = measure(spec, model, probe, seconds, calib_source if self_calib else None)
    choice.probe = probe_id
    if use_cache:
        try:
            write_cached(path, fields, choice)
        except OSError as e:
            log.warning("auto: cannot cache the choice at %s (%s)", path, e)
    return choice


# --- first use: one line, or deferred -------------------------------------------------------

def cached_choice(spec, model: Model, probe: bool, calib_source: Optional[str] = None) -> Optional[Choice]:
    """What `choose` would return without measuring anything: the only pair a request allows,
    or the cached choice (``probe``: real frames will be given, as `choose` would get them);
    None when choosing means measuring (first use). A request that cannot run raises as `choose` does."""
    if spec.precision == "int8":
        from .quantize import checked_meta  # noqa: PLC0415

        checked_meta(spec, model)  # 'int8 needs --calib DIR', or a calibration of another model
    self_calib = self_calibrates(spec, probe, calib_source)
    pairs = candidate_pairs(spec, self_calib)
    if len(pairs) == 1:
        return Choice(*pairs[0])
    return _lookup(spec, model, probe, self_calib, True)[2]


def first_use_seconds(spec, probe: bool, calib_source: Optional[str] = None) -> float:
    """About how long `choose` takes on first use (measuring, and calibrating int8 when it will)."""
    seconds = float((spec.extra or {}).get("auto_seconds", DEFAULT_SECONDS))
    return seconds + 2.0 + (CALIB_SECONDS if self_calibrates(spec, probe, calib_source) else 0.0)


def interim(spec) -> Choice:
    """The pair to run while no choice is made (a run that measures afterwards): fp32, whose
    accuracy needs no check; OpenVINO's when the request allows it and it is installed (faster
    on CPUs), else the baseline."""
    backend = spec.backend if spec.backend != "auto" else (
        "openvino" if importlib.util.find_spec("openvino") is not None else BASELINE[0])
    return Choice(backend, "fp32")


class _AsDebug(logging.Filter):
    """Records below ERROR become DEBUG records (dropped unless DEBUG is enabled)."""

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.logger.isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def details_at_debug():
    """Meanwhile, the first-use steps' own lines (exporting, calibrating, quantizing, measuring)
    are DEBUG: the caller's one progress line says what happens and why."""
    loggers = [logging.getLogger(n) for n in DETAIL_LOGGERS]
    filters = [_AsDebug(lg) for lg in loggers]
    for lg, f in zip(loggers, filters):
        lg.addFilter(f)
    try:
        yield
    finally:
        for lg, f in zip(loggers, filters):
            lg.removeFilter(f)
