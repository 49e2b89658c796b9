"""The configuration tree: typed sections (pydantic), every default and check in one place.

``Config`` is the root: global sections (``source``, ``model``, ``tracker``, ``pipeline``,
``output``, ``profile``), the run's ``cameras`` (each with its source, classes, zones, lines and
outputs), top-level ``zones``/``lines`` (of the one camera, or naming theirs with ``camera:``)
and the event deliveries ``mqtt`` and ``webhooks``. Unknown keys are rejected at any depth; wrong
types and out-of-range values name the key's path and what is allowed (`pipeline.errors.validation_line`).
Cross-field checks (camera names, the camera a zone names, zone and line names per camera) are
model validators of `Config`. ``model`` is a `trackpipe.models.spec.ModelSpec`, validated by its
own registries; model files named in a config file are relative to that file (validation
context ``base_dir``).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)
from trackpipe.models.errors import ModelError
from trackpipe.models.registry import BACKENDS, PRECISIONS
from trackpipe.models.spec import KEYS as MODEL_KEYS
from trackpipe.models.spec import PREPROCESS, TRITON_SHM, ModelSpec
from trackpipe.models.zoo import ZOO
from trackpipe.pipeline.errors import field_error, whole_error
from trackpipe.pipeline.events.config import (
    ClassList,
    Line,
    MqttConfig,
    WebhookConfig,
    Zone,
    camera_problem,
    class_list,
    shape_problem,
)
from trackpipe.pipeline.motion.config import DetectConfig, Filters, Masks
from typing_extensions import Annotated, Literal

# a camera's name is part of file and folder names ({camera} in output paths) and of MQTT topics:
# no '.' or '..', no separator, no space or control character, no leading '-' or '.'
CAMERA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
CAMERA_NAME_RULE = "1-64 of A-Z a-z 0-9 _ . -, first a letter, digit or _"


def camera_name_problem(name: Any) -> Optional[str]:
    """None for a valid camera name (`CAMERA_NAME`), else what is wrong, in one line."""
    if isinstance(name, str) and CAMERA_NAME.fullmatch(name):
        return None
    return f"camera names are {CAMERA_NAME_RULE} (pattern {CAMERA_NAME.pattern}), got {name!r}"


def _camera_name(value: Any) -> Any:
    problem = camera_name_problem(value)
    if problem:
        raise field_error(problem)
    return value


def _text(value: Any) -> Any:
    """Numbers read as text where a string is meant (a camera index written as ``uri: 0``)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _on_off(value: Any) -> Any:
    """YAML 1.1 reads on/off as booleans: back to "on"/"off"."""
    return ("on" if value else "off") if isinstance(value, bool) else value


def _check_cpus(value: Any) -> Any:
    from trackpipe.pipeline.common.placement import check_cpus
    problem = check_cpus(value)
    if problem:
        raise field_error(problem)
    return value


def _check_batch(value: Any) -> Any:
    if value == "auto" and isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)
                                                      and 1 <= value <= 64):
        return value
    raise field_error(f"invalid value {value!r} (allowed: auto or 1..64)")


Text = Annotated[str, BeforeValidator(_text)]
CameraName = Annotated[str, BeforeValidator(_camera_name), BeforeValidator(_text),
                       Field(description=f"camera names are {CAMERA_NAME_RULE}")]
OnOff = Annotated[Literal["auto", "on", "off"], BeforeValidator(_on_off)]


def Finite(default: float, description: str = "", **bounds) -> Any:
    """A float field that must be a finite number (within ``bounds``: ge, gt, le)."""
    return Field(default, allow_inf_nan=False, description=description or None, **bounds)


class Section(BaseModel):
    """A mapping of the config: unknown keys rejected, types strict (an int widens to a float)."""

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


