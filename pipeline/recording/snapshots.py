"""The best snapshot of an event: the recorded frame nearest the time the object scored best,
decoded from its segment (from the keyframe before it: at most one GOP of decoding, once per
event), written as a clean JPEG; the box is kept in the index and drawn on request."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import av
import cv2
import numpy as np

from .clips import segment_packets
from .index import Segment

log = logging.getLogger(__name__)


def frame_at(root: Path, segments: Sequence[Segment], t: float, slack_s: float = 0.5, need_after: bool = False
             ) -> tuple[np.ndarray, float] | None:
    """The (H, W, 3) uint8 BGR frame shown nearest ``t`` and its time; None when no recorded frame
    lies within ``slack_s`` of ``t`` (not recorded, or not written yet), or, with ``need_after``,
    while no frame after ``t`` is readable (the segment is still being written)."""
    seg = next((s for s in reversed(list(segments)) if s.start <= t + slack_s), None)
    if seg is None:
        return None
    packets = []                      # demuxed (no decoding) up to a second past t: B-frames come before it
    for p, tp, _ in segment_packets(root, seg):
        packets.append((p, tp))
        if tp > t + slack_s + 1.0:
            break
    if not packets:
        return None
    k = min(range(len(packets)), key=lambda i: abs(packets[i][1] - t))
    if abs(packets[k][1] - t) > slack_s or (need_after and packets[-1][1] <= t):
        return None
    kk = max((i for i in range(k + 1) if packets[i][0].is_keyframe), default=0)
    target = packets[k][0].pts
    try:
        # a keyframe decodes alone; another frame from the keyframe before it, and B-frames may
        # need a few packets after it
        for stop in ((k + 1,) if k == kk else ()) + (k + 8,):
            with av.open(str(Path(root) / seg.path)) as inp:
                ctx = inp.streams.video[0].codec_context
                ctx.thread_count = 1
                frames = []
                for p, _ in packets[kk:stop]:
                    frames += ctx.decode(p)
                frames += ctx.decode(None)
            if any(f.pts == target for f in frames):
                break
    except (av.error.FFmpegError, OSError) as e:
        log.warning("snapshot: cannot decode %s: %s", seg.path, e)
        return None
    if not frames:
        return None
    best = min(frames, key=lambda f: abs((f.pts if f.pts is not None else 0) - (target or 0)))
    return best.to_ndarray(format="bgr24"), packets[k][1]


def keyframe_times(root: Path, segments: Sequence[Segment]) -> list:
    """Times of the keyframes of ``segments`` (demuxed only)."""
    return [t for s in segments for p, t, _ in segment_packets(root, s) if p.is_keyframe]


def write_jpeg(path: Path, frame: np.ndarray, quality: int = 85) -> int:
    """Write ``frame`` (H, W, 3) BGR as JPEG atomically; -> bytes."""
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError(f"cannot encode {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jpg.part")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)
    return len(buf)


def draw_box(frame: np.ndarray, box: Sequence[float], text: str) -> np.ndarray:
    """A copy of ``frame`` with ``box`` (xyxy pixels) and ``text`` drawn."""
    out = frame.copy()
    x1, y1, x2, y2 = (round(v) for v in box)
    th = max(2, out.shape[0] // 360)
    cv2.rectangle(out, (x1, y1), (x2, y2), (0, 200, 255), th)
    cv2.putText(out, text, (x1, max(14, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * th, (0, 200, 255), th)
    return out
