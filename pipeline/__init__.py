"""Processes and transport: sources, capture, infer, track, render, sinks, shared-memory
ring, ZeroMQ bus, supervisor, profiling and configuration.

``pipeline.run(config, spec)`` runs one pipeline and returns its exit code. Importing
this package is cheap; stage modules are imported by the processes that need them.
"""

from .app import RunResult, prepare, run, run_pipeline  # noqa: F401
from .config import Config, load_config  # noqa: F401
from .errors import ConfigError, PipelineError, SourceError  # noqa: F401
