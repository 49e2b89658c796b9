"""Render stage: `Tracked` + the frame's slot -> boxes drawn -> video file and the display; releases slots.

Render is the last pixel reader, so it returns every slot to capture (`Release`), also
when it draws nothing (headless, no video). In lossless mode it draws on the slot in
place (nobody reads it afterwards), unless the live view is on (it copies slots after render:
render then draws on a private copy); in latest-frame mode a slot may be reclaimed by
capture, so it copies the frame first and discards it if the seqlock changed.
End-to-end latency (capture to render done) is measured here.

It hosts the one display stage, ``output.display``:

- ``window``: an OpenCV window of the annotated frames (q / Esc quits);
- ``overlay``: a click-through, always-on-top Qt window over the captured screen region that
  paints only the boxes, and reports what it painted to capture (`Drawn`), which masks it out
  of the next grabs; ``mirror``: a Qt window showing the frames with their boxes. Both run
  Qt's event loop in this process' main thread (`render_qt.QtDisplayDriver`);
- ``none``: nothing shown.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import List, Optional

import numpy as np

from trackpipe.pipeline.common.shared import StageBoard
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.bus import CTL, OVERLAY, SINK, TRACKS, of_camera
from trackpipe.pipeline.transport.messages import BestFrame, EndOfStream, Snapshot, StageState, Tracked
from trackpipe.pipeline.transport.ring import FrameRing

from .base import RunContext, StageError, StageProcess
from .settings import RenderSettings

log = logging.getLogger(__name__)

QT_DISPLAYS = ("overlay", "mirror")


def open_video(path: str, fps: float, size_wh: tuple, codec: str = "auto", preset: Optional[str] = None):
    """The output video (`pipeline.video.VideoWriter`: H.264 in fragmented MP4, or mp4v); its
    folder is created as needed. Raises StageError with one line for a bad setting, and OSError
    (a `VideoWriterError` with its ``errno``) when the disk refuses the file: the caller stops
    the video, not the stage."""
    from pathlib import Path

    from trackpipe.pipeline.video import VideoWriter, VideoWriterError
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        return VideoWriter.open(path, fps, (int(size_wh[1]), int(size_wh[0])), codec=codec, preset=preset)
    except VideoWriterError as e:
        if e.errno is not None:
            raise
        raise StageError(str(e)) from None


def fit_frame(frame: np.ndarray, frame_hw: tuple) -> np.ndarray:
    """``frame`` at the video's (H, W): a frame of another size (image folders) is placed
    top-left on black, shrunk only if it is larger, so that its pixels keep their coordinates."""
    h, w = frame.shape[:2]
    fh, fw = frame_hw
    if (h, w) == (fh, fw):
        return frame
    import cv2
    s = min(fw / w, fh / h, 1.0)
    if s < 1.0:
        w, h = max(1, int(w * s)), max(1, int(h * s))
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((fh, fw, 3), np.uint8)
    canvas[:h, :w] = frame
    return canvas


class CameraOutput:
    """What render writes for one camera: its video, snapshots and zone/line drawings; its ring
    and the control socket its slots go back through."""

    def __init__(self, cam, ring, ctl, video_path: Optional[str], shapes: Optional[dict]):
        from trackpipe.pipeline.media.outputs import OutputState
        self.index, self.name = cam.index, cam.name
        self.fps = getattr(cam.info, "fps", 30.0) or 30.0
        self.size = (cam.info.width, cam.info.height)
        self.ring, self.ctl = ring, ctl
        self.video_base = getattr(cam, "video", None) or video_path   # as configured; parts go beside it
        self.video_path = video_path           # the file this incarnation starts with
        # the video output's state: stopped by a full or unwritable disk, resumed in a new part
        self.video_state = OutputState("video", video_path, cam.name, "frames") if video_path else None
        self.snapshots = cam.snapshots
        self.shapes = shapes        # {"zones": [...], "lines": [...]} as configured: drawn on every frame
        self.video = None
        self.snaps = None
        self.best = None            # recording.best.BestFrames: a recorded camera's tracks' best frames
        self.zone_drawer = None
        self.zone_counts = {"zones": {}, "lines": {}}

    def draw_shapes(self, img: np.ndarray, events=()) -> None:
        """Zones and lines (fractions resolved for this frame's size) with the counts of ``events``."""
        if not self.shapes or not (self.shapes.get("zones") or self.shapes.get("lines")):
            return
        if self.zone_drawer is None:
            from trackpipe.pipeline.events.draw import ZoneLineAnnotator
            self.zone_drawer = ZoneLineAnnotator(list(self.shapes.get("zones") or ()),
                                                 list(self.shapes.get("lines") or ()))
        for e in events:  # each event carries its zone's / line's counts for its class
            key = "zones" if "zone" in e else "lines" if "line" in e else None
            if key and isinstance(e.get("counts"), dict):
                per = self.zone_counts[key].setdefault(e[key[:-1]], {})
                per[e.get("class") or str(e.get("class_id"))] = dict(e["counts"])
        self.zone_drawer.annotate(img, counts=self.zone_counts)


class RenderProcess(StageProcess):
    stage = "render"
    frames_done = 0    # frames in the videos closed so far (a disk error; later parts add on)

    def __init__(self, rc: RunContext, settings: RenderSettings):
        super().__init__(rc)
        self.settings = settings
        self.cameras = list(settings.cameras)
        self.incarnation = settings.incarnation  # > 0: videos go to <name>.part<N>.mp4
        self.codec = settings.codec      # auto | h264 | mp4v (pipeline.video.VideoWriter)
        self.preset = settings.preset    # x264 preset; None: choose_preset (measured CPU cost)
        self.display = settings.display
        self.region = settings.region    # overlay/mirror: screen x, y, w, h
        self.names = list(settings.names) if settings.names else None
        self.clean_slots = settings.clean_slots

    def _video_path(self, path: Optional[str]) -> Optional[str]:
        if path and self.incarnation:
            from trackpipe.pipeline.video.writer import next_part_path
            return str(next_part_path(path))
        return path

    def setup(self) -> None:
        from trackpipe.pipeline.drawing.boxes import BoxAnnotator
        if self.display in QT_DISPLAYS:
            from trackpipe.pipeline.display.qt_env import overlay_supported
            ok, reason = overlay_supported()
            if not ok:
                raise StageError(f"cannot show the {self.display}: {reason}")
        self.outs: List[CameraOutput] = []
        for cam in self.cameras:
            ring = FrameRing.attach(self.rc.ring_of(cam.index))
            ctl = self.bus.push(of_camera(CTL, cam.index), hwm=ring.slots * 4 + 64, flush=False)
            self.outs.append(CameraOutput(cam, ring, ctl, self._video_path(cam.video),
                                          {"zones": cam.zones, "lines": cam.lines}))
        self.ring, self.ctl = self.outs[0].ring, self.outs[0].ctl   # the display's (one camera)
        n = len(self.outs)
        self.inp = self.bus.pull(TRACKS, hwm=(self.ring.slots * 4 + 64) * n)
        self.drawn = self.bus.push(OVERLAY, hwm=4, flush=False) if self.display == "overlay" else None
        # snapshot JPEGs for the sink's deliveries (MQTT snapshots): never waited for
        self.snaps_out = self.bus.push(SINK, hwm=16) if self.settings.snapshots_to_sink else None
        if self.snaps_out is not None:
            self.stats.gauges.update(snapshots_sent=0, snapshots_dropped=0)
        self.best_out = self._best_frames()
        self.annotator = BoxAnnotator(self.names, labels=self.settings.labels)
        self.window = None
        self.ended = set()
        self.scratch = np.empty(max((o.ring.max_shape for o in self.outs), key=lambda s: s[0] * s[1]), np.uint8) \
            if self._private() or self.display == "mirror" else None
        self.stats.gauges.update(frames_written=0)

    def _best_frames(self):
        """Recorded cameras keep their tracks' best frames (`recording.best.BestFrames`), sent to
        the sink for their events' snapshots; -> the socket to the sink (None: nothing recorded)."""
        rec = self.settings.record
        recorded = {c.name: c for c in rec.cameras} if rec is not None else {}
        if not any(o.name in recorded for o in self.outs):
            return None
        from trackpipe.pipeline.recording.best import BestFrames
        for o in self.outs:
            if o.name in recorded:
                o.best = BestFrames(recorded[o.name].classes, self.names or ())
        self.stats.gauges.update(best_frames_kept=0, best_frames_sent=0, best_frames_dropped=0)
        return self.bus.push(SINK, hwm=64)

    def _send_best(self, out: CameraOutput, track_ids) -> None:
        """The ended tracks' best frames, as JPEG, to the sink (never waited for: a full queue
        drops them, counted)."""
        from trackpipe.pipeline.recording.best import encoded
        for b, jpeg in encoded(out.best.ended(track_ids)):
            msg = BestFrame(out.index, b.seq, b.t, b.track_id, b.score, b.box, np.frombuffer(jpeg, np.uint8))
            key = "best_frames_sent" if busmod.try_send(self.best_out, msg) else "best_frames_dropped"
            self.stats.gauges[key] += 1

    def _private(self) -> bool:
        """Draw on a copy: in latest mode capture may reclaim a slot while render works on it,
        and with ``clean_slots`` the live view copies the slot after render (it would get render's
        boxes drawn twice)."""
        return self.rc.mode == "latest" or self.clean_slots

    @property
    def video(self):
        """Camera 0's video writer (one camera: the run's)."""
        return self.outs[0].video if getattr(self, "outs", None) else None

    def _frames_written(self) -> int:
        return self.frames_done + sum(o.video.frames for o in self.outs if o.video is not None)

    def teardown(self) -> None:
        for o in getattr(self, "outs", ()):
            if o.best is not None and getattr(self, "best_out", None) is not None:
                self._send_best(o, list(o.best.best))   # a stopped run: the sink ends these tracks
            if o.video is not None:
                self._close_video(o)  # finalise the file on every exit path
        if getattr(self, "outs", None):
            self.stats.gauges["frames_written"] = self._frames_written()
        if getattr(self, "window", None) is not None:
            self.window.close()
        self.scratch = None
        for o in getattr(self, "outs", ()):
            o.ring.close()

    def draw(self, img: np.ndarray, tracks, events=(), out: Optional[CameraOutput] = None) -> None:
        """The one place render draws boxes and labels: img (H, W, 3) uint8 BGR, in place; the
        camera's zones and lines with the counts of ``events``."""
        (out or self.outs[0]).draw_shapes(img, events)
        self.annotator.annotate(img, tracks)

    def _open_video(self, o: CameraOutput, path: str) -> bool:
        """Open camera ``o``'s video at ``path``; a disk that refuses it stops the video (retried
        later), a bad setting stops the stage. -> True when open."""
        try:
            o.video = open_video(path, o.fps, o.size, self.codec, self.preset)
        except OSError as e:
            o.video_state.fail(e)
            return False
        o.video_state.path = str(path)
        self.stats.gauges.update(video_codec=o.video.codec, video_preset=o.video.preset or "",
                                 video_crash_safe=o.video.crash_safe)
        return True

    def _close_video(self, o: CameraOutput, err: Optional[OSError] = None) -> None:
        """Close camera ``o``'s video (``err``: after a failed write, which stops it). A part file
        that holds no frame is removed."""
        from pathlib import Path

        from trackpipe.pipeline.video import VideoWriterError
        v, o.video = o.video, None
        try:
            v.close()
        except VideoWriterError as e:
            err = err or e
        if err is not None:
            o.video_state.fail(err)
        if v.landed:
            self.frames_done += v.frames
        else:   # not one frame reached the file
            if err is not None:
                o.video_state.lost += v.frames
            if str(v.path) != str(o.video_base):
                Path(v.path).unlink(missing_ok=True)

    def _video_ready(self, o: CameraOutput) -> bool:
        """Camera ``o`` has an open video: open since the start, or a stopped one whose retry is
        due, reopened now in a new part file."""
        if o.video is not None:
            return True
        if o.video_state is None or not o.video_state.retry_due():
            return False
        from trackpipe.pipeline.video.writer import next_part_path
        return self._open_video(o, str(next_part_path(o.video_base)))

    def _write_video(self, o: CameraOutput, img: np.ndarray) -> None:
        from trackpipe.pipeline.video import VideoWriterError
        try:
            o.video.write(fit_frame(img, o.video.frame_hw))
        except VideoWriterError as e:
            if e.errno is None:
                raise
            o.video_state.lost += 1
            self._close_video(o, e)
            return
        if o.video.landed:
            o.video_state.ok()

    def _snapshot_to_sink(self, out: CameraOutput, seq: int, track_id: int, jpeg: bytes) -> None:
        """A snapshot JPEG to the sink, which offers it to the deliveries (a full queue drops it)."""
        msg = Snapshot(out.index, seq, track_id, np.frombuffer(jpeg, np.uint8))
        key = "snapshots_sent" if busmod.try_send(self.snaps_out, msg) else "snapshots_dropped"
        self.stats.gauges[key] += 1

    def send_stats(self) -> None:
        outs = getattr(self, "outs", ())
        states = [o.video_state for o in outs if o.video_state is not None]
        states += [o.snaps.state for o in outs if o.snaps is not None and o.snaps.folder is not None]
        if states:
            self.stats.gauges["outputs"] = [s.to_dict() for s in states]
        super().send_stats()

    def _open_outputs(self) -> None:
        """Opened once the run starts (not in setup): a run that fails to start writes no file."""
        from trackpipe.pipeline.display.window import VideoWindow
        st = self.settings
        for o in self.outs:
            if o.video_path:
                self._open_video(o, o.video_path)
            if o.snapshots or self.snaps_out is not None:
                from trackpipe.pipeline.media.snapshots import SnapshotWriter
                to_sink = functools.partial(self._snapshot_to_sink, o) if self.snaps_out is not None else None
                try:
                    o.snaps = SnapshotWriter(names=self.names, folder=o.snapshots, camera=o.name,
                                             classes=st.snapshot_classes, quality=st.snapshot_quality,
                                             on_jpeg=to_sink)
                except OSError as e:
                    raise StageError(f"cannot write snapshots to {e.filename}: {e.strerror}") from None
                self.stats.gauges.update(snapshots=0)
        if self.display == "window":
            self.window = VideoWindow()

    def loop(self) -> None:
        if not self.wait_go():
            return
        self._open_outputs()
        if self.display in QT_DISPLAYS:
            from .render_qt import QtDisplayDriver
            if QtDisplayDriver(self).run():
                log.info("%s window closed by the user", self.display)
                self.send_state(StageState.QUIT)
            return
        idle_since = time.monotonic()
        for msg in self.messages(self.inp):
            if isinstance(msg, EndOfStream):
                out = self.outs[msg.source_id]
                if out.best is not None:   # the end's track_ended events: every live track
                    self._send_best(out, list(out.best.best))
                self.ended.add(msg.source_id)
                if len(self.ended) >= len(self.outs):
                    return
                continue
            if not isinstance(msg, Tracked):
                continue
            self.count(StageBoard.IN)
            t0 = time.monotonic()
            self.render(msg)
            t1 = time.monotonic()
            self.count(StageBoard.OUT)
            self.stats.item(t0, t1, t0 - idle_since)
            idle_since = time.monotonic()

    def render(self, msg: Tracked) -> bool:
        """Snapshots, drawing, video and window for one frame, then its slot goes back to capture.
        -> False when the frame could not be used (dropped upstream, or reclaimed meanwhile)."""
        stats, meta = self.stats, msg.meta
        out = self.outs[meta.source_id]
        ring = out.ring
        ok = not msg.dropped
        video = ok and self._video_ready(out)
        draw = video or self.window is not None
        tracks = msg.tracks if draw or out.snaps is not None or out.best is not None else None
        new = out.snaps.due(meta.seq, tracks) if out.snaps is not None and ok else ()
        better = out.best.due(tracks, meta.t_capture) if out.best is not None and ok else ()
        if (draw or len(new) or len(better)) and ok:
            slot, seq, shape = meta.slot, meta.seq, meta.shape
            version = ring.version(slot)
            frame = ring.frame(slot, shape)
            # capture may reclaim the slot, or the live view reads it: a private copy to draw on (a
            # best frame alone is shrunk from the slot itself, then the slot checked)
            shared = self._private()
            private = shared and (draw or len(new) > 0)
            if private:
                img = self.scratch[:shape[0], :shape[1], :shape[2]]
                np.copyto(img, frame)
                ok = ring.valid(slot, seq, version)
            else:
                img = frame
            if ok and len(new):  # before drawing: the snapshot shows the new track's box only
                out.snaps.write(img, seq, meta.t_capture, tracks, new)
                stats.gauges["snapshots"] = sum(o.snaps.written for o in self.outs if o.snaps is not None)
            elif len(new):  # the slot was reclaimed meanwhile: take them from a later frame
                out.snaps.unsee(tracks.track_id[new])
            if ok and len(better):  # clean (before drawing): the recorded events' snapshots
                checked = (lambda: ring.valid(slot, seq, version)) if shared and not private else None
                out.best.keep(img, seq, meta.t_capture, tracks, better, checked)
                stats.gauges["best_frames_kept"] = sum(o.best.kept for o in self.outs if o.best is not None)
            if ok and draw:
                if tracks is not None:
                    self.draw(img, tracks, msg.events, out)
                if out.video is not None:
                    self._write_video(out, img)
                if self.window is not None and not self.window.show(img):
                    log.info("window closed by the user")
                    self.send_state(StageState.QUIT)
            del frame, img
        busmod.release(out.ctl, ring, meta.slot, meta.seq)
        if out.best is not None:
            self._send_best(out, [e["track_id"] for e in msg.events if e.get("event") == "track_ended"])
        if ok and not video and out.video_state is not None:   # the video is stopped (disk full...)
            out.video_state.lost += 1
        if not ok:
            stats.drops += 1
        else:
            stats.hist("latency").add((time.monotonic() - meta.t_mono) * 1000.0)
        if out.video is not None:
            stats.gauges["frames_written"] = self._frames_written()
        return ok
