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
    __slots__ = ("fps", "latest", "name", "since", "state", "state_mono", "t_mono")

    def __init__(self, name: str):
        self.name = name
        self.latest: LatestFrame | None = None
        self.state: str | None = None     # set by publish_camera_state; None: derived from frame times
        self.since: float | None = None   # wall-clock time the set state began
        self.state_mono = 0.0             # monotonic time it was set
        self.fps = 0.0
        self.t_mono: float | None = None  # monotonic time of the newest publish


class RateWindow:
    """Rates of growing counters over the last ``window_s`` seconds: ``rates({name: count})``,
    called once a profile period, gives ``{name: per second}`` from the oldest sample in the
    window to now, so a rate falls to 0 within ``window_s`` once its counter stops growing
    (not the run's average, nor the last value). None for a name before two samples of it."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = float(window_s)
        self._samples: deque = deque()       # (t_mono, {name: count})

    def rates(self, counts: dict[str, float], now: float | None = None) -> dict[str, float | None]:
        now = time.monotonic() if now is None else now
        while len(self._samples) > 1 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()          # keep one sample at or before the window's start
        out: dict[str, float | None] = {}
        for name, n in counts.items():
            old = next(((t, c[name]) for t, c in self._samples if name in c), None)
            if old is None or now <= old[0]:
                out[name] = None
            else:                            # a counter that went back (a restart): no negative rate
                out[name] = max(0.0, (float(n) - old[1]) / (now - old[0]))
        self._samples.append((now, dict(counts)))
        return out


class LiveViewHub:
    """Latest-value store between a pipeline and the web server.

    max_events:    events kept for ``/api/events?since=`` (older ones are forgotten)
    stale_after_s: a camera with no frame for this long shows state "stale" (and fps 0)
    restored_s:    a camera set "restored" shows so this long, then as its frames say ("live")
    rate_window_s: the window of the stats' ``fps_now`` (per stage and per camera)
    registry:      a prometheus_client ``CollectorRegistry`` whose ``generate_latest`` is
                   ``metrics()``; without one, ``metrics()`` is the last ``publish_metrics`` text
    """

    def __init__(self, max_events: int = 500, stale_after_s: float = 5.0, registry=None,
                 restored_s: float = 10.0, rate_window_s: float = 5.0):
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
        self.restored_s = float(restored_s)
        self._rates = RateWindow(rate_window_s)
        self._cam_fps: dict[str, float | None] = {}   # per camera, from the stats' frame counts
        self._cam_waiting: set[str] = set()            # cameras the stats say are waiting (not there yet)

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

    def publish_camera_state(self, camera: str, state: str | None, since: float | None = None) -> None:
        """Set what ``/api/cameras`` says of ``camera`` ("lost", "restored", "waiting", "ended"...)
        and since when (wall clock, ``time.time()``; default now); None goes back to the state
        derived from frame times. Also registers a camera before its first frame."""
        with self._lock:
            cam = self._cams.get(camera)
            if cam is None:
                cam = self._cams[camera] = _Camera(camera)
            cam.state = state
            cam.since = (time.time() if since is None else float(since)) if state is not None else None
            cam.state_mono = time.monotonic()

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
        """The live profile (replaces the previous one). Each stage's row and each camera's get
        ``fps_now``: items (frames) per second over the last ``rate_window_s`` (None at first),
        which falls to 0 when nothing flows; the row's ``fps`` is the run's average."""
        stats = dict(stats)
        stages = {n: dict(r) for n, r in (stats.get("stages") or {}).items() if isinstance(r, dict)}
        cams = {n: dict(r) for n, r in (stats.get("cameras") or {}).items() if isinstance(r, dict)}
        counts = {f"stage:{n}": r["items"] for n, r in stages.items() if isinstance(r.get("items"), (int, float))}
        counts.update({f"camera:{n}": r["frames_out"] for n, r in cams.items()
                       if isinstance(r.get("frames_out"), (int, float))})
        with self._lock:
            rates = self._rates.rates(counts)
            for key, rate in rates.items():
                kind, name = key.split(":", 1)
                (stages if kind == "stage" else cams)[name]["fps_now"] = None if rate is None else round(rate, 2)
            if stages:
                stats["stages"] = stages
            if cams:
                stats["cameras"] = cams
            self._cam_fps = {n: r.get("fps_now") for n, r in cams.items()}
            self._cam_waiting = {n for n, r in cams.items() if r.get("state") == "waiting"}
            self._stats = stats
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
                if cam.state == "restored" and now - cam.state_mono > self.restored_s:
                    cam.state = cam.since = None       # shown for restored_s, then as the frames say
                fresh = cam.t_mono is not None and now - cam.t_mono <= self.stale_after_s
                since = cam.since
                if cam.state == "lost" and snap is None:
                    state = "waiting"                   # never had a frame: not lost, not there yet
                elif cam.state is not None:
                    state = cam.state
                elif snap is None:
                    state = "waiting" if cam.name in self._cam_waiting else "starting"
                else:
                    state = "live" if fresh else "stale"
                    since = None if fresh else snap.t
                fps = self._cam_fps.get(cam.name)
                if fps is None:                         # no stats for it: frames published, 0 once stale
                    fps = cam.fps if fresh else 0.0
                if state in ("lost", "waiting", "ended"):
                    fps = 0.0
                h, w = snap.frame.shape[:2] if snap is not None else (0, 0)
                out.append(CameraState(cam.name, state, fps, int(w), int(h),
                                       snap.t if snap is not None else None, snap.seq if snap is not None else -1,
                                       since))
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
