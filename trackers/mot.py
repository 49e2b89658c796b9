"""MOTChallenge files and evaluation with py-motmetrics.

Folder layout (MOTChallenge 2D): ``<root>/<seq>/det/det.txt``, ``<root>/<seq>/gt/gt.txt``,
``<root>/<seq>/seqinfo.ini``. Rows of det/gt/result files::

    frame, id, bb_left, bb_top, bb_width, bb_height, conf, x, y, z

Scoring follows py-motmetrics' ``apps/eval_motchallenge.py``: ground truth loaded as
``mot15-2D`` with ``min_confidence=1`` (rows whose conf column is 0 are dropped), hypotheses
matched to ground truth when IoU >= 0.5, ``MOTAccumulator`` per sequence, and
``compute_many(..., generate_overall=True)``. The per-frame IoU distance is computed here
with the exact formula of ``motmetrics.distances.iou_matrix`` because py-motmetrics 1.4.0's
own ``iou_matrix`` calls ``np.asfarray``, which NumPy 2 removed. (``mot15-2D`` loading also
subtracts 1 from x and y of both sides; IoU is translation invariant, so that is a no-op.)

Malformed input raises :class:`MotFormatError`, whose text is ``<file>:<line>: <what>``.
"""

from __future__ import annotations

import configparser
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from trackpipe.models.types import Detections

logger = logging.getLogger(__name__)

#: metrics reported per sequence and overall (py-motmetrics names)
METRICS = ("mota", "idf1", "num_switches", "num_false_positives", "num_misses",
           "num_frames", "mostly_tracked", "mostly_lost", "num_unique_objects")


