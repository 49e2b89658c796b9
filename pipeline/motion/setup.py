"""One camera's motion gating, filters and masks, resolved once in the parent.

`camera_motion` merges the global ``detect:``/``filters:``/masks with the camera's own, turns
class names into ids and mask points into pixels of the stream the pipeline decodes, and gives
the picklable `CameraMotion` every stage reads (``Camera.motion``): capture builds the motion
detector and gate from it, track the filters, the held-object book and the threshold gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .config import DetectConfig, MaskConfig, motion_mask, object_filters, resolve_filters
from .detector import MotionDetector
from .filters import ClassFilter, ObjectFilters, ThresholdGate
from .gate import MotionGate, resolve_mode
from .stationary import StationaryBook
from .streams import BoxMap


@dataclass(frozen=True)
class CameraMotion:
    """``detect``: the camera's effective ``detect:``; ``filters`` {class id: `ClassFilter`};
    ``object_masks``/``motion_masks``: the camera's `MaskConfig` (resolved to pixels at use);
    ``detect_uri``: the stream decoded and detected (None: ``uri`` itself); ``record_size``:
    (W, H) of ``uri`` when it differs from the detect stream (None: the same); ``wanted``: the
    motion boxes are wanted even without gating (a ``motion`` recording mode)."""

    detect: DetectConfig
    filters: Tuple[Tuple[int, ClassFilter], ...] = ()
    object_masks: Tuple[MaskConfig, ...] = ()
    motion_masks: Tuple[MaskConfig, ...] = ()
    detect_uri: Optional[str] = None
    record_size: Optional[Tuple[int, int]] = None
    wanted: bool = False

    def gating(self, flow: str) -> bool:
        """Motion gating on for this camera in a run of ``flow`` (latest | lossless)?"""
        return resolve_mode(self.detect.motion, flow)

    def active(self, flow: str) -> bool:
        """The motion detector runs: gating is on, or something else wants the motion boxes
        (``wanted``: a ``motion`` recording mode)."""
        return self.gating(flow) or self.wanted

    def motion_detector(self, size: Tuple[int, int]) -> MotionDetector:
        return MotionDetector(self.detect.motion_settings(), motion_mask(self.motion_masks, size))

    def gate(self, flow: str) -> MotionGate:
        return MotionGate(self.gating(flow), self.detect.stationary_interval, self.detect.max_gap_s)

    def object_filters(self, size: Tuple[int, int]) -> ObjectFilters:
        return object_filters(dict(self.filters), self.object_masks, size)

    def threshold_gate(self) -> Optional[ThresholdGate]:
        th = {c: f.threshold for c, f in self.filters if f.threshold is not None}
        return ThresholdGate(th) if th else None

    def book(self) -> StationaryBook:
        return StationaryBook(self.detect.stationary_threshold)

    def box_map(self, detect_size: Tuple[int, int]) -> Optional[BoxMap]:
        """Detect-stream boxes -> record-stream boxes (None: one stream)."""
        if self.record_size is None or tuple(self.record_size) == tuple(detect_size):
            return None
        return BoxMap(tuple(detect_size), tuple(self.record_size))


def _masks_of(cfg, key: str, name: str, own: Sequence[MaskConfig]) -> Tuple[MaskConfig, ...]:
    shared = [m for m in getattr(cfg, key) if m.camera in (None, name)]
    return (*own, *shared)


def camera_motion(cfg, name: str, cam_cfg, names: Optional[Sequence[str]], index: int = 0) -> CameraMotion:
    """The `CameraMotion` of camera ``name`` (its `CameraConfig` ``cam_cfg``, None for the one
    ``source.uri``) from the config tree ``cfg``; ``names`` the model's class names. Unknown
    classes and two keys naming one class raise ConfigError (one line, the key's path)."""
    from .config import class_id
    # the camera's key path: its entry of cameras: (disabled ones keep their place there)
    pos = next((i for i, c in enumerate(cfg.cameras) if c is cam_cfg), index)
    where = f"cameras[{pos}].filters" if cfg.cameras else "filters"
    detect = cfg.detect.merged(getattr(cam_cfg, "detect", None))
    glob = resolve_filters(cfg.filters, names)
    own = getattr(cam_cfg, "filters", None) or {}
    filters = resolve_filters(own, names, where, base=glob) if own else glob
    om = _masks_of(cfg, "object_masks", name, getattr(cam_cfg, "object_masks", ()) or ())
    for m in om:
        for c in m.classes or ():
            class_id(c, names, f"{m.where}.classes")
    mm = _masks_of(cfg, "motion_masks", name, getattr(cam_cfg, "motion_masks", ()) or ())
    detect_uri = getattr(cam_cfg, "detect_uri", None) if cam_cfg is not None else cfg.source.detect_uri
    if cam_cfg is not None and not cfg.cameras:
        detect_uri = detect_uri or cfg.source.detect_uri
    rec = getattr(cfg, "record", None)
    cam_rec = getattr(cam_cfg, "record", None)
    mode = (getattr(cam_rec, "mode", None) or getattr(rec, "mode", None)) if getattr(rec, "dir", None) else None
    return CameraMotion(detect, tuple(sorted(filters.items())), om, mm, detect_uri or None, wanted=mode == "motion")


def detect_uri_of(cam) -> str:
    """The stream a camera's capture decodes: its ``detect_uri``, else its ``uri``."""
    m = getattr(cam, "motion", None)
    return (m.detect_uri if m is not None else None) or cam.uri
