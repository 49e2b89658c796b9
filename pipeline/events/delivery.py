"""Event delivery that never blocks the pipeline: a bounded queue and one worker thread.

``offer(event)`` only appends to a bounded in-memory queue (a lock held for microseconds) and
returns; a worker thread sends. When the queue is full the OLDEST waiting item is dropped and
counted: for live monitoring the newest events matter most, and the zone/line totals travel
inside every event (and as retained MQTT counts), so a dropped old event loses no total.

Failures are retried with capped exponential backoff with jitter; each failed attempt logs
one line (so an unreachable endpoint logs once per backoff step, not once per event), and a
recovery logs one line. Subclasses implement ``_encode(item)`` and ``_send(lane, item)``.

With an outbox (:mod:`outbox`, on by default) the worker moves every offered event from the
memory queue to the target's file on disk before it sends it, and removes it there once the
target took it: events a target could not take outlast the run and are delivered first, in
order, by the next run. The memory queue then only bridges ``offer`` and the worker.
"""

from __future__ import annotations

import collections
import itertools
import logging
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

from .outbox import Outbox, OutboxConfig, OutboxError, Row

log = logging.getLogger(__name__)


class RetryableError(Exception):
    """A failed attempt worth retrying (connection refused, timeout, HTTP 5xx)."""


class PermanentError(Exception):
    """A failure that retrying cannot fix (HTTP 4xx): the item is counted as rejected."""


class Backoff:
    """Capped exponential backoff with jitter: initial, initial*factor, ... <= max_s, each
    delay scaled by a random factor in [1 - jitter, 1]."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0, factor: float = 2.0, jitter: float = 0.2,
                 rng: Optional[random.Random] = None):
        if not (0 < initial_s <= max_s) or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff: need 0 < initial_s <= max_s, factor >= 1, 0 <= jitter < 1")
        self.initial_s, self.max_s, self.factor, self.jitter = initial_s, max_s, factor, jitter
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt (and one step up)."""
        base = min(self.max_s, self.initial_s * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        return base * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempt = 0


class BoundedQueue:
    """FIFO over named lanes, each with its own capacity (e.g. many small events, a few large
    snapshots); ``put`` never blocks: a full lane drops its oldest item. Thread-safe."""

    def __init__(self, capacities: Dict[str, int]):
        if not capacities or any(c < 1 for c in capacities.values()):
            raise ValueError("every lane needs a capacity >= 1")
        self._lanes: Dict[str, Deque[Tuple[int, Any]]] = {k: collections.deque() for k in capacities}
        self._cap = dict(capacities)
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self.dropped: Dict[str, int] = {k: 0 for k in capacities}
        self._closed = False

    def put(self, item: Any, lane: str = "event") -> bool:
        """Append; False if an older item had to be dropped to make room (or the queue is closed)."""
        with self._cond:
            if self._closed:
                self.dropped[lane] += 1
                return False
            q = self._lanes[lane]
            ok = True
            if len(q) >= self._cap[lane]:
                q.popleft()
                self.dropped[lane] += 1
                ok = False
            q.append((next(self._seq), item))
            self._cond.notify()
            return ok

    def get(self, timeout: Optional[float] = None, lanes: Optional[Iterable[str]] = None) -> Optional[Tuple[str, Any]]:
        """The oldest item of any lane (or of ``lanes``) as (lane, item), waiting up to ``timeout``;
        None if none."""
        names = list(self._lanes) if lanes is None else list(lanes)
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or any(self._lanes[k] for k in names), timeout):
                return None
            best = None
            for name in names:
                q = self._lanes[name]
                if q and (best is None or q[0][0] < self._lanes[best][0][0]):
                    best = name
            if best is None:
                return None
            return best, self._lanes[best].popleft()[1]

    def take(self, lane: str) -> List[Any]:
        """Every item waiting in ``lane``, oldest first (the lane is then empty)."""
        with self._cond:
            q = self._lanes[lane]
            out = [it for _, it in q]
            q.clear()
            return out

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for an item in any lane (or ``close``); True if one is there."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed or any(self._lanes.values()), timeout) and \
                any(self._lanes.values())

    def waiting(self, lane: str) -> int:
        with self._cond:
            return len(self._lanes[lane])

    def put_front(self, item: Any, lane: str) -> None:
        """Give back an item taken with ``get`` (kept first; dropped if the lane filled meanwhile)."""
        with self._cond:
            q = self._lanes[lane]
            if len(q) >= self._cap[lane]:
                self.dropped[lane] += 1
                return
            q.appendleft((-1, item))
            self._cond.notify()

    def count_drop(self, lane: str, n: int = 1) -> None:
        """Count items lost outside the queue (e.g. one in hand when the worker stops)."""
        with self._cond:
            self.dropped[lane] += n

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def drain(self) -> List[Tuple[str, Any]]:
        with self._cond:
            out = [(k, it) for k, q in self._lanes.items() for _, it in q]
            for q in self._lanes.values():
                q.clear()
            return out

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._lanes.values())


