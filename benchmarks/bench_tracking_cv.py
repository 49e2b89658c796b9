"""Nested cross-validation of the ``hybrid`` tracker on the seven MOT15 sequences, a stability
check, the worst fold, and a robustness table under perturbed detections.

    python benchmarks/bench_tracking_cv.py --workers 2 [--no-cache] [--no-perturb]

The grid, fixed before any result was looked at (24 tracker configurations x 3 output
variants = 72 candidates)::

    new_rel        0.7, None       births: from detections in the top 30 % of the run's
                                   scores (the shipped rule), or from every first-pass
                                   detection (None: evidence over time decides)
    min_hits       1, 2, 3         consecutive matches after a track's first detection
    confirm_score  0, 1, 2, 4      evidence: sum of ``rel`` over the track's detections
    interpolate    0, 5, 20        gaps filled in the MOT file (output variant, one run)

and, the same for every candidate: first pass ``rel >= 0.1`` (quantile scale), ByteTrack's
second pass ``low_rel`` 0, ``xywh`` state, OC-SORT steps off, ``max_age`` 30.

Every candidate tracks every sequence once (``det/det.txt``, ``score_floor`` from the files)
and is scored per sequence: HOTA / DetA / AssA by TrackEval, MOTA / IDF1 / IDSW / FP / FN by
py-motmetrics 1.4.0 (IoU 0.5). Rows output at a predicted box are not scored (as
``python -m trackers evaluate``).

Nested cross-validation: for each outer fold (one sequence held out), the six others choose
with the selection rule below, and the held-out sequence is scored with the chosen candidate.
Inside, the same rule is cross-validated on the six (inner leave-one-out folds: choose on
five, score the sixth), which gives the inner estimate printed beside each outer score: the
gap between the two is what choosing costs.

Selection rule (HOTA pooled with TrackEval's ``combine_sequences`` over the choosing
sequences): a candidate is *stable* when every grid neighbour (one step along one axis above)
scores within 0.5 HOTA of it; the stable candidate with the highest HOTA is chosen (the best
overall if none is stable). The rule applied to all seven is printed (in-sample: that row is
not a result; only outer-fold figures are). The outer folds say what choosing these knobs on
MOT15 would give on unseen data; the shipped hybrid keeps its own defaults (the grid's
``births top 30 %, hits 1, evidence 0, interp 20``) and is ranked among the peers below.

Perturbations (seeded, deterministic; ``score_floor`` re-read from the perturbed files, as
``evaluate`` does): ``shift`` every score -0.2; ``squash`` every score s -> 1 - (1 - s) / 10
(a detector whose scores are all near 1); ``drop20`` 20 % of the detections removed;
``jitter`` every box edge moved by N(0, 5 % of the box's width or height). Each tracker is
scored pooled over the seven sequences and ranked per metric; the shipped default must never
rank lower than it does on the unperturbed detections.

Per-candidate results are cached in ``.cache/tracking_cv/`` (keyed by the candidate, the
perturbation and the tracker's source hash). Prints tables, then one JSON line last.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trackpipe.trackers import mot  # noqa: E402  (after the repository joins sys.path)

ASSETS = REPO / ".." / "shared" / "assets"
CACHE = REPO / ".cache" / "tracking_cv"
COUNTS = ("fp", "fn", "idsw", "objects", "idtp", "idfp", "idfn")
AXES = {"new_rel": (0.7, None), "min_hits": (1, 2, 3), "confirm_score": (0.0, 1.0, 2.0, 4.0),
        "interpolate": (0, 5, 20)}
CONFIG_AXES = ("new_rel", "min_hits", "confirm_score")  # tracker configurations; interpolate is an output variant
STABLE_HOTA = 0.5
PERTURBATIONS = ("none", "shift", "squash", "drop20", "jitter")
SEED = 2024
#: trackers ranked under perturbation: name -> (preset, overrides, interpolate), beside the rule's
#: choice on all seven.
PEERS = {
    "sort-ref": ("sort-ref", {}, 0),
    "sort": ("sort", {}, 0),
    "bytetrack": ("bytetrack", {}, 0),
    "deepsort (motion only)": ("deepsort", {"encoder": "none"}, 0),
    "default (hybrid)": ("hybrid", {}, 20),   # the shipped hybrid: its own defaults, interpolate 20
}


def grid() -> list[dict]:
    """The 24 tracker configurations (the output variant ``interpolate`` is scored apart)."""
    return [dict(zip(CONFIG_AXES, v)) for v in itertools.product(*(AXES[a] for a in CONFIG_AXES))]


def candidates() -> list[tuple[int, int]]:
    """(config index, interpolate) for the 72 candidates."""
    return [(i, it) for i in range(len(grid())) for it in AXES["interpolate"]]


def neighbours(cand: tuple[int, int]) -> list[tuple[int, int]]:
    """Candidates one step away along one axis of the grid."""
    cfgs = grid()
    i, it = cand
    point = {**cfgs[i], "interpolate": it}
    out = []
    for axis, values in AXES.items():
        k = values.index(point[axis])
        for j in (k - 1, k + 1):
            if 0 <= j < len(values):
                q = dict(point, **{axis: values[j]})
                ci = next(n for n, c in enumerate(cfgs) if all(c[a] == q[a] for a in CONFIG_AXES))
                out.append((ci, q["interpolate"]))
    return out


def build_candidate(cfg: dict, score_floor: float):
    from trackpipe.trackers.factory import build_tracker

    return build_tracker("hybrid", score_floor=score_floor, new_rel=cfg["new_rel"], high_rel=0.1, low_rel=0.0,
                         min_hits=cfg["min_hits"], confirm_score=cfg["confirm_score"])


# -- perturbations --------------------------------------------------------------------------

def perturb(frames: list, kind: str, seed: int) -> list:
    """Detections per frame -> perturbed copies (deterministic for ``seed``)."""
    from trackpipe.models.types import Detections

    if kind == "none":
        return frames
    rng = np.random.default_rng(seed)
    out = []
    for d in frames:
        xyxy, score = d.xyxy.astype(np.float32).copy(), d.score.astype(np.float32).copy()
        keep = np.ones(len(score), bool)
        if kind == "shift":
            score = np.clip(score - 0.2, 0.0, 1.0)
        elif kind == "squash":
            score = 1.0 - (1.0 - score) / 10.0
        elif kind == "drop20":
            keep = rng.random(len(score)) >= 0.2
        elif kind == "jitter":
            wh = np.concatenate([xyxy[:, 2:] - xyxy[:, :2]] * 2, axis=1)
            xyxy = xyxy + rng.normal(0.0, 0.05, xyxy.shape).astype(np.float32) * wh
            x1 = np.minimum(xyxy[:, 0], xyxy[:, 2] - 1)
            y1 = np.minimum(xyxy[:, 1], xyxy[:, 3] - 1)
            xyxy[:, 0], xyxy[:, 1] = x1, y1
        else:
            raise ValueError(f"unknown perturbation {kind!r}")
        out.append(Detections(xyxy[keep], score[keep].astype(np.float32), d.class_id[keep]))
    return out


def floor_of(frames: list, step: float = 0.05) -> float:
    """The lowest score rounded down to ``step`` (what ``evaluate`` reads from the files)."""
    lo = min((float(d.score.min()) for d in frames if len(d)), default=0.0)
    return max(0.0, math.floor(lo / step + 1e-9) * step)


def load_frames(kind: str) -> dict:
    """{seq: (gt, perturbed frames)}; seeds differ per sequence, fixed per run."""
    root = ASSETS / "mot"
    out = {}
    for k, name in enumerate(mot.list_sequences(root)):
        seq = mot.load_sequence(root, name)
        out[name] = (seq.gt, perturb(seq.detections_by_frame(), kind, SEED + k))
    return out


# -- scoring --------------------------------------------------------------------------------

def counts(gt: np.ndarray, rows: np.ndarray) -> dict:
    import motmetrics as mm

    acc = mot.accumulate(gt, rows)
    m = mm.metrics.create().compute(
        acc, metrics=["num_false_positives", "num_misses", "num_switches", "num_objects",
                      "idtp", "idfp", "idfn"], return_dataframe=False)
    return dict(zip(COUNTS, (int(m["num_false_positives"]), int(m["num_misses"]),
                             int(m["num_switches"]), int(m["num_objects"]), int(m["idtp"]),
                             int(m["idfp"]), int(m["idfn"]))))


def score_rows(gt: np.ndarray, rows: np.ndarray) -> dict:
    """counts + TrackEval's per-sequence HOTA result (arrays as lists, for the cache)."""
    h = mot.hota_sequence(gt, rows)
    return {"counts": counts(gt, rows),
            "hota": {k: np.asarray(v).tolist() for k, v in h.items()}}


