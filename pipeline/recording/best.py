"""Each live track's best frame, kept by the render stage (which has the decoded frames) for the
recorder's event snapshots: no decoding in the sink, a snapshot for every event.

`BestFrames` (one per recorded camera) watches every tracked frame: a track of a recorded class
whose detected (not predicted) score beats its best so far by ``min_gain`` keeps a clean copy of
the frame (no box: the review API draws the stored one), shrunk to at most ``max_width`` pixels
wide (a resize, ~1 ms for 1080p; frames shared by tracks are copied once). A track's scores set a
new best a few times per track (a new best among n frames comes ~ln n times), and its frame is
encoded as JPEG once, when the track ends (`ended`): one encode per event. The frame then goes to
the sink (`messages.BestFrame`), whose recorder writes it as the event's snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

JPEG_QUALITY = 85
MAX_WIDTH = 960          # snapshots wider than this are shrunk (the API scales the stored box)


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


class BestFrames:
    """One camera's live tracks' best frames. ``classes``: labels or class ids (as strings) that
    are recorded (None: every class); ``names``: class names by id."""

    def __init__(self, classes: Sequence | None = None, names: Sequence[str] = (), min_gain: float = 0.02,
                 max_width: int = MAX_WIDTH, max_tracks: int = 256):
        self.classes = None if classes is None else {str(c) for c in classes}
        self.names = list(names or ())
        self.min_gain = float(min_gain)
        self.max_width = int(max_width)
        self.max_tracks = int(max_tracks)
        self.best: dict[int, Best] = {}        # track id -> its best frame so far
        self.kept = 0                          # frames copied

    def _wanted(self, class_id: int) -> bool:
        if self.classes is None:
            return True
        label = self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)
        return label in self.classes or str(class_id) in self.classes

    def due(self, tracks) -> np.ndarray:
        """Rows of ``tracks`` (`Tracks`, N rows) whose detected score beats their best so far by
        ``min_gain`` -> (K,) int indices. Nothing changes until `keep`."""
        if tracks is None or not len(tracks):
            return np.zeros(0, np.int64)
        pred = tracks.predicted if getattr(tracks, "predicted", None) is not None else np.zeros(len(tracks), bool)
        rows = []
        for k, (tid, s, cid) in enumerate(zip(tracks.track_id.tolist(), tracks.score.tolist(),
                                              tracks.class_id.tolist())):
            if pred[k]:
                continue
            best = self.best.get(tid)
            if best is None:
                if not self._wanted(int(cid)):
                    continue
            elif s < best.score + self.min_gain:
                continue
            rows.append(k)
        return np.asarray(rows, np.int64)

    def keep(self, frame: np.ndarray, seq: int, t: float, tracks, rows: np.ndarray) -> None:
        """frame (H, W, 3) uint8 BGR, clean (before any drawing), not modified: one (shrunk) copy
        for all ``rows``, each's new best."""
        if not len(rows):
            return
        h, w = frame.shape[:2]
        if w > self.max_width:
            image = cv2.resize(frame, (self.max_width, max(1, round(h * self.max_width / w))),
                               interpolation=cv2.INTER_LINEAR)
        else:
            image = frame.copy()
        self.kept += 1
        for k in rows.tolist():
            tid = int(tracks.track_id[k])
            self.best.pop(tid, None)               # newest last: the oldest go first past max_tracks
            self.best[tid] = Best(tid, int(seq), float(t), float(tracks.score[k]),
                                  np.asarray(tracks.xyxy[k], np.float32).copy(), image)
        while len(self.best) > self.max_tracks:    # ids whose end never came (bounded memory)
            self.best.pop(next(iter(self.best)))

    def ended(self, track_ids: Iterable[int]) -> list[Best]:
        """These tracks ended: their best frames (to encode and send), forgotten here."""
        out = []
        for tid in track_ids:
            b = self.best.pop(int(tid), None)
            if b is not None:
                out.append(b)
        return out
