"""Detect and track objects in a video, image folder, camera, stream or screen.

    python run_tracker.py --source video.mp4 --output out.mp4 --mot tracks.txt --profile profile.json
    python run_tracker.py --source rtsp://cam/stream --config configs/rtsp-headless.yaml --events ev.jsonl

Settings come from ``--config`` (default ``configs/default.yaml``), then ``--set key=value``,
then the flags below. Errors print one ``error: ...`` line; exit codes: 0 done, 1 failed,
2 bad input, 130 interrupted (Ctrl-C), 143 SIGTERM.

(The command line behind ``run_tracker.py`` and the ``trackpipe`` console script.)
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"

# run_tracker.py --help's epilog: the config's cameras, zones and lines, one example each (each
# example line loads with the config model: tests/test_messages_name_real_keys.py)
SHAPES_HELP = """\
cameras, zones and lines: keys of the --config file (docs/cameras.md, docs/events.md):
  cameras  several sources in one run, each with a name, its own classes, zones and lines:
    cameras: [{name: door, uri: "rtsp://10.0.0.5/stream"}, {name: yard, uri: "rtsp://10.0.0.6/stream"}]
  zones    a polygon (fractions of the frame or pixels): zone_enter/zone_exit events and counts:
    zones: [{name: porch, points: [[0.1, 0.5], [0.6, 0.5], [0.6, 1.0], [0.1, 1.0]]}]
  lines    a counting line, two points A then B: line_cross events and counts per direction:
    lines: [{name: gate, points: [[200, 400], [900, 400]]}]
  with several cameras, a top-level zone or line names its camera (camera: yard), or goes under it;
  on the command line: --set 'lines=[{name: gate, points: [[200, 400], [900, 400]]}]'
