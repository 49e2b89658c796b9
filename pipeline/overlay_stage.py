"""Overlay stage for screen capture (``run_capture.py``): tracks -> click-through overlay or mirror.

``OverlayStage`` takes the place of the render stage (it runs under the stage name
``render``, so the supervisor, the live table and the ``--profile`` report treat it as the
last stage: ``stages.render`` is the overlay, ``frames_out``/latency are measured here).
Its process runs ``pipeline.overlay.run_overlay_loop`` in its main thread (Qt needs it):

- ``poll()`` drains the ``tracks`` socket without blocking, releases every slot (this is the
  last pixel reader), copies the newest frame out of the ring for ``--mirror`` and returns the
  newest ``(tracks, frame)``; messages superseded before they could be drawn count as drops;
- ``on_drawn(rects)`` sends the rectangles the overlay painted to the capture stage
  (PUSH -> PULL on the ``overlay`` endpoint, bound by capture, the consumer);
- ``stop()`` is the run's stop event (or end of stream).

``MaskedCaptureProcess`` is the capture stage with the screen source wrapped so that every
grab has the overlay's own drawings removed (``mask_overlay`` with the union of the last two
reports) before the frame is published: the detector never sees the boxes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import List, Optional, Sequence, Tuple

import numpy as np
import zmq

from . import bus as busmod
from .bus import CTL, TRACKS
from .capture import CaptureProcess
from .ring import FrameRing
from .stage import RunContext, StageError, StageProcess
from .stats import StageBoard

log = logging.getLogger(__name__)

OVERLAY = "overlay"   # overlay stage -> capture (PULL bound by capture): rectangles drawn


class _MaskedSource:
    """Wraps a screen `Source`: ``read_into`` masks the overlay's drawn rectangles out of the grab.

    Used only by the capture's grabber thread (the PULL socket is made in ``setup`` and then
    used by that thread alone)."""

    def __init__(self, inner, sock: zmq.Socket, stats):
        self._inner = inner
        self._sock = sock
        self._stats = stats
        self._reports: deque = deque(maxlen=2)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _rects(self) -> np.ndarray:
        while True:
            msg = busmod.recv_nowait(self._sock)
            if msg is None:
                break
            rects = msg[2].get("rects")
            self._reports.append(np.zeros((0, 4), np.int32) if rects is None else np.array(rects, np.int32))
        if not self._reports:
            return np.zeros((0, 4), np.int32)
        return np.concatenate(list(self._reports)).reshape(-1, 4)

    def read_into(self, buf):
        img = self._inner.read_into(buf)
        if img is not None:
            rects = self._rects()
            if len(rects):
                from .overlay import mask_overlay
                mask_overlay(img, rects, inplace=True)
                self._stats.extra["masked_frames"] = self._stats.extra.get("masked_frames", 0) + 1
        return img


class MaskedCaptureProcess(CaptureProcess):
    """The capture stage, with the overlay's drawings removed from each grab."""

    def setup(self) -> None:
        super().setup()
        self.stats.extra.update(masked_frames=0)
        sock = self.bus.pull(OVERLAY, hwm=16)
        self.source = _MaskedSource(self.source, sock, self.stats)


