"""The cameras of a run: one `Camera` per source, resolved from the config before anything starts.

One source (``source.uri``, ``--source`` once) is one camera named ``pipeline.camera``. Several
(``--source`` repeated, or ``cameras:`` in the config) are named ``cam0``, ``cam1``, ... unless
named; each has its own capture process, tracker, zones, lines and outputs, and they share
the infer workers. Output paths may hold ``{camera}``; with several cameras a video or MOT path
without it gets ``_<camera>`` before its suffix (one file per camera), the events file stays one
file (every event names its camera) and snapshots go to a folder per camera.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, List, Optional, Tuple

from trackpipe.pipeline.errors import ConfigError
from trackpipe.pipeline.events.config import EventConfigError, check_cameras, parse_shapes

CAMERA_KEYS = ("name", "uri", "classes", "zones", "lines", "output", "mot", "events", "snapshots")
# a camera's name is part of file and folder names ({camera} in output paths) and of MQTT topics:
# no '.' or '..', no separator, no space or control character, no leading '-' or '.'
CAMERA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
CAMERA_NAME_RULE = "1-64 of A-Z a-z 0-9 _ . -, first a letter, digit or _"


@dataclass(frozen=True)
class Camera:
    """One source of a run. ``index``: its position (capture process, ring, ``FrameMeta.source_id``);
    ``classes``: class ids kept for this camera (None: every class the model reports);
    ``zones``/``lines``: config lists (docs/events.md) for this camera only; output paths resolved."""

    index: int
    name: str
    uri: str
    classes: Optional[Tuple[int, ...]] = None
    zones: Optional[list] = None
    lines: Optional[list] = None
    video: Optional[str] = None
    mot: Optional[str] = None
    events: Optional[str] = None
    snapshots: Optional[str] = None
    info: Optional[object] = None        # media.sources.SourceInfo, once probed


def _per_camera(path: Optional[str], name: str, several: bool, kind: str) -> Optional[str]:
    """``path`` for camera ``name``: ``{camera}`` replaced; with several cameras a file gets
    ``_<name>`` before its suffix, a folder a sub-folder (``kind`` file | folder | shared)."""
    if not path:
        return None
    if "{camera}" in path:
        return path.replace("{camera}", name)
    if not several or kind == "shared":
        return path
    p = Path(path)
    return str(p / name) if kind == "folder" else str(p.with_name(f"{p.stem}_{name}{p.suffix}"))


def camera_name_problem(name: Any) -> Optional[str]:
    """None for a valid camera name (`CAMERA_NAME`), else what is wrong, in one line."""
    if isinstance(name, str) and CAMERA_NAME.fullmatch(name):
        return None
    return f"camera names are {CAMERA_NAME_RULE} (pattern {CAMERA_NAME.pattern}), got {name!r}"


def check_camera_name(name: Any, where: str) -> str:
    """``name`` if it is a valid camera name, else ConfigError naming ``where``."""
    problem = camera_name_problem(name)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return name


def resolve_cameras(cfg, names: Optional[List[str]] = None) -> List[Camera]:
    """The run's cameras from ``cfg`` (`pipeline.config.Config`); ``names``: the model's class
    names (per-camera ``classes`` by name). Raises ConfigError (one line) for a duplicate or
    bad name, an unknown key, a zone or line naming an unknown camera, or shapes without a
    camera when there are several."""
    from trackpipe.models.classes import parse_classes
    from trackpipe.models.errors import ModelError
    o = cfg.output
    if cfg.cameras:
        if not isinstance(cfg.cameras, list):
            raise ConfigError(f"cameras: expected a list, got {cfg.cameras!r}")
        entries = []
        for i, c in enumerate(cfg.cameras):
            if isinstance(c, str):
                c = {"uri": c}
            if not isinstance(c, dict):
                raise ConfigError(f"cameras[{i}]: expected a mapping (name, uri, ...) or a URI, got {c!r}")
            bad = [k for k in c if k not in CAMERA_KEYS]
            if bad:
                raise ConfigError(f"cameras[{i}]: unknown key '{bad[0]}' (allowed: {', '.join(CAMERA_KEYS)})")
            if not c.get("uri"):
                raise ConfigError(f"cameras[{i}]: no uri")
            entries.append(c)
    else:
        if not cfg.source.uri:
            raise ConfigError("no source given (use --source or source.uri in the config)")
        entries = [{"uri": cfg.source.uri, "name": cfg.pipeline.camera}]
    several = len(entries) > 1
    cams: List[Camera] = []
    for i, c in enumerate(entries):
        default = f"cam{i}" if several or not cfg.pipeline.camera else cfg.pipeline.camera
        name = check_camera_name(c.get("name") or default,
                                 f"cameras[{i}].name" if cfg.cameras else "pipeline.camera")
        try:
            classes = parse_classes(c["classes"], names) if c.get("classes") else None
        except ModelError as e:
            raise ConfigError(f"cameras[{i}].classes: {str(e).removeprefix('classes: ')}") from None
        cams.append(Camera(
            i, name, str(c["uri"]), tuple(classes) if classes else None,
            zones=list(c.get("zones") or []), lines=list(c.get("lines") or []),
            video=_per_camera(c.get("output") or o.video, name, several and not c.get("output"), "file"),
            mot=_per_camera(c.get("mot") or o.mot, name, several and not c.get("mot"), "file"),
            events=_per_camera(c.get("events") or o.events, name, several, "shared"),
            snapshots=_per_camera(c.get("snapshots") or o.snapshots, name, several and not c.get("snapshots"),
                                  "folder")))
    for out in ("video", "mot"):
        paths = [getattr(c, out) for c in cams if getattr(c, out)]
        if len(paths) != len(set(paths)):
            raise ConfigError(f"cameras: two cameras write the same {out} file {paths[0]} (use {{camera}} in it)")
    try:
        check_cameras([], [c.name for c in cams])
        return _assign_shapes(cfg, cams)
    except EventConfigError as e:
        raise ConfigError(str(e)) from None


def _assign_shapes(cfg, cams: List[Camera]) -> List[Camera]:
    """Top-level ``zones``/``lines`` (validated by `parse_shapes`, their cameras by
    `check_cameras`) go to the camera they name (``camera: NAME``); without a name they belong
    to the one camera, and are an error with several."""
    names = [c.name for c in cams]
    zones, lines = parse_shapes(cfg.zones, cfg.lines)
    check_cameras((*zones, *lines), names)
    extra = {n: {"zones": [], "lines": []} for n in names}
    for key, items, shapes in (("zones", cfg.zones or [], zones), ("lines", cfg.lines or [], lines)):
        for i, (item, shape) in enumerate(zip(items, shapes)):
            if shape.camera is None and len(cams) > 1:
                raise EventConfigError(f"{key}[{i}]: name its camera (camera: NAME) when there are several "
                                       f"(cameras: {', '.join(names)})")
            extra[shape.camera or names[0]][key].append(item)
    return [replace(c, zones=(list(c.zones or []) + extra[c.name]["zones"]) or None,
                    lines=(list(c.lines or []) + extra[c.name]["lines"]) or None) for c in cams]
