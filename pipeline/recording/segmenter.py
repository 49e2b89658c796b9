"""A camera's compressed packets -> short keyframe-aligned fragmented-MP4 segments (PyAV remux).

`Segmenter` takes the packets of one video stream with their times on the events' clock and
writes ``<dir>/<camera>/<date>/<start_ms>.mp4`` files: a new segment begins at the first keyframe
``segment_s`` after the current one began. Segments are fragmented MP4 (a fragment per keyframe):
readable while they are written, and a killed run loses at most the fragment being written.
Timestamps in a segment start at 0 at its first keyframe; its start time is in its name and the
index.

`CameraRecorder` is the thread that feeds one camera's `Segmenter` from its own connection to
the camera (PyAV demux of the URL or file; no decoding): it reconnects after a failure with a
capped backoff, maps packet timestamps to the wall clock (live) or to ``t_base`` + media time
(files run lossless, whose events are on media time + the same base), and stops at ``stop``.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av

from trackpipe.pipeline.media.clock import Clock

from .index import Segment
from .layout import segment_path

log = logging.getLogger(__name__)

FRAG_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
# codecs that go into MP4 by a copy and play in browsers (H.264) or in most players (H.265)
COPY_CODECS = ("h264", "hevc")
PACE_BURST_S = 0.1          # a paced file (--realtime) is read in bursts this long


class RecordWriteError(OSError):
    """A segment could not be written (folder not writable, disk full)."""


class Segmenter:
    """Packets of one stream -> segments; ``on_closed(Segment)`` for each finished one.

    template: the input `av.VideoStream` (codec parameters are copied, never decoded)."""

    def __init__(self, root: Path, camera: str, template, segment_s: float,
                 on_closed: Callable[[Segment], None], clock: Clock | None = None):
        self.root, self.camera, self.template = Path(root), camera, template
        self.segment_s = float(segment_s)
        self.on_closed = on_closed
        self.clock = clock            # live: a segment's times are refined when it is closed
        self.start_pts: float | None = None
        self.out = None
        self.ostream = None
        self.path: Path | None = None
        self.start = 0.0
        self.last_t = 0.0
        self.frame_s = 1.0 / float(template.average_rate or template.guessed_rate or 30)
        self.ref_dts: int | None = None
        self.last_dts: int | None = None
        self.packets = 0

    def add(self, packet, t: float, pts_s: float | None = None) -> None:
        """One packet (``packet.dts`` not None) whose presentation time is ``t`` (events' clock;
        ``pts_s``: its timestamp in seconds, for ``clock``)."""
        if self.out is None:
            if not packet.is_keyframe:
                return                  # a segment starts at a keyframe
            self._open(t, pts_s)
        elif packet.is_keyframe and t - self.start >= self.segment_s:
            self.close(end=t, end_pts=pts_s)
            self._open(t, pts_s)
        if self.ref_dts is None:       # the segment's first packet (a keyframe): its time origin
            self.ref_dts = packet.dts
        dts = packet.dts - self.ref_dts
        if self.last_dts is not None and dts <= self.last_dts:
            dts = self.last_dts + 1       # muxers want strictly increasing dts
        pts = (packet.pts - self.ref_dts) if packet.pts is not None else dts
        packet.dts, packet.pts = dts, max(pts, dts)
        packet.stream = self.ostream
        try:
            self.out.mux(packet)
        except (av.error.FFmpegError, OSError) as e:
            self._abandon()
            raise RecordWriteError(getattr(e, "errno", None) or errno.EIO, f"cannot write {self.path}: "
                                   f"{getattr(e, 'strerror', None) or e}") from None
        self.last_dts = dts
        self.last_t = max(self.last_t, t)
        self.packets += 1

    def _open(self, t: float, pts_s: float | None = None) -> None:
        path = segment_path(self.root, self.camera, t)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.out = av.open(str(path), "w", format="mp4", options=FRAG_OPTIONS)
            self.ostream = self.out.add_stream_from_template(self.template)
        except (av.error.FFmpegError, OSError) as e:
            self.out = None
            raise RecordWriteError(getattr(e, "errno", None) or errno.EIO,
                                   f"cannot write {path}: {getattr(e, 'strerror', None) or e}") from None
        self.path, self.start, self.last_t, self.last_dts = path, t, t, None
        self.start_pts = pts_s
        self.ref_dts = None
        self.packets = 0

    def _abandon(self) -> None:
        out, self.out = self.out, None
        if out is not None:
            try:
                out.close()
            except Exception as e:  # noqa: BLE001 - a full disk fails the trailer too
                log.debug("segment %s: %s", self.path, e)
        self._finish(self.last_t + self.frame_s)

    def close(self, end: float | None = None, end_pts: float | None = None) -> Segment | None:
        """Finish the open segment (its end: ``end``, else after its last frame)."""
        out, self.out = self.out, None
        if out is None:
            return None
        if self.clock is not None and self.start_pts is not None:   # refined: the live edge is known better now
            shift = self.clock.at(self.start_pts) - self.start
            self.start += shift
            self.last_t += shift
            if end is not None:
                end = self.clock.at(end_pts) if end_pts is not None else end + shift
        try:
            out.close()
        except (av.error.FFmpegError, OSError) as e:
            log.warning("segment %s: %s", self.path, getattr(e, "strerror", None) or e)
        return self._finish(end if end is not None else self.last_t + self.frame_s)

    def _finish(self, end: float) -> Segment | None:
        path = self.path
        if path is None:
            return None
        self.path = None
        try:
            size = path.stat().st_size
        except OSError:
            return None
        if self.packets == 0 or size == 0:
            try:
                path.unlink()
            except OSError:
                pass
            return None
        seg = Segment(self.camera, self.start, max(end, self.start + 1e-3), str(path.relative_to(self.root)), size)
        self.on_closed(seg)
        return seg


class CameraRecorder(threading.Thread):
    """One camera's recording thread: its own connection to ``uri`` (PyAV), packets -> `Segmenter`.

    live: reconnect forever with backoff (RTSP/HTTP); a file (``live`` False) is remuxed once, as
    fast as it reads (``paced``: at its own frame rate, ``loop``: again from its start)."""

    def __init__(self, camera: str, uri: str, root: Path, segment_s: float, on_closed: Callable[[Segment], None],
                 stop: threading.Event, live: bool, t_base: float = 0.0, paced: bool = False, loop: bool = False,
                 open_timeout_s: float = 10.0, read_timeout_s: float = 5.0, backoff_max_s: float = 30.0,
                 on_state: Callable[[str, str, str], None] | None = None):
        super().__init__(name=f"record-{camera}", daemon=True)
        self.camera, self.uri, self.root = camera, uri, Path(root)
        self.segment_s, self.on_closed, self.stop_event = segment_s, on_closed, stop
        self.live, self.paced, self.loop = live, paced, loop
        self.clock = Clock(live=live or paced, base=t_base)
        self.open_timeout_s, self.read_timeout_s, self.backoff_max_s = open_timeout_s, read_timeout_s, backoff_max_s
        self.on_state = on_state or (lambda camera, state, reason: None)
        self.state = "starting"
        self.packets = 0
        self.segments = 0
        self.error: str | None = None
        self.cpu_s = 0.0             # this thread's CPU time (time.thread_time), for the profile

    def _set(self, state: str, reason: str = "") -> None:
        if state != self.state:
            self.state = state
            self.on_state(self.camera, state, reason)

    def _options(self) -> dict:
        if self.uri.lower().startswith(("rtsp://", "rtsps://")):
            return {"rtsp_transport": "tcp"}
        return {}

    def _closed(self, seg: Segment) -> None:
        self.segments += 1
        self.on_closed(seg)

    def run(self) -> None:
        backoff = 0.5
        t0 = time.thread_time()
        try:
            while not self.stop_event.is_set():
                outcome = self._record_once()
                self.cpu_s = time.thread_time() - t0
                if outcome in ("done", "unsupported"):
                    return
                if outcome == "ok":
                    backoff = 0.5
                self.stop_event.wait(backoff)
                backoff = min(self.backoff_max_s, backoff * 2)
        finally:
            self.cpu_s = time.thread_time() - t0
            if self.state not in ("unsupported", "failed"):
                self._set("stopped")

    def _record_once(self) -> str:
        """One connection: -> done (file ended), unsupported (codec), ok (ran, then lost), failed."""
        try:
            inp = av.open(self.uri, options=self._options(), timeout=(self.open_timeout_s, self.read_timeout_s))
        except (av.error.FFmpegError, OSError) as e:
            self._set("lost", f"cannot open: {e}")
            return "failed"
        seg = None
        try:
            if not inp.streams.video:
                self._set("unsupported", "no video stream")
                log.warning("camera %s: no video stream to record", self.camera)
                return "unsupported"
            stream = inp.streams.video[0]
            codec = stream.codec_context.name
            if codec not in COPY_CODECS:
                self._set("unsupported", f"codec {codec}")
                log.warning("camera %s: its %s stream cannot be copied into MP4 segments (only %s): not recorded; "
                            "its events are still indexed, without clips (the annotated --output video re-encodes "
                            "it)", self.camera, codec, "/".join(COPY_CODECS))
                return "unsupported"
            seg = Segmenter(self.root, self.camera, stream, self.segment_s, self._closed,
                            self.clock if self.clock.live else None)
            self.clock.reset()
            tb = float(stream.time_base)
            got = False
            t_start_wall, first_pts = time.monotonic(), None
            for packet in inp.demux(stream):
                if self.stop_event.is_set():
                    break
                if packet.dts is None:
                    continue
                pts_s = (packet.pts if packet.pts is not None else packet.dts) * tb
                if first_pts is None:
                    first_pts = pts_s
                if self.paced:
                    due = t_start_wall + (pts_s - first_pts)
                    wait = due - time.monotonic()
                    # late by up to PACE_BURST_S, never early: a wake-up reads the packets due by then
                    # in one burst (a core woken for each packet costs 3-5x the copy), and the clock
                    # takes the least delay, which the burst's last packet keeps
                    if wait > 0 and self.stop_event.wait(wait + PACE_BURST_S):
                        break
                t = self.clock.time(pts_s)
                try:
                    seg.add(packet, t, pts_s)
                except RecordWriteError as e:
                    self._set("failed", str(e))
                    log.warning("camera %s: recording stopped: %s (detection and events go on; retried in "
                                "30 s)", self.camera, e.strerror or e)
                    seg = None
                    self.stop_event.wait(30.0)
                    return "failed"
                self.packets += 1
                if not got:
                    got = True
                    self._set("recording")
            else:
                if not self.live and not self.loop:
                    return "done"
            if self.stop_event.is_set():
                return "done"
            self._set("lost", "the stream ended")
            return "ok" if got else "failed"
        except (av.error.FFmpegError, OSError) as e:
            self._set("lost", str(e))
            return "ok"
        finally:
            if seg is not None:
                try:
                    seg.close()
                except RecordWriteError:
                    pass
            try:
                inp.close()
            except Exception as e:  # noqa: BLE001
                log.debug("camera %s: closing its input: %s", self.camera, e)


def writable(root: Path) -> str | None:
    """None when ``root`` can hold recordings (created if missing), else why not, in one line."""
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        probe = Path(root) / f".write-test-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as e:
        return f"record folder {root} is not writable: {e.strerror or e}"
    return None