def _source_hash() -> str:
    h = hashlib.sha256()
    for f in ("hybrid.py", "kalman.py", "matching.py", "interpolate.py", "mot.py", "lifecycle.py",
              "scores.py", "sort.py", "deepsort.py", "factory.py"):
        h.update((REPO / "trackers" / f).read_bytes())
    return h.hexdigest()[:12]


def _cached(key_obj, fn):
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()[:16]
    path = CACHE / f"{key}.json"
    if key_obj[-1] and path.exists():
        return json.loads(path.read_text())
    out = fn()
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def run_grid_config(args) -> dict:
    """One grid configuration on all sequences -> {interpolate: {seq: score_rows}}."""
    cfg, src, use_cache = args

    def work():
        from trackpipe.trackers.interpolate import interpolate_gaps

        out: dict = {}
        for name, (gt, frames) in load_frames("none").items():
            res, pred, _ = mot.track_sequence(build_candidate(cfg, floor_of(frames)), frames)
            for it in AXES["interpolate"]:
                rows, _ = interpolate_gaps(res[~pred], it)
                out.setdefault(str(it), {})[name] = score_rows(gt, rows)
        return out

    return _cached(["grid", cfg, src, use_cache], work)


def run_tracker(args) -> dict:
    """One tracker under one perturbation -> {seq: score_rows}."""
    label, preset, overrides, interp, kind, src, use_cache = args

    def work():
        from trackpipe.trackers.factory import build_tracker
        from trackpipe.trackers.interpolate import interpolate_gaps

        out = {}
        for name, (gt, frames) in load_frames(kind).items():
            kw = dict(overrides)
            if preset == "hybrid":
                kw["score_floor"] = floor_of(frames)
            res, pred, _ = mot.track_sequence(build_tracker(preset, **kw), frames)
            rows, _ = interpolate_gaps(res[~pred], interp)
            out[name] = score_rows(gt, rows)
        return out

    return _cached(["tracker", preset, overrides, interp, kind, SEED, src, use_cache], work)


