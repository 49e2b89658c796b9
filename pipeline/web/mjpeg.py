"""The MJPEG stream's wire format (multipart/x-mixed-replace), writing and reading.

Each part::

    --trackpipe-frame\\r\\n
    Content-Type: image/jpeg\\r\\n
    Content-Length: N\\r\\n
    X-Frame-Seq: 1234\\r\\n                 the frame's seq
    X-Frame-Time: 1712345678.123456\\r\\n   its capture time (time.time())
    \\r\\n
    <N bytes of JPEG>\\r\\n
"""

from __future__ import annotations

from typing import BinaryIO

BOUNDARY = "trackpipe-frame"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


def mjpeg_part(jpeg: bytes, seq: int, t: float) -> bytes:
    """One part, ready to write."""
    head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
            f"X-Frame-Seq: {seq}\r\nX-Frame-Time: {t:.6f}\r\n\r\n").encode()
    return head + jpeg + b"\r\n"


def read_mjpeg_part(f: BinaryIO) -> tuple[dict[str, str], bytes] | None:
    """The next part of a stream opened for reading (a socket's ``makefile("rb")``, an HTTP
    response): (headers with lower-case names, JPEG bytes), or None at the end of the stream."""
    line = f.readline()
    while line in (b"\r\n", b"\n"):
        line = f.readline()
    if not line:
        return None
    if line.strip() != f"--{BOUNDARY}".encode():
        raise ValueError(f"expected the boundary, got {line[:60]!r}")
    headers: dict[str, str] = {}
    while True:
        line = f.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers["content-length"])
    body = f.read(n)
    if len(body) < n:
        return None
    f.readline()                       # the CRLF after the body
    return headers, body
