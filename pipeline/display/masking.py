"""Capture-side masking: paint the overlay's own drawings out of a screen grab before detection.

X11 has no "exclude this window from capture", so the frame grabbed by mss contains the
overlay. The overlay reports the exact rectangles it drew (`Drawn` messages); the capture
stage keeps the union of the last two reports (a grab can race a redraw) and replaces those
pixels by interpolating the clean pixels on either side (outlines are 3 px, labels ~17 px
high). On Windows ``display.qt_env.exclude_from_capture`` makes masking unnecessary.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.messages import Drawn


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


class MaskedSource:
    """Wraps a screen `Source`: ``read_into`` paints the overlay's drawn rectangles out of each grab.

    ``sock``: a PULL socket receiving `Drawn` messages; ``stats``: the capture's `StageStats`
    (gauge ``masked_frames``). Used by the capture's grabber thread alone."""

    def __init__(self, inner, sock, stats):
        self._inner = inner
        self._sock = sock
        self._stats = stats
        self._reports: deque = deque(maxlen=2)
        stats.gauges.update(masked_frames=0)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def rects(self) -> np.ndarray:
        """(M, 4) int32: the union of the last two reports."""
        while True:
            msg = busmod.recv_nowait(self._sock)
            if msg is None:
                break
            if isinstance(msg, Drawn):
                self._reports.append(msg.rects)
        if not self._reports:
            return np.zeros((0, 4), np.int32)
        return np.concatenate(list(self._reports)).reshape(-1, 4)

    def read_into(self, buf):
        img = self._inner.read_into(buf)
        if img is not None:
            rects = self.rects()
            if len(rects):
                mask_overlay(img, rects, inplace=True)
                self._stats.gauges["masked_frames"] += 1
        return img
