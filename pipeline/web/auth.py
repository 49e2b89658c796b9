"""Bearer-token check (constant-time) and an access log that never shows query strings."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

# reachable without the token: says only that the server is up; the page's script and style
# (the same for every install, no data: the page at "/" itself needs the token)
OPEN_PATHS = frozenset({"/healthz"})
OPEN_PREFIX = "/static/"


def request_token(request: web.Request) -> str:
    """``Authorization: Bearer <token>``, else the ``token`` query parameter (for <img>, EventSource)."""
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token", "")


def token_middleware(token: str):
    """401 for every path but ``OPEN_PATHS`` unless the request carries ``token``."""
    expected = token.encode()

    @web.middleware
    async def check_token(request: web.Request, handler):
        open_path = request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIX)
        if not open_path and not hmac.compare_digest(request_token(request).encode(), expected):
            raise web.HTTPUnauthorized(text="401: a valid token is required\n",
                                       headers={"WWW-Authenticate": 'Bearer realm="trackpipe"'})
        return await handler(request)

    return check_token


class RedactedAccessLogger(AbstractAccessLogger):
    """Method, path without the query (the token may be there), status and time, at DEBUG."""

    def log(self, request, response, time: float) -> None:
        self.logger.debug("%s %s %s %.1f ms", request.method, request.path, response.status, 1000.0 * time)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)
