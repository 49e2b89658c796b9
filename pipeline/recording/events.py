"""Tracks per frame -> one review event per tracked object, with its boxes over time.

`EventBuilder` (one per camera) is fed every tracked frame (``observe``) and the frame's events
(``on_event``: ``track_started``, ``zone_enter``, ``track_ended``); a ``track_ended`` of a class
asked for gives an `EventRecord`: label, zones entered, start and end (first and last sighting),
best score with its time and box, and the boxes (at most ``max_boxes`` per track: a longer track
keeps every other row, then every fourth, ...). Predicted rows (a track briefly missed) are kept
with the track's boxes but never score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .index import EventRecord
from .layout import event_id


@dataclass
class _Open:
    track_id: int
    class_id: int
    label: str
    start: float
    end: float
    score: float = -1.0
    t_best: float | None = None
    box: list[float] | None = None
    zones: list[str] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    stride: int = 1
    seen: int = 0


class EventBuilder:
    """One camera's events. ``offset``: added to every time (files run lossless: their events are
    on media time; their recording on ``offset`` + media time). ``classes``: labels kept (None:
    all); ``frame_size``: (width, height) of the camera's frames."""

    def __init__(self, camera: str, run_tag: str, names: Sequence[str] = (), classes: Sequence | None = None,
                 offset: float = 0.0, max_boxes: int = 4000, min_frames: int = 1):
        self.camera, self.run_tag = camera, run_tag
        self.names = list(names)
        self.classes = None if classes is None else {str(c) for c in classes}
        self.offset = float(offset)
        self.max_boxes = max(16, int(max_boxes))
        self.min_frames = min_frames
        self.open: dict[int, _Open] = {}
        self.frame_size = (0, 0)

    def label(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)

    def wanted(self, label: str, class_id: int) -> bool:
        return self.classes is None or label in self.classes or str(class_id) in self.classes

    def observe(self, t: float, track_id: np.ndarray, xyxy: np.ndarray, score: np.ndarray, class_id: np.ndarray,
                predicted: np.ndarray | None = None, frame_size: tuple | None = None) -> None:
        """One tracked frame: track_id (N,), xyxy (N, 4) pixels, score (N,), class_id (N,), predicted (N,) bool."""
        t += self.offset
        if frame_size:
            self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        if not len(track_id):
            return
        ids, classes = np.asarray(track_id).tolist(), np.asarray(class_id).tolist()
        boxes = np.round(np.asarray(xyxy, np.float64).reshape(-1, 4), 1).tolist()
        scores = np.asarray(score, np.float64).tolist()
        preds = np.asarray(predicted, bool).tolist() if predicted is not None else [False] * len(ids)
        t3 = round(t, 3)
        for tid, cid, box, s, pred in zip(ids, classes, boxes, scores, preds):
            o = self.open.get(tid)
            if o is None:
                label = self.label(cid)
                if not self.wanted(label, cid):
                    continue
                o = self.open[tid] = _Open(tid, cid, label, t, t)
            o.seen += 1
            if not pred:
                o.end = t
                if s > o.score:
                    o.score, o.t_best, o.box = s, t, box
            if o.seen % o.stride == 0:
                o.boxes.append([t3, *box, 0.0 if pred else round(s, 4)])
                if len(o.boxes) > self.max_boxes:
                    o.boxes = o.boxes[::2]
                    o.stride *= 2

    def on_event(self, ev: dict) -> EventRecord | None:
        """A frame's event dict; -> the finished record on a ``track_ended`` of a wanted class."""
        kind = ev.get("event")
        tid = ev.get("track_id")
        if tid is None:
            return None
        o = self.open.get(int(tid))
        if o is None:
            return None
        if kind == "zone_enter" and ev.get("zone") and ev["zone"] not in o.zones:
            o.zones.append(str(ev["zone"]))
        elif kind == "track_ended":
            self.open.pop(int(tid), None)
            return self._record(o)
        return None

    def finish(self) -> list[EventRecord]:
        """Every open track as a record (the run ends)."""
        out = [self._record(o) for o in self.open.values()]
        self.open.clear()
        return [r for r in out if r is not None]

    def _record(self, o: _Open) -> EventRecord | None:
        if o.t_best is None or o.seen < self.min_frames:
            return None
        w, h = self.frame_size
        return EventRecord(id=event_id(self.camera, self.run_tag, o.track_id), camera=self.camera, label=o.label,
                           start=o.start, end=o.end, class_id=o.class_id, track_id=o.track_id, zones=list(o.zones),
                           score=round(o.score, 4), t_best=o.t_best, box=o.box, boxes=o.boxes, width=w, height=h)

    def spans(self) -> list[tuple]:
        """(start, None) of every open track (their footage must be kept)."""
        return [(o.start, None) for o in self.open.values()]

