"""Sink stage: `Tracked` and `SourceEvent` messages -> MOTChallenge file and JSON-lines events (no pixels)."""

from __future__ import annotations

import logging
import time
from typing import List, Optional

from trackpipe.pipeline.runtime.shared import StageBoard
from trackpipe.pipeline.transport.bus import SINK
from trackpipe.pipeline.transport.messages import EndOfStream, SourceEvent, Tracked

from .base import RunContext, StageError, StageProcess

log = logging.getLogger(__name__)


class SinkProcess(StageProcess):
    stage = "sink"

    def __init__(self, rc: RunContext, mot: Optional[str], events: Optional[str],
                 names: Optional[List[str]] = None, track_end_frames: int = 30, append: bool = False):
        super().__init__(rc)
        self.append = append  # a restarted sink continues the files
        self.mot_path = mot
        self.events_path = events
        self.names = names
        self.track_end_frames = track_end_frames

    def setup(self) -> None:
        self.inp = self.bus.pull(SINK, hwm=10000)
        self.mot = self.events = None
        self.last_seq = -1

    def _open_outputs(self) -> None:
        """Opened once the run starts (not in setup): a run that fails to start writes no file."""
        from trackpipe.pipeline.media.sinks import EventWriter, MotWriter
        try:
            self.mot = MotWriter(self.mot_path, self.append) if self.mot_path else None
            self.events = EventWriter(self.events_path, self.names, self.track_end_frames, self.append) \
                if self.events_path else None
        except OSError as e:
            raise StageError(f"cannot write {e.filename}: {e.strerror}") from None

    def teardown(self) -> None:
        if getattr(self, "events", None) is not None:
            if self.stopping():
                self.events.end_all(time.time(), self.last_seq, "stopped")
            self.events.close()
        if getattr(self, "mot", None) is not None:
            self.mot.close()

    def loop(self) -> None:
        if not self.wait_go():
            return
        self._open_outputs()
        idle_since = time.monotonic()
        for msg in self.messages(self.inp):
            if isinstance(msg, EndOfStream):
                if self.events is not None:
                    self.events.end_all(time.time(), self.last_seq, "end_of_stream")
                return
            if isinstance(msg, SourceEvent):
                if self.events is not None:
                    self.events.emit(msg.event, msg.t, msg.seq, **msg.fields())
                continue
            if not isinstance(msg, Tracked):
                continue
            self.count(StageBoard.IN)
            t0 = time.monotonic()
            seq = msg.meta.seq
            self.last_seq = seq
            if self.mot is not None and msg.tracks is not None:
                self.mot.write(seq + 1, msg.tracks)
            if self.events is not None and not msg.dropped:
                self.events.update(seq, msg.meta.t_capture, msg.tracks)
            t1 = time.monotonic()
            self.count(StageBoard.OUT)
            self.stats.item(t0, t1, t0 - idle_since)
            idle_since = time.monotonic()
