"""The ``detect``, ``filters``, ``object_masks`` and ``motion_masks`` settings: typed models of the
configuration tree (`trackpipe.pipeline.config.tree`), global and per camera, and their
resolution into the per-camera objects of this package once the model's class names are known.

```yaml
detect: {motion: auto, stationary_interval: 25, max_gap_s: 5}
filters:
  person: {min_area: 400, threshold: 0.6}
  car: {min_score: 0.4, max_ratio: 4}
object_masks:
  - [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]          # a bare list of points
  - {points: [[600, 0], [640, 0], [640, 40]], classes: [car]}
motion_masks:
  - [[0, 0], [0.3, 0], [0.3, 0.06], [0, 0.06]]    # the timestamp
```
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from trackpipe.pipeline.errors import ConfigError, field_error
from trackpipe.pipeline.events.geometry import polygon_area, self_intersection
from typing_extensions import Annotated

from .detector import MotionSettings
from .filters import ClassFilter, ObjectFilters
from .masks import PolygonMask

STRICT = ConfigDict(extra="forbid", strict=True)


def _on_off(value: Any) -> Any:
    return ("on" if value else "off") if isinstance(value, bool) else value


class DetectConfig(BaseModel):
    """``detect:`` (global) and ``cameras[i].detect`` (the keys it sets override the global ones)."""

    model_config = STRICT

    motion: Annotated[Literal["auto", "on", "off"], BeforeValidator(_on_off)] = Field(
        "auto", description="motion-gated detection: on (detect when something moves, re-check still objects), "
                            "off (every frame), auto (on for live sources, off for files)")
    stationary_interval: int = Field(25, ge=1, le=100000, description="motion on: frames between detections when "
                                                                      "nothing moves (objects standing still are "
                                                                      "re-checked)")
    stationary_threshold: int = Field(25, ge=1, le=100000, description="frames a track's box must stay in place "
                                                                       "before it is stationary")
    max_gap_s: float = Field(5.0, ge=0.0, le=86400.0, allow_inf_nan=False,
                             description="motion on: seconds a camera may go without a detection (0: no bound)")
    motion_height: int = Field(100, ge=8, le=2160, description="rows of the motion detector's grey frame")
    motion_threshold: int = Field(25, ge=1, le=255, description="grey levels a pixel must change by to count")
    contour_area: int = Field(10, ge=1, description="pixels of the motion frame a moving area needs")
    motion_alpha: float = Field(0.1, gt=0.0, le=1.0, allow_inf_nan=False,
                                description="running background's update rate per frame")
    whole_frame: float = Field(0.8, gt=0.0, le=1.0, allow_inf_nan=False,
                               description="a change over more than this share of the frame is lighting or an IR "
                                           "switch, not motion")
    motion_boxes: bool = Field(False, description="the live view draws each frame's motion boxes (amber, thin)")

    def motion_settings(self) -> MotionSettings:
        return MotionSettings(frame_height=self.motion_height, threshold=self.motion_threshold,
                              contour_area=self.contour_area, alpha=self.motion_alpha, whole_frame=self.whole_frame)

    def merged(self, override: Optional["DetectConfig"]) -> "DetectConfig":
        """This (global) section with the keys ``override`` (a camera's) sets replaced."""
        if override is None:
            return self
        return self.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class ClassFilterConfig(BaseModel):
    """``filters.<class>``: bounds on one class's detections (None: no bound)."""

    model_config = STRICT

    min_area: Optional[float] = Field(None, ge=0.0, allow_inf_nan=False,
                                      description="smallest box area: pixels, or below 1 a fraction of the frame")
    max_area: Optional[float] = Field(None, gt=0.0, allow_inf_nan=False,
                                      description="largest box area: pixels, or below 1 a fraction of the frame")
    min_ratio: Optional[float] = Field(None, gt=0.0, allow_inf_nan=False, description="smallest width / height")
    max_ratio: Optional[float] = Field(None, gt=0.0, allow_inf_nan=False, description="largest width / height")
    min_score: Optional[Score] = Field(None, description="smallest score of a detection")
    threshold: Optional[Score] = Field(None, description="the median score of a track's first detections (padded "
                                                         "with zeros to three) must reach this before it counts")

    @model_validator(mode="after")
    def _bounds(self) -> "ClassFilterConfig":
        a, b = self.min_area, self.max_area
        if a is not None and b is not None and (a < 1.0) == (b < 1.0) and a > b:
            raise field_error(f"min_area {a} is above max_area {b}")
        if self.min_ratio is not None and self.max_ratio is not None and self.min_ratio > self.max_ratio:
            raise field_error(f"min_ratio {self.min_ratio} is above max_ratio {self.max_ratio}")
        return self

    def to_filter(self) -> ClassFilter:
        return ClassFilter(self.min_area, self.max_area, self.min_ratio, self.max_ratio, self.min_score,
                           self.threshold)


def _filters(value: Any) -> Any:
    """Class ids written as YAML ints become text keys ("0"); None: no filters."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v for k, v in value.items()}
    return value


Filters = Annotated[Dict[str, ClassFilterConfig], BeforeValidator(_filters),
                    Field(description="per class (name or id): min_area, max_area, min_ratio, max_ratio, min_score, "
                                      "threshold")]


class MaskConfig(BaseModel):
    """One mask polygon: ``points`` (pixels, or fractions 0..1 of the frame; ``units`` as for
    zones); object masks may name the ``classes`` they drop (default: every class); top-level
    masks name their ``camera`` when there are several."""

    model_config = STRICT

    points: List[Tuple[float, float]] = Field(description="[x, y] pairs, at least 3: pixels or fractions 0..1")
    units: Literal["auto", "px", "fraction"] = Field("auto", description="auto: fractions when every coordinate "
                                                                         "is within [0, 1], else pixels")
    classes: Optional[List[Union[int, str]]] = Field(None, description="object masks: only these classes "
                                                                       "(default: every class)")
    camera: Optional[str] = Field(None, description="top-level masks: the camera they belong to")
    _where: str = PrivateAttr("")

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return {"points": value} if isinstance(value, (list, tuple)) else value

    @field_validator("points", mode="before")
    @classmethod
    def _points(cls, points: Any) -> list:
        from trackpipe.pipeline.events.config import point_pairs
        p = np.asarray(point_pairs(points), dtype=np.float64)
        if len(p) < 3:
            raise field_error(f"a mask polygon needs at least 3 points, got {len(p)}")
        ij = self_intersection(p)
        if ij is not None:
            raise field_error(f"the polygon crosses itself (edges {ij[0]} and {ij[1]})")
        if abs(polygon_area(p)) <= 1e-12:
            raise field_error("the polygon has no area (its points are on one line)")
        return [(float(x), float(y)) for x, y in p]

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, value: Any) -> Any:
        from trackpipe.pipeline.events.config import class_list
        return class_list(value)

    @model_validator(mode="after")
    def _units(self) -> "MaskConfig":
        p = np.asarray(self.points, np.float64)
        inside = bool(np.all((p >= 0.0) & (p <= 1.0)))
        if self.units == "auto":
            self.units = "fraction" if inside else "px"
        elif self.units == "fraction" and not inside:
            raise field_error("units are fractions but a coordinate is outside [0, 1]", "points")
        return self

    def at(self, where: str) -> "MaskConfig":
        self._where = where
        return self

    @property
    def where(self) -> str:
        return self._where or "mask"

    def resolve(self, width: int, height: int) -> np.ndarray:
        """Points in pixels of a ``width`` x ``height`` frame: (V,2) float64."""
        p = np.asarray(self.points, np.float64)
        return p * np.array([width, height], np.float64) if self.units == "fraction" else p.copy()


Masks = Annotated[List[MaskConfig], BeforeValidator(lambda v: [] if v is None else v)]


# --- resolution, once the class names are known ---------------------------------------------

def class_id(key: Union[int, str], names: Optional[Sequence[str]], where: str) -> int:
    """A class key (id, or name in ``names``) -> its id; ConfigError (one line) otherwise."""
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        cid = int(key)
        if names is not None and not 0 <= cid < len(names):
            raise ConfigError(f"{where}: unknown class id {cid} (the model has {len(names)} classes)")
        return cid
    if names is None or key not in names:
        hint = f" (classes: {', '.join(names[:8])}, ...)" if names else ""
        raise ConfigError(f"{where}: unknown class {key!r}{hint}")
    return list(names).index(key)


def resolve_filters(filters: Dict[str, ClassFilterConfig], names: Optional[Sequence[str]],
                    where: str = "filters", base: Optional[Dict[int, ClassFilter]] = None) -> Dict[int, ClassFilter]:
    """``filters`` (class name or id -> settings) -> {class id: `ClassFilter`}, over ``base``
    (the global filters, for a camera's: a class it names replaces the global one's keys it
    sets). Unknown classes and two keys of one class (``person`` and ``0``): ConfigError."""
    out = dict(base or {})
    seen: Dict[int, str] = {}
    for key, f in filters.items():
        cid = class_id(key, names, f"{where}.{key}")
        if cid in seen:
            raise ConfigError(f"{where}: keys {seen[cid]!r} and {key!r} name the same class {cid}")
        seen[cid] = key
        old = out.get(cid)
        if old is not None:
            upd = {k: getattr(f, k) for k in f.model_fields_set}
            out[cid] = ClassFilter(**{**old.__dict__, **upd})
        else:
            out[cid] = f.to_filter()
    return out


def object_filters(filters: Dict[int, ClassFilter], masks: Sequence[MaskConfig], size: Tuple[int, int],
                   names: Optional[Sequence[str]] = None) -> ObjectFilters:
    """A camera's `ObjectFilters`: its class filters and object masks at frame ``size`` (W, H)."""
    every = [m.resolve(*size) for m in masks if not m.classes]
    per: Dict[int, list] = {}
    for m in masks:
        for c in m.classes or ():
            per.setdefault(class_id(c, names, f"{m.where}.classes"), []).append(m.resolve(*size))
    return ObjectFilters(dict(filters), PolygonMask(every), {c: PolygonMask(p) for c, p in per.items()})


def motion_mask(masks: Sequence[MaskConfig], size: Tuple[int, int]) -> List[np.ndarray]:
    """Motion-mask polygons at frame ``size`` (W, H): list of (V,2) float64 pixels."""
    return [m.resolve(*size) for m in masks]
