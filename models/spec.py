"""What a detector is: files, input size, backend, precision and thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Tuple

BACKENDS = ("auto", "onnx", "tf", "opencv", "tensorrt", "tftrt")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a `Detector`.

    size is the network input (width, height); 0 means "as in the cfg".
    classes: keep only these class ids (None keeps all).
    """

    cfg: Path
    weights: Path
    names: Optional[Path] = None
    size: Tuple[int, int] = (0, 0)
    backend: str = "auto"
    precision: str = "fp32"
    conf_threshold: float = 0.25
    nms_threshold: float = 0.45
    classes: Optional[Tuple[int, ...]] = None
    letterbox: bool = False
    calib: Optional[Path] = None
    cache_dir: Optional[Path] = None
    threads: int = 0
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if not 0.0 <= self.conf_threshold <= 1.0:
            raise ValueError(f"conf_threshold must be in [0, 1]; got {self.conf_threshold}")
        if not 0.0 < self.nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1]; got {self.nms_threshold}")
        w, h = self.size
        if (w or h) and (w % 32 or h % 32 or w <= 0 or h <= 0):
            raise ValueError(f"size must be positive multiples of 32; got {w}x{h}")

    def with_(self, **kw) -> "ModelSpec":
        return replace(self, **kw)
