"""Live view and HTTP API for headless runs (see docs/web.md).

The server reads a :class:`LiveViewProvider`; :class:`LiveViewHub` is the provider a pipeline
feeds with ``publish_*`` calls; :class:`WebServer` serves it (aiohttp, its own thread and loop).
aiohttp and OpenCV are imported with ``server``/``app``/``feed``, not by this package.
"""

from .config import TOKEN_ENV, WebConfig, WebConfigError
from .hub import LiveViewHub
from .provider import CameraState, LatestFrame, LiveViewProvider

__all__ = ["TOKEN_ENV", "CameraState", "LatestFrame", "LiveViewHub", "LiveViewProvider", "WebConfig",
           "WebConfigError", "WebServer", "WebServerError"]


def __getattr__(name):
    if name in ("WebServer", "WebServerError"):
        from . import server
        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
