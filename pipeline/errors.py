"""Errors whose message is fit for one ``error: ...`` line on stderr."""


class PipelineError(Exception):
    """A user-facing problem running the pipeline (exit code 1)."""

    exit_code = 1


class ConfigError(PipelineError):
    """An invalid configuration file, key or value (exit code 2)."""

    exit_code = 2


class SourceError(PipelineError):
    """A source that does not exist, cannot be opened or cannot be decoded (exit code 2)."""

    exit_code = 2


class StageFailed(PipelineError):
    """A stage process died or stopped heart-beating and could not be restarted (exit code 1)."""
