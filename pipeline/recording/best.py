"""Each live track's best frame, kept by the render stage (which has the decoded frames) for the
recorder's event snapshots: no decoding in the sink, a snapshot for every event.

`BestFrames` (one per recorded camera) watches every tracked frame: a track of a recorded class
whose detected (not predicted) score beats its best so far by ``min_gain`` has its frame encoded
as a clean JPEG (the whole frame, no box: the review API draws the stored box). Scores of a track
set a new record a few times per track (a new best among n frames comes ~ln n times), so this is
a handful of encodes per track. Each new best goes to the sink at once (`messages.BestFrame`),
where the recorder keeps the latest per track and writes it as the event's snapshot when the
track ends (`recorder.Recorder.best_frame`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

JPEG_QUALITY = 85


@dataclass
class Best:
    """A track's best sighting so far: its frame ``seq``, capture time ``t``, ``score``, ``box``
    (4,) xyxy pixels and the frame as JPEG bytes."""

    track_id: int
    seq: int
    t: float
    score: float
    box: np.ndarray
    jpeg: bytes


class BestFrames:
    """One camera's live tracks' best scores. ``classes``: labels or class ids (as strings) that
    are recorded (None: every class); ``names``: class names by id."""

    def __init__(self, classes: Sequence | None = None, names: Sequence[str] = (), min_gain: float = 0.02,
                 quality: int = JPEG_QUALITY, max_tracks: int = 1024):
        self.classes = None if classes is None else {str(c) for c in classes}
        self.names = list(names or ())
        self.min_gain = float(min_gain)
        self.quality = int(quality)
        self.max_tracks = int(max_tracks)
        self.score: dict[int, float] = {}      # track id -> best score encoded so far
        self.encoded = 0

    def _wanted(self, class_id: int) -> bool:
        if self.classes is None:
            return True
        label = self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)
        return label in self.classes or str(class_id) in self.classes

    def due(self, tracks) -> np.ndarray:
        """Rows of ``tracks`` (`Tracks`, N rows) whose detected score beats their best so far by
        ``min_gain`` -> (K,) int indices. Nothing changes until `encode`."""
        if tracks is None or not len(tracks):
            return np.zeros(0, np.int64)
        pred = tracks.predicted if getattr(tracks, "predicted", None) is not None else np.zeros(len(tracks), bool)
        rows = []
        for k, (tid, s, cid) in enumerate(zip(tracks.track_id.tolist(), tracks.score.tolist(),
                                              tracks.class_id.tolist())):
            if pred[k]:
                continue
            best = self.score.get(tid)
            if best is None:
                if not self._wanted(int(cid)):
                    continue
            elif s < best + self.min_gain:
                continue
            rows.append(k)
        return np.asarray(rows, np.int64)

    def encode(self, frame: np.ndarray, seq: int, t: float, tracks, rows: np.ndarray) -> list[Best]:
        """frame (H, W, 3) uint8 BGR, clean (before any drawing), not modified: one JPEG for all
        ``rows`` (they share the frame) -> their new `Best` each."""
        if not len(rows):
            return []
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return []
        self.encoded += 1
        jpeg = buf.tobytes()
        out = []
        for k in rows.tolist():
            tid, s = int(tracks.track_id[k]), float(tracks.score[k])
            self.score[tid] = s
            out.append(Best(tid, int(seq), float(t), s, np.asarray(tracks.xyxy[k], np.float32).copy(), jpeg))
        if len(self.score) > self.max_tracks:       # ids whose end never came (bounded memory)
            for tid in list(self.score)[: len(self.score) - self.max_tracks]:
                del self.score[tid]
        return out

    def ended(self, track_ids) -> None:
        """These tracks ended: forgotten."""
        for tid in track_ids:
            self.score.pop(int(tid), None)
