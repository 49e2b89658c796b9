"""Sizes, colours and label text shared by the video, the window and the Qt overlay."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_CAP_PX_AT_1 = 22.0          # FONT_HERSHEY_SIMPLEX cap height in pixels at font scale 1.0

# 18 well-separated colours (Trubetskoy's list without white and cream), as BGR; consecutive
# ids get different colours. The overlay's old palette was this list in RGB.
_PALETTE_RGB = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195),
    (128, 128, 0), (255, 215, 180), (0, 0, 128)], np.uint8)
PALETTE_BGR = np.ascontiguousarray(_PALETTE_RGB[:, ::-1])


def palette_color(key: int) -> tuple[int, int, int]:
    """BGR colour of a track id (or class id where there is no track id); stable across runs."""
    return tuple(int(c) for c in PALETTE_BGR[int(key) % len(PALETTE_BGR)])


def text_color(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on a label filled with ``bgr``."""
    b, g, r = bgr
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def label_text(class_name: str, track_id: int | None, score: float | None, predicted: bool = False) -> str:
    """The one label format: ``"person 12 0.97"``.

    The track id is left out when there is none (``None`` or <= 0, plain detections), the score
    when ``None``. A predicted (coasting) box, whose score is no detection's, reads
    ``"person 12 pred"`` (and is drawn dashed).
    """
    parts = [str(class_name)]
    if track_id is not None and int(track_id) > 0:
        parts.append(str(int(track_id)))
    if predicted:
        parts.append("pred")
    elif score is not None:
        parts.append(f"{float(score):.2f}")
    return " ".join(parts)


@dataclass(frozen=True)
class DrawStyle:
    """Pixel sizes of boxes and labels for one frame size.

    thickness:      box outline width (px)
    font_scale:     cv2 Hershey font scale of label text
    text_thickness: cv2 stroke width of label text (px)
    text_bold:      draw the text twice, 1 px apart (a bold face 4x cheaper than a 2 px
                    anti-aliased stroke, and crisper); the Qt overlay uses a bold font
    font_px:        text cap height (px); the Qt overlay sets its font's pixel size to
                    ``label_h - 2 * pad`` so that its text fills the same label boxes
    pad:            label padding around the text (px)
    label_h:        label height (px) = text height incl. descenders + 2 * pad
    """

    thickness: int
    font_scale: float
    text_thickness: int
    text_bold: bool
    font_px: int
    pad: int
    label_h: int

    @classmethod
    def for_frame(cls, height: int, width: int) -> DrawStyle:
        """Scale with the frame's short side ``s`` (readable at 640x360 and at 1920x1080 alike).

        Rule: text cap height 9 px at s = 360, growing linearly to 14 px at s = 1080 (22 px at
        4K); below s = 360 it shrinks with s down to 5 px. Box lines round(s / 360) px but at least
        2 from s = 240 up (2 at 360p and 720p, 3 at 1080p; 1 px lines vanish in compressed
        360p video), text 1 px anti-aliased strokes, bold from 12 px cap height (720p and up),
        padding 0.3 x cap.
        """
        s = max(1, min(int(height), int(width)))
        cap = 9.0 + (s - 360) / 144.0 if s >= 360 else max(5.0, 9.0 * s / 360.0)
        font_scale = cap / _FONT_CAP_PX_AT_1
        text_thickness = 1
        text_bold = cap >= 12.0
        (_, th), base = cv2.getTextSize("Ag", FONT, font_scale, text_thickness)
        pad = max(1, round(0.3 * cap))
        thickness = max(1 if s < 240 else 2, round(s / 360.0))
        return cls(thickness=thickness, font_scale=font_scale, text_thickness=text_thickness, text_bold=text_bold,
                   font_px=round(cap), pad=pad, label_h=int(th + base + 2 * pad))

    def text_size(self, text: str) -> tuple[int, int]:
        """(w, h) of the label box of ``text`` in px (text width + 2 * pad, ``label_h``)."""
        (tw, _), _ = cv2.getTextSize(text, FONT, self.font_scale, self.text_thickness)
        return tw + int(self.text_bold) + 2 * self.pad, self.label_h
