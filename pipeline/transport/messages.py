"""Every message between the processes of a run: one typed dataclass per kind, with its encoding.

On the wire a message is ZeroMQ multipart ``[kind, JSON header, *array buffers]`` (see
`transport.bus`); pixels never travel here, frames are named by their ring slot. Each
message class has ``KIND``, ``header()`` / ``arrays()`` (what goes on the wire) and
``from_wire(header, arrays)``; `encode` and `decode` turn any of them into frames and back.

One frame's path, message by message::

    capture ──Frame(meta)──────────────▶ infer        (PUSH/PULL "frames", round-robin to workers)
    infer   ──Detections(meta, dets)───▶ track        ("dets"; dets None: infer dropped the frame)
    track   ──Tracked(meta, tracks)────▶ render, sink ("tracks", "sink"; tracks None: dropped)
    render  ──Release(slot, seq)───────▶ capture      ("ctl": wakes capture; the credit is in the ring)
    infer   ──Want()───────────────────▶ capture      ("ctl", latest-frame mode: "send me the newest")
    render  ──Drawn(seq, rects)────────▶ capture      ("overlay", display overlay: mask these out)
    render  ──Snapshot(jpeg)───────────▶ sink         ("sink", mqtt.snapshots: the delivery publishes it)
    render  ──BestFrame(jpeg, box)─────▶ sink         ("sink", recording: a track's best frame, its snapshot)
    capture ──SourceEvent──▶ infer ──▶ track ──▶ sink  (in band with the frames: lost / restored)
    capture ──EndOfStream(frames)──▶ infer ──▶ track ──▶ render, sink
    every stage ──State / Stats / Log──▶ supervisor ("stats")
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np

from trackpipe.models.types import Detections as DetectionArrays
from trackpipe.models.types import Tracks


class Kind(str, enum.Enum):
    """Message kinds; the value is the first multipart frame on the wire."""

    FRAME = "frame"            # capture -> infer: a new frame is in a ring slot
    DETECTIONS = "dets"        # infer -> track: the detector's output for one frame
    TRACKED = "tracks"         # track -> render, sink: the tracker's output for one frame
    EOS = "eos"                # end of stream, passed down the chain
    SOURCE_EVENT = "event"     # source_lost / source_restored, in band with the frames
    WANT = "want"              # infer -> capture (latest mode): send the newest frame
    RELEASE = "release"        # render -> capture: a slot is free again (wake-up only)
    DRAWN = "drawn"            # render (overlay display) -> capture: rectangles painted on screen
    SNAPSHOT = "snapshot"      # render -> sink: a snapshot JPEG for the deliveries that take them
    BEST = "best"              # render -> sink: a recorded track's best frame so far (JPEG), its event's snapshot
    STATE = "state"            # stage -> supervisor: lifecycle
    STATS = "stats"            # stage -> supervisor: profiling snapshot
    LOG = "log"                # stage -> supervisor: a log record
    LIVE = "live"              # supervisor -> web: the live profile and metrics text


class StageState(str, enum.Enum):
    """Lifecycle of a stage process. READY, DONE, ERROR and QUIT are reported by the stage;
    FINISHED (exited after DONE) and HUNG (no heartbeat) are the supervisor's view."""

    READY = "ready"
    DONE = "done"
    ERROR = "error"
    QUIT = "quit"              # the user closed the display: stop the run
    FINISHED = "finished"
    HUNG = "hung"


@dataclass(frozen=True)
class FrameMeta:
    """Where a frame is and when it was made. ``seq`` is monotonic per run; ``t_capture`` is
    ``time.time()``, ``t_mono`` ``time.monotonic()`` (system-wide, comparable across processes),
    both taken right after the frame was decoded; ``slot`` is its ring slot, ``shape`` (H, W, 3)."""

    seq: int
    slot: int
    t_capture: float
    t_mono: float
    shape: Tuple[int, int, int]
    source_id: int = 0
    camera: str = ""

    def to_dict(self) -> dict:
        return {"seq": self.seq, "slot": self.slot, "t_capture": self.t_capture, "t_mono": self.t_mono,
                "shape": list(self.shape), "source_id": self.source_id, "camera": self.camera}

    @classmethod
    def from_dict(cls, d: dict) -> "FrameMeta":
        return cls(int(d["seq"]), int(d["slot"]), float(d["t_capture"]), float(d["t_mono"]),
                   tuple(int(v) for v in d["shape"]), int(d.get("source_id", 0)), str(d.get("camera", "")))


# --- Detections / Tracks as named arrays ------------------------------------------------------

