"""Slot allocation of latest-frame capture: which ring slot the next frame goes into.

A slot is free (released by render), being written (the grabber), staged (the newest frame,
not yet asked for) or published (sent to infer, until render releases it). Capture never
waits on the pipeline: when no slot is free the staged frame is overwritten (a drop), and a
published slot whose reader died is reclaimed after ``reclaim_after_s``. Thread-safe: the
grabber thread commits frames, the main thread publishes them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from trackpipe.pipeline.transport.messages import FrameMeta

log = logging.getLogger(__name__)


class SlotAllocator:
    """``ring``: a `FrameRing` (only its control table is used); ``next_seq``: the first seq to
    give out (a restarted capture continues its predecessor's numbering)."""

    def __init__(self, ring, reclaim_after_s: float, next_seq: int = 0,
                 clock: Callable[[], float] = time.monotonic, source: Tuple[int, str] = (0, "")):
        self.ring = ring
        self.reclaim_after_s = reclaim_after_s
        self.clock = clock
        self.source = source    # (FrameMeta.source_id, camera name) of every frame
        self.lock = threading.Lock()
        self.next_seq = next_seq
        self.staged: Optional[FrameMeta] = None
        self.published: Dict[int, Tuple[int, float]] = {}   # slot -> (seq, monotonic time published)
        self.writing: Optional[int] = None
        # after a restart: frames an earlier capture published are in flight (or lost with a dead
        # stage); track them so that they can be reclaimed after reclaim_after_s
        now = clock()
        for s in range(ring.slots):
            if not ring.is_free(s):
                self.published[s] = (ring.seq(s), now)

    @property
    def in_flight(self) -> int:
        return len(self.published)

    # --- grabber side ---------------------------------------------------------------------
    def take(self) -> Tuple[Optional[int], bool]:
        """A slot to write the next frame into -> (slot or None: read and discard, dropped: a
        frame was given up for it). Marks the slot as being written."""
        ring = self.ring
        with self.lock:
            for s, (seq, _t) in list(self.published.items()):
                if ring.is_free(s) or ring.seq(s) != seq:
                    del self.published[s]
            busy = set(self.published)
            if self.staged is not None:
                busy.add(self.staged.slot)
            slot, dropped = None, True
            for s in range(ring.slots):
                if s not in busy and ring.is_free(s):
                    slot, dropped = s, False
                    break
            if slot is None and self.staged is not None:  # overwrite the unpublished frame
                slot, self.staged = self.staged.slot, None
            elif slot is None:
                now = self.clock()
                old = [(t, s) for s, (seq, t) in self.published.items() if now - t > self.reclaim_after_s]
                if old:
                    t, slot = min(old)
                    dropped = False
                    del self.published[slot]
                    log.debug("reclaiming slot %d in flight for %.1fs", slot, now - t)
            self.writing = slot
            return slot, dropped

    def abort(self, slot: int) -> None:
        """The read into ``slot`` failed: nothing was published."""
        self.ring.abort_write(slot)
        with self.lock:
            self.writing = None

    def commit(self, slot: int, shape, t_capture: float, t_mono: float) -> Tuple[FrameMeta, bool]:
        """The frame in ``slot`` is complete: number it and stage it -> (its meta, whether a staged
        frame that was never published had to go: a drop; its slot is free again)."""
        with self.lock:
            meta = FrameMeta(self.next_seq, slot, t_capture, t_mono, tuple(shape), *self.source)
            self.next_seq += 1
            self.ring.end_write(slot, meta.seq, meta.shape, t_capture, t_mono)
            self.writing = None
            old, self.staged = self.staged, meta
            if old is not None:
                self.ring.release(old.slot, old.seq)
            return meta, old is not None

    def discard_staged(self) -> bool:
        """Forget the staged frame (made before a stall: never publish it); -> whether there was one."""
        with self.lock:
            old, self.staged = self.staged, None
            if old is not None:
                self.ring.release(old.slot, old.seq)
            return old is not None

    # --- publisher side -------------------------------------------------------------------
    def take_staged(self) -> Optional[FrameMeta]:
        """The staged frame, now published (in flight until render releases its slot)."""
        with self.lock:
            meta, self.staged = self.staged, None
            if meta is not None:
                self.published[meta.slot] = (meta.seq, self.clock())
            return meta

    def release(self, meta: FrameMeta) -> None:
        """A published frame ``meta`` was given up before it went out: its slot is free again."""
        with self.lock:
            if self.published.get(meta.slot, (None,))[0] == meta.seq:   # not reclaimed meanwhile
                del self.published[meta.slot]
                self.ring.release(meta.slot, meta.seq)

    def has_staged(self) -> bool:
        with self.lock:
            return self.staged is not None
