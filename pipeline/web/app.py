"""The aiohttp application: the page, the JSON API, MJPEG streams, Server-Sent Events, metrics.

    GET /                                   the live page (static/index.html)
    GET /healthz                            {"status": "ok"} (no token needed)
    GET /metrics                            Prometheus: the provider's metrics + the server's own
    GET /api/stats                          the live profile (provider.stats())
    GET /api/counts                         zone and line counts per camera
    GET /api/cameras                        [{name, state, fps, width, height, last_frame_t, seq, since, viewers}]
    GET /api/cameras/{name}/latest.jpg      the newest annotated frame (404 unknown, 503 no frame yet)
    GET /api/cameras/{name}/stream.mjpeg    multipart/x-mixed-replace, <= max_fps
    GET /api/events?since=SEQ&limit=N       {"events": [...], "last_event_seq": n} (400 if malformed)
    GET /api/events/stream?since=SEQ        text/event-stream, one ``data:`` JSON per event, ``id:`` = event_seq

With recording (``review``, `pipeline.recording.review.ReviewApi`): ``GET /review`` (the review page),
``GET /api/events`` without ``since`` (the recorded events), ``/api/events/{id}[/clip.mp4|/snapshot.jpg]``,
``DELETE /api/events/{id}``, ``/api/recordings/{camera}[/export.mp4]`` (docs/recording.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from aiohttp import web

from . import static as static_files
from .auth import token_middleware
from .config import WebConfig
from .errorlog import RequestErrorLog
from .eventlog import jsonable
from .feed import CameraFeed, Pulse, time_limit
from .mjpeg import CONTENT_TYPE as MJPEG_TYPE
from .provider import EVENT, FRAME, LiveViewProvider

log = logging.getLogger(__name__)

STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css",
          "review.html": "text/html", "review.js": "text/javascript"}
NO_STORE = {"Cache-Control": "no-store"}


def _json(data, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=jsonable, separators=(",", ":")), status=status,
                        content_type="application/json", headers=NO_STORE)


MAX_SEQ = 2**62
_DIGITS = frozenset("0123456789")


def parse_uint(raw: str, hi: int = MAX_SEQ) -> int | None:
    """``raw`` as an integer in 0..hi when it is 1 to 19 ASCII digits, else None (``int()`` alone
    takes ``²``, Arabic-Indic digits, spaces and thousands of digits)."""
    if not 0 < len(raw) <= 19 or not _DIGITS.issuperset(raw):
        return None
    v = int(raw)
    return v if v <= hi else None


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    v = parse_uint(raw, hi)
    if v is None or v < lo:
        raise web.HTTPBadRequest(text=f"400: {name} must be an integer in {lo}..{hi}\n")
    return v


def gone(request: web.Request) -> bool:
    """True once the client's connection is closed (a stream loop's check after each wait, in
    case the cancellation of its handler went astray)."""
    t = request.transport
    return t is None or t.is_closing()


def last_event_id(request: web.Request) -> int | None:
    """The ``Last-Event-ID`` header as an event_seq, None without one; 400 unless it is an
    integer in 0..2**62 in ASCII digits (an empty one, as EventSource may send, counts as none)."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None or not raw.strip():
        return None
    v = parse_uint(raw.strip())
    if v is None:
        raise web.HTTPBadRequest(text="400: Last-Event-ID must be an event id: an integer in 0..2**62\n")
    return v


