"""The run's recorder: every camera's `CameraRecorder` thread, the index writer, events,
snapshots and retention, in the one process that writes the index.

    rec = Recorder(RecorderSettings(root, cameras, run_tag=..., names=...))
    if rec.start():                      # False: the folder is not writable (one warning line)
        rec.observe(camera, t, track_id, xyxy, score, class_id, predicted, frame_size)   # per tracked frame
        rec.best_frame(camera, track_id, t, box, score, jpeg)   # render's best frame of a track so far
        rec.motion(camera, t, moving)    # per frame of a camera recorded in mode motion
        rec.on_events(camera, events)    # the frame's event dicts (track_ended finishes an event)
    ...
    rec.close()

``observe``/``best_frame``/``on_events`` are called from the host's thread and never block on
disk: finished events, closed segments, snapshots and retention go through one worker thread.
An event's snapshot is the last best frame render sent for its track (`best.BestFrames`: the
frames are decoded there already); one that comes after the event is indexed replaces it. At
start the index is reconciled with the files (`reconcile`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .clips import segment_packets
from .events import EventBuilder
from .index import EventRecord, RecordIndex, Segment
from .layout import event_id, parse_segment, requests_dir, snapshot_path
from .retention import CameraPolicy, Retention
from .segmenter import CameraRecorder, writable
from .snapshots import write_bytes

log = logging.getLogger(__name__)

TICK_S = 1.0
SNAPSHOT_WAIT_S = 60.0      # an event's best frame (sent by render) is taken this long after its end
MAX_BEST = 256              # best frames of tracks not ended yet kept at most (the oldest go first)
MOTION_GAP_S = 1.0          # mode motion: moving frames this close together make one span
MAX_SPANS = 10000           # motion spans kept per camera (older ones were decided long ago)


@dataclass
class CameraRecording:
    """One camera's resolved recording settings."""

    name: str
    uri: str
    mode: str = "all"               # all | events | motion | off
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