"""

# flag dest -> dotted config key
_OVERRIDES = {
    "mode": "source.mode", "realtime": "source.realtime", "loop": "source.loop",
    "tracker": "tracker.name", "output": "output.video", "mot": "output.mot", "events": "output.events",
    "snapshots": "output.snapshots",
    "headless": "output.headless", "window": "output.window", "display": "output.display",
    "max_frames": "pipeline.max_frames", "duration": "pipeline.duration_s",
    "ring_slots": "pipeline.ring_slots", "profile": "profile.path", "profile_plot": "profile.plot",
    "metrics_port": "metrics_port", "log_level": "log_level",
    "max_predict": "tracker.max_predict", "interpolate": "tracker.interpolate",
    "http_port": "output.http_port", "http_host": "output.http_host", "http_token": "output.http_token",
    "record": "record.dir",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        if message.startswith("unrecognized arguments") and any(a.startswith("--source") for a in sys.argv):
            message += " (an unquoted glob? the shell expanded it: quote it, e.g. --source 'frames/*.jpg')"
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The CLI; model flags come from trackpipe.models.cli_args (the same as ``python -m models``)."""
    from trackpipe.models.cli_args import add_model_args, command_name
    from trackpipe.trackers.factory import TRACKER_NAMES

    paragraphs = __doc__.split("\n\n")
    prog = command_name("run_tracker.py", ("pipeline", "trackpipe.pipeline"), ("run_tracker.py", "trackpipe"))
    p = _Parser(prog=prog, description=(paragraphs[0] + "\n\n" + paragraphs[2]).replace("``", ""),
                epilog=SHAPES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", metavar="URI",
                   help="video file, image folder or glob, camera index, rtsp/http URL, screen[:N][@X,Y,W,H]; "
                        "repeat it for several cameras in one run (cam0, cam1, ...; outputs may hold {camera})")
    p.add_argument("--config", default=None, help="YAML config (default configs/default.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set pipeline.ring_slots=4 (repeatable)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration (config file, --set and flags; secrets redacted) as "
                        "YAML and exit")
    p.add_argument("--config-schema", nargs="?", const="-", metavar="PATH",
                   help="write the JSON schema of config files (for editors) to PATH (default: stdout) and exit")
    add_model_args(p, defaults=False)  # None = not given: the config's model section applies
    p.add_argument("--classes", help="keep only these classes: ids or names, comma separated")
    t = p.add_argument_group("tracking and outputs")
    t.add_argument("--tracker", choices=("auto", *TRACKER_NAMES), metavar="NAME",
                   help="auto (default: hybrid; independent for image folders and globs, where every image's "
                        "detections are output at once, nothing linked across images), or one of: "
                        + ", ".join(TRACKER_NAMES))
    t.add_argument("--max-predict", type=int, metavar="N",
                   help="draw and write a confirmed track missed for up to N frames at its predicted box, "
                        "flagged (MOT conf -1, JSON predicted); 0: off (default: the tracker's, 5)")
    t.add_argument("--interpolate", type=int, metavar="N",
                   help="file runs: fill gaps of up to N frames per id in the MOT file at the end (MOT conf 0); "
                        "0: off (default: the tracker's, 20)")
    t.add_argument("--camera", metavar="NAME", action="append",
                   help="the camera's name in events, MQTT topics and outputs (default cam0, cam1, ...); "
                        "once per --source, in the same order")
    t.add_argument("--mqtt", metavar="URL", help="publish the events to MQTT: mqtt://[user:pass@]HOST[:PORT]")
    t.add_argument("--webhook", metavar="URL", action="append", default=[],
                   help="POST every event's JSON to URL (repeatable)")
    t.add_argument("--output", help="annotated video file (.mp4)")
    t.add_argument("--mot", help="MOTChallenge track file")
    t.add_argument("--events", help="JSON-lines events file")
    t.add_argument("--snapshots", metavar="DIR", help="a JPEG of the frame when a new track appears")
    t.add_argument("--record", metavar="DIR",
                   help="record every camera into DIR: its packets copied into 10 s segments, an index of "
                        "segments and events, event clips and snapshots (record: in the config; docs/recording.md)")
    t.add_argument("--snapshot-classes", metavar="CLASSES",
                   help="snapshot only new tracks of these classes: ids or names, comma separated")
    t.add_argument("--headless", action="store_true", default=None, help="no window, no live table")
    t.add_argument("--window", choices=("auto", "on", "off"), help="live window (auto: when a display exists)")
    t.add_argument("--display", choices=("auto", "window", "overlay", "mirror", "none"),
                   help="what render shows: an OpenCV window, a click-through overlay over the screen source, "
                        "a mirror window, nothing (auto: the window, see --window)")
    r = p.add_argument_group("run")
    r.add_argument("--max-frames", type=int, help="stop after N frames")
    r.add_argument("--duration", type=float, help="stop after S seconds of running (model loading not counted)")
    r.add_argument("--mode", choices=("auto", "lossless", "latest"), help="flow control (auto: by source)")
    r.add_argument("--realtime", action="store_true", default=None, help="play a file at its fps, as a live source")
    r.add_argument("--loop", action="store_true", default=None, help="restart a file or folder at its end")
    r.add_argument("--ring-slots", type=int, help="shared-memory frame slots")
    r.add_argument("--profile", metavar="PROFILE.json", help="write the per-stage profile here")
    r.add_argument("--profile-plot", metavar="PLOT.png", help="write per-stage FPS over time")
    r.add_argument("--metrics-port", type=int, help="Prometheus metrics on 127.0.0.1:PORT")
    r.add_argument("--http-port", type=int, metavar="PORT",
                   help="live view and HTTP API on 127.0.0.1:PORT (0: a free port, logged as 'live view on URL')")
    r.add_argument("--http-host", metavar="ADDR", help="serve the live view on ADDR (not loopback: needs a token)")
    r.add_argument("--http-token", metavar="TOKEN", help="bearer token of the live view (default: "
                                                          "$TRACKPIPE_HTTP_TOKEN)")
    r.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="what is logged (default info; debug also shows OpenCV's and FFmpeg's own messages)")
    r.add_argument("-v", "--verbose", action="store_true",
                   help="also the run's details: CPU placement, infer workers, how the backend was chosen")
    return p


