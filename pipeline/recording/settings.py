"""The run's recording settings from the config tree: the global ``record:`` section with each
camera's ``record:`` over it (`resolve`), made once in the parent."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from .layout import run_tag as make_run_tag
from .recorder import CameraRecording, RecorderSettings

log = logging.getLogger(__name__)

KEYS = ("mode", "segment_s", "pre_s", "post_s", "retain_days", "classes")


def resolve(cfg, cameras: Sequence, lossless: bool, t_base: float | None = None,
            names: Sequence[str] = ()) -> RecorderSettings | None:
    """``cfg``: the `Config` tree; ``cameras``: the run's cameras (``name``, ``uri``, ``config``
    (its `CameraConfig`), ``info.kind``); None when nothing is recorded. Sources without a
    compressed stream (image folders, camera devices, the screen) are left out with one line."""
    rec = cfg.record
    if not rec.dir:
        return None
    t_base = time.time() if t_base is None else t_base
    out = []
    for cam in cameras:
        own = getattr(cam.config, "record", None) if getattr(cam, "config", None) is not None else None
        vals = {k: getattr(rec, k) for k in KEYS}
        if own is not None:
            vals.update({k: getattr(own, k) for k in KEYS if getattr(own, k) is not None})
        if vals["mode"] == "off":
            continue
        kind = getattr(getattr(cam, "info", None), "kind", None)
        if kind not in (None, "file", "stream"):
            log.warning("camera %s: a %s source has no compressed stream to copy: not recorded", cam.name, kind)
            continue
        src = cfg.source
        out.append(CameraRecording(cam.name, str(cam.uri), mode=vals["mode"], segment_s=vals["segment_s"],
                                   pre_s=vals["pre_s"], post_s=vals["post_s"], retain_days=vals["retain_days"],
                                   classes=list(vals["classes"]) if vals["classes"] else None,
                                   live=kind != "file" or not lossless, paced=kind == "file" and not lossless,
                                   loop=bool(src.loop), open_timeout_s=src.open_timeout_s,
                                   read_timeout_s=src.read_timeout_s))
    if not out:
        return None
    return RecorderSettings(Path(rec.dir), out, max_gb=rec.max_gb, min_free_gb=rec.min_free_gb,
                            run_tag=make_run_tag(t_base), names=tuple(names), t_base=t_base)
