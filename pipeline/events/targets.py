"""Where events go: every delivery target registered in one table, like the detector backends.

``TARGETS``: target name -> (module, class). A target class is built from one config object
(``cls(config)``) and has ``start()``, ``offer(event) -> bool`` (never blocks) and
``close(timeout)``; a file target has ``state`` (its output state in the profile), a
`delivery.Delivery` has ``stats()``. Its classmethod ``configs(cfg, cameras, append)`` returns
the configs the run's config tree (`pipeline.config.Config`) and cameras (`stages.settings.Camera`,
paths resolved) ask for, one target each; ``append``: a restarted sink continues its files.

A new target is one module (its class, with ``configs``) and one entry here (and its settings
in the config tree).
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Sequence, Tuple

TARGETS: Dict[str, Tuple[str, str]] = {
    "file": ("trackpipe.pipeline.events.jsonl", "EventFile"),
    "mqtt": ("trackpipe.pipeline.events.mqtt", "MqttPublisher"),
    "webhook": ("trackpipe.pipeline.events.webhook", "WebhookSender"),
}


def target_class(name: str):
    """The class registered as ``name`` (KeyError: not a target)."""
    module, cls = TARGETS[name]
    return getattr(importlib.import_module(module), cls)


def target_configs(cfg: Any, cameras: Sequence[Any] = (), append: bool = False) -> List[Tuple[str, Any]]:
    """Every (target name, config) pair the run asks for, in the table's order (picklable)."""
    return [(name, c) for name in TARGETS for c in target_class(name).configs(cfg, cameras, append)]


def build_targets(pairs: Sequence[Tuple[str, Any]]) -> list:
    """The (not started) targets of ``pairs`` (`target_configs`)."""
    return [target_class(name)(config) for name, config in pairs]
