"""A cheap motion detector per camera (Frigate's design): a downscaled grey frame, a running
background, a per-pixel threshold and an area threshold.

Per frame: shrink to about ``frame_height`` rows by an exact integer average (640x360 -> 160x90;
720p and 1080p are first sampled on a grid of 4 x 4 points per small pixel: 182x102, 174x98),
grey, Gaussian blur (the camera's
noise and the codec's blocks average out), ignore the motion mask, absolute difference to
the running background (``cv2.accumulateWeighted`` with ``alpha``), pixels changed by more
than ``threshold`` grey levels, dilated, their connected contours; a contour of at least
``contour_area`` pixels (of the small frame) is motion, its box (scaled back to the frame's
pixels) a motion box. A change over more than ``whole_frame`` of the (unmasked) frame is not
motion: lighting, an IR switch, the camera moving or re-exposing; the background restarts from
that frame and the result says ``whole_frame``.

The rules behind the defaults (none depends on one video's figures): ``frame_height`` 100 and
``contour_area`` 10 are Frigate's defaults (an object of about 0.06 % of the frame area);
``threshold`` 25 grey levels is 5 standard deviations of a camera noise of 5 levels, which the
blur reduces further; ``alpha`` 0.1: where an object was, the change fades below ``threshold``
within ~ln(contrast / threshold) / alpha frames, about 14 frames for a contrast of 100 levels
(half a second at 30 fps), so detection stops soon after the motion does, while an object
moving even a pixel of the small frame every few frames still differs from a background that
lags ~1/alpha = 10 frames behind; an object that stops becomes background in about a second;
``whole_frame`` 0.8 is Frigate's ``lightning_threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

from .masks import rasterize


@dataclass(frozen=True)
class MotionSettings:
    """The motion detector's knobs (see the module docstring for the rules behind the defaults)."""

    frame_height: int = 100
    threshold: int = 25
    contour_area: int = 10
    alpha: float = 0.1
    whole_frame: float = 0.8
    blur: int = 5            # Gaussian kernel side on the small frame (odd)
    dilate: int = 2          # dilation iterations (3x3): joins an object's pieces


@dataclass
class MotionResult:
    """One frame's motion. ``boxes``: (M,4) float32 xyxy pixels of the full frame;
    ``fraction``: share of the (unmasked) small frame that changed, 0..1; ``whole_frame``: the
    change was a whole-frame one (not motion; background restarted)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    fraction: float = 0.0
    whole_frame: bool = False

    @property
    def moving(self) -> bool:
        return len(self.boxes) > 0

    def to_dict(self) -> dict:
        return {"boxes": [[round(float(v), 1) for v in b] for b in self.boxes],
                "fraction": round(self.fraction, 4), "whole_frame": self.whole_frame}


class MotionDetector:
    """Motion of one camera's frames. ``mask``: motion-mask polygons, (V,2) pixels of the full
    frame each (changes inside are ignored). State: the background, (h, w) float32."""

    def __init__(self, settings: MotionSettings = MotionSettings(), mask: Sequence[np.ndarray] = ()):
        self.s = settings
        self.mask_polygons = [np.asarray(p, np.float64).reshape(-1, 2) for p in mask]
        self.background: Optional[np.ndarray] = None
        self._size = None         # (W, H) of the full frame the state is for
        self._keep: Optional[np.ndarray] = None   # small-frame uint8: 255 where motion counts

    def reset(self) -> None:
        self.background = None
        self._size = None

    def _plan(self, w: int, h: int):
        """How a (w, h) frame shrinks to about ``frame_height`` rows: an integer factor k
        (640x360: 4 -> 160x90), an exact k x k average; a frame more than 4 times that (720p,
        1080p) is first sampled on a grid of 4 x 4 points per small pixel (nearest), then
        averaged 4 x 4. Exact factors take OpenCV's fast area paths (a fractional area resize of
        640x360 costs ~6x more; averaging every pixel of 1080p ~3x the grid's).
        -> (grid (W, H) or None, factor, small (sw, sh))."""
        target = max(8, int(self.s.frame_height))
        k = max(1, round(h / target))
        sw, sh = max(1, w // k), max(1, h // k)
        if k > 4:
            return (4 * sw, 4 * sh), 4, (sw, sh)
        return None, k, (sw, sh)

    def _prepare(self, w: int, h: int) -> None:
        grid, k, (sw, sh) = self._plan(w, h)
        self._size, self._small, self._grid, self._factor = (w, h), (sw, sh), grid, k
        # small pixels per frame pixel, x and y: the grid spans the whole frame, a crop k x its size
        self._scale = np.array([sw / w, sh / h] if grid else [1.0 / k, 1.0 / k], np.float64)
        masked = rasterize(self.mask_polygons, (sw, sh), self._scale) if self.mask_polygons else None
        self._keep = None if masked is None else cv2.bitwise_not(masked)
        self._area = float(sw * sh if self._keep is None else max(1, cv2.countNonZero(self._keep)))
        self.background = None

    def small_grey(self, frame_bgr: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR (or (H, W) grey) -> the blurred small grey frame, (h, w) uint8."""
        h, w = frame_bgr.shape[:2]
        if self._size != (w, h):
            self._prepare(w, h)
        img = frame_bgr
        if self._grid is not None:
            img = cv2.resize(img, self._grid, interpolation=cv2.INTER_NEAREST)
        sw, sh = self._small
        k = self._factor
        # grey first: the area mean of one channel is a third of the work (equal within 1 level)
        grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        if k > 1:
            grey = cv2.resize(grey[:sh * k, :sw * k], (sw, sh), interpolation=cv2.INTER_AREA)
        b = int(self.s.blur) | 1
        return cv2.GaussianBlur(grey, (b, b), 0) if b > 1 else grey

    def update(self, frame_bgr: np.ndarray, frames: int = 1) -> MotionResult:
        """One frame, (H, W, 3) uint8 BGR -> its `MotionResult` (and the background updated).
        ``frames``: frames since the last update (frames not looked at: the background moves on
        as if it had seen them, ``1 - (1 - alpha) ** frames``)."""
        grey = self.small_grey(frame_bgr)
        if self.background is None:
            self.background = grey.astype(np.float32)
            return MotionResult()
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self.background))
        _, changed = cv2.threshold(diff, int(self.s.threshold), 255, cv2.THRESH_BINARY)
        if self._keep is not None:
            changed = cv2.bitwise_and(changed, self._keep)
        fraction = cv2.countNonZero(changed) / self._area
        if fraction > self.s.whole_frame:
            self.background = grey.astype(np.float32)
            return MotionResult(fraction=float(fraction), whole_frame=True)
        cv2.accumulateWeighted(grey, self.background, 1.0 - (1.0 - float(self.s.alpha)) ** max(1, int(frames)))
        if fraction == 0.0:
            return MotionResult()
        if self.s.dilate:
            changed = cv2.dilate(changed, None, iterations=int(self.s.dilate))
        contours, _ = cv2.findContours(changed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes = [cv2.boundingRect(c) for c in contours if cv2.contourArea(c) >= self.s.contour_area]
        if not boxes:
            return MotionResult(fraction=float(fraction))
        b = np.asarray(boxes, np.float32)
        xyxy = np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1) \
            / np.tile(self._scale, 2).astype(np.float32)
        w, h = self._size
        xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
        return MotionResult(xyxy, float(fraction))
