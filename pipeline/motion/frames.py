"""The capture side of motion gating: one camera's motion detector and gate, run on each frame
capture publishes (in the capture process, on capture's cores, never the detector's), giving
the `Frame` message infer receives: ``detect`` (the gate's decision) and ``motion`` (the boxes).
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from trackpipe.pipeline.transport.messages import Frame, FrameMeta

from .setup import CameraMotion


class FrameGate:
    """``cm``: the camera's `CameraMotion` (None: nothing to do, every frame detected);
    ``flow``: latest | lossless; ``fps``: the source's (media time of lossless frames).
    Counts ``frames``, the frames the motion detector ``looked`` at (every other one while things
    move) and its seconds ``motion_s``."""

    def __init__(self, cm: Optional[CameraMotion], flow: str, fps: float = 30.0):
        self.flow = flow
        self.fps = fps if fps and fps > 0 else 30.0
        self.gate = cm.gate(flow) if cm is not None else None
        self.active = cm is not None and cm.active(flow)
        self.cm = cm
        self.detector = None
        self.motion_s = 0.0
        self.frames = 0
        self.looked = 0            # frames the motion detector looked at
        self._last: Optional[np.ndarray] = None   # the last motion boxes, when something moved
        self._looked_at = 0        # self.frames when it last looked
        self.decision = None       # the gate's last `GateDecision`

    def frame(self, meta: FrameMeta, pixels: Optional[np.ndarray]) -> Frame:
        """The message for frame ``meta`` whose pixels (H, W, 3) uint8 are ``pixels``."""
        if not self.active or pixels is None:
            return Frame(meta)
        if self.detector is None:
            self.detector = self.cm.motion_detector((meta.shape[1], meta.shape[0]))
        self.frames += 1
        t = meta.seq / self.fps if self.flow == "lossless" else meta.t_mono
        if self._last is not None:
            # the frame after a moving one is detected anyway: motion is looked at every other
            # frame while things move (the boxes carried over), half the cost of a busy scene
            boxes, self._last = self._last, None
            self.decision = self.gate.decide(True, t)
            return Frame(meta, self.decision.detect, boxes)
        t0 = time.perf_counter()
        m = self.detector.update(pixels, frames=self.frames - self._looked_at)
        self.motion_s += time.perf_counter() - t0
        self.looked += 1
        self._looked_at = self.frames
        self._last = m.boxes if m.moving else None
        self.decision = self.gate.decide(m.moving, t)
        return Frame(meta, self.decision.detect, m.boxes)

    def gauges(self) -> dict:
        g = self.gate
        if not self.active or g is None or not g.frames:
            return {}
        return {"motion_gating": int(g.enabled), "motion_fraction": round(g.motion_fraction, 4),
                "gate_detect_fraction": round(g.detect_fraction, 4),
                "motion_ms": round(1000.0 * self.motion_s / max(1, self.looked), 3),
                "motion_looked": round(self.looked / max(1, self.frames), 4)}
