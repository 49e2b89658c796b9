"""Camera-motion compensation (CMC): the global motion between two frames, as BoT-SORT does it.

This is the one module of ``trackers/`` that uses OpenCV, and it imports ``cv2`` inside
:meth:`CameraMotion.estimate` only: the tracking core never imports it, and a tracker that
gets no frames (or runs with ``cmc="off"``) never loads it.

:meth:`CameraMotion.estimate` turns each frame grey at a small width (``width``, 320 pixels;
BoT-SORT's sparse optical flow GMC halves the frame), finds corners (``cv2.goodFeaturesToTrack``), follows them
into the next frame with pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``) and fits a
partial affine transform (rotation, uniform scale, translation) with RANSAC
(``cv2.estimateAffinePartial2D``). The result ``A`` (2,3) maps a point of the previous frame to
the current one, in full-frame pixels. It is reported as moving only when it shifts the
small frame by more than ``min_shift`` pixels (translation, or the displacement of a frame corner by
rotation/scale): a still camera gives the identity, so tracks are not disturbed by
estimation noise.

:func:`warp_boxes` and :func:`warp_state` apply ``A`` to boxes (N,4) xyxy and to Kalman
states (N,8) / covariances (N,8,8) (``xywh`` or ``xyah`` space).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass
class CmcParams:
    """width: the frame is shrunk to this width (aspect kept, never enlarged) before the
    flow; max_corners,
    quality, min_distance: ``goodFeaturesToTrack``; min_shift: pixels of the small frame
    (``width`` wide) below which the camera counts as still and the identity is returned;
    min_inliers: fewer RANSAC inliers than this give the identity."""

    width: int = 320
    max_corners: int = 200
    quality: float = 0.01
    min_distance: int = 1
    min_shift: float = 0.5
    min_inliers: int = 10

    def __post_init__(self) -> None:
        if self.width < 32 or self.max_corners < 4 or self.min_shift < 0 or self.min_inliers < 3:
            raise ValueError("cmc: width >= 32, max_corners >= 4, min_shift >= 0, "
                             "min_inliers >= 3 required")


class CameraMotion:
    """Frame-to-frame global motion (module docstring). One instance per stream."""

    def __init__(self, params: CmcParams | None = None) -> None:
        self.params = params or CmcParams()
        self.reset()

    def reset(self) -> None:
        self._prev = None            # previous downscaled grey frame (h, w) uint8
        self._size = None            # (h, w) of the full frame
        self.last = IDENTITY.copy()  # the last estimate, (2,3)
        self.moving = False          # whether the last estimate exceeded min_shift
        self.frames = self.moving_frames = 0

    def estimate(self, frame: np.ndarray) -> np.ndarray:
        """frame (H,W,3) BGR or (H,W) grey uint8 -> A (2,3): previous -> current frame, full-frame
        pixels; the identity on the first frame, after a size change, when the camera is
        still, or when too few corners follow."""
        import cv2  # the one OpenCV import of the tracking package (module docstring)

        p = self.params
        self.frames += 1
        h, w = frame.shape[:2]
        scale = max(1.0, w / p.width)
        small = frame
        while small.shape[1] >= 2 * p.width:       # 2x2 area halving: cheap on large frames
            small = cv2.resize(small, (small.shape[1] // 2, small.shape[0] // 2),
                               interpolation=cv2.INTER_AREA)
        if scale > 1.0:
            small = cv2.resize(small, (p.width, max(1, round(h / scale))),
                               interpolation=cv2.INTER_AREA)
        grey = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        prev, self._prev = self._prev, grey
        A = IDENTITY.copy()
        self.moving = False
        if prev is not None and self._size == (h, w):
            pts = cv2.goodFeaturesToTrack(prev, p.max_corners, p.quality, p.min_distance,
                                          blockSize=3, useHarrisDetector=False, k=0.04)
            if pts is not None and len(pts) >= p.min_inliers:
                nxt, status, _ = cv2.calcOpticalFlowPyrLK(prev, grey, pts, None)
                ok = status.reshape(-1).astype(bool)
                if ok.sum() >= p.min_inliers:
                    M, inl = cv2.estimateAffinePartial2D(pts[ok], nxt[ok], method=cv2.RANSAC)
                    if M is not None and inl is not None and int(inl.sum()) >= p.min_inliers:
                        M = M.astype(np.float64)
                        if _shift(M, grey.shape[1], grey.shape[0]) > p.min_shift:
                            M[:, 2] *= w / grey.shape[1]
                            A, self.moving = M, True
        self._size = (h, w)
        self.moving_frames += int(self.moving)
        self.last = A
        return A


def _shift(A: np.ndarray, w: int, h: int) -> float:
    """Largest displacement (pixels) that ``A`` gives a corner or the centre of a w x h frame."""
    pts = np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 2, h / 2]], np.float64)
    moved = pts @ A[:, :2].T + A[:, 2]
    return float(np.abs(moved - pts).max())


def is_identity(A: np.ndarray) -> bool:
    return bool(np.array_equal(A, IDENTITY))


def warp_boxes(xyxy: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Boxes (N,4) xyxy -> (N,4): corners mapped by ``A`` (2,3), then the axis-aligned box around them."""
    if len(xyxy) == 0:
        return xyxy.copy()
    x1, y1, x2, y2 = (xyxy[:, k] for k in range(4))
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1),
                        np.stack([x1, y2], 1), np.stack([x2, y2], 1)], axis=1)   # (N,4,2)
    moved = corners @ A[:, :2].T + A[:, 2]
    return np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)


def warp_state(mean: np.ndarray, cov: np.ndarray, A: np.ndarray, space: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """Kalman states mean (N,8), cov (N,8,8) moved by ``A`` (2,3), as BoT-SORT's ``multi_gmc``.

    Position (x, y) -> R @ (x, y) + t and velocity (vx, vy) -> R @ (vx, vy), R = A[:, :2]. In
    ``xywh`` space the size pair (w, h) and its velocity are multiplied by R too (BoT-SORT's
    block-diagonal form); in ``xyah`` the height and its velocity are scaled by sqrt(|det R|)
    and the aspect is kept."""
    if len(mean) == 0:
        return mean, cov
    R, t = A[:, :2], A[:, 2]
    T = np.eye(8)
    T[0:2, 0:2] = R
    T[4:6, 4:6] = R
    if space == "xywh":
        T[2:4, 2:4] = R
        T[6:8, 6:8] = R
    else:
        s = float(np.sqrt(abs(np.linalg.det(R))))
        T[3, 3] = T[7, 7] = s
    mean = mean @ T.T
    mean[:, 0:2] += t
    cov = T @ cov @ T.T
    return mean, cov
