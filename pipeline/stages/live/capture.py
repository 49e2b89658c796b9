"""Latest-frame capture: a grabber thread and the publishing main thread of the capture process.

It ties the three parts together: `SlotAllocator` (which slot a frame goes into),
`SourceWatchdog` (up or lost, reconnect backoff) and `Publisher` (frames to infer when it
asks, source events in band). The grabber reads the source as fast as it delivers into a
slot and stages it; the main thread waits on infer's wants and the grabber's wake-ups.
Nothing made before a stall is published after it: the frame a timed-out read returns
(FFmpeg's decoder flush) and the staged frame are dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

import numpy as np
import zmq

from trackpipe.pipeline.errors import SourceError
from trackpipe.pipeline.media.clock import Clock
from trackpipe.pipeline.media.waiting import STILL_WAITING_S, StillWaiting
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.messages import SourceEvent, Want

from ..base import StageError
from .publisher import Publisher
from .slots import SlotAllocator
from .watchdog import SourceWatchdog

log = logging.getLogger(__name__)


class LiveCapture:
    """``stage``: the capture process (its ring, source, sockets, stats and stop state are used
    through its public attributes); ``fit``: copies a frame of another size into a slot."""

    def __init__(self, stage, fit: Callable):
        self.stage = stage
        self.fit = fit
        self.ring = stage.ring
        self.source = stage.source
        self.cfg = stage.source_cfg
        self.stats = stage.stats
        self.slots = SlotAllocator(stage.ring, stage.reclaim_after_s, next_seq=stage.seq,
                                   source=(stage.index, stage.camera))
        self.watchdog = SourceWatchdog(self.cfg.watchdog_s, self.cfg.backoff_initial_s, self.cfg.backoff_max_s)
        # a source not there (never came, or lost): "still waiting for <camera>" now and then (media.waiting)
        self.still = StillWaiting(getattr(self.cfg, "still_waiting_s", STILL_WAITING_S))
        self.publisher = Publisher(stage.out, self.slots, stage.uri, stage.index, getattr(stage, "motion_frame", None),
                                   on_drop=self._dropped)
        self.halt = threading.Event()       # stops the grabber (the stage itself goes on)
        self.ended = False                  # the source finished (realtime file)
        self.error = None
        self.grabbed = 0
        self.thread_stuck = False
        self.clock = Clock(live=True)       # frames' stream timestamps -> wall clock (as the recorder's)
        self.last_t, self.last_pts = 0.0, None
        # the grabber wakes the main thread through a pipe, not a zmq socket: a grabber stuck in a
        # read (a frozen camera) then holds nothing that the context's term() would wait for
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def _dropped(self) -> None:
        self.stats.drops += 1

    def _stopping(self) -> bool:
        return self.halt.is_set() or self.stage.stopping()

    # --- grabber thread -----------------------------------------------------------------------
    def _stamp(self, src) -> float:
        """The frame's capture time: its stream timestamp on the wall clock, anchored by the least
        delay seen since the open (`media.clock.Clock`, as the recorder's), so a frame decoded late
        keeps its time; never before the previous frame's. Sources without timestamps: now."""
        pts = src.pts_s()
        if pts is None:
            return time.time()
        if self.last_pts is not None and pts < self.last_pts:   # a looped file starts again
            self.clock.reset()
        self.last_pts = pts
        self.last_t = max(self.clock.time(pts), self.last_t)
        return self.last_t

    def grabber(self) -> None:
        src, ring, cfg, wd, slots = self.source, self.ring, self.cfg, self.watchdog, self.slots
        shape = self.stage.shape
        scratch = np.empty(shape, np.uint8)
        opened, fresh = False, 0  # fresh: frames since the last open
        try:
            while not self._stopping():
                if not opened:
                    wd.opening_started()
                    try:
                        src.open()
                        opened, fresh = True, 0
                        self.clock.reset()      # a new connection: its timestamps start afresh
                        wd.opened()
                    except SourceError as e:
                        self._lose(str(e))
                        backoff = wd.next_backoff()
                        if self.still.due():
                            log.warning("%s", self.still.line(self.stage.camera))
                        log.debug("reconnecting in %.1fs: %s", backoff, e)
                        self._sleep(backoff)
                        continue
                src.pace()  # realtime files, screen: wait for the frame's time (not counted as work)
                slot, dropped = slots.take()
                if dropped:
                    self.stats.drops += 1
                t_start = time.monotonic()
                if slot is None:  # every slot busy: read and discard, never wait on the pipeline
                    img = src.read_into(scratch)
                    view = None
                else:
                    ring.begin_write(slot)
                    view = ring.frame(slot, shape)
                    img = src.read_into(view)
                t_read = time.monotonic()
                stale = img is not None and src.timed_out(t_read - t_start)
                if img is None or stale:
                    if slot is not None:
                        slots.abort(slot)
                    del view, img
                    if not stale and src.kind in ("file", "images") and not cfg.loop:
                        self.ended = True
                        self._wake()
                        return
                    # a stalled stream: drop what the timed-out read returned and start afresh
                    src.close()
                    opened = False
                    self._lose(f"no data for {cfg.read_timeout_s:g}s (read timed out)" if stale else "read failed")
                    if not fresh:  # opens but never delivers: back off as for a failed open
                        self._sleep(wd.next_backoff())
                    continue
                self.grabbed += 1
                self.stats.proc.add((t_read - t_start) * 1000.0)  # decode time (this thread)
                fresh += 1
                if wd.frame():
                    self._event("source_restored")
                self.still.end()
                if slot is None:
                    del img, view
                    continue
                out_shape = shape if img is view else self.fit(ring, slot, img, shape)
                del img, view
                _, dropped = slots.commit(slot, out_shape, self._stamp(src), time.monotonic())
                if dropped:  # the staged frame was never published
                    self.stats.drops += 1
                self._wake()
        except Exception as e:  # surface in the main thread
            log.error("capture thread failed: %s", e)
            self.ended = True
            self.error = e
            self._wake()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping() and time.monotonic() < end:
            time.sleep(min(0.1, end - time.monotonic()))

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"w")
        except BlockingIOError:  # full: the main thread has wake-ups pending anyway
            pass

    def _lose(self, reason: str) -> None:
        self.still.begin()
        if self.watchdog.lose():
            if self.slots.discard_staged():  # made before the stall: never publish it
                self.stats.drops += 1
            self._event("source_lost", reason)

    def _event(self, name: str, reason=None) -> None:
        self.publisher.queue_event(SourceEvent(name, time.time(), self.slots.next_seq - 1, self.stage.uri, reason,
                                                self.stage.index))
        self._wake()

    # --- main thread --------------------------------------------------------------------------
    def run(self) -> int:
        """Publish until the source ends, ``max_frames`` are out or the stage stops; then the
        end-of-stream message. -> frames published."""
        st = self.stage
        poller = zmq.Poller()
        poller.register(st.ctl, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        t = threading.Thread(target=self.grabber, name="grabber", daemon=True)
        t.start()
        pub = self.publisher
        try:
            while not st.stopping():
                ready = dict(poller.poll(busmod.POLL_MS))
                if self.wake_r in ready:
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                if st.ctl in ready:
                    pub.wanted(self._wants())
                pub.flush_events()
                reason = self.watchdog.check()  # a source that blocks without failing
                if reason is not None:
                    if self.slots.discard_staged():
                        self.stats.drops += 1
                    self._event("source_lost", reason)
                    pub.flush_events()
                t0 = time.monotonic()
                if pub.publish() is not None:
                    st.count_out()
                    self.stats.count_item(t0)
                self.stats.gauges.update(source_up=int(self.watchdog.up), frames_grabbed=self.grabbed,
                                         in_flight=self.slots.in_flight, source_lost=self.watchdog.lost_count,
                                         reconnects=self.watchdog.reconnects)
                st.tick()
                if self.ended and not self.slots.has_staged() and pub.held is None:
                    break
                if st.max_frames and pub.published >= st.max_frames:
                    break
            if self.error is not None:
                raise StageError(f"capture failed: {self.error}")
            if not st.stopping():
                pub.flush_events()
                pub.end_of_stream(st.consumers, st.rc.stop)
        finally:
            self.halt.set()  # stops the grabber; the stage is not stopping: its last messages go out
            t.join(timeout=1.0)
            if t.is_alive():  # blocked in a read (a frozen camera): do not wait for its read timeout
                self.thread_stuck = True
                log.info("capture: the source read is still blocked; leaving it to the process exit")
            else:  # (a stuck grabber may still write to the pipe: its fds must not be reused)
                os.close(self.wake_r)
                os.close(self.wake_w)
        return pub.published

    def _wants(self) -> int:
        n = 0
        msg = busmod.recv_nowait(self.stage.ctl)
        while msg is not None:
            n += isinstance(msg, Want)
            msg = busmod.recv_nowait(self.stage.ctl)
        return n
