"""On-screen drawing for screen-capture mode: a click-through overlay, or a mirror window.

``OverlayWindow(region, names)``: a frameless, always-on-top, translucent window laid exactly
over the captured screen region. It shows only box outlines and labels, is transparent for
input (``Qt.WindowTransparentForInput``: clicks reach the windows below) and carries a window
mask (X11 SHAPE) made of the same outline and label rectangles, so it is see-through even on
an X server without a compositing manager (Xvfb, bare X), where a translucent window's
transparent pixels would otherwise show as black.

``MirrorWindow(region, names)``: a normal window showing the captured BGR frame with boxes.

``run_overlay_loop(poll, stop, region, names, mode)``: runs the Qt event loop in the calling
(main) thread; a 5 ms QTimer calls ``poll()`` for the newest ``(Tracks, frame or None)`` and
redraws; it returns once ``stop()`` is true (or the mirror window is closed).

Coordinates: ``tracks.xyxy`` are pixels of the captured frame, i.e. relative to the region's
top-left corner on screen; the overlay window sits at the region's origin, so the box of an
object lands on the object. Screen pixels are physical pixels (what mss grabs); on a HiDPI
screen they are divided by Qt's devicePixelRatio.

Its own drawings must never be detected: X11 has no "exclude this window from capture", so the
frame grabbed by mss contains the overlay. The overlay reports the exact rectangles it drew
(``on_drawn`` callback of ``run_overlay_loop`` / ``OverlayWindow.drawn_rects``, the same ones
that make its window mask); the capture stage keeps the union of the last two reports and
calls ``mask_overlay(frame, rects)`` before inference, which replaces those pixels by
interpolating the clean pixels on either side (outlines are 3 px, labels ~17 px high). On
Windows ``exclude_from_capture(window)`` asks the OS to leave the window out of screen grabs
(``WDA_EXCLUDEFROMCAPTURE``), and masking is then unnecessary.

PySide6 is imported only when a window class is first used (module ``__getattr__``); importing
this module has no side effects and needs neither PySide6 nor a display.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from trackpipe.models.types import Tracks

log = logging.getLogger(__name__)

Region = Tuple[int, int, int, int]          # x, y, width, height in screen pixels
PollResult = Optional[Tuple[Tracks, Optional[np.ndarray]]]

LINE_WIDTH = 3
LABEL_FONT_PX = 12                          # monospace label font, pixel size
LABEL_CHAR_W = 8                            # label box width per character (>= the font's advance)
LABEL_PAD = 2
LABEL_H = LABEL_FONT_PX + 2 * LABEL_PAD + 1

# 20 well-separated colours (RGB), indexed by track id (class id when there is no track id)
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 255, 255)], np.uint8)


class OverlayUnavailable(RuntimeError):
    """No way to show the overlay here (no PySide6, no display, unsupported platform)."""


# ----------------------------------------------------------------------------- pure geometry

def color_for(key: int) -> Tuple[int, int, int]:
    """RGB colour of a track id / class id."""
    return tuple(int(c) for c in PALETTE[int(key) % len(PALETTE)])


def labels_for(tracks: Tracks, names: Sequence[str]) -> List[str]:
    """``"dog 3 0.96"``: class name, track id (if any), score."""
    out = []
    tids = getattr(tracks, "track_id", None)
    if tids is None or len(tids) != len(tracks):
        tids = np.zeros(len(tracks), np.int64)          # plain Detections: no ids
    for c, tid, s in zip(tracks.class_id, tids, tracks.score):
        name = names[c] if 0 <= c < len(names) else str(int(c))
        out.append(f"{name} {int(tid)} {float(s):.2f}" if tid > 0 else f"{name} {float(s):.2f}")
    return out


def overlay_rects(xyxy: np.ndarray, labels: Sequence[str], size: Tuple[int, int],
                  line_width: int = LINE_WIDTH) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every rectangle the overlay paints, clipped to the region.

    xyxy:   (N, 4) boxes in region pixels; labels: N strings; size: region (width, height).
    Returns (rects (M, 4) int32 x1, y1, x2, y2 with x2/y2 exclusive, owner (M,) int index of the
    box, is_label (M,) bool). Per box: 4 outline strips of ``line_width`` px, then a label box of
    ``len(label) * LABEL_CHAR_W + 2 * LABEL_PAD`` x ``LABEL_H`` above the box (inside it when the
    box touches the top edge). The same rectangles make the window mask and are what
    ``mask_overlay`` removes from a grab.
    """
    w, h = size
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    rects, owner, is_label = [], [], []
    lw = int(line_width)
    for i, (bx1, by1, bx2, by2) in enumerate(xyxy):
        x1, y1 = int(np.floor(bx1)), int(np.floor(by1))
        x2, y2 = int(np.ceil(bx2)), int(np.ceil(by2))
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        t = min(lw, x2 - x1, y2 - y1)
        strips = [(x1, y1, x2, y1 + t), (x1, y2 - t, x2, y2),
                  (x1, y1 + t, x1 + t, y2 - t), (x2 - t, y1 + t, x2, y2 - t)]
        for r in strips:
            if r[2] > r[0] and r[3] > r[1]:
                rects.append(r)
                owner.append(i)
                is_label.append(False)
        if i < len(labels) and labels[i]:
            tw = len(labels[i]) * LABEL_CHAR_W + 2 * LABEL_PAD
            ly1 = y1 - LABEL_H if y1 - LABEL_H >= 0 else y1 + t
            lx1 = min(x1, max(w - tw, 0))
            r = (lx1, max(ly1, 0), min(lx1 + tw, w), min(ly1 + LABEL_H, h))
            if r[2] > r[0] and r[3] > r[1]:
                rects.append(r)
                owner.append(i)
                is_label.append(True)
    if not rects:
        return np.zeros((0, 4), np.int32), np.zeros(0, np.int64), np.zeros(0, bool)
    return np.array(rects, np.int32), np.array(owner, np.int64), np.array(is_label, bool)