def pack_dets(d: DetectionArrays) -> Dict[str, np.ndarray]:
    """Detections or Tracks -> named arrays for the wire (no copy)."""
    out = {"xyxy": d.xyxy, "score": d.score, "class_id": d.class_id}
    if d.feature is not None:
        out["feature"] = d.feature
    if isinstance(d, Tracks):
        out.update(track_id=d.track_id, age=d.age, hits=d.hits)
        if d.predicted is not None:
            out["predicted"] = d.predicted
    return out


def unpack_dets(a: Dict[str, np.ndarray]) -> DetectionArrays:
    """Inverse of `pack_dets`: writable copies (these arrays are small)."""
    a = {k: np.array(v) for k, v in a.items()}
    if "track_id" in a:
        return Tracks(a["xyxy"], a["score"], a["class_id"], a.get("feature"), track_id=a["track_id"],
                      age=a.get("age"), hits=a.get("hits"), predicted=a.get("predicted"))
    return DetectionArrays(a["xyxy"], a["score"], a["class_id"], a.get("feature"))


# --- messages -----------------------------------------------------------------------------------

class Message:
    """Base of every message: ``KIND`` plus the wire form."""

    KIND: ClassVar[Kind]

    def header(self) -> dict:
        return {}

    def arrays(self) -> Optional[Dict[str, np.ndarray]]:
        return None

    @classmethod
    def from_wire(cls, header: dict, arrays: Dict[str, np.ndarray]) -> "Message":
        return cls()


def _motion_array(arrays: Optional[Dict[str, np.ndarray]]) -> Optional[np.ndarray]:
    m = (arrays or {}).get("motion")
    return None if m is None else np.array(m, np.float32).reshape(-1, 4)


@dataclass
class Frame(Message):
    """capture -> infer: frame ``meta.seq`` is ready in ring slot ``meta.slot``. ``detect``: the
    camera's motion gate wants it detected (False: infer passes it on without detecting);
    ``motion``: its motion boxes (M,4) float32 xyxy frame pixels (None: no motion detector)."""

    KIND: ClassVar[Kind] = Kind.FRAME
    meta: FrameMeta
    detect: bool = True
    motion: Optional[np.ndarray] = None

    def header(self) -> dict:
        h = self.meta.to_dict()
        if not self.detect:
            h["detect"] = False
        return h

    def arrays(self):
        return None if self.motion is None else {"motion": np.asarray(self.motion, np.float32).reshape(-1, 4)}

    @classmethod
    def from_wire(cls, header, arrays):
        return cls(FrameMeta.from_dict(header), bool(header.get("detect", True)), _motion_array(arrays))


@dataclass
class Detections(Message):
    """infer -> track. ``dets`` None: infer dropped the frame (latest mode: overwritten while
    read), or ``skipped`` it (the motion gate: nothing moved); the frame still travels on so that
    render releases its slot. ``t_infer``: seconds. ``motion``: the frame's motion boxes (M,4),
    passed on from `Frame`."""

    KIND: ClassVar[Kind] = Kind.DETECTIONS
    meta: FrameMeta
    dets: Optional[DetectionArrays]
    t_infer: float = 0.0
    skipped: bool = False
    motion: Optional[np.ndarray] = None

    @property
    def dropped(self) -> bool:
        return self.dets is None and not self.skipped

    def header(self) -> dict:
        h = {"meta": self.meta.to_dict(), "t_infer": self.t_infer, "dropped": self.dets is None}
        if self.skipped:
            h["skipped"] = True
        return h

    def arrays(self):
        out = {} if self.dets is None else pack_dets(self.dets)
        if self.motion is not None:
            out["motion"] = np.asarray(self.motion, np.float32).reshape(-1, 4)
        return out or None

    @classmethod
    def from_wire(cls, header, arrays):
        dets = None if header["dropped"] else unpack_dets({k: v for k, v in arrays.items() if k != "motion"})
        return cls(FrameMeta.from_dict(header["meta"]), dets, float(header.get("t_infer", 0.0)),
                   bool(header.get("skipped", False)), _motion_array(arrays))


