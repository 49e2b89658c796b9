"""The track stage's events (`stages.track.TrackEvents`) driven by the real trackers, and what
travels on the wire: `Tracks.predicted` and the events in `Tracked` / `EndOfStream`."""

from __future__ import annotations

import collections

import numpy as np
from trackpipe.models.types import Detections, Tracks
from trackpipe.pipeline.events import parse_shapes
from trackpipe.pipeline.stages.track import TrackEvents
from trackpipe.pipeline.transport.messages import EndOfStream, FrameMeta, Tracked, decode, encode
from trackpipe.trackers.factory import build_tracker

NAMES = ["person", "bicycle", "car"]


def _dets(boxes, score=0.9, cls=2) -> Detections:
    b = np.array(boxes, np.float32).reshape(-1, 4)
    return Detections(b, np.full(len(b), score, np.float32), np.full(len(b), cls, np.int32))


def _run(tracker, frames, events: TrackEvents, fps=30.0):
    out, rows = [], []
    for seq, d in enumerate(frames):
        tr = tracker.update(d)
        rows.append(tr)
        out += events.step(tr, tracker.live_track_ids, seq, seq / fps, frame_size=(1280, 720))
    out += events.finish(len(frames) - 1, (len(frames) - 1) / fps)
    return out, rows


def _car_down(n, gap=()):
    """A car driving down the image 8 px a frame across y=430; missed in the frames of ``gap``."""
    return [_dets([] if i in gap else [[600, 300 + 8 * i, 700, 380 + 8 * i]]) for i in range(n)]


def test_hybrid_one_start_one_end_predicted_rows_and_media_time():
    ev = TrackEvents("road", NAMES)
    out, rows = _run(build_tracker("hybrid", score_floor=0.25), _car_down(40, gap=(20, 21, 22)), ev)
    starts = [e for e in out if e["event"] == "track_started"]
    ends = [e for e in out if e["event"] == "track_ended"]
    assert len(starts) == len(ends) == 1 and starts[0]["track_id"] == ends[0]["track_id"]
    assert starts[0]["camera"] == "road" and starts[0]["class"] == "car"
    # the three missed frames are output at the predicted box, flagged, and counted on the end event
    pred = [bool(r.predicted[0]) for r in rows[20:23]]
    assert pred == [True, True, True] and not any(r.predicted.any() for r in rows[23:])
    assert ends[0]["frames_predicted"] == 3 and ends[0]["reason"] == "end_of_stream"
    # media time: seq / fps
    first, last = ends[0]["first_seq"], ends[0]["last_seq"]
    assert last == 39 and abs(ends[0]["duration_s"] - round((last - first) / 30.0, 3)) < 1e-9


def test_track_lost_ends_once_and_never_starts_again():
    ev = TrackEvents("cam0", NAMES)
    frames = _car_down(15) + [_dets([])] * 40 + [_dets([[100, 100, 160, 200]])] * 10
    out, _ = _run(build_tracker("hybrid", score_floor=0.25), frames, ev)
    starts = collections.Counter(e["track_id"] for e in out if e["event"] == "track_started")
    ends = collections.Counter(e["track_id"] for e in out if e["event"] == "track_ended")
    assert set(starts) == set(ends) and max(starts.values()) == 1 and max(ends.values()) == 1
    lost = [e for e in out if e["event"] == "track_ended" and e["reason"] == "lost"]
    assert len(lost) == 1 and lost[0]["last_seq"] == 14


def test_independent_images_every_detection_starts_and_ends_in_its_image():
    ev = TrackEvents("cam0", NAMES)
    frames = [_dets([[0, 0, 10, 10], [20, 20, 40, 40]]), _dets([]), _dets([[5, 5, 30, 30]])]
    out, rows = _run(build_tracker("independent"), frames, ev)
    assert [len(r) for r in rows] == [2, 0, 1]
    assert [(e["event"], e["seq"]) for e in out] == [("track_started", 0), ("track_started", 0),
                                                      ("track_ended", 0), ("track_ended", 0),
                                                      ("track_started", 2), ("track_ended", 2)]


def test_line_crossing_counted_once_from_observed_rows():
    lines = [{"name": "road", "points": [[150, 430], [1080, 430]], "directions": ["away", "toward"],
              "classes": ["car"]}]
    zones = [{"name": "lot", "points": [[0.4, 0.7], [0.6, 0.7], [0.6, 1.0], [0.4, 1.0]]}]   # fractions
    zones, lines = parse_shapes(zones, lines)      # validated once, as the parent does: the stage gets objects
    ev = TrackEvents("road", NAMES, zones=zones, lines=lines)
    out, _ = _run(build_tracker("hybrid", score_floor=0.25), _car_down(35), ev)   # ends inside "lot"
    cross = [e for e in out if e["event"] == "line_cross"]
    assert len(cross) == 1 and cross[0]["direction"] == "toward" and cross[0]["counts"] == {"away": 0, "toward": 1}
    enter = [e for e in out if e["event"] == "zone_enter"]
    exits = [e for e in out if e["event"] == "zone_exit"]
    assert len(enter) == 1 and len(exits) == 1 and exits[0]["reason"] == "track_ended"
    assert ev.counts()["lines"]["road"]["car"] == {"away": 0, "toward": 1}
    # every event of the frame ordered before the track's end
    kinds = [e["event"] for e in out]
    assert kinds.index("line_cross") < kinds.index("track_ended")


def test_wire_carries_predicted_and_events():
    meta = FrameMeta(7, 1, 100.0, 5.0, (720, 1280, 3))
    tr = Tracks(np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), np.array([0.9, 0.5], np.float32),
                np.array([2, 0], np.int32), track_id=np.array([3, 4], np.int64), predicted=np.array([False, True]))
    evs = [{"event": "track_started", "t": 0.2, "seq": 7, "camera": "cam0", "track_id": 3}]
    back = decode(encode(Tracked(meta, tr, t_track=0.001, events=evs)))
    assert back.tracks.predicted.tolist() == [False, True] and back.events == evs
    assert decode(encode(Tracked(meta, tr))).events == []
    eos = decode(encode(EndOfStream(12, evs)))
    assert eos.frames == 12 and eos.events == evs and decode(encode(EndOfStream(3))).events == []