def _fill_rows(img: np.ndarray, mask: np.ndarray, x1: int, y1: int, x2: int, y2: int,
               search: int = 48) -> None:
    """Replace img[y1:y2, x1:x2] by interpolating, per column, the nearest unmasked pixel above
    and below (within ``search`` rows), then mark the rectangle clean in ``mask``.
    img is (H, W, C), mask (H, W) bool; both edited in place."""
    H = img.shape[0]
    ys = np.arange(y1, y2, dtype=np.float32)[:, None]
    a_clean = y1 > 0 and not mask[y1 - 1, x1:x2].any()
    b_clean = y2 < H and not mask[y2, x1:x2].any()
    if (a_clean or y1 == 0) and (b_clean or y2 >= H) and (a_clean or b_clean):
        # the common case: the rows just above and below are clean -> plain slices
        ra, rb = (y1 - 1 if a_clean else y2), (y2 if b_clean else y1 - 1)
        top = img[ra, x1:x2].astype(np.float32)
        bot = img[rb, x1:x2].astype(np.float32)
        wgt = np.clip((ys - ra) / max(rb - ra, 1), 0.0, 1.0)[..., None]
        img[y1:y2, x1:x2] = (top + (bot - top) * wgt + 0.5).astype(img.dtype)
        mask[y1:y2, x1:x2] = False
        return
    n = x2 - x1
    above = mask[max(0, y1 - search):y1, x1:x2][::-1]          # rows going up from y1-1
    below = mask[y2:min(H, y2 + search), x1:x2]                 # rows going down from y2
    if len(above):
        has_a = ~above.all(axis=0)
        ra = y1 - 1 - np.argmax(~above, axis=0)
    else:
        has_a, ra = np.zeros(n, bool), np.full(n, -1)
    if len(below):
        has_b = ~below.all(axis=0)
        rb = y2 + np.argmax(~below, axis=0)
    else:
        has_b, rb = np.zeros(n, bool), np.full(n, -1)
    ra = np.where(has_a, ra, np.where(has_b, rb, -1))
    rb = np.where(has_b, rb, ra)
    ok = ra >= 0
    if ok.any():
        cols = np.arange(x1, x2)[ok]
        ra, rb = ra[ok], rb[ok]
        top = img[ra, cols].astype(np.float32)                  # (n, C)
        bot = img[rb, cols].astype(np.float32)
        wgt = np.clip((ys - ra[None, :]) / np.maximum(rb - ra, 1)[None, :], 0.0, 1.0)[..., None]
        img[y1:y2, cols] = (top[None] + (bot - top)[None] * wgt + 0.5).astype(img.dtype)
    mask[y1:y2, x1:x2] = False


