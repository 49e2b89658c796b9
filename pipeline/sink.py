"""Sink stage: ``tracks`` -> MOTChallenge file and JSON-lines events (no pixels)."""

from __future__ import annotations

import logging
import time
from typing import List, Optional

from . import bus as busmod
from .bus import SINK
from .stage import RunContext, StageError, StageProcess
from .stats import StageBoard

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
        from .sinks import EventWriter, MotWriter
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
        for kind, h, arrays in self.messages(self.inp):
            if kind == "eos":
                if self.events is not None:
                    self.events.end_all(time.time(), self.last_seq, "end_of_stream")
                return
            if kind == "event":
                if self.events is not None:
                    ev = dict(h)
                    name, t, seq = ev.pop("event"), ev.pop("t", None), ev.pop("seq", self.last_seq)
                    self.events.emit(name, t, seq, **ev)
                continue
            if kind != "frame":
                continue
            self.count(StageBoard.IN)
            t0 = time.monotonic()
            seq = h["seq"]
            self.last_seq = seq
            tracks = busmod.unpack_dets(arrays) if arrays else None
            if self.mot is not None and tracks is not None:
                self.mot.write(seq + 1, tracks)
            if self.events is not None and not h.get("dropped"):
                self.events.update(seq, h["t_capture"], tracks)
            t1 = time.monotonic()
            self.count(StageBoard.OUT)
            self.stats.item(t0, t1, t0 - idle_since)
            idle_since = time.monotonic()
