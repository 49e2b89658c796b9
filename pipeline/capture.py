"""Capture stage: source -> shared-memory ring -> ``frame`` messages to infer.

Two flow-control modes:

- lossless (files, image folders): wait for a free slot (released by the last reader),
  decode straight into it, publish. Every frame once, in order; decoding runs ahead of
  inference by up to ``ring_slots`` frames.
- latest (camera, stream, screen, ``realtime`` files): a grabber thread reads the
  source as fast as it delivers and keeps only the newest frame in a staged slot;
  infer asks for a frame (``want``) when it is idle and gets the newest one. Capture
  never waits on the pipeline; every frame not published is counted as a drop. A
  watchdog emits ``source_lost`` when no frame arrived for ``watchdog_s`` or a read
  failed or timed out, reconnects with capped exponential backoff and emits
  ``source_restored`` with the first new frame. Nothing made before a stall is published
  after it: the frame a timed-out read returns (FFmpeg's decoder flush) and the staged
  frame are dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Optional

import cv2
import numpy as np
import zmq

from . import bus as busmod
from .bus import CTL, FRAMES
from .config import SourceConfig
from .errors import SourceError
from .ring import FrameRing
from .sources import SourceInfo, make_source, quiet_video_logs
from .stage import RunContext, StageError, StageProcess
from .stats import StageBoard

log = logging.getLogger(__name__)


def fit_into(ring: FrameRing, slot: int, img: np.ndarray, max_shape) -> tuple:
    """Copy ``img`` into ``slot`` (converting grey/BGRA, shrinking if it does not fit); -> shape."""
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    h, w = img.shape[:2]
    mh, mw, _ = max_shape
    if h * w * 3 > ring.slot_bytes or (h, w) != (mh, mw) and (h > mh or w > mw):
        s = min(mh / h, mw / w)
        h, w = max(1, int(h * s)), max(1, int(w * s))
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    view = ring.frame(slot, (h, w, 3))
    np.copyto(view, img)
    return (h, w, 3)


class CaptureProcess(StageProcess):
    stage = "capture"

    def __init__(self, rc: RunContext, uri: str, source_cfg: SourceConfig, info: SourceInfo,
                 max_frames: int = 0, reclaim_after_s: float = 2.0, consumers: int = 1):
        super().__init__(rc)
        self.consumers = consumers  # infer workers: each gets its own end-of-stream
        self.uri = uri
        self.source_cfg = source_cfg
        self.info = info
        self.max_frames = max_frames
        self.reclaim_after_s = reclaim_after_s

    # --- setup -------------------------------------------------------------------------
    def setup(self) -> None:
        self.ring = FrameRing.attach(self.rc.ring_name)
        self.out = self.bus.push(FRAMES, hwm=self.ring.slots * 4 + 64, bind=True)
        self.ctl = self.bus.pull(CTL)
        quiet_video_logs()
        self.source = make_source(self.uri, self.source_cfg)
        self.shape = self.info.shape
        self.stats.extra.update(source_up=1)
        if self.rc.mode == "lossless":
            try:
                self.source.open()
            except SourceError as e:
                raise StageError(str(e)) from None
        self.seq = self._resume_seq()

    def _resume_seq(self) -> int:
        """After a restart continue the sequence numbers of the previous incarnation."""
        c = self.ring.ctl
        from .ring import SEQ
        return int(c[:, SEQ].max()) + 1

    def teardown(self) -> None:
        if self.thread_stuck:  # the grabber reads from the source into a slot: closing either would crash
            return
        if getattr(self, "source", None) is not None:
            self.source.close()
        if getattr(self, "ring", None) is not None:
            self.ring.close()

    def _drain_ctl(self, timeout_ms: int) -> int:
        """Handle control messages (want / release); returns the number of wants received."""
        wants = 0
        msg = busmod.recv(self.ctl, timeout_ms)
        while msg is not None:
            if msg[0] == "want":
                wants += 1
            msg = busmod.recv_nowait(self.ctl)
        return wants

    def _frame_header(self, slot: int, seq: int, shape, t_capture: float, t_mono: float) -> dict:
        return {"seq": seq, "slot": slot, "t_capture": t_capture, "t_mono": t_mono, "shape": list(shape),
                "source_id": 0}

    def loop(self) -> None:
        if not self.wait_go():
            return
        if self.rc.mode == "lossless":
            self._loop_lossless()
        else:
            _LatestCapture(self).run()

    # --- lossless ------------------------------------------------------------------------
    def _next_free_slot(self, start: int) -> Optional[int]:
        n = self.ring.slots
        while True:
            for k in range(n):
                s = (start + k) % n
                if self.ring.is_free(s):
                    return s
            if self.stopping():
                return None
            self.tick()
            self._drain_ctl(busmod.POLL_MS)  # a release message wakes us up

    def _loop_lossless(self) -> None:
        ring, slot = self.ring, 0
        while not self.stopping():
            if self.max_frames and self.seq >= self.max_frames:
                break
            t_wait = time.monotonic()
            slot = self._next_free_slot(slot)
            if slot is None:
                return
            self.source.pace()
            t0 = time.monotonic()
            ring.begin_write(slot)
            view = ring.frame(slot, self.shape)
            img = self.source.read_into(view)
            if img is None:
                ring.abort_write(slot)
                del view
                break
            shape = self.shape if img is view else fit_into(ring, slot, img, self.shape)
            del view, img
            t_capture, t_mono = time.time(), time.monotonic()
            ring.end_write(slot, self.seq, shape, t_capture, t_mono)
            if not busmod.send(self.out, "frame", self._frame_header(slot, self.seq, shape, t_capture, t_mono),
                               stop=self.rc.stop):
                return
            self.seq += 1
            self.count(StageBoard.OUT)
            self.stats.item(t0, time.monotonic(), t0 - t_wait)
            self.tick()
            slot = (slot + 1) % ring.slots
        if not self.stopping():
            self._send_eos(self.seq)

    def _send_eos(self, frames: int) -> None:
        for _ in range(self.consumers):  # round-robin: one each
            busmod.send(self.out, "eos", {"frames": frames}, stop=self.rc.stop)


class _LatestCapture:
    """Latest-frame capture: a grabber thread plus the publishing main thread.

    Slots are free (released by render), being written (grabber), staged (the newest frame,
    not yet asked for) or published (sent to infer, until render releases them)."""

    def __init__(self, proc: CaptureProcess):
        self.p = proc
        self.ring = proc.ring
        self.lock = threading.Lock()
        self.staged: Optional[tuple] = None            # (slot, seq, shape, t_capture, t_mono)
        self.published: dict = {}                       # slot -> (seq, t_published)
        self.writing: Optional[int] = None
        self.events: deque = deque()                    # in-band events for the main thread
        self.ended = False                              # the source finished (realtime file)
        self.grabbed = 0
        self.last_frame_t = time.monotonic()
        self.lost = False
        self.opening = False
        self.wants = 0
        self.published_n = 0
        # the grabber wakes the main thread through a pipe, not a zmq socket: a grabber stuck in a
        # read (a frozen camera) then holds nothing that the context's term() would wait for
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        # after a restart: frames an earlier capture published are in flight (or lost with a dead
        # stage); track them so that they can be reclaimed after reclaim_after_s
        now = time.monotonic()
        for s in range(self.ring.slots):
            if not self.ring.is_free(s):
                self.published[s] = (self.ring.seq(s), now)

    # --- slot choice (under lock) -----------------------------------------------------------
    def _take_slot(self) -> tuple:
        """-> (slot or None, dropped_a_frame)."""
        ring = self.ring
        for s, (seq, _t) in list(self.published.items()):
            if ring.is_free(s) or ring.seq(s) != seq:
                del self.published[s]
        busy = set(self.published)
        if self.staged is not None:
            busy.add(self.staged[0])
        for s in range(ring.slots):
            if s not in busy and ring.is_free(s):
                return s, False
        if self.staged is not None:  # overwrite the unpublished frame: a newer one is coming
            s = self.staged[0]
            self.staged = None
            return s, True
        now = time.monotonic()
        old = [(t, s) for s, (seq, t) in self.published.items() if now - t > self.p.reclaim_after_s]
        if old:
            _, s = min(old)
            del self.published[s]
            log.debug("reclaiming slot %d in flight for %.1fs", s, now - _)
            return s, False
        return None, True

    # --- grabber thread -----------------------------------------------------------------------
    def grabber(self) -> None:
        p, ring, cfg = self.p, self.ring, self.p.source_cfg
        scratch = np.empty(p.shape, np.uint8)
        src = p.source
        backoff = cfg.backoff_initial_s
        opened, fresh = False, 0  # fresh: frames since the last open
        try:
            while not p.stopping():
                if not opened:
                    self.opening = True  # the open timeout covers this; the watchdog waits
                    try:
                        src.open()
                        opened, fresh = True, 0
                        self.last_frame_t = time.monotonic()
                        self.opening = False
                    except SourceError as e:
                        self.opening = False
                        self._lose(str(e))
                        log.info("reconnecting in %.1fs: %s", backoff, e)
                        self._sleep(backoff)
                        backoff = min(backoff * 2, cfg.backoff_max_s)
                        continue
                src.pace()  # realtime files, screen: wait for the frame's time (not counted as work)
                with self.lock:
                    slot, dropped = self._take_slot()
                    self.writing = slot
                if dropped:
                    p.stats.drops += 1
                t_start = time.monotonic()
                if slot is None:  # every slot busy: read and discard, never wait on the pipeline
                    img = src.read_into(scratch)
                    view = None
                else:
                    ring.begin_write(slot)
                    view = ring.frame(slot, p.shape)
                    img = src.read_into(view)
                t_read = time.monotonic()
                stale = img is not None and src.timed_out(t_read - t_start)
                if img is None or stale:
                    if slot is not None:
                        ring.abort_write(slot)
                        with self.lock:
                            self.writing = None
                    del view, img
                    if not stale and src.kind in ("file", "images") and not cfg.loop:
                        self.ended = True
                        self._wake()
                        return
                    # a stalled stream: drop what the timed-out read returned and start afresh
                    src.close()
                    opened = False
                    self._lose(f"no data for {cfg.read_timeout_s:g}s (read timed out)" if stale
                               else "read failed")
                    if not fresh:  # opens but never delivers: back off as for a failed open
                        self._sleep(backoff)
                        backoff = min(backoff * 2, cfg.backoff_max_s)
                    continue
                self.grabbed += 1
                p.stats.proc.add((t_read - t_start) * 1000.0)  # decode time (this thread)
                self.last_frame_t = t_read
                fresh += 1
                backoff = cfg.backoff_initial_s
                self._event("source_restored")  # a no-op unless the source was lost
                if slot is None:
                    del img, view
                    continue
                shape = p.shape if img is view else fit_into(ring, slot, img, p.shape)
                del img, view
                t_capture, t_mono = time.time(), time.monotonic()
                with self.lock:
                    seq = p.seq
                    p.seq += 1
                    ring.end_write(slot, seq, shape, t_capture, t_mono)
                    self.writing = None
                    old, self.staged = self.staged, (slot, seq, shape, t_capture, t_mono)
                    if old is not None:  # never published: a drop, and its slot is free again
                        ring.release(old[0], old[1])
                        p.stats.drops += 1
                self._wake()
        except Exception as e:  # surface in the main thread
            log.error("capture thread failed: %s", e)
            self.ended = True
            self.error = e
            self._wake()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.p.stopping() and time.monotonic() < end:
            time.sleep(min(0.1, end - time.monotonic()))

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"w")
        except BlockingIOError:  # full: the main thread has wake-ups pending anyway
            pass

    def _event(self, name: str, **info) -> bool:
        """Queue ``source_lost`` / ``source_restored`` unless the source is already in that state
        (the grabber and the watchdog may both notice a loss); -> whether it was queued."""
        with self.lock:
            if self.lost == (name == "source_lost"):
                return False
            self.lost = name == "source_lost"
            key = "source_lost" if self.lost else "reconnects"
            self.p.stats.extra[key] = self.p.stats.extra.get(key, 0) + 1
            if self.lost and self.staged is not None:  # made before the stall: never publish it
                self.ring.release(self.staged[0], self.staged[1])
                self.staged = None
                self.p.stats.drops += 1
            self.events.append({"event": name, "t": time.time(), "seq": self.p.seq - 1, "source": self.p.uri,
                                **info})
        self._wake()
        return True

    def _lose(self, reason: str) -> None:
        self._event("source_lost", reason=reason)

    # --- main thread --------------------------------------------------------------------------
    def run(self) -> None:
        p = self.p
        self.error = None
        poller = zmq.Poller()
        poller.register(p.ctl, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        t = threading.Thread(target=self.grabber, name="grabber", daemon=True)
        t.start()
        cfg = p.source_cfg
        try:
            while not p.stopping():
                ready = dict(poller.poll(busmod.POLL_MS))
                if self.wake_r in ready:
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                if p.ctl in ready:
                    # infer is single: one outstanding want at most (a resent want does not add up)
                    self.wants = min(1, self.wants + p._drain_ctl(0))
                self._flush_events()
                # watchdog: a source that blocks without failing
                if not self.lost and not self.opening and time.monotonic() - self.last_frame_t > cfg.watchdog_s:
                    self._lose(f"no frame for {cfg.watchdog_s:g}s")
                    self._flush_events()
                if self.wants > 0:
                    self._publish()
                p.stats.extra.update(source_up=0 if self.lost else 1, grabbed=self.grabbed,
                                     in_flight=len(self.published))
                p.tick()
                if self.ended and self.staged is None:
                    break
                if p.max_frames and self.published_n >= p.max_frames:
                    break
            if self.error is not None:
                raise StageError(f"capture failed: {self.error}")
            if not p.stopping():
                self._flush_events()
                p._send_eos(self.published_n)
        finally:
            p._term = True  # stops the grabber
            t.join(timeout=1.0)
            if t.is_alive():  # blocked in a read (a frozen camera): do not wait for its read timeout
                p.thread_stuck = True
                log.info("capture: the source read is still blocked; leaving it to the process exit")
            else:  # (a stuck grabber may still write to the pipe: its fds must not be reused)
                os.close(self.wake_r)
                os.close(self.wake_w)

    def _flush_events(self) -> None:
        """Send queued source events in-band (ordered with the frames); never block: while no
        infer is connected (restarting) they wait here."""
        while True:
            with self.lock:
                if not self.events:
                    return
                ev = self.events[0]
            try:
                self.p.out.send_multipart(busmod.encode("event", ev), zmq.NOBLOCK)
            except zmq.Again:
                return
            with self.lock:
                self.events.popleft()
            log.warning("%s: %s%s", ev["event"], self.p.uri, f" ({ev['reason']})" if ev.get("reason") else "")

    def _publish(self) -> None:
        p = self.p
        with self.lock:
            st = self.staged
            if st is None:
                return
            self.staged = None
            slot, seq, shape, t_capture, t_mono = st
            self.published[slot] = (seq, time.monotonic())
        t0 = time.monotonic()
        try:  # never block here: a want may come from an infer that died since
            p.out.send_multipart(busmod.encode("frame", p._frame_header(slot, seq, shape, t_capture, t_mono)),
                                 zmq.NOBLOCK)
        except zmq.Again:
            with self.lock:
                del self.published[slot]
                if self.staged is None:
                    self.staged = st
                else:
                    self.ring.release(slot, seq)
            self.wants = 0  # the (new) infer asks again
            return
        self.wants -= 1
        self.published_n += 1
        p.count(StageBoard.OUT)
        p.stats.count_item(t0)
        p.stats.extra["frames_grabbed"] = self.grabbed