def mask_overlay(frame: np.ndarray, rects: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Remove the overlay's own drawings from a screen grab before detection.

    frame: (H, W, C) uint8 grab of the region; rects: (M, 4) int x1, y1, x2, y2 (exclusive) in
    the same pixels, e.g. ``overlay_rects(...)[0]`` or what ``run_overlay_loop`` reported through
    ``on_drawn`` (pass the union of the last two reports: a grab can race a redraw). Wide
    rectangles (outline tops/bottoms, labels) are filled from the clean rows above and below,
    tall ones (outline sides) from the clean columns left and right. A few ms for 20 boxes
    (``benchmarks/bench_screen.py``); only the rectangles' pixels are touched.
    """
    out = frame if inplace else frame.copy()
    rects = np.asarray(rects, np.int64).reshape(-1, 4)
    if not len(rects):
        return out
    H, W = out.shape[:2]
    rects = rects.copy()
    rects[:, [0, 2]] = np.clip(rects[:, [0, 2]], 0, W)
    rects[:, [1, 3]] = np.clip(rects[:, [1, 3]], 0, H)
    rects = rects[(rects[:, 2] > rects[:, 0]) & (rects[:, 3] > rects[:, 1])]
    mask = np.zeros((H, W), bool)
    for x1, y1, x2, y2 in rects:
        mask[y1:y2, x1:x2] = True
    img3 = out if out.ndim == 3 else out[..., None]
    img_t, mask_t = img3.transpose(1, 0, 2), mask.T
    w, h = rects[:, 2] - rects[:, 0], rects[:, 3] - rects[:, 1]
    tall = h > w
    # order: outline sides first, then labels (tallest wide ones), then thin top/bottom strips,
    # so that each rectangle finds the previously filled ones clean on its borders
    order = np.lexsort((-h, ~tall))
    for i in order:
        x1, y1, x2, y2 = (int(v) for v in rects[i])
        if tall[i]:
            _fill_rows(img_t, mask_t, y1, x1, y2, x2)
        else:
            _fill_rows(img3, mask, x1, y1, x2, y2)
    return out


def to_screen(xyxy: np.ndarray, region: Region) -> np.ndarray:
    """Region-relative xyxy -> absolute screen xyxy."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return xyxy + np.array([region[0], region[1], region[0], region[1]], np.float64)


# ----------------------------------------------------------------------------- Qt environment

def _prepare_qt_env() -> None:
    """Undo what ``import cv2`` (opencv-python wheel) does to the environment: it points
    QT_QPA_PLATFORM_PLUGIN_PATH / QT_QPA_FONTDIR at its bundled Qt 5, which Qt 6 cannot load."""
    for key in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR", "QT_PLUGIN_PATH"):
        val = os.environ.get(key, "")
        if val and f"{os.sep}cv2{os.sep}" in val + os.sep:
            del os.environ[key]
    if sys.platform.startswith("linux") and os.environ.get("DISPLAY") and \
            "QT_QPA_PLATFORM" not in os.environ:
        os.environ["QT_QPA_PLATFORM"] = "xcb"   # overlay placement needs X11 (or XWayland)


def overlay_supported() -> Tuple[bool, str]:
    """Whether ``--overlay`` can work here; else the reason (then use ``--mirror``)."""
    try:
        import PySide6  # noqa: F401
    except ImportError:
        return False, "PySide6 is not installed (pip install PySide6-Essentials)"
    if sys.platform.startswith("linux"):
        if not os.environ.get("DISPLAY"):
            if os.environ.get("WAYLAND_DISPLAY"):
                return False, "Wayland without XWayland (DISPLAY unset): windows cannot be placed"
            return False, "no display (DISPLAY is not set)"
    return True, ""


def qt_app():
    """The process' QApplication (created on first use, with a sane environment)."""
    _prepare_qt_env()
    from PySide6 import QtWidgets
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication([sys.argv[0] if sys.argv else "trackpipe"])
        check_pyside_refcounts()
    return app


def check_pyside_refcounts() -> None:
    """Refuse a PySide6 build that leaks references to None (measured: PySide6 6.12.0 on
    Python 3.11 drops one reference to None on every call of a void method such as
    QPainter.fillRect; the process aborts with "none_dealloc" after ~5,000 calls, i.e. within
    seconds of drawing). Python >= 3.12 makes None immortal, so it cannot happen there."""
    if sys.version_info >= (3, 12):
        return
    from PySide6 import QtCore, QtGui
    import PySide6
    img = QtGui.QImage(4, 4, QtGui.QImage.Format.Format_ARGB32)
    painter = QtGui.QPainter(img)
    rect, colour = QtCore.QRectF(0, 0, 2, 2), QtGui.QColor(1, 2, 3)
    try:
        for _ in range(50):                       # warm-up: first calls build binding caches
            painter.fillRect(rect, colour)
        before = sys.getrefcount(None)
        for _ in range(200):
            painter.fillRect(rect, colour)
        lost = before - sys.getrefcount(None)
    finally:
        painter.end()
    if lost >= 150:
        raise OverlayUnavailable(
            f"PySide6 {PySide6.__version__} on Python {sys.version_info.major}.{sys.version_info.minor} "
            "loses a reference to None on every call and would crash the overlay within seconds; "
            "install PySide6-Essentials<6.12 (e.g. 6.11.3) or use Python >= 3.12")


def exclude_from_capture(window) -> bool:
    """Ask the OS to leave ``window`` out of screen grabs. True where that is possible
    (Windows 10 2004+: SetWindowDisplayAffinity WDA_EXCLUDEFROMCAPTURE); False elsewhere,
    e.g. on X11: then ``mask_overlay`` must clean the grabs."""
    if sys.platform != "win32":
        return False
    try:
        import ctypes
        return bool(ctypes.windll.user32.SetWindowDisplayAffinity(int(window.winId()), 0x11))
    except (OSError, AttributeError):
        return False


# ----------------------------------------------------------------------------- Qt classes

def _build_classes() -> dict:
    from PySide6 import QtCore, QtGui, QtWidgets

    Qt = QtCore.Qt

    def _label_font() -> "QtGui.QFont":
        font = QtGui.QFont("DejaVu Sans Mono")
        font.setStyleHint(QtGui.QFont.StyleHint.Monospace)
        font.setPixelSize(LABEL_FONT_PX)
        return font

    def _text_colour(rgb) -> "QtGui.QColor":
        lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        return QtGui.QColor(0, 0, 0) if lum > 140 else QtGui.QColor(255, 255, 255)

    def _paint_boxes(painter, rects, owner, is_label, keys, labels, scale=1.0, offset=(0.0, 0.0)):
        painter.setFont(_label_font())
        ox, oy = offset
        for (x1, y1, x2, y2), o, lab in zip(rects, owner, is_label):
            rgb = color_for(keys[o])
            r = QtCore.QRectF(ox + x1 * scale, oy + y1 * scale, (x2 - x1) * scale, (y2 - y1) * scale)
            painter.fillRect(r, QtGui.QColor(*rgb))
            if lab:
                painter.setPen(_text_colour(rgb))
                painter.drawText(r.adjusted(LABEL_PAD, 0, 0, 0),
                                 int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                                 labels[o])

    def _flush() -> None:
        # Qt sends X requests (raise, unmap) only when something else flushes its connection;
        # QGuiApplication.sync() (Qt >= 6.?) flushes and waits for the server
        sync = getattr(QtGui.QGuiApplication, "sync", None)
        if sync is not None:
            sync()

    def _keys(tracks: Tracks) -> np.ndarray:
        tid = getattr(tracks, "track_id", None)
        if tid is None or len(tid) != len(tracks):
            tid = np.zeros(len(tracks), np.int64)
        return np.where(tid > 0, tid, tracks.class_id).astype(np.int64)

    class OverlayWindow(QtWidgets.QWidget):
        """Click-through, always-on-top overlay over ``region`` (x, y, w, h screen pixels)."""

        def __init__(self, region: Region, names: Sequence[str], line_width: int = LINE_WIDTH):
            super().__init__(None)
            self.region = tuple(int(v) for v in region)
            self.names = list(names)
            self.line_width = line_width
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
            self._rects = np.zeros((0, 4), np.int32)
            self._owner = np.zeros(0, np.int64)
            self._is_label = np.zeros(0, bool)
            self._labels: List[str] = []
            self._keys = np.zeros(0, np.int64)
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
            labels = labels_for(tracks, self.names)
            rects, owner, is_label = overlay_rects(tracks.xyxy, labels, self.region[2:], self.line_width)
            self._rects, self._owner, self._is_label = rects, owner, is_label
            self._labels, self._keys = labels, _keys(tracks)
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
                _paint_boxes(painter, self._rects, self._owner, self._is_label, self._keys,
                             self._labels, scale=1.0 / self._dpr)
            finally:
                painter.end()
            self.redraws += 1

    class MirrorWindow(QtWidgets.QWidget):
        """A normal window showing the captured frame with its boxes (``--mirror``)."""

        def __init__(self, region: Region, names: Sequence[str], title: str = "trackpipe mirror",
                     line_width: int = LINE_WIDTH):
            super().__init__(None)
            self.region = tuple(int(v) for v in region)
            self.names = list(names)
            self.line_width = line_width
            self.setWindowTitle(title)
            w, h = self.region[2:]
            s = min(1.0, 1280 / max(w, 1), 800 / max(h, 1))
            self.resize(max(int(w * s), 160), max(int(h * s), 120))
            self._frame: Optional[np.ndarray] = None
            self._image = None
            self._tracks = Tracks.empty()
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
                labels = labels_for(self._tracks, self.names)
                lw = max(1, int(round(self.line_width / max(s, 1e-6))))
                rects, owner, is_label = overlay_rects(self._tracks.xyxy, labels, (iw, ih), lw)
                _paint_boxes(painter, rects, owner, is_label, _keys(self._tracks), labels,
                             scale=s, offset=(ox, oy))
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

    return {"OverlayWindow": OverlayWindow, "MirrorWindow": MirrorWindow}


_classes: Optional[dict] = None


def __getattr__(name: str):
    """``OverlayWindow`` / ``MirrorWindow`` are built (PySide6 imported) on first access."""
    global _classes
    if name in ("OverlayWindow", "MirrorWindow"):
        if _classes is None:
            _prepare_qt_env()
            try:
                _classes = _build_classes()
            except ImportError as e:
                raise OverlayUnavailable(f"PySide6 is needed for the overlay/mirror windows "
                                         f"(pip install PySide6-Essentials): {e}") from e
        return _classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- the loop

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
    cls = __getattr__("OverlayWindow" if mode == "overlay" else "MirrorWindow")
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
