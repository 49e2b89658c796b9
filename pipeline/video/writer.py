"""The annotated-video writer: H.264 in fragmented MP4, mp4v as a fallback or by choice.

H.264 (PyAV with libx264) plays in every browser, mp4v does not. MP4 files are written
*fragmented* (``movflags=frag_keyframe+empty_moov+default_base_moof``) with a keyframe at least
every second (GOP = fps frames) and every packet flushed to the file as it is muxed, so a run
killed with SIGKILL (power loss, the OOM killer, ``docker kill``) leaves a file whose fragments up
to the last keyframe decode: at most ``GOP + encoder delay`` frames are lost (about 1.4 s at
30 fps with the default preset; ``tests/test_video_writer.py`` kills a writer and checks it).
A plain (non-fragmented) MP4 keeps its index in a ``moov`` box written only at the end: killed,
it has 0 readable frames.

Backends:
- ``pyav``: PyAV (``pip install av``); codecs ``h264`` (libx264) and ``mp4v`` (libavcodec's
  mpeg4 encoder, same quality scale as OpenCV's), both fragmented, both crash-safe.
- ``opencv``: ``cv2.VideoWriter`` with mp4v, used only when PyAV is missing (one log line);
  OpenCV cannot pass muxer options, so that file is readable only once closed.

Colours: frames are converted BGR -> I420 with OpenCV (BT.601, limited range; 3x cheaper than
swscale) and the stream is tagged BT.601 (smpte170m) so that players use the same matrix.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

CODECS = ("auto", "h264", "mp4v")
# Process CPU ms per 1920x1080 frame (BGR->I420 + encode + mux, threads=1) and KB per frame, measured
# by benchmarks/bench_encode.py on real frames of aiguys_test.mp4 (2-core VM, medians of 3 rounds).
X264_COST_MS_1080P = {"ultrafast": 7.8, "superfast": 13.4, "veryfast": 19.0}
X264_KB_1080P = {"ultrafast": 27.7, "superfast": 16.5, "veryfast": 9.7}
# share of one core the encoder may take at the source frame rate (the render stage's core also
# draws and muxes; the detector has the other core)
ENCODE_CPU_BUDGET = 0.5
# libx264 threads: 1 keeps the encoder on the render stage's core while the detector uses the other.
DEFAULT_THREADS = 1
FRAGMENT_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
# x264's rc-lookahead per preset (frames the encoder holds back); capped at fps/2 so that the
# encoder delay stays under half a second at low frame rates (crash loss = GOP + delay)
_X264_LOOKAHEAD = {"ultrafast": 0, "superfast": 0, "veryfast": 10, "faster": 20, "fast": 30, "medium": 40,
                   "slow": 50, "slower": 60, "veryslow": 60, "placebo": 60}
# mpeg4 quantiser (1 best .. 31 worst); 5 gives OpenCV's mp4v file sizes and quality
_MP4V_QSCALE = 5
_FF_QP2LAMBDA = 118
_AVCOL_SMPTE170M = 6      # colour primaries, transfer and matrix: BT.601 (what cv2's I420 uses)
_AVCOL_RANGE_MPEG = 1     # limited range (16-235)
_FRAGMENTED_SUFFIXES = (".mp4", ".m4v", ".mov")


class VideoWriterError(OSError):
    """The video cannot be written; ``str(e)`` is one line fit for the CLI. ``errno`` is the OS
    error behind it (ENOSPC for a full disk...), None for a bad argument or a missing codec."""


def _error(path, e: BaseException) -> VideoWriterError:
    reason = os.strerror(e.errno) if getattr(e, "errno", None) else getattr(e, "strerror", None) or str(e)
    err = VideoWriterError(f"cannot write video {path}: {reason}")
    err.errno = getattr(e, "errno", None)
    return err


def next_part_path(path) -> Path:
    """The next free ``<stem>.part<N><suffix>`` beside ``path`` (N one above the highest there):
    where a restarted render or a video resumed after a full disk continues, never overwriting
    an earlier part."""
    path = Path(path)
    prefix = f"{path.stem}.part"
    highest = 0
    try:
        for p in path.parent.iterdir():
            if p.name.startswith(prefix) and p.name.endswith(path.suffix):
                n = p.name[len(prefix):len(p.name) - len(path.suffix)]
                if n.isdigit():
                    highest = max(highest, int(n))
    except OSError:
        pass
    return path.with_name(f"{prefix}{highest + 1}{path.suffix}")


def pyav_available() -> bool:
    """True when PyAV with the libx264 encoder can be imported."""
    return _pyav() is not None


def _pyav():
    try:
        import av
    except ImportError:
        return None
    return av if "libx264" in av.codecs_available else None


def choose_preset(frame_hw: tuple[int, int], fps: float, budget: float = ENCODE_CPU_BUDGET) -> str:
    """The x264 preset with the smallest files whose measured CPU cost, scaled by pixel count,
    fits ``budget`` of one core at ``fps``: veryfast up to 1080p at 26 fps (and all 720p at
    30 fps), superfast for 1080p at 30 fps, ultrafast beyond."""
    scale = float(frame_hw[0]) * float(frame_hw[1]) / (1920 * 1080)
    for preset in ("veryfast", "superfast"):
        if X264_COST_MS_1080P[preset] * scale * float(fps) <= 1000.0 * budget:
            return preset
    return "ultrafast"


def frame_rate(fps: float) -> Fraction:
    """The exact rational rate of ``fps``: 29.97002997 -> 30000/1001, 25.0 -> 25."""
    return Fraction(float(fps)).limit_denominator(1001)


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise VideoWriterError(f"cannot write video {path}: it is a folder")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise VideoWriterError(f"cannot write video {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise VideoWriterError(f"cannot write video {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VideoWriterError(f"cannot write video {path}: folder {parent} is not writable")


class _PyAVEncoder:
    """One video stream muxed by PyAV; every packet is flushed to the file as it is muxed."""

    def __init__(self, av, path: Path, rate: Fraction, size_wh: tuple[int, int], codec: str,
                 preset: str, threads: int):
        self.av = av
        fragmented = path.suffix.lower() in _FRAGMENTED_SUFFIXES
        options = {"flush_packets": "1"}
        if fragmented:
            options["movflags"] = FRAGMENT_MOVFLAGS
        self.container = av.open(str(path), "w", format="mp4" if fragmented else None, options=options)
        try:
            gop = max(1, round(float(rate)))
            if codec == "h264":
                opts = {"preset": preset}
                cap = max(1, gop // 2)
                if _X264_LOOKAHEAD.get(preset, 0) > cap:
                    opts["rc-lookahead"] = str(cap)
                stream = self.container.add_stream("libx264", rate=rate, options=opts)
            else:   # a fixed quantiser, as OpenCV's mp4v writer (generic libavcodec options)
                stream = self.container.add_stream("mpeg4", rate=rate, options={
                    "flags": "+qscale", "global_quality": str(_MP4V_QSCALE * _FF_QP2LAMBDA)})
            cc = stream.codec_context
            stream.width, stream.height = size_wh
            stream.pix_fmt = "yuv420p"
            cc.gop_size = gop
            cc.thread_count = threads
            if threads != 1:
                cc.thread_type = "FRAME"   # PyAV's default SLICE would make x264 use sliced threads
            cc.colorspace = cc.color_primaries = cc.color_trc = _AVCOL_SMPTE170M
            cc.color_range = _AVCOL_RANGE_MPEG
            self.stream = stream
            self.container.start_encoding()      # creates the file and writes the header now
        except BaseException:
            self.container.close()
            raise
        self.pts = 0

    def write(self, frame_bgr: np.ndarray) -> None:
        yuv = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2YUV_I420)   # a new array each frame: the frame
        vf = self.av.VideoFrame.from_numpy_buffer(yuv, format="yuv420p")   # wraps it (no copy; 0.5 ms at 1080p)
        vf.pts = self.pts
        self.pts += 1
        for packet in self.stream.encode(vf):
            self.container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):   # drain the encoder's delayed frames
                self.container.mux(packet)
        finally:
            self.container.close()


class _OpenCVEncoder:
    """mp4v through cv2.VideoWriter (no muxer options: the file is readable once closed)."""

    def __init__(self, path: Path, fps: float, size_wh: tuple[int, int]):
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size_wh)
        if not self.writer.isOpened():
            raise VideoWriterError(f"cannot write video {path}: OpenCV could not open an mp4v writer")

    def write(self, frame_bgr: np.ndarray) -> None:
        self.writer.write(frame_bgr)

    def close(self) -> None:
        self.writer.release()


class VideoWriter:
    """Writes BGR frames of one size to a video file; use ``VideoWriter.open(...)``.

    ``write(frame)`` takes (H, W, 3) uint8 BGR frames of exactly ``frame_hw``; ``close()``
    finalises the file and is idempotent; the writer is a context manager. Attributes after
    ``open``: ``path``, ``fps``, ``frame_hw``, ``codec`` ("h264" or "mp4v"), ``backend``
    ("pyav" or "opencv"), ``preset`` (x264 preset or None), ``threads``, ``crash_safe`` (the
    file stays readable if the process is killed), ``frames`` (written so far).
    """

    def __init__(self, encoder, path: Path, fps: float, frame_hw: tuple[int, int], codec: str, backend: str,
                 preset: str | None, threads: int, crash_safe: bool):
        self._encoder = encoder
        self.path, self.fps, self.frame_hw = path, fps, frame_hw
        self.codec, self.backend, self.preset, self.threads = codec, backend, preset, threads
        self.crash_safe = crash_safe
        self.frames = 0
        # bytes of the file that hold whole fragments (crash-safe files): a write that fails on a
        # full disk cuts the file back to it, so that it ends on a whole fragment
        self._good = self._header = self._size()
        self._landed = False
        h, w = frame_hw
        # yuv420p needs even sizes: an odd frame is padded by one replicated row/column
        self._pad = (h % 2, w % 2)

    @classmethod
    def open(cls, path, fps: float, frame_hw: tuple[int, int], codec: str = "auto", preset: str | None = None,
             threads: int | None = None, backend: str | None = None) -> VideoWriter:
        """Open ``path`` for writing.

        fps: frames per second of the source (29.97002997 is stored exactly as 30000/1001).
        frame_hw: (height, width) of every frame that will be written.
        codec: "h264" (PyAV/libx264, fails when PyAV is missing), "mp4v", or "auto" (h264 when
            PyAV is available, else mp4v through OpenCV, with one log line).
        preset: x264 preset for h264; default ``choose_preset(frame_hw, fps)``; ignored for mp4v.
        threads: encoder threads; 0 = the encoder's choice ("auto"); default ``DEFAULT_THREADS``.
        backend: "pyav" or "opencv" to force one (mp4v only for opencv); default: PyAV when present.
        Raises ``VideoWriterError`` (one line) for a bad path, codec or size.
        """
        path = Path(path)
        if codec not in CODECS:
            raise VideoWriterError(f"unknown video codec {codec!r}; choose one of {', '.join(CODECS)}")
        if backend not in (None, "pyav", "opencv"):
            raise VideoWriterError(f"unknown video backend {backend!r}; choose pyav or opencv")
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise VideoWriterError(f"cannot write video {path}: fps must be a positive number, got {fps!r}")
        try:
            h, w = (int(v) for v in frame_hw)
        except (TypeError, ValueError):
            raise VideoWriterError(f"cannot write video {path}: frame_hw must be (height, width), got {frame_hw!r}")
        if h < 1 or w < 1:
            raise VideoWriterError(f"cannot write video {path}: frame size {w}x{h} is empty")
        preset = choose_preset((h, w), fps) if preset is None else preset
        if preset not in X264_PRESETS:
            raise VideoWriterError(f"unknown x264 preset {preset!r}; choose one of {', '.join(X264_PRESETS)}")
        threads = DEFAULT_THREADS if threads is None else int(threads)
        if threads < 0:
            raise VideoWriterError(f"encoder threads must be >= 0 (0 = auto), got {threads}")
        _check_path(path)

        av = None if backend == "opencv" else _pyav()
        if backend == "pyav" and av is None:
            raise VideoWriterError("video backend pyav needs PyAV with libx264: pip install av")
        if codec == "h264" and av is None:
            raise VideoWriterError("codec h264 needs PyAV with libx264 (pip install av); or use codec mp4v")
        if codec == "auto":
            codec = "h264" if av is not None else "mp4v"
            if av is None and backend is None:
                log.warning("PyAV (pip install av) is not installed: writing mp4v with OpenCV, which browsers do "
                            "not play and which is unreadable if the run is killed")
        size_wh = (w + w % 2, h + h % 2)
        existed = path.exists()
        try:
            if av is not None:
                enc = _PyAVEncoder(av, path, frame_rate(fps), size_wh, codec, preset, threads)
                return cls(enc, path, float(fps), (h, w), codec, "pyav", preset if codec == "h264" else None,
                           threads, path.suffix.lower() in _FRAGMENTED_SUFFIXES)
            enc = _OpenCVEncoder(path, fps, size_wh)
            return cls(enc, path, float(fps), (h, w), "mp4v", "opencv", None, 0, False)
        except (OSError, ValueError) as e:   # PyAV's errors subclass the builtin OSError/ValueError
            if not existed:   # no header-only file left behind (a full disk)
                with contextlib.suppress(OSError):
                    path.unlink()
            if isinstance(e, VideoWriterError):
                raise
            raise _error(path, e) from e

    def write(self, frame_bgr: np.ndarray) -> None:
        """Encode one frame: (H, W, 3) uint8 BGR with (H, W) == ``frame_hw``."""
        if self._encoder is None:
            raise VideoWriterError(f"video {self.path} is closed")
        if frame_bgr.shape != (*self.frame_hw, 3) or frame_bgr.dtype != np.uint8:
            raise ValueError(f"frame must be {self.frame_hw[0]}x{self.frame_hw[1]}x3 uint8, got "
                             f"{'x'.join(map(str, frame_bgr.shape))} {frame_bgr.dtype}")
        if any(self._pad):
            frame_bgr = np.pad(frame_bgr, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        try:
            self._encoder.write(np.ascontiguousarray(frame_bgr))
        except OSError as e:   # a full or unwritable disk: the file keeps its whole fragments
            self._abort()
            raise _error(self.path, e) from e
        self.frames += 1
        if self.crash_safe:
            self._good = max(self._good, self._size())
            self._landed = self._landed or self._good > self._header

    @property
    def landed(self) -> bool:
        """At least one frame is in the file (a crash-safe file: a whole fragment; otherwise: the
        file was closed with frames)."""
        return self._landed

    def _size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    def _abort(self, close: bool = True) -> None:
        """After a failed write: close what can be closed and cut the file back to its last whole
        fragment (a crash-safe file; the rest of it could not be written anyway)."""
        enc, self._encoder = self._encoder, None
        if enc is not None and close:
            with contextlib.suppress(Exception):   # the muxer fails again on the same disk
                enc.close()
        if self.crash_safe:
            with contextlib.suppress(OSError):
                os.truncate(self.path, self._good)

    def close(self) -> None:
        """Drain the encoder and finalise the file; safe to call twice. Raises `VideoWriterError`
        (with ``errno``) when the end cannot be written (a full disk): the file then keeps its
        whole fragments."""
        enc = self._encoder
        if enc is None:
            return
        try:
            enc.close()
        except OSError as e:
            self._abort(close=False)
            raise _error(self.path, e) from e
        self._encoder = None
        self._landed = self.frames > 0

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"VideoWriter({str(self.path)!r}, {self.codec}/{self.backend}, preset={self.preset}, "
                f"threads={self.threads}, {self.frame_hw[1]}x{self.frame_hw[0]} @ {self.fps:g} fps)")