@dataclass
class _Best:
    """A track's best frame: its time on the events' clock, box (xyxy pixels), score, JPEG bytes."""

    t: float
    box: list
    score: float
    jpeg: bytes


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
        self.moving: dict[str, list[list[float]]] = {c.name: [] for c in self.cams.values() if c.mode == "motion"}
        self.work: queue.Queue = queue.Queue(maxsize=10000)
        self.worker: threading.Thread | None = None
        self.counts = {"segments": 0, "bytes": 0, "events": 0, "snapshots": 0, "snapshots_missing": 0,
                       "deleted": 0, "dropped": 0}
        self.retention: Retention | None = None
        self._bests: dict[str, _Best] = {}        # worker: event id -> best frame of a track not indexed yet
        self._indexed: dict[str, tuple] = {}      # worker: event id -> (until, has a snapshot): late frames update it
        self._have_best: dict[str, None] = {}     # host: ids render sent a best frame for (recent, ordered)
        self._awaiting: dict[str, float] = {}     # host: ended events without one yet -> until when

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
        self._put(("close", None))
        if self.worker is not None:
            self.worker.join(max(0.5, deadline - time.monotonic()) + 1.0)
        for t in self.threads.values():     # a camera slow to stop (a loaded machine): its last segment
            t.join(max(0.0, deadline + 1.0 - time.monotonic()))
        while self.worker is None or not self.worker.is_alive():     # the worker is done: this is the writer
            try:
                kind, arg = self.work.get_nowait()
            except queue.Empty:
                break
            if kind == "segment":
                self.index.add_segment(arg)
                self.counts["segments"] += 1
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

    def motion(self, camera: str, t: float, moving: bool) -> None:
        """Whether something moved in ``camera``'s frame at ``t`` (events' clock, as ``observe``):
        mode ``motion`` keeps the segments that overlap these spans (with pre and post roll)."""
        spans, b = self.moving.get(camera), self.builders.get(camera)
        if spans is None or b is None or not self.enabled:
            return
        t += b.offset
        if moving:
            if spans and t - spans[-1][1] <= MOTION_GAP_S:
                spans[-1][1] = t
            else:
                spans.append([t, t])
                if len(spans) > MAX_SPANS:
                    del spans[0]
        self.tracked_until[camera] = max(t, self.tracked_until.get(camera, t))

    def best_frame(self, camera: str, track_id: int, t: float, box, score: float, jpeg: bytes) -> None:
        """Render's best frame so far of ``camera``'s track ``track_id`` (time ``t`` on the events'
        clock, as ``observe``; box (4,) xyxy pixels; the clean frame as JPEG): its event's snapshot."""
        b = self.builders.get(camera)
        if b is None or not self.enabled:
            return
        eid = event_id(camera, self.s.run_tag, track_id)
        self._have_best[eid] = None
        if len(self._have_best) > 4 * MAX_BEST:
            self._have_best.pop(next(iter(self._have_best)))
        self._awaiting.pop(eid, None)
        self._put(("best", (camera, eid, _Best(t + b.offset, [round(float(v), 1) for v in box], round(float(score), 4),
                                      jpeg))))

    def missing_snapshots(self) -> int:
        """Events ended lately whose best frame has not come (the host waits for them at the end)."""
        now = time.monotonic()
        for eid in [e for e, until in self._awaiting.items() if until < now]:
            del self._awaiting[eid]
        return len(self._awaiting)

    def on_event(self, camera: str, ev: dict) -> str | None:
        """One event dict of ``camera``; -> the review id when it finished an event (a
        ``track_ended`` of a class recorded), whose clip and snapshot the API then serves."""
        b = self.builders.get(camera)
        if b is None or not self.enabled:
            return None
        rec = b.on_event(ev)
        if rec is None:
            return None
        if rec.id not in self._have_best:
            self._awaiting[rec.id] = time.monotonic() + SNAPSHOT_WAIT_S
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
                        self.index.add_segment(arg)
                        self.counts["segments"] += 1
                        self.counts["bytes"] += arg.bytes
                        self._retain()
                    elif kind == "event":
                        self._event(arg)
                    elif kind == "best":
                        self._best(*arg)
                    elif kind == "mark":
                        arg.set()
                    elif kind == "close":
                        self._forget_indexed(final=True)
                        self._requests()
                        self._retain(final=True)
                        return
                if time.monotonic() - last_tick >= TICK_S:
                    last_tick = time.monotonic()
                    self._forget_indexed()
                    self._requests()
                    self._retain()
            except Exception:
                log.exception("recording worker")

    def _retain(self, final: bool = False) -> None:
        """Retention; ``final``: the run ends (no frame will come: every segment is decided)."""
        until = dict(self.tracked_until)          # before the spans: they are at least as new
        if final:
            until = {n: float("inf") for n in self.cams}
        opened = {n: [s for s, _ in b.spans()] for n, b in self.builders.items()}
        moving = {n: [tuple(x) for x in list(spans)] for n, spans in self.moving.items()}
        for n, spans in moving.items():           # a span still open may go on: as an open track
            if spans and not final and until.get(n, spans[-1][1]) - spans[-1][1] <= MOTION_GAP_S:
                opened[n] = opened.get(n, []) + [spans[-1][0]]
        res = self.retention.apply(tracked_until=until, open_tracks=opened, motion=moving)
        self.counts["deleted"] += res.deleted

    def _event(self, ev: EventRecord) -> None:
        """A finished event: indexed, with its snapshot when render's best frame came first."""
        best = self._bests.pop(ev.id, None)
        if best is not None and self._write_snapshot(ev.camera, ev.id, best.jpeg):
            ev.snapshot = str(snapshot_path(self.root, ev.camera, ev.id).relative_to(self.root))
            ev.t_best, ev.box, ev.score = best.t, best.box, best.score
            self.counts["snapshots"] += 1
        self.index.add_event(ev)
        self.counts["events"] += 1
        self._indexed[ev.id] = (time.monotonic() + SNAPSHOT_WAIT_S, ev.snapshot is not None)

    def _best(self, camera: str, eid: str, best: _Best) -> None:
        """Render's best frame of a track: kept until its event comes, or (the event is indexed:
        render runs behind track) its snapshot now."""
        done = self._indexed.get(eid)
        if done is None:
            self._bests.pop(eid, None)
            self._bests[eid] = best
            while len(self._bests) > MAX_BEST:
                self._bests.pop(next(iter(self._bests)))
            return
        if not self._write_snapshot(camera, eid, best.jpeg):
            return
        self.index.set_snapshot(eid, str(snapshot_path(self.root, camera, eid).relative_to(self.root)))
        self.index.set_best(eid, best.t, best.box, best.score)
        if not done[1]:
            self.counts["snapshots"] += 1
            self._indexed[eid] = (done[0], True)

    def _write_snapshot(self, camera: str, eid: str, jpeg: bytes) -> bool:
        path = snapshot_path(self.root, camera, eid)
        try:
            write_bytes(path, jpeg)
        except OSError as e:
            log.warning("snapshot %s not written: %s", path, e.strerror or e)
            return False
        return True

    def _forget_indexed(self, final: bool = False) -> None:
        """Events indexed ``SNAPSHOT_WAIT_S`` ago (or all, at the end) take no more frames; those
        that never got one are counted."""
        now = time.monotonic()
        for eid, (until, has) in list(self._indexed.items()):
            if final or until < now:
                del self._indexed[eid]
                if not has:
                    self.counts["snapshots_missing"] += 1

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
