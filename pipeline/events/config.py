"""Zones, lines and delivery settings, validated with one-line messages.

A zone is a polygon (>= 3 points), a line a segment (2 points). Points are pixels of the
source frame or fractions 0..1 of its width and height: ``units: auto`` (the default) reads
them as fractions when every coordinate is within [0, 1], else as pixels; ``units: px`` or
``units: fraction`` says so explicitly. ``resolve(width, height)`` gives pixels.

``from_dict`` builds each type from a YAML mapping and rejects unknown keys the way
``pipeline/config.py`` does (``cameras.road.zones[0]: unknown key 'pionts' (allowed: ...)``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

import numpy as np

from .geometry import ANCHORS, polygon_area, self_intersection

UNITS = ("auto", "px", "fraction")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")   # used in MQTT topics: no '/', '+', '#', spaces


class EventConfigError(ValueError):
    """An invalid zone, line, MQTT or webhook setting; the message is one line (CLI exit 2)."""

    exit_code = 2


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise EventConfigError(f"{where}.name: {name!r} is not a valid name (letters, digits, '_', '.', '-')")
    return name


def _points(points: Any, where: str) -> np.ndarray:
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise EventConfigError(f"{where}.points: expected a list of [x, y] pairs, got {points!r}") from None
    if p.ndim != 2 or p.shape[1] != 2:
        raise EventConfigError(f"{where}.points: expected a list of [x, y] pairs, got {points!r}")
    if not np.all(np.isfinite(p)):
        raise EventConfigError(f"{where}.points: coordinates must be finite numbers")
    return p


def _units(units: str, p: np.ndarray, where: str) -> str:
    if units not in UNITS:
        raise EventConfigError(f"{where}.units: invalid value {units!r} (allowed: {', '.join(UNITS)})")
    if units == "auto":
        return "fraction" if np.all((p >= 0.0) & (p <= 1.0)) else "px"
    if units == "fraction" and not np.all((p >= 0.0) & (p <= 1.0)):
        raise EventConfigError(f"{where}.points: units are fractions but a coordinate is outside [0, 1]")
    return units


def _classes(classes: Any, where: str) -> Optional[Tuple[Union[int, str], ...]]:
    if classes is None:
        return None
    if isinstance(classes, (str, int)):
        classes = [classes]
    if not isinstance(classes, (list, tuple)) or not classes or not all(
            isinstance(c, (int, str)) and not isinstance(c, bool) for c in classes):
        raise EventConfigError(f"{where}.classes: expected a list of class ids or names, got {classes!r}")
    return tuple(classes)


def _confirm(k: Any, where: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise EventConfigError(f"{where}.confirm_frames: expected an integer 1..1000, got {k!r}")
    return k


def _from_dict(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise EventConfigError(f"{where}: expected a mapping, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init and f.name != "where"]
    for k in data:
        if k not in names:
            raise EventConfigError(f"{where}: unknown key '{k}' (allowed: {', '.join(names)})")
    required = [f.name for f in dataclasses.fields(cls)
                if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for k in required:
        if k not in data:
            raise EventConfigError(f"{where}: missing key '{k}'")
    has_where = any(f.name == "where" for f in dataclasses.fields(cls))
    return cls(**data, where=where) if has_where else cls(**data)


@dataclass
class _Shape:
    name: str
    points: Any
    units: str = "auto"
    classes: Optional[Sequence[Union[int, str]]] = None
    anchor: str = "bottom_center"
    confirm_frames: int = 3
    camera: Optional[str] = None
    where: str = field(default="", repr=False, compare=False)

    kind = "shape"

    def _validate(self) -> None:
        w = self.where or f"{self.kind} {self.name!r}"
        self.where = w
        self.name = _check_name(self.name, w)
        pts = _points(self.points, w)
        self.units = _units(self.units, pts, w)
        self.points = pts
        self.classes = _classes(self.classes, w)
        if self.anchor not in ANCHORS:
            raise EventConfigError(f"{w}.anchor: invalid value {self.anchor!r} (allowed: {', '.join(ANCHORS)})")
        self.confirm_frames = _confirm(self.confirm_frames, w)
        if self.camera is not None and not isinstance(self.camera, str):
            raise EventConfigError(f"{w}.camera: expected a camera name, got {self.camera!r}")

    def resolve(self, width: int, height: int) -> np.ndarray:
        """Points in pixels of a ``width`` x ``height`` frame: (V,2) float64."""
        p = np.asarray(self.points, dtype=np.float64)
        return p * np.array([width, height], np.float64) if self.units == "fraction" else p.copy()

    @classmethod
    def from_dict(cls, data: Any, where: str = ""):
        return _from_dict(cls, data, where or f"{cls.kind}")


@dataclass
class Zone(_Shape):
    """A polygon; ``zone_enter``/``zone_exit`` when a track's anchor goes in or out of it."""

    kind = "zone"

    def __post_init__(self) -> None:
        self._validate()
        p, w = self.points, self.where
        if len(p) < 3:
            raise EventConfigError(f"{w}.points: a zone needs at least 3 points, got {len(p)}")
        ij = self_intersection(p)
        if ij is not None:
            raise EventConfigError(f"{w}.points: the polygon crosses itself (edges {ij[0]} and {ij[1]})")
        if abs(polygon_area(p)) <= 1e-12:
            raise EventConfigError(f"{w}.points: the polygon has no area (its points are on one line)")


