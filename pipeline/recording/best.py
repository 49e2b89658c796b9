"""Each live track's best frame, kept by the render stage (which has the decoded frames) for the
recorder's event snapshots: no decoding in the sink, a snapshot for every event.

`BestFrames` (one per recorded camera) watches every tracked frame. A track of a recorded class
gets a clean copy of its first detected (not predicted) frame at once (no box: the review API
draws the stored one), shrunk to at most ``max_width`` pixels wide (a resize, ~0.5 ms for 1080p;
frames shared by tracks are copied once). Later frames whose score beats a track's best by
``min_gain`` replace it, at most once per ``interval_s`` of capture time per camera: the tracks
better on that frame share one copy. A busy scene thus costs a copy per new track plus at most
1 / ``interval_s`` copies a second, whatever the number of tracks (docs/recording.md: 4.1
copies a second on a busy 1080p clip, 9.2 uncapped). A track's frame is encoded as JPEG once,
when the track ends (`ended`): one encode per event, shared by tracks that end together on the
same frame. The frame then goes to the sink (`messages.BestFrame`), whose recorder writes it as
the event's snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

JPEG_QUALITY = 85
MAX_WIDTH = 960          # snapshots wider than this are shrunk (the API scales the stored box)
INTERVAL_S = 0.25        # at most one copy per this much capture time for better scores alone


@dataclass
class Best:
    """A track's best sighting so far: its frame ``seq``, capture time ``t``, ``score``, ``box``
    (4,) xyxy pixels of the tracked frame, and the clean frame ``image`` (h, w, 3) uint8 BGR (the
    tracked frame, shrunk to at most `MAX_WIDTH` wide)."""

    track_id: int
    seq: int
    t: float
    score: float
    box: np.ndarray
    image: np.ndarray

    def jpeg(self, quality: int = JPEG_QUALITY) -> bytes | None:
        ok, buf = cv2.imencode(".jpg", self.image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        return buf.tobytes() if ok else None


def encoded(bests: Iterable[Best], quality: int = JPEG_QUALITY) -> list[tuple[Best, bytes]]:
    """(best, JPEG bytes) of each of ``bests`` that encodes; a frame shared by several is encoded once."""
    done: dict[int, bytes | None] = {}
    out = []
    for b in bests:
        key = id(b.image)
        if key not in done:
            done[key] = b.jpeg(quality)
        if done[key] is not None:
            out.append((b, done[key]))
    return out


class BestFrames:
    """One camera's live tracks' best frames. ``classes``: labels or class ids (as strings) that
    are recorded (None: every class); ``names``: class names by id; ``interval_s``: the least
    capture time between two copies made for better scores alone (0: a copy for every gain)."""

    def __init__(self, classes: Sequence | None = None, names: Sequence[str] = (), min_gain: float = 0.02,
                 max_width: int = MAX_WIDTH, max_tracks: int = 256, interval_s: float = INTERVAL_S):
        self.classes = None if classes is None else {str(c) for c in classes}
        self.names = list(names or ())
        self.min_gain = float(min_gain)
        self.max_width = int(max_width)
        self.max_tracks = int(max_tracks)
        self.interval_s = float(interval_s)
        self.last_copy = float("-inf")         # capture time of the last copy
        self.best: dict[int, Best] = {}        # track id -> its best frame so far
        self.kept = 0                          # frames copied

    def _wanted(self, class_id: int) -> bool:
        if self.classes is None:
            return True
        label = self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)
        return label in self.classes or str(class_id) in self.classes

    def due(self, tracks, t: float) -> np.ndarray:
        """Rows of ``tracks`` (`Tracks`, N rows, of a frame captured at ``t`` s) to copy the frame
        for: detected rows of tracks without a best; with them, or once ``interval_s`` has passed
        since the last copy, those whose score beats their best by ``min_gain`` -> (K,) int
        indices. Nothing changes until `keep`."""
        if tracks is None or not len(tracks):
            return np.zeros(0, np.int64)
        pred = tracks.predicted if getattr(tracks, "predicted", None) is not None else np.zeros(len(tracks), bool)
        new, better = [], []
        for k, (tid, s, cid) in enumerate(zip(tracks.track_id.tolist(), tracks.score.tolist(),
                                              tracks.class_id.tolist())):
            if pred[k]:
                continue
            best = self.best.get(tid)
            if best is None:
                if self._wanted(int(cid)):
                    new.append(k)
            elif s >= best.score + self.min_gain:
                better.append(k)
        if better and (new or t - self.last_copy >= self.interval_s):  # a copy made anyway serves both
            return np.asarray(sorted(new + better), np.int64)
        return np.asarray(new, np.int64)

    def keep(self, frame: np.ndarray, seq: int, t: float, tracks, rows: np.ndarray,
             intact: Callable[[], bool] | None = None) -> bool:
        """frame (H, W, 3) uint8 BGR, clean (before any drawing), not modified: one (shrunk) copy
        for all ``rows``, each's new best. ``intact``: called once the copy is made, whether the
        frame was left alone meanwhile (a shared slot); if not, nothing is kept. -> kept."""
        if not len(rows):
            return False
        h, w = frame.shape[:2]
        if w > self.max_width:
            image = cv2.resize(frame, (self.max_width, max(1, round(h * self.max_width / w))),
                               interpolation=cv2.INTER_LINEAR)
        else:
            image = frame.copy()
        if intact is not None and not intact():
            return False
        self.kept += 1
        self.last_copy = float(t)
        for k in rows.tolist():
            tid = int(tracks.track_id[k])
            self.best.pop(tid, None)               # newest last: the oldest go first past max_tracks
            self.best[tid] = Best(tid, int(seq), float(t), float(tracks.score[k]),
                                  np.asarray(tracks.xyxy[k], np.float32).copy(), image)
        while len(self.best) > self.max_tracks:    # ids whose end never came (bounded memory)
            self.best.pop(next(iter(self.best)))
        return True

    def ended(self, track_ids: Iterable[int]) -> list[Best]:
        """These tracks ended: their best frames (to encode and send), forgotten here."""
        out = []
        for tid in track_ids:
            b = self.best.pop(int(tid), None)
            if b is not None:
                out.append(b)
        return out
