"""Named models: darknet cfg and weights fetched on first use from their upstream addresses,
pinned to a commit or a release and checked against their sha256.

Files land in ``<cache>/weights/`` (cache: ``--cache-dir``, else ``$TRACKPIPE_CACHE``, else
``~/.cache/trackpipe``). Offline, :func:`resolve` raises a one-line ModelError naming the file
to fetch and where to put it; :func:`seed` fills the cache from a local folder instead
(``python -m trackpipe.models download NAME --from FOLDER``), with the same checks.

The default model is Yolo-Fastest-1.1-xl (:data:`DEFAULT_MODEL`): real COCO weights of 3.7 MB,
AP50 0.434 on the 66 COCO val2017 images of the test assets, ~200 FPS at 320x320 on two CPU
cores with ONNX Runtime. It ships inside the package (``trackpipe/models/data/``, sha256-checked
on use), so a first run needs no network; the others are downloaded. yolov4-tiny (24 MB, 6.9
GFLOP vs 0.72) and yolov4 (258 MB, 60 GFLOP) are more accurate and one flag away
(``--model yolov4-tiny``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from .errors import ModelError, check_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "yolo-fastest-1.1-xl"

_RELEASE = "https://github.com/AlexeyAB/darknet/releases/download"
# cfgs pinned to the commit the test assets come from (their sha256 are the assets' MANIFEST's)
_DARKNET = "https://raw.githubusercontent.com/AlexeyAB/darknet/59596d7880f6504768df41d6daa586f5cb2b932f"
_FASTEST = ("https://raw.githubusercontent.com/dog-qiuqiu/Yolo-Fastest/96a2900d163196c396e73f3fdab04ca4dd9a2f70"
            "/ModelZoo/yolo-fastest-1.1_coco")


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its address, and what it must be (sha256 and size; None: unknown)."""

    url: str
    sha256: Optional[str]
    size: Optional[int]

    @property
    def filename(self) -> str:
        """The upstream file name (the last part of the URL)."""
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ZooEntry:
    """A named model: cfg + weights, default input size; class names ship with the package."""

    name: str
    cfg: RemoteFile
    weights: RemoteFile
    size: int
    about: str = ""
    names: str = "coco.names"  # a file in trackpipe/models/data/
    bundled: bool = False      # cfg and weights ship in trackpipe/models/data/


ZOO: Dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry("yolo-fastest-1.1-xl",
             RemoteFile(f"{_FASTEST}/yolo-fastest-1.1-xl.cfg",
                        "c458427acc4fbeabceff4528ef7b65b066c0308ce599460f8ba299eba63abad3", 9_696),
             RemoteFile(f"{_FASTEST}/yolo-fastest-1.1-xl.weights",
                        "fac5fb41786c1f38f04972a658443b189f48720d7d117f9a044100e98a35b0c5", 3_693_964),
             320, "default: Yolo-Fastest-1.1-xl, COCO, 3.7 MB, fast on any CPU", bundled=True),
    ZooEntry("yolo-fastest-1.1",
             RemoteFile(f"{_FASTEST}/yolo-fastest-1.1.cfg",
                        "f6df5775c1e862998cf69046eba9265be3ae84dfe8b2caab7529823f0795bf70", 9_685),
             RemoteFile(f"{_FASTEST}/yolo-fastest-1.1.weights",
                        "1c445c42bbd6df63edea2cc69f99667b5650d663ca11e34b116240740cd42890", 1_384_268),
             320, "Yolo-Fastest-1.1, COCO, 1.4 MB, the smallest and least accurate"),
    ZooEntry("yolov4-tiny",
             RemoteFile(f"{_DARKNET}/cfg/yolov4-tiny.cfg",
                        "f858e3724962eedf3ac44e3b6cb3f0c3d9ed067c306bb831f539c578b924c90e", 3_231),
             RemoteFile(f"{_RELEASE}/darknet_yolo_v4_pre/yolov4-tiny.weights",
                        "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87", 24_251_276),
             416, "YOLOv4-tiny, COCO, 24 MB"),
    ZooEntry("yolov4",
             RemoteFile(f"{_DARKNET}/cfg/yolov4.cfg",
                        "a6d0f8e5c62cc8378384f75a8159b95fa2964d4162e33351b00ac82e0fc46a34", 12_231),
             RemoteFile(f"{_RELEASE}/darknet_yolo_v3_optimal/yolov4.weights",
                        "e8a4f6c62188738d86dc6898d82724ec0964d0eb9d2ae0f0a9d53d65d108d562", 257_717_640),
             416, "YOLOv4, COCO, 258 MB, a GPU model"),
    ZooEntry("yolov3",
             RemoteFile(f"{_DARKNET}/cfg/yolov3.cfg",
                        "370c7b08d2350fd105a79af9b106c02217d659cd2a5c1e8319a65fa4ced610fa", 8_342),
             RemoteFile("https://pjreddie.com/media/files/yolov3.weights", None, 248_007_048),
             416, "YOLOv3, COCO, 248 MB"),
    ZooEntry("yolov3-tiny",
             RemoteFile(f"{_DARKNET}/cfg/yolov3-tiny.cfg",
                        "84eb7a675ef87c906019ff5a6e0effe275d175adb75100dcb47f0727917dc2c7", 1_915),
             RemoteFile("https://pjreddie.com/media/files/yolov3-tiny.weights", None, 35_434_956),
             416, "YOLOv3-tiny, COCO, 35 MB"),
)}


