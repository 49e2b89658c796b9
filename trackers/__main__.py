"""``python -m trackers evaluate``: run a tracker on MOTChallenge folders and score it.

Example::

    python -m trackers evaluate --mot-root ../shared/assets/mot --json

Prints a table (per sequence and OVERALL: HOTA, DetA, AssA (TrackEval), MOTA, IDF1, ID
switches, FP, FN (py-motmetrics), tracker ms/frame); with ``--json`` the last stdout line is
one JSON object keyed by ``OVERALL`` and sequence names. Scores are percentages there as in
the table. The default tracker is ``hybrid`` (chosen by cross-validation, docs/tracking.md);
its score thresholds are relative to the detector's confidence floor, which is read from the
detection files (the lowest score, rounded down to 0.05) unless ``--score-floor`` is given.
Its MOT output is interpolated over gaps of up to the preset's ``interpolate`` frames, as a
file run writes it (``--interpolate`` overrides). Bad input: one line
``error: <file>:<line>: <what>`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

logger = logging.getLogger(__name__)


class CliError(Exception):
    """A user error reported as one ``error: ...`` line."""


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CliError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def _row(values: dict) -> dict[str, Any]:
    """Metrics of one sequence (or OVERALL) for the table and the JSON line."""
    def get(k, default=float("nan")):
        return values.get(k, default)
    return {
        "hota": round(100.0 * get("hota"), 2),
        "deta": round(100.0 * get("deta"), 2),
        "assa": round(100.0 * get("assa"), 2),
        "mota": round(100.0 * get("mota"), 2),
        "idf1": round(100.0 * get("idf1"), 2),
        "idsw": int(get("num_switches", 0)),
        "fp": int(get("num_false_positives", 0)),
        "fn": int(get("num_misses", 0)),
        "ms_per_frame": round(get("ms_per_frame"), 4),
        "frames": int(get("frames", 0)),
    }


def format_table(rows: dict[str, dict[str, Any]], title: str = "") -> str:
    """Fixed-width text table of :func:`_row` dicts (OVERALL last)."""
    names = [n for n in rows if n != "OVERALL"] + (["OVERALL"] if "OVERALL" in rows else [])
    w = max([len(n) for n in names] + [8])
    head = (f"{'sequence':<{w}}  {'HOTA':>6} {'DetA':>6} {'AssA':>6} {'MOTA':>6} {'IDF1':>6} "
            f"{'IDSW':>5} {'FP':>6} {'FN':>6} {'ms/frame':>8} {'frames':>6}")
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for n in names:
        r = rows[n]
        if n == "OVERALL":
            lines.append("-" * len(head))
        lines.append(f"{n:<{w}}  {r['hota']:6.2f} {r['deta']:6.2f} {r['assa']:6.2f} "
                     f"{r['mota']:6.2f} {r['idf1']:6.2f} {r['idsw']:5d} {r['fp']:6d} "
                     f"{r['fn']:6d} {r['ms_per_frame']:8.3f} {r['frames']:6d}")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import mot
    from .factory import build_tracker

    overrides = _parse_set(args.set or [])
    try:
        probe = build_tracker(args.tracker, **overrides)
    except (TypeError, ValueError) as exc:
        raise CliError(f"--tracker {args.tracker} / --set: {exc}") from None
    if args.score_floor is not None and not 0.0 <= args.score_floor < 1.0:
        raise CliError(f"--score-floor must be in [0, 1), got {args.score_floor}")
    if args.interpolate is not None and args.interpolate < 0:
        raise CliError(f"--interpolate must be >= 0, got {args.interpolate}")
    names = [s for s in args.seqs.split(",") if s] if args.seqs else None
    seq_names = mot.list_sequences(args.mot_root, names)
    sequences = [mot.load_sequence(args.mot_root, n, args.det_file) for n in seq_names]
    cfg = getattr(probe, "config", None)
    notes = []
    if hasattr(cfg, "score_floor") and "score_floor" not in overrides:
        floor = args.score_floor if args.score_floor is not None else mot.score_floor(sequences)
        overrides["score_floor"] = floor
        notes.append(f"score_floor={floor:g}")
    interp = args.interpolate
    if interp is None:
        interp = int(getattr(cfg, "interpolate", 0) or 0)
    if interp:
        notes.append(f"interpolate={interp}")
    summary, runs = mot.evaluate(lambda: build_tracker(args.tracker, **overrides), sequences,
                                 repeats=args.repeats, interpolate=interp, hota=True,
                                 keep_predicted=args.keep_predicted)
    if args.out:
        out = Path(args.out)
        for r in runs:
            mot.write_mot_results(out / f"{r.name}.txt", r.results)
    rows = {name: _row(v) for name, v in summary.items()}
    print(format_table(rows, f"tracker={args.tracker} det={args.det_file}"
                             + (f" {' '.join(notes)}" if notes else "")
                             + (f" set={_parse_set(args.set or [])}" if args.set else "")))
    if args.out:
        print(f"results written to {args.out}/<seq>.txt")
    if args.json:
        ordered = {"OVERALL": rows["OVERALL"], **{k: v for k, v in rows.items() if k != "OVERALL"}}
        print(json.dumps(ordered))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .factory import TRACKER_NAMES

    from trackpipe.models.cli_args import command_name

    prog = command_name("python -m trackpipe.trackers", ("trackers", "trackpipe.trackers"))
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0].replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="track MOTChallenge sequences; score with TrackEval (HOTA) "
                                         "and py-motmetrics (MOTA, IDF1)")
    ev.add_argument("--mot-root", required=True, help="folder of <seq>/det, <seq>/gt, <seq>/seqinfo.ini")
    ev.add_argument("--seqs", default="", help="comma-separated sequence names (default: all)")
    ev.add_argument("--tracker", default="hybrid", choices=TRACKER_NAMES,
                    help="preset (default: hybrid, chosen by leave-one-sequence-out "
                         "cross-validation; see docs/tracking.md)")
    ev.add_argument("--score-floor", type=float, default=None,
                    help="the detector's confidence threshold, to which the hybrid tracker's "
                         "thresholds are relative (default: the lowest score in the detection "
                         "files, rounded down to 0.05)")
    ev.add_argument("--interpolate", type=int, default=None,
                    help="fill gaps of up to N frames per ID in the output, as file runs do "
                         "(default: the preset's interpolate, 0 for presets without it)")
    ev.add_argument("--keep-predicted", action="store_true",
                    help="also score (and write) rows output at a predicted box (the display "
                         "aid against flicker; left out by default)")
    ev.add_argument("--det-file", default="det/det.txt", help="detections path inside each sequence")
    ev.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a tracker config field (repeatable), e.g. --set max_age=10")
    ev.add_argument("--repeats", type=int, default=1, help="repeat tracking, report the median time")
    ev.add_argument("--out", default="", help="write MOT-format results <out>/<seq>.txt")
    ev.add_argument("--json", action="store_true", help="print one JSON line last")
    ev.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .mot import MotFormatError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (MotFormatError, CliError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in ("motmetrics", "trackeval", "pandas"):
            raise
        print(f"error: scoring needs {exc.name}: pip install 'trackpipe[eval]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    if __package__ == "trackers":
        # `python -m trackers` from the repository root: run the installed trackpipe.trackers, so that
        # every module (and exception class) has one identity, not a `trackers.x` and a `trackpipe.trackers.x`
        import runpy
        runpy.run_module("trackpipe.trackers.__main__", run_name="__main__", alter_sys=True,
                         init_globals={"__command__": "python -m trackers"})  # its usage line
    else:
        sys.exit(main())
