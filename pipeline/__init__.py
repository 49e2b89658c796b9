"""Processes and transport of the detection and tracking pipeline.

    transport/   shared-memory frame ring, ZeroMQ bus, typed messages (messages.py)
    stages/      the stage processes: capture (+ live/), infer, track, render, sink
    media/       sources, sinks (video, window, MOT, events), snapshots
    display/     the display hosted by render: window | overlay | mirror | none
    profiling/   per-stage stats, aggregation, report, live table, metrics
    runtime/     inputs, topology, process construction, supervisor, watchdog, signals, clean-up
    config.py    typed configuration; errors.py: one-line errors; cli.py, capture_cli.py: commands

``run(config, spec)`` runs one pipeline and returns its exit code; ``run_pipeline`` returns a
`RunResult`. Importing this package is cheap; stage modules are imported by the processes
that need them.
"""

from .config import Config, load_config  # noqa: F401
from .errors import ConfigError, PipelineError, SourceError  # noqa: F401


def run(config, spec, detector_factory=None) -> int:
    """Run one pipeline; -> its exit code (see `runtime.app.run`)."""
    from .runtime.app import run as _run
    return _run(config, spec, detector_factory)


def run_pipeline(config, spec, detector_factory=None, on_tick=None):
    """Run one pipeline; -> `runtime.app.RunResult` (exit code, error, report, outcome)."""
    from .runtime.app import run_pipeline as _run_pipeline
    return _run_pipeline(config, spec, detector_factory, on_tick)
