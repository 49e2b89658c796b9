"""Track storage shared by the SORT and DeepSORT trackers: one struct of parallel arrays.

Keeping every live track in a few arrays (rather than one Python object per track) lets a
frame predict, gate, update and age all tracks with a handful of numpy calls.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from trackpipe.models.types import Tracks, from_xyah

from . import kalman


@dataclass
class TrackTable:
    """All live tracks of one tracker instance, as parallel arrays (T = number of tracks).

    mean:              (T,8) float64 Kalman state x, y, a, h, vx, vy, va, vh
    cov:               (T,8,8) float64 Kalman covariance
    track_id:          (T,) int64, from the tracker's own counter, starting at 1
    class_id:          (T,) int32, class of the last matched detection
    score:             (T,) float32, score of the last matched detection
    box:               (T,4) float64, last matched detection xyxy
    age:               (T,) int32, frames since creation
    hits:              (T,) int32, total matched frames
    hit_streak:        (T,) int32, consecutive matches after the creating detection or after
                       the last miss (SORT's counter: 0 for a new track, reset by a miss)
    time_since_update: (T,) int32, 0 if matched this frame
    confirmed:         (T,) bool, reached the confirmation rule at least once
    """

    mean: np.ndarray
    cov: np.ndarray
    track_id: np.ndarray
    class_id: np.ndarray
    score: np.ndarray
    box: np.ndarray
    age: np.ndarray
    hits: np.ndarray
    hit_streak: np.ndarray
    time_since_update: np.ndarray
    confirmed: np.ndarray

    @classmethod
    def empty(cls) -> "TrackTable":
        return cls(np.zeros((0, 8)), np.zeros((0, 8, 8)), np.zeros(0, np.int64),
                   np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros((0, 4)),
                   np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32),
                   np.zeros(0, np.int32), np.zeros(0, bool))

    @classmethod
    def create(cls, xyah: np.ndarray, xyxy: np.ndarray, score: np.ndarray,
               class_id: np.ndarray, first_id: int,
               kalman_params: kalman.KalmanParams = kalman.DEFAULT_PARAMS) -> "TrackTable":
        """New tentative tracks (hits 1, hit_streak 0) from N detections; ids first_id.. ."""
        n = len(xyah)
        mean, cov = kalman.initiate(xyah, kalman_params)
        ones = np.ones(n, np.int32)
        return cls(mean, cov, np.arange(first_id, first_id + n, dtype=np.int64),
                   np.asarray(class_id, np.int32).copy(), np.asarray(score, np.float32).copy(),
                   np.asarray(xyxy, np.float64).reshape(-1, 4).copy(), np.zeros(n, np.int32),
                   ones, np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, bool))

    def __len__(self) -> int:
        return len(self.track_id)

    def select(self, index) -> "TrackTable":
        """Subset by boolean mask or integer indices (copies)."""
        return TrackTable(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def append(self, other: "TrackTable") -> "TrackTable":
        if len(other) == 0:
            return self
        if len(self) == 0:
            return other
        return TrackTable(**{f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                             for f in fields(self)})

    def predict(self, kalman_params: kalman.KalmanParams = kalman.DEFAULT_PARAMS) -> None:
        """Advance every track one frame (in place) and age the counters like SORT.

        A height velocity that would make the height non-positive is zeroed first
        (SORT's guard against collapsing boxes).
        """
        if len(self) == 0:
            return
        bad = self.mean[:, 3] + self.mean[:, 7] <= 0
        if bad.any():
            self.mean[bad, 7] = 0.0
        self.mean, self.cov = kalman.predict(self.mean, self.cov, kalman_params)
        self.age += 1
        self.hit_streak[self.time_since_update > 0] = 0
        self.time_since_update += 1

    def update(self, rows: np.ndarray, xyah: np.ndarray, xyxy: np.ndarray, score: np.ndarray,
               class_id: np.ndarray,
               kalman_params: kalman.KalmanParams = kalman.DEFAULT_PARAMS) -> None:
        """Correct tracks ``rows`` (K,) with their matched detections (K,4 xyah / xyxy)."""
        if len(rows) == 0:
            return
        self.mean[rows], self.cov[rows] = kalman.update(self.mean[rows], self.cov[rows], xyah,
                                                        kalman_params)
        self.box[rows] = xyxy
        self.score[rows] = score
        self.class_id[rows] = class_id
        self.hits[rows] += 1
        self.hit_streak[rows] += 1
        self.time_since_update[rows] = 0

    def predicted_xyxy(self) -> np.ndarray:
        """(T,4) xyxy of the current Kalman mean."""
        return from_xyah(self.mean[:, :4])

    def to_tracks(self, mask: np.ndarray, use_detection_box: bool) -> Tracks:
        """Tracks output for the rows in ``mask``: Kalman box or last detection box."""
        sel = np.flatnonzero(mask)
        if len(sel) == 0:
            return Tracks.empty()
        xyxy = self.box[sel] if use_detection_box else from_xyah(self.mean[sel, :4])
        return Tracks(xyxy, self.score[sel], self.class_id[sel], None,
                      track_id=self.track_id[sel], age=self.age[sel], hits=self.hits[sel])
