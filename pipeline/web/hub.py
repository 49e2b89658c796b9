"""``LiveViewHub``: the concrete :class:`LiveViewProvider`, fed by ``publish_*`` calls.

Thread-safe and bounded: the newest frame per camera, the newest stats and counts, and a ring
of the last ``max_events`` events. Publishing never waits on the web server or its clients:
it takes one short lock and calls the listeners, which only schedule work on the server's loop.

    hub = LiveViewHub(max_events=500)
    hub.publish_frame("door", seq, t_capture, frame_bgr, tracks)   # every frame (or as often as wanted)
    hub.publish_event({"event": "track_started", "camera": "door", ...})
    hub.publish_stats(report_dict); hub.publish_counts(counter.counts())
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from itertools import islice

import numpy as np
from trackpipe.models.types import Detections

from .provider import COUNTS, EVENT, FRAME, STATS, CameraState, LatestFrame, Listener

log = logging.getLogger(__name__)


class _Camera:
    __slots__ = ("fps", "latest", "name", "state", "t_mono")

    def __init__(self, name: str):
        self.name = name
        self.latest: LatestFrame | None = None
        self.state: str | None = None     # set by publish_camera_state; None: derived from frame times
        self.fps = 0.0
        self.t_mono: float | None = None  # monotonic time of the newest publish


class LiveViewHub:
    """Latest-value store between a pipeline and the web server.

    max_events:    events kept for ``/api/events?since=`` (older ones are forgotten)
    stale_after_s: a camera with no frame for this long shows state "stale"
    registry:      a prometheus_client ``CollectorRegistry`` whose ``generate_latest`` is
                   ``metrics()``; without one, ``metrics()`` is the last ``publish_metrics`` text
    """

    def __init__(self, max_events: int = 500, stale_after_s: float = 5.0, registry=None):
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self._lock = threading.Lock()
        self._cams: dict[str, _Camera] = {}
        self._events: deque = deque(maxlen=int(max_events))
        self._event_seq = 0
        self._stats: dict = {}
        self._counts: dict[str, dict] = {}
        self._metrics_text = b""
        self._registry = registry
        self._listeners: list[Listener] = []
        self.stale_after_s = float(stale_after_s)

    # --- publishing (any thread) ------------------------------------------------------------

    def publish_frame(self, camera: str, seq: int, t: float, frame: np.ndarray,
                      tracks: Detections | None = None, copy: bool = True) -> None:
        """The newest frame of ``camera``: ``frame`` (H, W, 3) uint8 BGR, ``t`` its capture time
        (``time.time()``), ``tracks`` in its pixels. ``copy=False`` hands the array over (the
        caller must never write to it again), e.g. when it was already copied out of the ring."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if copy:
            frame = frame.copy()
        snap = LatestFrame(int(seq), float(t), frame, tracks)
        now = time.monotonic()
        with self._lock:
            cam = self._cams.get(camera)
            if cam is None:
                cam = self._cams[camera] = _Camera(camera)
            if cam.t_mono is not None and now > cam.t_mono:
                inst = 1.0 / (now - cam.t_mono)
                cam.fps = inst if cam.fps == 0.0 else 0.9 * cam.fps + 0.1 * inst
            cam.t_mono = now
            cam.latest = snap
        self._notify(FRAME, camera)

    def publish_camera_state(self, camera: str, state: str | None) -> None:
        """Set what ``/api/cameras`` says of ``camera`` ("lost", "reconnecting"...); None goes back
        to the state derived from frame times. Also registers a camera before its first frame."""
        with self._lock:
            cam = self._cams.get(camera)
            if cam is None:
                cam = self._cams[camera] = _Camera(camera)
            cam.state = state

    def publish_event(self, event) -> int:
        """Append one event (a dict, or anything with ``to_dict()``); returns its ``event_seq``."""
        d = dict(event if isinstance(event, dict) else event.to_dict())
        with self._lock:
            self._event_seq += 1
            d["event_seq"] = self._event_seq
            self._events.append(d)
            n = self._event_seq
        self._notify(EVENT, None)
        return n

    def publish_numbered(self, events: list[dict]) -> None:
        """Append events numbered elsewhere (``event_seq`` in each dict: the run's event log,
        which outlives this hub). Ids must grow; an event whose id does not is left out (logged)."""
        if not events:
            return
        with self._lock:
            last = self._event_seq
            for d in events:
                seq = d.get("event_seq")
                if not isinstance(seq, int) or seq <= last:
                    log.warning("live view: event id %r after %d left out (ids must grow)", seq, last)
                    continue
                self._events.append(d)
                last = seq
            self._event_seq = last
        self._notify(EVENT, None)

    def publish_stats(self, stats: dict) -> None:
        """The live profile (replaces the previous one)."""
        with self._lock:
            self._stats = dict(stats)
        self._notify(STATS, None)

    def publish_counts(self, counts: dict) -> None:
        """One camera's ``ZoneLineCounter.counts()`` snapshot (it names its ``camera``)."""
        cam = str(counts.get("camera", ""))
        with self._lock:
            self._counts[cam] = dict(counts)
        self._notify(COUNTS, None)

    def publish_metrics(self, text: bytes) -> None:
        """Prometheus exposition text made elsewhere (used when the hub has no ``registry``)."""
        with self._lock:
            self._metrics_text = bytes(text)

    # --- reading (the server) ---------------------------------------------------------------

    def cameras(self) -> list[CameraState]:
        now = time.monotonic()
        out = []
        with self._lock:
            for cam in self._cams.values():
                snap = cam.latest
                if cam.state is not None:
                    state = cam.state
                elif snap is None:
                    state = "waiting"
                else:
                    state = "live" if now - cam.t_mono <= self.stale_after_s else "stale"
                h, w = snap.frame.shape[:2] if snap is not None else (0, 0)
                out.append(CameraState(cam.name, state, cam.fps, int(w), int(h),
                                       snap.t if snap is not None else None, snap.seq if snap is not None else -1))
        return out

    def latest(self, camera: str) -> LatestFrame | None:
        with self._lock:
            cam = self._cams.get(camera)
            return cam.latest if cam is not None else None

    def stats(self) -> dict:
        with self._lock:
            return self._stats

    def counts(self) -> dict:
        with self._lock:
            return dict(self._counts)

    def events_since(self, seq: int, limit: int = 1000) -> list[dict]:
        with self._lock:
            if not self._events or self._event_seq <= seq:
                return []
            # ids grow along the deque (contiguous unless numbered elsewhere with a gap)
            start = bisect_right(self._events, int(seq), key=lambda e: e["event_seq"])
            return list(islice(self._events, start, start + max(0, int(limit))))

    def last_event_seq(self) -> int:
        with self._lock:
            return self._event_seq

    def metrics(self) -> bytes:
        if self._registry is not None:
            from prometheus_client import generate_latest
            return generate_latest(self._registry)
        with self._lock:
            return self._metrics_text

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners = [*self._listeners, listener]

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = [x for x in self._listeners if x is not listener]
        return unsubscribe

    def _notify(self, kind: str, camera: str | None) -> None:
        for fn in self._listeners:          # a copy-on-write list: no lock needed to iterate
            try:
                fn(kind, camera)
            except Exception:               # a broken listener must never break the publisher
                log.exception("live view listener failed")