class MotFormatError(ValueError):
    """A missing or malformed MOTChallenge file; ``str()`` is ``<file>:<line>: <what>``."""

    def __init__(self, path, line: Optional[int], message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


def read_mot_file(path, kind: str = "det") -> np.ndarray:
    """Parse a MOTChallenge text file, checking every line.

    kind: ``det`` (needs 7 columns: the 7th is the detection score), ``gt`` (7: the 7th is the
    evaluation flag/confidence) or ``res`` (6). Separators: comma or whitespace. Blank lines
    are skipped; missing trailing columns up to 10 are filled with -1.
    Returns (N,10) float64: frame, id, left, top, width, height, conf, x, y, z.
    Raises MotFormatError naming the file and 1-based line for: missing file, too few
    columns, non-numeric or non-finite values, frame < 1 or not an integer, id not an integer,
    width or height <= 0.
    """
    need = {"det": 7, "gt": 7, "res": 6}[kind]
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MotFormatError(path, None, f"{kind} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MotFormatError(path, None, f"cannot read {kind} file ({exc})") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        parts = [p for p in s.replace(",", " ").split()]
        if len(parts) < need:
            raise MotFormatError(path, lineno, f"expected at least {need} comma-separated "
                                 f"values (frame,id,left,top,width,height,conf,...), got {len(parts)}")
        try:
            vals = [float(p) for p in parts[:10]]
        except ValueError:
            bad = next(p for p in parts[:10] if not _is_float(p))
            raise MotFormatError(path, lineno, f"not a number: {bad!r}") from None
        if not all(np.isfinite(vals[:need])):
            raise MotFormatError(path, lineno, "non-finite value (nan/inf)")
        if vals[0] < 1 or vals[0] != int(vals[0]):
            raise MotFormatError(path, lineno, f"frame must be an integer >= 1, got {parts[0]}")
        if vals[1] != int(vals[1]):
            raise MotFormatError(path, lineno, f"id must be an integer, got {parts[1]}")
        if vals[4] <= 0 or vals[5] <= 0:
            raise MotFormatError(path, lineno, f"width and height must be > 0, got {parts[4]}, {parts[5]}")
        rows.append(vals + [-1.0] * (10 - len(vals)))
    return np.array(rows, dtype=np.float64).reshape(-1, 10)


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


@dataclass
class SeqInfo:
    """seqinfo.ini contents used here (length 0 / rate 0 when unknown)."""

    name: str
    seq_length: int = 0
    frame_rate: float = 0.0
    im_width: int = 0
    im_height: int = 0


def read_seqinfo(path, default_name: str) -> SeqInfo:
    """Read ``[Sequence]`` from seqinfo.ini; a missing file gives an 'unknown' SeqInfo."""
    path = Path(path)
    if not path.exists():
        return SeqInfo(default_name)
    cp = configparser.ConfigParser()
    try:
        cp.read_string(path.read_text(), source=str(path))
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None)
        raise MotFormatError(path, line, f"not a valid ini file ({exc.__class__.__name__})") from None
    if not cp.has_section("Sequence"):
        raise MotFormatError(path, None, "missing [Sequence] section")
    sec = cp["Sequence"]
    lines = path.read_text().splitlines()

    def num(key: str, typ):
        if key not in sec:
            return typ(0)
        try:
            return typ(sec[key])
        except ValueError:
            lineno = next((i for i, ln in enumerate(lines, 1)
                           if ln.split("=")[0].strip().lower() == key.lower()), None)
            raise MotFormatError(path, lineno, f"{key} must be a number, got {sec[key]!r}") from None

    return SeqInfo(sec.get("name", default_name), num("seqLength", int), num("frameRate", float),
                   num("imWidth", int), num("imHeight", int))


@dataclass
class MotSequence:
    """One MOT sequence in memory.

    dets: (N,10) rows of the detection file; gt: (G,10) ground-truth rows with conf >= 1
    (None when evaluating is not possible); n_frames: frames to run (seqinfo seqLength, or
    the last frame seen in det/gt).
    """

    name: str
    dets: np.ndarray
    gt: Optional[np.ndarray]
    n_frames: int
    info: SeqInfo = field(default_factory=lambda: SeqInfo(""))

    def detections_by_frame(self) -> list[Detections]:
        """List of n_frames Detections (index 0 = frame 1); class_id 0, score = conf column."""
        d = self.dets
        order = np.argsort(d[:, 0], kind="stable")
        d = d[order]
        frames = d[:, 0].astype(np.int64)
        bounds = np.searchsorted(frames, np.arange(1, self.n_frames + 2))
        xyxy = d[:, 2:6].copy()
        xyxy[:, 2:] += xyxy[:, :2]
        xyxy = xyxy.astype(np.float32)
        score = d[:, 6].astype(np.float32)
        cls = np.zeros(len(d), np.int32)
        out = []
        for i in range(self.n_frames):
            a, b = bounds[i], bounds[i + 1]
            out.append(Detections(xyxy[a:b], score[a:b], cls[a:b]))
        return out


def list_sequences(root, names: Optional[Sequence[str]] = None) -> list[str]:
    """Sequence folder names under ``root`` (sorted), or ``names`` after checking they exist."""
    root = Path(root)
    if not root.is_dir():
        raise MotFormatError(root, None, "MOT root folder not found")
    if names:
        for n in names:
            if not (root / n).is_dir():
                raise MotFormatError(root / n, None, "sequence folder not found")
        return list(names)
    seqs = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not seqs:
        raise MotFormatError(root, None, "no sequence folders")
    return seqs


def load_sequence(root, name: str, det_file: str = "det/det.txt", need_gt: bool = True) -> MotSequence:
    """Read det, gt (conf >= 1 rows) and seqinfo of ``root/name``."""
    folder = Path(root) / name
    dets = read_mot_file(folder / det_file, "det")
    gt = None
    gt_path = folder / "gt" / "gt.txt"
    if need_gt or gt_path.exists():
        gt = read_mot_file(gt_path, "gt")
        gt = gt[gt[:, 6] >= 1]
    info = read_seqinfo(folder / "seqinfo.ini", name)
    last = max([int(dets[:, 0].max()) if len(dets) else 0,
                int(gt[:, 0].max()) if gt is not None and len(gt) else 0])
    n_frames = info.seq_length or last
    if last > n_frames:
        logger.warning("%s: rows up to frame %d but seqLength is %d; running %d frames",
                       name, last, n_frames, last)
        n_frames = last
    return MotSequence(name, dets, gt, n_frames, info)


def track_sequence(tracker, frames: Sequence[Detections]) -> tuple[np.ndarray, np.ndarray, float]:
    """Run ``tracker.update`` on every frame (after ``reset()``).

    Returns results (K,10) in MOT result layout (frame, id, left, top, w, h, 1, -1, -1, -1),
    predicted (K,) bool (rows output at a predicted box: ``Tracks.predicted``) and the total
    seconds spent inside ``update`` (timed with perf_counter per call).
    """
    tracker.reset()
    out = []
    total = 0.0
    clock = time.perf_counter
    for i, dets in enumerate(frames):
        t0 = clock()
        tr = tracker.update(dets)
        total += clock() - t0
        if len(tr):
            out.append((i + 1, tr))
    rows, flags = [], []
    for fr, tr in out:
        n = len(tr)
        r = np.empty((n, 10))
        r[:, 0] = fr
        r[:, 1] = tr.track_id
        r[:, 2:4] = tr.xyxy[:, :2]
        r[:, 4:6] = tr.xyxy[:, 2:] - tr.xyxy[:, :2]
        r[:, 6] = 1
        r[:, 7:] = -1
        rows.append(r)
        pred = getattr(tr, "predicted", None)
        flags.append(np.zeros(n, bool) if pred is None else np.asarray(pred, bool))
    res = np.concatenate(rows) if rows else np.zeros((0, 10))
    predicted = np.concatenate(flags) if flags else np.zeros(0, bool)
    return res, predicted, total


def run_sequence(tracker, frames: Sequence[Detections]) -> tuple[np.ndarray, float]:
    """:func:`track_sequence` without the predicted flags -> (results (K,10), seconds)."""
    res, _, total = track_sequence(tracker, frames)
    return res, total


def score_floor(sequences: Sequence["MotSequence"], step: float = 0.05) -> float:
    """The detector's confidence threshold as seen in detection files: the lowest score,
    rounded down to ``step`` (MOT15's ``det.txt``: 0.500.. -> 0.5). 0 without detections."""
    lows = [float(s.dets[:, 6].min()) for s in sequences if len(s.dets)]
    if not lows:
        return 0.0
    return max(0.0, float(np.floor(min(lows) / step + 1e-9) * step))


def write_mot_results(path, results: np.ndarray) -> None:
    """Write (K,10) results as MOTChallenge text (frame,id,left,top,w,h,1,-1,-1,-1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in results:
            f.write(f"{int(r[0])},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},1,-1,-1,-1\n")


def iou_distance(gt_tlwh: np.ndarray, hyp_tlwh: np.ndarray, max_iou: float = 0.5) -> np.ndarray:
    """motmetrics' IoU distance: (G,4), (H,4) tlwh -> (G,H) 1 - IoU, NaN where > max_iou."""
    a = np.asarray(gt_tlwh, dtype=np.float64)[:, None, :]
    b = np.asarray(hyp_tlwh, dtype=np.float64)[None, :, :]
    a_min, a_max = a[..., :2], a[..., :2] + a[..., 2:]
    b_min, b_max = b[..., :2], b[..., :2] + b[..., 2:]
    i_vol = np.prod(np.maximum(np.minimum(a_max, b_max) - np.maximum(a_min, b_min), 0), axis=-1)
    a_vol = np.prod(np.maximum(a_max - a_min, 0), axis=-1)
    b_vol = np.prod(np.maximum(b_max - b_min, 0), axis=-1)
    u_vol = a_vol + b_vol - i_vol
    iou = np.zeros_like(i_vol)
    np.divide(i_vol, u_vol, out=iou, where=(i_vol != 0) & (u_vol != 0))
    dist = 1.0 - iou
    return np.where(dist > max_iou, np.nan, dist)


def _split_by_frame(rows: np.ndarray) -> dict[int, np.ndarray]:
    if len(rows) == 0:
        return {}
    order = np.argsort(rows[:, 0], kind="stable")
    rows = rows[order]
    frames, starts = np.unique(rows[:, 0].astype(np.int64), return_index=True)
    return dict(zip(frames.tolist(), np.split(rows, starts[1:])))


def accumulate(gt: np.ndarray, results: np.ndarray, iou_threshold: float = 0.5):
    """Fill a ``motmetrics.MOTAccumulator`` frame by frame (all frames in gt or results).

    gt: (G,>=6) rows, results: (K,>=6) rows (frame, id, left, top, w, h, ...).
    """
    import motmetrics as mm

    acc = mm.MOTAccumulator()
    g = _split_by_frame(gt)
    h = _split_by_frame(results)
    empty = np.empty(0)
    for fid in sorted(set(g) | set(h)):
        fg, fh = g.get(fid), h.get(fid)
        oids = fg[:, 1].astype(np.int64) if fg is not None else empty
        hids = fh[:, 1].astype(np.int64) if fh is not None else empty
        if len(oids) and len(hids):
            dists = iou_distance(fg[:, 2:6], fh[:, 2:6], 1.0 - iou_threshold)
        else:
            dists = np.empty((0, 0))
        acc.update(oids, hids, dists, frameid=fid)
    return acc


def summarize(accs: Sequence, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """py-motmetrics summary -> {name or 'OVERALL': {metric: value}} (METRICS)."""
    import motmetrics as mm

    mh = mm.metrics.create()
    df = mh.compute_many(list(accs), metrics=list(METRICS), names=list(names),
                         generate_overall=len(accs) > 0)
    return {str(idx): {k: float(df.loc[idx, k]) for k in METRICS} for idx in df.index}


def hota_sequence(gt: np.ndarray, results: np.ndarray) -> dict:
    """TrackEval's HOTA of one sequence (its ``HOTA.eval_sequence`` result dict).

    gt: (G,>=6) rows already filtered (conf >= 1: what TrackEval keeps for MOT15, where it
    does no other preprocessing); results: (K,>=6). Similarities are TrackEval's own box IoU
    (``_calculate_box_ious``, xywh), ids are relabelled to 0..n-1 per side as TrackEval does.
    """
    from trackeval.datasets._base_dataset import _BaseDataset
    from trackeval.metrics import HOTA

    g = _split_by_frame(gt)
    h = _split_by_frame(results)
    frames = sorted(set(g) | set(h))
    gt_u = np.unique(gt[:, 1]).astype(np.int64) if len(gt) else np.zeros(0, np.int64)
    tr_u = np.unique(results[:, 1]).astype(np.int64) if len(results) else np.zeros(0, np.int64)
    data = {"num_timesteps": len(frames), "num_gt_ids": len(gt_u), "num_tracker_ids": len(tr_u),
            "num_gt_dets": len(gt), "num_tracker_dets": len(results),
            "gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    empty4 = np.zeros((0, 10))
    for fid in frames:
        fg, fh = g.get(fid, empty4), h.get(fid, empty4)
        data["gt_ids"].append(np.searchsorted(gt_u, fg[:, 1].astype(np.int64)))
        data["tracker_ids"].append(np.searchsorted(tr_u, fh[:, 1].astype(np.int64)))
        data["similarity_scores"].append(_BaseDataset._calculate_box_ious(fg[:, 2:6], fh[:, 2:6],
                                                                          box_format="xywh"))
    return HOTA().eval_sequence(data)


def hota_summary(per_seq: dict) -> dict[str, dict[str, float]]:
    """{seq: HOTA result} -> {seq/OVERALL: {hota, deta, assa}} in [0,1] (means over alpha);
    OVERALL is TrackEval's ``combine_sequences``."""
    from trackeval.metrics import HOTA

    out = {}
    items = dict(per_seq)
    if items:
        items["OVERALL"] = HOTA().combine_sequences(dict(per_seq))
    for name, r in items.items():
        out[name] = {"hota": float(np.mean(r["HOTA"])), "deta": float(np.mean(r["DetA"])),
                     "assa": float(np.mean(r["AssA"]))}
    return out


@dataclass
class SequenceResult:
    name: str
    results: np.ndarray
    seconds: float
    n_frames: int
    #: (K,) int8 per result row: 0 observed, 1 predicted, 2 interpolated (trackers.interpolate)
    source: Optional[np.ndarray] = None


def evaluate(tracker_factory: Callable[[], object], sequences: Iterable[MotSequence],
             repeats: int = 1, interpolate: int = 0, hota: bool = False,
             keep_predicted: bool = False
             ) -> tuple[dict[str, dict[str, float]], list[SequenceResult]]:
    """Track and score sequences.

    tracker_factory() -> a Tracker (one instance per sequence). With ``repeats`` > 1 the
    tracking is repeated and the median time kept (the results of every run are identical).
    interpolate: fill gaps of up to this many frames per ID (:func:`trackers.interpolate.
    interpolate_gaps`, rows at predicted boxes inside a gap are replaced) before scoring, as
    a file run writes its MOT file. keep_predicted: also score the rows a tracker output at a
    predicted box (``Tracks.predicted``: display aids against flicker, flagged in the MOT
    output); by default they are left out, so a tracker is scored on the positions it
    observed (and interpolated). hota: add TrackEval's HOTA, DetA, AssA (``hota``, ``deta``,
    ``assa`` in [0,1]).
    Returns ({seq/OVERALL: metrics + ms_per_frame + frames}, per-sequence results).
    """
    from .interpolate import PREDICTED, interpolate_gaps

    runs = []
    accs, names, hotas = [], [], {}
    for seq in sequences:
        frames = seq.detections_by_frame()
        tracker = tracker_factory()
        times = []
        for _ in range(max(1, repeats)):
            res, predicted, secs = track_sequence(tracker, frames)
            times.append(secs)
        res, source = interpolate_gaps(res, interpolate, predicted)
        if not keep_predicted:
            res, source = res[source != PREDICTED], source[source != PREDICTED]
        runs.append(SequenceResult(seq.name, res, float(np.median(times)), len(frames), source))
        if seq.gt is not None:
            accs.append(accumulate(seq.gt, res))
            names.append(seq.name)
            if hota:
                hotas[seq.name] = hota_sequence(seq.gt, res)
    summary = summarize(accs, names) if accs else {}
    for name, v in hota_summary(hotas).items():
        summary.setdefault(name, {}).update(v)
    total_s = sum(r.seconds for r in runs)
    total_f = sum(r.n_frames for r in runs)
    for r in runs:
        summary.setdefault(r.name, {})
        summary[r.name]["ms_per_frame"] = 1000.0 * r.seconds / max(r.n_frames, 1)
        summary[r.name]["frames"] = r.n_frames
    summary.setdefault("OVERALL", {})
    summary["OVERALL"]["ms_per_frame"] = 1000.0 * total_s / max(total_f, 1)
    summary["OVERALL"]["frames"] = total_f
    return summary, runs
