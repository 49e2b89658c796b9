"""Helpers for the live-view tests: Debian's chromium under Playwright; ``LiveFeed``, which plays
real videos in real time through the real detector and tracker into a ``LiveViewHub``; and
``Publisher``, which publishes real frames (no detector) at a set rate, for the API tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections import deque

import cv2
import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def browser_missing() -> str | None:
    """Why a real-browser test cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/apt-packages.txt)"
    return None


@contextlib.contextmanager
def chromium():
    """A headless Debian chromium driven by Playwright (its own browser downloads are never used)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                                    args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def read_frames(path, n: int) -> list:
    """The first ``n`` frames of a video, (H, W, 3) uint8 BGR."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, f = cap.read()
        assert ok, f"cannot read {path}"
        out.append(f)
    cap.release()
    return out


def moving_box(x: float):
    """One track (id 7, class 0) whose box starts at ``x`` pixels."""
    from trackpipe.models.types import Tracks
    return Tracks(np.array([[x, 40, x + 120, 300]], np.float32), np.array([0.9], np.float32),
                  np.array([0], np.int32), track_id=np.array([7]))


class Publisher:
    """Publishes real frames to the hub at ``fps`` from a thread, as the pipeline's feeder would."""

    def __init__(self, hub, frames, camera="cam", fps=30.0):
        self.hub, self.frames, self.camera, self.fps = hub, frames, camera, fps
        self.count = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._t.start()
        while self.count == 0:                 # the camera exists once __enter__ returns
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)

    def _run(self):
        while not self._stop.is_set():
            f = self.frames[self.count % len(self.frames)]
            self.hub.publish_frame(self.camera, self.count, time.time(), f, moving_box(10 + self.count % 200))
            self.count += 1
            self._stop.wait(1.0 / self.fps)


class _Source:
    """One camera: a video file played in real time, looping; tracker and track ids of its own."""

    def __init__(self, camera: str, path, tracker, counter=None):
        self.camera, self.path, self.tracker, self.counter = camera, str(path), tracker, counter
        self.cap = cv2.VideoCapture(self.path)
        if not self.cap.isOpened():
            raise RuntimeError(f"cannot open {self.path}")
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 30.0
        self.played = 0          # frames of media time played (read or skipped)
        self.seq = 0
        self.seen: set[int] = set()
        self.t0 = time.monotonic()

    def due(self) -> int:
        return int((time.monotonic() - self.t0) * self.fps)

    def next_frame(self) -> tuple[np.ndarray, int]:
        """The frame due now (skipping those we are late for, as a live source does); frames skipped."""
        skipped = 0
        while self.played < self.due() - 1 and self.cap.grab():
            self.played += 1
            skipped += 1
        ok, frame = self.cap.read()
        if not ok:                                  # the end: loop
            self.cap.release()
            self.cap = cv2.VideoCapture(self.path)
            ok, frame = self.cap.read()
        self.played += 1
        self.seq += 1
        return frame, skipped


class LiveFeed:
    """A small pipeline in one thread: videos (one per camera) -> shared detector -> per-camera
    SORT tracker -> ``hub.publish_frame``; ``track_started`` events for new track ids, line
    events and counts from a ``ZoneLineCounter`` when given, and a profile-shaped stats dict
    (``stages: {capture, infer, track}`` with fps, ms p50/p95, drops) twice a second.

    sources: {camera: video path}; lines: {camera: [Line]} for the counter.
    """

    def __init__(self, hub, sources: dict, detector, names, lines: dict | None = None, tracker: str = "sort"):
        from trackpipe.pipeline.events import ZoneLineCounter
        from trackpipe.trackers import build_tracker
        self.hub, self.detector, self.names = hub, detector, list(names)
        self.sources = [_Source(cam, path, build_tracker(tracker),
                                ZoneLineCounter(cam, lines=(lines or {}).get(cam, ()), names=self.names)
                                if (lines or {}).get(cam) else None)
                        for cam, path in sources.items()]
        self.ms = {s: deque(maxlen=200) for s in ("capture", "infer", "track")}
        self.items = {s: deque(maxlen=400) for s in ("capture", "infer", "track")}   # monotonic times
        self.drops = 0
        self.frames = 0
        self.tracks_started = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> LiveFeed:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        for s in self.sources:
            s.cap.release()

    def _timed(self, stage: str, t0: float) -> float:
        t1 = time.perf_counter()
        self.ms[stage].append(1000.0 * (t1 - t0))
        self.items[stage].append(time.monotonic())
        return t1

    def _run(self) -> None:
        try:
            t_stats = 0.0
            while not self._stop.is_set():
                src = min(self.sources, key=lambda s: s.played - s.due())   # the most overdue camera
                wait = (src.played - src.due()) / src.fps
                if wait > 0:
                    self._stop.wait(wait)
                    continue
                t0 = time.perf_counter()
                frame, skipped = src.next_frame()
                self.drops += skipped
                t_cap = time.time()
                t0 = self._timed("capture", t0)
                dets = self.detector.detect(frame)
                t0 = self._timed("infer", t0)
                tracks = src.tracker.update(dets, frame)
                self._timed("track", t0)
                self._publish(src, frame, tracks, t_cap)
                if time.monotonic() - t_stats >= 0.5:
                    t_stats = time.monotonic()
                    self.hub.publish_stats(self.stats())
        except BaseException as e:          # the test reads it
            self.error = e
            raise

    def _publish(self, src: _Source, frame, tracks, t: float) -> None:
        for k in range(len(tracks)):
            tid = int(tracks.track_id[k])
            if tid not in src.seen:
                src.seen.add(tid)
                self.tracks_started += 1
                cid = int(tracks.class_id[k])
                self.hub.publish_event({"event": "track_started", "camera": src.camera, "t": round(t, 6),
                                        "seq": src.seq, "track_id": tid, "class_id": cid,
                                        "class": self.names[cid] if 0 <= cid < len(self.names) else str(cid),
                                        "score": round(float(tracks.score[k]), 4)})
        if src.counter is not None:
            h, w = frame.shape[:2]
            for ev in src.counter.update(tracks, t, seq=src.seq, frame_size=(w, h)):
                self.hub.publish_event(ev)
            self.hub.publish_counts(src.counter.counts())
        self.hub.publish_frame(src.camera, src.seq, t, frame, tracks, copy=False)
        self.frames += 1

    def stats(self) -> dict:
        """The live profile's shape (``build_report``): per-stage rows, pipeline and detector FPS."""
        now = time.monotonic()
        rows = {}
        for stage, ms in self.ms.items():
            recent = [t for t in self.items[stage] if now - t <= 2.0]
            span = (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
            arr = np.asarray(ms, np.float64)
            rows[stage] = {"items": len(self.items[stage]), "fps": round((len(recent) - 1) / span, 3) if span else 0.0,
                           "ms_p50": round(float(np.percentile(arr, 50)), 3) if len(arr) else None,
                           "ms_p95": round(float(np.percentile(arr, 95)), 3) if len(arr) else None,
                           "wait_ms_p50": None, "drops": self.drops if stage == "capture" else 0, "restarts": 0}
        infer = np.asarray(self.ms["infer"], np.float64)
        return {"stages": rows, "pipeline_fps": rows["track"]["fps"],
                "detector_only_fps": round(1000.0 / float(np.mean(infer)), 3) if len(infer) else 0.0,
                "frames_out": self.frames, "t": time.time()}
