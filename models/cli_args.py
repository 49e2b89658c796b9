"""Model flags shared by `python -m models`, run_tracker.py and run_capture.py, and the one
function that turns them into a :class:`ModelSpec`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from .classes import ClassesInput, split_classes
from .errors import ModelConfigError
from .registry import BACKENDS, PRECISIONS
from .spec import KEYS, PREPROCESS, TRITON_SHM, ModelSpec, parse_size as _parse_size
from .zoo import DEFAULT_MODEL, ZOO

# flag dests, each a ModelSpec mapping key (KEYS) of the same name; --classes is added by each
# command itself (the pipeline's also takes the config's classes)
FLAG_KEYS = ("model", "cfg", "weights", "file", "names", "size", "backend", "precision", "conf", "nms", "max_det",
             "letterbox", "calib", "threads", "cache_dir",
             "triton_url", "triton_model", "triton_version", "triton_shm", "triton_wait", "triton_ca", "preprocess")


def command_name(default: str, modules: tuple[str, ...] = (), scripts: tuple[str, ...] = ()) -> str:
    """The command as the user typed it, for usage lines: ``python -m MODULE`` when started as one
    of ``modules`` (``python -m trackpipe.models`` or, from the repository root, ``python -m
    models``), the script's name when it is one of ``scripts`` (``run_tracker.py``, the ``trackpipe``
    console script), else ``default`` (e.g. under pytest)."""
    main = sys.modules.get("__main__")
    typed = getattr(main, "__command__", None)     # set by the repository root's `python -m models` shim
    if isinstance(typed, str) and typed.removeprefix("python -m ") in modules:
        return typed
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    name = name.removesuffix(".__main__")
    if name in modules:
        return f"python -m {name}"
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script if script in scripts else default


def parse_size(text: str) -> tuple[int, int]:
    """argparse type: '416' or '416x320' (w x h) -> (w, h)."""
    try:
        return _parse_size(text)
    except ModelConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("size: ")) from None


def class_list(text: str):
    """argparse type: 'person,car' or '0,2' -> ('person', 'car') / (0, 2); names are turned into
    ids against the model's names file when the spec is resolved."""
    try:
        return split_classes(text)
    except ModelConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("classes: ")) from None


