"""Tracker presets and the ``build_tracker`` factory (kept apart from :mod:`trackers.base`,
which every tracker imports, so that the package has no import cycle).

    tracker = build_tracker("hybrid", score_floor=conf)   # the default
"""

from __future__ import annotations

from typing import Any

from .base import Tracker, config_from_dict


def _presets() -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (tracker kind, config overrides). Measured numbers: docs/tracking.md.

    ``hybrid`` is the default (chosen by cross-validation, benchmarks/bench_tracking_cv.py;
    its thresholds are relative to the detector, see trackers/scores.py). For the others,
    score thresholds depend on the detector's score scale, so there are two families:
    detector-agnostic presets (``sort``, ``bytetrack``, ``deepsort``, ``deepsort-byte``) for
    live use, and ``*-mot15`` presets whose thresholds were tuned once on all seven MOT15
    sequences with their Faster R-CNN ``det.txt`` scores (the best configurations there).
    """
    from .kalman import DEFAULT_PARAMS

    mot15 = dict(det_thresh=0.75, new_track_thresh=0.97)
    mot15_byte = dict(mot15, low_thresh=0.5, second_iou_threshold=0.5)
    # ByteTrack's published defaults (YOLOX scores): high 0.5, low 0.1, new tracks from 0.6
    byte = dict(det_thresh=0.5, low_thresh=0.1, new_track_thresh=0.6, second_iou_threshold=0.5)
    return {
        # abewley/sort settings: max_age=1, min_hits=3, IoU 0.3, every matched track output in
        # the first min_hits frames, min_hits consecutive hits re-required after a miss,
        # deep_sort's Kalman noise.
        "sort-ref": ("sort", dict(max_age=1, min_hits=3, iou_threshold=0.3, output_warmup=True,
                                  persistent_confirm=False, delete_tentative_on_miss=False,
                                  kalman=DEFAULT_PARAMS)),
        "sort": ("sort", {}),
        "bytetrack": ("sort", dict(byte)),
        "deepsort": ("deepsort", {}),
        "deepsort-byte": ("deepsort", dict(byte)),
        # best motion-only configuration on MOT15 (one configuration for all sequences)
        "sort-mot15": ("sort", dict(mot15)),
        "bytetrack-mot15": ("sort", dict(mot15_byte)),
        "deepsort-mot15": ("deepsort", dict(mot15)),
        "deepsort-byte-mot15": ("deepsort", dict(mot15_byte)),
        # the default: SORT + OC-SORT + ByteTrack steps, thresholds relative to the detector's
        # conf (score_floor), parameters chosen by leave-one-sequence-out cross-validation
        "hybrid": ("hybrid", {}),
        # unrelated images (folders, globs): every detection output at once, never linked
        "independent": ("independent", {}),
    }


TRACKER_NAMES = tuple(_presets())


def build_tracker(name: str = "hybrid", **overrides: Any) -> Tracker:
    """Create a tracker by preset name; keyword overrides replace config fields.

    Names: ``hybrid`` (the default, :mod:`trackers.hybrid`; pass ``score_floor=`` the
    detector's conf), ``independent`` (unrelated images), ``sort-ref`` (abewley/sort settings),
    ``sort``, ``bytetrack`` (sort + low-score second pass, ByteTrack's thresholds), ``deepsort``,
    ``deepsort-byte``, and the MOT15-tuned
    ``sort-mot15`` (best motion-only configuration), ``bytetrack-mot15``, ``deepsort-mot15``,
    ``deepsort-byte-mot15``. The deepsort presets use the built-in
    :class:`trackers.encoders.HistogramEncoder` whenever ``update`` gets a frame; pass
    ``encoder=`` (another :class:`trackers.encoders.Encoder`, or None for motion only) to
    change that; from a config file ``encoder`` can be a string (see :func:`encoder_from_spec`).
    Unknown names or config keys raise ``ValueError`` naming the allowed values.
    """
    presets = _presets()
    if name not in presets:
        raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(presets)}")
    kind, preset = presets[name]
    if kind == "hybrid":
        from .hybrid import HybridConfig, HybridTracker
        return HybridTracker(config_from_dict(HybridConfig, {**preset, **overrides}))
    if kind == "independent":
        from .independent import IndependentConfig, IndependentTracker
        return IndependentTracker(config_from_dict(IndependentConfig, {**preset, **overrides}))
    if kind == "sort":
        from .sort import SortConfig, SortTracker
        cfg = config_from_dict(SortConfig, {**preset, **overrides})
        return SortTracker(cfg)
    from .deepsort import DeepSortConfig, DeepSortTracker
    from .encoders import HistogramEncoder
    overrides = dict(overrides)
    encoder = overrides.pop("encoder") if "encoder" in overrides else HistogramEncoder()
    if isinstance(encoder, (str, dict)):
        encoder = encoder_from_spec(encoder)
    cfg = config_from_dict(DeepSortConfig, {**preset, **overrides})
    return DeepSortTracker(cfg, encoder=encoder)


def encoder_from_spec(spec):
    """Appearance encoder from a config value.

    ``"hist"`` (built-in colour histograms), ``"none"`` (motion only), ``"onnx:<path>"`` (an
    ONNX re-ID model), ``"mars:<path>"`` (DeepSORT's ``mars-small128.pb``), or a mapping
    ``{"name": "onnx", "path": "...", **options}`` (options as in
    :func:`trackers.encoders.build_encoder`). A missing model file raises FileNotFoundError
    naming it; an unknown name raises ValueError naming the allowed ones.
    """
    from .encoders import build_encoder

    if isinstance(spec, dict):
        kw = dict(spec)
        name = kw.pop("name", None)
        if name is None:
            raise ValueError("encoder mapping needs name: hist, none, onnx or mars")
    else:
        name, _, path = str(spec).partition(":")
        kw = {"path": path} if path else {}
    if name == "none":
        return None
    if name not in ("hist", "onnx", "mars"):
        raise ValueError(f"unknown encoder {name!r}; choose hist, none, onnx:<model.onnx> or "
                         "mars:<mars-small128.pb>")
    return build_encoder(name, **kw)