class OverlayStage(StageProcess):
    stage = "render"   # the last stage: the supervisor, the live table and the profile know it so

    def __init__(self, rc: RunContext, region: Tuple[int, int, int, int], names: Optional[List[str]],
                 mode: str = "overlay"):
        super().__init__(rc)
        self.region = tuple(int(v) for v in region)
        self.names = list(names) if names else [str(i) for i in range(1000)]
        self.mode = mode

    def setup(self) -> None:
        from .overlay import overlay_supported
        ok, reason = overlay_supported()
        if not ok:
            raise StageError(f"cannot show the {self.mode}: {reason}")
        self.ring = FrameRing.attach(self.rc.ring_name)
        self.inp = self.bus.pull(TRACKS, hwm=self.ring.slots * 4 + 64)
        self.ctl = self.bus.push(CTL, hwm=self.ring.slots * 4 + 64, flush=False)
        self.drawn = self.bus.push(OVERLAY, hwm=4, flush=False)
        self.scratch = np.empty(self.ring.max_shape, np.uint8) if self.mode == "mirror" else None
        self._eos = False
        self._pending: Optional[tuple] = None     # (header, t0) of the item being drawn
        self._idle_since = time.monotonic()
        self._placed = self.mode != "mirror"
        self.stats.extra.update(redraw_fps=0.0, overlay_mode=self.mode, updates=0)

    def teardown(self) -> None:
        self.scratch = None
        if getattr(self, "ring", None) is not None:
            self.ring.close()

    # --- helpers ---------------------------------------------------------------------------
    def _finish(self) -> None:
        """The item returned by the last poll has been drawn: account for it."""
        if self._pending is None:
            return
        h, t0 = self._pending
        self._pending = None
        t1 = time.monotonic()
        self.stats.hist("latency").add((t1 - h["t_mono"]) * 1000.0)
        self.count(StageBoard.OUT)
        self.stats.item(t0, t1, max(0.0, t0 - self._idle_since))
        self.stats.extra["updates"] += 1
        self._idle_since = t1

    def _copy_frame(self, h: dict) -> Optional[np.ndarray]:
        slot, seq, shape = h["slot"], h["seq"], tuple(h["shape"])
        version = self.ring.version(slot)
        img = self.scratch[:shape[0], :shape[1], :shape[2]]
        np.copyto(img, self.ring.frame(slot, shape))
        if not self.ring.valid(slot, seq, version):   # reclaimed by capture meanwhile: torn
            return None
        return img.copy()

    # --- callbacks of run_overlay_loop ----------------------------------------------------------
    def _poll(self):
        self.tick()
        if not self._placed:
            self._placed = _place_mirror(self.region)
        self._finish()   # mirror (and the previous overlay update, if on_drawn was not called)
        msgs = []
        while True:
            msg = busmod.recv_nowait(self.inp)
            if msg is None:
                break
            kind, h, arrays = msg
            if kind == "eos":
                self._eos = True
                break
            if kind == "frame":
                self.count(StageBoard.IN)
                msgs.append((h, arrays))
        if not msgs:
            return None
        t0 = time.monotonic()
        newest, frame = None, None
        for i in range(len(msgs) - 1, -1, -1):   # newest valid one; the others are superseded
            h, arrays = msgs[i]
            if h.get("dropped"):
                continue
            if self.mode == "mirror":
                frame = self._copy_frame(h)
                if frame is None:
                    continue
            newest = (h, arrays)
            break
        for h, _ in msgs:
            busmod.release(self.ctl, self.ring, h["slot"], h["seq"])
            if newest is None or h is not newest[0]:
                self.stats.drops += 1
        if newest is None:
            return None
        h, arrays = newest
        from trackpipe.models.types import Tracks
        tracks = busmod.unpack_dets(arrays) if arrays else Tracks.empty()
        self._pending = (h, t0)
        return tracks, frame

    def _on_drawn(self, rects: np.ndarray) -> None:
        try:
            self.drawn.send_multipart(busmod.encode("drawn", {"seq": self._pending[0]["seq"] if self._pending else -1},
                                                    {"rects": np.asarray(rects, np.int32).reshape(-1, 4)}),
                                      zmq.NOBLOCK)
        except zmq.ZMQError:
            pass   # capture restarting: it gets the next report
        self._finish()

    def _on_fps(self, fps: float) -> None:
        self.stats.extra["redraw_fps"] = round(float(fps), 3)

    def _stop(self) -> bool:
        return self.stopping() or self._eos

    def loop(self) -> None:
        if not self.wait_go():
            return
        from .overlay import OverlayUnavailable, run_overlay_loop
        try:
            res = run_overlay_loop(self._poll, self._stop, self.region, self.names, self.mode,
                                   fps_callback=self._on_fps, on_drawn=self._on_drawn)
        except OverlayUnavailable as e:
            raise StageError(str(e)) from None
        self._finish()
        log.debug("overlay loop: %s", res)
        if res.get("closed_by_user"):
            log.info("mirror window closed by the user")
            self.send_state("quit")


def _place_mirror(region: Sequence[int]) -> bool:
    """Move the mirror window out of the captured region (it would capture itself), shrinking it
    into the largest free band of its screen. -> True once done (or nothing to do)."""
    from PySide6 import QtCore, QtGui, QtWidgets
    wins = [w for w in QtWidgets.QApplication.topLevelWidgets() if type(w).__name__ == "MirrorWindow"]
    if not wins:
        return False
    win = wins[0]
    screen = QtGui.QGuiApplication.screenAt(QtCore.QPoint(int(region[0]), int(region[1]))) or \
        QtGui.QGuiApplication.primaryScreen()
    if screen is None:
        return True
    d = float(screen.devicePixelRatio()) or 1.0
    g = screen.geometry()
    sx, sy, sw, sh = g.x(), g.y(), g.width(), g.height()
    rx, ry, rw, rh = (v / d for v in region)
    bands = [(rx + rw, sy, sx + sw - (rx + rw), sh), (sx, ry + rh, sw, sy + sh - (ry + rh)),
             (sx, sy, rx - sx, sh), (sx, sy, sw, ry - sy)]          # right, below, left, above
    bx, by, bw, bh = max(bands, key=lambda b: max(b[2], 0) * max(b[3], 0))
    if bw < 80 or bh < 60:
        log.warning("no room for the mirror window outside the captured region: it will capture itself")
        return True
    w, h = win.width(), win.height()
    s = min(1.0, (bw - 8) / w, (bh - 8) / h)
    win.resize(max(int(w * s), 80), max(int(h * s), 60))
    win.move(int(bx + 4), int(by + 4))
    return True