def pooled(results: list[dict]) -> dict:
    """Pooled MOTA / IDF1 (summed counts) and HOTA / DetA / AssA (combine_sequences)."""
    from trackeval.metrics import HOTA

    s = {k: sum(r["counts"][k] for r in results) for k in COUNTS}
    mota = 1.0 - (s["fp"] + s["fn"] + s["idsw"]) / max(s["objects"], 1)
    idf1 = 2 * s["idtp"] / max(2 * s["idtp"] + s["idfp"] + s["idfn"], 1)
    hs = {str(i): {k: np.asarray(v) for k, v in r["hota"].items()} for i, r in enumerate(results)}
    h = HOTA().combine_sequences(hs) if len(hs) > 1 else hs["0"]
    return {"hota": 100 * float(np.mean(h["HOTA"])), "deta": 100 * float(np.mean(h["DetA"])),
            "assa": 100 * float(np.mean(h["AssA"])), "mota": 100 * mota, "idf1": 100 * idf1, **s}


class Selector:
    """The selection rule over a table {(config, interpolate): {seq: score_rows}}."""

    def __init__(self, table: dict) -> None:
        self.table = table
        self._memo: dict = {}

    def hota(self, cand, seqs) -> float:
        key = (cand, tuple(seqs))
        if key not in self._memo:
            self._memo[key] = pooled([self.table[cand][s] for s in seqs])["hota"]
        return self._memo[key]

    def stable(self, cand, seqs) -> bool:
        h = self.hota(cand, seqs)
        return all(abs(self.hota(n, seqs) - h) <= STABLE_HOTA for n in neighbours(cand))

    def choose(self, seqs) -> tuple[tuple[int, int], bool]:
        """-> (candidate, whether it is stable); ties go to the earlier (simpler) candidate."""
        cands = candidates()
        stable = [c for c in cands if self.stable(c, seqs)]
        pool = stable or cands
        order = {c: k for k, c in enumerate(cands)}
        best = max(pool, key=lambda c: (round(self.hota(c, seqs), 6), -order[c]))
        return best, bool(stable)


