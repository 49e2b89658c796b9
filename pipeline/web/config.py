"""``WebConfig``: where the live view listens, its token and its stream limits."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

TOKEN_ENV = "TRACKPIPE_HTTP_TOKEN"


class WebConfigError(ValueError):
    """A bad web setting; the message names the setting and what is allowed."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebConfig:
    """host:               address to bind; anything but loopback needs a token
    port:                  TCP port; 0 picks a free one (``WebServer.port`` tells which)
    token:                 required bearer token; None: $TRACKPIPE_HTTP_TOKEN, else no auth (loopback only)
    max_fps:               MJPEG frames per second per camera at most (encoded once for all viewers)
    jpeg_quality:          1..100 (cv2.IMWRITE_JPEG_QUALITY)
    max_stream_clients:    open MJPEG + SSE connections at most; more get 503
    write_timeout_s:       a client that takes longer than this to accept one part is disconnected
    keepalive_s:           interval of the ``: ping`` comment on an idle event stream (keeps proxies
                           from closing it; a client that left without a word is noticed by then at the latest)
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    max_fps: float = 15.0
    jpeg_quality: int = 80
    max_stream_clients: int = 32
    write_timeout_s: float = 10.0
    keepalive_s: float = 5.0

    def resolved(self, env: Mapping[str, str] = os.environ) -> WebConfig:
        """Checked copy with the token taken from ``env`` when not set; raises WebConfigError."""
        token = self.token if self.token else (env.get(TOKEN_ENV) or None)
        if not 0 <= int(self.port) <= 65535:
            raise WebConfigError(f"--http-port (output.http_port) must be 0..65535, got {self.port}")
        if not self.max_fps > 0:
            raise WebConfigError(f"WebConfig.max_fps must be > 0, got {self.max_fps}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise WebConfigError(f"WebConfig.jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if int(self.max_stream_clients) < 1:
            raise WebConfigError(f"WebConfig.max_stream_clients must be >= 1, got {self.max_stream_clients}")
        if not (self.write_timeout_s > 0 and self.keepalive_s > 0):
            raise WebConfigError("WebConfig.write_timeout_s and keepalive_s must be > 0")
        if token is not None and len(token) < 8:
            raise WebConfigError("--http-token (output.http_token) must be at least 8 characters")
        if not is_loopback(self.host) and token is None:
            raise WebConfigError(f"--http-host {self.host} exposes the live view beyond this machine: "
                                 f"set a token: --http-token TOKEN (output.http_token) or ${TOKEN_ENV}")
        return WebConfig(self.host, int(self.port), token, float(self.max_fps), int(self.jpeg_quality),
                         int(self.max_stream_clients), float(self.write_timeout_s), float(self.keepalive_s))

    def __repr__(self) -> str:               # never print the token
        return (f"WebConfig(host={self.host!r}, port={self.port}, token={'set' if self.token else None}, "
                f"max_fps={self.max_fps}, jpeg_quality={self.jpeg_quality}, "
                f"max_stream_clients={self.max_stream_clients})")
