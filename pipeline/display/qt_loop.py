"""The Qt event loop of the overlay / mirror display."""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from trackpipe.models.types import Tracks

from .geometry import Region
from .qt_env import OverlayUnavailable, overlay_supported, qt_app

log = logging.getLogger(__name__)

PollResult = Optional[Tuple[Tracks, Optional[np.ndarray]]]


def run_overlay_loop(poll: Callable[[], PollResult], stop: Callable[[], bool], region: Region,
                     names: Sequence[str], mode: str = "overlay",
                     fps_callback: Optional[Callable[[float], None]] = None,
                     on_drawn: Optional[Callable[[np.ndarray], None]] = None,
                     interval_ms: int = 5) -> dict:
    """Run the Qt event loop in this (main) thread until ``stop()`` is true.

    Every ``interval_ms`` ``poll()`` is called; it returns None (nothing new) or the newest
    ``(tracks, frame)`` (frame: the grabbed BGR region, needed only for ``mode="mirror"``).
    Overlay mode repaints only the box outlines/labels and reports the painted rectangles to
    ``on_drawn(rects)`` (region pixels, for ``mask_overlay`` in the capture stage).
    ``fps_callback(redraws_per_second)`` is called about once a second.
    Returns {"redraws", "polls", "updates", "closed_by_user", "seconds"}.
    Raises OverlayUnavailable when there is no usable display / PySide6.
    """
    if mode not in ("overlay", "mirror"):
        raise ValueError(f"mode must be 'overlay' or 'mirror'; got {mode!r}")
    ok, reason = overlay_supported()
    if not ok:
        raise OverlayUnavailable(reason)
    from PySide6 import QtCore

    app = qt_app()
    try:
        from . import windows
    except ImportError as e:
        raise OverlayUnavailable(f"PySide6 is needed for the overlay/mirror windows "
                                 f"(pip install PySide6-Essentials): {e}") from e
    cls = windows.OverlayWindow if mode == "overlay" else windows.MirrorWindow
    win = cls(region, names)
    if mode == "mirror":
        win.show()
    stats = {"redraws": 0, "polls": 0, "updates": 0, "closed_by_user": False}
    t0 = time.monotonic()
    last = {"t": t0, "redraws": 0, "raise": t0}

    def tick() -> None:
        try:
            if stop():
                app.quit()
                return
            if mode == "mirror" and win.closed:
                stats["closed_by_user"] = True
                app.quit()
                return
            stats["polls"] += 1
            item = poll()
            now = time.monotonic()
            if item is not None:
                tracks, frame = item
                stats["updates"] += 1
                if mode == "overlay":
                    rects = win.set_tracks(tracks)
                    if on_drawn is not None:
                        on_drawn(rects)
                else:
                    win.set_frame(frame, tracks)
            if mode == "overlay" and now - last["raise"] > 1.0:
                win.keep_on_top()            # stay above windows raised since
                last["raise"] = now
            if now - last["t"] >= 1.0:
                fps = (win.redraws - last["redraws"]) / (now - last["t"])
                last["t"], last["redraws"] = now, win.redraws
                if mode == "mirror":
                    win.set_status(f"{fps:.1f} fps")
                if fps_callback is not None:
                    fps_callback(fps)
        except Exception:  # noqa: BLE001 - an exception escaping a Qt slot would abort the process
            log.exception("overlay loop tick failed; stopping")
            app.quit()

    timer = QtCore.QTimer()
    timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    timer.timeout.connect(tick)
    timer.start(max(1, int(interval_ms)))
    try:
        app.exec()
    finally:
        timer.stop()
        stats["redraws"] = win.redraws
        win.hide()
        win.close()
        win.deleteLater()
        app.processEvents()
    stats["seconds"] = time.monotonic() - t0
    return stats
