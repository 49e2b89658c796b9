"""The SQLite index of a record folder (standard library ``sqlite3``, WAL journal).

One process writes (the run's recorder: `RecordIndex(root, writer=True)`); the web server and the
export command read (`writer=False`) while it writes, which WAL allows without blocking either.
Paths are stored relative to the record folder.

    segments(path, camera, start, end, bytes, created)
    events(id, camera, label, class_id, track_id, zones, start, end, score, t_best, box, snapshot,
           boxes, width, height, state, created)

``state`` of an event: ``ok``, ``expired`` (retention deleted footage it needs), ``deleted`` (a
tombstone: the API answers 410 for it). ``boxes``: the track over time, JSON
``[[t, x1, y1, x2, y2, score], ...]`` (t absolute; xyxy in the pixels of the frames tracked; score 0
where the box was predicted).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .layout import index_path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    path TEXT PRIMARY KEY, camera TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL,
    bytes INTEGER NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS segments_camera_start ON segments(camera, start);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY, camera TEXT NOT NULL, label TEXT NOT NULL, class_id INTEGER, track_id INTEGER,
    zones TEXT NOT NULL DEFAULT '[]', start REAL NOT NULL, "end" REAL NOT NULL, score REAL,
    t_best REAL, box TEXT, snapshot TEXT, boxes TEXT NOT NULL DEFAULT '[]', width INTEGER, height INTEGER,
    state TEXT NOT NULL DEFAULT 'ok', created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_camera_start ON events(camera, start);
CREATE INDEX IF NOT EXISTS events_start ON events(start);
"""


@dataclass
class Segment:
    camera: str
    start: float         # epoch seconds of its first keyframe
    end: float           # epoch seconds after its last frame
    path: str            # relative to the record folder
    bytes: int
    created: float = field(default_factory=time.time)   # wall clock when it was closed


@dataclass
class EventRecord:
    id: str
    camera: str
    label: str
    start: float
    end: float
    class_id: int = -1
    track_id: int = -1
    zones: list[str] = field(default_factory=list)
    score: float = 0.0
    t_best: float | None = None
    box: list[float] | None = None                      # best box, xyxy pixels
    snapshot: str | None = None                         # relative path of its JPEG
    boxes: list[list[float]] = field(default_factory=list)  # [[t, x1, y1, x2, y2, score], ...]
    width: int = 0
    height: int = 0
    state: str = "ok"
    created: float = field(default_factory=time.time)

    def summary(self) -> dict:
        """The event without its boxes (lists)."""
        d = asdict(self)
        d.pop("boxes")
        return d


def _event(row: sqlite3.Row, with_boxes: bool = True) -> EventRecord:
    return EventRecord(id=row["id"], camera=row["camera"], label=row["label"], start=row["start"], end=row["end"],
                       class_id=row["class_id"], track_id=row["track_id"], zones=json.loads(row["zones"] or "[]"),
                       score=row["score"] or 0.0, t_best=row["t_best"],
                       box=json.loads(row["box"]) if row["box"] else None, snapshot=row["snapshot"],
                       boxes=json.loads(row["boxes"] or "[]") if with_boxes else [],
                       width=row["width"] or 0, height=row["height"] or 0, state=row["state"], created=row["created"])


def _segment(row: sqlite3.Row) -> Segment:
    return Segment(row["camera"], row["start"], row["end"], row["path"], row["bytes"], row["created"])


