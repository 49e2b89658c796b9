"""A bounded on-disk outbox per delivery target: the events it has not taken yet, in order.

    box = Outbox.open(Path("~/.cache/trackpipe/outbox/webhook-....sqlite"), max_events=100_000,
                      max_bytes=100_000_000, target="webhook http://host:8080/hook")
    dropped = box.add([("", b'{"event": ...}'), ...])   # oldest rows dropped beyond the bounds
    row = box.next_after(0)                            # the oldest row: Row(id, route, body)
    box.delete([row.id])                               # delivered (or refused for good)
    box.close()                                        # an empty outbox removes its file

Every event a target is given goes through its outbox (write-ahead): it leaves the file only
when the target acknowledged it (MQTT: PUBACK; webhook: a 2xx or a final 4xx). So events a
target could not take survive the end of the run, a crash or a SIGKILL of the process, and
are delivered first, in order, by the next run that delivers to that target.

Why SQLite (standard library) and not an append-only file: removing delivered rows from the
head and the oldest rows on overflow are single statements on a table ordered by its key;
every commit is atomic (WAL), so a killed process leaves a row or none, never half of one.
An append-only file would need an acknowledged-offset file beside it, compaction, and repair
of a torn last line. The project's recording index uses SQLite the same way (WAL, one writer).

One writer: one process per file, held by an exclusive ``flock`` on ``<file>.lock`` (a second
process gets :class:`OutboxBusy`); inside it, the target's worker thread (and ``close``),
serialised by a lock. ``synchronous=NORMAL`` in WAL mode: a committed row survives a killed
process; a power cut may lose the last commits.

Bounds: ``max_events`` rows and ``max_bytes`` bytes of bodies (SQLite's own overhead comes on
top); beyond either, the oldest rows are deleted and counted (``add`` returns how many).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"


class OutboxError(Exception):
    """The outbox file cannot be opened or written (message safe to log: a path, no credentials)."""


class OutboxBusy(OutboxError):
    """Another process holds the outbox of this target."""


def default_dir() -> Path:
    """``<cache>/outbox``: ``$TRACKPIPE_CACHE``, else ``~/.cache/trackpipe``."""
    from trackpipe.models.onnx_export import default_cache_dir  # the one definition of the cache root
    return Path(default_cache_dir()).expanduser() / "outbox"


def target_key(kind: str, host: str, port: int, identity: str) -> str:
    """A file name stem per target: readable host and port, plus a hash of everything that makes
    the target (URL with query, user, topic prefix) so that no credential shows in the name."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    safe_host = re.sub(r"[^A-Za-z0-9.-]", "_", host or "_")
    return f"{kind}-{safe_host}-{port}-{digest}"


