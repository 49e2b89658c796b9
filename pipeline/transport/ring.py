"""Shared-memory frame ring: N slots of the largest frame plus a small control table.

Layout of one POSIX shared-memory segment (``/dev/shm/<name>``)::

    [ header: 8 x int64 | control table: slots x 16 x int64 | pad to 4 KiB | slot 0 | slot 1 | ... ]

Every control-table field has exactly one writer, so no lock is needed (a process
killed at any moment can never leave a lock held):

- ``SEQ``, ``VERSION``, ``H``/``W``/``C``, ``T_CAPTURE``/``T_MONO``: written by capture.
  ``VERSION`` is a seqlock counter: odd while the pixels are being written, even when
  stable. A reader that saw version v before using the pixels and still sees v after
  them read an untorn frame.
- ``RELEASED``: written by the releasing reader (the render stage) with the seq it is
  done with. A slot is free when ``RELEASED >= SEQ``.

The supervisor creates (``FrameRing.create``) and finally unlinks the segment; stages
attach by name (``FrameRing.attach``) inside their ``run()``.
"""

from __future__ import annotations

import os
from multiprocessing import resource_tracker, shared_memory
from typing import Optional, Tuple

import numpy as np

MAGIC = 0x54504B52494E4731  # "TPKRING1"
HEADER_WORDS = 8
SLOT_WORDS = 16
ALIGN = 4096

# control-table field indices
SEQ, VERSION, RELEASED, H, W, C, T_CAPTURE, T_MONO, CHECKSUM = range(9)


def _round_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _attach_untracked(name: str) -> shared_memory.SharedMemory:
    """Attach without registering with the resource tracker.

    On Python <= 3.12 every attach registers the segment, and the tracker (shared with
    the supervisor under spawn) would then warn about or unlink it when it is not ours
    to unlink. Only the creator registers, so a crashed supervisor's segment is still
    removed by its tracker."""
    register = resource_tracker.register
    resource_tracker.register = lambda *a, **k: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


