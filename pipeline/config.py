"""Typed pipeline configuration: dataclasses loaded from YAML, overridden by CLI flags.

Unknown keys and out-of-range values are rejected with a message that names the key
and what is allowed, e.g. ``unknown key 'pipline' (allowed: source, model, ...)``.
Field metadata carries the checks: ``choices``, ``min``/``max`` (inclusive) and
``min_excl``. The model section is a ``trackpipe.models.spec.ModelSpec`` (the one model type,
validated against the backend and precision registries); model files named in a config file
are relative to that file; every other path is relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from trackpipe.models.errors import ModelError
from trackpipe.models.spec import ModelSpec

from .errors import ConfigError

YAML_MAX_DEPTH = 64          # nesting levels of a config file
YAML_MAX_VALUES = 100_000    # values of a config file once its aliases are expanded


def _f(default, *, choices=None, min=None, max=None, min_excl=None, help="", check=None):  # noqa: A002
    meta = {k: v for k, v in dict(choices=choices, min=min, max=max, min_excl=min_excl, help=help,
                                  check=check).items()
            if v is not None}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SourceConfig:
    """Where frames come from and how they flow."""

    uri: Optional[str] = _f(None, help="video file, image folder or glob, camera index, rtsp/http URL, "
                                       "screen[:MONITOR][@X,Y,W,H]")
    mode: str = _f("auto", choices=("auto", "lossless", "latest"),
                   help="lossless: every frame once, in order (files); latest: newest frame, count drops (live)")
    realtime: bool = _f(False, help="pace a file at its own fps and treat it as a live source")
    fps: float = _f(30.0, min_excl=0.0, max=1000.0, help="frame rate of image folders and screen capture")
    loop: bool = _f(False, help="restart a file or folder at its end")
    decode_threads: int = _f(0, min=0, max=64, help="FFmpeg decoder threads (0: 1 for files, which are decoded "
                                                   "ahead anyway, FFmpeg's default for live sources)")
    width: int = _f(0, min=0, max=16384, help="requested camera width (0: device default)")
    height: int = _f(0, min=0, max=16384, help="requested camera height (0: device default)")
    watchdog_s: float = _f(5.0, min_excl=0.0, max=3600.0, help="live: no new frame for this long -> source_lost")
    backoff_initial_s: float = _f(0.5, min_excl=0.0, max=600.0)
    backoff_max_s: float = _f(30.0, min_excl=0.0, max=3600.0)
    wait_for_stream: bool = _f(True, help="rtsp/http: an absent camera at start is waited for with the reconnect "
                                          "backoff (false: one error line, exit 2)")
    open_timeout_s: float = _f(10.0, min_excl=0.0, max=600.0)
    read_timeout_s: float = _f(5.0, min_excl=0.0, max=600.0, help="stream: a read blocked this long is a "
                                                                  "failed read (its frame is stale)")
    ffmpeg_options: Optional[str] = _f(None, help="stream: FFmpeg options 'key;value|key;value' (default: "
                                                  "rtsp_transport;tcp for rtsp, plus fflags;nobuffer|flags;low_delay|"
                                                  "analyzeduration;500000)")


@dataclass
class TrackerConfig:
    name: str = _f("auto", help="auto (hybrid; independent for image folders and globs), hybrid, independent, "
                               "sort-ref, sort, bytetrack, deepsort, deepsort-byte")
    options: Dict[str, Any] = _f({}, help="overrides of the tracker's config fields")
    max_predict: Optional[int] = _f(None, min=0, help="a confirmed track missed for up to this many frames is "
                                                      "drawn and written at its predicted box, flagged (null: the "
                                                      "tracker's own, 5 for hybrid; 0: off)")
    interpolate: Optional[int] = _f(None, min=0, help="file runs: fill gaps of up to this many frames per id in the "
                                                      "MOT file at the end (null: the tracker's own, 20 for hybrid; "
                                                      "0: off)")


@dataclass
class PipelineConfig:
    ring_slots: int = _f(8, min=2, max=256, help="shared-memory frame slots")
    infer_workers: int = _f(0, min=0, max=64, help="infer processes (0: auto: 2 on a CPU for files, else 1)")
    max_frames: int = _f(0, min=0, help="stop after this many frames (0: all)")
    duration_s: float = _f(0.0, min=0.0, help="stop after this many seconds of running, model loading not "
                                              "counted (0: no limit)")
    heartbeat_timeout_s: float = _f(10.0, min_excl=0.0, max=3600.0,
                                    help="a ready stage silent for this long is considered hung")
    start_timeout_s: float = _f(1800.0, min_excl=0.0, help="time allowed for every stage to become ready "
                                                          "(model export or TensorRT engine build included)")
    stop_timeout_s: float = _f(2.0, min_excl=0.0, max=60.0, help="graceful stop before SIGKILL")
    max_restarts_per_min: int = _f(3, min=0, max=1000, help="live sources: stage restarts allowed per minute")
    reclaim_after_s: float = _f(2.0, min_excl=0.0, help="live: a slot in flight this long may be overwritten")
    start_method: str = _f("spawn", choices=("spawn", "forkserver"))
    batch: Union[int, str] = _f("auto", check=lambda v: None if v == "auto" or (isinstance(v, int) and 1 <= v <= 64)
                                else f"invalid value {v!r} (allowed: auto or 1..64)",
                                help="infer: frames already waiting run in one detector call, up to this many "
                                     "(never waits for more); auto: measured at start, 1 or 4")
    batch_timeout_ms: float = _f(10.0, min=0.0, max=1000.0,
                                 help="live, several cameras: after a frame arrives, infer waits this long for "
                                      "the other cameras' frames to join its batch")
    cpus: Union[bool, str, Dict[str, Any]] = _f("auto", check=lambda v: _check_cpus(v),
                                          help="CPU placement: auto (infer on its own cores), off, or "
                                               "{stage: [cores]} (runtime/placement.py)")
    camera: str = _f("cam0", check=lambda v: _check_camera(v),
                     help="the camera's name in events, MQTT topics, zones/lines and {camera} in output paths")


@dataclass
class OutputConfig:
    video: Optional[str] = _f(None, help="annotated video file (.mp4)")
    fourcc: str = _f("mp4v")
    codec: str = _f("auto", choices=("auto", "h264", "mp4v"), help="auto: H.264 (PyAV/libx264, fragmented MP4: "
                                                                   "plays in browsers, survives a kill), else mp4v")
    preset: str = _f("auto", choices=("auto", "ultrafast", "superfast", "veryfast", "faster", "fast", "medium",
                                      "slow", "slower", "veryslow"),
                     help="x264 preset; auto: ultrafast for files on unplaced cores (encoded as fast as the "
                          "pipeline runs), else chosen by its measured CPU cost at the source's size and fps")
    mot: Optional[str] = _f(None, help="MOTChallenge track file")
    events: Optional[str] = _f(None, help="JSON-lines events file")
    window: str = _f("auto", choices=("auto", "on", "off"), help="with display auto: a window (on), none (off), "
                                                                "or a window when a display is available (auto)")
    display: str = _f("auto", choices=("auto", "window", "overlay", "mirror", "none"),
                      help="shown by render: window (OpenCV), overlay (click-through boxes over the screen "
                           "source), mirror (Qt window of the frames), none; auto: follows output.window")
    region: Optional[List[int]] = _f(None, help="overlay/mirror: screen region X, Y, W, H (default: the screen "
                                                "source's)")
    headless: bool = _f(False, help="no window, no live table")
    labels: bool = _f(True, help="draw id/class/score labels")
    track_end_frames: int = _f(30, min=1, help="frames a track id must be unseen before track_ended")
    snapshots: Optional[str] = _f(None, help="folder: a JPEG of the frame when a new track appears")
    snapshot_classes: Optional[List[Union[int, str]]] = _f(None, help="snapshot only new tracks of these class "
                                                                      "ids or names (default: every class)")
    snapshot_quality: int = _f(90, min=1, max=100, help="JPEG quality of the snapshots")
    http_port: Optional[int] = _f(None, min=0, max=65535, help="live view and HTTP API on this port (0: a free "
                                                               "one, logged as 'live view on URL'; None: off)")
    http_host: str = _f("127.0.0.1", help="address of the live view; anything but loopback needs a token")
    http_token: Optional[str] = _f(None, help="bearer token of the live view (default: $TRACKPIPE_HTTP_TOKEN)")


@dataclass
class ProfileConfig:
    path: Optional[str] = _f(None, help="write the profile JSON here at exit")
    plot: Optional[str] = _f(None, help="write a PNG of per-stage FPS over time")
    table: str = _f("auto", choices=("auto", "on", "off"), help="live per-stage table (auto: live sources)")
    interval_s: float = _f(1.0, min_excl=0.0, max=60.0, help="stats period of every stage")
    log_interval_s: float = _f(30.0, min=0.0, help="headless live runs: one stats line this often (0: never)")


@dataclass
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelSpec = field(default_factory=ModelSpec)  # the one model type, validated by models.spec
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    metrics_port: int = _f(0, min=0, max=65535, help="Prometheus metrics on 127.0.0.1:PORT (0: off)")
    log_level: str = _f("info", choices=("debug", "info", "warning", "error"))
    cameras: Optional[List[Any]] = _f(None, help="several sources in one run: a list of {name, uri, classes, zones, "
                                                 "lines, output, mot, events, snapshots} (docs/cameras.md)")
    zones: Optional[List[Any]] = _f(None, help="zones of the camera (docs/events.md)")
    lines: Optional[List[Any]] = _f(None, help="counting lines of the camera (docs/events.md)")
    mqtt: Optional[Any] = _f(None, help="MQTT delivery of the events: mqtt://HOST:PORT or a mapping (docs/events.md)")
    webhooks: Optional[List[Any]] = _f(None, help="webhook deliveries of the events: URLs or mappings")


# --- loading and validation ---------------------------------------------------------------

def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` (after resolving strings); ints widen to float."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"{key}: expected {' or '.join(_type_name(a) for a in args if a is not type(None))}, got {value!r}")
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a camera index written as `uri: 0`
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _check(value: Any, f: dataclasses.Field, key: str) -> None:
    m = f.metadata
    if "check" in m and value is not None:
        problem = m["check"](value)
        if problem:
            raise ConfigError(f"{key}: {problem}")
    if value is None:
        return
    if "choices" in m and value not in m["choices"]:
        raise ConfigError(f"{key}: invalid value {value!r} (allowed: {', '.join(map(str, m['choices']))})")
    if "min" in m and value < m["min"]:
        raise ConfigError(f"{key}: {value!r} is below the minimum {m['min']}")
    if "max" in m and value > m["max"]:
        raise ConfigError(f"{key}: {value!r} is above the maximum {m['max']}")
    if "min_excl" in m and value <= m["min_excl"]:
        raise ConfigError(f"{key}: {value!r} must be greater than {m['min_excl']}")


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def apply_dict(obj, data: dict, prefix: str = "", base_dir: Optional[Path] = None) -> None:
    """Set fields of dataclass ``obj`` from a nested mapping, validating every key and value.
    Model file paths are relative to ``base_dir`` (the config file's folder) when given."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = _hints(type(obj))
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in fields:
            raise ConfigError(f"unknown key '{key}' (allowed: {', '.join(fields)})")
        cur = getattr(obj, k)
        if isinstance(cur, ModelSpec):
            try:
                setattr(obj, k, cur.override(v, base_dir=base_dir, where=key))
            except ModelError as e:
                raise ConfigError(str(e)) from None
            continue
        if dataclasses.is_dataclass(cur):
            if v is None:
                continue
            apply_dict(cur, v, key + ".", base_dir)
            continue
        if isinstance(v, bool) and "on" in fields[k].metadata.get("choices", ()):
            v = "on" if v else "off"  # YAML 1.1 reads on/off as booleans
        val = _coerce(v, hints[k], key)
        _check(val, fields[k], key)
        setattr(obj, k, val)


def set_value(cfg: Config, dotted: str, value: Any) -> None:
    """Override one value by dotted key (``pipeline.ring_slots``), validated like YAML."""
    parts = dotted.split(".")
    data: Any = value
    for p in reversed(parts):
        data = {p: data}
    apply_dict(cfg, data)


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` for untrusted files: a document nested deeper than ``YAML_MAX_DEPTH``
    levels, holding more than ``YAML_MAX_VALUES`` values once its aliases are expanded (a "billion
    laughs" file of a few hundred bytes), or an alias inside its own anchor is refused as a
    ``yaml.YAMLError`` while it is composed, before any Python object is built from it."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {YAML_MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        _check_expanded_size(node)
        return node


def _node_children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    return []


def _check_expanded_size(root) -> None:
    """Count the values of the node graph ``root`` as if every alias were copied out (each shared
    node counted once per reference, memoised: linear in the file's size, no recursion)."""
    size: Dict[int, int] = {}
    on_path = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        k = id(node)
        if done:
            on_path.discard(k)
            n = 1 + sum(size[id(c)] for c in _node_children(node))
            if n > YAML_MAX_VALUES:
                raise yaml.composer.ComposerError(
                    None, None, f"its aliases expand to more than {YAML_MAX_VALUES} values", node.start_mark)
            size[k] = n
            continue
        if k in size:
            continue
        if k in on_path:
            raise yaml.composer.ComposerError(None, None, "an alias refers to its own anchor", node.start_mark)
        on_path.add(k)
        stack.append((node, True))
        stack.extend((c, False) for c in _node_children(node) if id(c) not in size)


def load_yaml(text: str) -> Any:
    """``text`` parsed by `BoundedLoader` (safe tags only, bounded depth and expansion)."""
    return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 (a SafeLoader subclass)


def parse_scalar(text: str) -> Any:
    """A ``--set key=value`` value: YAML scalar syntax (``4``, ``true``, ``[0, 2]``, ``null``)."""
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def load_config(path: Optional[str] = None, data: Optional[dict] = None) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``data`` (if any)."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = load_yaml(p.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', None) or e}") from None
        if loaded is not None:
            try:
                apply_dict(cfg, loaded, base_dir=p.resolve().parent)
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from None
    if data:
        apply_dict(cfg, data)
    return cfg


def _check_cpus(value) -> Optional[str]:
    from .runtime.placement import check_cpus
    return check_cpus(value)


def _check_camera(value) -> Optional[str]:
    from .runtime.cameras import camera_name_problem
    return camera_name_problem(value)


def to_dict(cfg) -> dict:
    """The config as plain data (the model section as ``ModelSpec.to_mapping()``)."""
    return {f.name: (v.to_mapping() if isinstance(v, ModelSpec) else
                     dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
            for f in dataclasses.fields(cfg) for v in [getattr(cfg, f.name)]}
