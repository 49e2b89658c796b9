"""Test helpers around a real ``mosquitto`` broker (Debian package ``mosquitto``) and a real
paho subscriber.

    ok, reason = mosquitto_available()
    if not ok: pytest.skip(reason)
    broker = MosquittoBroker().start()     # free port on 127.0.0.1, temp config, no persistence
                                           # (persistence=True: sessions outlive stop()/start())
    sub = Subscriber(broker.port, "trackpipe/#")
    sub.wait_for(lambda msgs: ..., timeout=20)
    broker.kill()      # SIGKILL: a crashed broker
    broker.start()     # same port again
    broker.stop()      # SIGTERM, then SIGKILL; idempotent; removes nothing until close()
    broker.close()

The broker runs in its own session and is never a system service; every process this module
starts is signalled by its own pid/process group.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def mosquitto_available() -> Tuple[bool, str]:
    if MOSQUITTO is None:
        return False, "mosquitto not installed (Debian package 'mosquitto': apt-get install -y mosquitto)"
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return False, "paho-mqtt not installed (pip install paho-mqtt)"
    return True, ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class MosquittoBroker:
    """One mosquitto process on 127.0.0.1:port (the same port across kill()/start())."""

    def __init__(self, port: Optional[int] = None, users: Optional[dict] = None, persistence: bool = False):
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mosquitto-test-"))
        self.conf = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        store = ["persistence true", f"persistence_location {self.dir}/", "max_queued_messages 100000"]
        lines = [f"listener {self.port} 127.0.0.1", *(store if persistence else ["persistence false"]),
                 "log_dest stderr", "log_type error", "log_type warning", "log_type notice",
                 "log_type information", "connection_messages true",
                 f"user {pwd.getpwuid(os.getuid()).pw_name}"]
        if users:
            pw = self.dir / "passwords"
            pw.touch(mode=0o600)
            for u, p in users.items():
                subprocess.run([shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-b", str(pw), u, p],
                               check=True, capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines += ["allow_anonymous true"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> "MosquittoBroker":
        if self.running():
            raise RuntimeError("broker already running")
        deadline = time.monotonic() + timeout
        while True:   # the port may still be held for a moment after a kill
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            self.starts += 1
            if self._wait_listening(deadline):
                return self
            if self.proc.poll() is None or time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError(f"mosquitto not listening on {self.port}: {self.log()[-2000:]}")
            time.sleep(0.2)

    def _wait_listening(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with socket.socket() as s:
                s.settimeout(0.5)
                try:
                    s.connect(("127.0.0.1", self.port))
                    return True
                except OSError:
                    pass
            time.sleep(0.05)
        return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL (a crashed broker); returns once it is reaped."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "MosquittoBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    t: float

    def json(self):
        return json.loads(self.payload)


class Subscriber:
    """A real paho subscriber (its own client id, clean session unless ``clean_session=False``:
    then a broker with persistence keeps its subscription and queues its QoS 1 messages while
    it is away, across a broker restart) that records every message and re-subscribes after
    each reconnection."""

    def __init__(self, port: int, topics: Sequence[str] = ("trackpipe/#",), client_id: Optional[str] = None,
                 host: str = "127.0.0.1", clean_session: bool = True):
        import paho.mqtt.client as mqtt

        self.topics = list(topics)
        self.messages: List[Message] = []
        self._lock = threading.Lock()
        self.connects = 0
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"test-sub-{os.getpid()}-{id(self):x}",
                                  clean_session=clean_session)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect_async(host, port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self.connects += 1
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic()))

    def snapshot(self, topic: Optional[str] = None) -> List[Message]:
        with self._lock:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def last(self, topic: str) -> Optional[Message]:
        msgs = self.snapshot(topic)
        return msgs[-1] if msgs else None

    def wait_for(self, pred: Callable[[List[Message]], bool], timeout: float = 20.0) -> bool:
        return wait_until(lambda: pred(self.snapshot()), timeout)

    def wait_subscribed(self, timeout: float = 20.0) -> bool:
        return self.subscribed.wait(timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
