"""Outputs: box annotator (over `pipeline.drawing`), annotated video file, live window, MOTChallenge
file, JSON-lines events.

All are plain classes usable without the pipeline (the sequential benchmark uses them
too). Each has ``close()``, which finalises its file and is safe to call twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

from trackpipe.models.types import Detections, Tracks, to_tlwh

from .outputs import RETRY_S, LineFile

log = logging.getLogger(__name__)


class BoxAnnotator:
    """Boxes and labels from the one drawing module (`pipeline.drawing`: palette, label format,
    labels kept inside the frame and off each other, sizes that scale with the frame), as an
    annotator: ``annotate(scene, detections)`` draws in place. ``labels=False``: boxes only."""

    def __init__(self, names: Optional[Sequence[str]] = None, labels: bool = True):
        self.names = list(names) if names else []
        self.labels = labels
        self._styles: Dict[tuple, object] = {}

    def style(self, h: int, w: int):
        """The `DrawStyle` of an (h, w) frame (computed once per size)."""
        st = self._styles.get((h, w))
        if st is None:
            from trackpipe.pipeline.drawing import DrawStyle
            if len(self._styles) > 64:
                self._styles.clear()
            st = self._styles[(h, w)] = DrawStyle.for_frame(h, w)
        return st

    def annotate(self, scene: np.ndarray, dets: Detections) -> np.ndarray:
        """scene (H, W, 3) uint8 BGR, modified in place; dets: Detections or Tracks (xyxy pixels)."""
        if dets is None or len(dets) == 0:
            return scene
        from trackpipe.pipeline.drawing import annotate
        from trackpipe.pipeline.drawing.annotate import draw_items, overlay_items
        h, w = scene.shape[:2]
        st = self.style(h, w)
        if self.labels:
            return annotate(scene, dets, self.names, st)
        items = [dataclasses.replace(it, label=None, leader=None) for it in overlay_items(dets, self.names, (h, w), st)]
        return draw_items(scene, items, st)


class WindowSink:
    """A live ``cv2.imshow`` window; ``show()`` returns False once q or Esc was pressed."""

    def __init__(self, title: str = "trackpipe"):
        self.title = title
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)

    def show(self, frame: np.ndarray) -> bool:
        cv2.imshow(self.title, frame)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), ord("Q"), 27)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


#: MOT ``conf`` column of rows not at an observed box (observed rows carry the detection score,
#: in (0, 1]): a track missed this frame, written at its predicted box (``Tracks.predicted``),
#: and a box filled in by gap interpolation at the end of a file run. Every row stays the 10
#: MOTChallenge columns; ``min_confidence=0`` (py-motmetrics) keeps observed + interpolated
#: rows, which is what ``python -m trackers evaluate`` scores by default.
MOT_PREDICTED = -1.0
MOT_INTERPOLATED = 0.0
MOT_FLUSH_S = 1.0   # MOT rows reach the file at least this often


class MotWriter:
    """MOTChallenge text: ``frame,id,x,y,w,h,conf,-1,-1,-1`` (frame 1-based, top-left/size pixels).

    ``conf`` is the score of an observed box, ``MOT_PREDICTED`` (-1) for a row at a predicted box
    and ``MOT_INTERPOLATED`` (0) for a row added by `interpolate_mot_file`.

    Rows reach the file at least every ``flush_s`` seconds (and on ``flush()``, which the sink
    calls on every ``track_ended`` and when idle), so a killed run loses at most that much.
    ``append``: continue the file (a restarted sink) instead of truncating it. A full or
    unwritable disk stops the file, never the caller (`outputs.LineFile`; ``state``)."""

    def __init__(self, path: str, append: bool = False, flush_s: float = MOT_FLUSH_S, camera: str = "",
                 retry_s: float = RETRY_S):
        self.file = LineFile(path, "mot", "rows", camera, append=append, flush_s=flush_s, retry_s=retry_s)
        self.path = self.file.path
        self.predicted = 0

    @property
    def state(self):
        return self.file.state

    @property
    def rows(self) -> int:
        """Rows in the file or on their way to it (not those a full disk lost)."""
        return self.file.written + self.file.pending

    def write(self, frame_no: int, tracks: Tracks) -> None:
        if tracks is None or len(tracks) == 0:
            return
        tlwh = to_tlwh(tracks.xyxy)
        score = tracks.score.astype(np.float64)
        pred = getattr(tracks, "predicted", None)
        if pred is not None and pred.any():
            score = np.where(pred, MOT_PREDICTED, score)
            self.predicted += int(pred.sum())
        text = "".join(f"{frame_no},{int(i)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{s:.4f},-1,-1,-1\n"
                       for i, (x, y, w, h), s in zip(tracks.track_id, tlwh, score, strict=True))
        self.file.add(text, len(tracks))

    def flush(self) -> None:
        """Rows written so far to the file now (no-op when nothing is queued)."""
        if self.file.pending:
            self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_mot_rows(path: str) -> np.ndarray:
    """A MOT file written by `MotWriter` -> (K, 10) float64 rows."""
    with open(path) as f:
        text = f.read()
    if not text.strip():
        return np.zeros((0, 10), np.float64)
    return np.loadtxt(text.splitlines(), delimiter=",", dtype=np.float64, ndmin=2)


def interpolate_mot_file(path: str, max_gap: int) -> Dict[str, int]:
    """Fill gaps of up to ``max_gap`` frames per id in a finished MOT file
    (`trackers.interpolate.interpolate_gaps`; rows at a predicted box count as missing and are
    replaced inside a filled gap). Rewritten atomically: ``<path>.part``, fsync, rename, so a run
    killed meanwhile leaves the file as it was. -> {"rows_before", "rows_after", "interpolated"}."""
    from trackpipe.trackers.interpolate import INTERPOLATED, interpolate_gaps
    rows = read_mot_rows(path)
    if len(rows) == 0 or max_gap <= 0:
        return {"rows_before": len(rows), "rows_after": len(rows), "interpolated": 0}
    out, source = interpolate_gaps(rows, int(max_gap), rows[:, 6] == MOT_PREDICTED)
    out[source == INTERPOLATED, 6] = MOT_INTERPOLATED
    part = f"{path}.part"
    try:
        with open(part, "w", buffering=1 << 16) as f:
            f.writelines(f"{int(r[0])},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},{r[6]:.4f},-1,-1,-1\n"
                         for r in out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except OSError:   # a full disk: the file stays as written, no half-written copy beside it
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise
    return {"rows_before": len(rows), "rows_after": len(out), "interpolated": int((source == INTERPOLATED).sum())}


class EventWriter:
    """JSON lines, one object per line: ``{"event", "t", "seq", ...}``, each written at once; a
    full or unwritable disk stops the file, never the caller (`outputs.LineFile`; ``state``).

    Track lifecycle from the per-frame tracks: ``track_started`` the first frame an id
    appears, ``track_ended`` once it has been unseen for ``end_after`` frames (or at the end).
    Source events (``source_lost``/``source_restored``) are written as they come."""

    def __init__(self, path: str, names: Optional[Sequence[str]] = None, end_after: int = 30,
                 append: bool = False):
        self.file = LineFile(path, "events", "events", append=append)
        self.path = self.file.path
        self.names = list(names) if names else None
        self.end_after = int(end_after)
        self.active: Dict[int, dict] = {}   # id -> {first, last, class_id, hits}
        self.count = 0

    @property
    def state(self):
        return self.file.state

    def emit(self, event: str, t: Optional[float] = None, seq: int = -1, **fields) -> None:
        obj = {"event": event, "t": round(time.time() if t is None else t, 6), "seq": int(seq)}
        obj.update(fields)
        self.write_event(obj)

    def write_event(self, obj: dict) -> None:
        """One ready-made event (a dict with ``event``, ``t``, ``seq``: the pipeline's track stage
        makes them, `Tracked.events`) as one line, written at once (on a full disk: counted as lost)."""
        self.file.add(json.dumps(obj, separators=(",", ":")) + "\n")
        self.count += 1

    def _class(self, cid: int) -> dict:
        d = {"class_id": int(cid)}
        if self.names and 0 <= cid < len(self.names):
            d["class"] = self.names[cid]
        return d

    def update(self, seq: int, t: float, tracks: Optional[Tracks]) -> None:
        if tracks is not None:
            for k in range(len(tracks)):
                tid = int(tracks.track_id[k])
                st = self.active.get(tid)
                if st is None:
                    x1, y1, x2, y2 = (round(float(v), 1) for v in tracks.xyxy[k])
                    self.active[tid] = {"first": seq, "last": seq, "t_first": t, "cid": int(tracks.class_id[k])}
                    self.emit("track_started", t, seq, track_id=tid, score=round(float(tracks.score[k]), 4),
                              box=[x1, y1, x2, y2], **self._class(int(tracks.class_id[k])))
                else:
                    st["last"] = seq
        for tid in [i for i, st in self.active.items() if seq - st["last"] >= self.end_after]:
            self._end(tid, t, seq, "lost")

    def _end(self, tid: int, t: float, seq: int, reason: str) -> None:
        st = self.active.pop(tid)
        self.emit("track_ended", t, seq, track_id=tid, first_seq=st["first"], last_seq=st["last"],
                  duration_s=round(max(0.0, t - st["t_first"]), 3), reason=reason, **self._class(st["cid"]))

    def end_all(self, t: float, seq: int, reason: str) -> None:
        for tid in list(self.active):
            self._end(tid, t, seq, reason)

    def close(self) -> None:
        self.file.close()