@dataclass
class DeliveryStats:
    """Counters of one delivery target's events (safe to log or export: no credentials).

    offered:  items given to ``offer``
    sent:     delivered (MQTT: acknowledged by the broker; webhook: answered 2xx)
    dropped:  lost without a try: pushed out of the full memory queue or the full outbox, or
              still in memory at ``close`` (without an outbox)
    failed:   failed attempts (each is retried): connection errors, timeouts, HTTP 5xx
    rejected: refused for good (HTTP 4xx), not retried
    queued:   waiting in memory now (every lane)
    pending:  events not delivered yet that the target still holds: in its outbox (kept for
              the next run after ``close``) plus, before ``close``, those waiting in memory
    restored: events found in the outbox at start (left by an earlier run; part of ``pending``
              until delivered)
    outbox:   the outbox file ("" without one)
    connected: the last attempt (MQTT: the connection) succeeded
    dropped_other: items of other lanes (MQTT snapshots) dropped

    At ``close``: offered + restored == sent + rejected + dropped + pending.
    """

    target: str
    offered: int = 0
    sent: int = 0
    dropped: int = 0
    failed: int = 0
    rejected: int = 0
    queued: int = 0
    pending: int = 0
    restored: int = 0
    outbox: str = ""
    connected: bool = False
    last_error: str = ""
    dropped_other: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def delivery_summary(stats: Iterable[Any]) -> Dict[str, dict]:
    """``DeliveryStats`` (or their dicts, as in the profile) -> ``{target: {delivered, pending,
    dropped, rejected, outbox}}`` for the profile's ``delivery`` section and the final line."""
    out: Dict[str, dict] = {}
    for s in stats:
        d = s.to_dict() if isinstance(s, DeliveryStats) else dict(s)
        out[d["target"]] = {"delivered": d.get("sent", 0), "pending": d.get("pending", 0),
                            "dropped": d.get("dropped", 0), "rejected": d.get("rejected", 0),
                            "outbox": d.get("outbox", "")}
    return out


def describe_delivery(summary: Dict[str, dict]) -> str:
    """One line: ``mqtt mqtt://h:1883 delivered 126, pending 0, dropped 0; webhook ...``."""
    parts = []
    for target, d in summary.items():
        pending = f"pending {d['pending']}" + (f" (in {d['outbox']})" if d["pending"] and d.get("outbox") else "")
        rejected = f", rejected {d['rejected']}" if d.get("rejected") else ""
        parts.append(f"{target} delivered {d['delivered']}, {pending}, dropped {d['dropped']}{rejected}")
    return "; ".join(parts)


OUTBOX_FULL_LOG_S = 60.0   # at most one "outbox full" line this often
SPOOL_RETRY_S = 5.0        # after a failed outbox write, events are sent from memory this long


