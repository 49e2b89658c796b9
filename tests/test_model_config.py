"""The one model configuration type: ModelSpec from YAML mappings and flags, validation naming
the key and the allowed values, resolution (zoo default, files, class names), and the class
parser shared by both command lines."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trackpipe.models.classes import coco_names_path, parse_classes, read_names, split_classes
from trackpipe.models.cli_args import add_model_args, spec_from_args
from trackpipe.models.errors import ModelConfigError, ModelError, check_dir, check_file
from trackpipe.models.registry import BACKENDS, PRECISIONS
from trackpipe.models.spec import KEYS, ModelSpec, names_for_cfg
from trackpipe.models.zoo import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
ASSETS = (ROOT / ".." / "shared" / "assets").resolve()
FASTEST = ASSETS / "darknet" / "yolo-fastest-1.1_coco"
XL_CFG, XL_WEIGHTS = FASTEST / "yolo-fastest-1.1-xl.cfg", FASTEST / "yolo-fastest-1.1-xl.weights"
COCO = read_names(coco_names_path())


# --- from_mapping / to_mapping / override ---------------------------------------------------------

def test_mapping_round_trip_and_yaml_keys(tmp_path):
    data = {"cfg": "m/x.cfg", "weights": "m/x.weights", "names": "/abs/coco.names", "size": "416x320",
            "backend": "onnx", "precision": "int8", "conf": 0.3, "nms": 0.5, "classes": "person, 2",
            "max_det": 100, "letterbox": True, "calib": "calib", "threads": 2, "cache_dir": "/tmp/c"}
    spec = ModelSpec.from_mapping(data, base_dir=tmp_path)
    assert spec.cfg == tmp_path / "m" / "x.cfg" and spec.names == Path("/abs/coco.names")
    assert spec.calib == tmp_path / "calib" and spec.cache_dir == Path("/tmp/c")  # cache_dir: not a model file
    assert spec.size == (416, 320) and spec.classes == ("person", 2) and spec.conf_threshold == 0.3
    m = spec.to_mapping()
    assert list(m) == list(KEYS) and m["size"] == [416, 320] and m["classes"] == ["person", 2]
    assert ModelSpec.from_mapping(m) == spec
    assert ModelSpec.from_mapping(yaml.safe_load(yaml.safe_dump(m))) == spec
    assert ModelSpec.from_mapping({"size": 320}).to_mapping()["size"] == 320
    # unset (the model's own size): left out, null, or the spec's own (0, 0); the bounds are inclusive
    assert ModelSpec.from_mapping({"size": None}).size == ModelSpec().size == (0, 0)
    assert ModelSpec.from_mapping({"size": "32x4096"}).size == (32, 4096)


@pytest.mark.parametrize("data, message", [
    ({"bakend": "onnx"}, "unknown key 'model.bakend' (allowed: model, cfg, weights, names, size, backend, "),
    ({"backend": "cuda"}, "model.backend: invalid value 'cuda' (allowed: " + ", ".join(BACKENDS) + ")"),
    ({"precision": "fp8"}, "model.precision: invalid value 'fp8' (allowed: fp32, fp16, int8, bf16, auto)"),
    ({"model": "yolov9"}, "model.model: invalid value 'yolov9' (allowed: yolo-fastest-1.1-xl, "),
    ({"conf": 1.5}, "model.conf: 1.5 is outside [0, 1]"),
    ({"conf": "high"}, "model.conf: expected a number, got 'high'"),
    ({"nms": 0}, "model.nms: 0.0 is outside (0, 1]"),
    ({"size": 300}, "model.size: must be multiples of 32 (the models' largest stride) from 32 to 4096, got 300x300"),
    ({"size": 32000}, "model.size: must be multiples of 32 (the models' largest stride) from 32 to 4096, got "
                      "32000x32000"),
    ({"size": 0}, "model.size: must be multiples of 32 (the models' largest stride) from 32 to 4096, got 0x0 "
                  "(leave size out for the model's own)"),
    ({"size": "0x0"}, "model.size: must be multiples of 32"),
    ({"size": [320, 0]}, "model.size: must be multiples of 32"),
    ({"size": "4128x320"}, "model.size: must be multiples of 32"),
    ({"conf": float("nan")}, "model.conf: nan is outside [0, 1]"),
    ({"size": "big"}, "model.size: expected N or WxH, got 'big'"),
    ({"threads": -1}, "model.threads: -1 is outside [0, 1024]"),
    ({"threads": 1.5}, "model.threads: expected an integer, got 1.5"),
    ({"max_det": 0}, "model.max_det: 0 is outside [1, 100000]"),
    ({"letterbox": "yes"}, "model.letterbox: expected true or false, got 'yes'"),
    ({"classes": [True]}, "model.classes: expected class ids or names, got True"),
    ({"classes": []}, "model.classes: empty list"),
    ({"cfg": "a.cfg"}, "model.cfg and weights go together"),
    ({"model": "yolov4", "cfg": "a.cfg", "weights": "a.weights"}, "model.model and model.cfg/weights: give one"),
    ({"cfg": 3, "weights": "w"}, "model.cfg: expected a file path, got 3"),
    ({"backend": 1}, "model.backend: expected a string, got 1"),
])
def test_bad_values_name_the_key_and_what_is_allowed(data, message):
    with pytest.raises(ModelConfigError) as e:
        ModelSpec.from_mapping(data)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, ModelError)


def test_registry_is_the_one_list():
    assert BACKENDS[0] == "auto" and {"onnx", "openvino", "tf", "opencv", "tensorrt", "tftrt"} <= set(BACKENDS)
    assert PRECISIONS == ("fp32", "fp16", "int8", "bf16", "auto")
    from trackpipe.models import factory
    assert set(factory._BACKENDS) <= set(BACKENDS), "a backend the factory builds is missing from the registry"


def test_override_precedence_model_versus_files():
    files = ModelSpec.from_mapping({"cfg": "a.cfg", "weights": "a.weights", "names": "a.names", "conf": 0.4})
    named = files.override({"model": "yolov4-tiny"})  # a --model replaces the config's cfg/weights/names
    assert (named.model, named.cfg, named.weights, named.names, named.conf_threshold) == (
        "yolov4-tiny", None, None, None, 0.4)
    back = named.override({"cfg": "b.cfg", "weights": "b.weights"})  # --cfg/--weights replace its model
    assert (back.model, back.cfg, back.names) == (None, Path("b.cfg"), None)
    assert named.override({"cfg": None, "backend": None}) == named  # None: not given
    assert files.override({"cfg": "c.cfg"}).weights == Path("a.weights")


def test_a_spec_crosses_process_boundaries_unchanged():
    import pickle
    spec = ModelSpec(cfg=XL_CFG, weights=XL_WEIGHTS, classes=(0, 2), size=(416, 320), extra={"k": 1})
    back = pickle.loads(pickle.dumps(spec))
    assert back == spec and back.extra == {"k": 1} and hash(back) == hash(spec)


def test_defaults_mean_the_zoo_default_model():
    spec = ModelSpec()
    assert spec.model_name == DEFAULT_MODEL == "yolo-fastest-1.1-xl" and not spec.is_resolved
    assert ModelSpec(cfg="a.cfg", weights="a.weights").model_name is None
    assert ModelSpec(size=320).size == (320, 320) and ModelSpec(classes="0,2").classes == (0, 2)


def test_shipped_configs_load_and_never_point_at_shared():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        text = path.read_text()
        assert "shared" not in text.replace("shared-memory", ""), path.name
        section = (yaml.safe_load(text) or {}).get("model")
        spec = ModelSpec.from_mapping(section, base_dir=path.parent, where=f"{path.name}: model")
        assert spec.cfg is None and spec.model_name, path.name  # named models: no file paths in presets


# --- resolve --------------------------------------------------------------------------------------

def test_resolve_default_model_from_the_seeded_cache(model_cache):
    spec = ModelSpec(classes=("person", "car", 16)).resolve(progress=False)
    assert spec.model == DEFAULT_MODEL and spec.size == (320, 320) and spec.names == coco_names_path()
    assert spec.cfg == coco_names_path().with_name("yolo-fastest-1.1-xl.cfg") and spec.weights.is_file()  # packaged
    assert spec.classes == (0, 2, 16) and spec.is_resolved
    assert spec.resolve() == spec
    assert ModelSpec(model="yolo-fastest-1.1", size=416).resolve().size == (416, 416)


def test_resolve_file_checks_say_directory_not_missing(tmp_path):
    def err(**kw):
        with pytest.raises(ModelError) as e:
            ModelSpec(**kw).resolve()
        return str(e.value)

    assert err(cfg=XL_CFG, weights=tmp_path) == f"weights file {tmp_path} is a directory, not a file"
    assert err(cfg=tmp_path, weights=XL_WEIGHTS) == f"cfg file {tmp_path} is a directory, not a file"
    assert err(cfg=XL_CFG, weights=tmp_path / "no.weights") == f"weights file not found: {tmp_path / 'no.weights'}"
    assert err(cfg=XL_CFG, weights=XL_WEIGHTS, names=tmp_path) == f"names file {tmp_path} is a directory, not a file"
    assert err(cfg=XL_CFG, weights=XL_WEIGHTS, calib=XL_CFG) == (
        f"calibration directory {XL_CFG} is a file, not a directory")
    assert err(cfg=XL_CFG, weights=XL_WEIGHTS, calib=tmp_path / "c") == (
        f"calibration directory not found: {tmp_path / 'c'}")
    assert check_file(XL_CFG, "cfg file") == XL_CFG and check_dir(tmp_path, "d") == tmp_path


def test_names_default_for_a_cfg(tmp_path):
    assert names_for_cfg(XL_CFG) == ASSETS / "darknet" / "data" / "coco.names"  # ../data/coco.names
    lone = tmp_path / "lone" / "xl.cfg"
    lone.parent.mkdir()
    lone.write_text(XL_CFG.read_text())
    assert names_for_cfg(lone) == coco_names_path()  # 80 classes, no names file near it
    (tmp_path / "coco.names").write_text("a\nb\n")
    cfg = tmp_path / "two.cfg"
    cfg.write_text("[net]\n[yolo]\nclasses=2\n")
    assert names_for_cfg(cfg) == tmp_path / "coco.names"
    (tmp_path / "coco.names").unlink()
    assert names_for_cfg(cfg) is None  # numbered classes
    spec = ModelSpec(cfg=lone, weights=XL_WEIGHTS, classes="dog").resolve()
    assert spec.names == coco_names_path() and spec.classes == (16,)


# --- classes ----------------------------------------------------------------------------------------

def test_parse_classes_ids_names_and_errors():
    assert parse_classes("person,car", COCO) == (0, 2)
    assert parse_classes("0, 2", None) == (0, 2) and parse_classes([2, "Person", "car"], COCO) == (2, 0)
    assert parse_classes(None, COCO) is None and split_classes(" dog ,7") == ("dog", 7)
    with pytest.raises(ModelConfigError, match=r"unknown class 'persn' \(did you mean 'person'\?\); known: person, "):
        parse_classes("persn", COCO)
    with pytest.raises(ModelConfigError, match=r"unknown class 'zebra-crossing'; known: .* \(80 names\) or ids 0-79"):
        parse_classes("zebra-crossing", COCO)
    with pytest.raises(ModelConfigError, match=r"class id 80 is out of range \(0-79\)"):
        parse_classes("80", COCO)
    with pytest.raises(ModelConfigError, match="'dog' is a name, but the model has no names file"):
        parse_classes("dog", None)
    with pytest.raises(ModelConfigError, match="class id -1 is negative"):
        parse_classes([-1], COCO)


def test_read_names(tmp_path):
    (tmp_path / "n.names").write_text("a\n\nb\n")
    assert read_names(tmp_path / "n.names") == ["a", "b"] and read_names(None, 3) == ["0", "1", "2"]
    with pytest.raises(ModelError, match="2 names but the cfg has 3 classes"):
        read_names(tmp_path / "n.names", 3)
    with pytest.raises(ModelError, match="names file .* is a directory, not a file"):
        read_names(tmp_path)


# --- flags -------------------------------------------------------------------------------------------

def _parse(argv, defaults=False):
    p = argparse.ArgumentParser()
    add_model_args(p, defaults=defaults)
    return p.parse_args(argv)


def test_spec_from_flags_over_a_config_spec():
    base = ModelSpec.from_mapping({"backend": "opencv", "conf": 0.4, "classes": ["car"]})
    spec = spec_from_args(_parse(["--conf", "0.3", "--size", "416", "--max-det", "50"]), base=base, resolve=False)
    assert (spec.backend, spec.conf_threshold, spec.size, spec.classes) == ("opencv", 0.3, (416, 416), ("car",))
    assert spec.max_det == 50
    spec = spec_from_args(_parse(["--cfg", str(XL_CFG), "--weights", str(XL_WEIGHTS)]), classes="dog,person")
    assert spec.model is None and spec.classes == (16, 0) and read_names(spec.names) == COCO
    assert spec_from_args(_parse([], defaults=True), resolve=False) == ModelSpec()
    with pytest.raises(ModelConfigError, match="give either --model or --cfg/--weights, not both"):
        spec_from_args(_parse(["--model", "yolov4", "--cfg", "a.cfg"]))
    with pytest.raises(ModelConfigError, match=r"^--conf: 1.5 is outside \[0, 1\]$"):
        spec_from_args(_parse(["--conf", "1.5"]))
    with pytest.raises(ModelConfigError, match="^cfg and weights go together"):
        spec_from_args(_parse(["--cfg", "a.cfg"]))


def test_help_lists_every_allowed_value():
    p = argparse.ArgumentParser(prog="x")
    add_model_args(p)
    text = " ".join(p.format_help().split())
    for word in (*BACKENDS, *PRECISIONS, "yolo-fastest-1.1-xl", "yolov4-tiny", "$TRACKPIPE_CACHE", "--letterbox",
                 "multiples of 32", "default 0.25", "default 0.45", "[tf] extra"):
        assert word in text, word
    with pytest.raises(SystemExit):
        _parse(["--model", "yolov9"])


def _models_cli(*args):
    return subprocess.run([sys.executable, "-m", "trackpipe.models", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_models_detect_accepts_class_names_with_the_default_model():
    """No model flag: the zoo default from the (seeded) cache; --classes by name."""
    r = _models_cli("detect", "--image", ASSETS / "darknet" / "data" / "dog.jpg", "--classes", "dog,bicycle",
                    "--backend", "onnx", "--json")
    assert r.returncode == 0, r.stderr
    assert [d["class_name"] for d in json.loads(r.stdout.splitlines()[-1])] == ["dog", "bicycle"]
    r = _models_cli("detect", "--image", ASSETS / "darknet" / "data" / "dog.jpg", "--classes", "dgo")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "unknown class 'dgo' (did you mean 'dog'?)" in r.stderr
    r = _models_cli("detect", "--image", ASSETS / "darknet" / "data" / "dog.jpg", "--cfg", XL_CFG,
                    "--weights", FASTEST)
    assert r.returncode == 2 and r.stderr.strip() == f"error: weights file {FASTEST} is a directory, not a file"
