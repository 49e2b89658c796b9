"""Installed layout: models/, trackers/ and pipeline/ live under the `trackpipe` namespace only."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = ("models", "trackers", "pipeline")


def _declared() -> tuple[list[str], dict[str, str]]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return cfg["packages"], cfg["package-dir"]


def test_package_list_names_every_package_folder():
    packages, package_dir = _declared()
    tree = sorted("trackpipe." + ".".join(p.parent.relative_to(ROOT).parts)
                  for top in TOP for p in (ROOT / top).rglob("__init__.py"))
    assert sorted(packages) == tree, "pyproject.toml [tool.setuptools] packages is out of date"
    assert package_dir == {f"trackpipe.{t}": t for t in TOP}


def test_installed_names_are_namespaced():
    import trackpipe.models.types as types
    import trackpipe.trackers.base as base

    assert Path(types.__file__).resolve() == ROOT / "models" / "types.py"
    assert Path(base.__file__).resolve() == ROOT / "trackers" / "base.py"
    assert "models" not in sys.modules or Path(sys.modules["models"].__file__).resolve().parent == ROOT / "models"
