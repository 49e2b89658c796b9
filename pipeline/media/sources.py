"""Frame sources: video file, image folder or glob, camera, RTSP/HTTP stream, screen.

``make_source(uri, cfg)`` picks the class from the URI; ``probe(uri, cfg)`` opens it,
reads one frame and returns a `SourceInfo` (size, fps, frame count, live or not) so the
supervisor can size the ring and fail early with a clear message. Every source has
``open()``, ``read_into(buf)`` and ``close()``; ``read_into`` decodes straight into
``buf`` (a shared-memory slot view) when the shapes match, and otherwise returns a new
array for the caller to fit into the slot.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from trackpipe.models.errors import error_line
from trackpipe.pipeline.config import SourceConfig
from trackpipe.pipeline.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_SCREEN_RE = re.compile(r"^screen(?::(\d+))?(?:@(\d+),(\d+),(\d+),(\d+))?$")
_URL_RE = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.I)
PACE_RESYNC_S = 1.0      # a paced source this far behind its clock (a stall) restarts the clock


@dataclass
class SourceInfo:
    kind: str           # file | images | camera | stream | screen
    uri: str
    width: int
    height: int
    fps: float
    frames: int         # 0 when unknown (live sources)
    live: bool

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (self.height, self.width, 3)


class Source:
    """Base class. ``live`` sources run latest-frame; the others lossless."""

    kind = "source"
    live = False

    def __init__(self, uri: str, cfg: SourceConfig):
        self.uri = uri
        self.cfg = cfg
        self.fps = cfg.fps
        self.frames = 0

    def open(self) -> None:
        raise NotImplementedError

    def pace(self) -> None:
        """Sleep until the next frame is due (paced sources: realtime files, screen); else no-op.
        Frames are due on the source's own clock (frame k at start + k / fps), as a camera sends
        them: a reader woken late catches up instead of slowing the source down; one more than
        ``PACE_RESYNC_S`` behind (a stall) starts the clock again from now."""
        if not self._paced:
            return
        now = time.monotonic()
        if self._next_t > now:
            time.sleep(self._next_t - now)
        elif now - self._next_t > PACE_RESYNC_S:
            self._next_t = now
        self._next_t += 1.0 / max(self.fps, 1e-3)

    _paced = False
    _next_t = 0.0

    def timed_out(self, read_s: float) -> bool:
        """True when a read that took ``read_s`` seconds was ended by the source's read timeout:
        whatever it returned then is stale (FFmpeg flushes the decoder's buffered pre-stall frames
        on the interrupt), not a new frame."""
        return False

    def read_into(self, buf: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """Next BGR frame (``buf`` itself when decoded in place) or None at the end / on failure."""
        raise NotImplementedError

    def pts_s(self) -> Optional[float]:
        """The stream timestamp (seconds) of the frame read last; None where the source has none
        (camera devices, the screen, images): its frames are stamped when they are read."""
        return None

    def close(self) -> None:
        pass

    def first_frame_info(self, frame: np.ndarray) -> SourceInfo:
        h, w = frame.shape[:2]
        return SourceInfo(self.kind, self.uri, w, h, float(self.fps), int(self.frames), self.live)


class _CaptureSource(Source):
    """Common code of the cv2.VideoCapture sources."""

    def __init__(self, uri: str, cfg: SourceConfig):
        super().__init__(uri, cfg)
        self.cap: Optional[cv2.VideoCapture] = None

    def _make_capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def open(self) -> None:
        self.close()
        cap = self._make_capture()
        if not cap.isOpened():
            cap.release()
            raise SourceError(self._open_error())
        fps = cap.get(cv2.CAP_PROP_FPS)
        if fps and 0 < fps < 1000:
            self.fps = fps
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frames = n if n > 0 else 0
        self.cap = cap

    def _open_error(self) -> str:
        return f"cannot open {self.kind} source {self.uri}"

    def read_into(self, buf):
        if self.cap is None:
            return None
        if buf is not None:
            ok, img = self.cap.read(buf)
        else:
            ok, img = self.cap.read()
        if not ok or img is None:
            return None
        return img

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class _TimedSource(_CaptureSource):
    """A capture source whose frames carry the stream's timestamps (files, streams)."""

    def pts_s(self) -> Optional[float]:
        return None if self.cap is None else self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0