class RecordIndex:
    """The index of the record folder ``root``. Thread-safe (one connection behind a lock)."""

    def __init__(self, root: Path, writer: bool = False, timeout_s: float = 10.0):
        self.root = Path(root)
        self.path = index_path(self.root)
        self.writer = writer
        self._lock = threading.Lock()
        if not writer and not self.path.exists():
            raise FileNotFoundError(f"no recording index at {self.path}")
        self.db = sqlite3.connect(str(self.path), timeout=timeout_s, check_same_thread=False,
                                  isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        if writer:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")    # WAL: a crash keeps every committed row
            self.db.executescript(SCHEMA)
        else:
            self.db.execute("PRAGMA query_only=ON")

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _q(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.db.execute(sql, tuple(args)).fetchall()

    def _w(self, sql: str, args: Sequence = ()) -> int:
        assert self.writer, "this index was opened read-only"
        with self._lock:
            return self.db.execute(sql, tuple(args)).rowcount

    # --- segments ------------------------------------------------------------------------------

    def add_segment(self, seg: Segment) -> None:
        self._w('INSERT OR REPLACE INTO segments(path, camera, start, "end", bytes, created) VALUES (?,?,?,?,?,?)',
                (seg.path, seg.camera, seg.start, seg.end, seg.bytes, seg.created))

    def remove_segments(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        if not paths:
            return
        with self._lock:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM segments WHERE path = ?", [(p,) for p in paths])
            self.db.execute("COMMIT")

    def segments(self, camera: str | None = None, after: float | None = None,
                 before: float | None = None, limit: int = 0) -> list[Segment]:
        """Segments that overlap [after, before], oldest first."""
        sql, args = "SELECT * FROM segments WHERE 1", []
        if camera is not None:
            sql += " AND camera = ?"
            args.append(camera)
        if after is not None:
            sql += ' AND "end" > ?'
            args.append(after)
        if before is not None:
            sql += " AND start < ?"
            args.append(before)
        sql += " ORDER BY start" + (f" LIMIT {int(limit)}" if limit else "")
        return [_segment(r) for r in self._q(sql, args)]

    def oldest_segments(self, limit: int = 64) -> list[Segment]:
        return [_segment(r) for r in self._q("SELECT * FROM segments ORDER BY start LIMIT ?", (limit,))]

    def total_bytes(self) -> int:
        return int(self._q("SELECT COALESCE(SUM(bytes), 0) AS n FROM segments")[0]["n"])

    def cameras(self) -> list[str]:
        rows = self._q("SELECT camera FROM segments UNION SELECT camera FROM events ORDER BY camera")
        return [r["camera"] for r in rows]

    # --- events --------------------------------------------------------------------------------

    def add_event(self, ev: EventRecord) -> None:
        self._w('INSERT OR REPLACE INTO events(id, camera, label, class_id, track_id, zones, start, "end", score, '
                't_best, box, snapshot, boxes, width, height, state, created) '
                'VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)',
                (ev.id, ev.camera, ev.label, ev.class_id, ev.track_id, json.dumps(ev.zones), ev.start, ev.end,
                 ev.score, ev.t_best, json.dumps(ev.box) if ev.box is not None else None, ev.snapshot,
                 json.dumps(ev.boxes, separators=(",", ":")), ev.width, ev.height, ev.state, ev.created))

    def set_snapshot(self, event_id: str, snapshot: str | None) -> None:
        self._w("UPDATE events SET snapshot = ? WHERE id = ?", (snapshot, event_id))

    def set_best(self, event_id: str, t_best: float, box: list[float], score: float) -> None:
        self._w("UPDATE events SET t_best = ?, box = ?, score = ? WHERE id = ?",
                (t_best, json.dumps(box), score, event_id))

    def set_state(self, event_id: str, state: str) -> None:
        self._w("UPDATE events SET state = ? WHERE id = ?", (state, event_id))

    def expire_events(self, camera: str, start: float, end: float) -> int:
        """Events of ``camera`` whose clip needs footage in [start, end): state ``expired``."""
        return self._w("UPDATE events SET state = 'expired' WHERE camera = ? AND state = 'ok' AND start < ? "
                       'AND "end" >= ?', (camera, end, start))

    def remove_events(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            with self._lock:
                self.db.execute("BEGIN")
                self.db.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in ids])
                self.db.execute("COMMIT")

    def event(self, event_id: str) -> EventRecord | None:
        rows = self._q("SELECT * FROM events WHERE id = ?", (event_id,))
        return _event(rows[0]) if rows else None

    def events(self, camera: str | None = None, label: str | None = None, zone: str | None = None,
               after: float | None = None, before: float | None = None, limit: int = 100,
               states: Sequence[str] = ("ok", "expired"), with_boxes: bool = False) -> list[EventRecord]:
        """Events overlapping [after, before] matching the filters, newest first."""
        sql, args = f"SELECT * FROM events WHERE state IN ({','.join('?' * len(states))})", list(states)
        for col, v in (("camera", camera), ("label", label)):
            if v is not None:
                sql += f" AND {col} = ?"
                args.append(v)
        if zone is not None:
            sql += " AND EXISTS (SELECT 1 FROM json_each(events.zones) WHERE json_each.value = ?)"
            args.append(zone)
        if after is not None:
            sql += ' AND "end" >= ?'
            args.append(after)
        if before is not None:
            sql += " AND start <= ?"
            args.append(before)
        sql += " ORDER BY start DESC LIMIT ?"
        args.append(int(limit))
        return [_event(r, with_boxes) for r in self._q(sql, args)]

    def events_before(self, t: float) -> list[EventRecord]:
        """Events that ended before ``t`` (retention by age)."""
        return [_event(r, False) for r in self._q('SELECT * FROM events WHERE "end" < ?', (t,))]

    def event_spans(self, camera: str, after: float) -> list[tuple]:
        """(start, end) of the live (not deleted) events of ``camera`` that end after ``after``."""
        rows = self._q("SELECT start, \"end\" FROM events WHERE camera = ? AND state != 'deleted' AND \"end\" >= ?",
                       (camera, after))
        return [(r["start"], r["end"]) for r in rows]
