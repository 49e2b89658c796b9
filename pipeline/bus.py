"""ZeroMQ message bus: ipc endpoints in a private per-run directory, multipart messages.

A message is ``[kind, header, *arrays]``: ``kind`` a short ASCII word (``frame``,
``event``, ``eos``, ``stats``...), ``header`` compact JSON, then the raw bytes of
small numpy arrays (their dtype and shape travel in the header under ``"_a"``).
Pixels never travel here: frames carry ``(seq, slot, timestamps, shape)`` and the
pixels stay in the shared-memory ring.

Each process creates one `Bus` (one ZeroMQ context) inside its ``run()``; every socket
has ``linger=0`` and explicit high-water marks, and every receive is a poll with a
timeout so a stop request is seen within ~100 ms.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import zmq

from trackpipe.models.types import Detections, Tracks

POLL_MS = 100
DEFAULT_HWM = 1000

# endpoint names (each bound by its consumer)
FRAMES = "frames"    # capture -> infer workers    (PUSH bound by capture, round-robin)
DETS = "dets"        # infer -> track              (PULL bound by track)
TRACKS = "tracks"    # track -> render             (PULL bound by render)
SINK = "sink"        # track -> sink               (PULL bound by sink)
CTL = "ctl"          # infer/render -> capture     (PULL bound by capture): want / release
STATS = "stats"      # every stage -> supervisor   (PULL bound by supervisor): stats, logs, state


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


# --- message encoding ---------------------------------------------------------------------

def encode(kind: str, header: Optional[dict] = None, arrays: Optional[Dict[str, np.ndarray]] = None) -> list:
    """-> multipart frames ``[kind, json header, *array buffers]``."""
    header = dict(header or {})
    bufs = []
    if arrays:
        spec = []
        for k, a in arrays.items():
            a = np.ascontiguousarray(a)
            spec.append([k, a.dtype.str, list(a.shape)])
            bufs.append(memoryview(a).cast("B") if a.size else b"")
        header["_a"] = spec
    return [kind.encode(), json.dumps(header, separators=(",", ":")).encode()] + bufs


def decode(parts: Sequence) -> Tuple[str, dict, Dict[str, np.ndarray]]:
    """Inverse of `encode`; arrays are read-only views on the received buffers."""
    kind = bytes(parts[0]).decode()
    header = json.loads(bytes(parts[1]))
    arrays = {}
    for (k, dt, shape), buf in zip(header.pop("_a", []), parts[2:], strict=False):
        arrays[k] = np.frombuffer(buf, dtype=np.dtype(dt)).reshape(shape)
    return kind, header, arrays


def release(ctl: zmq.Socket, ring, slot: int, seq: int) -> None:
    """The last reader of frame ``seq`` gives its slot back: in shared memory (what capture
    checks), plus a ``release`` message on ``ctl`` that only wakes capture up (never blocks)."""
    ring.release(slot, seq)
    try:
        ctl.send_multipart(encode("release", {"slot": slot, "seq": seq}), zmq.NOBLOCK)
    except zmq.ZMQError:
        pass


def send(sock: zmq.Socket, kind: str, header: Optional[dict] = None,
         arrays: Optional[Dict[str, np.ndarray]] = None, stop=None) -> bool:
    """Send, retrying on HWM back-pressure until sent (True) or ``stop`` (a stats.Flag) is set (False)."""
    msg = encode(kind, header, arrays)
    while True:
        try:
            sock.send_multipart(msg, copy=False)
            return True
        except zmq.Again:
            if stop is not None and stop.is_set():
                return False


def recv(sock: zmq.Socket, timeout_ms: int = POLL_MS):
    """Receive one message or None after ``timeout_ms``."""
    if sock.poll(timeout_ms, zmq.POLLIN):
        return decode(sock.recv_multipart(copy=False))
    return None


def recv_nowait(sock: zmq.Socket):
    try:
        return decode(sock.recv_multipart(zmq.NOBLOCK, copy=False))
    except zmq.Again:
        return None


# --- Detections / Tracks as arrays ------------------------------------------------------------

def pack_dets(d: Detections) -> Dict[str, np.ndarray]:
    out = {"xyxy": d.xyxy, "score": d.score, "class_id": d.class_id}
    if d.feature is not None:
        out["feature"] = d.feature
    if isinstance(d, Tracks):
        out.update(track_id=d.track_id, age=d.age, hits=d.hits)
    return out


def unpack_dets(a: Dict[str, np.ndarray]) -> Detections:
    a = {k: np.array(v) for k, v in a.items()}  # writable copies; these arrays are small
    if "track_id" in a:
        return Tracks(a["xyxy"], a["score"], a["class_id"], a.get("feature"), track_id=a["track_id"],
                      age=a.get("age"), hits=a.get("hits"))
    return Detections(a["xyxy"], a["score"], a["class_id"], a.get("feature"))
