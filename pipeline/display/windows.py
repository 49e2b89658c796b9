"""The overlay and mirror windows (PySide6: imported only by code that shows them; create the
QApplication with `display.qt_env.qt_app()` first).

``OverlayWindow(region, names)``: a frameless, always-on-top, translucent window laid exactly
over the captured screen region. It shows only box outlines and labels, is transparent for
input (``Qt.WindowTransparentForInput``: clicks reach the windows below) and carries a window
mask (X11 SHAPE) made of the same outline and label rectangles, so it is see-through even on
an X server without a compositing manager (Xvfb, bare X), where a translucent window's
transparent pixels would otherwise show as black. On a HiDPI screen region pixels are divided
by Qt's devicePixelRatio.

``MirrorWindow(region, names)``: a normal window showing the captured BGR frame with boxes.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from PySide6 import QtCore, QtGui, QtWidgets

from trackpipe.models.types import Tracks

from .geometry import LABEL_FONT_PX, LABEL_PAD, LINE_WIDTH, OverlayPlan, Region, color_for, overlay_plan
from .qt_env import exclude_from_capture

log = logging.getLogger(__name__)
Qt = QtCore.Qt


def _label_font() -> "QtGui.QFont":
    font = QtGui.QFont("DejaVu Sans Mono")
    font.setStyleHint(QtGui.QFont.StyleHint.Monospace)
    font.setPixelSize(LABEL_FONT_PX)
    return font


def _text_colour(rgb) -> "QtGui.QColor":
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return QtGui.QColor(0, 0, 0) if lum > 140 else QtGui.QColor(255, 255, 255)


def _paint_plan(painter, plan: OverlayPlan, scale=1.0, offset=(0.0, 0.0)):
    """Fill the plan's rectangles in order; label text left-aligned ``LABEL_PAD`` px in, vertically centred."""
    pad = LABEL_PAD
    painter.setFont(_label_font())
    ox, oy = offset
    for (x1, y1, x2, y2), o, lab in zip(plan.rects, plan.owner, plan.is_label):
        rgb = color_for(plan.keys[o])
        r = QtCore.QRectF(ox + x1 * scale, oy + y1 * scale, max((x2 - x1) * scale, 1.0), max((y2 - y1) * scale, 1.0))
        painter.fillRect(r, QtGui.QColor(*rgb))
        if lab:
            painter.setPen(_text_colour(rgb))
            painter.drawText(r.adjusted(pad * scale, 0, 0, 0),
                             int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                             plan.texts[o])


def _flush() -> None:
    # Qt sends X requests (raise, unmap) only when something else flushes its connection;
    # QGuiApplication.sync() (Qt >= 6.?) flushes and waits for the server
    sync = getattr(QtGui.QGuiApplication, "sync", None)
    if sync is not None:
        sync()


class OverlayWindow(QtWidgets.QWidget):
    """Click-through, always-on-top overlay over ``region`` (x, y, w, h screen pixels)."""

    def __init__(self, region: Region, names: Sequence[str]):
        super().__init__(None)
        self.region = tuple(int(v) for v in region)
        self.names = list(names)
        flags = (Qt.WindowType.FramelessWindowHint | Qt.WindowType.WindowStaysOnTopHint
                 | Qt.WindowType.WindowTransparentForInput | Qt.WindowType.Tool
                 | Qt.WindowType.WindowDoesNotAcceptFocus | Qt.WindowType.NoDropShadowWindowHint)
        if QtGui.QGuiApplication.platformName() == "xcb":
            # override-redirect: no window manager moves, decorates or lowers it
            flags |= Qt.WindowType.X11BypassWindowManagerHint
        self.setWindowFlags(flags)
        self.setWindowTitle("trackpipe overlay")
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground, True)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground, True)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating, True)
        self.setAutoFillBackground(False)
        self._dpr = 1.0
        self._place()
        self._plan = overlay_plan(Tracks.empty(), self.names, self.region[2:])
        self._rects = self._plan.rects
        self._shown = QtGui.QRegion()
        self.redraws = 0
        self.excluded_from_capture = False

    def _place(self) -> None:
        x, y, w, h = self.region
        screen = QtGui.QGuiApplication.screenAt(QtCore.QPoint(x, y)) or \
            QtGui.QGuiApplication.primaryScreen()
        self._dpr = float(screen.devicePixelRatio()) if screen else 1.0
        d = self._dpr
        self.setGeometry(int(round(x / d)), int(round(y / d)), int(round(w / d)), int(round(h / d)))

    @property
    def drawn_rects(self) -> np.ndarray:
        """(M, 4) int32 x1, y1, x2, y2 region pixels currently painted (empty when hidden)."""
        return self._rects if self.isVisible() else np.zeros((0, 4), np.int32)

    def set_tracks(self, tracks: Tracks) -> np.ndarray:
        """Show these boxes (region pixels) and nothing else; returns the painted rects."""
        self._plan = overlay_plan(tracks, self.names, self.region[2:])
        rects = self._rects = self._plan.rects
        if not len(rects):
            if self.isVisible():
                self.hide()        # an empty mask would mean "no mask": hide instead
                _flush()           # nothing repaints after a hide to push it out
            return rects
        d = self._dpr
        region = QtGui.QRegion()
        for x1, y1, x2, y2 in rects:
            rx1, ry1 = int(np.floor(x1 / d)), int(np.floor(y1 / d))
            rx2, ry2 = int(np.ceil(x2 / d)), int(np.ceil(y2 / d))
            region = region.united(QtCore.QRect(rx1, ry1, rx2 - rx1, ry2 - ry1))
        self.setMask(region)
        if not self.isVisible():
            self.show()
            if not self.excluded_from_capture:
                self.excluded_from_capture = exclude_from_capture(self)
            self.update()
        else:
            # repaint only what changed: old boxes (now outside the mask) and new ones
            self.update(region.united(self._shown))
        self._shown = region
        return rects

    def keep_on_top(self) -> None:
        """Raise above windows raised since (an override-redirect window has no WM to do it)."""
        if self.isVisible():
            self.raise_()
            _flush()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        painter = QtGui.QPainter(self)
        try:
            painter.setCompositionMode(QtGui.QPainter.CompositionMode.CompositionMode_Source)
            painter.fillRect(event.rect(), QtGui.QColor(0, 0, 0, 0))   # clipped to the update
            painter.setCompositionMode(QtGui.QPainter.CompositionMode.CompositionMode_SourceOver)
            _paint_plan(painter, self._plan, scale=1.0 / self._dpr)
        finally:
            painter.end()
        self.redraws += 1


