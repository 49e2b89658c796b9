"""Zones, lines and delivery settings: typed models (pydantic), validated with one-line messages.

A zone is a polygon (>= 3 points), a line a segment (2 points). Points are pixels of the
source frame or fractions 0..1 of its width and height: ``units: auto`` (the default) reads
them as fractions when every coordinate is within [0, 1], else as pixels; ``units: px`` or
``units: fraction`` says so explicitly. ``resolve(width, height)`` gives pixels.

These models are the ``zones``, ``lines``, ``mqtt`` and ``webhooks`` of the configuration tree
(`trackpipe.pipeline.config`), which validates them with the rest of the config. ``from_dict``
and `parse_shapes` validate one of them alone and raise `EventConfigError` naming the key's
path (``cameras.road.zones[0].points: a zone needs at least 3 points, got 2``).
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Dict, Iterable, List, Literal, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)
from trackpipe.pipeline.errors import field_error, validation_line
from typing_extensions import Annotated

from .geometry import ANCHORS, polygon_area, self_intersection
from .outbox import OutboxConfig

UNITS = ("auto", "px", "fraction")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")   # used in MQTT topics: no '/', '+', '#', spaces
STRICT = ConfigDict(extra="forbid", strict=True, validate_default=False)



def point_pairs(points: Any) -> List[Tuple[float, float]]:
    """A config's polygon or segment points -> [(x, y), ...] of finite floats; a field error
    (one line) for anything else."""
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise field_error(f"expected a list of [x, y] pairs, got {points!r}") from None
    if p.ndim != 2 or p.shape[1] != 2:
        raise field_error(f"expected a list of [x, y] pairs, got {points!r}")
    if not np.all(np.isfinite(p)):
        raise field_error("coordinates must be finite numbers")
    return [(float(x), float(y)) for x, y in p]

class EventConfigError(ValueError):
    """An invalid zone, line, MQTT or webhook setting; the message is one line (CLI exit 2)."""

    exit_code = 2


def validate_as(cls, data: Any, where: str):
    """``data`` validated as model ``cls`` (an instance is returned as it is); errors are one
    `EventConfigError` line naming the key below ``where``."""
    if isinstance(data, cls):
        return data
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise EventConfigError(validation_line(e, cls, where)) from None


Anchor = Literal[tuple(ANCHORS)]  # type: ignore[valid-type]
ClassList = Annotated[Optional[List[Union[int, str]]],
                      Field(description="only tracks of these class ids or names (default: every class)")]


def class_list(classes: Any) -> Optional[list]:
    """A ``classes`` value: one id or name, or a non-empty list of them -> list (None: all)."""
    if classes is None:
        return None
    if isinstance(classes, (str, int)) and not isinstance(classes, bool):
        classes = [classes]
    if not isinstance(classes, (list, tuple)) or not classes or not all(
            isinstance(c, (int, str)) and not isinstance(c, bool) for c in classes):
        raise field_error(f"expected a list of class ids or names, got {classes!r}")
    return list(classes)


class _Shape(BaseModel):
    model_config = STRICT

    name: str = Field(description="unique per camera among its zones and lines; part of MQTT topics "
                                  "(letters, digits, '_', '.', '-')")
    points: List[Tuple[float, float]] = Field(description="[x, y] pairs: pixels, or fractions 0..1 of the frame")
    units: Literal["auto", "px", "fraction"] = Field(
        "auto", description="auto: fractions when every coordinate is within [0, 1], else pixels")
    classes: ClassList = None
    anchor: Anchor = Field("bottom_center", description="the point of a track's box that counts")
    confirm_frames: int = Field(3, ge=1, le=1000, description="updates on the new side before an event")
    camera: Optional[str] = Field(None, description="top-level zones and lines: the camera they belong to")
    _where: str = PrivateAttr("")

    kind: ClassVar[str] = "shape"

    @property
    def where(self) -> str:
        """The key path of this shape in the config (``cameras[0].zones[1]``), for messages."""
        return self._where or f"{self.kind} {self.name!r}"

    def at(self, where: str):
        """This shape, its key path set to ``where`` (messages about it name that key)."""
        self._where = where
        return self

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, name: Any) -> str:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise field_error(f"{name!r} is not a valid name (letters, digits, '_', '.', '-')")
        return name

    @field_validator("points", mode="before")
    @classmethod
    def _points(cls, points: Any) -> list:
        return point_pairs(points)

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, classes: Any) -> Optional[list]:
        return class_list(classes)

    def _check_units(self) -> np.ndarray:
        p = np.asarray(self.points, dtype=np.float64)
        inside = bool(np.all((p >= 0.0) & (p <= 1.0)))
        if self.units == "auto":
            self.units = "fraction" if inside else "px"
        elif self.units == "fraction" and not inside:
            raise field_error("units are fractions but a coordinate is outside [0, 1]", "points")
        return p

    def resolve(self, width: int, height: int) -> np.ndarray:
        """Points in pixels of a ``width`` x ``height`` frame: (V,2) float64."""
        p = np.asarray(self.points, dtype=np.float64)
        return p * np.array([width, height], np.float64) if self.units == "fraction" else p.copy()

    def in_pixels(self, width: int, height: int):
        """A copy with its points in pixels of a ``width`` x ``height`` frame (``units: px``)."""
        out = self.model_copy(update={"points": [tuple(v) for v in self.resolve(width, height).tolist()],
                                      "units": "px"})
        return out.at(self._where)

    @classmethod
    def from_dict(cls, data: Any, where: str = ""):
        """One shape from a YAML mapping; `EventConfigError` naming ``where`` (default its kind)."""
        return validate_as(cls, data, where or cls.kind).at(where)


class Zone(_Shape):
    """A polygon; ``zone_enter``/``zone_exit`` when a track's anchor goes in or out of it."""

    kind: ClassVar[str] = "zone"

    @model_validator(mode="after")
    def _polygon(self) -> "Zone":
        p = self._check_units()
        if len(p) < 3:
            raise field_error(f"a zone needs at least 3 points, got {len(p)}", "points")
        ij = self_intersection(p)
        if ij is not None:
            raise field_error(f"the polygon crosses itself (edges {ij[0]} and {ij[1]})", "points")
        if abs(polygon_area(p)) <= 1e-12:
            raise field_error("the polygon has no area (its points are on one line)", "points")
        return self


