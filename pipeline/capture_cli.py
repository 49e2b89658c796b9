"""Grab the screen, detect and track objects, draw the boxes on a click-through overlay.

    python run_capture.py --region 0,0,1280,720 --cfg yolo-fastest-1.1-xl.cfg --weights ... --names coco.names
    python run_capture.py --monitor 1 --mirror --profile profile.json --duration 60

A preset of the one pipeline: ``run_tracker.py --source screen[:N][@X,Y,W,H] --mode latest
--display overlay|mirror`` with ``configs/screen-overlay.yaml``. ``--overlay`` (default where
``overlay_supported()``): render paints outlines and labels in a transparent, click-through,
always-on-top window over the region and reports what it painted, which the capture stage
masks out of every grab; ``--mirror``: render shows the grabbed frames with the boxes in a
normal window placed outside the region. Errors print one ``error: ...`` line; exit codes:
0 done, 1 failed, 2 bad input, 130 interrupted (Ctrl-C), 143 SIGTERM.

Other ``run_tracker.py`` flags are accepted too (``--config``, ``--set``, ``--mot``,
``--events``, ``--profile-plot``, ``--log-level``...); the default config is
``configs/screen-overlay.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "screen-overlay.yaml"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def parse_region(text: str) -> Tuple[int, int, int, int]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y,W,H (4 integers), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be > 0, got {text!r}")
    return x, y, w, h


def _capture_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("screen capture")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--monitor", type=int, help="capture monitor N (1-based, as mss; 0 = all; default 1)")
    where.add_argument("--region", type=parse_region, metavar="X,Y,W,H",
                       help="capture this region (screen pixels, as mss)")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--overlay", action="store_const", const="overlay", dest="show",
                     help="transparent click-through overlay (default where supported)")
    how.add_argument("--mirror", action="store_const", const="mirror", dest="show",
                     help="a window showing the grabbed frames with boxes")
    g.add_argument("--duration", type=float, help="stop after S seconds of running (model loading not counted)")


def build_parser() -> argparse.ArgumentParser:
    from trackpipe.models.cli_args import add_model_args
    from trackpipe.trackers.factory import TRACKER_NAMES
    p = _Parser(prog="run_capture.py", description=__doc__.split("\n\n")[0].replace("``", ""),
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog=__doc__.split("\n\n", 1)[1].replace("``", ""))
    _capture_args(p)
    add_model_args(p, defaults=False)
    p.add_argument("--classes", help="keep only these classes: ids or names, comma separated")
    p.add_argument("--tracker", choices=("auto", *TRACKER_NAMES), metavar="NAME",
                   help="auto (default: hybrid) or one of: " + ", ".join(TRACKER_NAMES))
    p.add_argument("--profile", metavar="P.json", help="write the per-stage profile here")
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--config", help="YAML config (default configs/screen-overlay.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--mot", help="MOTChallenge track file")
    p.add_argument("--events", help="JSON-lines events file")
    p.add_argument("--profile-plot", metavar="PLOT.png", help="write per-stage FPS over time")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="what is logged (default info; debug also shows OpenCV's own messages)")
    return p


def _split_argv(argv: List[str]):
    """-> (capture options, the rest: run_tracker.py flags)."""
    p = _Parser(add_help=False)
    _capture_args(p)
    return p.parse_known_args(argv)


def resolve_screen(monitor: Optional[int], region) -> Tuple[str, Tuple[int, int, int, int]]:
    """-> (screen source URI, overlay region x, y, w, h in absolute screen pixels).
    Raises ConfigError with one line when the display, monitor or region is not usable."""
    from .errors import ConfigError
    from .media.sources import screen_monitors
    monitors = screen_monitors()
    if region is None:
        n = 1 if monitor is None else monitor
        if not 0 <= n < len(monitors):
            raise ConfigError(f"no monitor {n} (have 0..{len(monitors) - 1})")
        m = monitors[n]
        return f"screen:{n}", (m["left"], m["top"], m["width"], m["height"])
    x, y, w, h = region
    m = monitors[0]   # the whole virtual screen
    if x < m["left"] or y < m["top"] or x + w > m["left"] + m["width"] or y + h > m["top"] + m["height"]:
        raise ConfigError(f"region {x},{y},{w},{h} is outside the screen "
                          f"({m['left']},{m['top']},{m['width']}x{m['height']})")
    return f"screen:0@{x - m['left']},{y - m['top']},{w},{h}", (x, y, w, h)


def choose_mode(asked: Optional[str]) -> str:
    from .display.qt_env import overlay_supported
    from .errors import ConfigError
    ok, reason = overlay_supported()
    if ok:
        return asked or "overlay"
    # the mirror window needs the same (PySide6 and a display Qt can open): nothing to fall back to
    raise ConfigError(f"cannot show the {asked or 'overlay'} (or a mirror window): {reason}")


def preset_argv(rest: List[str], uri: str, region, mode: str, duration: Optional[float]) -> List[str]:
    """The run_tracker.py arguments this command stands for."""
    has_config = any(a == "--config" or a.startswith("--config=") for a in rest)
    extra = [] if has_config else ["--config", str(DEFAULT_CONFIG)]
    out = rest + extra + ["--source", uri, "--mode", "latest", "--display", mode,
                          "--set", "output.region=[{},{},{},{}]".format(*region)]
    return out + (["--duration", str(duration)] if duration else [])


def main(argv=None) -> int:
    from trackpipe.pipeline.cli import guarded

    return guarded(lambda: _main(sys.argv[1:] if argv is None else list(argv)))


def _main(argv) -> int:
    from trackpipe.models.errors import ModelError
    from trackpipe.pipeline import cli
    from trackpipe.pipeline.errors import PipelineError
    from trackpipe.pipeline.runtime.app import run_pipeline

    build_parser().parse_args(argv)          # --help, and every flag checked (one line, exit 2)
    opts, rest = _split_argv(argv)
    try:
        if opts.duration is not None and opts.duration <= 0:
            raise ValueError("--duration must be > 0")
        mode = choose_mode(opts.show)
        uri, region = resolve_screen(opts.monitor, opts.region)
        cfg, spec = cli.load(preset_argv(rest, uri, region, mode, opts.duration))
        cfg.output.video = None
    except (PipelineError, ModelError, ValueError) as e:
        return cli.user_error(e)
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    log = logging.getLogger("run_capture")
    from .cli import ms_text
    log.info("%s over %d,%d %dx%d (%s)", mode, *region, uri)
    res = run_pipeline(cfg, spec)
    if res.error:
        sys.stderr.write(f"error: {res.error}\n")
    elif res.report is not None and res.outcome in ("completed", "quit", "interrupted", "stopped"):
        r = res.report
        st = r.get("stages", {})
        log.info("%s: %d frames grabbed, %d drawn; infer %.1f fps, %s %.1f fps; latency p50 %s ms",
                 res.outcome, r["frames_in"], r["frames_out"], st.get("infer", {}).get("fps", 0.0), mode,
                 st.get("render", {}).get("fps", 0.0), ms_text(r["latency_ms"].get("p50")))
    return res.exit_code