# loggers whose DEBUG lines --verbose shows (the run's details; not OpenCV's and FFmpeg's chatter)
VERBOSE_LOGGERS = ("trackpipe.pipeline.runtime", "trackpipe.models.auto")


def ms_text(v) -> str:
    """A latency for a person: 'n/a' when unknown, whole ms from 10 ms on, else one decimal."""
    if v is None:
        return "n/a"
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def _class_list(text: str) -> list:
    return [c.strip() for c in text.split(",") if c.strip()]


def config_layers(args) -> list:
    """The config's layers from parsed ``args``, in order: the file (default
    ``configs/default.yaml``), each ``--set``, each flag given (`pipeline.config.Layer`)."""
    from trackpipe.pipeline.config import Layer, parse_scalar, read_file
    from trackpipe.pipeline.errors import ConfigError

    path = args.config or (str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None)
    layers = [read_file(path)] if path else []
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: use KEY=VALUE")
        k, v = item.split("=", 1)
        layers.append(Layer.of_key(k.strip(), parse_scalar(v)))
    for dest, key in _OVERRIDES.items():
        if getattr(args, dest, None) is not None:
            layers.append(Layer.of_key(key, getattr(args, dest), f"--{dest.replace('_', '-')}"))
    if args.snapshot_classes is not None:
        layers.append(Layer.of_key("output.snapshot_classes", _class_list(args.snapshot_classes),
                                   "--snapshot-classes"))
    if args.mqtt is not None:  # the URL; the config's other MQTT settings stay
        mqtt = _last(layers, "mqtt")
        layers.append(Layer.of_key("mqtt", {**mqtt, "url": args.mqtt} if isinstance(mqtt, dict) else args.mqtt,
                                   "--mqtt"))
    if args.webhook:
        layers.append(Layer.of_key("webhooks", list(_last(layers, "webhooks") or []) + list(args.webhook),
                                   "--webhook"))
    layers += _source_layers(args.source or [], args.camera or [], _last(layers, "cameras") or [])
    return layers


def _last(layers: list, key: str):
    """The value of top-level ``key`` in the last layer that sets it (None: none does)."""
    for layer in reversed(layers):
        if isinstance(layer.data, dict) and key in layer.data:
            return layer.data[key]
    return None


def load(argv, require_source: bool = True, resolve: bool = True):
    """argv -> (Config, ModelSpec); raises PipelineError / ModelError / ValueError.
    ``resolve``: model files downloaded or checked, class names turned into ids."""
    from trackpipe.models.cli_args import spec_from_args
    from trackpipe.pipeline.config import build_config
    from trackpipe.pipeline.errors import ConfigError

    args = build_parser().parse_args(argv)
    cfg = build_config(config_layers(args))
    if require_source and not cfg.source.uri and not cfg.cameras:
        raise ConfigError("no source given (use --source or source.uri in the config)")

    # model: the config's model section, then the flags given (a --model replaces the config's
    # cfg/weights and a --cfg/--weights its model); resolved here, in the parent, before any stage
    # starts: files downloaded or checked, class names turned into ids
    cfg.model = spec = spec_from_args(args, classes=args.classes, base=cfg.model, resolve=resolve)
    return cfg, spec


def _source_layers(sources: list, cameras: list, configured: list) -> list:
    """``--source`` once: ``source.uri`` (and no ``cameras``); several times: the run's cameras
    (replacing the config's); ``--camera`` names them in the same order."""
    from trackpipe.pipeline.config import Layer
    from trackpipe.pipeline.errors import ConfigError
    from trackpipe.pipeline.runtime.cameras import check_camera_name
    for name in cameras:
        check_camera_name(name, "--camera")
    if len(cameras) > max(1, len(sources) or len(configured)):
        raise ConfigError(f"--camera given {len(cameras)} times for {max(1, len(sources))} source(s)")
    out = []
    if len(sources) == 1:
        out += [Layer.of_key("source.uri", sources[0], "--source"), Layer({"cameras": []})]
        configured = []
    elif sources:
        configured = [{"uri": u} for u in sources]
        out.append(Layer({"cameras": configured}, "--source", "cameras"))
    if configured and cameras:
        named = [dict(c) if isinstance(c, dict) else {"uri": c} for c in configured]
        for c, name in zip(named, cameras):
            c["name"] = name
        out.append(Layer({"cameras": named}, "--camera", "cameras"))
    elif cameras:
        out.append(Layer.of_key("pipeline.camera", cameras[0], "--camera"))
    return out


