"""Motion-gated detection: a cheap per-camera motion detector, the policy that decides which
frames the detector sees, stationary objects held without a detection per frame, object
filters and masks, and box mapping between a camera's detect and record streams.

Every module here is pure numpy/OpenCV on arrays, with no process, socket or global state:
the stages build one object per camera and call it per frame (docs/motion.md).
"""

from .detector import MotionDetector, MotionResult, MotionSettings
from .filters import ClassFilter, ObjectFilters, ThresholdGate
from .gate import GateDecision, MotionGate
from .masks import PolygonMask, rasterize
from .stationary import StationaryBook
from .streams import BoxMap

__all__ = [
           "BoxMap",
           "ClassFilter",
           "GateDecision",
           "MotionDetector",
           "MotionGate",
           "MotionResult",
           "MotionSettings",
           "ObjectFilters",
           "PolygonMask",
           "StationaryBook",
           "ThresholdGate",
           "rasterize",
]
