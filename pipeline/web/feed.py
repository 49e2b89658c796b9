"""Per-camera JPEG feed: draw and encode each new frame once for every viewer, at a capped rate,
only while someone watches; each viewer takes the newest part and skips what it missed.

Lives on the server's event loop; drawing and encoding run in a thread pool (OpenCV releases
the GIL), so the loop keeps serving while a frame is encoded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor

import cv2
import numpy as np
from trackpipe.pipeline.drawing import annotate

from .mjpeg import mjpeg_part
from .provider import LatestFrame, LiveViewProvider

log = logging.getLogger(__name__)

try:
    from asyncio import timeout as time_limit  # Python >= 3.11
except ImportError:  # pragma: no cover - Python 3.10 (aiohttp's dependency there)
    from async_timeout import timeout as time_limit
# ``time_limit`` rather than ``asyncio.wait_for``: on Python 3.11 wait_for loses a cancellation
# that comes while its inner future completes, and aiohttp cancels the handler of a client that
# goes: that client's stream would then wait on with its slot


def render_jpeg(snap: LatestFrame, names: Sequence[str], quality: int, zones=None) -> bytes:
    """The annotated frame as JPEG bytes (the snapshot's frame is left untouched)."""
    img = annotate(np.array(snap.frame, copy=True), snap.tracks, names, zones=zones)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


class Pulse:
    """Wakes every waiter at once: ``wait`` returns True at the next ``fire`` (on the loop), or
    False after ``timeout``. No per-waiter queue: a waiter re-reads the state it cares about."""

    def __init__(self) -> None:
        self._fut: asyncio.Future | None = None

    def fire(self) -> None:
        if self._fut is not None and not self._fut.done():
            self._fut.set_result(None)
        self._fut = None

    async def wait(self, timeout: float) -> bool:
        if self._fut is None:
            self._fut = asyncio.get_running_loop().create_future()
        try:
            async with time_limit(timeout):
                await asyncio.shield(self._fut)
            return True
        except TimeoutError:
            return False


class Viewer:
    """One MJPEG client of a feed: ``sent`` is the feed version of the last part it was sent."""

    __slots__ = ("sent",)

    def __init__(self, sent: int):
        self.sent = sent


class CameraFeed:
    """The encoded newest frame of one camera.

    ``version`` counts encodes; ``part`` is the newest MJPEG part (shared, immutable bytes).
    Viewers call ``watch()``/``unwatch()``; while one watches, ``_run`` encodes each new frame,
    no more often than ``max_fps``. ``wake()`` (thread-safe through the server) says that the
    provider has a new frame.
    """

    def __init__(self, camera: str, provider: LiveViewProvider, executor: Executor, names: Sequence[str],
                 max_fps: float, quality: int, zones=None):
        self.camera = camera
        self.provider, self.executor = provider, executor
        self.names, self.zones = list(names), zones
        self.min_interval = 1.0 / float(max_fps)
        self.quality = int(quality)
        self._viewers: set[Viewer] = set()
        self.skipped = 0                   # encoded parts viewers did not get (too slow), summed
        self.version = 0
        self.seq = -1
        self.t = 0.0
        self.jpeg: bytes | None = None
        self.part: bytes | None = None
        self.encodes = 0
        self.encode_s = 0.0
        self.changed = Pulse()             # fired after each encode and on close
        self._lock = asyncio.Lock()
        self._new_frame = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._t_last = 0.0
        self.closed = False

    def wake(self) -> None:
        """A new frame is there (called on the loop)."""
        self._new_frame.set()

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def behind(self) -> int:
        """How many parts the slowest viewer is behind the newest (0 with no viewer)."""
        return max((self.version - v.sent for v in self._viewers), default=0)

    def watch(self, sent: int) -> Viewer:
        """A new viewer, as if it had been sent version ``sent``; starts encoding if idle."""
        v = Viewer(sent)
        self._viewers.add(v)
        if self._task is None or self._task.done():
            self._new_frame.set()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"feed-{self.camera}")
        return v

    def sending(self, v: Viewer) -> bytes:
        """The newest part for ``v`` (counting what it skipped)."""
        self.skipped += max(0, self.version - v.sent - 1)
        v.sent = self.version
        return self.part

    def unwatch(self, v: Viewer) -> None:
        if v in self._viewers:
            self._viewers.discard(v)
            self.skipped += max(0, self.version - v.sent - 1)

    async def close(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        self.changed.fire()

    async def fresh(self) -> bytes | None:
        """JPEG of the provider's newest frame (encoded now unless it already is); None if none."""
        await self._encode_newest()
        return self.jpeg

    async def _encode_newest(self) -> bool:
        async with self._lock:             # one encode at a time; others then reuse its result
            snap = self.provider.latest(self.camera)
            if snap is None or snap.seq == self.seq:
                return False
            t0 = time.perf_counter()
            jpeg = await asyncio.get_running_loop().run_in_executor(
                self.executor, render_jpeg, snap, self.names, self.quality, self.zones)
            self.encode_s += time.perf_counter() - t0
            self.encodes += 1
            self.jpeg, self.seq, self.t = jpeg, snap.seq, snap.t
            self.part = mjpeg_part(jpeg, snap.seq, snap.t)
            self.version += 1
        self.changed.fire()
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failed = False
        while self.viewers > 0 and not self.closed:
            try:
                await asyncio.wait_for(self._new_frame.wait(), 1.0)
            except asyncio.TimeoutError:
                pass                          # no word from the provider: look anyway (dedup by seq)
            wait = self._t_last + self.min_interval - loop.time()
            if wait > 0:                      # rate cap: the newest frame once the interval is over
                await asyncio.sleep(wait)
            self._new_frame.clear()
            try:
                if await self._encode_newest():
                    self._t_last = loop.time()
                failed = False
            except Exception:
                if not failed:                # once per run of failures, not per frame
                    log.exception("live view: encoding camera %r failed", self.camera)
                failed = True
                await asyncio.sleep(self.min_interval)
