"""The layers of trackpipe.pipeline point one way (static, over the import graph of
`test_import_cycles`, lazy imports included):

    runtime (the parent: supervisor, settings builder)   cli, capture_cli
        └─▶ stages (the processes)
              └─▶ common, config, display, drawing, events, media, motion, profiling,
                  recording, transport, video, web (libraries)
                        └─▶ trackpipe.models, trackpipe.trackers (never the pipeline)
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Set, Tuple

from test_import_cycles import import_graph

PIPELINE = "trackpipe.pipeline"
ORCHESTRATION = ("runtime", "cli", "capture_cli", "__main__")
LIBRARIES = ("common", "config", "display", "drawing", "errors", "events", "media", "motion", "profiling",
             "recording", "transport", "video", "web")


def part(module: str) -> str:
    """The pipeline's sub-package (or top-level module) of ``module``; "" outside the pipeline."""
    if not module.startswith(PIPELINE + "."):
        return ""
    return module[len(PIPELINE) + 1:].split(".")[0]


def upward(graph: Dict[str, Set[str]], lower: Iterable[str], upper: Iterable[str]) -> List[Tuple[str, str]]:
    """Imports from a module of the ``lower`` parts into one of the ``upper`` parts."""
    lower, upper = set(lower), set(upper)
    return sorted((m, d) for m, deps in graph.items() if part(m) in lower for d in deps if part(d) in upper)


def test_stages_never_import_the_orchestration():
    assert upward(import_graph(), ["stages"], ORCHESTRATION) == []


def test_libraries_never_import_the_stages_or_the_orchestration():
    assert upward(import_graph(), LIBRARIES, ("stages", *ORCHESTRATION)) == []


def test_models_and_trackers_never_import_the_pipeline():
    graph = import_graph()
    bad = sorted((m, d) for m, deps in graph.items() if m.startswith(("trackpipe.models", "trackpipe.trackers"))
                 for d in deps if d.startswith(PIPELINE))
    assert bad == []


def test_every_pipeline_package_has_a_layer():
    """A new package of the pipeline is given its place here (or the checks above miss it)."""
    parts = {part(m) for m in import_graph() if m.startswith(PIPELINE + ".")}
    assert parts <= {"stages", *ORCHESTRATION, *LIBRARIES}, parts - {"stages", *ORCHESTRATION, *LIBRARIES}


def test_the_checker_sees_an_upward_import():
    g = {"trackpipe.pipeline.stages.x": {"trackpipe.pipeline.runtime.shared"},
         "trackpipe.pipeline.runtime.y": {"trackpipe.pipeline.stages.x"}}
    found = upward(g, ["stages"], ORCHESTRATION)
    assert found == [("trackpipe.pipeline.stages.x", "trackpipe.pipeline.runtime.shared")]
    assert upward(g, ["runtime"], ["stages"]) != [] and upward(g, LIBRARIES, ["stages"]) == []
