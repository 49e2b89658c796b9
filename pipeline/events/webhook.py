"""Webhooks: an HTTP POST of each event's JSON to one URL (stdlib urllib, no extra dependency).

    hook = WebhookSender(WebhookConfig(url="http://127.0.0.1:8080/hook")).start()
    hook.offer(event)            # never blocks; False if an older event was dropped
    hook.close(timeout=5.0)      # sends what is queued for up to 5 s

Order is kept: one request at a time, the head of the queue is retried until it is sent
(2xx), refused for good (4xx other than 408/429) or pushed out. With the outbox (the default,
``config.outbox``) the head is the oldest event in this URL's outbox file, which outlasts the
run: a URL that never answered gets those events first, in order, from the next run. Retried: connection errors,
timeouts, 5xx, 408 and 429, with capped exponential backoff and jitter. At least once while
an event fits in the queue: a request that timed out after the server took it is sent again,
so receivers should de-duplicate on the event's ``id``. The URL's user, password and query and
every header value stay out of the logs.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
from typing import Any, List, Tuple
from urllib.parse import urlsplit

from .config import WebhookConfig
from .delivery import Backoff, Delivery, PermanentError, RetryableError
from .outbox import OutboxConfig, target_key
from .schema import event_dict

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 429}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):   # a POST is not replayed to another URL
        return None


class WebhookSender(Delivery):
    @classmethod
    def configs(cls, cfg: Any, cameras: Any = (), append: bool = False) -> List[WebhookConfig]:
        """The run's ``webhooks`` (`events.targets`): one target each."""
        return list(getattr(cfg, "webhooks", None) or [])

    def __init__(self, config: WebhookConfig):
        self.config = config
        self._url, basic = config.request_url_and_auth()
        u = urlsplit(self._url)
        key = target_key("webhook", u.hostname or "", u.port or (443 if u.scheme == "https" else 80),
                         f"{config.url}")   # the whole URL: its query and user make another target
        super().__init__(f"webhook {config.safe_url}", {"event": config.queue_size},
                         Backoff(config.backoff_initial_s, config.backoff_max_s),
                         OutboxConfig.parse(getattr(config, "outbox", None)), key)
        self._headers = {"Content-Type": "application/json", "User-Agent": "trackpipe",
                         **({"Authorization": basic} if basic else {}), **config.resolved_headers()}
        self._opener = urllib.request.build_opener(_NoRedirect)

    def offer(self, event: Any, lane: str = "event") -> bool:
        """Queue one event (an Event or a dict); events of types not in ``config.events`` are
        ignored (True)."""
        kinds = self.config.events
        if kinds is not None:
            kind = event.get("event") if isinstance(event, dict) else getattr(event, "event", None)
            if kind not in kinds:
                return True
        return super().offer(event, lane)

    def _encode(self, item: Any) -> Tuple[str, bytes]:
        return "", json.dumps(event_dict(item), separators=(",", ":")).encode()

    def _send(self, lane: str, item: Any) -> None:
        req = urllib.request.Request(self._url, data=item.body, headers=self._headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.config.timeout_s) as resp:
                resp.read(65536)
                status = resp.status
        except urllib.error.HTTPError as e:
            status = e.code
            e.close()
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise RetryableError(f"no answer within {self.config.timeout_s:g}s") from None
            raise RetryableError(f"cannot connect: {reason}") from None
        if 200 <= status < 300:
            return
        if status >= 500 or status in RETRY_STATUS:
            raise RetryableError(f"HTTP {status}")
        raise PermanentError(f"HTTP {status}")
