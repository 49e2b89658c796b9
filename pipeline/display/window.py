"""The ``window`` display of the render stage: an OpenCV window of the annotated frames."""

from __future__ import annotations

import os

import cv2
import numpy as np


class VideoWindow:
    """A live ``cv2.imshow`` window; ``show()`` returns False once q or Esc was pressed."""

    def __init__(self, title: str = "trackpipe"):
        self.title = title
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)

    def show(self, frame: np.ndarray) -> bool:
        cv2.imshow(self.title, frame)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), ord("Q"), 27)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
