"""The configuration tree: every error class as one line naming the key's path (loader and
command line, exit 2), where a key came from (file, --set, flag), --print-config, the JSON schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, VIDEO_360

from trackpipe.pipeline.config import Config, load_config, schema_text, set_value
from trackpipe.pipeline.errors import ConfigError

SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10]]


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(data=data)
    text = str(e.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("data, message", [
    # unknown keys, at any depth, with the keys allowed there
    ({"cameras": ["a.mp4", {"uri": "b.mp4", "zones": [{"name": "z", "pionts": SQUARE}]}]},
     "cameras[1].zones[0]: unknown key 'pionts' (allowed: name, points, units, classes, anchor, confirm_frames, "
     "camera)"),
    ({"cameras": [{"uri": "a.mp4", "lines": [{"name": "l", "points": [[0, 0], [1, 1]], "direction": ["a", "b"]}]}]},
     "cameras[0].lines[0]: unknown key 'direction' (allowed: name, points, units, classes, anchor, confirm_frames, "
     "camera, directions, count_once)"),
    ({"mqtt": {"url": "mqtt://b", "hots": 1}}, "mqtt: unknown key 'hots' (allowed: url, username, password"),
    ({"webhooks": ["http://a/h", {"url": "http://b/h", "retry": 3}]}, "webhooks[1]: unknown key 'retry' (allowed: url"),
    ({"webhooks": [{"url": "http://b/h", "outbox": {"max_evnts": 3}}]},
     "webhooks[0].outbox: unknown key 'max_evnts' (allowed: enabled, dir, max_events, max_mb)"),
    ({"source": {"uri": "a.mp4", "fsp": 3}}, "source: unknown key 'fsp' (allowed: uri, mode, realtime, fps"),
    ({"cameras": [{"uri": "a.mp4", "fps": 3}]}, "cameras[0]: unknown key 'fps' (allowed: name, uri, "),
    # wrong types and out-of-range values, with what is allowed
    ({"cameras": [{"uri": "a.mp4", "zones": [{"name": "z", "points": SQUARE, "confirm_frames": "3"}]}]},
     "cameras[0].zones[0].confirm_frames: expected an integer, got '3'"),
    ({"zones": [{"name": "z", "points": SQUARE, "anchor": "feet"}]},
     "zones[0].anchor: invalid value 'feet' (allowed: bottom_center, center"),
    ({"mqtt": {"url": "mqtt://b", "qos": 2}}, "mqtt.qos: invalid value 2 (allowed: 0, 1)"),
    ({"webhooks": [{"url": "http://b/h", "timeout_s": 0}]}, "webhooks[0].timeout_s: 0.0 must be greater than 0.0"),
    ({"webhooks": [{"url": "ftp://b/h"}]}, "webhooks[0].url: expected http(s)://HOST[:PORT]/PATH, got 'ftp://b/h'"),
    ({"cameras": "a.mp4"}, "cameras: expected a list, got 'a.mp4'"),
    ({"cameras": [{"name": "a b", "uri": "a.mp4"}]}, "cameras[0].name: camera names are 1-64 of"),
    ({"cameras": [{"name": "door"}]}, "cameras[0]: missing key 'uri'"),
    ({"output": {"snapshot_classes": [True]}}, "output.snapshot_classes: expected a list of class ids or names"),
    # bad polygons and lines
    ({"cameras": [{"uri": "a.mp4", "zones": [{"name": "z", "points": [[0, 0], [1, 1]]}]}]},
     "cameras[0].zones[0].points: a zone needs at least 3 points, got 2"),
    ({"zones": [{"name": "z", "points": [[0, 0], [10, 10], [10, 0], [0, 10]]}]},
     "zones[0].points: the polygon crosses itself (edges 0 and 2)"),
    ({"lines": [{"name": "l", "points": [[0, 0], [1, 1], [2, 2]]}]}, "lines[0].points: a line needs exactly 2 points"),
    # cross-field checks
    ({"cameras": ["a.mp4", "b.mp4"], "zones": [{"name": "z", "camera": "cam7", "points": SQUARE}]},
     "zones[0].camera: unknown camera 'cam7' (cameras: cam0, cam1)"),
    ({"cameras": [{"name": "door", "uri": "a.mp4", "lines": [{"name": "l", "points": [[0, 0], [1, 1]],
                                                              "camera": "yard"}]}]},
     "cameras[0].lines[0].camera: unknown camera 'yard' (cameras: door)"),
    ({"cameras": [{"name": "a", "uri": "x.mp4"}, {"name": "a", "uri": "y.mp4"}]}, "cameras: two cameras are named 'a'"),
    ({"cameras": ["x.mp4", {"uri": "y.mp4", "name": "cam0"}]}, "cameras: two cameras are named 'cam0'"),
    ({"cameras": ["x.mp4", "y.mp4"], "lines": [{"name": "l", "points": [[0, 0], [1, 1]]}]},
     "lines[0]: name its camera (camera: NAME) when there are several (cameras: cam0, cam1)"),
    ({"cameras": [{"uri": "x.mp4", "zones": [{"name": "g", "points": SQUARE}]}, "y.mp4"],
      "lines": [{"name": "g", "camera": "cam0", "points": [[0, 0], [1, 1]]}]},
     "cameras[0]: two zones or lines of camera 'cam0' are named 'g'"),
])
def test_every_config_error_is_one_line_naming_the_key(data, message):
    assert _error(data).startswith(message)


def test_the_origin_of_a_key_introduces_its_error(tmp_path):
    """A key from the file: the file's name first; from --set: the key; from a flag: the flag."""
    from trackpipe.pipeline.cli import load
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras:\n  - uri: a.mp4\n    zones:\n      - {name: z, points: [[0, 0], [1, 1]]}\n")
    with pytest.raises(ConfigError) as e:
        load(["--config", str(cfg)])
    assert str(e.value) == f"{cfg}: cameras[0].zones[0].points: a zone needs at least 3 points, got 2"
    cfg.write_text("pipeline:\n  ring_slots: 4\n")
    for argv, message in (
            (["--set", "pipeline.ring_slots=1"], "pipeline.ring_slots: 1 is below the minimum 2"),
            (["--ring-slots", "1"], "--ring-slots (pipeline.ring_slots): 1 is below the minimum 2"),
            (["--set", "mqtt.qos=1"], "mqtt: missing key 'url'"),
            (["--mqtt", "http://b"], "--mqtt (mqtt).url: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got "
                                     "'http://b'")):
        with pytest.raises(ConfigError) as e:
            load(["--config", str(cfg), "--source", "a.mp4", *argv])
        assert str(e.value) == message