class FrameRing:
    """N fixed-size uint8 frame slots in shared memory, with a per-slot control row.

    ``frame(slot, shape)`` returns a zero-copy (H, W, C) uint8 view into a slot.
    """

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool):
        self.shm = shm
        self.owner = owner
        self.name = shm.name.lstrip("/")
        head = np.ndarray((HEADER_WORDS,), np.int64, shm.buf, 0)
        if int(head[0]) != MAGIC:
            raise ValueError(f"shared memory {self.name!r} is not a frame ring")
        self.slots = int(head[1])
        self.slot_bytes = int(head[2])
        self.max_shape: Tuple[int, int, int] = (int(head[3]), int(head[4]), int(head[5]))
        self._data_offset = int(head[6])
        self._stride = int(head[7])
        self.ctl = np.ndarray((self.slots, SLOT_WORDS), np.int64, shm.buf, HEADER_WORDS * 8)
        self.ctl_f = self.ctl.view(np.float64)  # same memory, for the timestamp fields
        self._head = head

    # --- lifecycle -------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, slots: int, max_shape: Tuple[int, int, int]) -> "FrameRing":
        """Create a ring of ``slots`` slots, each able to hold a ``max_shape`` uint8 frame."""
        if slots < 2:
            raise ValueError(f"a ring needs at least 2 slots; got {slots}")
        h, w, c = (int(v) for v in max_shape)
        slot_bytes = h * w * c
        if slot_bytes <= 0:
            raise ValueError(f"invalid frame shape {max_shape}")
        stride = _round_up(slot_bytes, ALIGN)
        data_offset = _round_up((HEADER_WORDS + slots * SLOT_WORDS) * 8, ALIGN)
        shm = shared_memory.SharedMemory(name=name, create=True, size=data_offset + slots * stride)
        head = np.ndarray((HEADER_WORDS,), np.int64, shm.buf, 0)
        head[1:] = (slots, slot_bytes, h, w, c, data_offset, stride)
        ctl = np.ndarray((slots, SLOT_WORDS), np.int64, shm.buf, HEADER_WORDS * 8)
        ctl[:] = 0
        ctl[:, SEQ] = -1
        ctl[:, RELEASED] = -1
        head[0] = MAGIC  # last: marks the ring as initialised
        del head, ctl
        return cls(shm, owner=True)

    @classmethod
    def attach(cls, name: str) -> "FrameRing":
        return cls(_attach_untracked(name), owner=False)

    def close(self) -> None:
        """Drop this process's mapping (views handed out must be gone)."""
        self._head = self.ctl = self.ctl_f = None
        try:
            self.shm.close()
        except BufferError:  # a caller still holds a view; the mapping dies with the process
            pass

    def unlink(self) -> None:
        """Remove the segment name (creator only); idempotent."""
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass

    # --- pixels ------------------------------------------------------------------------
    def frame(self, slot: int, shape: Optional[Tuple[int, int, int]] = None) -> np.ndarray:
        """Zero-copy (H, W, C) uint8 view of ``slot``; ``shape`` defaults to the slot's row."""
        if shape is None:
            shape = self.shape(slot)
        h, w, c = shape
        if h * w * c > self.slot_bytes:
            raise ValueError(f"frame {shape} does not fit a {self.max_shape} slot")
        return np.ndarray((h, w, c), np.uint8, self.shm.buf, self._data_offset + slot * self._stride)

    def shape(self, slot: int) -> Tuple[int, int, int]:
        r = self.ctl[slot]
        return int(r[H]), int(r[W]), int(r[C])

    # --- writer side (capture) -----------------------------------------------------------
    def begin_write(self, slot: int) -> None:
        """Mark ``slot`` as being written (seqlock version becomes odd)."""
        v = int(self.ctl[slot, VERSION])
        self.ctl[slot, VERSION] = v + 1 if v % 2 == 0 else v + 2

    def end_write(self, slot: int, seq: int, shape: Tuple[int, int, int], t_capture: float,
                  t_mono: float) -> None:
        """Publish the frame in ``slot`` as ``seq`` (version becomes even again)."""
        row = self.ctl[slot]
        row[H], row[W], row[C] = shape
        self.ctl_f[slot, T_CAPTURE] = t_capture
        self.ctl_f[slot, T_MONO] = t_mono
        row[SEQ] = seq
        row[VERSION] = int(row[VERSION]) + 1

    def abort_write(self, slot: int) -> None:
        """Give up a write begun with `begin_write`: the slot keeps its old seq (no frame published)."""
        v = int(self.ctl[slot, VERSION])
        if v % 2:
            self.ctl[slot, VERSION] = v + 1

    def is_free(self, slot: int) -> bool:
        """True when every reader released the slot's last frame (or it never held one)."""
        return int(self.ctl[slot, RELEASED]) >= int(self.ctl[slot, SEQ])

    def free_slots(self) -> list:
        c = self.ctl
        return [s for s in range(self.slots) if int(c[s, RELEASED]) >= int(c[s, SEQ])]

    # --- reader side -----------------------------------------------------------------------
    def version(self, slot: int) -> int:
        return int(self.ctl[slot, VERSION])

    def seq(self, slot: int) -> int:
        return int(self.ctl[slot, SEQ])

    def valid(self, slot: int, seq: int, version: int) -> bool:
        """True when ``slot`` still holds frame ``seq`` unchanged since ``version`` was read."""
        return version % 2 == 0 and int(self.ctl[slot, SEQ]) == seq and int(self.ctl[slot, VERSION]) == version

    def release(self, slot: int, seq: int) -> None:
        """The last reader is done with frame ``seq`` in ``slot``."""
        if int(self.ctl[slot, RELEASED]) < seq:
            self.ctl[slot, RELEASED] = seq


def shm_path(name: str) -> str:
    return os.path.join("/dev/shm", name.lstrip("/"))
