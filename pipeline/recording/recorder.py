"""The run's recorder: every camera's `CameraRecorder` thread, the index writer, events,
snapshots and retention, in the one process that writes the index.

    rec = Recorder(RecorderSettings(root, cameras, run_tag=..., names=...))
    if rec.start():                      # False: the folder is not writable (one warning line)
        rec.observe(camera, t, track_id, xyxy, score, class_id, predicted, frame_size)   # per tracked frame
        rec.on_events(camera, events)    # the frame's event dicts (track_ended finishes an event)
    ...
    rec.close()

``observe``/``on_events`` are called from the host's thread and never block on disk: finished
events, closed segments, snapshots and retention go through one worker thread. At start the
index is reconciled with the files (`reconcile`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .clips import segment_packets
from .events import EventBuilder
from .index import EventRecord, RecordIndex, Segment
from .layout import parse_segment, requests_dir, snapshot_path
from .retention import CameraPolicy, Retention
from .segmenter import CameraRecorder, writable
from .snapshots import frame_at, keyframe_times, write_jpeg

log = logging.getLogger(__name__)

TICK_S = 1.0
SNAPSHOT_WAIT_S = 60.0      # an event's best frame is looked for this long after its end
NEAR_BEST = 0.8             # a snapshot is the sighting scored >= this x the best that decodes soonest
KEY_SLACK_S = 0.04          # a sighting this close to a keyframe is at it (a frame at 25 fps)


@dataclass
class CameraRecording:
    """One camera's resolved recording settings."""

    name: str
    uri: str
    mode: str = "all"               # all | events | off
    segment_s: float = 10.0
    pre_s: float = 5.0
    post_s: float = 5.0
    retain_days: float = 7.0
    classes: list[str] | None = None
    live: bool = True               # a live source (wall clock); False: a file run lossless
    paced: bool = False             # a file played at its own rate (realtime)
    loop: bool = False
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0


@dataclass
class RecorderSettings:
    root: Path
    cameras: list[CameraRecording]
    max_gb: float = 0.0
    min_free_gb: float = 1.0
    run_tag: str = "run"
    names: Sequence[str] = ()
    t_base: float = field(default_factory=time.time)   # files run lossless: their clock is t_base + media time
    snapshot_cpu: float = 0.05     # share of one core that snapshot decoding may use, on average
    snapshot_burst_s: float = 1.5  # CPU seconds it may use at once (after a quiet spell)


@dataclass
class _Snapshot:
    event: EventRecord
    deadline: float


