"""Named models: official darknet weights downloaded on first use, with sha256 check.

Files land in `<cache>/weights/`. Offline, `ensure_weights` raises a ModelError
that says exactly which file to fetch, from where, and where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import ModelError

log = logging.getLogger(__name__)

_RELEASE = "https://github.com/AlexeyAB/darknet/releases/download"
_RAW = "https://raw.githubusercontent.com/AlexeyAB/darknet/master"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    weights_url: str
    weights_sha256: Optional[str]
    weights_size: int
    cfg_url: str
    size: int


ZOO = {
    "yolov4": ZooEntry("yolov4", f"{_RELEASE}/darknet_yolo_v3_optimal/yolov4.weights",
                       "e8a4f6c62188738d86dc6898d82724ec0964d0eb9d2ae0f0a9d53d65d108d562", 257_717_640,
                       f"{_RAW}/cfg/yolov4.cfg", 416),
    "yolov4-tiny": ZooEntry("yolov4-tiny", f"{_RELEASE}/darknet_yolo_v4_pre/yolov4-tiny.weights",
                            "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87", 24_251_276,
                            f"{_RAW}/cfg/yolov4-tiny.cfg", 416),
    "yolov3": ZooEntry("yolov3", "https://pjreddie.com/media/files/yolov3.weights", None, 248_007_048,
                       f"{_RAW}/cfg/yolov3.cfg", 416),
    "yolov3-tiny": ZooEntry("yolov3-tiny", "https://pjreddie.com/media/files/yolov3-tiny.weights", None, 35_434_956,
                            f"{_RAW}/cfg/yolov3-tiny.cfg", 416),
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: Optional[str] = None, size: Optional[int] = None,
             timeout: float = 30.0, progress: bool = True,
             opener: Callable = urllib.request.urlopen) -> Path:
    """Download url to dest atomically (a .part file renamed on success), with a tqdm
    progress bar; verify size and sha256. A bad download is deleted, never kept."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    try:
        with opener(url, timeout=timeout) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or size
            bar = None
            if progress:
                from tqdm import tqdm  # noqa: PLC0415
                bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False)
            while block := resp.read(1 << 20):
                out.write(block)
                h.update(block)
                if bar:
                    bar.update(len(block))
            if bar:
                bar.close()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        raise ModelError(f"cannot download {url}: {getattr(e, 'reason', e)}") from e
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink(missing_ok=True)
        raise ModelError(f"download of {url} is corrupt: {got:,} bytes, expected {size:,}")
    if sha256 is not None and h.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise ModelError(f"download of {url} is corrupt: sha256 {h.hexdigest()} != expected {sha256}")
    os.replace(part, dest)
    return dest


def ensure_file(url: str, dest: Path, sha256: Optional[str], size: Optional[int], what: str,
                offline_hint: str, **kw) -> Path:
    if dest.is_file():
        if size is not None and dest.stat().st_size != size:
            raise ModelError(f"{dest}: {dest.stat().st_size:,} bytes, expected {size:,}: delete it and retry")
        return dest
    try:
        log.info("downloading %s from %s", what, url)
        return download(url, dest, sha256, size, **kw)
    except ModelError as e:
        raise ModelError(f"{e}. Download {url} yourself and put it at {dest}{offline_hint}") from e


NAMES_URL = f"{_RAW}/data/coco.names"


def resolve(name: str, cache_dir: Optional[Path] = None, zoo: Optional[dict] = None, names_url: str = NAMES_URL,
            **kw) -> tuple[Path, Path, Path, int]:
    """Model name -> (cfg, weights, names, default input size), downloading what is missing."""
    zoo = ZOO if zoo is None else zoo
    if name not in zoo:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(zoo))}")
    e = zoo[name]
    from .onnx_export import default_cache_dir  # noqa: PLC0415

    root = Path(cache_dir or default_cache_dir()) / "weights"
    cfg = ensure_file(e.cfg_url, root / f"{name}.cfg", None, None, f"{name}.cfg", "", **kw)
    weights = ensure_file(e.weights_url, root / f"{name}.weights", e.weights_sha256, e.weights_size,
                          f"{name}.weights", " (or pass --cfg/--weights)", **kw)
    names = ensure_file(names_url, root / "coco.names", None, None, "coco.names", "", **kw)
    return cfg, weights, names, e.size
