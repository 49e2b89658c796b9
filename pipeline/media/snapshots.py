"""Snapshots: a JPEG of the frame when a new track of a chosen class appears.

Used by the render stage (the last reader of the pixels). Deciding is cheap and needs no pixels
(``due``); only frames with a new track are copied, drawn on and encoded (``write``). A file is
written under a temporary name and renamed, so a watcher of the folder never sees half a JPEG.

A full or unwritable disk stops the snapshots (one log line, `outputs.OutputState` in ``state``);
they are tried again every few seconds once the disk has room, and the ones skipped meanwhile
are counted as lost.

File names sort by time and match the ``track_started`` event of the events file (same ``seq``
and track id)::

    20261121-161502.347_seq0001234_id17_person.jpg
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import cv2
import numpy as np

from trackpipe.models.types import Tracks

from trackpipe.pipeline.drawing.boxes import BoxAnnotator

from .outputs import OutputState

log = logging.getLogger(__name__)


class SnapshotWriter:
    """``classes``: class ids to snapshot (None: every class). A track id is new the first frame
    it is seen; ids unseen for ``forget_after`` frames are forgotten (bounded memory on an
    endless stream; a tracker never reuses a live id). ``folder`` None: no files; ``on_jpeg``:
    ``on_jpeg(seq, track_id, jpeg_bytes)`` for every snapshot encoded (files or not, a stopped folder
    included: the MQTT delivery publishes them)."""

    def __init__(self, folder: Optional[str], classes: Optional[Iterable[int]] = None,
                 names: Optional[Sequence[str]] = None, quality: int = 90, forget_after: int = 900,
                 camera: str = "", on_jpeg: Optional[Callable[[int, int, bytes], None]] = None):
        self.folder = Path(folder) if folder else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.state = OutputState("snapshots", str(self.folder or ""), camera, "snapshots")
        self.on_jpeg = on_jpeg
        self.classes = None if classes is None else np.array(sorted(set(int(c) for c in classes)), np.int64)
        self.names = list(names) if names else None
        self.quality = int(quality)
        self.forget_after = int(forget_after)
        self.seen: Dict[int, int] = {}  # track id -> last seq seen
        self.annotator = BoxAnnotator(names)
        self.written = 0
        self.errors = 0

    def due(self, seq: int, tracks: Optional[Tracks]) -> np.ndarray:
        """Rows of ``tracks`` that are new tracks of a chosen class -> (K,) int indices."""
        rows: List[int] = []
        if isinstance(tracks, Tracks) and len(tracks):
            chosen = np.ones(len(tracks), bool) if self.classes is None else \
                np.isin(tracks.class_id.astype(np.int64), self.classes)
            for k, tid in enumerate(tracks.track_id.tolist()):
                if tid not in self.seen and chosen[k]:
                    rows.append(k)
                self.seen[tid] = seq
        if seq % 64 == 0:  # forget old ids now and then: O(active tracks) per call otherwise
            for tid in [i for i, last in self.seen.items() if seq - last > self.forget_after]:
                del self.seen[tid]
        return np.asarray(rows, np.int64)

    def unsee(self, track_ids: np.ndarray) -> None:
        """Make these ids new again (their frame could not be read)."""
        for tid in track_ids.tolist():
            self.seen.pop(tid, None)

    def _name(self, t_capture: float, seq: int, tracks: Tracks, k: int) -> str:
        cid = int(tracks.class_id[k])
        label = self.names[cid] if self.names and 0 <= cid < len(self.names) else f"class{cid}"
        label = "".join(c if c.isalnum() or c in "-_" else "-" for c in label)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(t_capture)) + f".{int(t_capture * 1000) % 1000:03d}"
        return f"{stamp}_seq{seq:07d}_id{int(tracks.track_id[k])}_{label}.jpg"

    def write(self, frame: np.ndarray, seq: int, t_capture: float, tracks: Tracks,
              rows: np.ndarray) -> List[Path]:
        """frame (H, W, 3) uint8 BGR, not modified; one JPEG per row, the new track's box drawn.
        Files are skipped (counted in ``state.lost``) while the output is stopped. -> the files written."""
        out: List[Path] = []
        now = time.monotonic()
        files = self.folder is not None
        if files and self.state.stopped and not self.state.retry_due(now):
            self.state.lost += len(rows)
            files = False
        if not files and self.on_jpeg is None:
            return out
        todo = rows.tolist()
        for n, k in enumerate(todo):
            img = frame.copy()
            self.annotator.annotate(img, tracks[k])
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                continue
            if self.on_jpeg is not None:
                self.on_jpeg(seq, int(tracks.track_id[k]), buf.tobytes())
            if not files:
                continue
            path = self.folder / self._name(t_capture, seq, tracks, k)
            tmp = path.with_name(path.name + ".part")
            try:
                tmp.write_bytes(buf.tobytes())
                os.replace(tmp, path)
            except OSError as e:  # a full disk must not stop the monitoring: stop the snapshots, go on
                self.errors += 1
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                self.state.lost += len(todo) - n
                self.state.fail(e, now)
                files = False
                continue
            out.append(path)
            self.state.ok(now)
        self.written += len(out)
        return out