class Line(_Shape):
    """A segment A->B; ``line_cross`` when a track's anchor crosses it.

    Directions: walking from A to B on the image, ``directions[0]`` (default "in") is a crossing
    from the right-hand side to the left-hand side, ``directions[1]`` ("out") the other way.
    For A left of B on a horizontal line, "in" is moving up the screen. ``count_once``: a
    track is counted at most once on this line (the first crossing, either direction)."""

    directions: List[str] = Field(["in", "out"], description="names of the two crossing directions: right-to-left "
                                                             "and left-to-right, walking from A to B")
    count_once: bool = Field(False, description="count a track at most once on this line")

    kind: ClassVar[str] = "line"

    @field_validator("directions", mode="before")
    @classmethod
    def _directions(cls, d: Any) -> list:
        if (not isinstance(d, (list, tuple)) or len(d) != 2 or not all(isinstance(s, str) and NAME_RE.fullmatch(s)
                                                                      for s in d) or d[0] == d[1]):
            raise field_error(f"expected two different names, got {d!r}")
        return list(d)

    @model_validator(mode="after")
    def _segment(self) -> "Line":
        p = self._check_units()
        if len(p) != 2:
            raise field_error(f"a line needs exactly 2 points, got {len(p)}", "points")
        if np.allclose(p[0], p[1]):
            raise field_error("the two points of the line are the same", "points")
        return self


def parse_shapes(zones: Any = None, lines: Any = None, where: str = "") -> Tuple[List[Zone], List[Line]]:
    """Lists of zone and line mappings (or `Zone`/`Line` objects, kept as they are) -> validated
    objects; names unique per camera. ``where``: the key path of the lists' parent."""
    pre = f"{where}." if where else ""
    out_z, out_l = [], []
    for key, cls, out, items in (("zones", Zone, out_z, zones), ("lines", Line, out_l, lines)):
        if items is None:
            continue
        if not isinstance(items, (list, tuple)):
            raise EventConfigError(f"{pre}{key}: expected a list, got {items!r}")
        out.extend(d if isinstance(d, cls) else cls.from_dict(d, f"{pre}{key}[{i}]") for i, d in enumerate(items))
    check_unique([*out_z, *out_l], where or "zones and lines")
    return out_z, out_l


def shape_problem(shapes: Iterable[_Shape]) -> Optional[str]:
    """Zone and line names share one namespace per camera (they share the MQTT topic level):
    None, or what is wrong."""
    seen = set()
    for s in shapes:
        key = (s.camera, s.name)
        if key in seen:
            cam = f" of camera {s.camera!r}" if s.camera else ""
            return f"two zones or lines{cam} are named {s.name!r}"
        seen.add(key)
    return None


def check_unique(shapes: Iterable[_Shape], where: str) -> None:
    """`shape_problem` as an `EventConfigError` naming ``where``."""
    problem = shape_problem(shapes)
    if problem:
        raise EventConfigError(f"{where}: {problem}")