class Delivery:
    """Base of a delivery target: a bounded queue, an optional outbox on disk and a worker
    thread started by ``start()``.

    name:        safe to log (no credentials)
    capacities:  lane -> queue capacity; ``offer`` uses the lane "event" (the only lane that goes
                 through the outbox)
    backoff:     retry policy of ``_send`` failures
    outbox:      where and how much to keep on disk (None or disabled: memory only)
    outbox_key:  the file name stem of this target's outbox (:func:`outbox.target_key`)
    """

    def __init__(self, name: str, capacities: Dict[str, int], backoff: Optional[Backoff] = None,
                 outbox: Optional[OutboxConfig] = None, outbox_key: str = ""):
        self.name = name
        self.queue = BoundedQueue(capacities)
        self.backoff = backoff or Backoff()
        self.outbox_config = outbox if outbox is not None and outbox.enabled else None
        self.outbox_key = outbox_key
        self.outbox: Optional[Outbox] = None
        self._other_lanes = [k for k in capacities if k != "event"]
        self._cursor = 0                  # the newest outbox row handed to the target (worker)
        self._spool_failed_until = 0.0
        self._last_full_log = -1e9
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stats = DeliveryStats(target=name)
        self._thread: Optional[threading.Thread] = None
        self._failing = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    # --- caller side (never blocks) ----------------------------------------------------------

    def start(self) -> "Delivery":
        """Open the outbox (in the caller's thread: a problem is one warning line, and the
        target then keeps its events in memory only) and start the worker thread."""
        if self._thread is None:
            self._open_outbox()
            self._thread = threading.Thread(target=self._run, name=f"delivery {self.name}", daemon=True)
            self._thread.start()
        return self

    def _open_outbox(self) -> None:
        cfg = self.outbox_config
        if cfg is None or self.outbox is not None:
            return
        path = cfg.path_for(self.outbox_key)
        try:
            self.outbox = Outbox.open(path, cfg.max_events, cfg.max_bytes, target=self.name)
        except OutboxError as e:
            log.warning("%s: %s; undelivered events of this run are kept in memory only (outbox.dir gives a "
                        "target another folder)", self.name, e)
            self._note(error=str(e))
            return
        n = len(self.outbox)
        with self._lock:
            self._stats.outbox = str(path)
            self._stats.restored = n
        if n:
            log.info("%s: %d undelivered event(s) from an earlier run in %s, sent first", self.name, n, path)

    def offer(self, event: Any, lane: str = "event") -> bool:
        """Queue an event for sending; never blocks. False when an older item was dropped to make
        room or the target is closed (the drop is counted either way)."""
        if lane == "event":
            with self._lock:
                self._stats.offered += 1
        return self.queue.put(event, lane)

    def stats(self) -> DeliveryStats:
        with self._lock:
            s = DeliveryStats(**asdict(self._stats))
        with self.queue._cond:
            s.dropped += self.queue.dropped.get("event", 0)
            s.dropped_other = sum(v for k, v in self.queue.dropped.items() if k != "event")
        s.queued = len(self.queue)   # every lane
        s.pending = (len(self.outbox) if self.outbox is not None else 0) + self.queue.waiting("event")
        return s

    def close(self, timeout: float = 5.0) -> DeliveryStats:
        """Send what is waiting for up to ``timeout`` seconds (it stops at once for a failing
        target), then stop. With an outbox, what is left stays in it for the next run; without,
        what is left in memory is counted as dropped. Safe to call twice."""
        deadline = time.monotonic() + max(0.0, timeout)
        self._close_deadline = deadline
        if self._thread is not None:
            while self._has_work() and self._thread.is_alive() and time.monotonic() < deadline and not self._failing:
                time.sleep(0.02)
            self._stop.set()
            self.queue.close()
            self._thread.join(max(0.1, deadline - time.monotonic()))
        else:
            self._stop.set()
            self.queue.close()
        left = self.queue.drain()
        keep = [item for lane, item in left if lane == "event" and self.outbox is not None]
        for lane, _ in left:
            if not (lane == "event" and self.outbox is not None):
                self.queue.count_drop(lane)
        if keep and not self._spool_items(keep):
            self.queue.count_drop("event", len(keep))
        self._closed()
        if self.outbox is not None:
            self._settle()
            self.outbox.close()
        return self.stats()

    def _has_work(self) -> bool:
        if len(self.queue):
            return True
        return self.outbox is not None and bool(self.outbox.next_after(self._cursor))

    # --- worker side ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._opened()
            while not self._stop.is_set():
                got = self._next() if self.outbox is not None else self.queue.get(timeout=0.5)
                if got is None:
                    self._idle()
                    continue
                lane, item = got
                if lane == "event" and not isinstance(item, Row):
                    item = Row(0, *self._encode(item))
                self._attempt(lane, item)
        except Exception:  # a bug must not pass silently, nor take the pipeline down
            log.exception("%s: delivery worker stopped", self.name)

    def _next(self, timeout: float = 0.5) -> Optional[Tuple[str, Any]]:
        """With an outbox: move the offered events to it, then the next item to send: another
        lane's (memory only), else the outbox's next row; None after ``timeout`` without any."""
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            self._spool()
            self._settle()
            got = self.queue.get(0, self._other_lanes) if self._other_lanes else None
            if got is not None:
                return got
            rows = self.outbox.next_after(self._cursor)
            if rows:
                return "event", rows[0]
            if time.monotonic() < self._spool_failed_until:   # the outbox cannot be written: send
                got = self.queue.get(0, ["event"])                # from memory meanwhile, after its rows
                if got is not None:
                    return got
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.queue.wait(min(left, 0.2))
        return None

    def _spool(self) -> None:
        """Move the offered events from memory to the outbox (worker thread; one transaction)."""
        if self.outbox is None or time.monotonic() < self._spool_failed_until:
            return
        items = self.queue.take("event")
        if items and not self._spool_items(items):
            for it in reversed(items):        # they wait in memory (bounded) meanwhile
                self.queue.put_front(it, "event")

    def _spool_items(self, items: List[Any]) -> bool:
        try:
            dropped = self.outbox.add([self._encode(it) for it in items])
        except OutboxError as e:
            self._spool_failed_until = time.monotonic() + SPOOL_RETRY_S
            log.warning("%s: %s; events wait in memory meanwhile", self.name, e)
            self._note(error=str(e))
            return False
        if dropped:
            with self._lock:
                self._stats.dropped += dropped
                total = self._stats.dropped
            now = time.monotonic()
            if now - self._last_full_log >= OUTBOX_FULL_LOG_S:
                self._last_full_log = now
                log.warning("%s: outbox full (%d events, %.1f MB at most): the oldest are dropped (%d so far)",
                            self.name, self.outbox.max_events, self.outbox.max_bytes / 1e6, total)
        return True

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (a backoff step, a connection), moving offered events to the outbox
        meanwhile; True if the worker is stopping."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return self._stop.is_set()
            if self._stop.wait(min(left, 0.2)):
                return True
            self._spool()
            self._settle()

    def _attempt(self, lane: str, item: Any) -> None:
        """Send one item, retrying with backoff until it is sent, rejected, dropped from the
        outbox by its bound, or we stop."""
        while True:
            try:
                self._send(lane, item)
            except PermanentError as e:
                self._done(lane, item, rejected=True, error=str(e))
                self._log_rejected(e)
                return
            except RetryableError as e:
                delay = self.backoff.next()
                self._failing = True
                self._note(failed=1, connected=False, error=str(e))
                log.warning("%s: %s (attempt %d; retrying in %.1fs)", self.name, e, self.backoff.attempt, delay)
                if self._pause(delay):
                    self._give_up(lane, item)
                    return
                if isinstance(item, Row) and item.id and not self.outbox.exists(item.id):
                    self._cursor = max(self._cursor, item.id)   # dropped by the bound (counted)
                    return
                continue
            if self._failing:
                log.warning("%s: delivering again after %d failed attempt(s)", self.name, self.backoff.attempt)
            self._failing = False
            self.backoff.reset()
            self._note(connected=True)
            self._done(lane, item)
            return

    def _done(self, lane: str, item: Any, rejected: bool = False, error: Optional[str] = None) -> None:
        """``item`` was taken (or refused for good): counted once, and removed from the outbox."""
        n = 1
        if isinstance(item, Row) and item.id:
            self._cursor = max(self._cursor, item.id)
            n = self.outbox.delete([item.id])   # 0: the bound dropped it meanwhile (counted there)
        if lane != "event":
            return
        if rejected:
            self._note(rejected=n, error=error)
        else:
            self._note(sent=n * self._counts_on_send())

    def _give_up(self, lane: str, item: Any) -> None:
        """Stopping with ``item`` in hand: an outbox row stays there; anything else is dropped."""
        if not (isinstance(item, Row) and item.id):
            self.queue.count_drop(lane)

    _last_reject_log = 0.0

    def _log_rejected(self, e: Exception) -> None:
        now = time.monotonic()
        if now - self._last_reject_log >= 10.0:     # at most one line per 10 s
            self._last_reject_log = now
            log.warning("%s: %s (event dropped, not retried)", self.name, e)

    def _note(self, sent: int = 0, failed: int = 0, rejected: int = 0, connected: Optional[bool] = None,
              error: Optional[str] = None) -> None:
        with self._lock:
            s = self._stats
            s.sent += sent
            s.failed += failed
            s.rejected += rejected
            if connected is not None:
                s.connected = connected
            if error is not None:
                s.last_error = error

    # --- hooks ------------------------------------------------------------------------------

    def _encode(self, item: Any) -> Tuple[str, bytes]:
        """An offered event -> (route, body): what the outbox keeps and ``_send`` gets as a Row."""
        raise NotImplementedError

    def _send(self, lane: str, item: Any) -> None:
        """Deliver one item (a :class:`Row` on the lane "event") or raise RetryableError /
        PermanentError (messages safe to log)."""
        raise NotImplementedError

    def _counts_on_send(self) -> int:
        """How many ``sent`` one successful ``_send`` adds (0 where acknowledgements count)."""
        return 1

    def _settle(self) -> None:
        """Account for acknowledgements that came meanwhile (worker thread, and ``close``)."""

    def _opened(self) -> None:
        """Worker start (in the worker thread)."""

    def _idle(self) -> None:
        """Called about every 0.5 s while nothing waits (in the worker thread)."""

    def _closed(self) -> None:
        """After the worker stopped (in the caller's thread; ``self._close_deadline`` is when
        ``close`` should return)."""
