"""The run's event log: the events the live view serves, numbered once, on disk.

The track stage (which makes the events) appends each one with its ``event_seq`` (1, 2, ... per
run) to ``<run dir>/events.jsonl`` before it sends the frame on; the web stage tails the file. So
an event's id is its place in the run's events, not a counter in the web process: when the
supervisor restarts the web stage, the new one reads the last ``keep`` events back and goes on
where the file is, and events made while it was down are there too (the bus may drop messages to
the web stage; the file drops nothing). A restarted track stage goes on numbering from the file.

Bounded: once the current file holds ``keep`` lines the writer renames it ``events.1.jsonl``
(replacing the older one) and starts a new one; at most ``2 * keep`` lines are on disk. Each batch
is one ``os.write`` on an ``O_APPEND`` descriptor (no user-space buffer to lose on SIGKILL). The
reader takes whole lines only; a line cut short by a killed writer is ended by the next writer
and skipped by the reader (its id goes to the next event: it was never served).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable

import numpy as np

log = logging.getLogger(__name__)

KEEP = 1000
NAME = "events"


def jsonable(o):
    """json.dumps ``default=``: numpy scalars and arrays as Python numbers and lists."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _parse(lines: Iterable[bytes]) -> list[dict]:
    """Events of whole JSON lines; a garbled one (cut by a kill) is left out."""
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict) and isinstance(d.get("event_seq"), int):
            out.append(d)
    return out


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def _paths(directory: str, name: str) -> tuple[str, str]:
    return os.path.join(directory, f"{name}.jsonl"), os.path.join(directory, f"{name}.1.jsonl")


class EventLogWriter:
    """Numbers events and appends them to the log in ``directory`` (one writer per run)."""

    def __init__(self, directory: str, keep: int = KEEP, name: str = NAME):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = int(keep)
        self.path, self.old_path = _paths(directory, name)
        data = _read(self.path)
        events = _parse(data.split(b"\n")) or _parse(_read(self.old_path).split(b"\n"))
        self.last_seq = events[-1]["event_seq"] if events else 0
        self._lines = data.count(b"\n")
        self._failing = False
        self._fd = self._open()
        if data and not data.endswith(b"\n"):    # an earlier writer was killed mid-line: end it
            os.write(self._fd, b"\n")
            self._lines += 1

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def write(self, events: Iterable) -> list[dict]:
        """Number ``events`` (dicts, or objects with ``to_dict()``) after the last one and append
        them in one write; -> them as written. A failed write (a full disk) is logged once per
        failure streak; the run goes on."""
        out = []
        for e in events:
            d = dict(e if isinstance(e, dict) else e.to_dict())
            self.last_seq += 1
            d["event_seq"] = self.last_seq
            out.append(d)
        if not out:
            return out
        data = "".join(json.dumps(d, default=jsonable, separators=(",", ":")) + "\n" for d in out).encode()
        try:
            if self._lines >= self.keep:
                self._rotate()
            os.write(self._fd, data)
            self._lines += len(out)
            self._failing = False
        except OSError as e:
            if not self._failing:
                log.warning("cannot write the live view's event log %s: %s", self.path, e.strerror or e)
            self._failing = True
        return out

    def _rotate(self) -> None:
        os.replace(self.path, self.old_path)      # the open descriptor follows the renamed file
        os.close(self._fd)
        self._fd = -1
        self._lines = 0
        self._fd = self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class EventLogReader:
    """Tails the log in ``directory``: ``history()`` once (the last ``keep`` events, oldest
    first), then ``read_new()`` for what was written since (whole lines, across rotations)."""

    def __init__(self, directory: str, keep: int = KEEP, name: str = NAME):
        self.keep = int(keep)
        self.path, self.old_path = _paths(directory, name)
        self._f = None                    # the current file, read up to the end of its last whole line
        self._rest = b""                  # a line being written (no newline yet)
        self._last = 0                    # the id of the last event read

    def _open_current(self) -> bool:
        try:
            self._f = open(self.path, "rb")  # noqa: SIM115 - held open between reads, closed by close()
        except FileNotFoundError:
            return False
        self._rest = b""
        return True

    def _take(self) -> list[dict]:
        data = self._rest + self._f.read()
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        return _parse(data[:cut].split(b"\n"))

    def history(self) -> list[dict]:
        """The newest ``keep`` events on disk, oldest first, and the tail set after them."""
        self._open_current()
        older = _parse(_read(self.old_path).split(b"\n"))
        current = self._take() if self._f is not None else []
        by_seq = {e["event_seq"]: e for e in older + current}
        events = [by_seq[k] for k in sorted(by_seq)][-self.keep:]
        self._last = events[-1]["event_seq"] if events else 0
        return events

    def read_new(self) -> list[dict]:
        """Events written since the last call, oldest first."""
        if self._f is None:
            return self._take() if self._open_current() else []
        out = self._take()
        try:
            rotated = os.stat(self.path).st_ino != os.fstat(self._f.fileno()).st_ino
        except FileNotFoundError:
            rotated = False               # between the writer's rename and its new file
        if rotated:                       # the rest of the old file, then the new one from its start
            out += self._take()
            self._f.close()
            self._f = None
            # rotated twice since the last look: the file in between is the older one now
            last = out[-1]["event_seq"] if out else self._last
            out += [e for e in _parse(_read(self.old_path).split(b"\n")) if e["event_seq"] > last]
            if self._open_current():
                out += self._take()
        if out:
            self._last = out[-1]["event_seq"]
        return out

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
