"""Per-camera zone and line logic: tracks in, ``zone_enter``/``zone_exit``/``line_cross`` out.

    counter = ZoneLineCounter("road", zones, lines, names=coco_names)
    for each frame:  events = counter.update(tracks, t, seq=seq, frame_size=(w, h))
    when the sink ends a track:  events += counter.track_ended(track_id)
    at the end of the stream:    events += counter.end_all()
    counter.counts()  # per zone / line / class, for the profile and the metrics

Hysteresis: a change (inside <-> outside a zone, one side of a line -> the other) counts only
once the anchor has stayed on the new side for ``confirm_frames`` consecutive updates in which
the track is present; a track jittering on a boundary changes nothing. A line crossing also
needs the anchor's path from its last position on the old side to its first position on the
new side to meet the segment (not the infinite line through it).

State is one row per live track in fixed-width numpy arrays (rows x zones, rows x lines), so
one update costs a few vectorised operations over N tracks x M zones/lines; a track unseen for
``end_after_frames`` updates is ended (zone exits with reason ``track_ended``) and its row reused.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from trackpipe.models.types import Tracks

from .config import EventConfigError, Line, Zone, check_unique
from .geometry import anchor_points, cross, points_in_polygon, segments_intersect
from .schema import Event, LineCross, ZoneEnter, ZoneExit

log = logging.getLogger(__name__)


def _class_set(shape, names: Optional[Sequence[str]]) -> Optional[frozenset]:
    if shape.classes is None:
        return None
    out = set()
    for c in shape.classes:
        if isinstance(c, int):
            out.add(c)
        elif names is not None and c in names:
            out.add(list(names).index(c))
        else:
            allowed = "class ids (no class names are loaded)" if names is None else "names of the model's classes"
            raise EventConfigError(f"{shape.where}.classes: unknown class {c!r} (use {allowed})")
    return frozenset(out)


class ZoneLineCounter:
    """Zones and lines of one camera.

    camera:           the camera's name (in every event)
    zones, lines:     validated :class:`Zone` / :class:`Line` objects
    names:            class names indexed by class id (events then carry ``class``)
    frame_size:       (width, height) to resolve fractions; else pass it to ``update``
    end_after_frames: a track absent this many updates is ended (as ``track_ended`` would)
    """

    def __init__(self, camera: str, zones: Sequence[Zone] = (), lines: Sequence[Line] = (),
                 names: Optional[Sequence[str]] = None, frame_size: Optional[Tuple[int, int]] = None,
                 end_after_frames: int = 30):
        self.camera = str(camera)
        self.zones = list(zones)
        self.lines = list(lines)
        check_unique([*self.zones, *self.lines], f"camera {self.camera!r}")
        self.names = list(names) if names is not None else None
        self.end_after_frames = int(end_after_frames)
        self._zone_classes = [_class_set(z, self.names) for z in self.zones]
        self._line_classes = [_class_set(ln, self.names) for ln in self.lines]
        self._kz = np.array([z.confirm_frames for z in self.zones], np.int32)
        self._kl = np.array([ln.confirm_frames for ln in self.lines], np.int32)
        self._anchor_names = sorted({s.anchor for s in (*self.zones, *self.lines)})
        self._frame_size: Optional[Tuple[int, int]] = None
        self.polygons: List[np.ndarray] = []     # (V,2) pixels per zone
        self.segments = np.zeros((len(self.lines), 2, 2))   # (L, [A, B], xy) pixels
        if frame_size is not None:
            self.set_frame_size(*frame_size)
        # counts: per zone/line, class label -> counts
        self._zone_counts: List[Dict[str, Dict[str, int]]] = [{} for _ in self.zones]
        self._line_counts: List[Dict[str, Dict[str, int]]] = [{} for _ in self.lines]
        self.frames = 0
        # per-track rows
        self._row_of: Dict[int, int] = {}
        self._alloc(64)
        self._free: List[int] = list(range(63, -1, -1))   # pop() gives the lowest row

    # --- geometry ---------------------------------------------------------------------------

    def set_frame_size(self, width: int, height: int) -> None:
        """Resolve fractions for a ``width`` x ``height`` frame (again if the size changes)."""
        size = (int(width), int(height))
        if size == self._frame_size:
            return
        self._frame_size = size
        self.polygons = [z.resolve(*size) for z in self.zones]
        self.segments = np.stack([ln.resolve(*size) for ln in self.lines]) if self.lines else np.zeros((0, 2, 2))

    # --- row storage ------------------------------------------------------------------------

    def _alloc(self, n: int) -> None:
        z, ln = len(self.zones), len(self.lines)
        self._cap = n
        self._tid = np.full(n, -1, np.int64)
        self._last_frame = np.zeros(n, np.int64)
        self._last_t = np.zeros(n, np.float64)
        self._votes = np.zeros((n, 1), np.int32)
        self._side = np.zeros((n, ln), np.int8)          # confirmed side: -1 left, +1 right, 0 unknown
        self._cand_n = np.zeros((n, ln), np.int32)       # consecutive updates on the other side
        self._cand_t = np.zeros((n, ln), np.float64)
        self._cand_via = np.zeros((n, ln), bool)         # did the path to the other side meet the segment
        self._conf_pos = np.zeros((n, ln, 2), np.float64)  # last anchor position on the confirmed side
        self._counted = np.zeros((n, ln), bool)
        self._inside = np.zeros((n, z), bool)
        self._zn = np.zeros((n, z), np.int32)
        self._zt = np.zeros((n, z), np.float64)
        self._enter_t = np.zeros((n, z), np.float64)
        self._enter_cls = np.full((n, z), -1, np.int32)  # class counted at enter (-1: not counted)

    _ROW_ARRAYS = ("_tid", "_last_frame", "_last_t", "_votes", "_side", "_cand_n", "_cand_t", "_cand_via",
                   "_conf_pos", "_counted", "_inside", "_zn", "_zt", "_enter_t", "_enter_cls")

    def _grow(self) -> None:
        old = {k: getattr(self, k) for k in self._ROW_ARRAYS}
        n = self._cap
        votes_w = old["_votes"].shape[1]
        self._alloc(n * 2)
        if votes_w > 1:
            self._votes = np.zeros((n * 2, votes_w), np.int32)
        for k, v in old.items():
            getattr(self, k)[:n] = v
        self._free.extend(range(2 * n - 1, n - 1, -1))

    def _reset_row(self, r: int) -> None:
        self._tid[r] = -1
        self._votes[r] = 0
        self._side[r] = 0
        self._cand_n[r] = 0
        self._cand_via[r] = False
        self._counted[r] = False
        self._inside[r] = False
        self._zn[r] = 0
        self._enter_cls[r] = -1

    def _rows(self, track_ids: np.ndarray) -> np.ndarray:
        rows = np.empty(len(track_ids), np.int64)
        for i, tid in enumerate(track_ids.tolist()):
            r = self._row_of.get(tid)
            if r is None:
                if not self._free:
                    self._grow()
                r = self._free.pop()
                self._reset_row(r)
                self._tid[r] = tid
                self._row_of[tid] = r
            rows[i] = r
        return rows

    # --- classes and counts -----------------------------------------------------------------

    def _label(self, cid: int) -> Tuple[str, Optional[str]]:
        name = self.names[cid] if self.names is not None and 0 <= cid < len(self.names) else None
        return (name if name is not None else str(cid)), name

    def _vote(self, rows: np.ndarray, class_id: np.ndarray) -> None:
        if len(class_id) and int(class_id.max()) >= self._votes.shape[1]:
            w = int(class_id.max()) + 1
            v = np.zeros((self._cap, w), np.int32)
            v[:, :self._votes.shape[1]] = self._votes
            self._votes = v
        np.add.at(self._votes, (rows, np.maximum(class_id, 0)), 1)

    def _line_count(self, li: int, label: str) -> Dict[str, int]:
        d0, d1 = self.lines[li].directions
        return self._line_counts[li].setdefault(label, {d0: 0, d1: 0})

    def _zone_count(self, zi: int, label: str) -> Dict[str, int]:
        return self._zone_counts[zi].setdefault(label, {"entered": 0, "occupancy": 0})

    def counts(self) -> dict:
        """``{"camera", "zones": {zone: {class: {"entered", "occupancy"}}},
        "lines": {line: {class: {dir0: n, dir1: n}}}}`` (a copy)."""
        return {"camera": self.camera,
                "zones": {z.name: {c: dict(v) for c, v in self._zone_counts[i].items()}
                          for i, z in enumerate(self.zones)},
                "lines": {ln.name: {c: dict(v) for c, v in self._line_counts[i].items()}
                          for i, ln in enumerate(self.lines)}}

    # --- the update -------------------------------------------------------------------------

    def update(self, tracks: Optional[Tracks], t: float, seq: int = -1,
               frame_size: Optional[Tuple[int, int]] = None) -> List[Event]:
        """One frame's tracks (xyxy pixels) at media time ``t`` (seconds) -> events, in order.

        Call it every frame, also with no tracks; ``frame_size`` (width, height) is needed
        once (or in the constructor) when a zone or line is given in fractions."""
        if frame_size is not None:
            self.set_frame_size(*frame_size)
        elif self._frame_size is None:
            if any(s.units == "fraction" for s in (*self.zones, *self.lines)):
                raise ValueError("ZoneLineCounter.update: frame_size is needed to resolve fractions")
            self.set_frame_size(0, 0)
        self.frames += 1
        t = float(t)
        events: List[Event] = []
        n = 0 if tracks is None else len(tracks)
        if n:
            rows = self._rows(tracks.track_id)
            self._last_frame[rows] = self.frames
            self._last_t[rows] = t
            self._vote(rows, tracks.class_id)
            cls = np.argmax(self._votes[rows], axis=1)
            anchors = {a: anchor_points(tracks.xyxy, a) for a in self._anchor_names}
            if self.lines:
                events += self._update_lines(rows, cls, anchors, t, seq)
            if self.zones:
                events += self._update_zones(rows, cls, anchors, t, seq)
        # tracks absent too long end here (zone exits at their last seen time)
        stale = np.nonzero((self._tid >= 0) & (self.frames - self._last_frame >= self.end_after_frames))[0]
        for tid in self._tid[stale].tolist():
            events += self.track_ended(tid, seq=seq)
        events.sort(key=lambda e: e.t)
        return events

    def _update_lines(self, rows, cls, anchors, t, seq) -> List[Event]:
        p = np.stack([anchors[ln.anchor] for ln in self.lines], axis=1)      # (N,L,2)
        a, b = self.segments[:, 0][None], self.segments[:, 1][None]          # (1,L,2)
        s = np.sign(cross(a, b, p)).astype(np.int8)                          # (N,L)
        conf = self._side[rows]
        cand_n = self._cand_n[rows]
        conf_pos = self._conf_pos[rows]
        born = (conf == 0) & (s != 0)
        conf = np.where(born, s, conf)
        same = (s == conf) & (s != 0)
        conf_pos = np.where(same[..., None], p, conf_pos)
        other = (s != 0) & (s == -conf)
        start = other & (cand_n == 0)
        if np.any(start):
            via = segments_intersect(conf_pos, p, a, b)
            self._cand_via[rows] = np.where(start, via, self._cand_via[rows])
            self._cand_t[rows] = np.where(start, t, self._cand_t[rows])
        cand_n = np.where(other, cand_n + 1, 0)
        confirm = other & (cand_n >= self._kl[None, :])
        conf = np.where(confirm, s, conf)
        conf_pos = np.where(confirm[..., None], p, conf_pos)
        cand_n = np.where(confirm, 0, cand_n)
        self._side[rows] = conf
        self._cand_n[rows] = cand_n
        self._conf_pos[rows] = conf_pos
        events = []
        for i, li in zip(*np.nonzero(confirm), strict=True):
            r = rows[i]
            line = self.lines[li]
            if not self._cand_via[r, li] or (line.count_once and self._counted[r, li]):
                continue
            cid = int(cls[i])
            allowed = self._line_classes[li]
            if allowed is not None and cid not in allowed:
                continue
            self._counted[r, li] = True
            direction = line.directions[0] if s[i, li] < 0 else line.directions[1]
            label, name = self._label(cid)
            c = self._line_count(li, label)
            c[direction] += 1
            events.append(LineCross(self.camera, float(self._cand_t[r, li]), seq, int(self._tid[r]), cid, name,
                                    dict(c), line=line.name, direction=direction))
        return events

    def _update_zones(self, rows, cls, anchors, t, seq) -> List[Event]:
        obs = np.stack([points_in_polygon(anchors[z.anchor], poly)
                        for z, poly in zip(self.zones, self.polygons, strict=True)], axis=1)   # (N,Z)
        conf = self._inside[rows]
        diff = obs != conf
        zn = np.where(diff, self._zn[rows] + 1, 0)
        self._zt[rows] = np.where(diff & (zn == 1), t, self._zt[rows])
        flip = diff & (zn >= self._kz[None, :])
        self._inside[rows] = np.where(flip, obs, conf)
        self._zn[rows] = np.where(flip, 0, zn)
        events = []
        for i, zi in zip(*np.nonzero(flip), strict=True):
            r = rows[i]
            t0 = float(self._zt[r, zi])
            if obs[i, zi]:
                cid = int(cls[i])
                allowed = self._zone_classes[zi]
                if allowed is not None and cid not in allowed:
                    continue
                self._enter_t[r, zi] = t0
                self._enter_cls[r, zi] = cid
                label, name = self._label(cid)
                c = self._zone_count(zi, label)
                c["entered"] += 1
                c["occupancy"] += 1
                events.append(ZoneEnter(self.camera, t0, seq, int(self._tid[r]), cid, name, dict(c),
                                        zone=self.zones[zi].name))
            else:
                ev = self._exit(r, zi, t0, seq, "left")
                if ev is not None:
                    events.append(ev)
        return events

    def _exit(self, r: int, zi: int, t: float, seq: int, reason: str) -> Optional[ZoneExit]:
        cid = int(self._enter_cls[r, zi])
        self._enter_cls[r, zi] = -1
        if cid < 0:
            return None
        label, name = self._label(cid)
        c = self._zone_count(zi, label)
        c["occupancy"] -= 1
        return ZoneExit(self.camera, t, seq, int(self._tid[r]), cid, name, dict(c), zone=self.zones[zi].name,
                        dwell_s=max(0.0, t - float(self._enter_t[r, zi])), reason=reason)

    # --- track ends -------------------------------------------------------------------------

    def track_ended(self, track_id: int, t: Optional[float] = None, seq: int = -1) -> List[Event]:
        """Forget a track; a zone it is inside gets a ``zone_exit`` (reason ``track_ended``) at
        ``t`` (default: the last time it was seen). Unknown ids are ignored."""
        r = self._row_of.pop(int(track_id), None)
        if r is None:
            return []
        te = float(self._last_t[r]) if t is None else float(t)
        events = []
        for zi in range(len(self.zones)):
            if self._inside[r, zi]:
                ev = self._exit(r, zi, te, seq, "track_ended")
                if ev is not None:
                    events.append(ev)
        self._reset_row(r)
        self._free.append(r)
        return events

    def end_all(self, seq: int = -1) -> List[Event]:
        """End every live track (end of stream, shutdown)."""
        events = []
        for tid in list(self._row_of):
            events += self.track_ended(tid, seq=seq)
        events.sort(key=lambda e: e.t)
        return events

    @property
    def live_tracks(self) -> int:
        return len(self._row_of)


def count_rows(counts: dict) -> List[Tuple[str, str, str, str, str, int]]:
    """A ``counts()`` snapshot as flat rows ``(camera, kind, name, class, key, value)`` with
    kind "zone" or "line" and key a direction, "entered" or "occupancy" (metrics labels)."""
    cam = counts.get("camera", "")
    rows = []
    for kind, group in (("zone", counts.get("zones", {})), ("line", counts.get("lines", {}))):
        for name, per_class in group.items():
            for cls, c in per_class.items():
                rows.extend((cam, kind, name, cls, k, int(v)) for k, v in c.items())
    return rows
