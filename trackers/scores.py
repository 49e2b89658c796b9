"""Detector-independent score scale for tracker thresholds.

Detectors disagree on what a score means: the Faster R-CNN detections shipped with MOT15
have a median of 0.96, Yolo-Fastest's on the project's videos 0.40-0.80 (conf 0.25). A fixed
threshold tuned on one (MOT15's 0.97 to start a track) silences the other (on
``traffic-cars.mp4`` one car in 335 frames). So the hybrid tracker's thresholds are on a
relative scale in [0, 1]:

- ``linear``: ``rel = (score - floor) / (1 - floor)``, ``floor`` the detector's ``conf``;
- ``quantile`` (default): ``rel`` = the fraction of the detections seen so far in this run
  with a lower score (the empirical CDF on [floor, 1], 64 bins, linear within a bin), with a
  prior of ``prior_weight`` detections spread uniformly over [floor, 1] so that the first
  frames follow the linear rule and the estimate settles as detections arrive. A threshold
  ``new_rel=0.5`` then means "the upper half of what this detector emits", whatever its
  scale. The estimate counts every detection once, so it is deterministic for a given input
  and its memory is 64 numbers.
"""

from __future__ import annotations

import numpy as np


class ScoreNormalizer:
    """Maps raw scores (N,) to the relative scale (N,) in [0, 1] (module docstring)."""

    def __init__(self, floor: float, mode: str = "quantile", bins: int = 64,
                 prior_weight: float = 100.0) -> None:
        if mode not in ("linear", "quantile"):
            raise ValueError(f"score_norm must be 'linear' or 'quantile', got {mode!r}")
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"score floor must be in [0, 1), got {floor}")
        self.floor, self.mode, self.bins = float(floor), mode, int(bins)
        self.prior_weight = float(prior_weight)
        self.reset()

    def reset(self) -> None:
        self.counts = np.full(self.bins, self.prior_weight / self.bins)

    @property
    def seen(self) -> float:
        """Detections counted so far (without the prior)."""
        return float(self.counts.sum() - self.prior_weight)

    def linear(self, score: np.ndarray) -> np.ndarray:
        s = np.asarray(score, np.float64)
        return np.clip((s - self.floor) / (1.0 - self.floor), 0.0, 1.0)

    def __call__(self, score: np.ndarray) -> np.ndarray:
        """Count this frame's scores, then return their relative values (N,)."""
        lin = self.linear(score)
        if self.mode == "linear" or len(lin) == 0:
            return lin
        pos = lin * self.bins
        b = np.minimum(pos.astype(np.intp), self.bins - 1)
        self.counts += np.bincount(b, minlength=self.bins)
        cum = np.concatenate([[0.0], np.cumsum(self.counts)])
        below = cum[b] + (pos - b) * self.counts[b]
        return below / cum[-1]

    def threshold_for(self, rel: float) -> float:
        """The raw score whose relative value is ``rel`` under the current estimate."""
        if self.mode == "linear":
            return self.floor + rel * (1.0 - self.floor)
        cum = np.concatenate([[0.0], np.cumsum(self.counts)]) / self.counts.sum()
        x = np.interp(rel, cum, np.linspace(0.0, 1.0, self.bins + 1))
        return float(self.floor + x * (1.0 - self.floor))