@dataclass
class Tracked(Message):
    """track -> render and sink. ``dropped`` (then ``tracks`` is None): infer dropped the frame, or
    track did as older than one already tracked; it still travels on so that render releases its
    slot. ``t_infer``/``t_track``: seconds spent on it by infer and track. ``events``: the events
    of this frame as JSON-ready dicts (``track_started``/``track_ended``, ``zone_enter``/``zone_exit``,
    ``line_cross``), in order; they travel in the header. Motion gating: ``detected`` False when
    the frame was not detected (nothing moved: the tracks are held), ``stationary`` (N,) bool per
    track (None: none known), ``motion`` the frame's motion boxes (M,4) float32 xyxy (None: no
    motion detector ran; empty: nothing moved) -- what a ``motion`` recording mode keys on."""

    KIND: ClassVar[Kind] = Kind.TRACKED
    meta: FrameMeta
    tracks: Optional[Tracks] = None
    dropped: bool = False
    t_infer: float = 0.0
    t_track: float = 0.0
    events: List[dict] = field(default_factory=list)
    detected: bool = True
    stationary: Optional[np.ndarray] = None
    motion: Optional[np.ndarray] = None

    @property
    def moving(self) -> bool:
        """Something moved in this frame (False also when no motion detector ran)."""
        return self.motion is not None and len(self.motion) > 0

    def header(self) -> dict:
        h = {"meta": self.meta.to_dict(), "t_infer": self.t_infer, "t_track": self.t_track,
             "dropped": self.dropped}
        if self.events:
            h["events"] = self.events
        if not self.detected:
            h["detected"] = False
        return h

    def arrays(self):
        out = {} if self.dropped or self.tracks is None else pack_dets(self.tracks)
        if out and self.stationary is not None:
            out["stationary"] = np.asarray(self.stationary, bool).reshape(-1)
        if self.motion is not None:
            out["motion"] = np.asarray(self.motion, np.float32).reshape(-1, 4)
        return out or None

    @classmethod
    def from_wire(cls, header, arrays):
        dropped = bool(header["dropped"])
        arrays = arrays or {}
        st = arrays.get("stationary")
        tracks = None if dropped or "xyxy" not in arrays else unpack_dets(
            {k: v for k, v in arrays.items() if k not in ("stationary", "motion")})
        return cls(FrameMeta.from_dict(header["meta"]), tracks, dropped,
                   float(header.get("t_infer", 0.0)), float(header.get("t_track", 0.0)),
                   list(header.get("events", ())), bool(header.get("detected", True)),
                   None if st is None else np.array(st, bool), _motion_array(arrays))


@dataclass
class EndOfStream(Message):
    """The source ended after ``frames`` frames (seqs 0 .. frames-1). ``events``: from track on,
    the events of the end itself (every live track's ``track_ended``, zone exits), as dicts."""

    KIND: ClassVar[Kind] = Kind.EOS
    frames: int = 0
    events: List[dict] = field(default_factory=list)
    source_id: int = 0      # the camera whose stream ended (`FrameMeta.source_id`)

    def header(self) -> dict:
        h = {"frames": self.frames, "source_id": self.source_id}
        if self.events:
            h["events"] = self.events
        return h

    @classmethod
    def from_wire(cls, header, arrays):
        return cls(int(header.get("frames", 0)), list(header.get("events", ())), int(header.get("source_id", 0)))


@dataclass
class SourceEvent(Message):
    """``source_lost`` / ``source_restored``: ``t`` wall time, ``seq`` the last frame before it,
    ``source`` the URI, ``reason`` why it was lost."""

    KIND: ClassVar[Kind] = Kind.SOURCE_EVENT
    event: str
    t: float
    seq: int
    source: str = ""
    reason: Optional[str] = None
    source_id: int = 0      # the camera (`FrameMeta.source_id`)

    def header(self) -> dict:
        h = {"event": self.event, "t": self.t, "seq": self.seq, "source": self.source, "source_id": self.source_id}
        if self.reason is not None:
            h["reason"] = self.reason
        return h

    def fields(self) -> dict:
        """What the events file writes besides ``event``, ``t``, ``seq`` (and the camera)."""
        h = self.header()
        for k in ("event", "t", "seq", "source_id"):
            h.pop(k)
        return h

    @classmethod
    def from_wire(cls, header, arrays):
        return cls(header["event"], float(header["t"]), int(header["seq"]), header.get("source", ""),
                   header.get("reason"), int(header.get("source_id", 0)))


@dataclass
class Want(Message):
    """infer -> capture (latest mode): idle, send the newest frame."""

    KIND: ClassVar[Kind] = Kind.WANT


@dataclass
class Release(Message):
    """render -> capture: done with frame ``seq`` in ``slot`` (a wake-up; the credit itself is
    written in the ring's control table)."""

    KIND: ClassVar[Kind] = Kind.RELEASE
    slot: int = -1
    seq: int = -1

    def header(self) -> dict:
        return {"slot": self.slot, "seq": self.seq}

    @classmethod
    def from_wire(cls, header, arrays):
        return cls(int(header["slot"]), int(header["seq"]))