class SourceConfig(Section):
    """Where frames come from and how they flow."""

    uri: Optional[Text] = Field(None, description="video file, image folder or glob, camera index, rtsp/http URL, "
                                                  "screen[:MONITOR][@X,Y,W,H]")
    mode: Literal["auto", "lossless", "latest"] = Field(
        "auto", description="lossless: every frame once, in order (files); latest: newest frame, count drops (live)")
    realtime: bool = Field(False, description="pace a file at its own fps and treat it as a live source")
    fps: float = Finite(30.0, "frame rate of image folders and screen capture", gt=0.0, le=1000.0)
    loop: bool = Field(False, description="restart a file or folder at its end")
    decode_threads: int = Field(0, ge=0, le=64, description="FFmpeg decoder threads (0: 1 for files, which are "
                                                            "decoded ahead anyway, FFmpeg's default for live sources)")
    width: int = Field(0, ge=0, le=16384, description="requested camera width (0: device default)")
    height: int = Field(0, ge=0, le=16384, description="requested camera height (0: device default)")
    watchdog_s: float = Finite(5.0, "live: no new frame for this long -> source_lost", gt=0.0, le=3600.0)
    backoff_initial_s: float = Finite(0.5, "reconnect backoff: first wait", gt=0.0, le=600.0)
    backoff_max_s: float = Finite(30.0, "reconnect backoff: longest wait", gt=0.0, le=3600.0)
    wait_for_stream: bool = Field(True, description="rtsp/http: an absent camera at start is waited for with the "
                                                    "reconnect backoff (false: one error line, exit 2)")
    still_waiting_s: List[Annotated[float, Field(gt=0.0, le=86400.0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [60.0, 300.0, 900.0, 3600.0], min_length=1,
        description="a camera not there (absent at start, or lost): 'still waiting for <camera> (since HH:MM:SS)' "
                    "after each of these gaps in seconds, the last one repeating")
    open_timeout_s: float = Finite(10.0, "stream: time allowed to open it", gt=0.0, le=600.0)
    read_timeout_s: float = Finite(5.0, "stream: a read blocked this long is a failed read (its frame is stale)",
                                   gt=0.0, le=600.0)
    ffmpeg_options: Optional[str] = Field(None, description="stream: FFmpeg options 'key;value|key;value' (default: "
                                                            "rtsp_transport;tcp for rtsp, plus fflags;nobuffer|"
                                                            "flags;low_delay|analyzeduration;500000)")
    detect_uri: Optional[Text] = Field(None, description="a low-resolution stream of the same camera to decode and "
                                                         "detect on; uri stays the record stream (docs/motion.md)")


class TrackerConfig(Section):
    name: Text = Field("auto", description="auto (hybrid; independent for image folders and globs), hybrid, "
                                           "independent, sort-ref, sort, bytetrack, deepsort, deepsort-byte")
    options: Dict[str, Any] = Field(default_factory=dict, description="overrides of the tracker's config fields "
                                                                      "(checked by the tracker itself)")
    max_predict: Optional[int] = Field(None, ge=0, description="a confirmed track missed for up to this many frames "
                                                               "is drawn and written at its predicted box, flagged "
                                                               "(null: the tracker's own, 5 for hybrid; 0: off)")
    interpolate: Optional[int] = Field(None, ge=0, description="file runs: fill gaps of up to this many frames per id "
                                                               "in the MOT file at the end (null: the tracker's own, "
                                                               "20 for hybrid; 0: off)")


class PipelineConfig(Section):
    ring_slots: int = Field(8, ge=2, le=256, description="shared-memory frame slots")
    infer_workers: int = Field(0, ge=0, le=64, description="infer processes (0: auto: 2 on a CPU for files, else 1)")
    max_frames: int = Field(0, ge=0, description="stop after this many frames (0: all)")
    duration_s: float = Finite(0.0, "stop after this many seconds of running, model loading not counted "
                                    "(0: no limit)", ge=0.0)
    heartbeat_timeout_s: float = Finite(10.0, "a ready stage silent for this long is considered hung",
                                        gt=0.0, le=3600.0)
    start_timeout_s: float = Finite(1800.0, "time allowed for every stage to become ready (model export or "
                                            "TensorRT engine build included)", gt=0.0)
    stop_timeout_s: float = Finite(2.0, "graceful stop before SIGKILL", gt=0.0, le=60.0)
    max_restarts_per_min: int = Field(3, ge=0, le=1000, description="live sources: stage restarts allowed per minute")
    reclaim_after_s: float = Finite(2.0, "live: a slot in flight this long may be overwritten", gt=0.0)
    start_method: Literal["spawn", "forkserver"] = "spawn"
    batch: Annotated[Union[Literal["auto"], int], BeforeValidator(_check_batch)] = Field(
        "auto", description="infer: frames already waiting run in one detector call, up to this many (1..64; never "
                            "waits for more); auto: measured at start, 1 or 4")
    batch_timeout_ms: float = Finite(10.0, "live, several cameras: after a frame arrives, infer waits this long for "
                                           "the other cameras' frames to join its batch", ge=0.0, le=1000.0)
    cpus: Annotated[Union[bool, str, Dict[str, Any]], BeforeValidator(_check_cpus)] = Field(
        "auto", description="CPU placement: auto (infer on its own cores), off, or {stage: [cores]} "
                            "(pipeline/common/placement.py)")
    camera: CameraName = Field("cam0", description="the camera's name in events, MQTT topics, zones/lines and "
                                                   "{camera} in output paths")


class OutputConfig(Section):
    video: Optional[Text] = Field(None, description="annotated video file (.mp4)")
    fourcc: Text = "mp4v"
    codec: Literal["auto", "h264", "mp4v"] = Field(
        "auto", description="auto: H.264 (PyAV/libx264, fragmented MP4: plays in browsers, survives a kill), else mp4v")
    preset: Literal["auto", "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                    "veryslow"] = Field("auto", description="x264 preset; auto: ultrafast for files on unplaced cores "
                                                            "(encoded as fast as the pipeline runs), else chosen by "
                                                            "its measured CPU cost at the source's size and fps")
    mot: Optional[Text] = Field(None, description="MOTChallenge track file")
    events: Optional[Text] = Field(None, description="JSON-lines events file")
    window: OnOff = Field("auto", description="with display auto: a window (on), none (off), or a window when a "
                                              "display is available (auto)")
    display: Literal["auto", "window", "overlay", "mirror", "none"] = Field(
        "auto", description="shown by render: window (OpenCV), overlay (click-through boxes over the screen source), "
                            "mirror (Qt window of the frames), none; auto: follows output.window")
    region: Optional[List[int]] = Field(None, description="overlay/mirror: screen region X, Y, W, H (default: the "
                                                          "screen source's)")
    headless: bool = Field(False, description="no window, no live table")
    labels: bool = Field(True, description="draw id/class/score labels")
    track_end_frames: int = Field(30, ge=1, description="frames a track id must be unseen before track_ended")
    snapshots: Optional[Text] = Field(None, description="folder: a JPEG of the frame when a new track appears")
    snapshot_classes: ClassList = None
    snapshot_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the snapshots")
    http_port: Optional[int] = Field(None, ge=0, le=65535, description="live view and HTTP API on this port (0: a "
                                                                       "free one, logged as 'live view on URL'; "
                                                                       "null: off)")
    http_host: Text = Field("127.0.0.1", description="address of the live view; anything but loopback needs a token")
    http_token: Optional[str] = Field(None, description="bearer token of the live view (default: "
                                                        "$TRACKPIPE_HTTP_TOKEN)")

    @field_validator("snapshot_classes", mode="before")
    @classmethod
    def _classes(cls, value: Any) -> Optional[list]:
        return class_list(value)

    @field_serializer("http_token")
    def _token(self, value: Optional[str], info) -> Optional[str]:
        return "***" if value and (info.context or {}).get("redact") else value


class ProfileConfig(Section):
    path: Optional[Text] = Field(None, description="write the profile JSON here at exit")
    plot: Optional[Text] = Field(None, description="write a PNG of per-stage FPS over time")
    table: OnOff = Field("auto", description="live per-stage table (auto: live sources)")
    interval_s: float = Finite(1.0, "stats period of every stage", gt=0.0, le=60.0)
    log_interval_s: float = Finite(30.0, "headless live runs: one stats line this often (0: never)", ge=0.0)


class RecordConfig(Section):
    """Recording (docs/recording.md): each camera's compressed packets copied into short segments,
    an SQLite index of segments and events, event clips and snapshots, retention."""

    dir: Optional[Text] = Field(None, description="record folder: <dir>/<camera>/<date>/<start_ms>.mp4 and "
                                                  "index.db (null: no recording)")
    mode: Literal["off", "all", "motion", "events"] = Field(
        "all", description="all: keep every segment; events: keep the segments that overlap a tracked object of "
                           "`classes` (with pre/post roll); motion: the segments where something moved (with "
                           "pre/post roll); off: no recording")
    segment_s: float = Finite(10.0, "segment length in seconds (cut at the first keyframe after it)", ge=1.0,
                              le=600.0)
    pre_s: float = Finite(5.0, "an event's clip starts this long before the object appeared (at the keyframe at "
                               "or before it)", ge=0.0, le=300.0)
    post_s: float = Finite(5.0, "an event's clip ends this long after the object's last sighting", ge=0.0, le=300.0)
    retain_days: float = Finite(7.0, "segments and events older than this are deleted (0: kept until max_gb or "
                                     "min_free_gb)", ge=0.0, le=36500.0)
    max_gb: float = Finite(0.0, "the segments of every camera together stay under this many GB, oldest deleted "
                                "first (0: no limit)", ge=0.0)
    min_free_gb: float = Finite(1.0, "free-space floor of the record folder's disk: under it the oldest segments "
                                     "go first", ge=0.0)
    classes: ClassList = None

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, value: Any) -> Optional[list]:
        return class_list(value)


class CameraRecordConfig(Section):
    """A camera's ``record:``: what differs from the global ``record:`` (null: the global value)."""

    mode: Optional[Literal["off", "all", "motion", "events"]] = None
    segment_s: Optional[float] = Field(None, ge=1.0, le=600.0, allow_inf_nan=False)
    pre_s: Optional[float] = Field(None, ge=0.0, le=300.0, allow_inf_nan=False)
    post_s: Optional[float] = Field(None, ge=0.0, le=300.0, allow_inf_nan=False)
    retain_days: Optional[float] = Field(None, ge=0.0, le=36500.0, allow_inf_nan=False)
    classes: ClassList = None

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, value: Any) -> Optional[list]:
        return class_list(value)


