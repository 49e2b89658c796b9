"""Base class of every stage process.

A stage is a small ``multiprocessing`` process class (spawn start method): the
constructor only stores picklable settings; ``run()`` builds everything heavy (bus,
shared-memory attachment, model, files), reports ``ready``, runs ``loop()`` and always
tears down, sending a last stats snapshot. Stages ignore SIGINT (the supervisor
coordinates a stop through one event), treat SIGTERM as a stop request and get
SIGTERM if the supervisor dies (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from typing import Callable, Iterator, Optional

import zmq

from trackpipe.models.errors import error_line
from trackpipe.pipeline.profiling.stats import StageStats
from trackpipe.pipeline.common.shared import StageBoard
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport.bus import STATS, Bus
from trackpipe.pipeline.transport.messages import Log, Message, StageState, State, Stats

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What every stage of one run shares (picklable; the events and board are shared objects)."""

    run_id: str
    run_dir: str
    ring_name: str
    mode: str              # "lossless" | "latest"
    stop: object           # common.shared.Flag: stop everything
    go: object             # common.shared.Flag: every stage is ready, capture may start
    board: StageBoard
    stage_index: dict      # stage name -> row of the board
    stats_interval_s: float = 1.0
    log_level: int = logging.INFO
    ring_slots: int = 8
    cameras: tuple = ("cam0",)     # camera names by index (`FrameMeta.source_id`)
    ring_names: tuple = ()         # each camera's ring (camera 0's is ``ring_name``)

    def ring_of(self, index: int) -> str:
        return self.ring_names[index] if self.ring_names else self.ring_name


class _Stopping:
    """``is_set()`` view of ``StageProcess.stopping()`` for ``bus.send``, asked while a send waits
    out back-pressure; each ask is a heartbeat too: the stage waiting is alive, the frozen stage
    downstream is the one the watchdog must replace."""

    def __init__(self, proc: "StageProcess"):
        self.proc = proc

    def is_set(self) -> bool:
        self.proc.beat()
        return self.proc.stopping()


class StageError(Exception):
    """A failure of a stage with a user-facing message."""


class _BusLogHandler(logging.Handler):
    """Forwards log records to the supervisor over a dedicated PUSH socket (thread-safe)."""

    def __init__(self, sock: zmq.Socket, stage: str):
        super().__init__()
        self.sock = sock
        self.stage = stage
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            with self._lock:
                busmod.try_send(self.sock, Log(self.stage, record.levelno, record.name, msg))
        except Exception:
            pass


def _prctl_setup(stage: str, sig: int = signal.SIGTERM) -> None:
    """Linux: get ``sig`` when the supervisor dies; name the process ``tp-<stage>`` (ps, top)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, int(sig))  # PR_SET_PDEATHSIG
            libc.prctl(15, ctypes.c_char_p(f"tp-{stage}".encode()[:15]), 0, 0, 0)  # PR_SET_NAME
        except (OSError, AttributeError):
            pass


class StageProcess(SpawnProcess):
    """Subclasses set ``stage`` and implement ``setup()``, ``loop()`` and ``teardown()``."""

    stage = "stage"
    # set by a stage whose worker thread is blocked in native code (a read of a frozen camera):
    # its teardown leaves what that thread uses, and the process ends with os._exit, because
    # interpreter finalization would abort if the thread came back meanwhile
    thread_stuck = False

    def __init__(self, rc: RunContext):
        super().__init__(name=f"trackpipe-{self.stage}", daemon=False)
        self.rc = rc
        self._term = False  # SIGTERM received (set by the handler only)

    # --- helpers for subclasses ----------------------------------------------------------
    @property
    def row(self) -> int:
        return self.rc.stage_index[self.stage]

    def stopping(self) -> bool:
        """True once the run is stopping or this process got SIGTERM."""
        return self._term or self.rc.stop.is_set()

    def beat(self) -> None:
        self.rc.board.beat(self.row)

    def count(self, field: int, n: int = 1) -> None:
        b = self.rc.board
        b.set(self.row, field, b.get(self.row, field) + n)

    def tick(self) -> None:
        """Call every loop iteration: heartbeat plus the periodic stats message."""
        self.beat()
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self.rc.stats_interval_s
            self.send_stats()

    def wait_go(self) -> bool:
        """Wait until every stage is ready (messages stay queued meanwhile); False if stopped first."""
        while not self.rc.go.wait(0.05):
            if self.stopping():
                return False
            self.tick()
        return True

    def messages(self, sock, on_idle: Optional[Callable[[], None]] = None) -> Iterator[Message]:
        """Typed messages from ``sock`` until the stage is stopped, ticking between polls;
        ``on_idle()`` runs after a poll that received nothing."""
        while not self.stopping():
            self.tick()
            msg = busmod.recv(sock)
            if msg is not None:
                yield msg
            elif on_idle is not None:
                on_idle()

    def send(self, sock, msg: Message) -> bool:
        """Send ``msg`` on ``sock``, waiting out back-pressure; False once the run stops or this
        process got SIGTERM (e.g. the supervisor died: its stop flag will never be set then)."""
        return busmod.send(sock, msg, stop=_Stopping(self))

    def send_stats(self) -> None:
        busmod.try_send(self._stats_sock, Stats(self.stats.snapshot()))

    def send_state(self, state: StageState, message: str = "") -> None:
        try:  # blocking (SNDTIMEO 1 s): the supervisor must learn a state change
            self._stats_sock.send_multipart(busmod.encode(State(self.stage, state, message)))
        except zmq.ZMQError:
            pass

    # --- process entry point -------------------------------------------------------------
    def run(self) -> None:  # runs in the child
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.signal(signal.SIGTERM, self._on_term)
        _prctl_setup(self.stage)
        if os.getppid() == 1:  # the supervisor is already gone
            return
        self._next_stats = 0.0
        self.stats = StageStats(self.stage)
        self.bus = Bus(self.rc.run_dir)
        self._stats_sock = self.bus.push(STATS, hwm=10000)
        self._stats_sock.setsockopt(zmq.SNDTIMEO, 1000)
        root = logging.getLogger()
        root.handlers[:] = [_BusLogHandler(self.bus.push(STATS, hwm=10000), self.stage)]
        root.setLevel(self.rc.log_level)
        code, graceful = 0, False
        try:
            self.rc.board.reset(self.row)
            self.beat()
            self.setup()
            self.rc.board.set(self.row, StageBoard.READY, 1.0)
            self.send_state(StageState.READY)
            self.loop()
            graceful = not self.stopping()
            self.send_state(StageState.DONE)
        except StageError as e:
            self.send_state(StageState.ERROR, str(e))
            code = 1
        except Exception as e:  # report, with the traceback at debug level
            log.debug("stage %s crashed", self.stage, exc_info=True)
            self.send_state(StageState.ERROR, error_line(e))
            code = 1
        finally:
            try:
                self.teardown()
            except Exception as e:
                log.warning("%s teardown: %s", self.stage, e)
            self.send_stats()
            self._stats_sock.close(linger=500)  # the last snapshot must reach the supervisor
            # let queued messages (EOS, last results) reach their peers on a normal end
            self.bus.close(linger_ms=2000 if graceful else 0)
        if self.thread_stuck:
            logging.shutdown()
            os._exit(code)
        sys.exit(code)

    def _on_term(self, signum, frame) -> None:
        self._term = True

    # --- to implement ---------------------------------------------------------------------
    def setup(self) -> None:
        pass

    def loop(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        pass