class VideoFileSource(_TimedSource):
    kind = "file"

    def __init__(self, uri: str, cfg: SourceConfig):
        super().__init__(uri, cfg)
        self.live = self._paced = bool(cfg.realtime)  # paced like a camera

    def _make_capture(self):
        if not Path(self.uri).is_file():
            raise SourceError(f"source not found: {self.uri}")
        # one decoder thread: frame threading costs ~20% more CPU, and files decode ahead anyway
        threads = self.cfg.decode_threads or (0 if self.live else 1)
        params = [cv2.CAP_PROP_N_THREADS, threads] if threads else []
        return cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, params)

    def _open_error(self) -> str:
        return f"cannot read video {self.uri} (not a video file, or an unsupported codec)"

    def read_into(self, buf):
        img = super().read_into(buf)
        if img is None and self.cfg.loop and self.cap is not None:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            img = super().read_into(buf)
        return img


class CameraSource(_CaptureSource):
    kind = "camera"
    live = True

    def _make_capture(self):
        cap = cv2.VideoCapture(int(self.uri))
        if self.cfg.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
        if self.cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _open_error(self) -> str:
        return f"cannot open camera {self.uri}"


class StreamSource(_TimedSource):
    """RTSP/HTTP/... through FFmpeg: RTSP over TCP, open and read timeouts."""

    kind = "stream"
    live = True

    # nobuffer/low_delay: frames 0.1 s old instead of a second of FFmpeg's buffer at (re)connect;
    # analyzeduration 0.5 s: the first frame 1.1 s after an open instead of 2.1 s (docs/live.md)
    LOW_DELAY = "fflags;nobuffer|flags;low_delay|analyzeduration;500000"

    def ffmpeg_options(self) -> str:
        if self.cfg.ffmpeg_options is not None:
            return self.cfg.ffmpeg_options
        rtsp = self.uri.lower().startswith(("rtsp://", "rtsps://"))
        return ("rtsp_transport;tcp|" if rtsp else "") + self.LOW_DELAY

    def _make_capture(self):
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.cfg.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.cfg.read_timeout_s * 1000)]
        if self.cfg.decode_threads:
            params += [cv2.CAP_PROP_N_THREADS, self.cfg.decode_threads]
        # OpenCV reads the options at every open (docs/live.md): set them for this open only, so
        # that they never reach a later source of the process (nobuffer drops frames of files)
        key, old = "OPENCV_FFMPEG_CAPTURE_OPTIONS", os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
        os.environ[key] = self.ffmpeg_options()
        try:
            return cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, params)
        finally:
            if old is None:
                del os.environ[key]
            else:
                os.environ[key] = old

    def _open_error(self) -> str:
        return f"cannot open stream {_redact(self.uri)} (unreachable, refused or not a video stream)"

    def read_into(self, buf):
        # network frames may change size on reconnect: only decode in place when it fits
        return super().read_into(buf)

    def timed_out(self, read_s: float) -> bool:
        # the interrupt fires at read_timeout_s (measured: +10..40 ms); a healthy stream delivers
        # within 1/fps, so 90 % of the timeout cannot be a frame that merely arrived late
        return read_s >= 0.9 * self.cfg.read_timeout_s


