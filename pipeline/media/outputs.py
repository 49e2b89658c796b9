"""Outputs that degrade instead of dying: the state of one output file and an append-only line file.

A full or unwritable disk (ENOSPC, EDQUOT, EROFS, EACCES, EIO...) stops *that* output, with one
log line, while detection, tracking, events and the other outputs go on. A stopped output is
retried at a bounded rate (every ``retry_s`` seconds, and only once its disk has some room again:
`min_free_bytes`), so that a disk at the edge does not flap between stopped and resumed. What could
not be written is counted (``lost``) and reported in the profile's ``outputs`` section, the
``trackpipe_output_up`` metric and the live view's ``/api/stats``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

log = logging.getLogger(__name__)

OK, STOPPED, RESUMED = "ok", "stopped", "resumed"
RETRY_S = 5.0                 # a stopped output is tried again at most this often
RESUME_FREE_MAX = 64 << 20    # ...and only when its disk has this much room (or a quarter of a small disk)


def min_free_bytes(folder: str) -> int:
    """Room a disk needs before a stopped output on it is tried again: 64 MiB, or a quarter of a
    disk smaller than 256 MiB (0 when the disk cannot be asked)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return 0
    return min(RESUME_FREE_MAX, st.f_blocks * st.f_frsize // 4)


def free_bytes(folder: str) -> Optional[int]:
    """Bytes an unprivileged writer may still use on ``folder``'s disk, or None if unknown."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def reason_of(err: BaseException) -> str:
    """A short reason for the log and the profile: the OS's words for the error."""
    code = getattr(err, "errno", None)
    if code:
        return os.strerror(code)
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


@dataclass
class OutputState:
    """One output file (or folder) and whether it is being written.

    state:  "ok" (written since the start), "stopped" (a write failed; retried every ``retry_s``
            once its disk has room), "resumed" (written again after a stop)
    reason: why it last stopped ("No space left on device"), "" if never
    stops:  times it stopped; lost: items not written (``unit``: frames, rows, events, snapshots)
    """

    output: str                # video | mot | events | snapshots
    path: str                  # the file (folder for snapshots) written now
    camera: str = ""
    unit: str = "frames"
    retry_s: float = RETRY_S
    state: str = OK
    reason: str = ""
    stops: int = 0
    lost: int = 0
    stopped_t: Optional[float] = None     # wall clock of the last stop
    _next_retry: float = field(default=0.0, repr=False)
    _stopped_at: float = field(default=0.0, repr=False)

    @property
    def stopped(self) -> bool:
        return self.state == STOPPED

    @property
    def up(self) -> bool:
        return self.state != STOPPED

    def _what(self) -> str:
        return f"{self.output} {self.path}" + (f" ({self.camera})" if self.camera else "")

    def fail(self, err: BaseException, now: Optional[float] = None) -> bool:
        """A write failed: stop (one warning line the first time) and schedule a retry.
        -> True when this stopped a running output (False: it was stopped already)."""
        now = time.monotonic() if now is None else now
        self.reason = reason_of(err)
        self._next_retry = now + self.retry_s
        if self.state == STOPPED:
            return False
        self.state, self.stops = STOPPED, self.stops + 1
        self._stopped_at, self.stopped_t = now, time.time()
        log.warning("%s stopped: %s; detection, tracking and the other outputs go on (tried again every %gs "
                    "once the disk has room)", self._what(), self.reason, self.retry_s)
        return True

    def retry_due(self, now: Optional[float] = None) -> bool:
        """Stopped, its retry time has come and its disk has room (`min_free_bytes`)."""
        if self.state != STOPPED:
            return False
        now = time.monotonic() if now is None else now
        if now < self._next_retry:
            return False
        self._next_retry = now + self.retry_s
        folder = self.path if self.output == "snapshots" else str(Path(self.path).parent)
        free = free_bytes(_existing(folder))
        return free is None or free >= min_free_bytes(_existing(folder))

    def ok(self, now: Optional[float] = None) -> None:
        """Something reached the disk: a stopped output is written again (one info line)."""
        if self.state != STOPPED:
            return
        now = time.monotonic() if now is None else now
        self.state = RESUMED
        log.info("%s is written again after %.1fs (%d %s were not written)", self._what(), now - self._stopped_at,
                 self.lost, self.unit)

    def to_dict(self) -> dict:
        return {"output": self.output, "camera": self.camera, "path": self.path, "state": self.state,
                "reason": self.reason, "stops": self.stops, "lost": self.lost, "unit": self.unit,
                "stopped_t": None if self.stopped_t is None else round(self.stopped_t, 3)}


def _existing(folder: str) -> str:
    """``folder`` or its nearest existing ancestor (statvfs needs a path that exists)."""
    p = Path(folder or ".")
    while not p.exists() and p != p.parent:
        p = p.parent
    return str(p)


def open_lines(path: str, append: bool) -> int:
    """An O_APPEND descriptor of a file of lines. ``append``: keep what is there, cutting a last
    line left half-written (a process killed mid-write, a disk that filled); else truncate."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC), 0o644)
    if append:
        try:
            _cut_partial_line(path, fd)
        except OSError:
            os.close(fd)
            raise
    return fd


def _cut_partial_line(path: str, fd: int) -> None:
    size = os.fstat(fd).st_size
    if size == 0:
        return
    with open(path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            f.seek(start)
            chunk = f.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return
            k = chunk.rfind(b"\n")
            if k >= 0:
                os.ftruncate(fd, start + k + 1)
                return
            end = start
    os.ftruncate(fd, 0)


class LineFile:
    """An append-only file of whole lines that never raises for a disk error after it opened.

    ``add(text, items)`` queues whole lines (``text`` ends with a newline; ``items``: how many
    rows or events it holds); they reach the file at once (``flush_s`` 0) or once ``flush_s``
    seconds passed since the last flush, and on ``flush()`` / ``close()``. A write that fails
    leaves no partial line (the file is cut back to where it was), stops the output
    (`OutputState`) and counts its items as lost; while stopped, new lines are counted as lost
    until a retry is due. Opening: ``append`` False truncates, and an error is raised (the caller
    reports a bad output path); ``append`` True (a restarted stage) keeps what is there and a
    failure to open is a stop like any other.
    """

    def __init__(self, path: str, output: str, unit: str, camera: str = "", append: bool = False,
                 flush_s: float = 0.0, retry_s: float = RETRY_S):
        self.path = str(path)
        self.state = OutputState(output, self.path, camera, unit, retry_s)
        self.flush_s = float(flush_s)
        self.written = 0            # items on disk
        self._pending: List[str] = []
        self._pending_items = 0
        self._flushed_at = time.monotonic()
        self.fd: Optional[int] = None
        self.closed = False
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.fd = open_lines(self.path, append)
        except OSError as e:
            if not append:
                raise
            self.state.fail(e)

    def add(self, text: str, items: int = 1, now: Optional[float] = None) -> None:
        if self.closed:
            raise ValueError(f"{self.path} is closed")
        now = time.monotonic() if now is None else now
        if self.state.stopped and not self.state.retry_due(now):
            self.state.lost += items
            return
        self._pending.append(text)
        self._pending_items += items
        if self.state.stopped or now - self._flushed_at >= self.flush_s:
            self.flush(now)

    @property
    def pending(self) -> int:
        return self._pending_items

    def flush(self, now: Optional[float] = None) -> bool:
        """Write what is queued. -> False when it could not be written (counted as lost)."""
        now = time.monotonic() if now is None else now
        self._flushed_at = now
        if not self._pending or self.closed:
            return True
        data = "".join(self._pending).encode()
        items, self._pending, self._pending_items = self._pending_items, [], 0
        start = None
        try:
            if self.fd is None:
                self.fd = open_lines(self.path, True)
            start = os.fstat(self.fd).st_size
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            if start is not None:   # no half line: back to where the file was
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, start)
            self.state.lost += items
            self.state.fail(e, now)
            return False
        self.written += items
        self.state.ok(now)
        return True

    def close(self) -> None:
        """Flush and close; safe to call twice."""
        if self._pending:
            self.flush()
        fd, self.fd, self.closed = self.fd, None, True
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pending, self._pending_items = [], 0
