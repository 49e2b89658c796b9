"""``python -m trackpipe.pipeline export --record DIR --camera NAME --start T --end T --out clip.mp4``:
any recorded range of a camera as one MP4, cut from its segments without re-encoding (it starts on
the keyframe at or before ``--start``). Reads the index only: it runs beside a recording run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .clips import NoFootage, cut
from .layout import index_path, parse_time


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trackpipe.pipeline export",
                                description="Export a recorded range of one camera as an MP4 (no re-encoding).")
    p.add_argument("--record", required=True, metavar="DIR", help="the record folder (record.dir of the run)")
    p.add_argument("--camera", required=True, metavar="NAME", help="the camera's name")
    p.add_argument("--start", required=True, metavar="T", help="seconds since the epoch or ISO 8601 (UTC if no zone)")
    p.add_argument("--end", required=True, metavar="T", help="seconds since the epoch or ISO 8601")
    p.add_argument("--out", required=True, metavar="FILE", help="the MP4 to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        start, end = parse_time(args.start), parse_time(args.end)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if end <= start:
        print("error: --end must be after --start", file=sys.stderr)
        return 2
    root = Path(args.record)
    if not index_path(root).exists():
        print(f"error: no recording in {root} (no {index_path(root).name})", file=sys.stderr)
        return 2
    from .index import RecordIndex
    index = RecordIndex(root, writer=False)
    try:
        segs = [s for s in index.segments(args.camera, after=start - 600.0, before=end) if (root / s.path).exists()]
        info = cut(root, segs, start, end, Path(args.out))
    except NoFootage:
        print(f"error: no footage of camera {args.camera} between {args.start} and {args.end}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        index.close()
    print(f"{info.path}: {info.frames} frames, {info.start:.3f} .. {info.end:.3f} ({info.end - info.start:.1f} s, "
          f"from the keyframe at or before --start), {info.bytes} bytes")
    return 0
