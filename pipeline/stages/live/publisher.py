"""Publishing of latest-frame capture: the staged frame to infer when it asks, source events in band.

Infer sends `Want` when idle; the publisher answers with the newest staged frame, never
blocking (a want may come from an infer that died since). Source events wait in a queue
and go out in order with the frames as soon as a reader is connected.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Callable, Optional

from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.messages import EndOfStream, Frame, FrameMeta, SourceEvent

from .slots import SlotAllocator

log = logging.getLogger(__name__)


class Publisher:
    """``out``: the PUSH socket to the infer workers; ``uri``: named in the event log lines."""

    def __init__(self, out, uri: str = "", source_id: int = 0, make: Optional[Callable[[FrameMeta], Frame]] = None):
        self.out = out
        self.make = make or Frame   # meta -> the Frame message (the camera's motion gate fills it in)
        self.uri = uri
        self.source_id = source_id
        self.wants = 0
        self.published = 0
        self._events: collections.deque = collections.deque()
        self._lock = threading.Lock()

    def wanted(self, n: int) -> None:
        """``n`` wants received; one infer: at most one outstanding (a resent want does not add up)."""
        self.wants = min(1, self.wants + n)

    @property
    def pending_events(self) -> int:
        with self._lock:
            return len(self._events)

    def queue_event(self, ev: SourceEvent) -> None:
        with self._lock:
            self._events.append(ev)

    def flush_events(self) -> None:
        """Send queued source events; while no infer is connected (restarting) they wait here."""
        while True:
            with self._lock:
                if not self._events:
                    return
                ev = self._events[0]
            if not busmod.try_send(self.out, ev):
                return
            with self._lock:
                self._events.popleft()
            log.warning("%s: %s%s", ev.event, self.uri, f" ({ev.reason})" if ev.reason else "")

    def publish(self, slots: SlotAllocator) -> Optional[FrameMeta]:
        """Send the staged frame if infer asked for one -> its meta, or None (nothing sent)."""
        if self.wants <= 0:
            return None
        meta = slots.take_staged()
        if meta is None:
            return None
        if not busmod.try_send(self.out, self.make(meta)):
            slots.unpublish(meta)
            self.wants = 0  # the (new) infer asks again
            return None
        self.wants -= 1
        self.published += 1
        return meta

    def end_of_stream(self, consumers: int, stop) -> None:
        """One `EndOfStream` per infer worker (the socket deals round-robin)."""
        for _ in range(consumers):
            busmod.send(self.out, EndOfStream(self.published, source_id=self.source_id), stop=stop)
