"""Tracking core: Kalman filter, matching, the default hybrid tracker (SORT + ByteTrack, OC-SORT
options), SORT, DeepSORT, unrelated-image tracking, appearance encoders, lifecycle events, gap
interpolation, MOT evaluation (py-motmetrics, TrackEval HOTA).

Pure numpy/scipy (filterpy only in tests, as the reference). Importing this package is cheap:
nothing heavy is imported until a submodule is used; encoders import ONNX Runtime or
TensorFlow only inside the classes that need them.

    from trackpipe.trackers.factory import build_tracker
    tracker = build_tracker("hybrid", score_floor=conf)   # the default; or "sort", "deepsort", ...
    tracks = tracker.update(detections)       # models.types.Detections -> Tracks, every frame
"""

__all__ = ["build_tracker"]


def build_tracker(name: str = "hybrid", **overrides):
    """Shortcut for :func:`trackers.factory.build_tracker` (imported on first use)."""
    from .factory import build_tracker as _build

    return _build(name, **overrides)
