"""``python -m trackers evaluate``: run a tracker on MOTChallenge folders and score it.

Example::

    python -m trackers evaluate --mot-root ../shared/assets/mot --json

Prints a table (per sequence and OVERALL: MOTA, IDF1, ID switches, FP, FN, tracker ms/frame);
with ``--json`` the last stdout line is one JSON object keyed by ``OVERALL`` and sequence
names. MOTA and IDF1 are percentages there as in the table. Bad input: one line
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
    head = (f"{'sequence':<{w}}  {'MOTA':>6} {'IDF1':>6} {'IDSW':>5} {'FP':>6} {'FN':>6} "
            f"{'ms/frame':>8} {'frames':>6}")
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for n in names:
        r = rows[n]
        if n == "OVERALL":
            lines.append("-" * len(head))
        lines.append(f"{n:<{w}}  {r['mota']:6.2f} {r['idf1']:6.2f} {r['idsw']:5d} {r['fp']:6d} "
                     f"{r['fn']:6d} {r['ms_per_frame']:8.3f} {r['frames']:6d}")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import mot
    from .base import build_tracker

    overrides = _parse_set(args.set or [])
    try:
        build_tracker(args.tracker, **overrides)
    except (TypeError, ValueError) as exc:
        raise CliError(f"--tracker {args.tracker} / --set: {exc}") from None
    names = [s for s in args.seqs.split(",") if s] if args.seqs else None
    seq_names = mot.list_sequences(args.mot_root, names)
    sequences = [mot.load_sequence(args.mot_root, n, args.det_file) for n in seq_names]
    summary, runs = mot.evaluate(lambda: build_tracker(args.tracker, **overrides), sequences,
                                 repeats=args.repeats)
    if args.out:
        out = Path(args.out)
        for r in runs:
            mot.write_mot_results(out / f"{r.name}.txt", r.results)
    rows = {name: _row(v) for name, v in summary.items()}
    print(format_table(rows, f"tracker={args.tracker} det={args.det_file}"
                             + (f" set={overrides}" if overrides else "")))
    if args.out:
        print(f"results written to {args.out}/<seq>.txt")
    if args.json:
        ordered = {"OVERALL": rows["OVERALL"], **{k: v for k, v in rows.items() if k != "OVERALL"}}
        print(json.dumps(ordered))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .base import TRACKER_NAMES

    parser = argparse.ArgumentParser(prog="python -m trackers", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="track MOTChallenge sequences and score with py-motmetrics")
    ev.add_argument("--mot-root", required=True, help="folder of <seq>/det, <seq>/gt, <seq>/seqinfo.ini")
    ev.add_argument("--seqs", default="", help="comma-separated sequence names (default: all)")
    ev.add_argument("--tracker", default="sort-mot15", choices=TRACKER_NAMES,
                    help="preset (default: sort-mot15, the best configuration for MOT15's det.txt "
                         "scores; use sort for detections with another score scale)")
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


if __name__ == "__main__":
    sys.exit(main())
