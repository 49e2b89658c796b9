"""ZeroMQ message bus: ipc endpoints in a private per-run directory, typed messages.

Messages are the dataclasses of `transport.messages` (encoded there as multipart
``[kind, JSON header, *array buffers]``). Pixels never travel here: frames carry
`FrameMeta` (seq, slot, timestamps, shape) and the pixels stay in the shared-memory ring.

Each process creates one `Bus` (one ZeroMQ context) inside its ``run()``; every socket
has ``linger=0`` and explicit high-water marks, and every receive is a poll with a
timeout so a stop request is seen within ~100 ms.
"""

from __future__ import annotations

import os
from typing import List, Optional

import zmq

from .messages import Message, Release, decode, encode

POLL_MS = 100
DEFAULT_HWM = 1000

# endpoint names (each bound by its consumer)
FRAMES = "frames"    # capture -> infer workers    (PUSH bound by capture, round-robin)
DETS = "dets"        # infer -> track              (PULL bound by track)
TRACKS = "tracks"    # track -> render             (PULL bound by render)
SINK = "sink"        # track -> sink               (PULL bound by sink)
CTL = "ctl"          # infer/render -> capture     (PULL bound by capture): Want / Release
OVERLAY = "overlay"  # render -> capture           (PULL bound by capture): Drawn (overlay display)
STATS = "stats"      # every stage -> supervisor   (PULL bound by supervisor): State, Stats, Log
WEB = "web"          # track, supervisor -> web    (PULL bound by web): Tracked, events, LiveStats


def of_camera(name: str, index: int) -> str:
    """The endpoint name of camera ``index`` for a per-camera endpoint (`FRAMES`, `CTL`,
    `OVERLAY`): camera 0 keeps the plain name."""
    return name if index == 0 else f"{name}.{index}"


def endpoint(run_dir: str, name: str) -> str:
    return f"ipc://{os.path.join(run_dir, name)}.ipc"


class Bus:
    """One ZeroMQ context per process and the sockets made from it."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.ctx = zmq.Context()
        self._sockets: List[zmq.Socket] = []
        self._no_flush: set = set()

    def _socket(self, kind: int, hwm: int) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, hwm)
        s.setsockopt(zmq.RCVHWM, hwm)
        self._sockets.append(s)
        return s

    def pull(self, name: str, hwm: int = DEFAULT_HWM, bind: bool = True) -> zmq.Socket:
        """A PULL socket on ``name``: bound (one consumer owns the endpoint) or connected
        (several consumers share one bound PUSH, which deals messages round-robin)."""
        s = self._socket(zmq.PULL, hwm)
        (s.bind if bind else s.connect)(endpoint(self.run_dir, name))
        return s

    def push(self, name: str, hwm: int = DEFAULT_HWM, send_timeout_ms: int = POLL_MS,
             flush: bool = True, bind: bool = False) -> zmq.Socket:
        """A PUSH socket to ``name`` (connected, or bound when its peers connect to it);
        sends time out after ``send_timeout_ms``.

        ``flush``: on a graceful `close`, wait for queued messages (data); False for
        advisory messages (wake-ups, credits) whose peer may already be gone."""
        s = self._socket(zmq.PUSH, hwm)
        if not flush:
            self._no_flush.add(s)
        s.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
        (s.bind if bind else s.connect)(endpoint(self.run_dir, name))
        return s

    def close(self, linger_ms: int = 0) -> None:
        """Close every socket; ``linger_ms`` > 0 lets queued outgoing messages go first."""
        for s in self._sockets:
            s.close(linger=0 if s in self._no_flush or s.type != zmq.PUSH else linger_ms)
        self._sockets.clear()
        self._no_flush.clear()
        self.ctx.term()


# --- typed send / receive ------------------------------------------------------------------

def send(sock: zmq.Socket, msg: Message, stop=None) -> bool:
    """Send, retrying on HWM back-pressure until sent (True) or ``stop`` (a Flag) is set (False)."""
    parts = encode(msg)
    while True:
        try:
            sock.send_multipart(parts, copy=False)
            return True
        except zmq.Again:
            if stop is not None and stop.is_set():
                return False


def try_send(sock: zmq.Socket, msg: Message) -> bool:
    """Send without blocking; False when the peer's queue is full (or it is gone)."""
    try:
        sock.send_multipart(encode(msg), zmq.NOBLOCK)
        return True
    except zmq.ZMQError:
        return False


def recv(sock: zmq.Socket, timeout_ms: int = POLL_MS) -> Optional[Message]:
    """Receive one message or None after ``timeout_ms``."""
    if sock.poll(timeout_ms, zmq.POLLIN):
        return decode(sock.recv_multipart(copy=False))
    return None


def recv_nowait(sock: zmq.Socket) -> Optional[Message]:
    try:
        return decode(sock.recv_multipart(zmq.NOBLOCK, copy=False))
    except zmq.Again:
        return None


def release(ctl: zmq.Socket, ring, slot: int, seq: int) -> None:
    """The last reader of frame ``seq`` gives its slot back: in shared memory (what capture
    checks), plus a `Release` message on ``ctl`` that only wakes capture up (never blocks)."""
    ring.release(slot, seq)
    try_send(ctl, Release(slot, seq))
