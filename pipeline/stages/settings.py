"""What each stage process receives: one frozen, picklable settings object per stage kind.

The parent resolves everything once (`runtime.processes.StageSettingsBuilder`, from the
`pipeline.config.Config` tree and the probed cameras): paths per camera, zones and lines as
validated `Zone`/`Line` objects, class names as ids, the display mode, the tracker's options.
A stage's constructor is ``Process(rc, settings)`` and it reads nothing else of the config.

Per camera, every stage that handles cameras gets the same `Camera` objects; ``Camera.config``
is the camera's `CameraConfig` (every camera has one: the ``source.uri`` camera a default one),
so a new per-camera option is a field of `CameraConfig` read by the stage that uses it as
``cam.config.<field>``; a value derived from several settings gets a field here and one line in
the builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

from trackpipe.pipeline.config.tree import CameraConfig, SourceConfig
from trackpipe.pipeline.events.config import Line, Zone


@dataclass(frozen=True)
class Camera:
    """One source of a run, resolved from the config tree in the parent (`runtime.cameras`).

    ``index``: its position (capture process, ring, ``FrameMeta.source_id``); ``classes``: class
    ids kept for this camera (None: every class the model reports); ``zones``/``lines``: its
    validated `Zone`/`Line` objects (its own and the top-level ones naming it; None: none);
    output paths resolved (``{camera}`` replaced, one file per camera); ``info``: its
    `media.sources.SourceInfo` once probed; ``config``: its entry of ``cameras:`` (a default
    one, with ``name`` and ``uri``, for ``source.uri``)."""

    index: int
    name: str
    uri: str
    classes: Optional[Tuple[int, ...]] = None
    zones: Optional[Tuple[Zone, ...]] = None
    lines: Optional[Tuple[Line, ...]] = None
    video: Optional[str] = None
    mot: Optional[str] = None
    events: Optional[str] = None
    snapshots: Optional[str] = None
    info: Optional[Any] = None
    config: Optional[CameraConfig] = None
    motion: Optional[Any] = None        # motion.setup.CameraMotion: gating, filters, masks, detect stream


Names = Optional[Tuple[str, ...]]       # the model's class names (None: it has none)


@dataclass(frozen=True)
class CaptureSettings:
    """One camera's capture: ``consumers`` infer workers (each gets its own end of stream);
    ``mask_overlay``: paint the overlay display's drawings out of every grab."""

    camera: Camera
    source: SourceConfig
    max_frames: int = 0
    reclaim_after_s: float = 2.0
    consumers: int = 1
    mask_overlay: bool = False


@dataclass(frozen=True)
class InferSettings:
    """One infer worker. ``frame_shape`` (H, W, 3): the largest camera's; ``batch``: an int or
    ``auto``, at most ``max_batch`` (a batch holds ring slots); ``probe_uri``: a file whose first
    frames the solo measurement and precision ``auto`` use; ``factory``: spec -> Detector
    (picklable; None: `models.factory.build_detector`); ``restart``: a restarted worker (a remote
    detector's absent server is waited for, as the running one waits out a lost server)."""

    spec: Any                           # models.spec.ModelSpec
    frame_shape: Tuple[int, int, int]
    worker: int = 0
    batch: Union[int, str] = 1
    max_batch: int = 8
    batch_timeout_ms: float = 10.0
    probe_uri: Optional[str] = None
    solo_seconds: float = 1.2
    warmup: bool = True
    factory: Optional[Callable] = None
    restart: bool = False


@dataclass(frozen=True)
class TrackSettings:
    """The tracker (``tracker`` name, its validated ``options``) of every camera; ``id_offset``:
    a restarted tracker numbers its ids from here; ``workers``: infer workers (each passes an end
    of stream on); ``to_sink`` / ``to_web``: the stages fed besides render."""

    cameras: Tuple[Camera, ...]
    tracker: str
    options: Dict[str, Any]
    names: Names = None
    to_sink: bool = False
    to_web: bool = False
    id_offset: int = 0
    workers: int = 1


@dataclass(frozen=True)
class RenderSettings:
    """Drawing, video, snapshots and the display. ``display``: window | overlay | mirror | none;
    ``region``: the overlay's / mirror's screen x, y, w, h; ``preset``: x264 preset (None: chosen
    by its measured cost); ``snapshot_classes``: class ids (None: every class);
    ``snapshots_to_sink``: every snapshot JPEG also goes to the sink's delivery (MQTT);
    ``incarnation`` > 0: a restart (videos continue in ``<name>.partN.mp4``); ``clean_slots``:
    another stage reads the slots (the live view): draw on a private copy; ``record``: the
    recorded cameras' tracks keep their best frame for their events' snapshots (sent to the sink)."""

    cameras: Tuple[Camera, ...]
    names: Names = None
    display: str = "none"
    region: Optional[Tuple[int, int, int, int]] = None
    codec: str = "auto"
    preset: Optional[str] = None
    labels: bool = True
    snapshot_classes: Optional[Tuple[int, ...]] = None
    snapshot_quality: int = 90
    snapshots_to_sink: bool = False
    incarnation: int = 0
    clean_slots: bool = False
    record: Optional[Any] = None        # recording.recorder.RecorderSettings (None: nothing recorded)


@dataclass(frozen=True)
class SinkSettings:
    """MOT files, the events files and the delivery targets: ``targets`` (kind, config) pairs of
    `events.targets.TARGETS`; ``append``: a restarted sink continues its files; ``interpolate``:
    gaps filled per id in the MOT files at the end of a lossless run; ``record``: the recorder
    (`pipeline.recording`) runs in this process, the one writer of its index."""

    cameras: Tuple[Camera, ...]
    names: Names = None
    targets: Tuple[Tuple[str, Any], ...] = ()
    append: bool = False
    interpolate: int = 0
    record: Optional[Any] = None        # recording.recorder.RecorderSettings (None: nothing recorded)


@dataclass(frozen=True)
class WebSettings:
    """The live view: ``web`` its checked `web.config.WebConfig`; ``history``: events kept for
    clients that come back; ``idle_refresh_s``: a frame copied at least this often unwatched."""

    web: Any                            # web.config.WebConfig
    cameras: Tuple[Camera, ...]
    names: Names = None
    idle_refresh_s: float = 1.0
    history: int = 1000
    record: Optional[Any] = None        # recording.recorder.RecorderSettings: the review API reads its folder