def camera_problem(shapes: Iterable[_Shape], cameras: Sequence[str]) -> Optional[Tuple[str, str]]:
    """(key path, what is wrong) for a duplicate camera name or a ``camera:`` naming none of
    ``cameras``; None when all is well."""
    cams = list(cameras)
    dup = sorted({c for c in cams if cams.count(c) > 1})
    if dup:
        return "cameras", f"two cameras are named {dup[0]!r}"
    for s in shapes:
        if s.camera is not None and s.camera not in cams:
            return f"{s.where}.camera", f"unknown camera {s.camera!r} (cameras: {', '.join(map(str, cams)) or 'none'})"
    return None


def check_cameras(shapes: Iterable[_Shape], cameras: Sequence[str]) -> None:
    """Every ``camera:`` a zone or line names exists; camera names are unique."""
    problem = camera_problem(shapes, cameras)
    if problem:
        raise EventConfigError(f"{problem[0]}: {problem[1]}")


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


def _redacting(info) -> bool:
    """Serializing for people (``--print-config``): secrets replaced by ``***``."""
    return bool((info.context or {}).get("redact"))


def expand_env(value: str) -> str:
    """``${VAR}`` -> the environment's VAR (unset: empty string; `WebhookConfig` refuses an
    unset one when it is made); nothing else is expanded."""
    return ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), value)


def _outbox(value: Any) -> OutboxConfig:
    """An ``outbox:`` value (`OutboxConfig.parse`: true, false, a folder or a mapping)."""
    try:
        return OutboxConfig.parse(value, "outbox")
    except ValueError as e:   # "outbox[.key]: problem" -> the problem at that key below this one
        head, _, problem = str(e).partition(": ")
        raise field_error(problem, head[len("outbox"):].lstrip(".")) from None


OUTBOX_SCHEMA = {"description": "undelivered events kept on disk until the target takes them: true, false, a "
                                "folder, or {dir, max_events, max_mb}",
                 "anyOf": [{"type": "boolean"}, {"type": "string"},
                           {"type": "object", "additionalProperties": False,
                            "properties": {"enabled": {"type": "boolean"}, "dir": {"type": "string"},
                                           "max_events": {"type": "integer", "minimum": 1, "maximum": 100_000_000},
                                           "max_mb": {"type": "number", "exclusiveMinimum": 0,
                                                      "maximum": 1_000_000}}}]}
Outbox = Annotated[OutboxConfig, WithJsonSchema(OUTBOX_SCHEMA)]


def _outbox_data(value: OutboxConfig) -> Any:
    import dataclasses
    d = dataclasses.asdict(value)
    return d if d["enabled"] else False


Seconds = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]


class _Delivery(BaseModel):
    """What every delivery target's config shares: its ``outbox`` (`OutboxConfig.parse`) and its
    ``url``, redacted when the config is shown to people."""

    @field_validator("outbox", mode="before", check_fields=False)
    @classmethod
    def _outbox(cls, value: Any) -> OutboxConfig:
        return _outbox(value)

    @field_serializer("outbox", check_fields=False)
    def _outbox_out(self, value: OutboxConfig) -> Any:
        return _outbox_data(value)

    @field_serializer("url", check_fields=False)
    def _url_out(self, url: str, info) -> str:
        return redact_url(url) if _redacting(info) else url