class CameraConfig(Section):
    """One camera of ``cameras:`` (docs/cameras.md); a bare string is its ``uri``. Output paths
    override the ``output`` section's for this camera (``{camera}`` is its name)."""

    name: Optional[CameraName] = Field(None, description="default: cam0, cam1, ... (one camera: pipeline.camera)")
    uri: Text = Field(description="video file, image folder or glob, camera index, rtsp/http URL, screen[...]")
    enabled: bool = Field(True, description="false: this camera is left out of the run (kept in the file)")
    classes: ClassList = None
    zones: List[Zone] = Field(default_factory=list, description="zones of this camera (docs/events.md)")
    lines: List[Line] = Field(default_factory=list, description="counting lines of this camera (docs/events.md)")
    output: Optional[Text] = Field(None, description="annotated video file of this camera")
    mot: Optional[Text] = Field(None, description="MOTChallenge track file of this camera")
    events: Optional[Text] = Field(None, description="JSON-lines events file of this camera")
    snapshots: Optional[Text] = Field(None, description="snapshots folder of this camera")
    record: Optional[CameraRecordConfig] = Field(None, description="this camera's recording settings "
                                                                   "(docs/recording.md; null: the global record:)")
    detect_uri: Optional[Text] = Field(None, description="a low-resolution stream of this camera to decode and "
                                                         "detect on; uri stays the record stream (docs/motion.md)")
    detect: Optional[DetectConfig] = Field(None, description="this camera's detect: keys (those it sets override "
                                                             "the global detect:)")
    filters: Filters = Field(default_factory=dict)
    object_masks: Masks = Field(default_factory=list, description="polygons: a detection whose bottom centre lies "
                                                                  "inside is dropped (docs/motion.md)")
    motion_masks: Masks = Field(default_factory=list, description="polygons whose motion is ignored "
                                                                  "(docs/motion.md)")

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str) -> str:
        if not uri:
            raise field_error("expected a source, got ''")
        return uri

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, value: Any) -> Optional[list]:
        return class_list(value)