def test_set_value_validates_the_whole_tree_and_leaves_the_config_as_it_was_on_error():
    c = Config()
    set_value(c, "cameras", ["a.mp4", {"uri": "b.mp4", "name": "yard"}])
    assert [x.uri for x in c.cameras] == ["a.mp4", "b.mp4"] and c.camera_names() == ["cam0", "yard"]
    with pytest.raises(ConfigError, match=r"^zones\[0\].camera: unknown camera 'door'"):
        set_value(c, "zones", [{"name": "z", "camera": "door", "points": SQUARE}])
    assert c.zones == [] and len(c.cameras) == 2


def test_shapes_are_validated_once_into_objects():
    zone = {"name": "z", "points": [[0, 0], [0.5, 0], [0.5, 1]]}
    c = load_config(data={"cameras": [{"uri": "a.mp4", "zones": [zone]}],
                          "lines": [{"name": "l", "points": [[0, 5], [10, 5]]}]})
    z, ln = c.cameras[0].zones[0], c.lines[0]
    assert (z.units, z.where, ln.units, ln.where) == ("fraction", "cameras[0].zones[0]", "px", "lines[0]")
    assert z.resolve(100, 10).tolist() == [[0, 0], [50, 0], [50, 10]]


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_tracker.py"), *args], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))


@pytest.mark.timeout(200)
@pytest.mark.parametrize("text, message", [
    ("cameras:\n  - uri: {video}\n  - uri: {video}\n    zones:\n"
     "      - {{name: z, pionts: [[0, 0], [1, 0], [1, 1]]}}\n",
     "cameras[1].zones[0]: unknown key 'pionts' (allowed: name, points, units"),
    ("zones:\n  - {{name: z, points: [[0, 0], [9, 9], [9, 0], [0, 9]]}}\n",
     "zones[0].points: the polygon crosses itself"),
    ("cameras:\n  - uri: {video}\n  - uri: {video}\nlines:\n  - {{name: l, camera: door, points: [[0, 0], [1, 1]]}}\n",
     "lines[0].camera: unknown camera 'door' (cameras: cam0, cam1)"),
    ("mqtt:\n  url: mqtt://127.0.0.1\n  qos: 2\n", "mqtt.qos: invalid value 2 (allowed: 0, 1)"),
])
def test_bad_config_files_from_the_command_line_exit_2_with_one_line(tmp_path, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text.format(video=VIDEO_360))
    r = _cli("--config", str(cfg), "--source", str(VIDEO_360), "--headless") if "cameras" not in text else \
        _cli("--config", str(cfg), "--headless")
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"error: {cfg}: {message}" + r.stderr[len(f"error: {cfg}: {message}"):] and \
        r.stderr.count("\n") == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.timeout(120)
