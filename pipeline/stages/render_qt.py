"""Render's overlay / mirror display mode: Qt's event loop drives the render stage.

Qt needs the process' main thread, so in these modes render does not loop over its input
socket; `run_overlay_loop` calls back every 5 ms:

- ``poll()`` drains the `Tracked` messages without blocking, releases every slot (render is
  the last pixel reader), copies the newest frame out of the ring for ``mirror`` and returns
  the newest ``(tracks, frame)``; messages superseded before they could be drawn count as drops;
- ``on_drawn(rects)`` sends what the overlay painted to capture (`Drawn`), which paints it
  out of the next grabs;
- ``stop()`` is the run's stop event (or the end of the stream).

A frame counts as rendered (items, latency) once it is drawn.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from trackpipe.models.types import Tracks
from trackpipe.pipeline.display.qt_env import OverlayUnavailable
from trackpipe.pipeline.common.shared import StageBoard
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.messages import Drawn, EndOfStream, Tracked

from .base import StageError

log = logging.getLogger(__name__)


class QtDisplayDriver:
    """``stage``: the render process (ring, sockets, stats, region, display mode)."""

    def __init__(self, stage):
        self.stage = stage
        self.mode = stage.display
        self.region = stage.region
        self.names = list(stage.names) if stage.names else [str(i) for i in range(1000)]
        self._eos = False
        self._pending: Optional[tuple] = None     # (meta, t0) of the item being drawn
        self._idle_since = time.monotonic()
        self._placed = self.mode != "mirror"
        stage.stats.gauges.update(redraw_fps=0.0, overlay_mode=self.mode, updates=0)

    def run(self) -> bool:
        """Until the run stops or the stream ends -> True when the user closed the window."""
        from trackpipe.pipeline.display.qt_loop import run_overlay_loop
        from trackpipe.pipeline.errors import PipelineError
        if self.region is None:
            raise PipelineError("the overlay/mirror display needs the screen region")
        try:
            res = run_overlay_loop(self._poll, self._stop, self.region, self.names, self.mode,
                                   fps_callback=self._on_fps, on_drawn=self._on_drawn)
        except OverlayUnavailable as e:
            raise StageError(str(e)) from None
        self._finish()
        log.debug("overlay loop: %s", res)
        return bool(res.get("closed_by_user"))

    # --- accounting ---------------------------------------------------------------------------
    def _finish(self) -> None:
        """The item returned by the last poll has been drawn: account for it."""
        if self._pending is None:
            return
        meta, t0 = self._pending
        self._pending = None
        st = self.stage
        t1 = time.monotonic()
        st.stats.hist("latency").add((t1 - meta.t_mono) * 1000.0)
        st.count(StageBoard.OUT)
        st.stats.item(t0, t1, max(0.0, t0 - self._idle_since))
        st.stats.gauges["updates"] += 1
        self._idle_since = t1

    def _copy_frame(self, meta) -> Optional[np.ndarray]:
        ring = self.stage.ring
        version = ring.version(meta.slot)
        h, w, c = meta.shape
        img = self.stage.scratch[:h, :w, :c]
        np.copyto(img, ring.frame(meta.slot, meta.shape))
        if not ring.valid(meta.slot, meta.seq, version):   # reclaimed by capture meanwhile: torn
            return None
        return img.copy()

    # --- callbacks of run_overlay_loop ----------------------------------------------------------
    def _poll(self):
        st = self.stage
        st.tick()
        if not self._placed:
            from trackpipe.pipeline.display.windows import place_mirror
            self._placed = place_mirror(self.region)
        self._finish()   # mirror (and the previous overlay update, if on_drawn was not called)
        msgs = []
        while True:
            msg = busmod.recv_nowait(st.inp)
            if msg is None:
                break
            if isinstance(msg, EndOfStream):
                self._eos = True
                break
            if isinstance(msg, Tracked):
                st.count(StageBoard.IN)
                msgs.append(msg)
        if not msgs:
            return None
        t0 = time.monotonic()
        newest, frame = None, None
        for msg in reversed(msgs):   # the newest valid one; the others are superseded
            if msg.dropped:
                continue
            if self.mode == "mirror":
                frame = self._copy_frame(msg.meta)
                if frame is None:
                    continue
            newest = msg
            break
        for msg in msgs:
            busmod.release(st.ctl, st.ring, msg.meta.slot, msg.meta.seq)
            if msg is not newest:
                st.stats.drops += 1
        if newest is None:
            return None
        self._pending = (newest.meta, t0)
        return (newest.tracks if newest.tracks is not None else Tracks.empty()), frame

    def _on_drawn(self, rects: np.ndarray) -> None:
        seq = self._pending[0].seq if self._pending else -1
        busmod.try_send(self.stage.drawn, Drawn(seq, np.asarray(rects, np.int32).reshape(-1, 4)))
        self._finish()   # (capture restarting: it gets the next report)

    def _on_fps(self, fps: float) -> None:
        self.stage.stats.gauges["redraw_fps"] = round(float(fps), 3)

    def _stop(self) -> bool:
        return self.stage.stopping() or self._eos
