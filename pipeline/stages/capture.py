"""Capture stage: source -> shared-memory ring -> `Frame` messages to infer.

Two flow-control modes:

- lossless (files, image folders): wait for a free slot (released by the last reader),
  decode straight into it, publish. Every frame once, in order; decoding runs ahead of
  inference by up to ``ring_slots`` frames.
- latest (camera, stream, screen, ``realtime`` files): a grabber thread reads the
  source as fast as it delivers and keeps only the newest frame in a staged slot;
  infer asks for a frame (`Want`) when it is idle and gets the newest one. Capture
  never waits on the pipeline; every frame not published is counted as a drop. A
  watchdog emits ``source_lost`` when no frame arrived for ``watchdog_s`` or a read
  failed or timed out, reconnects with capped exponential backoff and emits
  ``source_restored`` with the first new frame (`stages.live`).

With the overlay display, every grab has the overlay's own drawings (`Drawn` messages from
render) painted out before it is published (`display.masking.MaskedSource`).
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import cv2
import numpy as np

from trackpipe.pipeline.errors import SourceError
from trackpipe.pipeline.media.sources import make_source, quiet_video_logs
from trackpipe.pipeline.motion.frames import FrameGate
from trackpipe.pipeline.motion.setup import detect_uri_of
from trackpipe.pipeline.common.shared import StageBoard
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.bus import CTL, FRAMES, OVERLAY, of_camera
from trackpipe.pipeline.transport.messages import EndOfStream, Frame, FrameMeta
from trackpipe.pipeline.transport.ring import SEQ, FrameRing

from .base import RunContext, StageError, StageProcess
from .settings import CaptureSettings

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

    def __init__(self, rc: RunContext, settings: CaptureSettings):
        cam = settings.camera
        if cam.index:
            self.stage = f"capture.{cam.index}"  # one capture process per camera; camera 0's is "capture"
        super().__init__(rc)
        self.settings = settings
        self.index = cam.index      # the camera's index: its ring, endpoints and FrameMeta.source_id
        self.camera = cam.name
        self.uri = detect_uri_of(cam)   # a detect_uri is decoded; uri stays the record stream
        self.consumers = settings.consumers  # infer workers: each gets its own end-of-stream
        self.max_frames = settings.max_frames
        self.reclaim_after_s = settings.reclaim_after_s
        self.source_cfg = settings.source

    # --- setup -------------------------------------------------------------------------
    def setup(self) -> None:
        self.ring = FrameRing.attach(self.rc.ring_of(self.index))
        self.out = self.bus.push(of_camera(FRAMES, self.index), hwm=self.ring.slots * 4 + 64, bind=True)
        self.ctl = self.bus.pull(of_camera(CTL, self.index))
        quiet_video_logs()
        self.source = make_source(self.uri, self.source_cfg)
        if self.settings.mask_overlay:
            from trackpipe.pipeline.display.masking import MaskedSource
            self.source = MaskedSource(self.source, self.bus.pull(OVERLAY, hwm=16), self.stats)
        self.shape = self.settings.camera.info.shape
        self.stats.gauges.update(source_up=1)
        if self.rc.mode == "lossless":
            try:
                self.source.open()
            except SourceError as e:
                raise StageError(str(e)) from None
        self.seq = self._resume_seq()
        # the motion detector and gate: here, on capture's cores, never on the detector's
        cam = self.settings.camera
        self.motion = FrameGate(cam.motion, self.rc.mode, getattr(cam.info, "fps", 30.0))

    def motion_frame(self, meta: FrameMeta) -> Frame:
        """The `Frame` message of ``meta`` (written to its slot): motion boxes and the gate's call."""
        if not self.motion.active:
            return Frame(meta)
        view = self.ring.frame(meta.slot, meta.shape)
        try:
            return self.motion.frame(meta, view)
        finally:
            del view
            if self.motion.frames % 30 == 1:
                self.stats.gauges.update(self.motion.gauges())

    def _resume_seq(self) -> int:
        """After a restart continue the sequence numbers of the previous incarnation."""
        return int(self.ring.ctl[:, SEQ].max()) + 1

    def count_out(self) -> None:
        self.count(StageBoard.OUT)

    def teardown(self) -> None:
        if self.thread_stuck:  # the grabber reads from the source into a slot: closing either would crash
            return
        if getattr(self, "source", None) is not None:
            self.source.close()
        if getattr(self, "ring", None) is not None:
            self.ring.close()

    def _wait_ctl(self, timeout_ms: int) -> None:
        """Wait for a control message (a `Release` wakes us up) and drop what is queued."""
        msg = busmod.recv(self.ctl, timeout_ms)
        while msg is not None:
            msg = busmod.recv_nowait(self.ctl)

    def loop(self) -> None:
        if not self.wait_go():
            return
        if self.rc.mode == "lossless":
            self._loop_lossless()
        else:
            from .live.capture import LiveCapture
            live = LiveCapture(self, fit_into)
            try:
                live.run()
            finally:
                self.thread_stuck = live.thread_stuck

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
            self._wait_ctl(busmod.POLL_MS)

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
            if not self.send(self.out, self.motion_frame(FrameMeta(self.seq, slot, t_capture, t_mono, tuple(shape),
                                                                   self.index, self.camera))):
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
            self.send(self.out, EndOfStream(frames, source_id=self.index))
