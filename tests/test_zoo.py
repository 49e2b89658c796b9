"""Model download: real HTTP from a server on 127.0.0.1, sha256 check, corrupt and offline cases."""

import hashlib
import http.server
import socket
import threading
from functools import partial

import pytest

from trackpipe.models.errors import ModelError
from trackpipe.models.zoo import ZooEntry, download, resolve


@pytest.fixture()
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_checks_sha256(http_root, tmp_path):
    root, url = http_root
    data = bytes(range(256)) * 4096
    (root / "m.weights").write_bytes(data)
    dest = tmp_path / "cache" / "m.weights"
    download(f"{url}/m.weights", dest, hashlib.sha256(data).hexdigest(), len(data), progress=False)
    assert dest.read_bytes() == data
    assert not list(dest.parent.glob("*.part"))


def test_corrupt_download_is_deleted(http_root, tmp_path):
    root, url = http_root
    data = b"x" * 10_000
    (root / "m.weights").write_bytes(data)
    dest = tmp_path / "m.weights"
    with pytest.raises(ModelError, match="corrupt: sha256"):
        download(f"{url}/m.weights", dest, "0" * 64, len(data), progress=False)
    with pytest.raises(ModelError, match="corrupt: 10,000 bytes, expected 20,000"):
        download(f"{url}/m.weights", dest, None, 20_000, progress=False)
    assert not dest.exists() and not list(tmp_path.glob("*.part"))


def test_resolve_downloads_cfg_weights_names(http_root, tmp_path):
    root, url = http_root
    (root / "tiny.cfg").write_text("[net]\n")
    (root / "tiny.weights").write_bytes(b"w" * 100)
    (root / "coco.names").write_text("person\n")
    zoo = {"tiny": ZooEntry("tiny", f"{url}/tiny.weights", hashlib.sha256(b"w" * 100).hexdigest(), 100,
                            f"{url}/tiny.cfg", 416)}
    cfg, weights, names, size = resolve("tiny", tmp_path, zoo=zoo, names_url=f"{url}/coco.names", progress=False)
    assert cfg.read_text() == "[net]\n" and weights.stat().st_size == 100 and size == 416
    (root / "tiny.weights").unlink()  # cached now: no second download
    assert resolve("tiny", tmp_path, zoo=zoo, names_url=f"{url}/coco.names", progress=False)[1] == weights


def test_offline_error_says_what_to_fetch_and_where(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    zoo = {"tiny": ZooEntry("tiny", f"{url}/yolov4-tiny.weights", None, 100, f"{url}/tiny.cfg", 416)}
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "tiny.cfg").write_text("[net]\n")
    with pytest.raises(ModelError) as e:
        resolve("tiny", tmp_path, zoo=zoo, progress=False, timeout=2)
    msg = str(e.value)
    assert f"Download {url}/yolov4-tiny.weights yourself and put it at {tmp_path / 'weights' / 'tiny.weights'}" in msg
    assert "--cfg/--weights" in msg


def test_unknown_model():
    with pytest.raises(ModelError, match="unknown model 'yolov9'"):
        resolve("yolov9")
