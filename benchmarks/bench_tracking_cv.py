"""Leave-one-sequence-out cross-validation of the ``hybrid`` tracker on the seven MOT15 sequences.

    python benchmarks/bench_tracking_cv.py [--workers 2] [--no-cache]

Every configuration of a fixed grid (below) tracks every sequence once (``det/det.txt``,
``score_floor`` from the files: 0.5) and is scored per sequence with py-motmetrics 1.4.0
(IoU 0.5; counts FP, FN, IDSW, objects, IDTP, IDFP, IDFN). Then, for each sequence S:
the configuration with the highest MOTA + IDF1 pooled over the OTHER six sequences is chosen
and S is scored with it (held-out). Reported: the seven held-out scores, their pooled
overall (counts summed over the seven held-out results) with TrackEval's HOTA / DetA / AssA
(``combine_sequences`` of the seven held-out results), and, for the shipped default only,
the configuration chosen on all seven (in-sample: that row is NOT a result).

Output variants are scored from one tracking run: interpolation of gaps up to 0, 5 or 20
frames (``interpolate``, as file runs write the MOT file). Rows output at a predicted box
(``max_predict``, the display aid against flicker) are not scored, as in
``python -m trackers evaluate``; ``max_predict`` is set from the videos
(``bench_video_tracks.py``), not here.

Per-configuration counts are cached in ``.cache/tracking_cv/`` (keyed by the configuration
and the tracker's source hash), so a re-run only tracks what changed. Prints tables, then
one JSON line last.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
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
#: output variants: (max_predict scored, interpolate); predicted rows are never scored
VARIANTS = ((0, 0), (0, 5), (0, 20))
TRACK_MAX_PREDICT = 10


def grid() -> list[dict]:
    """The candidate configurations (overrides of ``HybridConfig``; 96). Thresholds are on the
    quantile scale (share of the run's detections scoring lower, ``trackers.scores``): for
    MOT15's det.txt, 0.1 / 0.3 / 0.5 / 0.7 are about 0.65 / 0.90 / 0.96 / 0.99."""
    out = []
    for space, high, new, low, oc, min_hits in itertools.product(
            ("xyah", "xywh"), (0.1, 0.3), (0.3, 0.5, 0.7), (None, 0.0), (False, True), (1, 2)):
        out.append({"space": space, "high_rel": high, "new_rel": new, "low_rel": low,
                    "oc": oc, "min_hits": min_hits})
    return out


def build(cfg: dict, score_floor: float, max_predict: int = TRACK_MAX_PREDICT):
    import dataclasses

    from trackpipe.trackers.factory import build_tracker
    from trackpipe.trackers.hybrid import HYBRID_KALMAN

    oc = cfg["oc"]
    return build_tracker("hybrid", score_floor=score_floor, high_rel=cfg["high_rel"],
                         new_rel=cfg["new_rel"], low_rel=cfg["low_rel"], min_hits=cfg["min_hits"],
                         inertia=0.2 if oc else 0.0, recovery=oc, reupdate=oc,
                         max_predict=max_predict,
                         kalman=dataclasses.replace(HYBRID_KALMAN, space=cfg["space"]))


def variant_rows(res: np.ndarray, predicted: np.ndarray, max_predict: int, interp: int):
    """Rows a tracker with ``max_predict`` would output, then interpolated -> (rows, source)."""
    from trackpipe.trackers.interpolate import interpolate_gaps

    keep = ~predicted
    if max_predict > 0 and predicted.any():
        # frames since the last observed row of the same id
        order = np.lexsort((res[:, 0], res[:, 1]))
        r, p = res[order], predicted[order]
        last = np.where(~p, r[:, 0], -np.inf)
        newid = np.r_[True, r[1:, 1] != r[:-1, 1]]
        # forward fill of the last observed frame within each id
        idx = np.where(~p | newid, np.arange(len(r)), 0)
        idx = np.maximum.accumulate(idx)
        since = r[:, 0] - last[idx]
        k = np.zeros(len(r), bool)
        k[order] = ~p | (since <= max_predict)
        keep = k
    return interpolate_gaps(res[keep], interp, predicted[keep])


def counts(gt: np.ndarray, rows: np.ndarray) -> dict:
    import motmetrics as mm

    acc = mot.accumulate(gt, rows)
    m = mm.metrics.create().compute(
        acc, metrics=["num_false_positives", "num_misses", "num_switches", "num_objects",
                      "idtp", "idfp", "idfn"], return_dataframe=False)
    return dict(zip(COUNTS, (int(m["num_false_positives"]), int(m["num_misses"]),
                             int(m["num_switches"]), int(m["num_objects"]), int(m["idtp"]),
                             int(m["idfp"]), int(m["idfn"]))))


def _source_hash() -> str:
    h = hashlib.sha256()
    for f in ("hybrid.py", "kalman.py", "matching.py", "interpolate.py", "mot.py", "lifecycle.py",
              "scores.py"):
        h.update((REPO / "trackers" / f).read_bytes())
    return h.hexdigest()[:12]


def run_config(args) -> tuple[str, dict]:
    """Track all sequences with one configuration -> (key, {variant: {seq: counts}})."""
    cfg, floor, src, use_cache = args
    key = hashlib.sha256(json.dumps([cfg, floor, src, VARIANTS], sort_keys=True).encode()).hexdigest()[:16]
    path = CACHE / f"{key}.json"
    if use_cache and path.exists():
        return key, json.loads(path.read_text())
    root = ASSETS / "mot"
    out: dict = {}
    for name in mot.list_sequences(root):
        seq = mot.load_sequence(root, name)
        res, pred, _ = mot.track_sequence(build(cfg, floor), seq.detections_by_frame())
        for mp, it in VARIANTS:
            rows, _ = variant_rows(res, pred, mp, it)
            out.setdefault(f"{mp},{it}", {})[name] = counts(seq.gt, rows)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return key, out


def pooled(cs: list[dict]) -> dict:
    s = {k: sum(c[k] for c in cs) for k in COUNTS}
    mota = 1.0 - (s["fp"] + s["fn"] + s["idsw"]) / max(s["objects"], 1)
    idf1 = 2 * s["idtp"] / max(2 * s["idtp"] + s["idfp"] + s["idfn"], 1)
    return {"mota": 100 * mota, "idf1": 100 * idf1, **s}


def label(cfg: dict, variant: str) -> str:
    mp, it = variant.split(",")
    return (f"{cfg['space']} high={cfg['high_rel']} new={cfg['new_rel']} low={cfg['low_rel']} "
            f"oc={int(cfg['oc'])} hits={cfg['min_hits']} interp={it}")


def shipped_overrides(cfg: dict, variant: str) -> dict:
    """HybridConfig fields of a grid point (what the ``hybrid`` preset must equal)."""
    mp, it = (int(v) for v in variant.split(","))
    return {"space": cfg["space"], "high_rel": cfg["high_rel"], "new_rel": cfg["new_rel"],
            "low_rel": cfg["low_rel"], "inertia": 0.2 if cfg["oc"] else 0.0,
            "recovery": cfg["oc"], "reupdate": cfg["oc"], "min_hits": cfg["min_hits"],
            "interpolate": it}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args()
    root = ASSETS / "mot"
    names = mot.list_sequences(root)
    seqs = {n: mot.load_sequence(root, n) for n in names}
    floor = mot.score_floor(list(seqs.values()))
    cfgs = grid()
    src = _source_hash()
    jobs = [(c, floor, src, not args.no_cache) for c in cfgs]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as ex:
            results = list(ex.map(run_config, jobs))
    else:
        results = [run_config(j) for j in jobs]
    # candidates: (config index, variant)
    cands = [(i, v) for i in range(len(cfgs)) for v in (f"{a},{b}" for a, b in VARIANTS)]
    table = {(i, v): results[i][1][v] for i, v in cands}

    def objective(cand, seq_names):
        p = pooled([table[cand][n] for n in seq_names])
        return p["mota"] + p["idf1"]

    print(f"MOT15 leave-one-sequence-out CV: {len(cfgs)} configurations x {len(VARIANTS)} output "
          f"variants = {len(cands)} candidates, score_floor={floor}, objective MOTA+IDF1 pooled "
          "over the six training sequences")
    held, chosen = {}, {}
    from trackpipe.trackers import mot as motmod
    hotas = {}
    for s in names:
        train = [n for n in names if n != s]
        best = max(cands, key=lambda c: (objective(c, train), -c[0]))
        chosen[s] = best
        held[s] = pooled([table[best][s]])
        i, v = best
        mp, it = (int(x) for x in v.split(","))
        res, pred, _ = mot.track_sequence(build(cfgs[i], floor), seqs[s].detections_by_frame())
        rows, _ = variant_rows(res, pred, mp, it)
        hotas[s] = motmod.hota_sequence(seqs[s].gt, rows)
    hs = motmod.hota_summary(hotas)
    overall = pooled([table[chosen[s]][s] for s in names])
    head = (f"{'held-out sequence':<14} {'MOTA':>6} {'IDF1':>6} {'HOTA':>6} {'DetA':>6} {'AssA':>6} {'IDSW':>5} "
            f"{'FP':>6} {'FN':>6}  chosen on the other six")
    print(head)
    print("-" * len(head))
    rows_json = {}
    for s in names + ["OVERALL"]:
        p = overall if s == "OVERALL" else held[s]
        h = hs[s]
        cho = "(pooled held-out)" if s == "OVERALL" else label(cfgs[chosen[s][0]], chosen[s][1])
        if s == "OVERALL":
            print("-" * len(head))
        print(f"{s:<14} {p['mota']:6.2f} {p['idf1']:6.2f} {100 * h['hota']:6.2f} {100 * h['deta']:6.2f} "
              f"{100 * h['assa']:6.2f} {p['idsw']:5d} {p['fp']:6d} {p['fn']:6d}  {cho}")
        rows_json[s] = {"mota": round(p["mota"], 2), "idf1": round(p["idf1"], 2),
                        "hota": round(100 * h["hota"], 2), "deta": round(100 * h["deta"], 2),
                        "assa": round(100 * h["assa"], 2), "idsw": p["idsw"], "fp": p["fp"],
                        "fn": p["fn"]}
        if s != "OVERALL":
            rows_json[s]["chosen"] = shipped_overrides(cfgs[chosen[s][0]], chosen[s][1])
    # what survives: the same cross-validation with the grid restricted to one value of a factor
    def cv_overall(subset):
        picks = {}
        for s_ in names:
            train = [n for n in names if n != s_]
            picks[s_] = max(subset, key=lambda c: (objective(c, train), -c[0]))
        return pooled([table[picks[s_]][s_] for s_ in names])

    factors = {"space": ("xyah", "xywh"), "low_rel": (None, 0.0), "oc": (False, True),
               "min_hits": (1, 2), "high_rel": (0.1, 0.3), "new_rel": (0.3, 0.5, 0.7)}
    ablation = {}
    print("\nheld-out (pooled) MOTA / IDF1 when the grid is restricted to one value of a factor")
    print(f"{'restriction':<22} {'MOTA':>6} {'IDF1':>6}")
    for fac, values in factors.items():
        for val in values:
            sub = [c for c in cands if cfgs[c[0]][fac] == val]
            p = cv_overall(sub)
            ablation[f"{fac}={val}"] = {"mota": round(p["mota"], 2), "idf1": round(p["idf1"], 2)}
            print(f"{fac + '=' + str(val):<22} {p['mota']:6.2f} {p['idf1']:6.2f}")
    for it in ("0,0", "0,5", "0,20"):
        p = cv_overall([c for c in cands if c[1] == it])
        ablation[f"interpolate={it.split(',')[1]}"] = {"mota": round(p["mota"], 2), "idf1": round(p["idf1"], 2)}
        print(f"{'interpolate=' + it.split(',')[1]:<22} {p['mota']:6.2f} {p['idf1']:6.2f}")

    final = max(cands, key=lambda c: (objective(c, names), -c[0]))
    fin = pooled([table[final][n] for n in names])
    print(f"\nchosen on all seven (the shipped default; in-sample, not a result): "
          f"{label(cfgs[final[0]], final[1])}  [in-sample MOTA {fin['mota']:.2f} IDF1 {fin['idf1']:.2f}]")
    # the ten best candidates on all seven, for the record of how flat the optimum is
    top = sorted(cands, key=lambda c: -objective(c, names))[:10]
    print("ten best candidates on all seven (in-sample):")
    for c in top:
        p = pooled([table[c][n] for n in names])
        print(f"  {p['mota']:6.2f} {p['idf1']:6.2f}  {label(cfgs[c[0]], c[1])}")
    print(json.dumps({"score_floor": floor, "candidates": len(cands), "held_out": rows_json,
                      "restricted_grid_held_out": ablation,
                      "shipped": shipped_overrides(cfgs[final[0]], final[1]),
                      "shipped_in_sample": {"mota": round(fin["mota"], 2), "idf1": round(fin["idf1"], 2)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
