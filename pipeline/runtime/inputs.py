"""Everything checked in the main process before any process, shared memory or file is created:
outputs writable, model files present, tracker options valid, display usable, source readable.
Bad input costs one ``error:`` line and leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Tuple

from trackpipe.models.classes import parse_classes
from trackpipe.models.classes import read_names as _read_names
from trackpipe.models.errors import ModelError
from trackpipe.pipeline.config import Config
from trackpipe.pipeline.errors import ConfigError, SourceError
from trackpipe.pipeline.media.sources import SourceInfo, probe, screen_region, source_kind

from .cameras import Camera, resolve_cameras

log = logging.getLogger(__name__)

WAIT_NOTICE_S = 60.0    # an absent stream at start: the "waiting for" line at most this often


def read_names(path) -> Optional[List[str]]:
    """The model's class names (None when it has none): ``trackpipe.models.classes.read_names``."""
    return _read_names(path) if path else None


def resolve_classes(classes, names: Optional[List[str]], key: str = "output.snapshot_classes"):
    """``classes`` as ids or names -> tuple of ids (None keeps all); errors name ``key``."""
    try:
        return parse_classes(classes, names)
    except ModelError as e:
        raise ConfigError(f"{key}: {str(e).removeprefix('classes: ')}") from None


def _check_creatable(path: Path, what: str) -> None:
    """``path`` (a file, or a folder) can be written: it or its first existing ancestor is writable."""
    probe_dir = path.resolve() if path.is_dir() else path.resolve().parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not os.access(probe_dir, os.W_OK):
        raise ConfigError(f"cannot write the {what} {path}: {probe_dir} is not writable")


def _check_writable(path: Optional[str], what: str) -> None:
    if not path:
        return
    _check_creatable(Path(path), what)
    if Path(path).is_dir():
        raise ConfigError(f"the {what} {path} is a folder")


def prepare(cfg: Config, spec) -> List[Camera]:
    """Check outputs and model files, probe every camera's source; raise PipelineError with one
    line. -> the run's cameras (`runtime.cameras.Camera`, ``info`` set)."""
    try:
        names = read_names(getattr(spec, "names", None))
    except (ConfigError, ModelError, OSError):
        names = None
    cams = resolve_cameras(cfg, names)
    for path, what in ((cfg.profile.path, "profile"), (cfg.profile.plot, "profile plot")):
        _check_writable(path, what)
    for cam in cams:
        for path, what in ((cam.video, "output video"), (cam.mot, "MOT file"), (cam.events, "events file")):
            _check_writable(path, what)
        if cam.snapshots:
            d = Path(cam.snapshots)
            if d.exists() and not d.is_dir():
                raise ConfigError(f"the snapshots folder {d} is a file")
            _check_creatable(d, "snapshots folder")
        if cam.video and Path(cam.video).suffix.lower() not in (".mp4", ".avi", ".mkv", ".mov", ".m4v"):
            raise ConfigError(f"output video {cam.video}: use a .mp4, .avi, .mkv or .mov name")
    for attr in ("cfg", "weights", "names"):
        p = getattr(spec, attr, None)
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"{attr} file not found: {p}")
    check_tracker(cfg, spec, cams)
    check_events(cfg, cams, names)
    check_display(cfg, cams)
    if len(cams) == 1:
        return [replace(cams[0], info=probe_source(cfg.source, cams[0].uri))]
    out = [replace(c, info=probe_camera(cfg.source, c)) for c in cams]
    kinds = {c.info.live for c in out}
    if len(kinds) > 1:
        raise ConfigError("cameras: live sources and files in one run: add --realtime to play the files as "
                          "live cameras")
    return out


def probe_camera(sc, cam: Camera) -> SourceInfo:
    """One of several cameras: a network camera that is not reachable yet never holds the others
    up: its capture stage keeps trying (reconnect backoff) and frames up to 1920x1080 fit."""
    if source_kind(cam.uri) != "stream" or not sc.wait_for_stream:
        return probe_source(sc, cam.uri)
    try:
        return probe(cam.uri, sc)
    except SourceError as e:
        log.warning("%s: %s; its capture keeps trying while the other cameras run", cam.name, e)
        w, h = (sc.width, sc.height) if sc.width and sc.height else (1920, 1080)
        return SourceInfo("stream", cam.uri, w, h, 25.0, 0, True)


def check_tracker(cfg: Config, spec=None, cams: Optional[List[Camera]] = None) -> None:
    """The tracker and its options, validated by the trackers' own constructor (a bad option
    is one line here, not a failure of the track process after the model has loaded).

    Also resolves them in ``cfg.tracker`` for the run: ``auto`` -> ``independent`` for image
    folders and globs (unrelated images: every image's detections output at once, nothing
    linked), else ``hybrid``; ``options`` gain ``score_floor`` = the detector's conf (trackers
    that have it) and ``max_predict``; ``max_predict``/``interpolate`` become the values in effect."""
    import dataclasses

    from trackpipe.trackers.factory import build_tracker
    t = cfg.tracker
    auto = t.name == "auto"
    if auto:
        uris = [c.uri for c in cams] if cams else [cfg.source.uri or ""]
        t.name = "independent" if all(source_kind(u) == "images" for u in uris) else "hybrid"
    # options written for the default tracker do not apply to the one chosen for images
    opts = {} if auto and t.name == "independent" else dict(t.options)
    try:
        tracker = build_tracker(t.name, **opts)
        conf = getattr(tracker, "config", None)
        have = {f.name for f in dataclasses.fields(conf)} if dataclasses.is_dataclass(conf) else set()
        floor = getattr(spec, "conf_threshold", None)
        if "score_floor" in have and "score_floor" not in opts and floor is not None:
            opts["score_floor"] = float(floor)
        if t.max_predict is not None and "max_predict" in have:
            opts["max_predict"] = int(t.max_predict)
        elif t.max_predict and not auto:
            raise ConfigError(f"tracker.max_predict: the {t.name} tracker outputs no predicted boxes")
        tracker = build_tracker(t.name, **opts)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"tracker: {e}") from None
    t.options = opts
    t.max_predict = int(getattr(tracker.config, "max_predict", 0) or 0) if "max_predict" in have else 0
    if t.interpolate is None:
        t.interpolate = int(getattr(tracker.config, "interpolate", 0) or 0) if "interpolate" in have else 0


