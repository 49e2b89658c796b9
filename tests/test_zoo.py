"""Model zoo: the real download code against a real HTTP server on 127.0.0.1 serving the real
Yolo-Fastest files; sha256 and size checks; the offline line; seeding the cache from a folder."""

from __future__ import annotations

import csv
import hashlib
import http.server
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from trackpipe.models.classes import coco_names_path, read_names
from trackpipe.models.errors import ModelError
import trackpipe.models
from trackpipe.models.zoo import DEFAULT_MODEL, ZOO, RemoteFile, bundled_files, cached, download, resolve, seed

ROOT = Path(__file__).resolve().parents[1]
ASSETS = (ROOT / ".." / "shared" / "assets").resolve()
FASTEST = ASSETS / "darknet" / "yolo-fastest-1.1_coco"
XL = "yolo-fastest-1.1-xl"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(root: Path):
    handler = partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture()
def www(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a copy of the real Yolo-Fastest files."""
    root = tmp_path / "www"
    shutil.copytree(FASTEST, root)
    for p in root.iterdir():
        p.chmod(0o644)
    server, url = _serve(root)
    yield root, url
    server.shutdown()
    server.server_close()


def _local_zoo(url: str) -> dict:
    """The real Yolo-Fastest zoo entries (their real sha256 and sizes), served from url, as
    downloads (the package's own copy of the default model left out)."""
    def here(r: RemoteFile) -> RemoteFile:
        return replace(r, url=f"{url}/{r.filename}")
    return {n: replace(e, cfg=here(e.cfg), weights=here(e.weights), bundled=False)
            for n, e in ZOO.items() if "fastest" in n}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resolve_downloads_real_files_and_then_uses_the_cache(www, tmp_path):
    root, url = www
    files = resolve(XL, tmp_path / "cache", zoo=_local_zoo(url), progress=False)
    assert files.cfg == tmp_path / "cache" / "weights" / "yolo-fastest-1.1-xl.cfg"
    assert _sha(files.weights) == ZOO[XL].weights.sha256 and _sha(files.cfg) == ZOO[XL].cfg.sha256
    assert files.size == 320 and files.names == coco_names_path()
    assert not list(files.weights.parent.glob("*.part"))
    assert files.weights.stat().st_mode & 0o044  # readable by others, like any file the umask allows
    assert cached(XL, tmp_path / "cache")
    for p in root.iterdir():  # the server loses its files: the cache answers
        p.unlink()
    assert resolve(XL, tmp_path / "cache", zoo=_local_zoo(url), progress=False) == files


def test_sha256_mismatch_deletes_the_file_with_a_clear_error(www, tmp_path):
    root, url = www
    w = root / "yolo-fastest-1.1-xl.weights"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        resolve(XL, tmp_path, zoo=_local_zoo(url), progress=False)
    msg = str(e.value)
    assert f"the download of {url}/yolo-fastest-1.1-xl.weights is corrupt: sha256 " in msg
    assert f"!= expected {ZOO[XL].weights.sha256}" in msg and "\n" not in msg
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["yolo-fastest-1.1-xl.cfg"]


def test_size_mismatch_is_refused(www, tmp_path):
    root, url = www
    (root / "yolo-fastest-1.1.weights").write_bytes(b"w" * 1000)
    with pytest.raises(ModelError, match="is corrupt: 1,000 bytes, expected 1,384,268"):
        resolve("yolo-fastest-1.1", tmp_path, zoo=_local_zoo(url), progress=False)
    assert not (tmp_path / "weights" / "yolo-fastest-1.1.weights").exists()


def test_download_without_expectations_and_http_errors(www, tmp_path):
    root, url = www
    dest = download(f"{url}/yolo-fastest-1.1.cfg", tmp_path / "a.cfg", progress=False)
    assert dest.read_bytes() == (FASTEST / "yolo-fastest-1.1.cfg").read_bytes()
    with pytest.raises(ModelError, match=f"cannot download {url}/nope.weights: HTTP 404 "):
        download(f"{url}/nope.weights", tmp_path / "nope.weights", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["a.cfg"]


def test_unreachable_server_one_line_naming_the_files_and_the_folder(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ModelError) as e:
        resolve(XL, tmp_path, zoo=_local_zoo(url), progress=False, timeout=5)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"cannot download {url}/yolo-fastest-1.1-xl.cfg: ")
    assert (f"Fetch {url}/yolo-fastest-1.1-xl.cfg and {url}/yolo-fastest-1.1-xl.weights into "
            f"{tmp_path / 'weights'}/") in msg
    assert f"python -m trackpipe.models download {XL} --from FOLDER" in msg
    assert list((tmp_path / "weights").iterdir()) == []


def test_a_wrong_sized_cached_file_is_reported_not_used(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "yolo-fastest-1.1.cfg").write_bytes((FASTEST / "yolo-fastest-1.1.cfg").read_bytes())
    (tmp_path / "weights" / "yolo-fastest-1.1.weights").write_bytes(b"x" * 10)
    with pytest.raises(ModelError, match="yolo-fastest-1.1.weights: 10 bytes, expected 1,384,268: delete it"):
        resolve("yolo-fastest-1.1", tmp_path, progress=False)


def test_default_model_ships_in_the_package(tmp_path):
    """The default model resolves from the package itself: no cache, no network; a damaged
    packaged file is one clear line, never used."""
    files = resolve(DEFAULT_MODEL, tmp_path / "empty-cache", progress=False)
    assert files.cfg.parent == Path(trackpipe.models.__file__).parent / "data" and files.size == 320
    assert _sha(files.weights) == ZOO[DEFAULT_MODEL].weights.sha256 and _sha(files.cfg) == ZOO[DEFAULT_MODEL].cfg.sha256
    assert not (tmp_path / "empty-cache").exists() and cached(DEFAULT_MODEL, tmp_path / "empty-cache")
    damaged = tmp_path / "data"
    shutil.copytree(files.cfg.parent, damaged)
    data = bytearray((damaged / files.weights.name).read_bytes())
    data[1000] ^= 1
    (damaged / files.weights.name).write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"the packaged .*yolo-fastest-1.1-xl.weights \(reinstall trackpipe\) is "
                                         r"corrupt: sha256"):
        bundled_files(ZOO[DEFAULT_MODEL], damaged)
    assert bundled_files(ZOO["yolov4"]) is None


def test_seed_from_a_folder_checks_sha256(tmp_path):
    files = seed(XL, FASTEST, tmp_path / "cache")
    assert _sha(files.weights) == ZOO[XL].weights.sha256 and files.size == 320
    unreachable = _local_zoo(f"http://127.0.0.1:{_free_port()}")
    assert resolve(XL, tmp_path / "cache", zoo=unreachable, progress=False) == files  # no download needed now
    bad = tmp_path / "bad"
    shutil.copytree(FASTEST, bad)
    (bad / "yolo-fastest-1.1.weights").chmod(0o644)
    data = bytearray((bad / "yolo-fastest-1.1.weights").read_bytes())
    data[100] ^= 1
    (bad / "yolo-fastest-1.1.weights").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"yolo-fastest-1.1.weights is corrupt: sha256 [0-9a-f]{64} != expected 1c44"):
        seed("yolo-fastest-1.1", bad, tmp_path / "cache")
    assert not (tmp_path / "cache" / "weights" / "yolo-fastest-1.1.weights").exists()
    with pytest.raises(ModelError, match="has no yolov4.weights"):
        seed("yolov4", ASSETS / "darknet" / "cfg", tmp_path / "cache")
    with pytest.raises(ModelError, match="model folder .*coco.names is a file, not a directory"):
        seed(XL, ASSETS / "darknet" / "data" / "coco.names", tmp_path / "cache")