class ImageFolderSource(Source):
    kind = "images"

    def __init__(self, uri: str, cfg: SourceConfig):
        super().__init__(uri, cfg)
        self.files: List[str] = []
        self.index = 0
        self.live = self._paced = bool(cfg.realtime)

    def open(self) -> None:
        p = Path(self.uri)
        if p.is_dir():
            files = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        else:
            files = sorted(f for f in glob.glob(self.uri) if Path(f).suffix.lower() in IMAGE_EXTS)
        if not files:
            raise SourceError(f"no images found in {self.uri}" if p.is_dir() else f"source not found: {self.uri}")
        self.files, self.index, self.frames = files, 0, len(files)
        self.max_size = _max_image_size(files)

    def first_frame_info(self, frame: np.ndarray) -> SourceInfo:
        """Slots must hold the largest image: every image keeps its own size (and MOT boxes its
        own pixels); the video is written at the largest size."""
        info = super().first_frame_info(frame)
        if self.max_size:
            info.width, info.height = max(info.width, self.max_size[0]), max(info.height, self.max_size[1])
        return info

    def read_into(self, buf):
        while True:
            if self.index >= len(self.files):
                if not self.cfg.loop:
                    return None
                self.index = 0
            path = self.files[self.index]
            self.index += 1
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is not None:
                return img
            log.warning("skipping unreadable image %s", path)
            self.frames -= 1


class ScreenSource(Source):
    """Screen grab with mss: ``screen`` (primary), ``screen:N`` (monitor N, 0 = all),
    ``screen:N@X,Y,W,H`` (a region, relative to monitor N)."""

    kind = "screen"
    live = True

    def __init__(self, uri: str, cfg: SourceConfig):
        super().__init__(uri, cfg)
        m = _SCREEN_RE.match(uri)
        if not m:
            raise SourceError(f"invalid screen source {uri!r} (use screen, screen:N or screen:N@X,Y,W,H)")
        self.monitor = int(m.group(1)) if m.group(1) else 1
        self.region = tuple(int(g) for g in m.group(2, 3, 4, 5)) if m.group(2) else None
        self.sct = None
        self.box = None
        self._paced = True

    def open(self) -> None:
        try:
            import mss
        except ImportError as e:  # pragma: no cover - mss is a dependency
            raise SourceError(f"screen capture needs the mss package: {e}") from None
        try:
            factory = getattr(mss, "MSS", None) or mss.mss
            self.sct = factory()
            monitors = self.sct.monitors
        except Exception as e:  # mss raises ScreenShotError without a display
            raise SourceError(f"cannot grab the screen: {str(e).splitlines()[0] if str(e) else e}") from None
        if not 0 <= self.monitor < len(monitors):
            raise SourceError(f"no monitor {self.monitor} (have 0..{len(monitors) - 1})")
        mon = monitors[self.monitor]
        if self.region:
            x, y, w, h = self.region
            if w <= 0 or h <= 0 or x + w > mon["width"] or y + h > mon["height"]:
                raise SourceError(f"region {x},{y},{w},{h} is outside monitor {self.monitor} "
                                  f"({mon['width']}x{mon['height']})")
            self.box = {"left": mon["left"] + x, "top": mon["top"] + y, "width": w, "height": h}
        else:
            self.box = {k: mon[k] for k in ("left", "top", "width", "height")}

    def read_into(self, buf):
        try:
            shot = self.sct.grab(self.box)
        except Exception as e:
            log.warning("screen grab failed: %s", e)
            return None
        bgra = np.frombuffer(shot.bgra, np.uint8).reshape(shot.height, shot.width, 4)
        if buf is not None and buf.shape[:2] == bgra.shape[:2]:
            return cv2.cvtColor(bgra, cv2.COLOR_BGRA2BGR, dst=buf)
        return cv2.cvtColor(bgra, cv2.COLOR_BGRA2BGR)

    def close(self) -> None:
        if self.sct is not None:
            try:
                self.sct.close()
            except Exception:
                pass
            self.sct = None


def _max_image_size(files: List[str]) -> Optional[Tuple[int, int]]:
    """Largest (w, h) among the images, from their headers only (Pillow); None if unavailable."""
    try:
        from PIL import Image
    except ImportError:
        return None
    w = h = 0
    for f in files:
        try:
            with Image.open(f) as im:
                w, h = max(w, im.width), max(h, im.height)
        except (OSError, ValueError):
            continue
    return (w, h) if w and h else None