@dataclass
class Line(_Shape):
    """A segment A->B; ``line_cross`` when a track's anchor crosses it.

    Directions: walking from A to B on the image, ``directions[0]`` (default "in") is a crossing
    from the right-hand side to the left-hand side, ``directions[1]`` ("out") the other way.
    For A left of B on a horizontal line, "in" is moving up the screen. ``count_once``: a
    track is counted at most once on this line (the first crossing, either direction)."""

    directions: Sequence[str] = ("in", "out")
    count_once: bool = False

    kind = "line"

    def __post_init__(self) -> None:
        self._validate()
        p, w = self.points, self.where
        if len(p) != 2:
            raise EventConfigError(f"{w}.points: a line needs exactly 2 points, got {len(p)}")
        if np.allclose(p[0], p[1]):
            raise EventConfigError(f"{w}.points: the two points of the line are the same")
        d = self.directions
        if (not isinstance(d, (list, tuple)) or len(d) != 2 or not all(isinstance(s, str) and NAME_RE.fullmatch(s)
                                                                      for s in d) or d[0] == d[1]):
            raise EventConfigError(f"{w}.directions: expected two different names, got {d!r}")
        self.directions = (d[0], d[1])
        if not isinstance(self.count_once, bool):
            raise EventConfigError(f"{w}.count_once: expected true or false, got {self.count_once!r}")


def parse_shapes(zones: Any = None, lines: Any = None, where: str = "") -> Tuple[List[Zone], List[Line]]:
    """YAML lists of zone and line mappings -> validated objects; names unique per camera."""
    pre = f"{where}." if where else ""
    out_z, out_l = [], []
    for key, cls, out, items in (("zones", Zone, out_z, zones), ("lines", Line, out_l, lines)):
        if items is None:
            continue
        if not isinstance(items, list):
            raise EventConfigError(f"{pre}{key}: expected a list, got {items!r}")
        out.extend(cls.from_dict(d, f"{pre}{key}[{i}]") for i, d in enumerate(items))
    check_unique([*out_z, *out_l], where or "zones and lines")
    return out_z, out_l


def check_unique(shapes: Iterable[_Shape], where: str) -> None:
    """Zone and line names share one namespace per camera (they share the MQTT topic level)."""
    seen = set()
    for s in shapes:
        key = (s.camera, s.name)
        if key in seen:
            cam = f" of camera {s.camera!r}" if s.camera else ""
            raise EventConfigError(f"{where}: two zones or lines{cam} are named {s.name!r}")
        seen.add(key)


