"""Web stage: the live view and HTTP API (`pipeline/web`) in a process of its own.

Nothing upstream ever waits for it:

- track pushes every `Tracked` message and source event to it with a non-blocking send (a
  full queue drops the message, counted by track as ``web_skipped``); the supervisor pushes the
  live profile and the metrics text (`LiveStats`) once a profile period;
- it copies a frame's pixels out of the ring only while someone watches a stream (at most
  ``max_fps`` a second) or when the newest copy is older than ``idle_refresh_s`` (so that
  ``latest.jpg`` and the first MJPEG part are recent). It reads the slot under its seqlock and
  never holds or releases it (render does), so it cannot slow render or infer nor hold back
  capture in lossless mode; a frame whose slot was reused before the copy finished is dropped
  and counted (``drops``; gauge ``late_frames``).

Render never draws on a slot while the live view is on (it draws on a private copy, ~0.5 ms per
1080p frame), so a copy taken after render is still the camera's frame.

The server (aiohttp, its own thread) starts in ``setup`` and logs ``live view on URL`` (the bound
port when ``--http-port 0``), before any frame flows: the page shows the camera as ``starting``.
Source events set a camera's state (``lost`` since the event's time, ``restored``, ``waiting``).
Events are the track stage's (`Tracked.events`, `EndOfStream.events`: ``track_started``/``_ended``,
zone and line events) plus the source events, so they are there with or without ``--events``. They
do not come over the bus: track appends them, numbered, to the run's event log
(`pipeline.web.eventlog`, ``events_of`` below) before it sends the message, and this stage tails
the log; so their ids outlive a restart of this stage and none is lost to a dropped message. The
zone and line counts are the track stage's ``counts`` gauge in the forwarded profile. The camera is
``pipeline.camera`` (the name in the events); its zones and lines are drawn on the frames.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time

import numpy as np
from trackpipe.pipeline.errors import ConfigError
from trackpipe.pipeline.common.shared import StageBoard
from trackpipe.pipeline.transport.bus import WEB
from trackpipe.pipeline.transport.messages import EndOfStream, FrameMeta, LiveStats, SourceEvent, Tracked
from trackpipe.pipeline.transport.ring import FrameRing
from trackpipe.pipeline.web.config import WebConfig, WebConfigError

from .base import RunContext, StageError, StageProcess
from .settings import WebSettings

log = logging.getLogger(__name__)


def web_config(cfg) -> WebConfig:
    """The live view's checked settings from ``cfg.output`` (token from $TRACKPIPE_HTTP_TOKEN when
    not set); a bad one (an exposed host without a token...) raises ConfigError (exit 2)."""
    o = cfg.output
    try:
        return WebConfig(host=o.http_host, port=int(o.http_port or 0), token=o.http_token).resolved()
    except WebConfigError as e:
        raise ConfigError(str(e)) from None


def copy_frame(ring: FrameRing, meta: FrameMeta) -> np.ndarray | None:
    """A private (H, W, 3) uint8 copy of frame ``meta.seq``, or None when its slot no longer holds
    it (reused, or being written). Reads under the slot's seqlock; takes no slot credit."""
    slot, seq = meta.slot, meta.seq
    version = ring.version(slot)
    if version % 2 or ring.seq(slot) != seq:
        return None
    out = np.empty(meta.shape, np.uint8)
    view = ring.frame(slot, meta.shape)
    np.copyto(out, view)
    del view
    return out if ring.valid(slot, seq, version) else None


def events_of(msg, cameras: list[str]) -> list[dict]:
    """The events a message to the web stage carries, as the live view serves them (the run's
    event log, written by track: `pipeline.web.eventlog`): a frame's or an end of stream's
    events, or a source event as a dict with its camera's name (``cameras`` by source_id)."""
    if isinstance(msg, (Tracked, EndOfStream)):
        return msg.events
    if isinstance(msg, SourceEvent):
        return [{"event": msg.event, "t": round(msg.t, 6), "seq": int(msg.seq), "camera": cameras[msg.source_id],
                 **msg.fields()}]
    return []


# a source event -> the camera's state on the page (None: as its frames say)
SOURCE_STATES = {"source_lost": "lost", "source_restored": "restored", "source_waiting": "waiting"}


def counts_by_camera(counts: dict) -> list[dict]:
    """The track stage's ``counts`` gauge as one ``ZoneLineCounter.counts()`` snapshot per camera:
    one camera's snapshot (it names its ``camera``) or ``{camera: snapshot}`` for several."""
    if not isinstance(counts, dict):
        return []
    if "camera" in counts:
        return [counts]
    return [dict(c, camera=c.get("camera") or name) for name, c in counts.items() if isinstance(c, dict)]


def shapes_in_pixels(zones, lines, width: int, height: int) -> list:
    """The camera's zones and lines (`Zone`/`Line` objects) with their points in pixels of a
    ``width`` x ``height`` frame, as the live view draws them."""
    return [s.in_pixels(width, height) for s in (*(zones or ()), *(lines or ()))]


