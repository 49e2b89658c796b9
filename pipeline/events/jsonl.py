"""The events file: JSON lines, one event per line, written at once (delivery target ``file``).

    f = EventFile(EventFileConfig("events.jsonl", cameras=("cam0",)))
    f.offer({"event": "track_started", "t": 1.0, "seq": 0, "camera": "cam0", ...})
    f.close()

Several cameras may share one file (every event names its camera): the file takes the events of
``config.cameras``. A full or unwritable disk stops the file, never the caller
(`media.outputs.LineFile`; ``state`` is the output's state in the profile).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

from trackpipe.pipeline.media.outputs import LineFile


@dataclass(frozen=True)
class EventFileConfig:
    """``path``: the JSON-lines file; ``cameras``: whose events it takes; ``append``: continue
    the file (a restarted sink) instead of truncating it."""

    path: str
    cameras: Tuple[str, ...] = ()
    append: bool = False


class EventFile:
    """One events file. ``offer(event)`` writes a ready-made event dict (``event``, ``t``,
    ``seq``, ``camera``, ...: the track stage makes them) as one line at once; on a full disk it
    is counted as lost (``state``). Raises OSError when a new file cannot be created."""

    def __init__(self, config: EventFileConfig):
        self.config = config
        self.file = LineFile(config.path, "events", "events", append=config.append)
        self.path = self.file.path
        self.cameras = frozenset(config.cameras)
        self.count = 0

    @classmethod
    def configs(cls, cfg: Any, cameras: Sequence[Any], append: bool = False) -> List[EventFileConfig]:
        """One per events path of ``cameras`` (cameras writing one file share it)."""
        paths: Dict[str, List[str]] = {}
        for c in cameras:
            if c.events:
                paths.setdefault(c.events, []).append(c.name)
        return [EventFileConfig(p, tuple(names), append) for p, names in paths.items()]

    @property
    def state(self):
        return self.file.state

    def start(self) -> "EventFile":
        return self

    def offer(self, event: dict) -> bool:
        if self.cameras and event.get("camera") not in self.cameras:
            return True
        self.write_event(event)
        return True

    def write_event(self, obj: dict) -> None:
        """One event as one line, written at once (on a full disk: counted as lost)."""
        self.file.add(json.dumps(obj, separators=(",", ":")) + "\n")
        self.count += 1

    def close(self, timeout: float = 0.0) -> None:
        self.file.close()