class MqttConfig(_Delivery):
    """``mqtt://[user:pass@]host[:port]`` or ``mqtts://...``; credentials from the URL, these
    fields or TRACKPIPE_MQTT_USERNAME / TRACKPIPE_MQTT_PASSWORD (in that order). Never logged.
    In the config ``mqtt:`` is this mapping or just the URL."""

    model_config = ConfigDict(**STRICT, arbitrary_types_allowed=True)

    url: str = Field(repr=False, description="mqtt://[user:pass@]HOST[:PORT] or mqtts://...")
    username: Optional[str] = Field(None, repr=False, description="default: the URL's, $TRACKPIPE_MQTT_USERNAME")
    password: Optional[str] = Field(None, repr=False, description="default: the URL's, $TRACKPIPE_MQTT_PASSWORD")
    topic_prefix: str = Field("trackpipe", description="topics: PREFIX/CAMERA/EVENT[/ZONE]")
    client_id: Optional[str] = None
    qos: Literal[0, 1] = 1
    keepalive_s: int = Field(30, ge=1, le=3600)
    queue_size: int = Field(1000, ge=1, le=1_000_000, description="events held in memory at most")
    snapshots: bool = Field(False, description="publish the snapshot JPEGs too")
    reconnect_min_s: Seconds = 0.5
    reconnect_max_s: Seconds = 30.0
    tls_ca: Optional[str] = Field(None, description="CA file of an mqtts:// broker")
    tls_insecure: bool = False
    outbox: Outbox = Field(default_factory=OutboxConfig)
    _host: str = PrivateAttr("")
    _port: int = PrivateAttr(0)
    _tls: bool = PrivateAttr(False)

    @field_serializer("password")
    def _password_out(self, password: Optional[str], info) -> Optional[str]:
        return "***" if password and _redacting(info) else password

    @model_validator(mode="after")
    def _resolve(self) -> "MqttConfig":
        try:
            u = urlsplit(self.url)
            port = u.port
        except ValueError:
            u, port = None, None
        if u is None or u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise field_error(f"expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {redact_url(self.url)!r}",
                              "url")
        self._host, self._tls = u.hostname, u.scheme == "mqtts"
        self._port = port or (8883 if self._tls else 1883)
        env = os.environ
        self.username = self.username or (u.username and _unquote(u.username)) or env.get("TRACKPIPE_MQTT_USERNAME")
        self.password = self.password or (u.password and _unquote(u.password)) or env.get("TRACKPIPE_MQTT_PASSWORD")
        if not self.topic_prefix or any(c in self.topic_prefix for c in "+#"):
            raise field_error(f"{self.topic_prefix!r} is not a valid topic prefix", "topic_prefix")
        self.topic_prefix = self.topic_prefix.strip("/")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise field_error("need 0 < min <= max <= 3600", "reconnect_min_s/reconnect_max_s")
        return self

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def tls(self) -> bool:
        return self._tls

    @property
    def safe_url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"MqttConfig({self.safe_url}, topic_prefix={self.topic_prefix!r}, qos={self.qos})"

    __str__ = __repr__

    @classmethod
    def from_dict(cls, data: Any, where: str = "mqtt") -> "MqttConfig":
        """A URL or a mapping (or an instance, returned as it is); `EventConfigError` naming ``where``."""
        return validate_as(cls, {"url": data} if isinstance(data, str) else data, where)


def _unquote(s: str) -> str:
    from urllib.parse import unquote
    return unquote(s)


class WebhookConfig(_Delivery):
    """HTTP POST of each event's JSON to ``url``; header values may use ``${ENV_VAR}``.

    ``events``: only these event types (default: all). Retries 5xx, 408, 429 and connection
    errors with capped exponential backoff; other 4xx are counted as rejected, not retried.
    In the config an entry of ``webhooks:`` is this mapping or just the URL."""

    model_config = ConfigDict(**STRICT, arbitrary_types_allowed=True)

    url: str = Field(repr=False, description="http(s)://HOST[:PORT]/PATH (user:password@ for Basic auth)")
    headers: Dict[str, str] = Field(default_factory=dict, repr=False,
                                    description="extra request headers; values may use ${ENV_VAR}")
    timeout_s: float = Field(5.0, gt=0, le=600, allow_inf_nan=False)
    queue_size: int = Field(1000, ge=1, description="events held in memory at most")
    events: Optional[List[str]] = Field(None, description="only these event types (default: all)")
    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 30.0
    outbox: Outbox = Field(default_factory=OutboxConfig)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        try:
            u = urlsplit(url)
        except ValueError:
            u = None
        if u is None or u.scheme not in ("http", "https") or not u.hostname:
            raise field_error(f"expected http(s)://HOST[:PORT]/PATH, got {redact_url(url)!r}")
        return url

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: Dict[str, str]) -> Dict[str, str]:
        for k, v in headers.items():
            unset = [m.group(1) for m in ENV_REF.finditer(v) if m.group(1) not in os.environ]
            if unset:
                raise field_error(f"environment variable {unset[0]} is not set (the value uses ${{{unset[0]}}})", k)
        return headers

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, events: Any) -> Any:
        return [events] if isinstance(events, str) else list(events) if isinstance(events, tuple) else events

    @field_serializer("headers")
    def _headers_out(self, headers: Dict[str, str], info) -> Dict[str, str]:
        """Redacted: a value without a ``${VAR}`` (its secret in the file itself) is ``***``."""
        return {k: v if not _redacting(info) or ENV_REF.search(v) else "***" for k, v in headers.items()}

    @model_validator(mode="after")
    def _backoff(self) -> "WebhookConfig":
        if self.backoff_initial_s > self.backoff_max_s:
            raise field_error("need 0 < initial <= max <= 3600", "backoff_initial_s/backoff_max_s")
        return self

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"WebhookConfig({self.safe_url}, timeout_s={self.timeout_s}, events={self.events})"

    __str__ = __repr__

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
        """A URL or a mapping (or an instance, returned as it is); `EventConfigError` naming ``where``."""
        return validate_as(cls, {"url": data} if isinstance(data, str) else data, where)