@dataclass(frozen=True)
class ZooFiles:
    """What :func:`resolve` returns: local paths and the model's default input size."""

    cfg: Path
    weights: Path
    names: Path
    size: int


def weights_dir(cache_dir=None) -> Path:
    """``<cache>/weights``; cache: cache_dir, else ``$TRACKPIPE_CACHE``, else ``~/.cache/trackpipe``."""
    from .onnx_export import default_cache_dir  # noqa: PLC0415  (the one definition of the cache root)

    return Path(cache_dir or default_cache_dir()).expanduser() / "weights"


def entry(name: str, zoo: Optional[Dict[str, ZooEntry]] = None) -> ZooEntry:
    zoo = ZOO if zoo is None else zoo
    if name not in zoo:
        raise ModelError(f"unknown model {name!r} (known: {', '.join(zoo)})")
    return zoo[name]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _check(got_size: int, got_sha: str, want: RemoteFile, what: str) -> None:
    if want.size is not None and got_size != want.size:
        raise ModelError(f"{what} is corrupt: {got_size:,} bytes, expected {want.size:,}")
    if want.sha256 is not None and got_sha != want.sha256:
        raise ModelError(f"{what} is corrupt: sha256 {got_sha} != expected {want.sha256}")


def _part_file(dest: Path) -> Path:
    """A new temporary file of our own beside dest (several processes may fetch the same
    file at once), created with the umask's permissions like any other file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    part.open("xb").close()
    return part


def download(url: str, dest: Path, sha256: Optional[str] = None, size: Optional[int] = None,
             timeout: float = 30.0, progress: bool = True,
             opener: Callable = urllib.request.urlopen) -> Path:
    """Download url to dest atomically (a private .part file renamed on success), with a tqdm
    progress bar on stderr; verify size and sha256. A bad download is deleted, never kept."""
    dest = Path(dest)
    part = _part_file(dest)
    h = hashlib.sha256()
    try:
        with opener(url, timeout=timeout) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or size
            bar = None
            if progress:
                from tqdm import tqdm  # noqa: PLC0415
                bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False)
            try:
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    if bar:
                        bar.update(len(block))
            finally:
                if bar:
                    bar.close()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        why = f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
        raise ModelError(f"cannot download {url}: {why}") from e
    try:
        _check(part.stat().st_size, h.hexdigest(), RemoteFile(url, sha256, size), f"the download of {url}")
    except ModelError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def ensure_file(remote: RemoteFile, dest: Path, hint: str = "", **kw) -> Path:
    """dest if it is there with the right size; else download it (``kw``: download's timeout,
    progress, opener). A failure is one line: the reason, then ``hint`` (what to fetch, where to)."""
    if dest.is_file():
        if remote.size is not None and dest.stat().st_size != remote.size:
            raise ModelError(f"{dest}: {dest.stat().st_size:,} bytes, expected {remote.size:,}: delete it and retry")
        return dest
    try:
        log.info("downloading %s from %s", dest.name, remote.url)
        return download(remote.url, dest, remote.sha256, remote.size, **kw)
    except ModelError as e:
        raise ModelError(f"{e}. {hint or f'Fetch {remote.url} yourself and put it at {dest}'}") from e


def bundled_files(e: ZooEntry, folder: Optional[Path] = None) -> Optional[Dict[str, Path]]:
    """{"cfg": path, "weights": path} of a model that ships in the package (``folder``: default
    trackpipe/models/data), checked against its size and sha256; None when it does not ship."""
    folder = Path(folder) if folder is not None else Path(__file__).with_name("data")
    if not e.bundled:
        return None
    out = {kind: folder / remote.filename for kind, remote in (("cfg", e.cfg), ("weights", e.weights))}
    if not all(p.is_file() for p in out.values()):
        return None
    for kind, remote in (("cfg", e.cfg), ("weights", e.weights)):
        path = out[kind]
        _check(path.stat().st_size, sha256_of(path), remote, f"the packaged {path} (reinstall trackpipe)")
    return out


def resolve(name: str, cache_dir=None, zoo: Optional[Dict[str, ZooEntry]] = None, **kw) -> ZooFiles:
    """Model name -> local cfg, weights, names and default input size: the package's own copy
    for a bundled model, else the cache, downloading what is missing (``kw``: download's
    timeout, progress, opener). Offline, the error names every missing file, its address and
    the folder to put it in."""
    from .classes import coco_names_path  # noqa: PLC0415

    e = entry(name, zoo)
    packaged = bundled_files(e)
    if packaged is not None:
        return ZooFiles(packaged["cfg"], packaged["weights"], coco_names_path().with_name(e.names), e.size)
    root = weights_dir(cache_dir)
    files = {kind: (remote, root / remote.filename) for kind, remote in (("cfg", e.cfg), ("weights", e.weights))}
    missing = [remote for remote, dest in files.values() if not dest.is_file()]
    hint = (f"Offline? Fetch {' and '.join(r.url for r in missing)} into {root}/, or copy them from a folder: "
            f"python -m trackpipe.models download {name} --from FOLDER (or give --cfg/--weights of your own)")
    got = {kind: ensure_file(remote, dest, hint, **kw) for kind, (remote, dest) in files.items()}
    return ZooFiles(got["cfg"], got["weights"], coco_names_path().with_name(e.names), e.size)


def cached(name: str, cache_dir=None, zoo: Optional[Dict[str, ZooEntry]] = None) -> bool:
    """Whether cfg and weights of ``name`` are here already, packaged or cached (no download)."""
    root, e = weights_dir(cache_dir), entry(name, zoo)
    if e.bundled and all((Path(__file__).with_name("data") / r.filename).is_file() for r in (e.cfg, e.weights)):
        return True
    return (root / e.cfg.filename).is_file() and (root / e.weights.filename).is_file()


def seed(name: str, folder, cache_dir=None, zoo: Optional[Dict[str, ZooEntry]] = None) -> ZooFiles:
    """Copy a model's upstream files from a local folder into the cache, checking size and
    sha256 first (what ``download NAME --from FOLDER`` does); files already cached are checked
    the same way and kept. Returns what :func:`resolve` would."""
    from .classes import coco_names_path  # noqa: PLC0415

    e = entry(name, zoo)
    src_dir = check_dir(folder, "model folder")
    root = weights_dir(cache_dir)
    out = {}
    for kind, remote in (("cfg", e.cfg), ("weights", e.weights)):
        src = src_dir / remote.filename
        if src.is_dir() or not src.is_file():
            raise ModelError(f"{src_dir} has no {remote.filename} (the {kind} of {name}; upstream: {remote.url})")
        src_sha = sha256_of(src)
        _check(src.stat().st_size, src_sha, remote, str(src))
        dest = root / remote.filename
        if not (dest.is_file() and dest.stat().st_size == src.stat().st_size and sha256_of(dest) == src_sha):
            part = _part_file(dest)
            try:
                shutil.copyfile(src, part)
                os.replace(part, dest)
            finally:
                part.unlink(missing_ok=True)
            log.info("seeded %s from %s", dest, src)
        out[kind] = dest
    return ZooFiles(out["cfg"], out["weights"], coco_names_path().with_name(e.names), e.size)
