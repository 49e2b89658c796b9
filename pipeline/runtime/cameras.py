"""The cameras of a run: one `Camera` per source, resolved from the config before anything starts.

One source (``source.uri``, ``--source`` once) is one camera named ``pipeline.camera``. Several
(``--source`` repeated, or ``cameras:`` in the config) are named ``cam0``, ``cam1``, ... unless
named; each has its own capture process, tracker, zones, lines and outputs, and they share
the infer workers. Output paths may hold ``{camera}``; with several cameras a video or MOT path
without it gets ``_<camera>`` before its suffix (one file per camera), the events file stays one
file (every event names its camera) and snapshots go to a folder per camera.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

from trackpipe.pipeline.config.tree import CAMERA_NAME, CAMERA_NAME_RULE, CameraConfig, camera_name_problem  # noqa: F401
from trackpipe.pipeline.errors import ConfigError
from trackpipe.pipeline.events.config import Line, Zone
from trackpipe.pipeline.stages.settings import Camera  # noqa: F401  (what the stages receive)


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


def check_camera_name(name: Any, where: str) -> str:
    """``name`` if it is a valid camera name, else ConfigError naming ``where``."""
    problem = camera_name_problem(name)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return name


def resolve_cameras(cfg, names: Optional[List[str]] = None) -> List[Camera]:
    """The run's cameras from ``cfg`` (`pipeline.config.Config`, validated: names, keys, zones
    and lines checked there); ``names``: the model's class names (per-camera ``classes`` by
    name). Raises ConfigError (one line) when there is no source, a camera's class is unknown
    or two cameras would write the same file."""
    from trackpipe.models.classes import parse_classes
    from trackpipe.models.errors import ModelError
    o = cfg.output
    entries = [(i, c) for i, c in enumerate(cfg.cameras) if c.enabled]
    if cfg.cameras and not entries:
        raise ConfigError("cameras: every camera has enabled: false")
    if not entries:
        if not cfg.source.uri:
            raise ConfigError("no source given (use --source or source.uri in the config)")
        entries = [(0, None)]
    several = len(entries) > 1
    all_names = cfg.camera_names()
    cams: List[Camera] = []
    for n, (i, own) in enumerate(entries):
        name = all_names[i]
        try:
            classes = parse_classes(own.classes, names) if own is not None and own.classes else None
        except ModelError as e:
            raise ConfigError(f"cameras[{i}].classes: {str(e).removeprefix('classes: ')}") from None
        shared = [s for s in (*cfg.zones, *cfg.lines) if (s.camera or all_names[0]) == name]
        zones = [*(own.zones if own is not None else ()), *(s for s in shared if isinstance(s, Zone))]
        lines = [*(own.lines if own is not None else ()), *(s for s in shared if isinstance(s, Line))]
        cams.append(Camera(
            n, name, str(own.uri if own is not None else cfg.source.uri), tuple(classes) if classes else None,
            zones=tuple(zones) or None, lines=tuple(lines) or None,
            video=_per_camera((own and own.output) or o.video, name, several and not (own and own.output), "file"),
            mot=_per_camera((own and own.mot) or o.mot, name, several and not (own and own.mot), "file"),
            events=_per_camera((own and own.events) or o.events, name, several, "shared"),
            snapshots=_per_camera((own and own.snapshots) or o.snapshots, name,
                                  several and not (own and own.snapshots), "folder"),
            config=own if own is not None else CameraConfig(name=name, uri=str(cfg.source.uri))))
    for out in ("video", "mot"):
        paths = [getattr(c, out) for c in cams if getattr(c, out)]
        if len(paths) != len(set(paths)):
            raise ConfigError(f"cameras: two cameras write the same {out} file {paths[0]} (use {{camera}} in it)")
    return cams
