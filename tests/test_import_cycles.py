"""No import cycles in trackpipe.models, trackpipe.trackers and trackpipe.pipeline.

Static: every ``import`` / ``from ... import`` of every module (at the top and inside
functions alike: a cycle hidden in a function is still a cycle of the design) is resolved to
the module it loads, and the module graph must be acyclic.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"trackpipe.models": ROOT / "models", "trackpipe.trackers": ROOT / "trackers",
            "trackpipe.pipeline": ROOT / "pipeline"}


def _modules() -> Dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for f in folder.rglob("*.py"):
            rel = f.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = f
    return out


def _resolve(name: str, modules: Dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in modules:
            return cand
    return None


def _canonical(name: str) -> str:
    """The repository's folders may also be imported by their folder names (``models.x``)."""
    for pkg in PACKAGES:
        short = pkg.split(".", 1)[1]
        if name == short or name.startswith(short + "."):
            return "trackpipe." + name
    return name


def import_graph() -> Dict[str, Set[str]]:
    modules = _modules()
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        here = mod if is_pkg else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [_canonical(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = _canonical(node.module or "")
                # ``from pkg import sub`` loads pkg.sub; ``from mod import name`` loads mod
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
            for t in targets:
                r = _resolve(t, modules)
                # a module's own packages are loaded before it: importing from them is no cycle
                if r is not None and r != mod and not mod.startswith(r + "."):
                    graph[mod].add(r)
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycles(package):
    """The whole graph of the three packages is checked; each test reports the cycles that
    touch its package (a cycle across packages fails each package it touches)."""
    graph = import_graph()
    assert len(graph) > 50 and "trackpipe.pipeline.runtime.supervisor" in graph
    cycles = [c for c in find_cycles(graph) if any(m == package or m.startswith(package + ".") for m in c)]
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle():
    """The checker itself: a two-module cycle and a function-level import are found."""
    g = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert find_cycles(g) == [["a", "b"]]
    assert "trackpipe.pipeline.runtime.supervisor" in import_graph()["trackpipe.pipeline.runtime.app"]
    # resolution of a lazy import inside a function body (render imports its Qt display mode there)
    assert "trackpipe.pipeline.stages.render_qt" in import_graph()["trackpipe.pipeline.stages.render"]