class LiveApp:
    """State of one server: the provider, the per-camera feeds and the streaming clients.

    names: class names for the labels; zones: {camera: zones/lines to draw} (``draw_zones`` input).
    """

    def __init__(self, provider: LiveViewProvider, cfg: WebConfig, names: Sequence[str] = (),
                 zones: dict[str, list] | None = None, errors: RequestErrorLog | None = None, review=None):
        self.provider, self.cfg = provider, cfg
        self.review = review            # the recordings' review API (None: nothing recorded)
        self.errors = errors            # the server's request-error log (its count is a metric)
        self.names, self.zones = list(names), dict(zones or {})
        self.feeds: dict[str, CameraFeed] = {}
        self.events = Pulse()
        self.sse_clients = 0
        self.stream_clients = 0
        self.rejected = 0
        self.closing = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="web-jpeg")
        self._unsubscribe = None
        self._registry, self._gauges = self._own_metrics()
        self._static = {name: (resources.files(static_files) / name).read_bytes() for name in STATIC}

    # --- wiring --------------------------------------------------------------------------------

    def build(self) -> web.Application:
        mws = [token_middleware(self.cfg.token)] if self.cfg.token else []
        app = web.Application(middlewares=mws)
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/static/{file}", self.static)
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics)
        r.add_get("/api/stats", self.stats)
        r.add_get("/api/counts", self.counts)
        r.add_get("/api/cameras", self.cameras)
        r.add_get("/api/cameras/{name}/latest.jpg", self.latest_jpg)
        r.add_get("/api/cameras/{name}/stream.mjpeg", self.stream)
        r.add_get("/api/events", self.events_json)
        r.add_get("/api/events/stream", self.events_stream)
        if self.review is not None:
            r.add_get("/review", self.review_page)
            self.review.add_routes(r, events_list=False)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app) -> None:
        self.loop = asyncio.get_running_loop()
        self._unsubscribe = self.provider.subscribe(self._on_publish)

    async def _on_shutdown(self, app) -> None:
        """Before the connections are closed: end every stream loop."""
        self.closing = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.events.fire()
        for feed in self.feeds.values():
            await feed.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.review is not None:
            self.review.close()

    def _on_publish(self, kind: str, camera: str | None) -> None:
        """Provider listener, on the publisher's thread: wake the loop only if someone waits."""
        loop = self.loop
        if loop is None or self.closing:
            return
        try:
            if kind == FRAME:
                feed = self.feeds.get(camera)
                if feed is not None and feed.viewers > 0:
                    loop.call_soon_threadsafe(feed.wake)
            elif kind == EVENT and self.sse_clients > 0:
                loop.call_soon_threadsafe(self.events.fire)
        except RuntimeError:                 # the loop has closed
            pass

    def _feed(self, request: web.Request) -> CameraFeed:
        name = request.match_info["name"]
        feed = self.feeds.get(name)
        if feed is None:
            if name not in {c.name for c in self.provider.cameras()}:
                raise web.HTTPNotFound(text=f"404: no camera named {name!r}\n")
            feed = self.feeds[name] = CameraFeed(name, self.provider, self.executor, self.names,
                                                 self.cfg.max_fps, self.cfg.jpeg_quality, self.zones.get(name))
        return feed

    def _admit(self) -> None:
        if self.stream_clients >= self.cfg.max_stream_clients:
            self.rejected += 1
            raise web.HTTPServiceUnavailable(text="503: too many live clients\n", headers={"Retry-After": "5"})

    # --- plain resources ----------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._static["index.html"], content_type="text/html", headers=NO_STORE)

    async def review_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._static["review.html"], content_type="text/html", headers=NO_STORE)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in STATIC or name.endswith(".html"):
            raise web.HTTPNotFound()
        return web.Response(body=self._static[name], content_type=STATIC[name], headers=NO_STORE)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def stats(self, request: web.Request) -> web.Response:
        return _json(self.provider.stats())

    async def counts(self, request: web.Request) -> web.Response:
        return _json(self.provider.counts())

    async def cameras(self, request: web.Request) -> web.Response:
        out = []
        for cam in self.provider.cameras():
            feed = self.feeds.get(cam.name)
            out.append({**cam.to_dict(), "viewers": feed.viewers if feed else 0})
        return _json({"cameras": out})

    async def metrics(self, request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        self._update_metrics()
        body = self.provider.metrics() + generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, **NO_STORE})

    async def latest_jpg(self, request: web.Request) -> web.Response:
        jpeg = await self._feed(request).fresh()
        if jpeg is None:
            raise web.HTTPServiceUnavailable(text="503: no frame yet\n", headers={"Retry-After": "1"})
        return web.Response(body=jpeg, content_type="image/jpeg", headers=NO_STORE)

    async def events_json(self, request: web.Request) -> web.Response:
        if self.review is not None and "since" not in request.query:   # the recorded events
            return await self.review.events(request)
        since = _int_param(request, "since", 0, 0, MAX_SEQ)
        limit = _int_param(request, "limit", 1000, 1, 10000)
        return _json({"events": self.provider.events_since(since, limit),
                      "last_event_seq": self.provider.last_event_seq()})

    # --- streams ------------------------------------------------------------------------------

    async def _write(self, resp: web.StreamResponse, data: bytes) -> None:
        """One write; a client that takes longer than write_timeout_s is dropped (TimeoutError)."""
        async with time_limit(self.cfg.write_timeout_s):
            await resp.write(data)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """MJPEG: each viewer sends the feed's newest part when it is ready for one. A slow or
        stalled viewer waits in its own write (bounded by the socket buffers plus one part) and
        skips the parts it missed; nothing queues up for it and no one else waits for it."""
        feed = self._feed(request)
        self._admit()
        resp = web.StreamResponse(headers={"Content-Type": MJPEG_TYPE,
                                           "Cache-Control": "no-store"})
        self.stream_clients += 1
        # the part already encoded goes out at once if it still is the newest frame; else the
        # first part is the encode that watch() asks for
        snap = self.provider.latest(feed.camera)
        fresh = feed.part is not None and snap is not None and snap.seq == feed.seq
        viewer = feed.watch(feed.version - 1 if fresh else feed.version)
        try:
            await resp.prepare(request)
            while not (self.closing or feed.closed or gone(request)):
                if feed.version == viewer.sent:
                    await feed.changed.wait(self.cfg.keepalive_s)
                    continue
                await self._write(resp, feed.sending(viewer))
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            feed.unwatch(viewer)
            self.stream_clients -= 1
        return resp

    async def events_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events after ``Last-Event-ID`` (a reconnect) or ``since``; without either,
        from the newest event on (none of the past). An id ahead of the newest event (a client of
        an earlier run) also starts from now, and the stream says so in a comment. A ``: ping``
        comment goes out every ``keepalive_s`` without an event."""
        since = last_event_id(request)
        if since is None:
            since = _int_param(request, "since", -1, 0, MAX_SEQ)
        self._admit()
        newest = self.provider.last_event_seq()
        note = b""
        if since < 0:
            since = newest
        elif since > newest:
            note = f": event id {since} is ahead of this server's newest ({newest}): events from now on\n\n".encode()
            since = newest
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        self.stream_clients += 1
        self.sse_clients += 1
        try:
            await resp.prepare(request)
            await self._write(resp, b"retry: 2000\n\n" + note)
            while not (self.closing or gone(request)):
                batch = self.provider.events_since(since, 200)
                if batch:
                    chunk = "".join(f"id: {e['event_seq']}\ndata: {json.dumps(e, default=jsonable)}\n\n"
                                    for e in batch)
                    since = batch[-1]["event_seq"]
                    await self._write(resp, chunk.encode())
                    continue
                if not await self.events.wait(self.cfg.keepalive_s) and not self.closing:
                    await self._write(resp, b": ping\n\n")
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self.sse_clients -= 1
            self.stream_clients -= 1
        return resp

    # --- the server's own metrics ----------------------------------------------------------------

    def _own_metrics(self):
        from prometheus_client import CollectorRegistry, Gauge
        reg = CollectorRegistry()
        g = {"viewers": Gauge("trackpipe_web_viewers", "open MJPEG streams", ["camera"], registry=reg),
             "encoded": Gauge("trackpipe_web_frames_encoded_total", "frames drawn and JPEG-encoded", ["camera"],
                              registry=reg),
             "skipped": Gauge("trackpipe_web_frames_skipped_total",
                              "encoded frames a slow viewer did not get (summed over viewers)", ["camera"],
                              registry=reg),
             "sse": Gauge("trackpipe_web_event_clients", "open event streams", registry=reg),
             "rejected": Gauge("trackpipe_web_clients_rejected_total", "live clients refused (max_stream_clients)",
                               registry=reg),
             "failed": Gauge("trackpipe_web_requests_failed_total",
                             "requests that failed: malformed (400) or an error of the server (500)", registry=reg)}
        return reg, g

    def _update_metrics(self) -> None:
        g = self._gauges
        for name, feed in self.feeds.items():
            g["viewers"].labels(name).set(feed.viewers)
            g["encoded"].labels(name).set(feed.encodes)
            g["skipped"].labels(name).set(feed.skipped)
        g["sse"].set(self.sse_clients)
        g["rejected"].set(self.rejected)
        g["failed"].set(self.errors.errors if self.errors is not None else 0)
