"""Where things live under the record folder, and the times the API and the CLI accept.

    <dir>/index.db                                   the SQLite index (`index.RecordIndex`)
    <dir>/<camera>/<YYYY-MM-DD>/<start_ms>.mp4       segments (UTC date; start in ms on the event clock)
    <dir>/<camera>/snapshots/<event id>.jpg          best snapshots (clean; the box is in the index)
    <dir>/.cache/clips/<key>.mp4                     clips cut for the review API (re-made when needed)
    <dir>/.requests/delete-<event id>                deletions asked through the API, applied by the writer

Times are seconds since the epoch on the events' clock (capture wall clock for live sources).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from pathlib import Path

INDEX_NAME = "index.db"
SEGMENT_EXT = ".mp4"
_SEGMENT_RE = re.compile(r"^(\d{1,16})\.mp4$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
EVENT_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,160}$")


def index_path(root: Path) -> Path:
    return Path(root) / INDEX_NAME


def segment_path(root: Path, camera: str, start: float) -> Path:
    """The segment of ``camera`` starting at ``start`` (epoch seconds)."""
    day = _dt.datetime.fromtimestamp(max(0.0, start), _dt.timezone.utc).strftime("%Y-%m-%d")
    return Path(root) / camera / day / f"{round(start * 1000)}{SEGMENT_EXT}"


def parse_segment(root: Path, path: Path) -> tuple[str, float] | None:
    """(camera, start) of a segment file under ``root``, None when ``path`` is not one."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return None
    parts = rel.parts
    if len(parts) != 3 or not _DATE_RE.match(parts[1]):
        return None
    m = _SEGMENT_RE.match(parts[2])
    return (parts[0], int(m.group(1)) / 1000.0) if m else None


def snapshot_path(root: Path, camera: str, event_id: str) -> Path:
    return Path(root) / camera / "snapshots" / f"{event_id}.jpg"


def clip_cache_dir(root: Path) -> Path:
    return Path(root) / ".cache" / "clips"


def requests_dir(root: Path) -> Path:
    return Path(root) / ".requests"


def event_id(camera: str, run_tag: str, track_id: int) -> str:
    """The review id of a tracked object: unique per run (``run_tag``), camera and track id; the
    sink and the recorder compute it alike, so ``track_ended`` can name its clip's URL."""
    return f"{camera}-{run_tag}-{int(track_id)}"


def run_tag(t: float) -> str:
    """A run's tag: its start time in ms, base 36 (short, sortable within a year's width)."""
    n, digits = int(t * 1000), "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def parse_time(raw: str) -> float:
    """Epoch seconds from ``raw``: a number (seconds since the epoch) or an ISO 8601 date-time
    (``2026-12-07T03:20:00Z``; no zone: UTC). ValueError with the accepted forms otherwise."""
    s = str(raw).strip()
    try:
        v = float(s)
        if math.isfinite(v) and v >= 0:
            return v
    except ValueError:
        pass
    try:
        d = _dt.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid time {raw!r} (use seconds since the epoch or ISO 8601, e.g. "
                         f"2026-12-07T03:20:00Z)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d.timestamp()