def label(cand) -> str:
    c = grid()[cand[0]]
    births = "top 30 %" if c["new_rel"] == 0.7 else "all" if c["new_rel"] is None else f"rel {c['new_rel']}"
    return f"births {births}, hits {c['min_hits']}, evidence {c['confirm_score']:g}, interp {cand[1]}"


def shipped(cand) -> dict:
    c = grid()[cand[0]]
    return {"new_rel": c["new_rel"], "high_rel": 0.1, "low_rel": 0.0, "min_hits": c["min_hits"],
            "confirm_score": c["confirm_score"], "interpolate": cand[1]}


def fmt(p: dict) -> str:
    return (f"{p['hota']:6.2f} {p['deta']:6.2f} {p['assa']:6.2f} {p['mota']:6.2f} {p['idf1']:6.2f} "
            f"{p['idsw']:5d} {p['fp']:6d} {p['fn']:6d}")


def rnd(p: dict) -> dict:
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in p.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--no-perturb", action="store_true", help="skip the perturbation table")
    args = ap.parse_args()
    names = mot.list_sequences(ASSETS / "mot")
    src = _source_hash()
    use_cache = not args.no_cache
    cfgs = grid()

    def pmap(fn, jobs):
        if args.workers > 1:
            with ProcessPoolExecutor(args.workers) as ex:
                return list(ex.map(fn, jobs))
        return [fn(j) for j in jobs]

    results = pmap(run_grid_config, [(c, src, use_cache) for c in cfgs])
    table = {(i, it): results[i][str(it)] for i, it in candidates()}
    sel = Selector(table)

    print(f"MOT15 nested cross-validation: {len(cfgs)} configurations x {len(AXES['interpolate'])} "
          f"interpolation variants = {len(table)} candidates; rule: the best pooled HOTA among "
          f"candidates whose neighbours are within {STABLE_HOTA} HOTA")
    head = (f"{'outer fold':<14} {'HOTA':>6} {'DetA':>6} {'AssA':>6} {'MOTA':>6} {'IDF1':>6} "
            f"{'IDSW':>5} {'FP':>6} {'FN':>6} {'inner':>6}  chosen on the other six")
    print(head)
    print("-" * len(head))
    folds, picks = {}, {}
    for s in names:
        train = [n for n in names if n != s]
        best, is_stable = sel.choose(train)
        picks[s] = best
        # inner cross-validation of the same rule on the six: choose on five, score the sixth
        inner = [table[sel.choose([n for n in train if n != t])[0]][t] for t in train]
        inner_hota = pooled(inner)["hota"]
        p = pooled([table[best][s]])
        folds[s] = {**rnd(p), "inner_hota": round(inner_hota, 2), "chosen": shipped(best),
                    "chosen_stable": is_stable}
        print(f"{s:<14} {fmt(p)} {inner_hota:6.2f}  {label(best)}{'' if is_stable else ' (none stable)'}")
    overall = pooled([table[picks[s]][s] for s in names])
    print("-" * len(head))
    print(f"{'OVERALL':<14} {fmt(overall)} {'':>6}  (pooled outer folds)")
    worst = min(names, key=lambda s: folds[s]["hota"])
    print(f"worst fold: {worst} (HOTA {folds[worst]['hota']:.2f}); mean of folds: HOTA "
          f"{np.mean([folds[s]['hota'] for s in names]):.2f} MOTA "
          f"{np.mean([folds[s]['mota'] for s in names]):.2f} IDF1 "
          f"{np.mean([folds[s]['idf1'] for s in names]):.2f}")

    final, final_stable = sel.choose(names)
    fin = pooled([table[final][n] for n in names])
    print(f"\nchosen by the rule on all seven (in-sample, not a result): {label(final)}"
          f"{'' if final_stable else ' (none stable)'}  [in-sample HOTA {fin['hota']:.2f}]")
    print("its neighbours (in-sample HOTA): " + ", ".join(
        f"{label(n)}: {sel.hota(n, names):.2f}" for n in neighbours(final)))

    perturb_json = {}
    if not args.no_perturb:
        ov = {k: v for k, v in shipped(final).items() if k != "interpolate"}
        trackers = {"rule's choice (hybrid)": ("hybrid", ov, shipped(final)["interpolate"]), **PEERS}
        jobs = [(lab, pre, ov, it, kind, src, use_cache)
                for kind in PERTURBATIONS for lab, (pre, ov, it) in trackers.items()]
        res = pmap(run_tracker, jobs)
        scores = {(j[4], j[0]): pooled([r[n] for n in names]) for j, r in zip(jobs, res)}
        print("\nperturbed detections, pooled over the seven (HOTA / MOTA / IDF1, rank among "
              f"{len(trackers)} trackers in brackets)")
        print(f"{'tracker':<26}" + "".join(f"{k:>24}" for k in PERTURBATIONS))
        ranks = {}
        for kind in PERTURBATIONS:
            for m in ("hota", "mota", "idf1"):
                order = sorted(trackers, key=lambda lab: -scores[(kind, lab)][m])
                for k, lab in enumerate(order):
                    ranks[(kind, lab, m)] = k + 1
        for lab in trackers:
            cells = []
            for kind in PERTURBATIONS:
                p = scores[(kind, lab)]
                cells.append(f"{p['hota']:.1f}({ranks[(kind, lab, 'hota')]}) "
                             f"{p['mota']:.1f}({ranks[(kind, lab, 'mota')]}) "
                             f"{p['idf1']:.1f}({ranks[(kind, lab, 'idf1')]})")
                perturb_json.setdefault(kind, {})[lab] = {
                    **{m: round(p[m], 2) for m in ("hota", "deta", "assa", "mota", "idf1")},
                    "rank": {m: ranks[(kind, lab, m)] for m in ("hota", "mota", "idf1")}}
            print(f"{lab:<26}" + "".join(f"{c:>24}" for c in cells))
        d = "default (hybrid)"
        kept = all(ranks[(k, d, m)] <= ranks[("none", d, m)]
                   for k in PERTURBATIONS for m in ("hota", "mota", "idf1"))
        print("default never ranks lower than on the unperturbed detections: "
              f"{'yes' if kept else 'NO'}")
        perturb_json["default_keeps_rank"] = kept

    print(json.dumps({"candidates": len(table), "outer_folds": folds,
                      "overall": rnd(overall), "worst_fold": worst,
                      "rule_on_all": shipped(final), "rule_on_all_stable": final_stable,
                      "rule_on_all_in_sample_hota": round(fin["hota"], 2),
                      "perturbations": perturb_json}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