def guarded(body: Callable[[], int]) -> int:
    """Run a CLI body; Ctrl-C / SIGTERM before the supervisor installs its own handlers
    (e.g. while models load) still exit cleanly: 130 for SIGINT, 143 for SIGTERM."""
    from .runtime.signals import EarlyStop

    early = EarlyStop()
    signal.signal(signal.SIGINT, early)
    signal.signal(signal.SIGTERM, early)
    try:
        return body()
    except KeyboardInterrupt:
        return 130 if not early.received or early.received[0] == signal.SIGINT else 143


def user_error(e: Exception) -> int:
    """One `error:` line on stderr for a bad input; returns the exit code (2)."""
    from trackpipe.models.errors import error_line
    sys.stderr.write(f"error: {error_line(e, typed=False)}\n")
    code = getattr(e, "exit_code", 2)
    return 2 if code == 1 else code


def write_schema(path: str) -> int:
    """The config's JSON schema to ``path`` ("-": stdout); 0."""
    from trackpipe.pipeline.config import schema_text
    if path == "-":
        sys.stdout.write(schema_text())
    else:
        Path(path).write_text(schema_text())
    return 0


def main(argv=None) -> int:
    return guarded(lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv) -> int:
    from trackpipe.models.errors import ModelError
    from trackpipe.pipeline.errors import PipelineError
    from trackpipe.pipeline.runtime.app import run_pipeline

    args = build_parser().parse_args(argv)
    try:
        if args.config_schema is not None:
            return write_schema(args.config_schema)
        cfg, spec = load(argv, require_source=not args.print_config, resolve=not args.print_config)
    except (PipelineError, ModelError, ValueError, OSError) as e:
        return user_error(e)
    if args.print_config:
        from trackpipe.pipeline.config import dump_yaml
        sys.stdout.write(dump_yaml(cfg))
        return 0
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if args.verbose:
        for name in VERBOSE_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)
    res = run_pipeline(cfg, spec)
    if res.error:
        sys.stderr.write(f"error: {res.error}\n")
    elif res.report is not None and res.outcome in ("completed", "quit", "interrupted"):
        r = res.report
        cpu = r.get("cpu") or {}
        why = ""
        if cpu.get("bound_over_detector", 1.0) < 0.95:   # say what holds the pipeline below its detector
            others = cpu["total_ms_per_frame"] - cpu["ms_per_frame"].get("infer", 0.0)
            why = (f" (the other stages' {others:.1f} ms of CPU per frame share the detector's {cpu['cores']} cores: "
                   f"at most {cpu['bound_fps']:.1f} fps)")
        logging.getLogger("run_tracker").info(
            "%s: %d frames in, %d out, pipeline %.1f fps, detector-only %.1f fps%s, latency p50 %s ms%s",
            res.outcome, r["frames_in"], r["frames_out"], r["pipeline_fps"], r["detector_only_fps"], why,
            ms_text(r["latency_ms"].get("p50")), f"; {res.backend_note}" if res.backend_note else "")
        if r.get("delivery"):   # the last line: per target, delivered / pending in its outbox / dropped
            from trackpipe.pipeline.events.delivery import describe_delivery
            short = any(d["pending"] or d["dropped"] or d["rejected"] for d in r["delivery"].values())
            logging.getLogger("run_tracker").log(logging.WARNING if short else logging.INFO, "events: %s",
                                                 describe_delivery(r["delivery"]))
    return res.exit_code