class Recorder:
    def __init__(self, settings: RecorderSettings):
        self.s = settings
        self.root = Path(settings.root)
        self.cams = {c.name: c for c in settings.cameras if c.mode != "off"}
        self.enabled = False
        self.index: RecordIndex | None = None
        self.stop_event = threading.Event()
        self.threads: dict[str, CameraRecorder] = {}
        self.builders = {c.name: EventBuilder(c.name, settings.run_tag, settings.names, c.classes,
                                              offset=0.0 if c.live or c.paced else settings.t_base)
                         for c in self.cams.values()}
        self.tracked_until: dict[str, float] = {}
        self.work: queue.Queue = queue.Queue(maxsize=10000)
        self.worker: threading.Thread | None = None
        self.snapshots: list[_Snapshot] = []
        self.counts = {"segments": 0, "bytes": 0, "events": 0, "snapshots": 0, "snapshots_skipped": 0,
                       "deleted": 0, "dropped": 0}
        self._budget = settings.snapshot_burst_s      # CPU seconds snapshots may spend now (a token bucket)
        self._budget_t = time.monotonic()
        self.retention: Retention | None = None
        self._key_cache: dict[str, list] = {}

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> bool:
        problem = writable(self.root)
        if problem is None:
            try:
                self.index = RecordIndex(self.root, writer=True)
            except Exception as e:  # noqa: BLE001 - sqlite3.Error, OSError: one line, detection goes on
                problem = f"cannot open the recording index in {self.root}: {e}"
        if problem is not None:
            log.warning("%s: recording is off (detection and events go on)", problem)
            return False
        res = reconcile(self.root, self.index)
        if res["added"] or res["dropped"] or res["removed"]:
            log.info("record index reconciled with %s: %d segments indexed, %d files gone, %d unreadable removed",
                     self.root, res["added"], res["dropped"], res["removed"])
        self.retention = Retention(self.root, self.index, {c.name: CameraPolicy(c.mode, c.pre_s, c.post_s,
                                                                                c.retain_days)
                                                           for c in self.cams.values()},
                                   self.s.max_gb, self.s.min_free_gb)
        self.enabled = True
        self.worker = threading.Thread(target=self._work, name="record-index", daemon=True)
        self.worker.start()
        for c in self.cams.values():
            t = CameraRecorder(c.name, c.uri, self.root, c.segment_s, self._segment_closed, self.stop_event,
                               live=c.live, t_base=self.s.t_base, paced=c.paced, loop=c.loop,
                               open_timeout_s=c.open_timeout_s, read_timeout_s=c.read_timeout_s)
            self.threads[c.name] = t
            t.start()
        log.info("recording %s into %s", ", ".join(f"{c.name} ({c.mode})" for c in self.cams.values()), self.root)
        return True

    def close(self, timeout: float = 1.5) -> None:
        """Stop the cameras (their open segments are finished), index the last events and snapshots."""
        if not self.enabled:
            return
        deadline = time.monotonic() + timeout
        for b in self.builders.values():
            for rec in b.finish():
                self._put(("event", rec))
        self.stop_event.set()
        for t in self.threads.values():
            t.join(max(0.1, deadline - time.monotonic()))
        self._put(("close", max(0.5, deadline - time.monotonic())))
        if self.worker is not None:
            self.worker.join(max(0.5, deadline - time.monotonic()) + 1.0)
        self.enabled = False
        if self.index is not None:
            self.index.close()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Until every queued job is done (tests)."""
        done = threading.Event()
        self._put(("mark", done))
        return done.wait(timeout)

    # --- the host's thread ---------------------------------------------------------------------

    def records(self, camera: str) -> bool:
        return self.enabled and camera in self.cams

    def observe(self, camera: str, t: float, track_id, xyxy, score, class_id, predicted=None,
                frame_size=None) -> None:
        b = self.builders.get(camera)
        if b is None or not self.enabled:
            return
        b.observe(t, track_id, xyxy, score, class_id, predicted, frame_size)
        self.tracked_until[camera] = t + b.offset

    def on_events(self, camera: str, events: Sequence[dict]) -> None:
        for ev in events:
            self.on_event(camera, ev)

    def on_event(self, camera: str, ev: dict) -> str | None:
        """One event dict of ``camera``; -> the review id when it finished an event (a
        ``track_ended`` of a class recorded), whose clip and snapshot the API then serves."""
        b = self.builders.get(camera)
        if b is None or not self.enabled:
            return None
        rec = b.on_event(ev)
        if rec is None:
            return None
        self._put(("event", rec))
        return rec.id

    def stats(self) -> dict:
        return {**self.counts, "cameras": {n: {"state": t.state, "segments": t.segments, "packets": t.packets,
                                               "cpu_s": round(t.cpu_s, 3)} for n, t in self.threads.items()}}

    # --- the worker ----------------------------------------------------------------------------

    def _put(self, job) -> None:
        try:
            self.work.put_nowait(job)
        except queue.Full:
            self.counts["dropped"] += 1

    def _segment_closed(self, seg: Segment) -> None:       # camera threads
        self._put(("segment", seg))

    def _work(self) -> None:
        last_tick = 0.0
        while True:
            try:
                job = self.work.get(timeout=TICK_S)
            except queue.Empty:
                job = None
            try:
                if job is not None:
                    kind, arg = job
                    if kind == "segment":
                        if arg.keyframes is not None:       # known from the writer: no demuxing
                            self._remember_keyframes(arg.path, arg.keyframes)
                        self.index.add_segment(arg)
                        self.counts["segments"] += 1
                        self.counts["bytes"] += arg.bytes
                        self._retain()
                    elif kind == "event":
                        self.index.add_event(arg)
                        self.counts["events"] += 1
                        self.snapshots.append(_Snapshot(arg, time.monotonic() + SNAPSHOT_WAIT_S))
                    elif kind == "mark":
                        self._snap(final=False)
                        arg.set()
                    elif kind == "close":
                        self._snap(final=True, deadline=time.monotonic() + arg)   # each tried once more
                        self._requests()
                        self._retain()
                        return
                if time.monotonic() - last_tick >= TICK_S:
                    last_tick = time.monotonic()
                    self._snap(final=False)
                    self._requests()
                    self._retain()
            except Exception:
                log.exception("recording worker")

    def _retain(self) -> None:
        opened = {n: [s for s, _ in b.spans()] for n, b in self.builders.items()}
        res = self.retention.apply(tracked_until=dict(self.tracked_until), open_tracks=opened)
        self.counts["deleted"] += res.deleted

    def _open_segment(self, camera: str) -> list[Segment]:
        """The segment being written (readable: fragmented MP4), as a Segment."""
        t = self.threads.get(camera)
        return [] if t is None else t.open_segments()

    def _refill(self) -> float:
        now = time.monotonic()
        self._budget = min(self.s.snapshot_burst_s, self._budget + (now - self._budget_t) * self.s.snapshot_cpu)
        self._budget_t = now
        return self._budget

    def _snap(self, final: bool, deadline: float = float("inf")) -> None:
        """Each pending event's snapshot, once closed segments hold its footage (one try each: a
        frame not found is not looked for again), as the CPU budget allows (decoding a 1080p GOP
        costs ~0.5 s of CPU: without a bound, a busy camera's snapshots would cost more than its
        recording); an event still waiting at its deadline goes without one (counted)."""
        keep = []
        for i, job in enumerate(self.snapshots):
            ev = job.event
            if time.monotonic() > deadline:
                self.counts["snapshots_skipped"] += len(self.snapshots) - i
                break
            waiting = not final and not self._covered(ev)    # wait (no demuxing) for its footage to be closed
            if waiting or self._refill() <= 0.0:
                if time.monotonic() < job.deadline and not final:
                    keep.append(job)
                else:
                    self.counts["snapshots_skipped"] += 1
                continue
            cpu0 = time.thread_time()
            try:
                got = self._cheapest(ev, final)
                if got is None and (final or self._before_footage(ev)):
                    got = self._best_recorded(ev)
            finally:
                self._budget -= time.thread_time() - cpu0
            if got is None:
                self.counts["snapshots_skipped"] += 1
                log.debug("event %s: no recorded frame for its snapshot", ev.id)
                continue
            frame, _ = got
            path = snapshot_path(self.root, ev.camera, ev.id)
            try:
                write_jpeg(path, frame)
            except OSError as e:
                log.warning("snapshot %s not written: %s", path, e)
                continue
            rel = str(path.relative_to(self.root))
            self.index.set_snapshot(ev.id, rel)
            self.counts["snapshots"] += 1
        self.snapshots = keep

    def _covered(self, ev: EventRecord) -> bool:
        """Closed segments hold the event up to its end (or the recording began after its best frame)."""
        segs = self.index.segments(ev.camera, after=ev.end - 0.01)
        return bool(segs) and segs[0].end >= ev.end or self._before_footage(ev)

    def _remember_keyframes(self, path: str, keys: list) -> None:
        if len(self._key_cache) > 64:
            self._key_cache.pop(next(iter(self._key_cache)))
        self._key_cache[path] = list(keys)

    def _keyframes(self, segs: list[Segment]) -> list:
        """Keyframe times of closed segments: from their writer, else demuxed once (a small cache)."""
        out = []
        for s in segs:
            if s.keyframes is not None:
                out += s.keyframes
                continue
            if s.path not in self._key_cache:
                self._remember_keyframes(s.path, keyframe_times(self.root, [s]))
            out += self._key_cache[s.path]
        return sorted(out)

    def _cheapest(self, ev: EventRecord, final: bool):
        """The frame of the event's snapshot: of the sightings scored at least ``NEAR_BEST`` x its
        best, the one that decodes soonest after its keyframe (one at a keyframe decodes alone; a
        camera's keyframe comes every second or two, a GOP of 1080p costs ~5 ms a frame), the better
        scored of equals; its time, box and score become the event's."""
        segs = self.index.segments(ev.camera, after=ev.start - 0.1, before=ev.end + 0.1)
        if final:
            segs += [s for s in self._open_segment(ev.camera) if s.start <= ev.end + 0.1]
        if not segs:
            return None
        keys = self._keyframes(segs)
        first, last = segs[0].start, max(s.end for s in segs)
        rows = [r for r in ev.boxes if len(r) > 5 and r[5] > 0 and first - KEY_SLACK_S <= r[0] <= last]
        if not rows or not keys:
            return None
        best = max(r[5] for r in rows)

        def decode_s(r) -> float:
            i = bisect_right(keys, r[0] + KEY_SLACK_S) - 1
            return float("inf") if i < 0 else max(0.0, r[0] - keys[i] - KEY_SLACK_S)

        row = min((r for r in rows if r[5] >= NEAR_BEST * best), key=lambda r: (decode_s(r), -r[5]))
        got = frame_at(self.root, segs, row[0], slack_s=KEY_SLACK_S if decode_s(row) == 0.0 else 0.5)
        if got is not None and (row[0] != ev.t_best or list(row[1:5]) != ev.box):
            ev.t_best, ev.box, ev.score = row[0], list(row[1:5]), row[5]
            self.index.set_best(ev.id, ev.t_best, ev.box, ev.score)
        return got

    def _before_footage(self, ev: EventRecord) -> bool:
        """The best frame came before the camera's recording began (an object there at the start)."""
        first = self.index.segments(ev.camera, limit=1)
        return bool(first) and ev.t_best < first[0].start <= ev.end

    def _best_recorded(self, ev: EventRecord):
        """The event's best-scored recorded frame instead (its best time, box and score updated):
        the object was there before the recording began, or after it stopped (the run's end)."""
        segs = self.index.segments(ev.camera, after=ev.start - 1.0, before=ev.end + 1.0)
        if not segs:
            return None
        first, last = segs[0].start, segs[-1].end
        rows = [r for r in ev.boxes if first <= r[0] <= last - 0.1 and len(r) > 5 and r[5] > 0]
        if not rows:
            return None
        row = max(rows, key=lambda r: r[5])
        segs = self.index.segments(ev.camera, after=row[0] - 1.0, before=row[0] + 1.0)
        got = frame_at(self.root, segs, row[0]) if segs else None
        if got is not None:
            ev.t_best, ev.box, ev.score = row[0], list(row[1:5]), row[5]
            self.index.set_best(ev.id, ev.t_best, ev.box, ev.score)
        return got

    def _requests(self) -> None:
        """Deletions asked through the API (`review.ReviewApi` in another process)."""
        d = requests_dir(self.root)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return
        for name in names:
            if not name.startswith("delete-"):
                continue
            apply_delete(self.root, self.index, name[len("delete-"):])
            try:
                os.unlink(d / name)
            except OSError:
                pass


def apply_delete(root: Path, index: RecordIndex, event_id: str) -> bool:
    """Mark an event deleted (a tombstone: 410 from then on) and delete its snapshot."""
    ev = index.event(event_id)
    if ev is None:
        return False
    if ev.snapshot:
        try:
            os.unlink(Path(root) / ev.snapshot)
        except OSError:
            pass
    index.set_snapshot(event_id, None)
    index.set_state(event_id, "deleted")
    return True


def reconcile(root: Path, index: RecordIndex) -> dict:
    """Make the index match the files: a segment file the index lacks is indexed (its start from
    its name, its end from its last readable packet) or removed when nothing in it is readable; an
    indexed segment whose file is gone is dropped. -> {"added", "dropped", "removed"}."""
    root = Path(root)
    on_disk = {}
    for cam_dir in (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for day in (p for p in cam_dir.iterdir() if p.is_dir()):
            for f in day.glob("*.mp4"):
                parsed = parse_segment(root, f)
                if parsed is not None:
                    on_disk[str(f.relative_to(root))] = (f, *parsed)
            for f in day.glob("*.part"):
                f.unlink(missing_ok=True)
    indexed = {s.path: s for s in index.segments()}
    gone = [p for p in indexed if p not in on_disk]
    index.remove_segments(gone)
    added = removed = 0
    for rel, (f, camera, start) in sorted(on_disk.items()):
        if rel in indexed:
            continue
        seg = Segment(camera, start, start, rel, f.stat().st_size)
        last, n, frame_s = None, 0, 1.0 / 30
        for p, t, _ in segment_packets(root, seg):
            n += 1
            last = t if last is None else max(last, t)
            if p.duration and p.time_base:
                frame_s = float(p.duration * p.time_base)
        if n == 0:
            f.unlink(missing_ok=True)
            removed += 1
            continue
        seg.end = last + frame_s
        index.add_segment(seg)
        added += 1
    return {"added": added, "dropped": len(gone), "removed": removed}
