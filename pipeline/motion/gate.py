"""Which frames the detector sees: the motion gate of one camera.

``detect.motion`` on: a frame is detected when something moves in it (its `MotionResult`
has a box), when ``stationary_interval`` frames went by since the last detection (objects that
stand still are re-checked), when ``max_gap_s`` seconds went by (no camera goes longer without
a detection) and on the first frame. Nothing moves: no detection; the tracker holds what it
saw (`StationaryBook`). Off: every frame is detected (``reason`` "every").

``auto`` is on for live sources and off for files (lossless runs keep every frame's boxes);
`resolve_mode` turns the setting into on/off.
"""

from __future__ import annotations

from dataclasses import dataclass


def resolve_mode(setting: str, flow: str) -> bool:
    """``detect.motion`` (auto | on | off) and the run's flow (latest | lossless) -> gating on?"""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return flow == "latest"


@dataclass(frozen=True)
class GateDecision:
    """``detect``: run the detector on this frame; ``reason``: every (gating off), first,
    motion, recheck, gap, or "" (skipped: nothing moved)."""

    detect: bool
    reason: str


class MotionGate:
    """The per-camera gate. ``stationary_interval``: frames between re-checks (>= 1);
    ``max_gap_s``: seconds without a detection at most (0: no bound). Counts the frames it
    saw and detected (``frames``, ``detected``, ``moving``)."""

    def __init__(self, enabled: bool, stationary_interval: int = 50, max_gap_s: float = 10.0):
        self.enabled = bool(enabled)
        self.interval = max(1, int(stationary_interval))
        self.max_gap_s = float(max_gap_s)
        self.frames = self.detected = self.moving = 0
        self._since = 0                 # frames since the last detection
        self._t_last = None             # time of the last detection

    def decide(self, moving: bool, t: float) -> GateDecision:
        """One frame: ``moving`` (its motion result has a box), ``t`` its time in seconds (any
        clock that only goes forward: media time for files, monotonic for live)."""
        self.frames += 1
        self.moving += bool(moving)
        if not self.enabled:
            reason = "every"
        elif self._t_last is None:
            reason = "first"
        elif moving:
            reason = "motion"
        elif self._since + 1 >= self.interval:
            reason = "recheck"
        elif self.max_gap_s > 0 and t - self._t_last >= self.max_gap_s:
            reason = "gap"
        else:
            self._since += 1
            return GateDecision(False, "")
        self._since = 0
        self._t_last = t
        self.detected += 1
        return GateDecision(True, reason)

    @property
    def detect_fraction(self) -> float:
        return self.detected / self.frames if self.frames else 0.0

    @property
    def motion_fraction(self) -> float:
        return self.moving / self.frames if self.frames else 0.0