def quiet_video_logs() -> None:
    """Keep OpenCV's and FFmpeg's own warnings off stderr (our errors are one line each).
    Set OPENCV_LOG_LEVEL / OPENCV_FFMPEG_LOGLEVEL yourself, or run with --log-level debug, to see them."""
    import logging
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when FFmpeg is first used
    if "OPENCV_LOG_LEVEL" not in os.environ:
        # silent: its "[ERROR:0@0.4] ... Camera index out of range" would come before our own line
        os.environ["OPENCV_LOG_LEVEL"] = "SILENT"
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        except AttributeError:
            pass


def _redact(uri: str) -> str:
    """Hide a password in ``scheme://user:pass@host``."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)


def source_kind(uri: str) -> str:
    uri = str(uri).strip()
    if re.fullmatch(r"\d+", uri):
        return "camera"
    if uri.startswith("screen"):
        return "screen"
    if _URL_RE.match(uri):
        return "stream"
    if os.path.isdir(uri) or any(ch in uri for ch in "*?[") or Path(uri).suffix.lower() in IMAGE_EXTS:
        return "images"
    return "file"


def screen_monitors() -> List[dict]:
    """mss's monitors (0: the whole virtual screen); ConfigError with one line without a display."""
    try:
        import mss
        factory = getattr(mss, "MSS", None) or mss.mss
        with factory() as sct:
            return [dict(m) for m in sct.monitors]
    except Exception as e:  # mss raises ScreenShotError without a display
        raise ConfigError(f"cannot grab the screen: {error_line(e, typed=False)}") from None


def screen_region(uri: str) -> Tuple[int, int, int, int]:
    """Absolute screen x, y, w, h that the screen source ``uri`` grabs."""
    m = _SCREEN_RE.match(str(uri).strip())
    if not m:
        raise ConfigError(f"invalid screen source {uri!r} (use screen, screen:N or screen:N@X,Y,W,H)")
    monitors = screen_monitors()
    n = int(m.group(1)) if m.group(1) else 1
    if not 0 <= n < len(monitors):
        raise ConfigError(f"no monitor {n} (have 0..{len(monitors) - 1})")
    mon = monitors[n]
    if m.group(2):
        x, y, w, h = (int(g) for g in m.group(2, 3, 4, 5))
        return mon["left"] + x, mon["top"] + y, w, h
    return mon["left"], mon["top"], mon["width"], mon["height"]


def make_source(uri: str, cfg: SourceConfig) -> Source:
    kind = source_kind(uri)
    cls = {"camera": CameraSource, "screen": ScreenSource, "stream": StreamSource,
           "images": ImageFolderSource, "file": VideoFileSource}[kind]
    return cls(str(uri).strip(), cfg)


def read_live_frames(uri: str, cfg: SourceConfig, count: int, timeout_s: float) -> List[np.ndarray]:
    """Up to ``count`` consecutive (H, W, 3) uint8 BGR frames of a live source, read for at most
    about ``timeout_s`` (opening and each read are bounded by it too); [] when it cannot be opened."""
    quiet_video_logs()
    src = make_source(uri, cfg.model_copy(update={"open_timeout_s": min(cfg.open_timeout_s, timeout_s),
                                                  "read_timeout_s": min(cfg.read_timeout_s, timeout_s)}))
    frames: List[np.ndarray] = []
    try:
        src.open()
        deadline = time.monotonic() + timeout_s
        while len(frames) < count and time.monotonic() < deadline:
            frame = src.read_into(None)
            if frame is None:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame[:, :, :3].copy())
    except SourceError:
        return []
    finally:
        src.close()
    return frames


def probe(uri: str, cfg: SourceConfig) -> SourceInfo:
    """Open ``uri``, read its first frame, close it; raise `SourceError` with a one-line reason."""
    if uri is None or str(uri).strip() == "":
        raise SourceError("no source given (use --source)")
    quiet_video_logs()
    src = make_source(uri, cfg)
    src.open()
    try:
        frame = src.read_into(None)
        if frame is None:
            if src.kind == "file":
                raise SourceError(f"cannot decode any frame of {uri} (corrupt or unsupported video)")
            raise SourceError(f"{src.kind} source {_redact(uri)} gives no frames")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        info = src.first_frame_info(frame)
    finally:
        src.close()
    return info