def check_events(cfg: Config, cams: List[Camera], names: Optional[List[str]] = None) -> None:
    """Every camera's ``zones`` and ``lines``, ``mqtt`` and ``webhooks`` parsed with the events
    package's own validation (classes against the model's ``names``): a bad entry is one line,
    exit 2. (Top-level zones and lines were given to their cameras by `resolve_cameras`.)"""
    from trackpipe.pipeline.events import EventConfigError, ZoneLineCounter, check_cameras, parse_shapes
    from trackpipe.pipeline.events.config import MqttConfig, WebhookConfig
    try:
        for cam in cams:
            where = f"cameras.{cam.name}" if len(cams) > 1 else ""
            zones, lines = parse_shapes(cam.zones, cam.lines, where)
            check_cameras((*zones, *lines), [cam.name])   # a camera's own list names no other
            if zones or lines:
                ZoneLineCounter(cam.name, zones, lines, names=names)   # classes known to the model
        if cfg.mqtt:
            MqttConfig.from_dict(cfg.mqtt)
        if cfg.webhooks is not None and not isinstance(cfg.webhooks, list):
            raise EventConfigError(f"webhooks: expected a list, got {cfg.webhooks!r}")
        for i, w in enumerate(cfg.webhooks or []):
            WebhookConfig.from_dict(w, f"webhooks[{i}]")
    except EventConfigError as e:
        raise ConfigError(str(e)) from None


def display_mode(cfg: Config) -> str:
    """``output.display`` resolved: window, overlay, mirror or none. ``auto`` follows
    ``output.window`` (auto: a window when a display is available); headless shows no window."""
    o = cfg.output
    if o.display not in ("auto", "window"):
        return o.display
    if o.headless or o.window == "off":
        return "none"
    if o.display == "window" or o.window == "on":
        return "window"
    from trackpipe.pipeline.media.sinks import display_available
    return "window" if display_available() else "none"


def check_display(cfg: Config, cams: Optional[List[Camera]] = None) -> None:
    """A window shows one camera; the overlay and mirror displays show the newest frame only: no
    video or snapshots with them."""
    mode = display_mode(cfg)
    if cams and len(cams) > 1 and mode != "none":
        raise ConfigError(f"output.display {mode} shows one camera: with several use --headless "
                          "(and --http-port for a live view)")
    if mode not in ("overlay", "mirror"):
        return
    o = cfg.output
    if o.region is not None and (len(o.region) != 4 or any(not isinstance(v, int) for v in o.region)
                                 or o.region[2] <= 0 or o.region[3] <= 0):
        raise ConfigError(f"output.region: expected X, Y, W, H (integers, W and H > 0), got {o.region!r}")
    if o.video or o.snapshots:
        raise ConfigError(f"output.display {mode}: the annotated video and snapshots need display window or none")
    if mode == "overlay" and source_kind(cfg.source.uri or "") != "screen" and not o.region:
        raise ConfigError("output.display overlay needs a screen source (screen[:N][@X,Y,W,H]) or output.region")
    from trackpipe.pipeline.display.qt_env import overlay_supported
    ok, reason = overlay_supported()
    if not ok:
        raise ConfigError(f"cannot show the {mode}: {reason}")


def display_region(cfg: Config, info: SourceInfo) -> Tuple[int, int, int, int]:
    """Screen x, y, w, h of the overlay / mirror: ``output.region``, else the screen source's."""
    if cfg.output.region:
        return tuple(int(v) for v in cfg.output.region)
    if info.kind == "screen":
        return screen_region(info.uri)
    return (0, 0, info.width, info.height)


def probe_source(sc, uri: Optional[str] = None, clock=time.monotonic, sleep=time.sleep) -> SourceInfo:
    """Probe the source; an absent network camera is waited for (capped exponential backoff)
    when ``source.wait_for_stream`` is set, saying so at most once a minute. Nothing is created
    while waiting, so Ctrl-C exits cleanly."""
    from trackpipe.pipeline.media.sources import _redact
    uri = uri or sc.uri
    backoff = sc.backoff_initial_s
    said = None
    while True:
        try:
            return probe(uri, sc)
        except SourceError as e:
            if not (sc.wait_for_stream and source_kind(uri) == "stream"):
                raise
            if said is None or clock() - said >= WAIT_NOTICE_S:
                said = clock()
                why = str(e).replace(f"cannot open stream {_redact(uri)} ", "").strip("() ")
                log.warning("waiting for %s (%s): retrying, Ctrl-C to stop; --set source.wait_for_stream=false "
                            "to fail instead", _redact(uri), why)
            log.debug("%s; next try in %.1fs", e, backoff)
            sleep(backoff)
            backoff = min(backoff * 2, sc.backoff_max_s)
