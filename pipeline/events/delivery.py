"""Event delivery that never blocks the pipeline: a bounded queue and one worker thread.

``offer(event)`` only appends to a bounded in-memory queue (a lock held for microseconds) and
returns; a worker thread sends. When the queue is full the OLDEST waiting item is dropped and
counted: for live monitoring the newest events matter most, and the zone/line totals travel
inside every event (and as retained MQTT counts), so a dropped old event loses no total.

Failures are retried with capped exponential backoff with jitter; each failed attempt logs
one line (so an unreachable endpoint logs once per backoff step, not once per event), and a
recovery logs one line. Subclasses implement ``_send(lane, item)``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Deque, Dict, List, Optional, Tuple

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

    def get(self, timeout: Optional[float] = None) -> Optional[Tuple[str, Any]]:
        """The oldest item of any lane as (lane, item), waiting up to ``timeout``; None if none."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or any(self._lanes.values()), timeout):
                return None
            best = None
            for name, q in self._lanes.items():
                if q and (best is None or q[0][0] < self._lanes[best][0][0]):
                    best = name
            if best is None:
                return None
            return best, self._lanes[best].popleft()[1]

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
    dropped:  lost without a try: pushed out of the full queue, or still queued at ``close``
    failed:   failed attempts (each is retried): connection errors, timeouts, HTTP 5xx
    rejected: refused for good (HTTP 4xx), not retried
    queued:   waiting now
    connected: the last attempt (MQTT: the connection) succeeded
    dropped_other: items of other lanes (MQTT snapshots) dropped
    """

    target: str
    offered: int = 0
    sent: int = 0
    dropped: int = 0
    failed: int = 0
    rejected: int = 0
    queued: int = 0
    connected: bool = False
    last_error: str = ""
    dropped_other: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class Delivery:
    """Base of a delivery target: a bounded queue and a worker thread started by ``start()``.

    name:        safe to log (no credentials)
    capacities:  lane -> queue capacity; ``offer`` uses the lane "event"
    backoff:     retry policy of ``_send`` failures
    """

    def __init__(self, name: str, capacities: Dict[str, int], backoff: Optional[Backoff] = None):
        self.name = name
        self.queue = BoundedQueue(capacities)
        self.backoff = backoff or Backoff()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stats = DeliveryStats(target=name)
        self._thread: Optional[threading.Thread] = None
        self._failing = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    # --- caller side (never blocks) ----------------------------------------------------------

    def start(self) -> "Delivery":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"delivery {self.name}", daemon=True)
            self._thread.start()
        return self

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
            s.dropped = self.queue.dropped.get("event", 0)
            s.dropped_other = sum(v for k, v in self.queue.dropped.items() if k != "event")
        s.queued = len(self.queue)   # every lane
        return s

    def close(self, timeout: float = 5.0) -> DeliveryStats:
        """Send what is queued for up to ``timeout`` seconds, then stop; what is left is counted
        as dropped. Safe to call twice."""
        deadline = time.monotonic() + max(0.0, timeout)
        self._close_deadline = deadline
        if self._thread is not None:
            while len(self.queue) and self._thread.is_alive() and time.monotonic() < deadline and not self._failing:
                time.sleep(0.02)
            self._stop.set()
            self.queue.close()
            self._thread.join(max(0.1, deadline - time.monotonic()))
        else:
            self._stop.set()
            self.queue.close()
        for lane, _ in self.queue.drain():
            self.queue.count_drop(lane)
        self._closed()
        return self.stats()

    # --- worker side ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._opened()
            while not self._stop.is_set():
                got = self.queue.get(timeout=0.5)
                if got is None:
                    self._idle()
                    continue
                lane, item = got
                self._attempt(lane, item)
        except Exception:  # a bug must not pass silently, nor take the pipeline down
            log.exception("%s: delivery worker stopped", self.name)

    def _attempt(self, lane: str, item: Any) -> None:
        """Send one item, retrying with backoff until it is sent, rejected or we stop."""
        while True:
            try:
                self._send(lane, item)
            except PermanentError as e:
                self._note(rejected=1, error=str(e))
                self._log_rejected(e)
                return
            except RetryableError as e:
                delay = self.backoff.next()
                self._failing = True
                self._note(failed=1, connected=False, error=str(e))
                log.warning("%s: %s (attempt %d; retrying in %.1fs)", self.name, e, self.backoff.attempt, delay)
                if self._stop.wait(delay):
                    self.queue.count_drop(lane)
                    return
                continue
            if self._failing:
                log.warning("%s: delivering again after %d failed attempt(s)", self.name, self.backoff.attempt)
            self._failing = False
            self.backoff.reset()
            self._note(sent=self._counts_on_send(), connected=True)
            return

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

    def _send(self, lane: str, item: Any) -> None:
        """Deliver one item or raise RetryableError / PermanentError (messages safe to log)."""
        raise NotImplementedError

    def _counts_on_send(self) -> int:
        """How many ``sent`` one successful ``_send`` adds (0 where acknowledgements count)."""
        return 1

    def _opened(self) -> None:
        """Worker start (in the worker thread)."""

    def _idle(self) -> None:
        """Called about every 0.5 s while the queue is empty (in the worker thread)."""

    def _closed(self) -> None:
        """After the worker stopped (in the caller's thread; ``self._close_deadline`` is when
        ``close`` should return)."""