@dataclass
class Drawn(Message):
    """render (overlay display) -> capture: ``rects`` (M, 4) int32 x1, y1, x2, y2 (exclusive),
    region pixels, painted on screen for frame ``seq``; capture masks them out of its grabs."""

    KIND: ClassVar[Kind] = Kind.DRAWN
    seq: int = -1
    rects: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int32))

    def header(self) -> dict:
        return {"seq": self.seq}

    def arrays(self):
        return {"rects": np.asarray(self.rects, np.int32).reshape(-1, 4)}

    @classmethod
    def from_wire(cls, header, arrays):
        r = arrays.get("rects")
        return cls(int(header.get("seq", -1)),
                   np.zeros((0, 4), np.int32) if r is None else np.array(r, np.int32).reshape(-1, 4))


@dataclass
class State(Message):
    """stage -> supervisor: ``stage`` reached ``state``; ``message`` explains an ERROR."""

    KIND: ClassVar[Kind] = Kind.STATE
    stage: str = ""
    state: StageState = StageState.READY
    message: str = ""

    def header(self) -> dict:
        return {"stage": self.stage, "state": self.state.value, "message": self.message}

    @classmethod
    def from_wire(cls, header, arrays):
        return cls(header["stage"], StageState(header["state"]), header.get("message", ""))


@dataclass
class StatsSnapshot:
    """Cumulative profile of one stage process since it started.

    ``counters`` are summed when processes are merged (infer workers, restarted incarnations):
    e.g. ``detect_s``, ``detect_n``, ``cpu_s``. ``gauges`` are values of this process reported
    as they are (the newest wins), e.g. ``source_up``, ``frames_grabbed``, ``backend``.
    ``proc``/``wait``/``hists`` are histograms in `profiling.stats.Histogram.to_dict` form."""

    stage: str
    items: int = 0
    drops: int = 0
    t_first: Optional[float] = None
    t_last: Optional[float] = None
    window_fps: float = 0.0
    proc: dict = field(default_factory=dict)
    wait: dict = field(default_factory=dict)
    counters: Dict[str, float] = field(default_factory=dict)
    gauges: Dict[str, Any] = field(default_factory=dict)
    hists: Dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"stage": self.stage, "items": self.items, "drops": self.drops, "t_first": self.t_first,
                "t_last": self.t_last, "window_fps": self.window_fps, "proc": self.proc, "wait": self.wait,
                "counters": dict(self.counters), "gauges": dict(self.gauges), "hists": dict(self.hists)}

    @classmethod
    def from_dict(cls, d: dict) -> "StatsSnapshot":
        return cls(d["stage"], int(d["items"]), int(d["drops"]), d["t_first"], d["t_last"],
                   float(d.get("window_fps", 0.0)), d.get("proc", {}), d.get("wait", {}),
                   dict(d.get("counters", {})), dict(d.get("gauges", {})), dict(d.get("hists", {})))


@dataclass
class Stats(Message):
    """stage -> supervisor, about once a second and once more at exit."""

    KIND: ClassVar[Kind] = Kind.STATS
    snapshot: StatsSnapshot = None

    def header(self) -> dict:
        return self.snapshot.to_dict()

    @classmethod
    def from_wire(cls, header, arrays):
        return cls(StatsSnapshot.from_dict(header))


@dataclass
class Log(Message):
    """stage -> supervisor: one log record, re-logged by the supervisor under ``name``."""

    KIND: ClassVar[Kind] = Kind.LOG
    stage: str = ""
    level: int = 20
    name: str = "pipeline"
    msg: str = ""

    def header(self) -> dict:
        return {"stage": self.stage, "level": self.level, "name": self.name, "msg": self.msg}

    @classmethod
    def from_wire(cls, header, arrays):
        return cls(header.get("stage", ""), int(header.get("level", 20)), header.get("name", "pipeline"),
                   header.get("msg", ""))


@dataclass
class LiveStats(Message):
    """supervisor -> web, once a profile period: ``report`` (the ``--profile`` JSON shape, without the
    timeline) and ``metrics`` (Prometheus text of the same registry as ``--metrics-port``)."""

    KIND: ClassVar[Kind] = Kind.LIVE
    report: dict = field(default_factory=dict)
    metrics: str = ""

    def header(self) -> dict:
        return {"report": self.report, "metrics": self.metrics}

    @classmethod
    def from_wire(cls, header, arrays):
        return cls(dict(header.get("report", {})), str(header.get("metrics", "")))


