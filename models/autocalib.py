"""INT8 for `precision: auto` without a calibration directory: calibrated once on the user's own frames.

`--calib DIR` (``python -m models calibrate``) is a deliberate calibration. Without it, auto
(precision auto) still offers the int8 pairs when it has a real source to read: the first
time a model meets one, `source_calibration` reads `FRAMES` frames spread over it (over a
video's first `MAX_READ` frames: a long video is not read to its end), leaving
out the frames auto judges accuracy on (the probe: held out, so the judge never sees a frame
the scales were fitted to), writes them as JPEG under

    <cache>/calib-auto/<cfg stem>-<W>x<H>-<model key>/
        frames/000.jpg ...   the frames (the calibration is reproducible without the source)
        calib_cache.json, model.int8*.onnx, meta.json   as `quantize.calibrate` writes them

and calibrates on them (cross-layer equalized, float stem and heads, as ``python -m models
calibrate``; min-max ranges rather than its default entropy: yolov4 416 on 32 frames takes
30 s and 4.2 GB with min-max, entropy ran past 2 min and 15 GB; Yolo-Fastest's COCO AP50 with
either stays within 0.01 of fp32: minmax 0.428, entropy 0.424, fp32 0.434; NNCF's openvino-int8
collects its own statistics from the same frames). Later runs of that model reuse it, whatever their
source; auto's agreement check on each request's probe frames still decides whether int8 is
kept. A directory without a readable meta.json of this model is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .identity import Model, model_id, model_name
from .errors import ModelError, quiet_loggers
from .onnx_export import default_cache_dir
from .quantize import MIN_FRAMES, calibrate, load_meta, read_calibration_frames

log = logging.getLogger(__name__)

FRAMES = 32          # calibration frames (100 for `models calibrate`: a first run should not wait long)
MAX_READ = 600       # spread over a video's first 600 frames (read in order: 2.6 s at 1080p here, not minutes)
METHOD = "minmax"
JPEG_QUALITY = 95


QUIET_LOGGERS = ("trackpipe.models.quantize", "trackpipe.models.equalize", "trackpipe.models.onnx_export")


def calibration_dir(model: Model, cache_dir: Optional[Path] = None) -> Path:
    """Where this model's calibration on its first source lives."""
    w, h = model.input_size
    stem = model_name(model)
    return Path(cache_dir or default_cache_dir()) / "calib-auto" / f"{stem}-{w}x{h}-{model_id(model)}"


def cached_calibration(model: Model, cache_dir: Optional[Path] = None) -> Optional[Path]:
    """The calibration directory when it is complete and belongs to `model`, else None."""
    out = calibration_dir(model, cache_dir)
    if not (out / "meta.json").is_file():
        return None
    try:
        meta = load_meta(out)
    except ModelError:
        return None
    if meta.model_key != model_id(model) or not (out / "calib_cache.json").is_file():
        return None
    return out


def _digest(frame: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).hexdigest()


def held_out_frames(source: str, count: int, probe: Sequence[np.ndarray]) -> list:
    """Up to `count` (H, W, 3) uint8 BGR frames spread over `source` (a video's first MAX_READ
    frames), none equal to a probe frame."""
    seen = {_digest(f) for f in probe}
    frames = read_calibration_frames(source, count + len(seen), max_read=MAX_READ)
    kept = [f for f in frames if _digest(f) not in seen]
    if len(kept) > count:
        kept = [kept[i] for i in np.linspace(0, len(kept) - 1, count).round().astype(int)]
    return kept


def source_calibration(model: Model, source: str, probe: Sequence[np.ndarray],
                       cache_dir: Optional[Path] = None, letterbox: bool = False) -> Path:
    """The calibration directory for `model`: cached, or calibrated now on `source`.

    Raises ModelError (one line) when `source` gives fewer than MIN_FRAMES usable frames.
    """
    found = cached_calibration(model, cache_dir)
    if found is not None:
        return found
    out = calibration_dir(model, cache_dir)
    frames = held_out_frames(str(source), FRAMES, probe)
    if len(frames) < MIN_FRAMES:
        raise ModelError(f"{source} gives {len(frames)} frames besides the probe's; int8 calibration needs "
                         f"{MIN_FRAMES}")
    t0 = time.monotonic()
    why = "its calibration is incomplete or of another model" if out.exists() else "first use of this model"
    # first use: a detail (the caller says what happens); a broken calibration replaced: a warning
    log.log(logging.WARNING if out.exists() else logging.DEBUG, "auto: calibrating int8 for %s on %d frames of %s "
            "(%s; cached at %s)", model_name(model), len(frames), source, why, out)
    import cv2  # noqa: PLC0415

    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "frames").mkdir(parents=True)
        for i, f in enumerate(frames):
            if not cv2.imwrite(str(tmp / "frames" / f"{i:03d}.jpg"), f, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise ModelError(f"cannot write calibration frames under {tmp}")
        # the frames folder is the calibration's source from here on: meta.json points at its final place
        with quiet_loggers(*QUIET_LOGGERS):   # the warning above says what happens; its steps are no news
            calibrate(model, str(tmp / "frames"), tmp, frames=len(frames), method=METHOD, letterbox=letterbox,
                      cache_dir=cache_dir)
        meta_path = tmp / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["source"] = str(out / "frames")
        meta_path.write_text(json.dumps(meta, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:   # another run calibrated it meanwhile
            if cached_calibration(model, cache_dir) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.debug("auto: calibrated in %.1f s", time.monotonic() - t0)
    return out
