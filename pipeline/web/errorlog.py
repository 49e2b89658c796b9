"""``RequestErrorLog``: what the server logs about requests that fail, one short line at a time.

aiohttp logs every request it cannot parse (a 100 KB URL, an oversized header, TLS spoken to a
plain port...) and every exception a handler raises with ``logger.exception``: an ERROR and a
traceback per request, which lets any client that can reach the port fill the log. Passed as the
server's ``logger`` (``AppRunner(..., logger=RequestErrorLog(log))``), this one writes instead:

- a request aiohttp rejected as malformed (``HttpProcessingError``, answered 400): one WARNING line
  (status, reason, cut to ``MAX_REASON`` printable ASCII characters);
- any other exception (a bug of ours, answered 500): one ERROR line, its traceback at DEBUG;

at most one line per ``interval_s``; the lines left out meanwhile are counted, and the next line
says how many there were. ``errors`` counts every failed request (the server's metrics show it).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

MAX_REASON = 160


def printable(text: str, limit: int = MAX_REASON) -> str:
    """``text`` as printable ASCII (anything else escaped), cut to ``limit`` characters."""
    out = text.encode("ascii", "backslashreplace").decode("ascii")
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in out)
    return out if len(out) <= limit else out[:limit] + "..."


class RequestErrorLog:
    """A stand-in for aiohttp's server logger (``aiohttp.server``) that rate-limits
    ``exception()`` to one line per ``interval_s``; ``debug``/``info``/``warning``/``error`` go to
    ``logger`` unchanged."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval_s = float(interval_s)
        self.clock = clock
        self.errors = 0          # every request that failed (parse errors and handler exceptions)
        self.suppressed = 0      # failures not logged since the last line
        self._next = -float("inf")

    def exception(self, msg: str, *args, exc_info=None, **kw) -> None:
        """aiohttp's ``log_exception``: one line (WARNING for a malformed request, ERROR
        otherwise), or nothing but a count within ``interval_s`` of the previous line."""
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        self.errors += 1
        now = self.clock()
        if now < self._next:
            self.suppressed += 1
            return
        self._next = now + self.interval_s
        try:
            what = msg % args if args else msg
        except (TypeError, ValueError):
            what = msg
        if isinstance(exc, HttpProcessingError):
            level = logging.WARNING
            reason = f"{exc.code} {printable(str(exc.message))}"
        elif exc is not None:
            level = logging.ERROR
            reason = f"{type(exc).__name__}: {printable(str(exc))}"
        else:
            level, reason = logging.ERROR, ""
        more = f" ({self.suppressed} more since the previous line, not logged)" if self.suppressed else ""
        self.suppressed = 0
        self.logger.log(level, "live view: %s%s%s", printable(what), f": {reason}" if reason else "", more)
        if level == logging.ERROR and exc is not None and self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("live view: the traceback", exc_info=exc)

    def debug(self, *args, **kw) -> None:
        self.logger.debug(*args, **kw)

    def info(self, *args, **kw) -> None:
        self.logger.info(*args, **kw)

    def warning(self, *args, **kw) -> None:
        self.logger.warning(*args, **kw)

    def error(self, *args, **kw) -> None:
        self.logger.error(*args, **kw)

    def isEnabledFor(self, level: int) -> bool:
        return self.logger.isEnabledFor(level)
