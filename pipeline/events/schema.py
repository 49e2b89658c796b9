"""Zone and line events as small typed records with one JSON shape.

Every event serialises to one flat JSON object (the same style as the JSON-lines file's
``track_started``/``track_ended``)::

    {"event": "line_cross", "id": "5f0c...", "camera": "road", "t": 12.345, "seq": 370,
     "track_id": 17, "class_id": 2, "class": "car",
     "line": "road_a", "direction": "in", "counts": {"in": 5, "out": 3}}
    {"event": "zone_enter", ..., "zone": "gate", "counts": {"entered": 7, "occupancy": 2}}
    {"event": "zone_exit",  ..., "zone": "gate", "dwell_s": 4.2, "reason": "left",
     "counts": {"entered": 7, "occupancy": 1}}

``t`` is the media time the caller gave for the frame where the change happened (the
first frame of the ``confirm_frames`` run, so the event is emitted that many frames later);
``counts`` are that zone's or line's counts for the event's class after the event.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import ClassVar, Dict, Optional, Tuple


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Event:
    camera: str
    t: float
    seq: int
    track_id: int
    class_id: int
    class_name: Optional[str]
    counts: Dict[str, int]
    id: str = field(default_factory=_new_id)

    event: ClassVar[str] = "event"
    target_key: ClassVar[str] = ""      # "zone" or "line"

    @property
    def target(self) -> str:
        """The zone's or line's name."""
        return getattr(self, self.target_key)

    @property
    def class_label(self) -> str:
        """The class name, else its id as text (used as an MQTT topic level)."""
        return self.class_name if self.class_name else str(self.class_id)

    def _extra(self) -> dict:
        return {}

    def to_dict(self) -> dict:
        d = {"event": self.event, "id": self.id, "camera": self.camera, "t": round(float(self.t), 6),
             "seq": int(self.seq), "track_id": int(self.track_id), "class_id": int(self.class_id)}
        if self.class_name is not None:
            d["class"] = self.class_name
        d[self.target_key] = self.target
        d.update(self._extra())
        d["counts"] = dict(self.counts)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


@dataclass
class ZoneEnter(Event):
    zone: str = ""

    event: ClassVar[str] = "zone_enter"
    target_key: ClassVar[str] = "zone"


@dataclass
class ZoneExit(Event):
    zone: str = ""
    dwell_s: float = 0.0
    reason: str = "left"          # "left": the anchor went out; "track_ended": the track ended inside

    event: ClassVar[str] = "zone_exit"
    target_key: ClassVar[str] = "zone"

    def _extra(self) -> dict:
        return {"dwell_s": round(float(self.dwell_s), 3), "reason": self.reason}


@dataclass
class LineCross(Event):
    line: str = ""
    direction: str = ""

    event: ClassVar[str] = "line_cross"
    target_key: ClassVar[str] = "line"

    def _extra(self) -> dict:
        return {"direction": self.direction}


def event_dict(event) -> dict:
    """An Event, anything with ``to_dict()``, or a plain dict -> dict."""
    if isinstance(event, dict):
        return event
    return event.to_dict()


def track_ended(camera: str, track_id: int, t: float, seq: int, first_seq: int, last_seq: int, t_first: float,
                t_last: float, reason: str, class_fields: Optional[dict] = None,
                frames: Optional[Tuple[int, int]] = None) -> dict:
    """The one ``track_ended`` record: ``t``/``seq`` where it ended, ``first_seq``/``last_seq`` and
    ``duration_s`` (``t_last - t_first``) of its observed frames, ``reason`` (lost, end_of_stream,
    stopped), ``frames`` (observed, predicted) when known, then ``class_id``/``class``."""
    ev = {"event": "track_ended", "t": round(float(t), 6), "seq": int(seq), "camera": camera,
          "track_id": int(track_id), "first_seq": int(first_seq), "last_seq": int(last_seq),
          "duration_s": round(max(0.0, float(t_last) - float(t_first)), 3), "reason": reason}
    if frames is not None:
        ev["frames_observed"], ev["frames_predicted"] = int(frames[0]), int(frames[1])
    ev.update(class_fields or {})
    return ev