def test_print_config_prints_the_effective_config_without_secrets(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  size: 320\nzones:\n  - {name: z, points: [[0, 0], [0.5, 0], [0.5, 0.5]]}\n"
                   "webhooks:\n  - url: http://user:s3cret@127.0.0.1:9/hook?key=qs3cret\n"
                   "    headers: {X-Key: lit3ral, Authorization: 'Bearer ${HOOK_TOKEN}'}\n")
    r = _cli("--config", str(cfg), "--source", "a.mp4", "--set", "pipeline.ring_slots=4", "--ring-slots", "5",
             "--mqtt", "mqtt://me:pa55@127.0.0.1:1883", "--http-token", "t0ken-t0ken", "--print-config",
             env={"HOOK_TOKEN": "h00k-t0ken"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    for secret in ("s3cret", "qs3cret", "lit3ral", "pa55", "t0ken-t0ken", "h00k-t0ken"):
        assert secret not in r.stdout
    data = yaml.safe_load(r.stdout)
    assert data["pipeline"]["ring_slots"] == 5 and data["source"]["uri"] == "a.mp4" and data["model"]["size"] == 320
    assert data["zones"][0]["units"] == "fraction" and data["mqtt"]["url"] == "mqtt://***@127.0.0.1:1883"
    assert data["webhooks"][0]["headers"] == {"X-Key": "***", "Authorization": "Bearer ${HOOK_TOKEN}"}
    # what is printed is a config file: it loads to the same tree (its secrets aside)
    (tmp_path / "printed.yaml").write_text(r.stdout)
    monkeypatch.setenv("HOOK_TOKEN", "h00k-t0ken")
    again = load_config(str(tmp_path / "printed.yaml"))
    assert again.pipeline.ring_slots == 5 and again.zones[0].points == [(0, 0), (0.5, 0), (0.5, 0.5)]
    assert again.model.size == (320, 320) and again.mqtt.port == 1883


def test_the_committed_schema_is_the_generated_one():
    """configs/schema.json is regenerated with ``python run_tracker.py --config-schema configs/schema.json``."""
    committed = (ROOT / "configs" / "schema.json").read_text()
    assert committed == schema_text(), "configs/schema.json is stale: run python run_tracker.py --config-schema " \
                                       "configs/schema.json"
    schema = json.loads(committed)
    camera = schema["$defs"]["CameraConfig"]
    assert camera["additionalProperties"] is False and "uri" in camera["required"]
    assert schema["$defs"]["Zone"]["properties"]["anchor"]["enum"][0] == "bottom_center"


@pytest.mark.parametrize("name", ["default", "cpu-tiny", "gpu-int8", "rtsp-headless", "screen-overlay", "cameras"])
def test_the_shipped_presets_are_valid_against_the_tree(name):
    assert isinstance(load_config(str(ROOT / "configs" / f"{name}.yaml")), Config)


def test_a_disabled_camera_is_left_out_of_the_run():
    from trackpipe.pipeline.runtime.cameras import resolve_cameras
    cfg = load_config(data={"cameras": [{"uri": "a.mp4", "name": "door", "enabled": False}, "b.mp4", "c.mp4"],
                            "zones": [{"name": "z", "camera": "door", "points": SQUARE}]})
    cams = resolve_cameras(cfg)
    assert [(c.index, c.name, c.uri, c.zones) for c in cams] == [(0, "cam1", "b.mp4", None), (1, "cam2", "c.mp4", None)]
    with pytest.raises(ConfigError, match=r"^cameras\[0\].enabled: expected true or false, got 'no'$"):
        load_config(data={"cameras": [{"uri": "a.mp4", "enabled": "no"}]})
    with pytest.raises(ConfigError, match="^cameras: every camera has enabled: false$"):
        resolve_cameras(load_config(data={"cameras": [{"uri": "a.mp4", "enabled": False}]}))
