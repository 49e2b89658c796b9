"""Errors with a message fit for one line on stderr."""


class ModelError(Exception):
    """A user-facing problem with a model file, cfg, weights or backend."""


class UnsupportedLayerError(ModelError):
    """A darknet cfg section this project cannot build."""


class WeightsError(ModelError):
    """A .weights file that does not match its cfg."""


class BackendUnavailable(ModelError):
    """A backend whose library, device or version is missing."""
