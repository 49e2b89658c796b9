"""One event to every delivery target of a run (the events files, MQTT, webhooks: `targets`).

Kept apart from :mod:`delivery` (the queue and worker that ``mqtt`` and ``webhook`` build on)
so that the package has no import cycle.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, List, Sequence, Tuple

from .delivery import Delivery, DeliveryStats
from .targets import build_targets


class Dispatcher:
    """Offers each event to every target. A file target writes it at once; a `Delivery` (MQTT,
    a webhook) keeps its own queue and its own outbox file on disk (:mod:`outbox`), so a dead
    target never delays the others, and what it did not take waits for it, also after the end
    of the run."""

    def __init__(self, targets: Iterable[Any] = ()):
        self.targets: List[Any] = list(targets)

    @classmethod
    def from_configs(cls, pairs: Sequence[Tuple[str, Any]]) -> "Dispatcher":
        """(target name, config) pairs (`targets.target_configs`) -> targets (not started: call
        ``start()`` inside the process that delivers). Raises OSError when a file cannot be created."""
        return cls(build_targets(pairs))

    @property
    def deliveries(self) -> List[Delivery]:
        """The targets with a queue and a worker (MQTT, webhooks)."""
        return [t for t in self.targets if isinstance(t, Delivery)]

    @property
    def files(self) -> list:
        """The targets that write a file at once (their ``state`` is an output's state)."""
        return [t for t in self.targets if not isinstance(t, Delivery)]

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
        """True when every target took it without dropping anything."""
        ok = True
        for t in self.targets:
            ok = t.offer(event) and ok
        return ok

    def stats(self) -> List[DeliveryStats]:
        return [t.stats() for t in self.deliveries]

    def close(self, timeout: float = 5.0) -> List[DeliveryStats]:
        """Closes the files, then the deliveries one after the other within ``timeout`` seconds
        in all (a failing target at once); what a delivery did not take stays in its outbox
        (``pending``). -> the deliveries' stats."""
        for f in self.files:
            f.close()
        deadline = time.monotonic() + timeout
        return [t.close(max(0.0, deadline - time.monotonic())) for t in self.deliveries]