def _cli(*args, env_cache=None):
    import os
    env = dict(os.environ)
    if env_cache is not None:
        env["TRACKPIPE_CACHE"] = str(env_cache)
    return subprocess.run([sys.executable, "-m", "trackpipe.models", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


def test_download_command_seeds_the_cache_named_by_the_environment(tmp_path):
    r = _cli("download", "--from", FASTEST, env_cache=tmp_path)  # the default model
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "weights" / "yolo-fastest-1.1-xl.cfg"),
                                str(tmp_path / "weights" / "yolo-fastest-1.1-xl.weights"), str(coco_names_path())]
    r = _cli("download", "yolov4-tiny", "--from", ASSETS / "darknet" / "cfg", env_cache=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert "has no yolov4-tiny.weights" in r.stderr and "Traceback" not in r.stderr


def test_zoo_files_are_pinned_and_match_the_assets_manifest():
    """Every cfg and Yolo-Fastest file is pinned to a commit, with the sha256 the assets' MANIFEST
    records for the same upstream file (repository, commit and path)."""
    rows = list(csv.DictReader((ASSETS / "MANIFEST.tsv").open(), delimiter="\t"))
    by_source = {f"https://raw.githubusercontent.com/{r['source_repo']}/{r['source_commit']}/{r['source_path']}": r
                 for r in rows if r["source_repo"] and r["source_commit"]}
    checked = 0
    for e in ZOO.values():
        for r in (e.cfg, e.weights):
            assert "/master/" not in r.url and r.size
            if r.url in by_source:
                assert (r.sha256, r.size) == (by_source[r.url]["sha256"], int(by_source[r.url]["size_bytes"])), r.url
                checked += 1
    assert checked == 8  # 6 cfgs + the two Yolo-Fastest weights
    assert ZOO["yolov4"].weights.sha256 and ZOO["yolov4-tiny"].weights.sha256


def test_default_model_and_packaged_names():
    assert DEFAULT_MODEL == "yolo-fastest-1.1-xl" and DEFAULT_MODEL in ZOO
    path = coco_names_path()
    assert path.read_bytes() == (ASSETS / "darknet" / "data" / "coco.names").read_bytes()
    assert len(read_names(path)) == 80 and read_names(path)[16] == "dog"


def test_unknown_model():
    with pytest.raises(ModelError, match="unknown model 'yolov9' \\(known: yolo-fastest-1.1-xl, "):
        resolve("yolov9")