def check_cameras(shapes: Iterable[_Shape], cameras: Sequence[str]) -> None:
    """Every ``camera:`` a zone or line names exists; camera names are unique."""
    cams = list(cameras)
    dup = sorted({c for c in cams if cams.count(c) > 1})
    if dup:
        raise EventConfigError(f"cameras: two cameras are named {dup[0]!r}")
    for s in shapes:
        if s.camera is not None and s.camera not in cams:
            raise EventConfigError(f"{s.where}.camera: unknown camera {s.camera!r} "
                                   f"(cameras: {', '.join(map(str, cams)) or 'none'})")


# --- delivery settings ----------------------------------------------------------------------

def redact_url(url: str) -> str:
    """scheme://host:port/path without user, password, query or fragment (safe to log)."""
    try:
        u = urlsplit(url)
        host = u.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{u.port}" if u.port else ""
    except ValueError:
        return "<invalid url>"
    user = "***@" if (u.username or u.password) else ""
    return f"{u.scheme}://{user}{host}{port}{u.path}"


ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str) -> str:
    """``${VAR}`` -> the environment's VAR (unset: empty string; `WebhookConfig` refuses an
    unset one when it is made); nothing else is expanded."""
    return ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), value)


@dataclass
class MqttConfig:
    """``mqtt://[user:pass@]host[:port]`` or ``mqtts://...``; credentials from the URL, these
    fields or TRACKPIPE_MQTT_USERNAME / TRACKPIPE_MQTT_PASSWORD (in that order). Never logged."""

    url: str = field(repr=False)
    username: Optional[str] = field(default=None, repr=False)
    password: Optional[str] = field(default=None, repr=False)
    topic_prefix: str = "trackpipe"
    client_id: Optional[str] = None
    qos: int = 1
    keepalive_s: int = 30
    queue_size: int = 1000
    snapshots: bool = False
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    tls_ca: Optional[str] = None
    tls_insecure: bool = False
    outbox: Any = True   # undelivered events on disk: true, false, a folder or a mapping (outbox.py)

    def __post_init__(self) -> None:
        w = "mqtt"
        try:
            u = urlsplit(self.url) if isinstance(self.url, str) else None
            port = u.port if u else None
        except ValueError:
            u, port = None, None
        if u is None or u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise EventConfigError(f"{w}.url: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], "
                                   f"got {redact_url(str(self.url))!r}")
        self.host = u.hostname
        self.tls = u.scheme == "mqtts"
        self.port = port or (8883 if self.tls else 1883)
        env = os.environ
        self.username = self.username or (u.username and _unquote(u.username)) or env.get("TRACKPIPE_MQTT_USERNAME")
        self.password = self.password or (u.password and _unquote(u.password)) or env.get("TRACKPIPE_MQTT_PASSWORD")
        if not isinstance(self.topic_prefix, str) or not self.topic_prefix or any(c in self.topic_prefix for c in "+#"):
            raise EventConfigError(f"{w}.topic_prefix: {self.topic_prefix!r} is not a valid topic prefix")
        self.topic_prefix = self.topic_prefix.strip("/")
        if self.qos not in (0, 1):
            raise EventConfigError(f"{w}.qos: invalid value {self.qos!r} (allowed: 0, 1)")
        for k, lo, hi in (("keepalive_s", 1, 3600), ("queue_size", 1, 1_000_000)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise EventConfigError(f"{w}.{k}: expected an integer {lo}..{hi}, got {v!r}")
        if not (0 < self.reconnect_min_s <= self.reconnect_max_s <= 3600):
            raise EventConfigError(f"{w}.reconnect_min_s/reconnect_max_s: need 0 < min <= max <= 3600")
        self.outbox = _outbox(self.outbox, f"{w}.outbox")

    @property
    def safe_url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"MqttConfig({self.safe_url}, topic_prefix={self.topic_prefix!r}, qos={self.qos})"

    @classmethod
    def from_dict(cls, data: Any, where: str = "mqtt") -> "MqttConfig":
        if isinstance(data, str):
            data = {"url": data}
        return _from_dict(cls, data, where)


def _outbox(value: Any, where: str):
    from .outbox import OutboxConfig
    try:
        return OutboxConfig.parse(value, where)
    except ValueError as e:
        raise EventConfigError(str(e)) from None


def _unquote(s: str) -> str:
    from urllib.parse import unquote
    return unquote(s)


@dataclass
class WebhookConfig:
    """HTTP POST of each event's JSON to ``url``; header values may use ``${ENV_VAR}``.

    ``events``: only these event types (default: all). Retries 5xx, 408, 429 and connection
    errors with capped exponential backoff; other 4xx are counted as rejected, not retried."""

    url: str = field(repr=False)
    headers: Dict[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = 5.0
    queue_size: int = 1000
    events: Optional[Sequence[str]] = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    outbox: Any = True   # undelivered events on disk: true, false, a folder or a mapping (outbox.py)
    where: str = field(default="webhook", repr=False, compare=False)

    def __post_init__(self) -> None:
        w = self.where
        try:
            u = urlsplit(self.url) if isinstance(self.url, str) else None
        except ValueError:
            u = None
        if u is None or u.scheme not in ("http", "https") or not u.hostname:
            raise EventConfigError(f"{w}.url: expected http(s)://HOST[:PORT]/PATH, got {redact_url(str(self.url))!r}")
        if not isinstance(self.headers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                         for k, v in self.headers.items()):
            raise EventConfigError(f"{w}.headers: expected a mapping of header names to strings")
        for k, v in self.headers.items():
            unset = [m.group(1) for m in ENV_REF.finditer(v) if m.group(1) not in os.environ]
            if unset:
                raise EventConfigError(f"{w}.headers.{k}: environment variable {unset[0]} is not set "
                                       f"(the value uses ${{{unset[0]}}})")
        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s <= 600):
            raise EventConfigError(f"{w}.timeout_s: expected a number in (0, 600], got {self.timeout_s!r}")
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise EventConfigError(f"{w}.queue_size: expected an integer >= 1, got {self.queue_size!r}")
        if self.events is not None:
            if isinstance(self.events, str):
                self.events = [self.events]
            self.events = tuple(self.events)
        if not (0 < self.backoff_initial_s <= self.backoff_max_s <= 3600):
            raise EventConfigError(f"{w}.backoff_initial_s/backoff_max_s: need 0 < initial <= max <= 3600")
        self.outbox = _outbox(self.outbox, f"{w}.outbox")

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"WebhookConfig({self.safe_url}, timeout_s={self.timeout_s}, events={self.events})"

    def request_url_and_auth(self) -> Tuple[str, Optional[str]]:
        """The URL without user:password, and a Basic Authorization value made from them."""
        u = urlsplit(self.url)
        if not (u.username or u.password):
            return self.url, None
        import base64
        from urllib.parse import unquote
        netloc = u.hostname if ":" not in (u.hostname or "") else f"[{u.hostname}]"
        if u.port:
            netloc += f":{u.port}"
        cred = f"{unquote(u.username or '')}:{unquote(u.password or '')}".encode()
        return u._replace(netloc=netloc).geturl(), "Basic " + base64.b64encode(cred).decode()

    def resolved_headers(self) -> Dict[str, str]:
        return {k: expand_env(v) for k, v in self.headers.items()}

    @classmethod
    def from_dict(cls, data: Any, where: str = "webhook") -> "WebhookConfig":
        if isinstance(data, str):
            data = {"url": data}
        return _from_dict(cls, data, where)
