"""The Qt side of the environment: can the overlay work here, the QApplication, OS capture exclusion.

Nothing here imports PySide6 at import time; `qt_app()` does, on first use.
"""

from __future__ import annotations

import os
import sys
from typing import Tuple


class OverlayUnavailable(RuntimeError):
    """No way to show the overlay here (no PySide6, no display, unsupported platform)."""


def prepare_qt_env() -> None:
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
    prepare_qt_env()
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
