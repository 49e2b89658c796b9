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
    ("pipeline:\n  ringslots: 4\n",
     "pipeline: unknown key 'ringslots' (allowed: ring_slots, infer_workers, max_frames"),
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
    with pytest.raises(ConfigError, match="^pipeline: unknown key 'nope'"):
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


@pytest.mark.parametrize("text, message", [
    ("pipeline:\n  duration_s: .nan\n", "pipeline.duration_s: expected a finite number, got nan"),
    ("pipeline:\n  duration_s: .inf\n", "pipeline.duration_s: expected a finite number, got inf"),
    ("source:\n  fps: .nan\n", "source.fps: expected a finite number, got nan"),
    ("source:\n  watchdog_s: -.inf\n", "source.watchdog_s: expected a finite number, got -inf"),
    ("pipeline:\n  camera: ..\n", "pipeline.camera: camera names are 1-64 of A-Z a-z 0-9 _ . -, first a letter"),
    ("pipeline:\n  camera: a/b\n", "pipeline.camera: camera names are"),
    ("pipeline:\n  camera: \"cam0\\n\"\n", r"got 'cam0\n'"),
])
def test_rejects_non_finite_numbers_and_path_unsafe_camera_names(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_config(_yaml(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value)


def _bomb(levels: int = 9) -> str:
    """A "billion laughs" list: ``levels`` anchors, each a list of 9 aliases of the one before (9**levels
    strings once expanded, in a few hundred bytes)."""
    items = ["&a0 [" + ", ".join(["lol"] * 9) + "]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize("name, text, message", [
    ("bomb under zones", "zones:\n  - name: z\n    points: [[0, 0], [1, 0], [1, 1]]\n    classes: " + _bomb() + "\n",
     "line 4 invalid YAML: its aliases expand to more than 100000 values"),
    ("bomb under tracker options", "tracker:\n  options:\n    x: " + _bomb() + "\n", "expand to more than 100000"),
    ("deep flow", "pipeline: " + "[" * 5000 + "]" * 5000 + "\n", "line 1 invalid YAML: nested deeper than 64 levels"),
    ("deep block", "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 200)),
     "invalid YAML: nested deeper than 64 levels"),
    ("recursive alias", "zones: &z [*z]\n", "invalid YAML: an alias refers to its own anchor"),
])
def test_yaml_bombs_and_deep_nesting_refused_before_they_are_built(tmp_path, name, text, message):
    """A few hundred bytes that expand to billions of values, or 5,000 levels of nesting: one line
    naming the file, with little memory (the bomb expanded is gigabytes; deep nesting was a
    RecursionError)."""
    import tracemalloc
    path = _yaml(tmp_path, text)
    assert len(text) < 40_000
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as e:
            load_config(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and "\n" not in str(e.value)
    assert peak < 50 * 2**20, peak


def test_yaml_within_the_limits_loads_aliases_and_all(tmp_path):
    deep = []
    for _ in range(60):   # 64 levels with the top mapping, tracker and options: the limit
        deep = [deep]
    c = load_config(_yaml(tmp_path, "tracker:\n  options: {max_age: 5, deep: " + "[" * 61 + "]" * 61 + "}\n"
                                    "zones:\n"
                                    "  - {name: a, points: [[0, 0], [1, 0], [1, 1]], classes: &p [person, car]}\n"
                                    "  - {name: b, points: [[0, 0], [1, 0], [1, 1]], classes: *p}\n"))
    assert c.tracker.options == {"max_age": 5, "deep": deep} and c.zones[1].classes == ["person", "car"]
    assert parse_scalar(_bomb()) == _bomb()   # --set: a refused value stays the text it was
    assert parse_scalar("[1, *x]") == "[1, *x]" and parse_scalar("[0, 2]") == [0, 2]
