"""A time range of one camera -> one MP4, cut from its segments without re-encoding.

A clip starts on the keyframe at or before ``start`` (a decoder needs it: the first frames shown
may be up to one GOP before ``start``) and ends a few frames after ``end`` (`REORDER_FRAMES` in
decoding order, so that the B-frames shown before ``end`` are in it). Segments of one camera are joined while their
codec parameters match (a camera that came back with another resolution ends the clip there).
The output is a plain MP4 with its index first (``+faststart``): browsers know its duration and
seek in it with range requests.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .index import Segment

log = logging.getLogger(__name__)

OUT_TIME_BASE = Fraction(1, 90000)
REORDER_FRAMES = 4          # a clip goes on until this many frames after ``end`` in decoding order


class NoFootage(LookupError):
    """Nothing recorded in the range asked for."""


@dataclass
class ClipInfo:
    path: Path
    start: float          # time of its first frame (a keyframe at or before the range's start)
    end: float            # every frame shown before this time is in the clip
    frames: int
    bytes: int


def segment_packets(root: Path, seg: Segment) -> Iterator[tuple[object, float, float]]:
    """(packet, t_pts, t_dts) of a segment's video packets, times on the events' clock; stops
    quietly at a truncated tail (a segment being written, or cut short by a crash)."""
    path = Path(root) / seg.path
    try:
        size = path.stat().st_size
        inp = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        log.warning("segment %s unreadable: %s", seg.path, e)
        return
    try:
        if not inp.streams.video:
            return
        stream = inp.streams.video[0]
        tb = float(stream.time_base)
        ref = None
        try:
            for p in inp.demux(stream):
                if p.dts is None or p.size == 0:
                    continue
                if p.is_corrupt or (p.pos is not None and p.pos >= 0 and p.pos + p.size > size):
                    return                  # a fragment cut short (by a crash, or being written)
                pts = p.pts if p.pts is not None else p.dts
                if ref is None:
                    ref = pts
                yield p, seg.start + (pts - ref) * tb, seg.start + (p.dts - ref) * tb
        except (av.error.FFmpegError, OSError):
            return
    finally:
        inp.close()


def _params(root: Path, seg: Segment):
    try:
        with av.open(str(Path(root) / seg.path)) as inp:
            s = inp.streams.video[0]
            cc = s.codec_context
            return cc.name, cc.width, cc.height, bytes(cc.extradata or b"")
    except (av.error.FFmpegError, OSError, IndexError):
        return None


def cut(root: Path, segments: Sequence[Segment], start: float, end: float, out: Path) -> ClipInfo:
    """Write [start, end] of ``segments`` (one camera's, oldest first) to ``out``; NoFootage when
    none of them has a frame in the range. Written to a temporary file, then renamed."""
    segs = [s for s in segments if s.end > start and s.start <= end]
    if not segs:
        raise NoFootage(f"no footage between {start:.3f} and {end:.3f}")
    # the clip begins in the last segment that starts at or before ``start`` (else the first)
    first = max((i for i, s in enumerate(segs) if s.start <= start), default=0)
    segs = segs[first:]
    params = _params(root, segs[0])
    if params is None:
        raise NoFootage(f"segment {segs[0].path} is unreadable")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".part", dir=str(out.parent))
    os.close(fd)
    try:
        info = _write(root, segs, params, start, end, Path(tmp))
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    info.path = out
    return info


def _write(root: Path, segs: list[Segment], params, start: float, end: float, tmp: Path) -> ClipInfo:
    with av.open(str(Path(root) / segs[0].path)) as tpl:
        template = tpl.streams.video[0]
        frame_s = 1.0 / float(template.average_rate or template.guessed_rate or 30)
        outc = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
        w = _ClipWriter(outc, outc.add_stream_from_template(template))
        try:
            gop: list = []          # before the clip starts: the packets since the last keyframe <= start
            for i, seg in enumerate(segs):
                if i and _params(root, seg) != params:
                    log.info("clip stops at %s: the camera's stream changed", seg.path)
                    break
                packets = segment_packets(root, seg)
                for item in packets:
                    p, t, td = item
                    if w.t0 is None:
                        if t <= start:
                            if p.is_keyframe:
                                gop = [item]
                            elif gop:
                                gop.append(item)
                            continue
                        if gop:
                            for q in gop:
                                w.add(q)
                            gop = []
                        elif not p.is_keyframe:
                            continue        # footage begins after ``start``: at its first keyframe
                    if td > end + REORDER_FRAMES * frame_s:
                        # (B-frames before ``end`` are decoded after later frames): the clip is
                        # complete up to the earliest frame left out
                        left_out = [t] + [q[1] for _, q in zip(range(2 * REORDER_FRAMES), packets)]
                        w.complete_until = min(left_out)
                        break
                    w.add(item)
                if w.last_t is not None and w.last_t >= end:
                    break
            for q in gop:                    # every packet was at or before ``start``
                w.add(q)
        finally:
            outc.close()
    if w.t0 is None or w.frames == 0:
        raise NoFootage(f"no footage between {start:.3f} and {end:.3f}")
    end_t = w.last_t + frame_s if w.complete_until is None else min(w.complete_until, w.last_t + frame_s)
    return ClipInfo(tmp, w.t0, end_t, w.frames, tmp.stat().st_size)


class _ClipWriter:
    """Packets with their times -> the output stream, timestamps from the clip's first frame."""

    def __init__(self, outc, ostream):
        self.outc, self.ostream = outc, ostream
        ostream.time_base = OUT_TIME_BASE
        self.t0: float | None = None
        self.last_dts: int | None = None
        self.last_t: float | None = None
        self.frames = 0
        self.complete_until: float | None = None   # every frame before this time is in the clip

    def add(self, item) -> None:
        p, t, td = item
        if self.t0 is None:
            self.t0 = t
        dts = round((td - self.t0) / OUT_TIME_BASE)
        if self.last_dts is not None and dts <= self.last_dts:
            dts = self.last_dts + 1
        p.dts, p.pts = dts, max(round((t - self.t0) / OUT_TIME_BASE), dts)
        p.time_base = OUT_TIME_BASE
        p.stream = self.ostream
        self.outc.mux(p)
        self.last_dts = dts
        self.last_t = t if self.last_t is None else max(self.last_t, t)
        self.frames += 1