@dataclass
class Snapshot(Message):
    """render -> sink: the snapshot JPEG of a new track (``jpeg`` (N,) uint8, the encoded file,
    not pixels) of camera ``source_id``, frame ``seq``, for the delivery targets that publish
    snapshots (MQTT with ``snapshots: true``)."""

    KIND: ClassVar[Kind] = Kind.SNAPSHOT
    source_id: int = 0
    seq: int = -1
    track_id: int = -1
    jpeg: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))

    def header(self) -> dict:
        return {"source_id": self.source_id, "seq": self.seq, "track_id": self.track_id}

    def arrays(self):
        return {"jpeg": np.asarray(self.jpeg, np.uint8).reshape(-1)}

    @classmethod
    def from_wire(cls, header, arrays):
        j = arrays.get("jpeg")
        return cls(int(header.get("source_id", 0)), int(header.get("seq", -1)), int(header.get("track_id", -1)),
                   np.zeros(0, np.uint8) if j is None else np.array(j, np.uint8))


@dataclass
class BestFrame(Message):
    """render -> sink: a recorded track's best sighting so far, for its event's snapshot: camera
    ``source_id``, frame ``seq`` captured at ``t``, ``track_id``, its ``score`` and ``box`` (4,)
    float32 xyxy pixels, and the clean frame as JPEG (``jpeg`` (N,) uint8, the encoded file)."""

    KIND: ClassVar[Kind] = Kind.BEST
    source_id: int = 0
    seq: int = -1
    t: float = 0.0
    track_id: int = -1
    score: float = 0.0
    box: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    jpeg: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))

    def header(self) -> dict:
        return {"source_id": self.source_id, "seq": self.seq, "t": self.t, "track_id": self.track_id,
                "score": self.score}

    def arrays(self):
        return {"box": np.asarray(self.box, np.float32).reshape(4), "jpeg": np.asarray(self.jpeg, np.uint8).reshape(-1)}

    @classmethod
    def from_wire(cls, header, arrays):
        j, b = arrays.get("jpeg"), arrays.get("box")
        return cls(int(header.get("source_id", 0)), int(header.get("seq", -1)), float(header.get("t", 0.0)),
                   int(header.get("track_id", -1)), float(header.get("score", 0.0)),
                   np.zeros(4, np.float32) if b is None else np.array(b, np.float32),
                   np.zeros(0, np.uint8) if j is None else np.array(j, np.uint8))


MESSAGE_TYPES: Dict[Kind, Type[Message]] = {
    c.KIND: c for c in (Frame, Detections, Tracked, EndOfStream, SourceEvent, Want, Release, Drawn, Snapshot, BestFrame,
                        State, Stats, Log, LiveStats)}
_BY_WIRE = {k.value.encode(): (k, c) for k, c in MESSAGE_TYPES.items()}


# --- wire encoding --------------------------------------------------------------------------------

def encode_parts(kind: str, header: Optional[dict] = None,
                 arrays: Optional[Dict[str, np.ndarray]] = None) -> list:
    """-> multipart frames ``[kind, json header, *array buffers]``; the arrays' dtypes and shapes
    travel in the header under ``"_a"``."""
    header = dict(header or {})
    bufs = []
    if arrays:
        spec = []
        for k, a in arrays.items():
            a = np.ascontiguousarray(a)
            spec.append([k, a.dtype.str, list(a.shape)])
            bufs.append(memoryview(a).cast("B") if a.size else b"")
        header["_a"] = spec
    return [kind.encode(), json.dumps(header, separators=(",", ":")).encode()] + bufs


def decode_parts(parts: Sequence) -> Tuple[str, dict, Dict[str, np.ndarray]]:
    """Inverse of `encode_parts`; arrays are read-only views on the received buffers."""
    kind = bytes(parts[0]).decode()
    header = json.loads(bytes(parts[1]))
    arrays = {}
    for (k, dt, shape), buf in zip(header.pop("_a", []), parts[2:], strict=False):
        arrays[k] = np.frombuffer(buf, dtype=np.dtype(dt)).reshape(shape)
    return kind, header, arrays


def encode(msg: Message) -> list:
    """A message -> multipart frames."""
    return encode_parts(msg.KIND.value, msg.header(), msg.arrays())


def decode(parts: Sequence) -> Message:
    """Multipart frames -> the typed message; ValueError for an unknown kind."""
    entry = _BY_WIRE.get(bytes(parts[0]))
    if entry is None:
        raise ValueError(f"unknown message kind {bytes(parts[0])!r}")
    _, header, arrays = decode_parts(parts)
    return entry[1].from_wire(header, arrays)
