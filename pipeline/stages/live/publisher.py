"""Publishing of latest-frame capture: the staged frame to infer when it asks, source events in band.

Infer sends `Want` when idle; the publisher answers with the newest staged frame, never
blocking (a want may come from an infer that died since). Frames the motion gate skips need no
want. Source events wait in a queue
and go out in order with the frames as soon as a reader is connected.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Callable, Optional

from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.messages import EndOfStream, Frame, FrameMeta, SourceEvent

from .slots import SlotAllocator

log = logging.getLogger(__name__)


class Publisher:
    """``out``: the PUSH socket to the infer workers; ``slots``: the camera's `SlotAllocator`;
    ``uri``: named in the event log lines; ``make``: meta -> the `Frame` message (the camera's
    motion gate fills it in); ``on_drop``: called for each frame given up here.

    A frame the gate skips goes out at once: infer passes it on without the detector, so there is
    nothing to wait for, and a still camera's frames never wait on infer's round trip. A frame to
    detect is held until infer asks (`Want`); a newer frame taking its place is detected instead."""

    def __init__(self, out, slots: SlotAllocator, uri: str = "", source_id: int = 0,
                 make: Optional[Callable[[FrameMeta], Frame]] = None, on_drop: Optional[Callable[[], None]] = None):
        self.out = out
        self.slots = slots
        self.make = make or Frame
        self.on_drop = on_drop or (lambda: None)
        self.uri = uri
        self.source_id = source_id
        self.wants = 0
        self.published = 0
        self.held: Optional[Frame] = None   # taken from the slots, not sent yet (main thread only)
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
        """Send queued source events; while no infer is connected (restarting) they wait here.
        A held frame made before a loss is never sent after it."""
        while True:
            with self._lock:
                if not self._events:
                    return
                ev = self._events[0]
            if ev.event == "source_lost":
                self.drop_held()
            if not busmod.try_send(self.out, ev):
                return
            with self._lock:
                self._events.popleft()
            log.warning("%s: %s%s", ev.event, self.uri, f" ({ev.reason})" if ev.reason else "")

    def drop_held(self) -> None:
        """Give up the held frame (its slot is free again)."""
        if self.held is not None:
            self.slots.release(self.held.meta)
            self.held = None
            self.on_drop()

    def publish(self) -> Optional[FrameMeta]:
        """Send the newest frame if it may go (skipped by the gate, or infer asked for one) -> its
        meta, or None (nothing sent)."""
        meta = self.slots.take_staged()
        if meta is not None:
            msg = self.make(meta)
            if self.held is not None:  # not sent in time: the newer frame goes in its place
                if self.held.detect and not msg.detect:
                    msg = dataclasses.replace(msg, detect=True)
                self.drop_held()
            self.held = msg
        msg = self.held
        if msg is None or (msg.detect and self.wants <= 0):
            return None
        if not busmod.try_send(self.out, msg):
            self.wants = 0  # the (new) infer asks again
            return None
        self.held = None
        self.wants = max(0, self.wants - 1)
        self.published += 1
        return msg.meta

    def end_of_stream(self, consumers: int, stop) -> None:
        """One `EndOfStream` per infer worker (the socket deals round-robin)."""
        for _ in range(consumers):
            busmod.send(self.out, EndOfStream(self.published, source_id=self.source_id), stop=stop)
