"""MQTT delivery with paho-mqtt 2.x: events, retained counts, availability, snapshots.

Topics (``prefix`` defaults to ``trackpipe``)::

    <prefix>/<camera>/events                 each event's JSON (QoS 1, not retained)
    <prefix>/<camera>/<zone or line>/<class> that zone's/line's counts for the class, JSON,
                                             retained, e.g. {"in": 5, "out": 3}
    <prefix>/<camera>/snapshot               a JPEG (QoS 0, retained), when offered
    <prefix>/available                       "online" (retained) once connected; "offline"
                                             at close, or by the broker (last will) when the
                                             connection dies without a clean disconnect

    pub = MqttPublisher(MqttConfig(url="mqtt://127.0.0.1:1883")).start()
    pub.offer(event)                 # never blocks; False if an older event was dropped
    pub.offer_snapshot("road", jpeg) # bytes; its own 2-deep queue
    pub.publish_counts(counter.counts())
    pub.close(timeout=5.0)

paho's network thread (``loop_start``) connects and reconnects with its own capped
exponential backoff (``reconnect_delay_set``); our worker thread publishes only while
connected, so paho's own queue holds at most the in-flight messages and is capped too
(``max_queued_messages_set``). Counts are state, not a stream: the newest value per topic is
kept (never dropped) and all of them are published again after every (re)connection, since a
restarted broker may have lost its retained messages.

Events go through the broker's outbox on disk (``config.outbox``, on by default): a row leaves
it when its PUBACK comes (QoS 0: when paho sent it), so events published while the broker was
down, or still unacknowledged at ``close``, are sent after the reconnection or by the next run,
in order. Snapshots, counts and availability are state, not history: memory only.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .config import MqttConfig
from .delivery import Backoff, Delivery
from .outbox import OutboxConfig, target_key
from .schema import event_dict

log = logging.getLogger(__name__)

PAHO_QUEUE = 100      # paho's own queue (in-flight QoS 1 messages), besides ours
SNAPSHOT_QUEUE = 2


def topic_level(s: Any) -> str:
    """A string safe as one MQTT topic level (no '/', '+', '#', NUL)."""
    out = str(s)
    for c in "/+#\x00":
        out = out.replace(c, "_")
    return out or "_"


def _client_class():
    import paho.mqtt.client as mqtt

    class _Client(mqtt.Client):
        """Keeps the last connection error (paho's on_connect_fail has no argument for it)."""

        last_error: Optional[BaseException] = None

        def reconnect(self):
            try:
                return super().reconnect()
            except OSError as e:
                self.last_error = e
                raise

    return mqtt, _Client


class MqttPublisher(Delivery):
    """config: :class:`MqttConfig`; default_camera: for events without a ``camera`` field."""

    def __init__(self, config: MqttConfig, default_camera: str = "default"):
        self.config = config
        self.default_camera = default_camera
        scheme = "mqtts" if config.tls else "mqtt"
        key = target_key("mqtt", config.host, config.port,   # the user and the prefix make another target
                         f"{scheme}://{config.username or ''}@{config.host}:{config.port}/{config.topic_prefix}")
        super().__init__(f"mqtt {config.safe_url}", {"event": config.queue_size, "snapshot": SNAPSHOT_QUEUE},
                         Backoff(config.reconnect_min_s, config.reconnect_max_s),
                         OutboxConfig.parse(getattr(config, "outbox", None)), key)
        self.prefix = config.topic_prefix
        self.available_topic = f"{self.prefix}/available"
        self.client = None
        self._connected = threading.Event()
        self._resync = threading.Event()        # publish availability + every count
        self._counts_lock = threading.Lock()
        self._counts: Dict[str, bytes] = {}     # topic -> newest payload
        self._dirty: Dict[str, bytes] = {}
        # QoS 1 messages waiting for their PUBACK: mid -> (lane, outbox row id or 0). The lock is
        # never held while calling paho (paho holds its own lock while it calls on_publish).
        self._mids_lock = threading.Lock()
        self._mids: Dict[int, Tuple[str, int]] = {}
        self._early: set = set()                 # acks that came before publish() returned
        self._acked: List[int] = []              # outbox rows acknowledged, removed by the worker
        self._fail_streak = 0
        self._ever_connected = False
        self._refused = False
        self._closing = False

    @classmethod
    def configs(cls, cfg: Any, cameras: Any = (), append: bool = False) -> List[MqttConfig]:
        """The run's ``mqtt`` section (`events.targets`): one target, or none."""
        return [cfg.mqtt] if getattr(cfg, "mqtt", None) is not None else []

    # --- caller side ------------------------------------------------------------------------

    def offer(self, event: Any, lane: str = "event") -> bool:
        """Queue one event (an Event or a dict); its ``counts`` become the newest retained
        count of its zone/line and class at once (they are never dropped)."""
        d = event_dict(event)
        target = d.get("zone") or d.get("line")
        if target is not None and isinstance(d.get("counts"), dict):
            cam = d.get("camera") or self.default_camera
            label = d.get("class") or d.get("class_id")
            self._set_count(cam, target, label, d["counts"])
        return super().offer(d, lane)

    def offer_snapshot(self, camera: str, jpeg: bytes) -> bool:
        """Queue a JPEG for ``<prefix>/<camera>/snapshot`` (only the 2 newest wait)."""
        if not isinstance(jpeg, (bytes, bytearray, memoryview)):
            raise TypeError("offer_snapshot takes the JPEG's bytes")
        return super().offer((camera, bytes(jpeg)), "snapshot")

    def publish_counts(self, counts: dict) -> None:
        """A ``ZoneLineCounter.counts()`` snapshot -> retained count topics (newest wins)."""
        cam = counts.get("camera") or self.default_camera
        for kind in ("zones", "lines"):
            for name, per_class in counts.get(kind, {}).items():
                for label, c in per_class.items():
                    self._set_count(cam, name, label, c)

    def _set_count(self, cam, target, label, counts: dict) -> None:
        topic = f"{self.prefix}/{topic_level(cam)}/{topic_level(target)}/{topic_level(label)}"
        payload = json.dumps(counts, separators=(",", ":"), sort_keys=True).encode()
        with self._counts_lock:
            if self._counts.get(topic) != payload:
                self._counts[topic] = payload
                self._dirty[topic] = payload

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # --- paho callbacks (paho's network thread: no blocking, no locks of ours) ------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = True
            self._fail_streak += 1
            log.warning("%s: connection refused: %s (attempt %d)", self.name, reason_code, self._fail_streak)
            return
        if self._ever_connected or self._fail_streak:
            log.warning("%s: %sconnected after %d failed attempt(s)", self.name,
                        "re" if self._ever_connected else "", self._fail_streak)
        else:
            log.info("%s: connected", self.name)
        self._fail_streak = 0
        self._refused = False
        self._ever_connected = True
        self._resync.set()
        self._connected.set()
        self._note(connected=True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._note(connected=False)
        if was_connected and not self._closing:   # a refused CONNECT was logged already
            log.warning("%s: connection lost (%s); reconnecting", self.name, reason_code)

    def _on_connect_fail(self, client, userdata) -> None:
        self._fail_streak += 1
        n = self._fail_streak
        err = getattr(client, "last_error", None) or "connection failed"
        delay = min(self.config.reconnect_max_s, self.config.reconnect_min_s * 2 ** min(n - 1, 30))
        self._note(failed=1, connected=False, error=f"cannot connect: {err}")
        log.warning("%s: cannot connect: %s (attempt %d; retrying in ~%.1fs)", self.name, err, n, delay)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._mids_lock:
            lane, row_id = self._mids.pop(mid, (None, 0))
            if lane is None:
                self._early.add(mid)
            elif lane == "event" and row_id:
                self._acked.append(row_id)
        if lane == "event" and not row_id:
            self._note(sent=1)

    # --- worker side ------------------------------------------------------------------------

    def _opened(self) -> None:
        mqtt, Client = _client_class()
        cfg = self.config
        client_id = cfg.client_id or f"trackpipe-{socket.gethostname()}-{os.getpid()}"
        c = Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                   protocol=mqtt.MQTTv311)
        if cfg.username:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            c.tls_set(ca_certs=cfg.tls_ca)
            if cfg.tls_insecure:
                c.tls_insecure_set(True)
        c.will_set(self.available_topic, "offline", qos=1, retain=True)
        c.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        c.max_queued_messages_set(PAHO_QUEUE)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_publish = self._on_publish
        self.client = c
        c.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        c.loop_start()

    def _publish(self, topic: str, payload, qos: int, retain: bool, lane: str, row_id: int = 0) -> bool:
        """True once paho took the message (QoS 1: it resends it after a reconnect). An event's
        ``row_id`` (its outbox row, 0 if none) is removed once acknowledged (QoS 0: sent)."""
        import paho.mqtt.client as mqtt

        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and qos > 0):
            acked = qos == 0
            if qos > 0:
                with self._mids_lock:
                    acked = info.mid in self._early
                    if acked:
                        self._early.discard(info.mid)
                    else:
                        self._mids[info.mid] = (lane, row_id)
            if acked and lane == "event":
                if row_id:
                    with self._mids_lock:
                        self._acked.append(row_id)
                else:
                    self._note(sent=1)
            return True
        return False

    def _settle(self) -> None:
        with self._mids_lock:
            acked, self._acked = self._acked, []
        if acked and self.outbox is not None:
            self._note(sent=self.outbox.delete(acked))   # a row the bound dropped meanwhile: counted there

    def _unacked_events(self, in_outbox: Optional[bool] = None) -> int:
        """Events paho holds unacknowledged (``in_outbox``: only those with / without a row)."""
        with self._mids_lock:
            return sum(lane == "event" and (in_outbox is None or bool(row_id) == in_outbox)
                       for lane, row_id in self._mids.values())

    def _sync(self) -> None:
        """After a (re)connection: availability and every count; else: the changed counts."""
        if self._resync.is_set():
            self._resync.clear()
            self._publish(self.available_topic, "online", 1, True, "control")
            with self._counts_lock:
                self._dirty = dict(self._counts)
        with self._counts_lock:
            dirty, self._dirty = self._dirty, {}
        for topic, payload in dirty.items():
            if not self._publish(topic, payload, 1, True, "control"):
                with self._counts_lock:
                    self._dirty.setdefault(topic, payload)   # paho's queue is full: next time
                break

    def _idle(self) -> None:
        if self._connected.is_set():
            self._sync()

    def _encode(self, item: Any) -> Tuple[str, bytes]:
        cam = item.get("camera") or self.default_camera
        return f"{self.prefix}/{topic_level(cam)}/events", json.dumps(item, separators=(",", ":")).encode()

    def _attempt(self, lane: str, item: Any) -> None:
        row_id = 0
        if lane == "snapshot":
            cam, data = item
            topic, payload, qos = f"{self.prefix}/{topic_level(cam)}/snapshot", data, 0
        else:
            topic, payload, qos, row_id = item.route, item.body, self.config.qos, item.id
        while not self._stop.is_set():
            if not self._connected.is_set():
                self._failing = True
                if self.outbox is not None:
                    self._pause(0.2)      # moves offered events to the outbox meanwhile
                    if row_id and not self.outbox.exists(row_id):
                        self._cursor = max(self._cursor, row_id)   # the bound dropped it (counted)
                        return
                else:
                    self._connected.wait(0.2)
                continue
            self._failing = False
            self._sync()
            if self._publish(topic, payload, qos, lane == "snapshot", lane, row_id):
                self._cursor = max(self._cursor, row_id)
                self._sync()
                return
            self._stop.wait(0.05)     # paho's queue is full (acks slow) or the link just dropped
        self._give_up(lane, item)

    def _closed(self) -> None:
        c = self.client
        if c is None:
            return
        self._closing = True
        deadline = getattr(self, "_close_deadline", time.monotonic() + 1.0)
        if self._connected.is_set():
            info = c.publish(self.available_topic, "offline", qos=1, retain=True)
            end = max(time.monotonic() + 0.2, deadline)
            while time.monotonic() < end and (not info.is_published() or self._unacked_events()):
                time.sleep(0.02)
        unacked = self._unacked_events(in_outbox=False)   # those with an outbox row stay there
        if unacked:
            self.queue.count_drop("event", unacked)
        c.disconnect()
        c.loop_stop()
        self.client = None
        self._connected.clear()
        self._note(connected=False)