def add_model_args(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """Add the model flags (--model/--cfg/--weights/--names/--size/--backend/--precision/--conf/
    --nms/--max-det/--letterbox/--calib/--threads/--cache-dir).

    With defaults=False every flag defaults to None, so a caller can tell which flags were
    given (e.g. to override a YAML config); either way ModelSpec holds the defaults.
    """
    d = ModelSpec()
    dflt = (lambda v: v) if defaults else (lambda v: None)
    zoo = ", ".join(ZOO)
    g = parser.add_argument_group("model (default: the zoo's %s, which ships in the package)" % DEFAULT_MODEL)
    g.add_argument("--model", metavar="NAME", choices=tuple(ZOO),
                   help=f"named model, sha256-checked; {DEFAULT_MODEL} ships in the package, the others are "
                        f"downloaded into the cache on first use: {zoo} "
                        f"(default {DEFAULT_MODEL} unless --cfg/--weights are given)")
    g.add_argument("--cfg", type=Path, help="darknet .cfg file (with --weights, instead of --model)")
    g.add_argument("--weights", type=Path, help="darknet .weights file matching --cfg")
    g.add_argument("--model-file", dest="file", type=Path, metavar="PATH.onnx",
                   help="an ONNX detector of YOLOv5/v8/v11, YOLOX or RT-DETR (instead of --model or --cfg/--weights): "
                        "layout, input size and class names read from the file (docs/models.md)")
    g.add_argument("--preprocess", choices=PREPROCESS, default=dflt(d.preprocess),
                   help=f"--model-file's family pre-processing when its metadata does not say (default {d.preprocess}: "
                        "the metadata's; Ultralytics files say it)")
    g.add_argument("--names", type=Path, help="class names file, one per line (default: coco.names beside the cfg "
                                              "or in ../data; the packaged COCO names for zoo models and 80-class "
                                              "cfgs; else numbered classes)")
    g.add_argument("--size", type=parse_size, metavar="N|WxH",
                   help="network input, multiples of 32 (default: a zoo model's own, 320 for Yolo-Fastest and 416 "
                        "for YOLOv3/v4; else the cfg's)")
    g.add_argument("--backend", choices=BACKENDS, default=dflt(d.backend),
                   help=f"inference backend (default {d.backend}: the fastest one that runs here); tf and tftrt "
                        f"need the [tf] extra, tensorrt the [tensorrt] extra")
    g.add_argument("--precision", choices=PRECISIONS, default=dflt(d.precision),
                   help=f"numeric precision (default {d.precision}); int8 needs --calib; a backend refuses what "
                        f"it cannot run, with the reason")
    g.add_argument("--conf", type=float, default=dflt(d.conf_threshold), metavar="0..1",
                   help=f"score threshold (default {d.conf_threshold})")
    g.add_argument("--nms", type=float, default=dflt(d.nms_threshold), metavar="0..1",
                   help=f"NMS IoU threshold (default {d.nms_threshold})")
    g.add_argument("--max-det", type=int, metavar="N",
                   help="at most N detections per frame, the highest scores (default: the detector's, 300)")
    g.add_argument("--letterbox", action="store_true", default=dflt(d.letterbox),
                   help="letterbox (keep aspect ratio) instead of stretching frames to the network input")
    g.add_argument("--calib", type=Path, metavar="DIR",
                   help="INT8 calibration directory, made by `python -m models calibrate --out DIR`")
    g.add_argument("--threads", type=int, default=dflt(d.threads),
                   help="inference threads (default 0: all cores of the stage)")
    g.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="downloads and built artefacts (default $TRACKPIPE_CACHE, else ~/.cache/trackpipe)")
    g.add_argument("--triton-url", metavar="URL",
                   help="backend triton: the Triton server, grpc://HOST:PORT or http://HOST:PORT (grpcs/https: TLS; "
                        "default grpc://127.0.0.1:8001); a bearer token from $TRACKPIPE_TRITON_TOKEN (docs/triton.md)")
    g.add_argument("--triton-model", metavar="NAME", help="backend triton: the served model's name (default "
                                                          "trackpipe_yolo, as `export --format triton` writes it)")
    g.add_argument("--triton-version", metavar="N", help="backend triton: the model version (default: the server's)")
    g.add_argument("--triton-shm", choices=TRITON_SHM, default=dflt(d.triton_shm),
                   help=f"backend triton: tensors through Triton system shared memory (default {d.triton_shm}: on for "
                        "a loopback URL unless the server refuses it; on: that refusal or a remote URL is an error)")
    g.add_argument("--triton-wait", action="store_true", default=dflt(d.triton_wait),
                   help="backend triton: an absent server at start is waited for (as an absent camera), not an error")
    g.add_argument("--triton-ca", metavar="FILE",
                   help="backend triton: the PEM file of the certificate authorities a grpcs:// or https:// server's "
                        "certificate is checked against (default: the system's)")


def args_mapping(args: argparse.Namespace) -> dict:
    """The model flags that were given (not None), as a ModelSpec mapping."""
    return {k: getattr(args, k) for k in FLAG_KEYS if getattr(args, k, None) is not None}


def spec_from_args(args: argparse.Namespace, classes: ClassesInput = None, base: Optional[ModelSpec] = None,
                   resolve: bool = True, **overrides) -> ModelSpec:
    """A ModelSpec from parsed model flags over ``base`` (default: ModelSpec(), the zoo's default
    model), with ``classes`` (ids and/or names) and field ``overrides``; resolved (files downloaded
    or checked, class names turned into ids) unless resolve=False. Raises ModelError (one line).
    """
    if getattr(args, "model", None) and (getattr(args, "cfg", None) or getattr(args, "weights", None)):
        raise ModelConfigError("give either --model or --cfg/--weights, not both")
    if getattr(args, "file", None) and (getattr(args, "model", None) or getattr(args, "cfg", None)
                                        or getattr(args, "weights", None)):
        raise ModelConfigError("give one of --model-file, --model or --cfg/--weights")
    data = args_mapping(args)
    if classes is not None:
        data["classes"] = classes
    try:
        spec = (base or ModelSpec()).override(data, where="")
        if overrides:
            spec = spec.with_(**overrides)
    except ModelConfigError as e:
        key, sep, rest = str(e).partition(":")
        flag = "model-file" if key == "file" else key.replace("_", "-")
        raise ModelConfigError(f"--{flag}{sep}{rest}" if key in KEYS else str(e)) from None
    return spec.resolve() if resolve else spec
