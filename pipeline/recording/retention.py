"""Retention: what the record folder keeps.

Applied by the recorder after every closed segment and every few seconds (`Retention.apply`):

1. mode ``events``: a closed segment that no event (nor a track still open) needs, with the
   camera's pre and post roll, is deleted once the camera's tracking has moved ``pre_s`` past it;
   mode ``motion`` alike, with the spans where something moved instead of the events;
2. age: segments and events older than the camera's ``retain_days`` (0: no age limit);
3. size: while the segments of all cameras together pass ``max_gb``, the oldest go first;
4. free space: while the disk of the record folder has less than ``min_free_gb`` free, the oldest
   segments go first, with one log line when it begins (a full disk never stops detection).

A deleted segment marks the events whose clips needed it ``expired`` (the API answers 410).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .index import RecordIndex, Segment
from .layout import snapshot_path

log = logging.getLogger(__name__)

GB = 1e9


@dataclass
class CameraPolicy:
    mode: str = "all"             # all | events | motion
    pre_s: float = 5.0
    post_s: float = 5.0
    retain_days: float = 7.0


@dataclass
class RetentionResult:
    deleted: int = 0
    bytes: int = 0
    events: int = 0
    reasons: dict[str, int] | None = None


class Retention:
    """Policies of a record folder: ``cameras`` {name: CameraPolicy}; ``max_gb``/``min_free_gb``
    over all cameras (0: none). ``disk_free(root) -> bytes`` is replaceable in tests."""

    def __init__(self, root: Path, index: RecordIndex, cameras: dict[str, CameraPolicy], max_gb: float = 0.0,
                 min_free_gb: float = 0.0, disk_free: Callable[[Path], int] | None = None):
        self.root, self.index, self.cameras = Path(root), index, dict(cameras)
        self.max_bytes = int(max_gb * GB)
        self.min_free = int(min_free_gb * GB)
        self.disk_free = disk_free or (lambda p: shutil.disk_usage(p).free)
        self.low_space = False        # inside a free-space episode (logged once)

    def policy(self, camera: str) -> CameraPolicy:
        return self.cameras.get(camera) or CameraPolicy()

    def apply(self, now: float | None = None, tracked_until: dict[str, float] | None = None,
              open_tracks: dict[str, list[float]] | None = None,
              motion: dict[str, list[tuple]] | None = None) -> RetentionResult:
        """now: wall clock; tracked_until: {camera: time of its newest tracked frame}; open_tracks:
        {camera: start times of its tracks (and of a motion span) still open}; motion: {camera:
        [(start, end)] where something moved} (mode motion)."""
        now = time.time() if now is None else now
        res = RetentionResult(reasons={})
        for cam, pol in self.cameras.items():
            if pol.mode in ("events", "motion") and tracked_until and cam in tracked_until:
                spans = (motion or {}).get(cam, []) if pol.mode == "motion" else None
                self._events_mode(cam, pol, tracked_until[cam], (open_tracks or {}).get(cam, []), res, spans)
        self._age(now, res)
        self._size(res)
        self._free(res)
        return res

    # --- policies ------------------------------------------------------------------------------

    def _events_mode(self, cam: str, pol: CameraPolicy, until: float, open_starts: list[float],
                     res: RetentionResult, motion: list[tuple] | None = None) -> None:
        """Segments decided (``pre_s`` before ``until`` and before every open track) that no span
        (the events', or ``motion``'s) with the roll overlaps are deleted."""
        decided = until - pol.pre_s       # a track that starts later cannot reach back before this
        if open_starts:
            decided = min(decided, min(open_starts) - pol.pre_s)
        segs = [s for s in self.index.segments(cam, before=decided) if s.end <= decided]
        if not segs:
            return
        after = segs[0].start - pol.post_s
        spans = self.index.event_spans(cam, after) if motion is None else [(a, b) for a, b in motion if b >= after]
        drop = [s for s in segs if not any(a - pol.pre_s < s.end and b + pol.post_s > s.start for a, b in spans)]
        self._delete(drop, res, "no_event" if motion is None else "no_motion")

    def _age(self, now: float, res: RetentionResult) -> None:
        for cam, pol in self.cameras.items():
            if pol.retain_days <= 0:
                continue
            cutoff = now - pol.retain_days * 86400.0
            self._delete([s for s in self.index.segments(cam, before=cutoff) if s.end < cutoff], res, "age")
            old = [e for e in self.index.events_before(cutoff) if e.camera == cam]
            for e in old:
                if e.snapshot:
                    _unlink(self.root / e.snapshot)
            self.index.remove_events(e.id for e in old)
            res.events += len(old)

    def _size(self, res: RetentionResult) -> None:
        if not self.max_bytes:
            return
        total = self.index.total_bytes()
        while total > self.max_bytes:
            batch = self.index.oldest_segments(16)
            if not batch:
                return
            drop = []
            for s in batch:
                if total <= self.max_bytes:
                    break
                drop.append(s)
                total -= s.bytes
            self._delete(drop, res, "size")

    def _free(self, res: RetentionResult) -> None:
        if not self.min_free:
            return
        free = self.disk_free(self.root)
        if free >= self.min_free:
            if self.low_space:
                log.info("record folder %s: free space back above %.1f GB", self.root, self.min_free / GB)
            self.low_space = False
            return
        if not self.low_space:
            log.warning("record folder %s: %.2f GB free, under the floor of %.1f GB: deleting the oldest "
                        "segments", self.root, free / GB, self.min_free / GB)
            self.low_space = True
        while free < self.min_free:
            batch = self.index.oldest_segments(1)       # one at a time: each frees what it held
            if not batch:
                return
            self._delete(batch, res, "free_space")
            free = self.disk_free(self.root)

    # --- deleting ------------------------------------------------------------------------------

    def _delete(self, segs: list[Segment], res: RetentionResult, reason: str) -> None:
        if not segs:
            return
        for s in segs:
            _unlink(self.root / s.path)
            pol = self.policy(s.camera)
            self.index.expire_events(s.camera, s.start - pol.post_s, s.end + pol.pre_s)
            try:
                (self.root / s.path).parent.rmdir()      # an emptied date folder
            except OSError:
                pass
        self.index.remove_segments(s.path for s in segs)
        res.deleted += len(segs)
        res.bytes += sum(s.bytes for s in segs)
        res.reasons[reason] = res.reasons.get(reason, 0) + len(segs)
        log.debug("retention (%s): %d segments deleted", reason, len(segs))


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("cannot delete %s: %s", path, e.strerror or e)


def delete_event_files(root: Path, camera: str, event_id: str) -> None:
    _unlink(snapshot_path(root, camera, event_id))