class MirrorWindow(QtWidgets.QWidget):
    """A normal window showing the captured frame with its boxes (``--mirror``)."""

    def __init__(self, region: Region, names: Sequence[str], title: str = "trackpipe mirror",
                 ):
        super().__init__(None)
        self.region = tuple(int(v) for v in region)
        self.names = list(names)
        self.setWindowTitle(title)
        w, h = self.region[2:]
        s = min(1.0, 1280 / max(w, 1), 800 / max(h, 1))
        self.resize(max(int(w * s), 160), max(int(h * s), 120))
        self._frame: Optional[np.ndarray] = None
        self._image = None
        self._tracks = Tracks.empty()
        self._plan: Optional[OverlayPlan] = None
        self._plan_size = (0, 0, 0)
        self._status = ""
        self.redraws = 0
        self.closed = False

    def set_frame(self, frame_bgr: Optional[np.ndarray], tracks: Tracks) -> None:
        if frame_bgr is not None:
            f = np.ascontiguousarray(frame_bgr[..., :3])
            self._frame = f               # keep the buffer alive as long as the QImage
            self._image = QtGui.QImage(f.data, f.shape[1], f.shape[0], f.strides[0],
                                       QtGui.QImage.Format.Format_BGR888)
        self._tracks = tracks
        self._plan = None         # planned at the frame's size when painted
        self.update()

    def set_tracks(self, tracks: Tracks) -> None:
        self.set_frame(None, tracks)

    def set_status(self, text: str) -> None:
        self._status = text

    def paintEvent(self, event) -> None:  # noqa: N802
        painter = QtGui.QPainter(self)
        try:
            painter.fillRect(self.rect(), QtGui.QColor(32, 32, 32))
            if self._image is None:
                return
            iw, ih = self._image.width(), self._image.height()
            s = min(self.width() / iw, self.height() / ih)
            ox, oy = (self.width() - iw * s) / 2, (self.height() - ih * s) / 2
            painter.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, s < 1)
            painter.drawImage(QtCore.QRectF(ox, oy, iw * s, ih * s), self._image)
            lw = max(1, int(round(LINE_WIDTH / max(s, 1e-6))))   # LINE_WIDTH px on screen
            if self._plan is None or self._plan_size != (iw, ih, lw):
                self._plan = overlay_plan(self._tracks, self.names, (iw, ih), lw)
                self._plan_size = (iw, ih, lw)
            _paint_plan(painter, self._plan, scale=s, offset=(ox, oy))
            if self._status:
                painter.setPen(QtGui.QColor(255, 255, 0))
                painter.setFont(_label_font())
                painter.drawText(8, self.height() - 8, self._status)
        finally:
            painter.end()
        self.redraws += 1

    def closeEvent(self, event) -> None:  # noqa: N802
        self.closed = True
        super().closeEvent(event)


def place_mirror(region: Sequence[int]) -> bool:
    """Move the mirror window out of the captured region (it would capture itself), shrinking it
    into the largest free band of its screen. -> True once done (or nothing to do)."""
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
