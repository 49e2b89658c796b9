"""The default tracker: SORT's motion model with OC-SORT's and ByteTrack's association steps,
score thresholds relative to the detector's confidence floor, and output without flicker.

One frame of :meth:`HybridTracker.update` (T live tracks, N detections):

1. scores are put on a detector-independent scale ``rel`` in [0, 1]
   (:mod:`trackers.scores`): by default the fraction of this run's detections scoring lower
   (an online estimate on [score_floor, 1], ``score_floor`` being the detector's own
   ``conf``); "high" detections have ``rel >= high_rel``;
2. every track is predicted (vectorised Kalman, ``xyah`` or ``xywh`` state, see
   :class:`trackers.kalman.KalmanParams`);
3. first pass (high detections x all tracks): Hungarian on IoU of the predicted box plus,
   with ``inertia > 0``, OC-SORT's observation-centric momentum (OCM): the cosine between the
   track's direction of motion (its observation ``delta_t`` frames back -> its last
   observation) and the direction (that old observation -> the detection), weighted by
   ``inertia * rel``; pairs with IoU < ``iou_threshold`` are never matched;
4. optional second pass (ByteTrack, ``low_rel`` set): detections with
   ``low_rel <= rel < high_rel`` x tracks left, IoU >= ``second_iou_threshold``;
5. optional recovery (OC-SORT's OCR, ``recovery``): high detections left x tracks left,
   IoU of the track's *last observed* box (not the prediction) >= ``iou_threshold``;
6. Kalman update of the matched tracks; a track matched again after a gap of g > 1 frames
   is first rewound (OC-SORT's observation-centric re-update, ORU, ``reupdate``): its state
   at the last observation is run through g virtual observations on the straight line from
   that observation to the new one, so the velocity built up while coasting is discarded;
7. lifecycle: unmatched high detections with ``rel >= new_rel`` (every one when it is None)
   start tentative tracks;
   a track is confirmed after ``min_hits`` consecutive matches after its first detection
   (``min_hits=0``: at once) once its evidence (the sum of ``rel`` over its detections) is
   at least ``confirm_score``; tentative tracks die at their first miss, confirmed ones after
   ``max_age`` misses. IDs come from a per-instance counter and a deleted ID never returns;
8. output: confirmed tracks matched this frame (Kalman posterior box, or the detection box
   with ``output_box="detection"``) and, for ``max_predict`` frames after their last match,
   confirmed tracks that are missed, at their predicted box, flagged ``predicted``
   (:attr:`HybridTracker.last_predicted`, and ``Tracks.predicted`` where the data contract
   has that field).

:attr:`HybridTracker.events` gives, after every ``update``, the IDs output for the first time
(``started``) and the IDs of started tracks deleted in this frame (``ended``): each ID
starts once and ends once (:meth:`HybridTracker.finish` ends the tracks still live at the
end of a stream).

Pure numpy/scipy: no OpenCV, no TensorFlow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment
from trackpipe.models.types import Detections, Tracks, from_xyah, to_xyah

from . import kalman
from .base import Tracker
from .cmc import CameraMotion, CmcParams, is_identity, warp_boxes, warp_state
from .lifecycle import LifecycleLog, TrackEvents, make_tracks
from .matching import iou_matrix
from .scores import ScoreNormalizer

logger = logging.getLogger(__name__)

#: noise model of the default tracker (chosen by cross-validation, docs/tracking.md)
HYBRID_KALMAN = kalman.KalmanParams(std_weight_velocity=1.0 / 80, space="xywh")


@dataclass
class HybridConfig:
    """Settings of :class:`HybridTracker`; the defaults are the shipped ``hybrid`` preset.

    score_floor: the detector's confidence threshold (``model.conf``). ``python -m trackers
        evaluate`` sets it from the detection files (the lowest score, rounded down to 0.05:
        0.5 for MOT15's ``det.txt``).
    score_norm: how scores become ``rel`` in [0, 1], the scale of every threshold below:
        ``quantile`` (share of this run's detections scoring lower, online estimate with a
        prior of ``prior_weight`` detections uniform on [score_floor, 1]) or ``linear``
        (``(score - score_floor) / (1 - score_floor)``); see :mod:`trackers.scores`.
    high_rel: first pass (and births) use detections with ``rel >= high_rel``.
    new_rel: minimum ``rel`` to start a track (default 0.7: the top 30 % of the run's scores;
        None: every first-pass detection may start one, confirmed by evidence over time, below).
    low_rel: second pass for ``low_rel <= rel < high_rel`` (None: off).
    second_iou_threshold: minimum IoU of a second-pass match.
    iou_threshold: minimum IoU of a first-pass (and recovery) match.
    inertia: weight of OC-SORT's direction-consistency term (0: off); delta_t: frames back
        to the observation that defines a track's direction.
    recovery: OC-SORT's OCR step (match left-over tracks by their last observed box);
        recovery_max_miss: only tracks missed for at most this many frames.
    reupdate: OC-SORT's ORU step (re-update along a virtual trajectory after a gap).
    max_age: misses before a confirmed track is deleted.
    min_hits: consecutive matches after the first detection needed to confirm.
    confirm_score: evidence needed to confirm as well: the sum of ``rel`` over the track's
        matched detections, its first included (0: hits alone). With ``rel`` on the quantile
        scale a track of top-ranked detections is confirmed after ``min_hits`` matches and one
        of low-ranked detections after more, but no detection is barred from starting a track.
    output_warmup: output every matched track during the first ``min_hits`` frames.
    output_box: ``kalman`` (posterior) or ``detection`` (the matched detection's box).
    max_predict: confirmed tracks missed for 1..max_predict frames are output at their
        predicted box, flagged predicted (0: only matched tracks are output).
    class_aware: never match a track to a detection of another class.
    kalman: noise model and state space (see :class:`trackers.kalman.KalmanParams`).
    interpolate: for file runs: gaps of up to this many frames per ID are filled by linear
        interpolation in the MOT output once the file is done
        (:func:`trackers.interpolate.interpolate_gaps`); the online tracker ignores it.
    cmc: camera-motion compensation when ``update`` gets frames: ``auto`` estimates the
        frame-to-frame motion (:mod:`trackers.cmc`, OpenCV on a downscaled frame) and moves the
        tracks by it only when the camera moves; ``off`` never looks at frames. Without
        frames (MOT files) it does nothing. cmc_params: :class:`trackers.cmc.CmcParams`.
    """

    score_floor: float = 0.25
    score_norm: str = "quantile"
    prior_weight: float = 100.0
    high_rel: float = 0.1
    new_rel: float | None = 0.7
    low_rel: float | None = 0.0
    second_iou_threshold: float = 0.5
    iou_threshold: float = 0.2
    inertia: float = 0.0
    delta_t: int = 3
    recovery: bool = False
    recovery_max_miss: int = 30
    reupdate: bool = False
    max_age: int = 30
    min_hits: int = 1
    confirm_score: float = 0.0
    output_warmup: bool = True
    output_box: str = "kalman"
    max_predict: int = 5
    class_aware: bool = True
    kalman: kalman.KalmanParams = HYBRID_KALMAN
    interpolate: int = 20
    cmc: str = "off"
    cmc_params: CmcParams = field(default_factory=CmcParams)

    def __post_init__(self) -> None:
        if isinstance(self.cmc_params, dict):
            self.cmc_params = CmcParams(**self.cmc_params)
        if self.cmc not in ("off", "auto"):
            raise ValueError(f"cmc must be 'off' or 'auto', got {self.cmc!r}")
        if self.interpolate < 0:
            raise ValueError(f"interpolate must be >= 0, got {self.interpolate}")
        if not 0.0 <= self.score_floor < 1.0:
            raise ValueError(f"score_floor must be in [0, 1), got {self.score_floor}")
        for name in ("high_rel", "new_rel", "low_rel", "iou_threshold", "second_iou_threshold"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.low_rel is not None and self.low_rel > self.high_rel:
            raise ValueError(f"low_rel ({self.low_rel}) must be <= high_rel ({self.high_rel})")
        if min(self.max_age, self.min_hits, self.max_predict, self.recovery_max_miss,
               self.confirm_score) < 0 \
                or self.delta_t < 1:
            raise ValueError("max_age, min_hits, max_predict, recovery_max_miss, confirm_score "
                             "must be >= 0, "
                             "delta_t >= 1")
        if self.max_predict > self.max_age:
            raise ValueError(f"max_predict ({self.max_predict}) must be <= max_age ({self.max_age})")
        if self.output_box not in ("kalman", "detection"):
            raise ValueError(f"output_box must be 'kalman' or 'detection', got {self.output_box!r}")

        if self.score_norm not in ("linear", "quantile") or self.prior_weight <= 0:
            raise ValueError(f"score_norm must be 'linear' or 'quantile' (got {self.score_norm!r}) "
                             f"and prior_weight > 0 (got {self.prior_weight})")


@dataclass
class _Table:
    """Live tracks as parallel arrays (T tracks, K = delta_t observation slots).

    mean (T,8), cov (T,8,8): Kalman state in the configured space; post_mean, post_cov: the
    posterior at the last observation (for ORU); track_id (T,) int64; class_id (T,) int32;
    score (T,) float32 of the last match; obs (T,4) xyxy last observed box; hist (T,K,4) and
    hist_age (T,K) int: recent observations and the age they were made at (-1: none);
    vel (T,2) unit direction (dy, dx) of motion (0 when unknown); age, hits, hit_streak,
    time_since_update (T,) int32; confirmed (T,) bool; evidence (T,) float: the sum of
    ``rel`` over the track's matched detections, its first included (the birth rule).
    """

    mean: np.ndarray
    cov: np.ndarray
    post_mean: np.ndarray
    post_cov: np.ndarray
    track_id: np.ndarray
    class_id: np.ndarray
    score: np.ndarray
    obs: np.ndarray
    hist: np.ndarray
    hist_age: np.ndarray
    vel: np.ndarray
    age: np.ndarray
    hits: np.ndarray
    hit_streak: np.ndarray
    time_since_update: np.ndarray
    confirmed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    evidence: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def create(cls, z: np.ndarray, xyxy: np.ndarray, score: np.ndarray, class_id: np.ndarray,
               first_id: int, k: int, p: kalman.KalmanParams,
               rel: np.ndarray | None = None) -> _Table:
        n = len(z)
        mean, cov = kalman.initiate(z, p)
        hist = np.zeros((n, k, 4))
        hist[:, 0] = xyxy
        hist_age = np.full((n, k), -1, np.int64)
        hist_age[:, 0] = 0
        zi = np.zeros(n, np.int32)
        return cls(mean, cov, mean.copy(), cov.copy(), np.arange(first_id, first_id + n, dtype=np.int64),
                   np.asarray(class_id, np.int32).copy(), np.asarray(score, np.float32).copy(),
                   np.asarray(xyxy, np.float64).copy(), hist, hist_age, np.zeros((n, 2)),
                   zi.copy(), np.ones(n, np.int32), zi.copy(), zi.copy(), np.zeros(n, bool),
                   np.zeros(n) if rel is None else np.asarray(rel, np.float64).copy())

    @classmethod
    def empty(cls, k: int) -> _Table:
        return cls.create(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0), np.zeros(0), 1, k,
                          kalman.DEFAULT_PARAMS)

    def __len__(self) -> int:
        return len(self.track_id)

    def select(self, index) -> _Table:
        return _Table(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def append(self, other: _Table) -> _Table:
        if len(other) == 0:
            return self
        return _Table(**{f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                         for f in fields(self)})


def _centres(xyxy: np.ndarray) -> np.ndarray:
    """(N,4) xyxy -> (N,2) centre (y, x) (OC-SORT's (dy, dx) order)."""
    return np.stack([(xyxy[:, 1] + xyxy[:, 3]) * 0.5, (xyxy[:, 0] + xyxy[:, 2]) * 0.5], axis=1)


def _assign(score: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Maximum-score assignment over the ``allowed`` (R,C) pairs -> (K,2) [row, col]."""
    if not allowed.any():
        return np.zeros((0, 2), np.int64)
    # forbidden pairs cost more than any allowed assignment could gain
    cost = np.where(allowed, -score, 1e6)
    r, c = linear_sum_assignment(cost)
    ok = allowed[r, c]
    return np.stack([r[ok], c[ok]], axis=1).astype(np.int64)


class HybridTracker(Tracker):
    """Motion-only tracker combining SORT, ByteTrack and OC-SORT (module docstring)."""

    name = "hybrid"

    def __init__(self, config: HybridConfig | None = None) -> None:
        self.config = config or HybridConfig()
        self.reset()

    def reset(self) -> None:
        self._t = _Table.empty(self.config.delta_t)
        self._next_id = 1
        self._frame = 0
        self._log = LifecycleLog()
        self.last_predicted = np.zeros(0, bool)
        c = self.config
        self.camera = CameraMotion(c.cmc_params) if c.cmc == "auto" else None
        self.scores = ScoreNormalizer(c.score_floor, c.score_norm, prior_weight=c.prior_weight)

    def thresholds(self) -> dict:
        """The current thresholds on the detector's raw score scale (for logs and docs)."""
        c = self.config
        out = {"high": self.scores.threshold_for(c.high_rel),
               "new": self.scores.threshold_for(c.high_rel if c.new_rel is None else c.new_rel)}
        if c.low_rel is not None:
            out["low"] = self.scores.threshold_for(c.low_rel)
        return out

    @property
    def needs_frame(self) -> bool:
        """Whether ``update`` uses the frame (camera-motion compensation on)."""
        return self.camera is not None

    @property
    def num_tracks(self) -> int:
        return len(self._t)

    @property
    def frame_count(self) -> int:
        return self._frame

    @property
    def live_track_ids(self) -> np.ndarray:
        """(T,) ids of every live track (tentative, confirmed, coasting)."""
        return self._t.track_id.copy()

    @property
    def events(self) -> TrackEvents:
        """IDs started and ended by the last :meth:`update` (or :meth:`finish`)."""
        return self._log.events

    def finish(self) -> TrackEvents:
        """End of stream: every started track still live ends now. Returns those events."""
        return self._log.finish()

    # -- one frame ---------------------------------------------------------------------------

    def _compensate(self, A: np.ndarray) -> None:
        """Move every track by the camera motion A (2,3) (previous -> current frame)."""
        t = self._t
        if is_identity(A) or len(t) == 0:
            return
        space = self.config.kalman.space
        t.mean, t.cov = warp_state(t.mean, t.cov, A, space)
        t.post_mean, t.post_cov = warp_state(t.post_mean, t.post_cov, A, space)
        t.obs = warp_boxes(t.obs, A)
        t.hist = warp_boxes(t.hist.reshape(-1, 4), A).reshape(t.hist.shape)

    def _predict(self) -> np.ndarray:
        """Advance all tracks one frame -> (T,4) predicted xyxy."""
        t, p = self._t, self.config.kalman
        if len(t) == 0:
            return np.zeros((0, 4))
        bad = t.mean[:, 3] + t.mean[:, 7] <= 0
        if p.space == "xywh":
            bad |= t.mean[:, 2] + t.mean[:, 6] <= 0
        if bad.any():
            t.mean[bad, 6:8] = 0.0
        t.mean, t.cov = kalman.predict(t.mean, t.cov, p)
        t.age += 1
        t.hit_streak[t.time_since_update > 0] = 0
        t.time_since_update += 1
        return from_xyah(kalman.from_state(t.mean[:, :4], p.space))

    def _previous_obs(self) -> np.ndarray:
        """(T,4) OC-SORT's ``k_previous_obs``: the oldest observation made within the last
        ``delta_t`` frames, else the last observation."""
        t = self._t
        if len(t) == 0:
            return np.zeros((0, 4))
        recent = t.hist_age >= (t.age - self.config.delta_t)[:, None]
        key = np.where(recent, t.hist_age, np.iinfo(np.int64).max)
        j = key.argmin(axis=1)
        rows = np.arange(len(t))
        return np.where(recent.any(axis=1)[:, None], t.hist[rows, j], t.obs)

    def _match(self, rows: np.ndarray, cols: np.ndarray, ref_boxes: np.ndarray, boxes: np.ndarray,
               classes: np.ndarray, min_iou: float, bonus=None) -> np.ndarray:
        """IoU (+ bonus) assignment of track rows x detection cols -> (K,2) [row, det].

        bonus: None or f(track rows (P,), detection indices (P,)) -> (P,) extra gain, called
        only for the pairs allowed by the IoU gate (few, even with hundreds of boxes)."""
        if len(rows) == 0 or len(cols) == 0:
            return np.zeros((0, 2), np.int64)
        iou = iou_matrix(ref_boxes[rows], boxes[cols])
        allowed = iou >= min_iou
        if self.config.class_aware:
            allowed &= self._t.class_id[rows][:, None] == classes[cols][None, :]
        if bonus is not None:
            r, c = np.nonzero(allowed)
            if len(r):
                iou[r, c] += bonus(rows[r], cols[c])
        m = _assign(iou, allowed)
        return np.stack([rows[m[:, 0]], cols[m[:, 1]]], axis=1)

    def _direction_bonus(self, prev_obs: np.ndarray, boxes: np.ndarray, rel: np.ndarray):
        """OC-SORT's OCM term as a pair function for :meth:`_match`: inertia * rel *
        (pi/2 - angle) / pi, angle between the track's direction and (its previous observation
        -> the detection); 0 for tracks without a direction. None when off."""
        c, t = self.config, self._t
        if c.inertia <= 0 or len(t) == 0:
            return None
        valid = np.abs(t.vel).sum(1) > 0
        if not valid.any():
            return None
        prev_c = _centres(prev_obs)
        det_c = _centres(boxes)

        def bonus(tr: np.ndarray, dt: np.ndarray) -> np.ndarray:
            d = det_c[dt] - prev_c[tr]                                   # (P,2) dy, dx
            d /= np.sqrt((d * d).sum(1, keepdims=True)) + 1e-6
            cos = np.clip((d * t.vel[tr]).sum(1), -1.0, 1.0)
            angle = (np.pi / 2 - np.arccos(cos)) / np.pi
            return np.where(valid[tr], angle, 0.0) * c.inertia * rel[dt]

        return bonus

    def _reupdate(self, rows: np.ndarray, z: np.ndarray) -> None:
        """ORU: rewind tracks ``rows`` (missed for g > 1 frames) to their last observation and
        update them along the straight line to the new measurements z (R,4) (state space).
        Rows are processed together: step i updates every row whose gap is >= i."""
        t, p = self._t, self.config.kalman
        g = t.time_since_update[rows].astype(np.float64)
        m, cv = t.post_mean[rows].copy(), t.post_cov[rows].copy()
        z0 = kalman.to_state(to_xyah(t.obs[rows]), p.space)            # last observations
        for i in range(1, int(g.max()) + 1):
            a = np.flatnonzero(g >= i)
            ma, ca = kalman.predict(m[a], cv[a], p)
            zi = z0[a] + (z[a] - z0[a]) * (i / g[a])[:, None]
            m[a], cv[a] = kalman.update(ma, ca, zi, p)
        t.mean[rows], t.cov[rows] = m, cv

    def update(self, dets: Detections, frame: np.ndarray | None = None) -> Tracks:
        """Advance one frame. dets: (N) detections, possibly empty; frame: (H,W,3) BGR or
        None, used only for camera-motion compensation (``cmc``)."""
        c = self.config
        self._frame += 1
        if self.camera is not None and frame is not None:
            self._compensate(self.camera.estimate(frame))
        pred = self._predict()
        t = self._t
        boxes = np.asarray(dets.xyxy, dtype=np.float64)
        score, classes = dets.score, dets.class_id
        rel = self.scores(score)
        high = rel >= c.high_rel
        high_idx = np.flatnonzero(high)
        all_rows = np.arange(len(t))

        ocm = c.inertia > 0
        prev_obs = self._previous_obs() if ocm else None
        bonus = self._direction_bonus(prev_obs, boxes, rel) if ocm else None
        matches = self._match(all_rows, high_idx, pred, boxes, classes, c.iou_threshold, bonus)
        free_t = np.ones(len(t), bool)
        free_t[matches[:, 0]] = False
        free_d = high.copy()
        free_d[matches[:, 1]] = False
        parts = [matches]
        if c.low_rel is not None:
            low_idx = np.flatnonzero((rel >= c.low_rel) & ~high)
            m2 = self._match(np.flatnonzero(free_t), low_idx, pred, boxes, classes,
                             c.second_iou_threshold)
            free_t[m2[:, 0]] = False
            parts.append(m2)
        if c.recovery:
            rows = np.flatnonzero(free_t & (t.time_since_update <= c.recovery_max_miss + 1))
            m3 = self._match(rows, np.flatnonzero(free_d), t.obs, boxes, classes, c.iou_threshold)
            free_t[m3[:, 0]] = False
            free_d[m3[:, 1]] = False
            parts.append(m3)
        if len(parts) > 1:
            matches = np.concatenate(parts)

        if len(matches):
            self._apply(matches, boxes, score, classes, prev_obs, rel)

        # lifecycle
        t.confirmed |= (t.hit_streak >= c.min_hits) & (t.evidence >= c.confirm_score)
        dead = (t.time_since_update > c.max_age) | (~t.confirmed & (t.time_since_update > 0))
        if dead.any():
            t = self._t = t.select(~dead)
        new_thresh = c.high_rel if c.new_rel is None else c.new_rel
        birth = np.flatnonzero(free_d & (rel >= new_thresh))
        if len(birth):
            z = kalman.to_state(to_xyah(boxes[birth]), c.kalman.space)
            born = _Table.create(z, boxes[birth], score[birth], classes[birth], self._next_id,
                                 c.delta_t, c.kalman, rel[birth])
            self._next_id += len(birth)
            born.confirmed |= (born.hit_streak >= c.min_hits) & (born.evidence >= c.confirm_score)
            t = self._t = t.append(born)

        matched = t.time_since_update == 0
        ok = t.confirmed.copy()
        if c.output_warmup and self._frame <= c.min_hits:
            ok |= matched
        predicted = t.confirmed & ~matched & (t.time_since_update <= c.max_predict)
        sel = np.flatnonzero((matched & ok) | predicted)
        self._log.step(t.track_id[sel], t.track_id)
        self.last_predicted = predicted[sel]
        if len(sel) == 0:
            return make_tracks(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0),
                               np.zeros(0), np.zeros(0, bool))
        xyxy = from_xyah(kalman.from_state(t.mean[sel, :4], c.kalman.space))
        if c.output_box == "detection":
            m = matched[sel]
            xyxy[m] = t.obs[sel[m]]
        return make_tracks(xyxy, t.score[sel], t.class_id[sel], t.track_id[sel], t.age[sel],
                           t.hits[sel], self.last_predicted)

    def _apply(self, matches: np.ndarray, boxes: np.ndarray, score: np.ndarray,
               classes: np.ndarray, prev_obs: Optional[np.ndarray], rel: np.ndarray) -> None:
        """Kalman update (with ORU after gaps); observation history and direction (only kept
        when direction consistency is on: ``prev_obs`` not None)."""
        c, t = self.config, self._t
        r, d = matches[:, 0], matches[:, 1]
        p = c.kalman
        z = kalman.to_state(to_xyah(boxes[d]), p.space)
        gap = t.time_since_update[r] > 1
        if c.reupdate and gap.any():
            self._reupdate(r[gap], z[gap])
            norm = ~gap
            if norm.any():
                t.mean[r[norm]], t.cov[r[norm]] = kalman.update(t.mean[r[norm]], t.cov[r[norm]],
                                                                z[norm], p)
        else:
            t.mean[r], t.cov[r] = kalman.update(t.mean[r], t.cov[r], z, p)
        if c.reupdate:
            t.post_mean[r] = t.mean[r]
            t.post_cov[r] = t.cov[r]
        if prev_obs is not None:
            # direction of motion: from the observation delta_t frames back to this one
            dv = _centres(boxes[d]) - _centres(prev_obs[r])
            norm = np.sqrt((dv * dv).sum(1, keepdims=True))
            t.vel[r] = np.where(norm > 0, dv / (norm + 1e-6), t.vel[r])
            slot = t.age[r] % c.delta_t
            t.hist[r, slot] = boxes[d]
            t.hist_age[r, slot] = t.age[r]
        t.obs[r] = boxes[d]
        t.score[r] = score[d]
        t.class_id[r] = classes[d]
        t.hits[r] += 1
        t.hit_streak[r] += 1
        t.evidence[r] += rel[d]
        t.time_since_update[r] = 0
