"""Zones, lines and event delivery.

Pure numpy logic (no OpenCV, no network) in ``geometry``, ``config``, ``schema`` and
``counter``; drawing in ``draw`` (OpenCV, imported on use); delivery in ``delivery`` (the
bounded queue and worker), ``mqtt`` (paho-mqtt, imported on use) and ``webhook`` (urllib).
See docs/events.md.
"""

from .config import EventConfigError, Line, MqttConfig, WebhookConfig, Zone, check_cameras, parse_shapes
from .counter import ZoneLineCounter, count_rows
from .dispatch import Dispatcher
from .schema import Event, LineCross, ZoneEnter, ZoneExit

__all__ = ["EventConfigError", "Line", "MqttConfig", "WebhookConfig", "Zone", "check_cameras", "parse_shapes",
           "ZoneLineCounter", "count_rows", "Dispatcher", "Event", "LineCross", "ZoneEnter", "ZoneExit"]