def _model_spec(value: Any, info: ValidationInfo) -> ModelSpec:
    """``model:`` as a `ModelSpec` (a mapping of its KEYS; None: the default model)."""
    if isinstance(value, ModelSpec):
        return value
    try:
        return ModelSpec().override(value, base_dir=(info.context or {}).get("base_dir"), where="model")
    except ModelError as e:
        raise whole_error(str(e)) from None


MODEL_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "description": "the detector (docs/models.md): a zoo model, cfg/weights or an ONNX file (YOLOv5/v8/v11, YOLOX, "
                   "RT-DETR), files relative to the config file",
    "properties": {k: ({"enum": list(ZOO)} if k == "model" else {"enum": list(BACKENDS)} if k == "backend"
                       else {"enum": list(PRECISIONS)} if k == "precision"
                       else {"enum": list(PREPROCESS)} if k == "preprocess"
                       else {"enum": list(TRITON_SHM)} if k == "triton_shm"
                       else {"type": "boolean"} if k == "triton_wait" else {}) for k in MODEL_KEYS}}
ModelSection = Annotated[ModelSpec, BeforeValidator(_model_spec), WithJsonSchema(MODEL_SCHEMA)]


class Config(Section):
    """The whole configuration of a run (docs/configuration.md)."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    model: ModelSection = Field(default_factory=ModelSpec)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus metrics on 127.0.0.1:PORT (0: off)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    cameras: List[CameraConfig] = Field(default_factory=list, description="several sources in one run "
                                                                          "(docs/cameras.md); a URI or a mapping each")
    zones: List[Zone] = Field(default_factory=list, description="zones of the camera, or of the camera each names "
                                                                "(docs/events.md)")
    lines: List[Line] = Field(default_factory=list, description="counting lines of the camera, or of the camera each "
                                                                "names (docs/events.md)")
    mqtt: Optional[MqttConfig] = Field(None, description="MQTT delivery of the events: mqtt://HOST:PORT or a mapping "
                                                         "(docs/events.md)")
    webhooks: List[WebhookConfig] = Field(default_factory=list, description="webhook deliveries of the events: URLs "
                                                                            "or mappings")
    detect: DetectConfig = Field(default_factory=DetectConfig, description="motion-gated detection and stationary "
                                                                           "objects (docs/motion.md)")
    filters: Filters = Field(default_factory=dict)
    object_masks: Masks = Field(default_factory=list, description="polygons of the camera (or of the camera each "
                                                                  "names): a detection whose bottom centre lies "
                                                                  "inside is dropped (docs/motion.md)")
    motion_masks: Masks = Field(default_factory=list, description="polygons of the camera (or of the camera each "
                                                                  "names) whose motion is ignored (docs/motion.md)")

    @field_validator("cameras", mode="before")
    @classmethod
    def _cameras(cls, value: Any) -> Any:
        if value is None:
            return []
        return [{"uri": c} if isinstance(c, (str, int)) and not isinstance(c, bool) else c for c in value] \
            if isinstance(value, list) else value

    @field_validator("zones", "lines", mode="before")
    @classmethod
    def _shapes(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("mqtt", mode="before")
    @classmethod
    def _mqtt(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("webhooks", mode="before")
    @classmethod
    def _webhooks(cls, value: Any) -> Any:
        if value is None:
            return []
        return [{"url": w} if isinstance(w, str) else w for w in value] if isinstance(value, list) else value

    @field_serializer("model", when_used="json")
    def _model_out(self, spec: ModelSpec) -> dict:
        return spec.to_mapping()

    def camera_names(self) -> List[str]:
        """The run's camera names: ``cameras[i].name`` (default ``cam<i>``; one camera:
        ``pipeline.camera``), or ``pipeline.camera`` for the one ``source``."""
        if not self.cameras:
            return [self.pipeline.camera]
        several = len(self.cameras) > 1
        return [c.name or (f"cam{i}" if several else self.pipeline.camera) for i, c in enumerate(self.cameras)]

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        """Camera names unique; every zone and line knows its camera and names it uniquely."""
        names = self.camera_names()
        for key, shapes in (("zones", self.zones), ("lines", self.lines)):
            for i, s in enumerate(shapes):
                s.at(f"{key}[{i}]")
                if s.camera is None and len(names) > 1:
                    raise field_error(f"name its camera (camera: NAME) when there are several (cameras: "
                                      f"{', '.join(names)})", s.where)
        for i, cam in enumerate(self.cameras):
            for key, shapes in (("zones", cam.zones), ("lines", cam.lines)):
                for j, s in enumerate(shapes):
                    s.at(f"cameras[{i}].{key}[{j}]")
        problem = camera_problem([*self.zones, *self.lines], names)
        for i, cam in enumerate(self.cameras):
            problem = problem or camera_problem([*cam.zones, *cam.lines], [names[i]])
        if problem:
            raise field_error(problem[1], problem[0])
        for i, name in enumerate(names):
            own = [*self.cameras[i].zones, *self.cameras[i].lines] if self.cameras else []
            shared = [s for s in (*self.zones, *self.lines) if (s.camera or names[0]) == name]
            problem = shape_problem([s.model_copy(update={"camera": name}) for s in (*own, *shared)])
            if problem:
                raise field_error(problem, f"cameras[{i}]" if self.cameras else "zones and lines")
        self._mask_cameras(names)
        return self

    def _mask_cameras(self, names: List[str]) -> None:
        """Top-level masks name their camera when there are several, and a camera that exists;
        a camera's own masks name none but itself."""
        for key in ("object_masks", "motion_masks"):
            for i, m in enumerate(getattr(self, key)):
                m.at(f"{key}[{i}]")
                if m.camera is None and len(names) > 1:
                    raise field_error(f"name its camera (camera: NAME) when there are several (cameras: "
                                      f"{', '.join(names)})", m.where)
                if m.camera is not None and m.camera not in names:
                    raise field_error(f"unknown camera {m.camera!r} (cameras: {', '.join(names)})",
                                      f"{m.where}.camera")
            for c, cam in enumerate(self.cameras):
                for i, m in enumerate(getattr(cam, key)):
                    m.at(f"cameras[{c}].{key}[{i}]")
                    if m.camera is not None and m.camera != names[c]:
                        raise field_error(f"a camera's own mask belongs to it ({names[c]!r}), got {m.camera!r}",
                                          f"{m.where}.camera")
