"""SORT: Kalman prediction + IoU Hungarian matching, with an optional low-score second pass.

Motion only (no appearance). One frame of :meth:`SortTracker.update`:

1. predict every track (vectorised Kalman, (x, y, a, h) state, DeepSORT noise);
2. first pass: detections with ``score >= det_thresh`` vs all tracks, cost 1 - IoU,
   Hungarian, pairs below ``iou_threshold`` rejected;
3. optional second pass (ByteTrack idea, ``low_thresh`` set): detections with
   ``low_thresh <= score < det_thresh`` vs tracks left unmatched that were matched within
   the last ``second_max_miss`` frames, min IoU ``second_iou_threshold``; unmatched
   low-score detections never start tracks;
4. Kalman update of matched tracks; unmatched high-score detections with
   ``score >= new_track_thresh`` start tentative tracks;
5. lifecycle: a track is confirmed once ``hit_streak >= min_hits``; tracks not matched for
   more than ``max_age`` frames are deleted (tentative ones at their first miss when
   ``delete_tentative_on_miss``); while a track coasts (no match) it is NOT output;
6. output: tracks matched this frame that are confirmed (``persistent_confirm``) or whose
   current streak reaches ``min_hits`` (abewley/sort's rule), plus, with
   ``output_warmup``, every matched track during the first ``min_hits`` frames (as
   abewley/sort does at sequence start).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from trackpipe.models.types import Detections, Tracks, to_xyah

from . import kalman
from .table_tracker import TableTracker

logger = logging.getLogger(__name__)

#: DeepSORT's noise model with the velocity std weight doubled (1/80): the sequences run at
#: 7-30 fps, and at low frame rates velocity changes more per frame than deep_sort's 1/160
#: (chosen for 25-30 fps MOT16) allows.
SORT_KALMAN = kalman.KalmanParams(std_weight_velocity=1.0 / 80)


@dataclass
class SortConfig:
    """SORT settings.

    The defaults (= the ``sort`` preset) are detector-agnostic: every detection may start a
    track. The ``sort-mot15`` preset of :func:`trackers.factory.build_tracker` adds the score
    thresholds measured best on the seven MOT15 sequences (``det_thresh=0.75,
    new_track_thresh=0.97``: scores of the Faster R-CNN detections shipped with them, so
    retune them for another detector); ``sort-ref`` gives abewley/sort's own settings.

    max_age: frames a track may coast unmatched before deletion.
    min_hits: consecutive matches after the creating detection needed to confirm (SORT's
        ``hit_streak``; 2 means a track is output from its third detection on).
    iou_threshold: minimum IoU of a first-pass match.
    det_thresh: detections below this score are not used in the first pass.
    new_track_thresh: minimum score to start a track (None: det_thresh).
    low_thresh: enables the second pass for scores in [low_thresh, det_thresh) (None: off).
    second_iou_threshold: minimum IoU of a second-pass match.
    second_max_miss: tracks unmatched for at most this many frames join the second pass
        (1 = only tracks matched in the previous frame, as ByteTrack).
    persistent_confirm: once confirmed, a track is output whenever matched (DeepSORT);
        False re-requires ``min_hits`` consecutive matches after every miss (abewley/sort).
    delete_tentative_on_miss: drop unconfirmed tracks at their first miss (DeepSORT).
    output_warmup: output every matched track during the first ``min_hits`` frames
        (abewley/sort's start-of-sequence rule).
    output_detection_box: output the matched detection box instead of the Kalman posterior.
    class_aware: never match a track to a detection of another class.
    kalman: noise model; velocity std weight 1/80 (deep_sort: 1/160), see docs/tracking.md.
    """

    max_age: int = 30
    min_hits: int = 2
    iou_threshold: float = 0.2
    det_thresh: float = 0.0
    new_track_thresh: Optional[float] = None
    low_thresh: Optional[float] = None
    second_iou_threshold: float = 0.5
    second_max_miss: int = 1
    persistent_confirm: bool = True
    delete_tentative_on_miss: bool = True
    output_warmup: bool = True
    output_detection_box: bool = False
    class_aware: bool = True
    kalman: kalman.KalmanParams = SORT_KALMAN

    def __post_init__(self) -> None:
        if self.max_age < 0 or self.min_hits < 0:
            raise ValueError("max_age and min_hits must be >= 0")
        for name in ("iou_threshold", "second_iou_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.low_thresh is not None and self.low_thresh > self.det_thresh:
            raise ValueError(f"low_thresh ({self.low_thresh}) must be <= det_thresh ({self.det_thresh})")


class SortTracker(TableTracker):
    """SORT / ByteTrack-style motion-only tracker. See the module docstring for one step."""

    name = "sort"

    def __init__(self, config: Optional[SortConfig] = None) -> None:
        self.config = config or SortConfig()
        self.reset()

    def update(self, dets: Detections, frame: Optional[np.ndarray] = None) -> Tracks:
        """Advance one frame. dets: (N) detections, possibly empty; frame is ignored."""
        c = self.config
        boxes, score, classes, high = self._predict(dets)
        t = self._tracks

        m1 = self._iou(np.arange(len(t)), np.flatnonzero(high), boxes, classes, c.iou_threshold)
        matches = m1
        if c.low_thresh is not None:
            free = np.ones(len(t), bool)
            free[m1[:, 0]] = False
            m2 = self._low_score_pass(free, score, high, boxes, classes)
            if len(m2):
                matches = np.concatenate([m1, m2])

        xyah = to_xyah(boxes)
        if len(matches):
            r, d = matches[:, 0], matches[:, 1]
            t.update(r, xyah[d], boxes[d], score[d], classes[d], c.kalman)

        # lifecycle
        t.confirmed |= t.hit_streak >= c.min_hits
        dead = t.time_since_update > c.max_age
        if c.delete_tentative_on_miss:
            dead |= ~t.confirmed & (t.time_since_update > 0)
        if dead.any():
            t = t.select(~dead)

        t, _, _ = self._births(t, matches, high, score, boxes, xyah, classes, c.min_hits)
        self._tracks = t

        ok = t.confirmed if c.persistent_confirm else t.hit_streak >= c.min_hits
        if c.output_warmup and self._frame <= c.min_hits:
            ok = np.ones(len(t), bool)
        return t.to_tracks((t.time_since_update == 0) & ok, c.output_detection_box)