class WebProcess(StageProcess):
    stage = "web"

    def __init__(self, rc: RunContext, settings: WebSettings):
        super().__init__(rc)
        self.settings = settings
        self.history = int(settings.history)   # events kept for clients that come back (Last-Event-ID)
        self.web = settings.web
        self.cameras = list(settings.cameras)
        self.names = list(settings.names) if settings.names else None
        self.idle_refresh_s = float(settings.idle_refresh_s)

    def setup(self) -> None:
        from trackpipe.pipeline.web import LiveViewHub
        from trackpipe.pipeline.web.eventlog import EventLogReader
        from trackpipe.pipeline.web.server import WebServer, WebServerError
        self.rings = [FrameRing.attach(self.rc.ring_of(c.index)) for c in self.cameras]
        self.names_of = [c.name for c in self.cameras]
        self.inp = self.bus.pull(WEB, hwm=10000)
        self.hub = LiveViewHub(max_events=self.history)
        # the events come from the run's event log (track writes it): after a restart of this
        # stage the ids go on and the last events are there again for clients that reconnect
        self.events = EventLogReader(self.rc.run_dir, keep=self.history)
        self.hub.publish_numbered(self.events.history())
        zones = {}
        for c in self.cameras:
            self.hub.publish_camera_state(c.name, None)  # listed (as "starting") before its first frame
            shapes = shapes_in_pixels(c.zones, c.lines, c.info.width, c.info.height) if (c.zones or c.lines) else []
            if shapes:
                zones[c.name] = shapes      # zones and lines in pixels, drawn on the frames
        self.server = self._serve(WebServer, WebServerError, zones or None)
        # a little under the feed's own interval, so the two rate caps do not beat each other down
        self.watched_interval = 0.9 / self.web.max_fps
        self.last_copy = [-math.inf] * len(self.cameras)
        self.stats.gauges.update(url=self.server.url, camera=self.names_of[0] if len(self.cameras) == 1
                                 else self.names_of, copied=0, late_frames=0)

    def _serve(self, server_cls, error_cls, zones):
        """The started server. With ``--http-port 0``, a restarted stage binds the port the first
        incarnation got (kept in the run's directory) while it is free, so that open pages and
        event streams reconnect to the same address; else any free port."""
        port_file = os.path.join(self.rc.run_dir, "web-port")
        tries = [self.web]
        if self.web.port == 0:
            try:
                with open(port_file) as f:
                    tries.insert(0, dataclasses.replace(self.web, port=int(f.read())))
            except (OSError, ValueError):
                pass
        for i, cfg in enumerate(tries):
            server = server_cls(self.hub, cfg, names=self.names or (), zones=zones, review=self._review())
            try:
                server.start()
                break
            except error_cls as e:
                if i == len(tries) - 1:
                    raise StageError(str(e)) from None
                log.info("the live view's earlier port %d is taken (%s): binding a free one", cfg.port, e)
        if self.web.port == 0:
            with open(port_file, "w") as f:
                f.write(str(server.port))
        return server

    def _review(self):
        """The review API over the run's record folder (it only reads; the sink writes the index)."""
        rec = self.settings.record
        if rec is None:
            return None
        from trackpipe.pipeline.recording.review import ReviewApi, rolls_of
        return ReviewApi(rec.root, rolls_of(rec.cameras))

    def teardown(self) -> None:
        if getattr(self, "server", None) is not None:
            self.server.stop(timeout=1.0)
        if getattr(self, "events", None) is not None:
            self.events.close()
        for ring in getattr(self, "rings", ()):
            ring.close()

    def watched(self, camera: str) -> bool:
        """True while a client streams ``camera`` (read from the server thread's feeds)."""
        feed = self.server.live.feeds.get(camera)
        return feed is not None and feed.viewers > 0

    def read_events(self) -> None:
        """Publish what the event log got since the last look (also the events of messages the
        bus dropped, or sent while this stage was down)."""
        self.hub.publish_numbered(self.events.read_new())

    def loop(self) -> None:
        idle_since = time.monotonic()
        for msg in self.messages(self.inp, on_idle=self.read_events):
            self.read_events()
            if isinstance(msg, LiveStats):
                self.hub.publish_stats(msg.report)
                self.hub.publish_metrics(msg.metrics.encode())
                for counts in counts_by_camera(msg.report.get("stages", {}).get("track", {}).get("counts")):
                    self.hub.publish_counts(counts)
            elif isinstance(msg, SourceEvent):
                self.hub.publish_camera_state(self.names_of[msg.source_id], SOURCE_STATES.get(msg.event), msg.t)
            elif isinstance(msg, EndOfStream):  # the page stays up until the run stops
                self.hub.publish_camera_state(self.names_of[msg.source_id], "ended")
            elif isinstance(msg, Tracked):
                self.count(StageBoard.IN)
                t0 = time.monotonic()
                self.on_tracked(msg, t0)
                t1 = time.monotonic()
                self.count(StageBoard.OUT)
                self.stats.item(t0, t1, t0 - idle_since)
                idle_since = time.monotonic()

    def on_tracked(self, msg: Tracked, now: float) -> None:
        if msg.dropped:
            return
        i = msg.meta.source_id
        name = self.names_of[i]
        interval = self.watched_interval if self.watched(name) else self.idle_refresh_s
        if now - self.last_copy[i] < interval:
            return
        meta = msg.meta
        frame = copy_frame(self.rings[i], meta)
        g = self.stats.gauges
        if frame is None:  # the slot was reused before we got to it: this stage lags
            self.stats.drops += 1
            g["late_frames"] += 1
            return
        self.last_copy[i] = now
        g["copied"] += 1
        cm = getattr(self.cameras[i], "motion", None)
        if cm is not None and cm.detect.motion_boxes and msg.motion is not None and len(msg.motion):
            from trackpipe.pipeline.motion.draw import draw_motion
            draw_motion(frame, msg.motion)   # the optional overlay, on this stage's private copy
        self.hub.publish_frame(name, meta.seq, meta.t_capture, frame, msg.tracks, copy=False)
