"""The MOTChallenge track file the sink stage writes: `MotWriter`, `read_mot_rows` and the gap
filling at the end of a file run (`interpolate_mot_file`). Plain classes, usable without the
pipeline (the sequential benchmark uses them too); ``close()`` is safe to call twice.
"""

from __future__ import annotations

import contextlib
import os
from typing import Dict

import numpy as np

from trackpipe.models.types import Tracks, to_tlwh

from .outputs import RETRY_S, LineFile

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
