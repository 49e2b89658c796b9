"""Model flags shared by `python -m models`, run_tracker.py and run_capture.py."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from .errors import ModelError
from .spec import BACKENDS, PRECISIONS, ModelSpec


def parse_size(text: str) -> tuple[int, int]:
    """'416' or '416x320' (w x h) -> (w, h)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or WxH, got {text!r}")
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or any(p <= 0 or p % 32 for p in parts):
        raise argparse.ArgumentTypeError(f"size must be positive multiples of 32, got {text!r}")
    return parts[0], parts[1]


def parse_classes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"classes must be comma-separated class ids, got {text!r}")


def add_model_args(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """Add --model/--cfg/--weights/--names/--size/--backend/--precision/--conf/--nms/--calib.

    With defaults=False every flag defaults to None, so a caller can tell which
    flags were given (e.g. to override a YAML config).
    """
    d = (lambda v: v) if defaults else (lambda v: None)
    g = parser.add_argument_group("model")
    g.add_argument("--model", help="named model (yolov4, yolov4-tiny, yolov3, yolov3-tiny), downloaded on first use")
    g.add_argument("--cfg", type=Path, help="darknet .cfg file")
    g.add_argument("--weights", type=Path, help="darknet .weights file")
    g.add_argument("--names", type=Path, help="class names file, one per line")
    g.add_argument("--size", type=parse_size, help="network input N or WxH (default: the cfg's)")
    g.add_argument("--backend", choices=BACKENDS, default=d("auto"), help="inference backend (default auto)")
    g.add_argument("--precision", choices=PRECISIONS, default=d("fp32"))
    g.add_argument("--conf", type=float, default=d(0.25), help="score threshold (default 0.25)")
    g.add_argument("--nms", type=float, default=d(0.45), help="NMS IoU threshold (default 0.45)")
    g.add_argument("--calib", type=Path, help="INT8 calibration directory (from `python -m models calibrate`)")
    g.add_argument("--threads", type=int, default=d(0), help="inference threads (default: all cores)")
    g.add_argument("--cache-dir", type=Path, help="artefact cache (default ~/.cache/trackpipe)")


def default_names(cfg: Path) -> Optional[Path]:
    """coco.names next to the cfg or in ../data, if there is one."""
    for cand in (cfg.parent / "coco.names", cfg.parent.parent / "data" / "coco.names"):
        if cand.is_file():
            return cand
    return None


def spec_from_args(args: argparse.Namespace, classes: Optional[Sequence[int]] = None, **overrides) -> ModelSpec:
    """Build a ModelSpec from parsed model flags (downloads a named --model if needed)."""
    size = getattr(args, "size", None) or (0, 0)
    names = getattr(args, "names", None)
    cache_dir = getattr(args, "cache_dir", None)
    if getattr(args, "model", None):
        if args.cfg or args.weights:
            raise ModelError("give either --model or --cfg/--weights, not both")
        from .zoo import resolve  # noqa: PLC0415

        cfg, weights, zoo_names, default = resolve(args.model, cache_dir)
        size = size if size != (0, 0) else (default, default)
        names = names or zoo_names
    else:
        if not args.cfg or not args.weights:
            raise ModelError("give --model NAME, or both --cfg and --weights")
        cfg, weights = args.cfg, args.weights
        names = names or default_names(cfg)
    kw = dict(cfg=Path(cfg), weights=Path(weights), names=names, size=tuple(size),
              backend=args.backend or "auto", precision=args.precision or "fp32",
              conf_threshold=0.25 if args.conf is None else args.conf,
              nms_threshold=0.45 if args.nms is None else args.nms,
              classes=tuple(classes) if classes else None, calib=getattr(args, "calib", None),
              cache_dir=cache_dir, threads=getattr(args, "threads", 0) or 0)
    kw.update(overrides)
    try:
        return ModelSpec(**kw)
    except ValueError as e:
        raise ModelError(str(e))
