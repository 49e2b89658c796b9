"""What `pip install -e .` brings: the default path needs no extra; heavy libraries are extras,
and a missing one is one line naming the pip command."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from trackpipe.models.errors import BackendUnavailable, MissingExtra, install_hint, require

ROOT = Path(__file__).resolve().parents[1]
ASSETS = (ROOT / ".." / "shared" / "assets").resolve()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRA_ONLY = ("tensorflow", "tensorrt", "PySide6", "pycocotools", "motmetrics", "filterpy")


def _dist(req: str) -> str:
    return req.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("!")[0].strip().lower()


def test_heavy_libraries_are_extras_not_base():
    base = {_dist(r) for r in PROJECT["project"]["dependencies"]}
    for lib in (*EXTRA_ONLY, "pandas", "pyside6-essentials", "tensorflow-cpu"):
        assert lib.lower() not in base, lib
    extras = PROJECT["project"]["optional-dependencies"]
    assert {_dist(r) for r in extras["tf"]} == {"tensorflow"}
    assert {"pycocotools", "motmetrics"} <= {_dist(r) for r in extras["eval"]}
    assert {"tf", "eval", "gui", "tensorrt", "dev"} <= set(extras)


def test_coco_names_is_package_data():
    tool = PROJECT["tool"]["setuptools"]
    assert "trackpipe.models.data" in tool["packages"]
    assert any(fnmatch.fnmatch("coco.names", pat) for pat in tool["package-data"]["trackpipe.models.data"])
    assert (ROOT / "models" / "data" / "coco.names").is_file()


def test_require_names_the_pip_command():
    assert require("json", "x", "y").dumps([]) == "[]"
    with pytest.raises(MissingExtra) as e:
        require("trackpipe_no_such_library", "tf", "the tf backend")
    assert str(e.value) == ('the tf backend needs trackpipe_no_such_library, which is not installed: '
                            'pip install -e ".[tf]"')
    assert isinstance(e.value, BackendUnavailable) and install_hint("eval") == 'pip install -e ".[eval]"'
    assert isinstance(e.value, ModuleNotFoundError) and e.value.name == "trackpipe_no_such_library"


def test_require_does_not_hide_a_broken_library(tmp_path, monkeypatch):
    (tmp_path / "brokenlib").mkdir()
    (tmp_path / "brokenlib" / "__init__.py").write_text("import trackpipe_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="trackpipe_missing_dependency"):
        require("brokenlib", "tf", "the tf backend")


def test_missing_tensorflow_is_one_line_naming_the_extra():
    code = textwrap.dedent("""
        import sys
        sys.modules["tensorflow"] = None          # as if the [tf] extra were not installed
        from trackpipe.models.errors import require, MissingExtra
        try:
            require("tensorflow", "tf", "the tf backend")
        except MissingExtra as e:
            print(e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == 'the tf backend needs TensorFlow, which is not installed: pip install -e ".[tf]"'


def test_default_path_runs_without_any_extra():
    """The default model (from the seeded cache) detects on a real image with every extra's
    library made unimportable, and none of them is imported on the way."""
    code = textwrap.dedent(f"""
        import sys
        for m in {EXTRA_ONLY + ("pandas",)!r}:
            sys.modules[m] = None
        import cv2
        from trackpipe.models.spec import ModelSpec
        from trackpipe.models.factory import build_detector
        spec = ModelSpec(backend="onnx", classes="dog").resolve(progress=False)
        with build_detector(spec) as det:
            dets = det.detect(cv2.imread({str(ASSETS / "darknet" / "data" / "dog.jpg")!r}))
        print(spec.model, [det.names[c] for c in dets.class_id])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "yolo-fastest-1.1-xl ['dog']"


def test_models_evaluate_without_the_eval_extra_is_one_line():
    code = ("import sys; sys.modules['pycocotools'] = None; from trackpipe.models.__main__ import main; "
            "sys.exit(main(['evaluate', '--coco-json', 'x.json', '--images', 'x']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == ('error: python -m models evaluate needs pycocotools, which is not installed: '
                        'pip install -e ".[eval]"\n')