@dataclass
class OutboxConfig:
    """``outbox:`` of an ``mqtt:`` or ``webhooks:`` entry: ``true`` (default), ``false``, a
    folder, or a mapping of these keys.

    enabled:    keep undelivered events on disk (false: in memory only, as ``queue_size`` allows)
    dir:        folder of the outbox files (default ``<cache>/outbox``; one file per target)
    max_events: events kept at most; beyond it the oldest are dropped and counted
    max_mb:     megabytes (10^6 bytes) of event JSON kept at most; likewise
    """

    enabled: bool = True
    dir: Optional[str] = None
    max_events: int = 100_000
    max_mb: float = 100.0

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1_000_000)

    def path_for(self, key: str) -> Path:
        return Path(self.dir).expanduser() / f"{key}.sqlite" if self.dir else default_dir() / f"{key}.sqlite"

    @classmethod
    def parse(cls, value: Any, where: str = "outbox") -> "OutboxConfig":
        """true/None -> defaults; false -> off; a string -> that folder; a mapping -> its keys.
        Raises ValueError with a one-line message naming ``where``."""
        if isinstance(value, cls):
            return value
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(enabled=False)
        if isinstance(value, (str, os.PathLike)):
            value = {"dir": os.fspath(value)}
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected true, false, a folder or a mapping, got {value!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for k in value:
            if k not in names:
                raise ValueError(f"{where}: unknown key '{k}' (allowed: {', '.join(names)})")
        out = cls(**value)
        if not isinstance(out.enabled, bool):
            raise ValueError(f"{where}.enabled: expected true or false, got {out.enabled!r}")
        if out.dir is not None and (not isinstance(out.dir, str) or not out.dir):
            raise ValueError(f"{where}.dir: expected a folder, got {out.dir!r}")
        n = out.max_events
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100_000_000:
            raise ValueError(f"{where}.max_events: expected an integer 1..100000000, got {n!r}")
        m = out.max_mb
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m <= 1_000_000:
            raise ValueError(f"{where}.max_mb: expected a number in (0, 1000000], got {m!r}")
        return out


@dataclass
class Row:
    """One waiting event: ``id`` (increasing, the order of delivery), ``route`` (MQTT: the
    topic; webhooks: empty), ``body`` (the bytes to send)."""

    id: int
    route: str
    body: bytes


class Outbox:
    """The outbox file of one target (see the module docstring). Thread-safe; after ``close``
    every call is a no-op (``count`` and ``nbytes`` keep their last values)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int, max_events: int, max_bytes: int):
        self.path = path
        self._conn: Optional[sqlite3.Connection] = conn
        self._lock_fd = lock_fd
        self._lock = threading.Lock()
        self.max_events, self.max_bytes = max_events, max_bytes
        self.count, self.nbytes = conn.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM events").fetchone()

    @classmethod
    def open(cls, path: Path, max_events: int, max_bytes: int, target: str = "") -> "Outbox":
        """Open (or create) the outbox at ``path`` and hold it; OutboxBusy if another process
        holds it, OutboxError if it cannot be created or read."""
        path = Path(path).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise OutboxError(f"cannot create the outbox {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutboxBusy(f"the outbox {path} is held by another process (pid {other})") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))   # events may be private: 0600
            conn = sqlite3.connect(str(path), timeout=5.0, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "route TEXT NOT NULL, body BLOB NOT NULL, t REAL NOT NULL)")
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
                conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [("schema", SCHEMA_VERSION), ("target", target)])
                box = cls(path, conn, fd, max_events, max_bytes)
            except BaseException:
                conn.close()
                raise
        except (OSError, sqlite3.Error) as e:
            os.close(fd)
            raise OutboxError(f"cannot use the outbox {path}: {e}") from None
        if box.count > max_events or box.nbytes > max_bytes:   # the bounds were lowered since
            with box._lock:
                box._trim()
        return box

    # --- writing (one writer: the target's worker thread, then close) --------------------------

    def add(self, rows: Sequence[Tuple[str, bytes]]) -> int:
        """Append ``(route, body)`` rows in one transaction; returns how many of the oldest rows
        the bounds dropped (possibly some of these). OutboxError if the write fails (nothing of
        it is kept then)."""
        if not rows:
            return 0
        with self._lock:
            if self._conn is None:
                raise OutboxError(f"the outbox {self.path} is closed")
            now = time.time()
            try:
                with self._conn:   # BEGIN ... COMMIT (ROLLBACK on error)
                    self._conn.execute("BEGIN")
                    self._conn.executemany("INSERT INTO events (route, body, t) VALUES (?, ?, ?)",
                                           [(r, b, now) for r, b in rows])
                    self.count += len(rows)
                    self.nbytes += sum(len(b) for _, b in rows)
                    return self._trim()
            except sqlite3.Error as e:
                self.count, self.nbytes = self._conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM events").fetchone()
                raise OutboxError(f"cannot write the outbox {self.path}: {e}") from None

    def _trim(self) -> int:
        over_n, over_b = self.count - self.max_events, self.nbytes - self.max_bytes
        if over_n <= 0 and over_b <= 0:
            return 0
        n = b = 0
        cut = None
        cur = self._conn.execute("SELECT id, LENGTH(body) FROM events ORDER BY id")
        try:
            for rid, size in cur:
                if n >= over_n and b >= over_b:
                    break
                n, b, cut = n + 1, b + size, rid
        finally:
            cur.close()
        if cut is not None:
            self._conn.execute("DELETE FROM events WHERE id <= ?", (cut,))
        self.count -= n
        self.nbytes -= b
        return n

    def delete(self, ids: Iterable[int]) -> int:
        """Remove delivered rows; returns how many were still there (a row the bounds dropped
        meanwhile is not there)."""
        ids = [int(i) for i in ids if i]
        if not ids:
            return 0
        with self._lock:
            if self._conn is None:
                return 0
            try:
                with self._conn:
                    self._conn.execute("BEGIN")
                    sizes = [r[0] for i in ids for r in self._conn.execute(
                        "DELETE FROM events WHERE id = ? RETURNING LENGTH(body)", (i,))]
            except sqlite3.Error as e:
                log.warning("outbox %s: cannot remove delivered events: %s (they may be sent again)", self.path, e)
                return len(ids)
            self.count -= len(sizes)
            self.nbytes -= sum(sizes)
            return len(sizes)

    # --- reading ------------------------------------------------------------------------------

    def next_after(self, last_id: int, limit: int = 1) -> List[Row]:
        """Up to ``limit`` rows with ids above ``last_id``, oldest first."""
        with self._lock:
            if self._conn is None or not self.count:
                return []
            try:
                return [Row(i, r, bytes(b)) for i, r, b in self._conn.execute(
                    "SELECT id, route, body FROM events WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit))]
            except sqlite3.Error as e:
                log.warning("outbox %s: cannot read: %s", self.path, e)
                return []

    def exists(self, row_id: int) -> bool:
        with self._lock:
            if self._conn is None:
                return False
            return self._conn.execute("SELECT 1 FROM events WHERE id = ?", (row_id,)).fetchone() is not None

    def __len__(self) -> int:
        return self.count

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Close the file and release it; an empty outbox removes its file (the lock file stays:
        removing it could let two processes hold one outbox). Safe to call twice."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.close()
                if self.count == 0:
                    for suffix in ("", "-wal", "-shm", "-journal"):
                        try:
                            os.unlink(f"{self.path}{suffix}")
                        except FileNotFoundError:
                            pass
            except (OSError, sqlite3.Error) as e:
                log.warning("outbox %s: %s", self.path, e)
            finally:
                os.close(self._lock_fd)   # releases the flock
