"""The review API: aiohttp handlers over a record folder, ready to mount in the web server.

    GET    /api/events?camera=&label=&zone=&after=&before=&limit=   JSON list, newest first
    GET    /api/events/{id}                 the event with its track's boxes and its clip's start
    GET    /api/events/{id}/clip.mp4        from pre_s before its start to post_s after its end
    GET    /api/events/{id}/snapshot.jpg    its best frame (?box=0: without the box)
    DELETE /api/events/{id}                 delete it (its snapshot; the clip answers 410 then)
    GET    /api/recordings/{camera}?after=&before=          segments (recorded spans)
    GET    /api/recordings/{camera}/export.mp4?start=&end=  any recorded range as one MP4

Times are seconds since the epoch or ISO 8601. Videos are served with byte ranges (206), so a
video element can seek. A range with no footage: 404 with a JSON reason; a known event whose
footage or snapshot was deleted (by retention or by a user): 410 with a JSON reason. Clips and
exports are cut once per range and kept in ``<dir>/.cache/clips`` (re-cut when the segments they
came from change). The API only reads the index: a deletion is handed to the recorder, the one
process that writes it, through ``<dir>/.requests`` (applied within a second; answered 410 at
once), unless ``index`` is a writer of this process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from .clips import NoFootage, cut
from .index import EventRecord, RecordIndex
from .layout import EVENT_ID_RE, clip_cache_dir, index_path, parse_time, requests_dir

log = logging.getLogger(__name__)

CAMERA_RE = __import__("re").compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MAX_EXPORT_S = 6 * 3600.0
CACHE_KEEP = 200            # clips kept in the cache at most (oldest removed first)
NO_STORE = {"Cache-Control": "no-store"}


def _json(data, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status,
                        content_type="application/json", headers=NO_STORE)


def _fail(status: int, reason: str) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 404: web.HTTPNotFound, 410: web.HTTPGone, 503: web.HTTPServiceUnavailable}[status]
    return cls(text=json.dumps({"error": reason, "status": status}), content_type="application/json")


class ReviewApi:
    """root: the record folder; rolls: {camera: (pre_s, post_s)} (default ``default_roll``);
    index: a writer `RecordIndex` of this process (else a reader is opened when the index exists)."""

    def __init__(self, root: Path, rolls: dict[str, tuple[float, float]] | None = None,
                 default_roll: tuple[float, float] = (5.0, 5.0), index: RecordIndex | None = None):
        self.root = Path(root)
        self.rolls = dict(rolls or {})
        self.default_roll = default_roll
        self._index = index
        self._own_index = index is None
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="review")
        self._locks: dict[str, asyncio.Lock] = {}

    def add_routes(self, router, events_list: bool = True) -> None:
        """Mount the API (``events_list``: also ``GET /api/events``)."""
        if events_list:
            router.add_get("/api/events", self.events)
        router.add_get("/api/events/{id}", self.event)
        router.add_delete("/api/events/{id}", self.delete)
        router.add_get("/api/events/{id}/clip.mp4", self.clip)
        router.add_get("/api/events/{id}/snapshot.jpg", self.snapshot)
        router.add_get("/api/recordings/{camera}", self.recordings)
        router.add_get("/api/recordings/{camera}/export.mp4", self.export)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._own_index and self._index is not None:
            self._index.close()
            self._index = None

    # --- helpers -------------------------------------------------------------------------------

    def index(self) -> RecordIndex:
        if self._index is None:
            if not index_path(self.root).exists():
                raise _fail(404, "nothing recorded yet")
            self._index = RecordIndex(self.root, writer=False)
        return self._index

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _time(self, request: web.Request, name: str, required: bool = False) -> float | None:
        raw = request.query.get(name)
        if raw is None or raw == "":
            if required:
                raise _fail(400, f"{name} is required (seconds since the epoch or ISO 8601)")
            return None
        try:
            return parse_time(raw)
        except ValueError as e:
            raise _fail(400, f"{name}: {e}") from None

    def _deleting(self, event_id: str) -> bool:
        return (requests_dir(self.root) / f"delete-{event_id}").exists()

    def _event_or_fail(self, event_id: str, gone_ok: bool = False) -> EventRecord:
        if not EVENT_ID_RE.match(event_id):
            raise _fail(404, f"no event {event_id!r}")
        ev = self.index().event(event_id)
        if ev is None:
            raise _fail(404, f"no event {event_id!r}")
        if ev.state == "deleted" or self._deleting(event_id):
            raise _fail(410, f"event {event_id} was deleted")
        return ev

    def roll(self, camera: str) -> tuple[float, float]:
        return self.rolls.get(camera, self.default_roll)

    def clip_range(self, ev: EventRecord) -> tuple[float, float]:
        pre, post = self.roll(ev.camera)
        return ev.start - pre, ev.end + post

    def public(self, ev: EventRecord) -> dict:
        d = ev.summary()
        d["score"] = d.pop("score")
        d["clip"] = f"/api/events/{ev.id}/clip.mp4"
        d["snapshot"] = f"/api/events/{ev.id}/snapshot.jpg" if ev.snapshot else None
        d.pop("created", None)
        return d

    def _cut(self, camera: str, start: float, end: float, key: str):
        """(ClipInfo-like dict, path) of the cached cut of [start, end]; NoFootage when none."""
        segs = self.index().segments(camera, after=start - 600.0, before=end)
        segs = [s for s in segs if s.end > start - 600.0]
        sig = hashlib.sha1(f"{key}|{start:.3f}|{end:.3f}|".encode()
                           + "|".join(f"{s.path}:{s.bytes}" for s in segs).encode()).hexdigest()[:20]
        cache = clip_cache_dir(self.root)
        path = cache / f"{sig}.mp4"
        meta = cache / f"{sig}.json"
        if path.exists() and meta.exists():
            return json.loads(meta.read_text()), path
        existing = [s for s in segs if (self.root / s.path).exists()]
        info = cut(self.root, existing, start, end, path)
        d = {"start": info.start, "end": info.end, "frames": info.frames, "bytes": info.bytes}
        meta.write_text(json.dumps(d))
        self._trim_cache(cache)
        return d, path

    @staticmethod
    def _trim_cache(cache: Path) -> None:
        files = sorted(cache.glob("*.mp4"), key=lambda p: p.stat().st_mtime)
        for p in files[:-CACHE_KEEP] if len(files) > CACHE_KEEP else []:
            p.unlink(missing_ok=True)
            p.with_suffix(".json").unlink(missing_ok=True)

    async def _clip_of(self, ev: EventRecord):
        if ev.state == "expired":       # some of its footage is gone: no clip that would mislead
            raise _fail(410, f"the footage of event {ev.id} was deleted (retention)")
        start, end = self.clip_range(ev)
        lock = self._locks.setdefault(ev.id, asyncio.Lock())
        async with lock:
            try:
                return await self._run(self._cut, ev.camera, start, end, ev.id)
            except NoFootage:
                if ev.state == "expired":
                    raise _fail(410, f"the footage of event {ev.id} was deleted (retention)") from None
                raise _fail(404, f"no footage of event {ev.id} (its camera was not recorded then)") from None
            finally:
                if not lock.locked():
                    self._locks.pop(ev.id, None)

    # --- handlers ------------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.Response:
        q = request.query
        limit = q.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= 10000:
            raise _fail(400, "limit must be an integer in 1..10000")
        camera, label, zone = q.get("camera") or None, q.get("label") or None, q.get("zone") or None
        after, before = self._time(request, "after"), self._time(request, "before")
        evs = await self._run(lambda: self.index().events(camera, label, zone, after, before, int(limit)))
        return _json([self.public(e) for e in evs if not self._deleting(e.id)])

    async def event(self, request: web.Request) -> web.Response:
        ev = await self._run(self._event_or_fail, request.match_info["id"])
        d = self.public(ev)
        d["boxes"] = ev.boxes
        d["clip_start"] = d["clip_end"] = None
        d["footage"] = "ok"
        try:
            info, _ = await self._clip_of(ev)
            d["clip_start"], d["clip_end"] = info["start"], info["end"]
        except web.HTTPGone:
            d["footage"], d["clip"] = "expired", None
        except web.HTTPNotFound:
            d["footage"], d["clip"] = "none", None
        return _json(d)

    async def clip(self, request: web.Request) -> web.StreamResponse:
        ev = await self._run(self._event_or_fail, request.match_info["id"])
        _, path = await self._clip_of(ev)
        return web.FileResponse(path, headers={"Content-Type": "video/mp4", "Cache-Control": "no-cache"})

    async def snapshot(self, request: web.Request) -> web.Response:
        ev = await self._run(self._event_or_fail, request.match_info["id"])
        path = self.root / ev.snapshot if ev.snapshot else None
        if path is None or not path.resolve().is_relative_to(self.root.resolve()):
            if ev.state == "expired":
                raise _fail(410, f"the snapshot of event {ev.id} was deleted (retention)")
            raise _fail(404, f"event {ev.id} has no snapshot (yet)")
        with_box = request.query.get("box", "1") != "0"

        def load() -> bytes | None:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            if not with_box or not ev.box:
                return data
            import cv2
            import numpy as np

            from .snapshots import draw_box
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            sx = img.shape[1] / ev.width if ev.width else 1.0       # boxes: pixels of the frames tracked
            sy = img.shape[0] / ev.height if ev.height else 1.0
            box = [ev.box[0] * sx, ev.box[1] * sy, ev.box[2] * sx, ev.box[3] * sy]
            ok, buf = cv2.imencode(".jpg", draw_box(img, box, f"{ev.label} #{ev.track_id}"),
                                   [cv2.IMWRITE_JPEG_QUALITY, 85])
            return buf.tobytes() if ok else data

        data = await self._run(load)
        if data is None:
            raise _fail(410, f"the snapshot of event {ev.id} was deleted")
        return web.Response(body=data, content_type="image/jpeg", headers=NO_STORE)

    async def delete(self, request: web.Request) -> web.Response:
        ev = await self._run(self._event_or_fail, request.match_info["id"])
        if self._index is not None and self._index.writer:
            from .recorder import apply_delete
            await self._run(apply_delete, self.root, self._index, ev.id)
        else:
            d = requests_dir(self.root)
            d.mkdir(parents=True, exist_ok=True)
            (d / f"delete-{ev.id}").write_bytes(b"")
        return _json({"deleted": ev.id})

    async def recordings(self, request: web.Request) -> web.Response:
        camera = self._camera(request)
        after, before = self._time(request, "after"), self._time(request, "before")
        segs = await self._run(lambda: self.index().segments(camera, after, before, limit=20000))
        return _json({"camera": camera, "segments": [{"start": s.start, "end": s.end, "bytes": s.bytes,
                                                      "path": s.path} for s in segs]})

    def _camera(self, request: web.Request) -> str:
        camera = request.match_info["camera"]
        if not CAMERA_RE.match(camera) or camera not in self.index().cameras():
            raise _fail(404, f"nothing recorded of camera {camera!r}")
        return camera

    async def export(self, request: web.Request) -> web.StreamResponse:
        camera = self._camera(request)
        start, end = self._time(request, "start", True), self._time(request, "end", True)
        if end <= start:
            raise _fail(400, "end must be after start")
        if end - start > MAX_EXPORT_S:
            raise _fail(400, f"at most {MAX_EXPORT_S / 3600:g} hours at once")
        try:
            _, path = await self._run(self._cut, camera, start, end, f"export-{camera}")
        except NoFootage as e:
            raise _fail(404, f"no footage of camera {camera} in that range ({e})") from None
        name = f"{camera}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(start))}.mp4"
        return web.FileResponse(path, headers={"Content-Type": "video/mp4", "Cache-Control": "no-cache",
                                               "Content-Disposition": f'inline; filename="{name}"'})


def rolls_of(cameras: Sequence) -> dict[str, tuple[float, float]]:
    """{name: (pre_s, post_s)} of `recorder.CameraRecording` s."""
    return {c.name: (c.pre_s, c.post_s) for c in cameras}
