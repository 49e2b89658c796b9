"""Typed config: YAML loading, unknown keys and bad values rejected with clear messages, presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackpipe.pipeline.config import Config, load_config, parse_scalar, set_value
from trackpipe.pipeline.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_defaults():
    c = Config()
    assert c.pipeline.ring_slots == 8 and c.source.mode == "auto" and c.tracker.name == "auto"
    assert c.model.backend == "auto" and c.model.model is None  # the zoo's default model, a measured backend


def test_yaml_overrides_and_types(tmp_path):
    c = load_config(_yaml(tmp_path, "pipeline:\n  ring_slots: 4\nsource:\n  uri: 0\n  fps: 25\n"
                                    "model:\n  classes: [0, person]\n"))
    assert c.pipeline.ring_slots == 4
    assert c.source.uri == "0" and c.source.fps == 25.0  # camera index as a string, int widened
    assert c.model.classes == (0, "person")  # names become ids when the model is resolved


@pytest.mark.parametrize("text, message", [
    ("pipline:\n  ring_slots: 4\n", "unknown key 'pipline' (allowed: source, model, tracker, pipeline"),
    ("pipeline:\n  ringslots: 4\n", "unknown key 'pipeline.ringslots' (allowed: ring_slots, infer_workers, max_frames"),
    ("pipeline:\n  ring_slots: 1\n", "pipeline.ring_slots: 1 is below the minimum 2"),
    ("pipeline:\n  ring_slots: many\n", "pipeline.ring_slots: expected an integer, got 'many'"),
    ("model:\n  backend: cuda\n", "model.backend: invalid value 'cuda' (allowed: auto, onnx, openvino, tf, opencv"),
    ("source:\n  mode: fast\n", "source.mode: invalid value 'fast' (allowed: auto, lossless, latest)"),
    ("output:\n  headless: maybe\n", "output.headless: expected true or false, got 'maybe'"),
    ("source:\n  watchdog_s: 0\n", "source.watchdog_s: 0.0 must be greater than 0.0"),
    ("metrics_port: 70000\n", "metrics_port: 70000 is above the maximum 65535"),
    ("pipeline: 3\n", "pipeline: expected a mapping"),
])
def test_rejects_bad_keys_and_values(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_config(_yaml(tmp_path, text))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid YAML"):
        load_config(_yaml(tmp_path, "pipeline: [\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_set_value_dotted():
    c = Config()
    set_value(c, "pipeline.ring_slots", parse_scalar("3"))
    set_value(c, "output.headless", parse_scalar("true"))
    set_value(c, "tracker.options", parse_scalar("{max_age: 5}"))
    assert c.pipeline.ring_slots == 3 and c.output.headless is True and c.tracker.options == {"max_age": 5}
    with pytest.raises(ConfigError, match="unknown key 'pipeline.nope'"):
        set_value(c, "pipeline.nope", 1)


@pytest.mark.parametrize("name", ["default", "cpu-tiny", "gpu-int8", "rtsp-headless", "screen-overlay"])
def test_shipped_presets_load(name):
    c = load_config(str(CONFIGS / f"{name}.yaml"))
    assert isinstance(c, Config)


def test_model_files_relative_to_the_config_file(tmp_path):
    sub = tmp_path / "presets"
    sub.mkdir()
    p = sub / "m.yaml"
    p.write_text("model:\n  cfg: ../models/x.cfg\n  weights: /abs/x.weights\noutput:\n  video: out.mp4\n")
    c = load_config(str(p))
    assert str(c.model.cfg) == str(tmp_path / "models" / "x.cfg")
    assert str(c.model.weights) == "/abs/x.weights" and c.output.video == "out.mp4"  # outputs: the working dir
