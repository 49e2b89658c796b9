"""Everything checked in the main process before any process, shared memory or file is created:
outputs writable, model files present, tracker options valid, display usable, source readable.
Bad input costs one ``error:`` line and leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
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

CALIB_FRAMES_AT_ONCE = 8  # int8 calibration (models.quantize) holds every tensor of 8 frames at once
GiB = 1024 ** 3


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
    # resolved once, here: ids from now on (render's snapshot filter)
    cfg.output.snapshot_classes = list(resolve_classes(cfg.output.snapshot_classes, names) or []) or None
    check_display(cfg, cams)
    from trackpipe.pipeline.motion.setup import camera_motion, detect_uri_of
    cams = [replace(c, motion=camera_motion(cfg, c.name, c.config, names, c.index)) for c in cams]
    if len(cams) == 1:
        out = [replace(cams[0], info=probe_source(cfg.source, detect_uri_of(cams[0]), name=cams[0].name))]
    else:
        out = [replace(c, info=probe_camera(cfg.source, replace(c, uri=detect_uri_of(c)))) for c in cams]
        kinds = {c.info.live for c in out}
        if len(kinds) > 1:
            raise ConfigError("cameras: live sources and files in one run: add --realtime to play the files as "
                              "live cameras")
    out = [_record_size(cfg, c) for c in out]
    check_memory(estimate_memory(cfg, spec, out))
    return out


@dataclass(frozen=True)
class MemoryEstimate:
    """What a run will hold in memory, estimated from sizes before anything is allocated.

    ring_bytes: the frame rings (every camera's ``ring_slots`` x its largest frame, uint8 BGR);
    tensor_bytes: every layer output of the detector for one frame (float32, at ``size`` (w, h));
    frames: frames whose tensors may be held at once (batches in flight, or an int8 calibration)."""

    ring_bytes: int
    slots: int
    frame_shapes: Tuple[Tuple[int, int, int], ...]
    tensor_bytes: int = 0
    frames: int = 0
    size: Tuple[int, int] = (0, 0)

    @property
    def total_bytes(self) -> int:
        return self.ring_bytes + self.tensor_bytes * self.frames


def detector_tensor_bytes(spec) -> Tuple[int, Tuple[int, int]]:
    """(bytes of every layer output for one frame, input size (w, h)) of a darknet cfg at the
    spec's size, from its layer shapes (nothing built); (0, (0, 0)) for other model files."""
    from trackpipe.models.darknet import load_cfg
    path = getattr(spec, "cfg", None)
    if path is None or Path(path).suffix.lower() != ".cfg":
        return 0, (0, 0)
    try:
        net = load_cfg(path, tuple(getattr(spec, "size", (0, 0)) or (0, 0)))
    except (ModelError, OSError):   # an unreadable cfg is reported where the model is built
        return 0, (0, 0)
    return 4 * sum(h * w * c for h, w, c in (layer.shape for layer in net.layers)), net.input_size


def estimate_memory(cfg: Config, spec, cams: List[Camera]) -> MemoryEstimate:
    """The memory a run of ``cams`` (probed) will hold: rings, and the detector's tensors for the
    frames it holds at once: ``infer_workers`` (auto: up to 2) x ``batch`` (auto: counted as 1),
    at most ``ring_slots``; an int8 calibration (precision auto or int8) holds
    ``CALIB_FRAMES_AT_ONCE``. (Inference reuses buffers, so the sum of a frame's layer outputs is
    more than it holds: measured with Yolo-Fastest-xl at 1024x1024, fp32 ONNX Runtime, 2 workers:
    1.4 GiB for all the run's processes against 1.1 GiB estimated for the tensors alone.)"""
    p = cfg.pipeline
    shapes = tuple(tuple(int(v) for v in c.info.shape) for c in cams if c.info is not None)
    ring = sum(p.ring_slots * h * w * ch for h, w, ch in shapes)
    tensors, size = detector_tensor_bytes(spec)
    in_flight = min(p.ring_slots, (p.infer_workers or 2) * (p.batch if isinstance(p.batch, int) else 1))
    if getattr(spec, "precision", None) in ("auto", "int8"):
        in_flight = max(in_flight, CALIB_FRAMES_AT_ONCE)
    return MemoryEstimate(ring, p.ring_slots, shapes, tensors, in_flight, size)


def available_memory() -> Optional[int]:
    """Bytes this process may still allocate: MemAvailable, or less under a cgroup (v2) limit;
    None when neither can be read."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            left = int(limit) - int((cg / "memory.current").read_text())
            avail = left if avail is None else min(avail, left)
    except (OSError, ValueError):
        pass
    return avail


def check_memory(est: MemoryEstimate, available: Optional[int] = None) -> None:
    """One line (ConfigError) when ``est`` exceeds ``available`` bytes (default: `available_memory`),
    saying what takes it and what to lower."""
    available = available_memory() if available is None else available
    if available is None or est.total_bytes <= available:
        return
    h, w, _ = max(est.frame_shapes, key=lambda s: s[0] * s[1], default=(0, 0, 3))
    parts = [f"frame rings {est.ring_bytes / GiB:.1f} GiB (pipeline.ring_slots {est.slots} x {w}x{h}"
             f"{f' x {len(est.frame_shapes)} cameras' if len(est.frame_shapes) > 1 else ''})"]
    if est.tensor_bytes:
        parts.append(f"detector tensors {est.tensor_bytes * est.frames / GiB:.1f} GiB ({est.frames} frames at "
                     f"model.size {est.size[0]}x{est.size[1]})")
    raise ConfigError(f"memory: this run needs about {est.total_bytes / GiB:.1f} GiB but {available / GiB:.1f} GiB "
                      f"is available: {' + '.join(parts)}; use a smaller --size, fewer ring slots or cameras")


def _record_size(cfg: Config, cam: Camera) -> Camera:
    """A camera with a ``detect_uri``: its record stream's (``uri``) size in ``motion.record_size``,
    for mapping boxes between the two (unknown while that stream is unreachable)."""
    if cam.motion is None or not cam.motion.detect_uri:
        return cam
    try:
        info = probe(cam.uri, cfg.source)
    except SourceError as e:
        log.warning("%s: record stream: %s", cam.name, e)
        return cam
    return replace(cam, motion=replace(cam.motion, record_size=(info.width, info.height)))


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
    """Every camera's zone and line classes against the model's class ``names``: a bad one is
    one line, exit 2. (Everything else of zones, lines, ``mqtt`` and ``webhooks`` was checked
    when the config tree was built.)"""
    from trackpipe.pipeline.events import EventConfigError, ZoneLineCounter
    try:
        for cam in cams:
            if cam.zones or cam.lines:
                ZoneLineCounter(cam.name, cam.zones or [], cam.lines or [], names=names)
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
    from trackpipe.pipeline.display.window import display_available
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


def wait_for_server(cfg: Config, spec) -> None:
    """Backend triton with ``model.triton_wait``: an absent Triton server is waited for here, before
    any stage starts, with the camera's back-off (``source.backoff_initial_s`` / ``backoff_max_s``)
    and "still waiting" lines (``source.still_waiting_s``); live cameras are not read meanwhile."""
    if spec.backend != "triton" or not spec.triton_wait:
        return
    from trackpipe.models.backends.triton import wait_for_server as wait
    from trackpipe.pipeline.media.waiting import StillWaiting
    sc = cfg.source
    wait(spec, StillWaiting(sc.still_waiting_s), (sc.backoff_initial_s, sc.backoff_max_s))


def probe_source(sc, uri: Optional[str] = None, clock=time.monotonic, sleep=time.sleep,
                 name: Optional[str] = None) -> SourceInfo:
    """Probe the source; an absent network camera is waited for (capped exponential backoff)
    when ``source.wait_for_stream`` is set: one "waiting for" line, then "still waiting for
    <name> (since HH:MM:SS)" after each of ``source.still_waiting_s`` (`media.waiting`). Nothing
    is created while waiting, so Ctrl-C exits cleanly."""
    from trackpipe.pipeline.media.sources import _redact
    from trackpipe.pipeline.media.waiting import StillWaiting
    uri = uri or sc.uri
    backoff = sc.backoff_initial_s
    waiting = StillWaiting(sc.still_waiting_s, clock=clock)
    what = f"{name} {_redact(uri)}" if name else _redact(uri)
    while True:
        try:
            return probe(uri, sc)
        except SourceError as e:
            if not (sc.wait_for_stream and source_kind(uri) == "stream"):
                raise
            if not waiting.waiting:
                waiting.begin()
                why = str(e).replace(f"cannot open stream {_redact(uri)} ", "").strip("() ")
                log.warning("waiting for %s (%s): retrying, Ctrl-C to stop; --set source.wait_for_stream=false "
                            "to fail instead", what, why)
            elif waiting.due():
                log.warning("%s", waiting.line(what))
            log.debug("%s; next try in %.1fs", e, backoff)
            sleep(backoff)
            backoff = min(backoff * 2, sc.backoff_max_s)
