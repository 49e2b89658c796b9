"""Render stage: ``tracks`` + the frame's slot -> boxes drawn -> video file / window; releases slots.

Render is the last pixel reader, so it returns every slot to capture (``release``),
also when it draws nothing (headless, no video). In lossless mode it draws on the slot
in place (nobody reads it afterwards); in latest-frame mode a slot may be reclaimed by
capture, so it copies the frame first and discards it if the seqlock changed.
End-to-end latency (capture to render done) is measured here.
"""

from __future__ import annotations

import logging
import time
from typing import List, Optional

import numpy as np

from . import bus as busmod
from .bus import CTL, TRACKS
from .ring import FrameRing
from .stage import RunContext, StageError, StageProcess
from .stats import StageBoard

log = logging.getLogger(__name__)


class RenderProcess(StageProcess):
    stage = "render"

    def __init__(self, rc: RunContext, video: Optional[str], fps: float, size: tuple, fourcc: str = "mp4v",
                 window: bool = False, names: Optional[List[str]] = None, labels: bool = True,
                 snapshots: Optional[dict] = None):
        super().__init__(rc)
        self.snapshot_args = snapshots  # SnapshotWriter keyword arguments, or None
        self.video_path = video
        self.fps = fps
        self.size = size
        self.fourcc = fourcc
        self.window_on = window
        self.names = names
        self.labels = labels

    def setup(self) -> None:
        from .sinks import BoxAnnotator, VideoSink, WindowSink
        self.ring = FrameRing.attach(self.rc.ring_name)
        self.inp = self.bus.pull(TRACKS, hwm=self.ring.slots * 4 + 64)
        self.ctl = self.bus.push(CTL, hwm=self.ring.slots * 4 + 64, flush=False)
        self.annotator = BoxAnnotator(self.names, labels=self.labels)
        self.video = None
        self.window = None
        self.snaps = None
        self._VideoSink, self._WindowSink = VideoSink, WindowSink
        self.scratch = np.empty(self.ring.max_shape, np.uint8) if self.rc.mode == "latest" else None
        self.stats.extra.update(frames_written=0)

    def teardown(self) -> None:
        if getattr(self, "video", None) is not None:
            self.video.close()  # finalise the file on every exit path
            self.stats.extra["frames_written"] = self.video.frames
        if getattr(self, "window", None) is not None:
            self.window.close()
        self.scratch = None
        if getattr(self, "ring", None) is not None:
            self.ring.close()

    def _open_outputs(self) -> None:
        """Opened once the run starts (not in setup): a run that fails to start writes no file."""
        if self.video_path:
            try:
                self.video = self._VideoSink(self.video_path, self.fps, self.size, self.fourcc)
            except OSError as e:
                raise StageError(str(e)) from None
        if self.window_on:
            self.window = self._WindowSink()
        if self.snapshot_args:
            from .snapshots import SnapshotWriter
            try:
                self.snaps = SnapshotWriter(names=self.names, **self.snapshot_args)
            except OSError as e:
                raise StageError(f"cannot write snapshots to {e.filename}: {e.strerror}") from None
            self.stats.extra.update(snapshots=0)

    def loop(self) -> None:
        if not self.wait_go():
            return
        self._open_outputs()
        latest = self.rc.mode == "latest"
        ring, stats = self.ring, self.stats
        lat = stats.hist("latency")
        draw = self.video is not None or self.window is not None
        idle_since = time.monotonic()
        for kind, h, arrays in self.messages(self.inp):
            if kind == "eos":
                return
            if kind != "frame":
                continue
            self.count(StageBoard.IN)
            t0 = time.monotonic()
            slot, seq, shape = h["slot"], h["seq"], tuple(h["shape"])
            ok = not h.get("dropped")
            tracks = busmod.unpack_dets(arrays) if arrays and (draw or self.snaps is not None) else None
            new = self.snaps.due(seq, tracks) if self.snaps is not None and ok else ()
            if (draw or len(new)) and ok:
                version = ring.version(slot)
                frame = ring.frame(slot, shape)
                if latest:  # capture may reclaim the slot: work on a private copy
                    img = self.scratch[:shape[0], :shape[1], :shape[2]]
                    np.copyto(img, frame)
                    ok = ring.valid(slot, seq, version)
                else:
                    img = frame
                if ok and len(new):  # before drawing: the snapshot shows the new track's box only
                    self.snaps.write(img, seq, h["t_capture"], tracks, new)
                    stats.extra["snapshots"] = self.snaps.written
                elif len(new):  # the slot was reclaimed meanwhile: take them from a later frame
                    self.snaps.unsee(tracks.track_id[new])
                if ok and draw:
                    if tracks is not None:
                        self.annotator.annotate(img, tracks)
                    if self.video is not None:
                        self.video.write(img)
                    if self.window is not None and not self.window.show(img):
                        log.info("window closed by the user")
                        self.send_state("quit")
                del frame, img
            busmod.release(self.ctl, self.ring, slot, seq)
            t1 = time.monotonic()
            if not ok:
                stats.drops += 1
            else:
                lat.add((t1 - h["t_mono"]) * 1000.0)
            self.count(StageBoard.OUT)
            stats.item(t0, t1, t0 - idle_since)
            if self.video is not None:
                stats.extra["frames_written"] = self.video.frames
            idle_since = time.monotonic()
