"""``WebServer``: the live view's aiohttp server in a thread of its own, with its own event loop.

    server = WebServer(hub, WebConfig(port=8080), names=class_names).start()
    print(server.url)            # http://127.0.0.1:8080/
    ...
    server.stop()

Nothing here blocks the caller beyond ``start`` (binding the port) and ``stop`` (closing clients).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

from aiohttp import web

from .app import LiveApp
from .auth import RedactedAccessLogger
from .config import WebConfig
from .errorlog import RequestErrorLog
from .provider import LiveViewProvider

log = logging.getLogger(__name__)

# what aiohttp parses of a request at most; beyond, 400 and one rate-limited line (errorlog.py)
MAX_LINE = 8190            # the request line (the URL with its query, the token included)
MAX_FIELD = 8190           # one header
MAX_HEADERS = 64           # header lines


class WebServerError(RuntimeError):
    """The server could not start (port in use, address not available...); one line."""


class WebServer:
    """The live view and HTTP API on ``config.host``:``config.port`` (0: a free port).

    provider: what it shows (a :class:`LiveViewHub` or another :class:`LiveViewProvider`)
    config:   checked with ``WebConfig.resolved()`` here (token from $TRACKPIPE_HTTP_TOKEN); a
              bad one raises ``WebConfigError``
    names:    class names for the box labels; zones: {camera: zones/lines drawn on its frames}
    review:   the recordings' review API to mount (`pipeline.recording.review.ReviewApi`), or None
    """

    def __init__(self, provider: LiveViewProvider, config: WebConfig | None = None, names: Sequence[str] = (),
                 zones: dict[str, list] | None = None, review=None):
        self.cfg = (config or WebConfig()).resolved()
        self.errors = RequestErrorLog(log)
        self.live = LiveApp(provider, self.cfg, names, zones, errors=self.errors, review=review)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when ``config.port`` was 0)."""
        if self._port is None:
            raise RuntimeError("WebServer is not started")
        return self._port

    @property
    def url(self) -> str:
        host = self.cfg.host if ":" not in self.cfg.host else f"[{self.cfg.host}]"
        return f"http://{host}:{self.port}/"

    def start(self, timeout: float = 10.0) -> WebServer:
        """Bind and serve; returns once the port is bound. Raises WebServerError if it cannot."""
        if self._thread is not None:
            raise RuntimeError("WebServer already started")
        self._thread = threading.Thread(target=self._serve, name="trackpipe-web", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise WebServerError(f"the live view did not start within {timeout:g} s")
        if self._error is not None:
            self._thread.join(timeout)
            err = self._error
            msg = getattr(err, "strerror", None) or str(err)
            raise WebServerError(f"cannot serve the live view on {self.cfg.host}:{self.cfg.port}: {msg}") from None
        log.info("live view on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every client and the port; waits up to ``timeout`` s for the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            loop.call_soon_threadsafe(lambda: loop.create_task(self._shutdown(timeout)))
        except RuntimeError:
            pass
        thread.join(timeout)
        if thread.is_alive():
            log.warning("live view thread did not stop within %g s", timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the server thread --------------------------------------------------------------------

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except Exception as e:  # noqa: BLE001 - start() reports it in the caller's thread
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        # handler_cancellation: a client that goes ends its handler at once, so an idle stream
        # (no event, no new frame) frees its slot without waiting for a write to fail
        self._runner = web.AppRunner(self.live.build(), access_log_class=RedactedAccessLogger,
                                     handle_signals=False, shutdown_timeout=1.0, handler_cancellation=True,
                                     logger=self.errors, max_line_size=MAX_LINE, max_field_size=MAX_FIELD,
                                     max_headers=MAX_HEADERS)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self._port = self._runner.addresses[0][1]

    async def _shutdown(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._runner.cleanup(), timeout)
        except Exception:
            log.exception("live view shutdown")
        finally:
            asyncio.get_running_loop().stop()
