"""One event to several delivery targets (MQTT, webhooks), each with its own bounded queue.

Kept apart from :mod:`delivery` (the queue and worker that ``mqtt`` and ``webhook`` build on)
so that the package has no import cycle.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, List

from .delivery import Delivery, DeliveryStats
from .mqtt import MqttPublisher
from .webhook import WebhookSender


class Dispatcher:
    """Offers each event to several targets (MQTT, webhooks); each keeps its own queue and its
    own outbox file on disk (:mod:`outbox`), so a dead target never delays the others, and what
    it did not take waits for it, also after the end of the run."""

    def __init__(self, targets: Iterable[Delivery] = ()):
        self.targets: List[Delivery] = list(targets)

    @classmethod
    def from_config(cls, mqtt=None, webhooks: Iterable = ()) -> "Dispatcher":
        """An optional :class:`MqttConfig` and :class:`WebhookConfig` s -> targets (not started:
        call ``start()`` inside the process that delivers)."""
        targets: List[Delivery] = []
        if mqtt is not None:
            targets.append(MqttPublisher(mqtt))
        for w in webhooks:
            targets.append(WebhookSender(w))
        return cls(targets)

    def offer_snapshot(self, camera: str, jpeg: bytes) -> None:
        """A JPEG to the targets that take snapshots (MQTT with ``snapshots: true``)."""
        for t in self.targets:
            if getattr(getattr(t, "config", None), "snapshots", False):
                t.offer_snapshot(camera, jpeg)

    def publish_counts(self, counts: dict) -> None:
        """A ``ZoneLineCounter.counts()`` snapshot to the targets that keep counts (MQTT)."""
        for t in self.targets:
            if hasattr(t, "publish_counts"):
                t.publish_counts(counts)

    def start(self) -> "Dispatcher":
        for t in self.targets:
            t.start()
        return self

    def offer(self, event: Any) -> bool:
        """True when every target queued it without dropping anything."""
        ok = True
        for t in self.targets:
            ok = t.offer(event) and ok
        return ok

    def stats(self) -> List[DeliveryStats]:
        return [t.stats() for t in self.targets]

    def close(self, timeout: float = 5.0) -> List[DeliveryStats]:
        """Closes the targets one after the other within ``timeout`` seconds in all (a failing
        target at once); what a target did not take stays in its outbox (``pending``)."""
        deadline = time.monotonic() + timeout
        return [t.close(max(0.0, deadline - time.monotonic())) for t in self.targets]
