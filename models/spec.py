"""What a detector is: the one model configuration type, from YAML and flags to the backend.

    spec = ModelSpec.from_mapping(yaml_dict["model"], base_dir=config_file.parent)  # checks keys, values
    spec = spec.override({"backend": "onnx", "conf": 0.3})                         # e.g. from flags
    spec = spec.resolve()            # files: zoo download / checks, names, class names -> ids
    detector = build_detector(spec)

Mapping keys are the names of the flags of ``python -m models`` (``conf``, not ``conf_threshold``):
see :data:`KEYS`. With neither ``model`` nor ``cfg``/``weights`` the spec means the zoo's default
model (:data:`trackpipe.models.zoo.DEFAULT_MODEL`), fetched on first use.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

from .classes import coco_names_path, parse_classes, read_names, split_classes
from .errors import ModelConfigError, check_dir, check_file
from .registry import BACKENDS, PRECISIONS
from .zoo import DEFAULT_MODEL, ZOO

__all__ = ["ModelSpec", "KEYS", "FILE_KEYS", "BACKENDS", "PRECISIONS", "parse_size", "names_for_cfg"]

# mapping key (YAML key, flag name without --) -> ModelSpec field
KEYS = {"model": "model", "cfg": "cfg", "weights": "weights", "names": "names", "size": "size",
        "backend": "backend", "precision": "precision", "conf": "conf_threshold", "nms": "nms_threshold",
        "classes": "classes", "max_det": "max_det", "letterbox": "letterbox", "calib": "calib",
        "threads": "threads", "cache_dir": "cache_dir", "triton_url": "triton_url", "triton_model": "triton_model",
        "triton_version": "triton_version", "triton_shm": "triton_shm", "triton_wait": "triton_wait",
        "triton_ca": "triton_ca", "file": "file", "preprocess": "preprocess"}
# keys whose relative paths are taken relative to the config file that names them
FILE_KEYS = ("cfg", "weights", "file", "names", "calib", "triton_ca")
PREPROCESS = ("auto", "ultralytics", "yolov5", "yolox", "rtdetr")  # models.onnx_layouts.PRESETS
TRITON_SHM = ("auto", "on", "off")   # models.backends.triton_shm


SIZE_STEP = 32      # the darknet detectors' largest stride (YOLOv3/v4, -tiny, Yolo-Fastest): 32
MAX_SIZE = 4096     # a network input side above this is a typo (memory is checked before a run too)


def parse_size(value: Any) -> Tuple[int, int]:
    """``320``, ``"320"``, ``"416x320"`` (w x h), ``[416, 320]`` -> (w, h): multiples of
    ``SIZE_STEP`` from 32 to ``MAX_SIZE``. ``None`` (and the tuple ``(0, 0)``, the unset value of
    `ModelSpec.size`) -> (0, 0): the cfg's (or the named model's) own size; a 0 given is an error."""
    if value is None or value == (0, 0):
        return (0, 0)
    if isinstance(value, str):
        try:
            parts = [int(p) for p in value.lower().split("x")]
        except ValueError:
            raise ModelConfigError(f"size: expected N or WxH, got {value!r}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [value]
    elif isinstance(value, (list, tuple)) and all(isinstance(p, int) and not isinstance(p, bool) for p in value):
        parts = list(value)
    else:
        raise ModelConfigError(f"size: expected N, WxH or [W, H], got {value!r}")
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise ModelConfigError(f"size: expected N, WxH or [W, H], got {value!r}")
    w, h = parts
    if not (SIZE_STEP <= w <= MAX_SIZE and SIZE_STEP <= h <= MAX_SIZE) or w % SIZE_STEP or h % SIZE_STEP:
        raise ModelConfigError(f"size: must be multiples of {SIZE_STEP} (the models' largest stride) from "
                               f"{SIZE_STEP} to {MAX_SIZE}, got {w}x{h} (leave size out for the model's own)")
    return (w, h)


def names_for_cfg(cfg: Path) -> Optional[Path]:
    """The names file of a cfg given without one: coco.names beside it or in ../data, else the
    packaged COCO names when every [yolo] layer of the cfg has 80 classes, else None (numbered)."""
    for cand in (cfg.parent / "coco.names", cfg.parent.parent / "data" / "coco.names"):
        if cand.is_file():
            return cand
    try:
        counts = set(re.findall(r"^\s*classes\s*=\s*(\d+)", cfg.read_text(errors="replace"), re.MULTILINE))
    except OSError:
        return None
    return coco_names_path() if counts == {"80"} else None


def _path(value: Any, key: str, base_dir: Optional[Path]) -> Optional[Path]:
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value):
        raise ModelConfigError(f"{key}: expected a file path, got {value!r}")
    p = Path(value).expanduser()
    if base_dir is not None and key in FILE_KEYS and not p.is_absolute():
        p = Path(os.path.normpath(Path(base_dir) / p))
    return p


def _number(value: Any, key: str, kind: type) -> Union[int, float]:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ModelConfigError(f"{key}: expected {'a number' if kind is float else 'an integer'}, got {value!r}")
    return kind(value)


def _choice(value: Any, key: str, allowed: Tuple[str, ...]) -> str:
    if value not in allowed:
        raise ModelConfigError(f"{key}: invalid value {value!r} (allowed: {', '.join(allowed)})")
    return value


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a `Detector`; validated when made.

    model: a zoo name (``python -m models download --help`` lists them); None with no
      cfg/weights: the default model. A resolved spec keeps the name beside its files.
    size: network input (width, height); (0, 0): the cfg's, or the zoo model's default.
    classes: keep only these classes; ids, or names until :meth:`resolve` turns them into ids.
    max_det: at most this many detections per frame (None: the detector's default, 300).
    calib: INT8 calibration directory (``python -m models calibrate --out DIR``).
    triton_url/triton_model/triton_version: the server, model name and version of backend triton
      (docs/triton.md); None: grpc://127.0.0.1:8001, trackpipe_yolo, the server's latest.
    triton_shm: Triton system shared memory for the tensors: auto (a loopback server: on, falling
      back to the requests when the server refuses it), on (an error then), off.
    triton_wait: an absent server at start is waited for (as an absent camera), not an error.
    triton_ca: PEM file of the certificate authorities a grpcs:// or https:// server's certificate
      is checked against (None: the system's).
    file: an ONNX detector of another family (YOLOv5/v8/v11, YOLOX, RT-DETR; `onnx_layouts`),
      instead of a model or cfg/weights; preprocess: its family's pre-processing when its
      metadata does not say (auto: the metadata's).
    """

    model: Optional[str] = None
    cfg: Optional[Path] = None
    weights: Optional[Path] = None
    file: Optional[Path] = None
    names: Optional[Path] = None
    size: Tuple[int, int] = (0, 0)
    backend: str = "auto"
    precision: str = "auto"  # measured: bf16/int8 only where they agree with fp32 on real frames
    conf_threshold: float = 0.25
    nms_threshold: float = 0.45
    classes: Optional[Tuple[Union[int, str], ...]] = None
    max_det: Optional[int] = None
    letterbox: bool = False
    calib: Optional[Path] = None
    cache_dir: Optional[Path] = None
    threads: int = 0
    triton_url: Optional[str] = None
    triton_model: Optional[str] = None
    triton_version: Optional[str] = None
    triton_shm: str = "auto"
    triton_wait: bool = False
    triton_ca: Optional[str] = None
    preprocess: str = "auto"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        for k in ("cfg", "weights", "file", "names", "calib", "cache_dir"):
            put(k, _path(getattr(self, k), k, None))
        put("size", parse_size(self.size))
        put("classes", split_classes(self.classes))
        if self.model is not None:
            _choice(self.model, "model", tuple(ZOO))
        if (self.cfg is None) != (self.weights is None):
            raise ModelConfigError("cfg and weights go together: give both, or neither for a named model "
                                   f"(default {DEFAULT_MODEL})")
        if self.file is not None and (self.cfg is not None or self.model is not None):
            raise ModelConfigError("file and model/cfg/weights: give one of them, not both")
        _choice(self.preprocess, "preprocess", PREPROCESS)
        if self.preprocess != "auto" and self.file is None:
            raise ModelConfigError(f"preprocess: {self.preprocess} is for an ONNX model file (model.file, "
                                   "--model-file); darknet models have their own")
        _choice(self.backend, "backend", BACKENDS)
        _choice(self.precision, "precision", PRECISIONS)
        for k in ("triton_url", "triton_model", "triton_version"):
            v = getattr(self, k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (str, int)) or str(v) == ""):
                raise ModelConfigError(f"{k}: expected a string, got {v!r}")
            put(k, None if v is None else str(v))
        _choice(self.triton_shm, "triton_shm", TRITON_SHM)
        if not isinstance(self.triton_wait, bool):
            raise ModelConfigError(f"triton_wait: expected true or false, got {self.triton_wait!r}")
        if self.triton_ca is not None:
            if isinstance(self.triton_ca, bool) or not isinstance(self.triton_ca, (str, os.PathLike)):
                raise ModelConfigError(f"triton_ca: expected a file name, got {self.triton_ca!r}")
            put("triton_ca", os.fspath(self.triton_ca))
        if self.triton_url is not None or self.triton_shm == "on" or self.triton_ca is not None:
            from .backends.triton_shm import is_local, remote_error  # noqa: PLC0415
            from .triton_repo import spec_url  # noqa: PLC0415
            url = spec_url(self)
            if self.triton_shm == "on" and self.backend == "triton" and not is_local(url.address.rsplit(":", 1)[0]):
                raise ModelConfigError(remote_error(url.text))
        put("conf_threshold", _number(self.conf_threshold, "conf", float))
        put("nms_threshold", _number(self.nms_threshold, "nms", float))
        if not 0.0 <= self.conf_threshold <= 1.0:
            raise ModelConfigError(f"conf: {self.conf_threshold} is outside [0, 1]")
        if not 0.0 < self.nms_threshold <= 1.0:
            raise ModelConfigError(f"nms: {self.nms_threshold} is outside (0, 1]")
        if not isinstance(self.letterbox, bool):
            raise ModelConfigError(f"letterbox: expected true or false, got {self.letterbox!r}")
        if self.max_det is not None:
            put("max_det", _number(self.max_det, "max_det", int))
            if not 1 <= self.max_det <= 100_000:
                raise ModelConfigError(f"max_det: {self.max_det} is outside [1, 100000]")
        put("threads", _number(self.threads, "threads", int))
        if not 0 <= self.threads <= 1024:
            raise ModelConfigError(f"threads: {self.threads} is outside [0, 1024] (0: all cores)")

    # --- mapping form (YAML, --set, JSON) -------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Optional[Mapping[str, Any]], base_dir=None, *, where: str = "model") -> "ModelSpec":
        """A spec from a mapping with the keys of :data:`KEYS` (a YAML ``model:`` section).

        Unknown keys and bad values raise ModelConfigError naming ``<where>.<key>`` and what is
        allowed. Relative cfg/weights/names/calib paths are taken relative to base_dir (the
        config file's folder) when given. A None value leaves that setting at its default.
        """
        return cls().override(data, base_dir, where=where)

    def override(self, data: Optional[Mapping[str, Any]], base_dir=None, *, where: str = "model") -> "ModelSpec":
        """This spec with the settings in ``data`` (keys of :data:`KEYS`; None values skipped).

        A ``model`` replaces this spec's cfg/weights/names (unless data gives them too); a
        ``cfg``/``weights`` replaces its model. Giving a model and cfg/weights together is an error.
        """
        if data is None:
            return self
        prefix = f"{where}." if where else ""
        if not isinstance(data, Mapping):
            raise ModelConfigError(f"{where or 'model'}: expected a mapping, got {data!r}")
        unknown = [k for k in data if k not in KEYS]
        if unknown:
            raise ModelConfigError(f"unknown key '{prefix}{unknown[0]}' (allowed: {', '.join(KEYS)})")
        given = {k: v for k, v in data.items() if v is not None}
        if "model" in given and ("cfg" in given or "weights" in given):
            raise ModelConfigError(f"{prefix}model and {prefix}cfg/weights: give one of them, not both")
        if "file" in given and ("model" in given or "cfg" in given or "weights" in given):
            raise ModelConfigError(f"{prefix}file and {prefix}model/cfg/weights: give one of them, not both")
        kw = {}
        try:
            for k, v in given.items():
                if k in ("cfg", "weights", "file", "names", "calib", "cache_dir"):
                    v = _path(v, k, Path(base_dir) if base_dir is not None else None)
                elif k in ("model", "backend", "precision", "preprocess", "triton_shm") and not isinstance(v, str):
                    raise ModelConfigError(f"{k}: expected a string, got {v!r}")
                kw[KEYS[k]] = v
            if "model" in given or "file" in given:
                kw.setdefault("cfg", None)
                kw.setdefault("weights", None)
                kw.setdefault("names", None)
                kw.setdefault("model", None)
            if "cfg" in given or "weights" in given or "model" in given:
                kw.setdefault("file", None)
                kw.setdefault("preprocess", "auto")
            if "cfg" in given or "weights" in given:
                kw["model"] = None
            return replace(self, **kw)
        except ModelConfigError as e:
            raise ModelConfigError(f"{prefix}{e}") from None

    def to_mapping(self) -> dict:
        """The mapping form (YAML-safe values; ``extra`` left out): ``from_mapping(to_mapping())``
        gives an equal spec."""
        w, h = self.size
        out = {}
        for k, f in KEYS.items():
            v = getattr(self, f)
            if isinstance(v, Path):
                v = str(v)
            elif f == "size":
                v = None if (w, h) == (0, 0) else w if w == h else [w, h]
            elif f == "classes" and v is not None:
                v = list(v)
            out[k] = v
        return out

    # --- resolution: files and class names ------------------------------------------------------

    @property
    def model_name(self) -> Optional[str]:
        """The zoo model this spec means: ``model``, or the default when no cfg/weights are given."""
        return self.model or (DEFAULT_MODEL if self.cfg is None and self.file is None else None)

    @property
    def is_resolved(self) -> bool:
        return (self.cfg is not None or self.file is not None) and (self.classes is None or all(
            isinstance(c, int) for c in self.classes))

    def resolve(self, **download_kw) -> "ModelSpec":
        """The spec with every file local and checked, ready for a backend:

        - a named (or the default) model: cfg and weights from the cache, downloaded and
          sha256-checked on first use (``download_kw``: timeout, progress); its default size;
        - cfg, weights, names: regular files ('... is a directory, not a file' otherwise);
          names defaulting to :func:`names_for_cfg`; calib: a directory;
        - classes: names turned into ids (unknown names: an error naming the closest one).

        An ONNX ``file``: its layout read from the graph (`onnx_layouts.read_layout`), class names
        from names or its metadata (written once into the cache as a names file); it runs on the
        onnx and openvino backends, and auto chooses between them as for darknet models.

        Raises ModelError (one line). Calling it on a resolved spec only checks again.
        """
        if self.file is not None:
            return self._resolve_file()
        kw: dict = {}
        cfg, weights, names, size = self.cfg, self.weights, self.names, self.size
        if cfg is None:
            from .zoo import resolve as zoo_resolve  # noqa: PLC0415

            files = zoo_resolve(self.model_name, self.cache_dir, **download_kw)
            cfg, weights = files.cfg, files.weights
            names = names or files.names
            size = size if size != (0, 0) else (files.size, files.size)
            kw["model"] = self.model_name
        cfg = check_file(cfg, "cfg file")
        weights = check_file(weights, "weights file")
        names = check_file(names, "names file") if names is not None else names_for_cfg(cfg)
        if self.calib is not None:
            check_dir(self.calib, "calibration directory")
        classes = parse_classes(self.classes, read_names(names) if names is not None else None)
        return replace(self, cfg=cfg, weights=weights, names=names, size=size, classes=classes, **kw)

    def _resolve_file(self) -> "ModelSpec":
        from .onnx_layouts import metadata_names_file, read_layout  # noqa: PLC0415

        file = check_file(self.file, "model file")
        names = check_file(self.names, "names file") if self.names is not None else None
        layout = read_layout(file, read_names(names) if names is not None else None, self.preprocess, self.size)
        if names is None and layout.names is not None:
            names = metadata_names_file(file, layout.names, self.cache_dir)
        if self.calib is not None:
            check_dir(self.calib, "calibration directory")
        classes = parse_classes(self.classes, list(layout.names) if layout.names is not None else None)
        return replace(self, file=file, names=names, size=layout.input_size, classes=classes)

    def with_(self, **kw) -> "ModelSpec":
        """A copy with fields replaced (field names, e.g. ``threads=2``), validated again."""
        return replace(self, **kw)
