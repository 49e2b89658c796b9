"""Zones and lines: geometry, validation, hysteresis, directions, dwell, class filters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trackpipe.models.types import Tracks
from trackpipe.pipeline.events import (EventConfigError, Line, LineCross, Zone, ZoneEnter, ZoneExit,
                                       ZoneLineCounter, check_cameras, parse_shapes)
from trackpipe.pipeline.events.geometry import anchor_points, points_in_polygon, segments_intersect

NAMES = ["person", "bicycle", "car"]


def tracks(rows):
    """rows: list of (track_id, anchor_x, anchor_y, class_id) -> Tracks with 20x40 boxes whose
    bottom centre is the anchor."""
    if not rows:
        return Tracks.empty()
    a = np.array([[r[1], r[2]] for r in rows], np.float32)
    xyxy = np.stack([a[:, 0] - 10, a[:, 1] - 40, a[:, 0] + 10, a[:, 1]], axis=1)
    return Tracks(xyxy, np.full(len(rows), 0.9, np.float32), np.array([r[3] for r in rows], np.int32),
                  track_id=np.array([r[0] for r in rows], np.int64))


def run(counter, path, tid=1, cls=2, dt=0.1, t0=0.0):
    """Feed one track along ``path`` [(x, y), ...] (None: absent that frame); returns events."""
    events = []
    for i, p in enumerate(path):
        events += counter.update(tracks([] if p is None else [(tid, p[0], p[1], cls)]), t0 + i * dt, seq=i)
    return events


# --- geometry -----------------------------------------------------------------------------

def test_point_in_square_and_concave_polygon():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    pts = np.array([[5, 5], [15, 5], [-1, 5], [5, 11], [9.9, 0.1]])
    assert points_in_polygon(pts, square).tolist() == [True, False, False, False, True]
    # a "U": the notch (4..6 x 0..8) is outside although it is inside the bounding box
    u = np.array([[0, 0], [4, 0], [4, 8], [6, 8], [6, 0], [10, 0], [10, 10], [0, 10]], float)
    pts = np.array([[2, 2], [5, 2], [8, 2], [5, 9], [5, 7.9]])
    assert points_in_polygon(pts, u).tolist() == [True, False, True, True, False]


def test_segments_intersect_only_the_segment_not_the_infinite_line():
    a, b = np.array([0.0, 0.0]), np.array([10.0, 0.0])
    p0 = np.array([[5, -1], [15, -1], [10, -1], [5, 1]], float)
    p1 = np.array([[5, 1], [15, 1], [10, 1], [6, 2]], float)
    assert segments_intersect(p0, p1, a, b).tolist() == [True, False, True, False]


def test_anchors():
    box = np.array([[10, 20, 30, 60]], np.float32)
    assert anchor_points(box).tolist() == [[20, 60]]
    assert anchor_points(box, "center").tolist() == [[20, 40]]
    assert anchor_points(box, "top_left").tolist() == [[10, 20]]


# --- config validation ----------------------------------------------------------------------

@pytest.mark.parametrize("kind, data, msg", [
    ("zones", {"name": "z", "points": [[0, 0], [1, 1]]}, "at least 3 points"),
    ("zones", {"name": "z", "points": [[0, 0], [10, 10], [10, 0], [0, 10]]}, "crosses itself"),
    ("zones", {"name": "z", "points": [[0, 0], [5, 5], [10, 10]]}, "no area"),
    ("lines", {"name": "l", "points": [[0, 0], [1, 1], [2, 2]]}, "exactly 2 points"),
    ("lines", {"name": "l", "points": [[0, 0], [0, 0]]}, "are the same"),
    ("lines", {"name": "l", "points": [[0, 0], [5, 5]], "anchor": "feet"}, "anchor: invalid value 'feet'"),
    ("lines", {"name": "l", "pionts": [[0, 0], [5, 5]]}, "unknown key 'pionts'"),
    ("lines", {"name": "a/b", "points": [[0, 0], [5, 5]]}, "not a valid name"),
    ("lines", {"name": "l", "points": [[0, 0], [5, 5]], "units": "cm"}, "units: invalid value 'cm'"),
    ("lines", {"name": "l", "points": [[0, 0], [5, 5]], "units": "fraction"}, "outside [0, 1]"),
    ("lines", {"name": "l", "points": [[0, 0], [5, 5]], "confirm_frames": 0}, "confirm_frames"),
    ("lines", {"name": "l", "points": [[0, 0], [5, 5]], "directions": ["in", "in"]}, "two different names"),
])
def test_bad_shapes_are_one_clear_line(kind, data, msg):
    with pytest.raises(EventConfigError) as e:
        parse_shapes(**{kind: [data]}, where="cameras.road")
    text = str(e.value)
    assert msg in text and "\n" not in text and text.startswith(f"cameras.road.{kind}[0]")
    assert isinstance(e.value, ValueError) and e.value.exit_code == 2


def test_duplicate_names_unknown_camera_duplicate_cameras():
    with pytest.raises(EventConfigError, match="two zones or lines are named 'a'"):
        parse_shapes(zones=[{"name": "a", "points": [[0, 0], [1, 0], [1, 1]]}],
                     lines=[{"name": "a", "points": [[0, 0], [1, 1]]}])
    _, ln = parse_shapes(lines=[{"name": "a", "points": [[0, 0], [1, 1]], "camera": "cam9"}])
    with pytest.raises(EventConfigError, match=r"lines\[0\].camera: unknown camera 'cam9' \(cameras: road, gate\)"):
        check_cameras(ln, ["road", "gate"])
    with pytest.raises(EventConfigError, match="two cameras are named 'road'"):
        check_cameras([], ["road", "gate", "road"])
    check_cameras(ln, ["cam9"])


def test_unknown_class_name():
    ln = Line(name="l", points=[[0, 0], [5, 5]], classes=["car", "unicorn"])
    with pytest.raises(EventConfigError, match="unknown class 'unicorn'"):
        ZoneLineCounter("cam", lines=[ln], names=NAMES)


def test_fractions_vs_pixels():
    frac = Zone(name="f", points=[[0, 0], [0.5, 0], [0.5, 1], [0, 1]])
    px = Zone(name="p", points=[[0, 0], [50, 0], [50, 100], [0, 100]])
    assert frac.units == "fraction" and px.units == "px"
    assert np.allclose(frac.resolve(200, 100), [[0, 0], [100, 0], [100, 100], [0, 100]])
    assert np.allclose(px.resolve(200, 100), px.points)
    # explicit units beat the guess: a 1-pixel square stays a 1-pixel square
    one = Zone(name="o", points=[[0, 0], [1, 0], [1, 1], [0, 1]], units="px")
    assert np.allclose(one.resolve(640, 480), [[0, 0], [1, 0], [1, 1], [0, 1]])
    # same frame, same path: the fraction zone (x < 100) and the pixel zone (x < 50) differ
    c = ZoneLineCounter("cam", zones=[frac, px], frame_size=(200, 100))
    ev = run(c, [(75, 50)] * 4)
    assert [(e.event, e.zone) for e in ev] == [("zone_enter", "f")]
    c2 = ZoneLineCounter("cam", zones=[frac])
    with pytest.raises(ValueError, match="frame_size"):
        c2.update(tracks([]), 0.0)


# --- lines ----------------------------------------------------------------------------------

def horizontal(**kw):
    return Line(name="road", points=[[0, 100], [200, 100]], **kw)     # A left, B right


def test_direction_both_ways_and_json():
    c = ZoneLineCounter("cam", lines=[horizontal()], names=NAMES)
    down = run(c, [(50, y) for y in range(60, 160, 10)], tid=1)
    up = run(c, [(50, y) for y in range(160, 60, -10)], tid=2, t0=5.0)
    assert [e.direction for e in down] == ["out"] and [e.direction for e in up] == ["in"]
    e = up[0]
    assert isinstance(e, LineCross) and e.track_id == 2 and e.class_name == "car"
    d = json.loads(e.to_json())
    assert d["event"] == "line_cross" and d["camera"] == "cam" and d["line"] == "road" and d["class"] == "car"
    assert d["counts"] == {"in": 1, "out": 1} and d["class_id"] == 2 and len(d["id"]) == 32
    # t is the first frame on the new side (y=90 for the upward track: frame 7 -> 5.7 s)
    assert d["t"] == pytest.approx(5.7)
    assert c.counts()["lines"] == {"road": {"car": {"in": 1, "out": 1}}}


def test_custom_direction_names_and_vertical_line():
    ln = Line(name="gate", points=[[100, 0], [100, 200]], directions=["eastbound", "westbound"])
    c = ZoneLineCounter("cam", lines=[ln])
    # walking A->B (down the screen), the left-hand side is +x: moving right is directions[0]
    ev = run(c, [(x, 50) for x in range(50, 160, 10)])
    assert [e.direction for e in ev] == ["eastbound"] and ev[0].class_name is None and ev[0].class_label == "2"


def test_jitter_on_the_line_counts_once():
    c = ZoneLineCounter("cam", lines=[horizontal(confirm_frames=3)])
    path = [(50, 80), (50, 90), (50, 98)]
    path += [(50, 102), (50, 98), (50, 101), (50, 99), (50, 103), (50, 97)] * 5   # jitter: never 3 in a row
    path += [(50, 104), (50, 106), (50, 110), (50, 120)]                           # then stays below
    path += [(50, 130), (50, 99), (50, 135), (50, 140)]                            # one frame back: nothing
    ev = run(c, path)
    assert [e.direction for e in ev] == ["out"]
    assert c.counts()["lines"]["road"]["2"] == {"in": 0, "out": 1}


def test_touch_and_go_back_is_not_counted():
    c = ZoneLineCounter("cam", lines=[horizontal()])
    # comes down, touches the line, goes one and two frames beyond it, goes back
    ev = run(c, [(50, 80), (50, 95), (50, 100), (50, 101), (50, 102), (50, 96), (50, 80), (50, 60)])
    assert ev == []


def test_crossing_beside_the_segment_is_not_counted():
    c = ZoneLineCounter("cam", lines=[horizontal()])
    assert run(c, [(300, y) for y in range(60, 160, 10)]) == []     # x=300: past B's end
    # ... but the same move over the segment is
    assert len(run(c, [(150, y) for y in range(60, 160, 10)], tid=2)) == 1


def test_count_once_and_back_and_forth():
    path = [(50, 80)] * 3 + [(50, 120)] * 3 + [(50, 80)] * 3 + [(50, 120)] * 3
    free = ZoneLineCounter("cam", lines=[horizontal()])
    assert [e.direction for e in run(free, path)] == ["out", "in", "out"]
    once = ZoneLineCounter("cam", lines=[horizontal(count_once=True)])
    assert [e.direction for e in run(once, path)] == ["out"]


def test_track_absent_frames_do_not_break_hysteresis():
    c = ZoneLineCounter("cam", lines=[horizontal()])
    ev = run(c, [(50, 80), (50, 90), None, None, (50, 110), None, (50, 115), (50, 120)])
    assert [e.direction for e in ev] == ["out"]


def test_many_tracks_vectorised_and_class_filter():
    ln = horizontal(classes=["car"])
    c = ZoneLineCounter("cam", lines=[ln], names=NAMES)
    events = []
    for f in range(12):
        y = 60 + 10 * f
        rows = [(tid, 5 + tid, y if tid % 2 else 220 - y, tid % 3) for tid in range(1, 151)]
        events += c.update(tracks(rows), f * 0.1, seq=f)
    # only class 2 (car) is counted; odd ids go down ("out"), even ids go up ("in")
    cars = [tid for tid in range(1, 151) if tid % 3 == 2]
    assert sorted(e.track_id for e in events) == cars
    assert all(e.direction == ("out" if e.track_id % 2 else "in") for e in events)
    assert c.counts()["lines"]["road"]["car"] == {"in": sum(t % 2 == 0 for t in cars),
                                                  "out": sum(t % 2 == 1 for t in cars)}


def test_majority_class_is_reported():
    c = ZoneLineCounter("cam", lines=[horizontal()], names=NAMES)
    ev = []
    for i, y in enumerate(range(60, 160, 10)):
        cls = 0 if i == 5 else 2     # one frame detected as a person
        ev += c.update(tracks([(1, 50, y, cls)]), i * 0.1)
    assert [e.class_name for e in ev] == ["car"]


def test_state_is_bounded_rows_reused():
    c = ZoneLineCounter("cam", lines=[horizontal()], end_after_frames=5)
    for f in range(400):
        c.update(tracks([(f, 50, 50, 2)]), f * 0.1)      # a new id every frame, seen once
    assert c.live_tracks <= 6 and c._cap == 64


# --- zones ----------------------------------------------------------------------------------

SQUARE = [[100, 100], [200, 100], [200, 200], [100, 200]]


def test_zone_enter_exit_dwell():
    c = ZoneLineCounter("cam", zones=[Zone(name="sq", points=SQUARE)], names=NAMES)
    path = [(50, 150)] * 3 + [(150, 150)] * 20 + [(250, 150)] * 5        # 0.1 s per frame
    ev = run(c, path)
    assert [type(e) for e in ev] == [ZoneEnter, ZoneExit]
    enter, leave = ev
    assert enter.t == pytest.approx(0.3) and leave.t == pytest.approx(2.3)
    assert leave.dwell_s == pytest.approx(2.0) and leave.reason == "left"
    assert enter.counts == {"entered": 1, "occupancy": 1} and leave.counts == {"entered": 1, "occupancy": 0}
    d = json.loads(leave.to_json())
    assert d["event"] == "zone_exit" and d["zone"] == "sq" and d["dwell_s"] == 2.0


def test_zone_jitter_on_the_edge_is_one_enter():
    c = ZoneLineCounter("cam", zones=[Zone(name="sq", points=SQUARE)])
    path = [(99, 150), (101, 150)] * 10 + [(101, 150)] * 3 + [(99, 150), (101, 150)] * 10
    ev = run(c, path)
    assert [e.event for e in ev] == ["zone_enter"]


def test_zone_exit_when_the_track_ends_inside():
    c = ZoneLineCounter("cam", zones=[Zone(name="sq", points=SQUARE)], end_after_frames=1000)
    ev = run(c, [(150, 150)] * 10)
    assert [e.event for e in ev] == ["zone_enter"]
    out = c.track_ended(1)
    assert [(e.event, e.reason) for e in out] == [("zone_exit", "track_ended")]
    assert out[0].t == pytest.approx(0.9) and out[0].dwell_s == pytest.approx(0.9)
    assert c.track_ended(1) == [] and c.counts()["zones"]["sq"]["2"] == {"entered": 1, "occupancy": 0}


def test_zone_exit_when_the_track_disappears():
    c = ZoneLineCounter("cam", zones=[Zone(name="sq", points=SQUARE)], end_after_frames=5)
    ev = run(c, [(150, 150)] * 10 + [None] * 6)
    assert [(e.event, getattr(e, "reason", "")) for e in ev] == [("zone_enter", ""), ("zone_exit", "track_ended")]
    c2 = ZoneLineCounter("cam", zones=[Zone(name="sq", points=SQUARE)])
    run(c2, [(150, 150)] * 10)
    assert [e.event for e in c2.end_all()] == ["zone_exit"]


def test_zone_classes_filter_and_concave_zone():
    u = Zone(name="u", points=[[0, 0], [40, 0], [40, 80], [60, 80], [60, 0], [100, 0], [100, 100], [0, 100]],
             classes=[0])
    c = ZoneLineCounter("cam", zones=[u], names=NAMES)
    ev = run(c, [(50, 40)] * 5, tid=1, cls=0)              # inside the notch: outside the zone
    ev += run(c, [(20, 40)] * 5, tid=2, cls=2)             # a car inside: filtered out
    ev += run(c, [(20, 40)] * 5, tid=3, cls=0)             # a person inside
    assert [(e.event, e.track_id, e.class_name) for e in ev] == [("zone_enter", 3, "person")]
    assert c.counts()["zones"]["u"] == {"person": {"entered": 1, "occupancy": 1}}


def test_count_rows_for_metrics():
    from trackpipe.pipeline.events import count_rows
    c = ZoneLineCounter("cam", zones=[Zone(name="sq", points=SQUARE)], lines=[horizontal()], names=NAMES)
    run(c, [(150, y) for y in range(60, 200, 10)])
    rows = count_rows(c.counts())
    assert ("cam", "line", "road", "car", "out", 1) in rows and ("cam", "zone", "sq", "car", "entered", 1) in rows


def test_annotator_draws_zones_lines_and_counts():
    from trackpipe.pipeline.events.draw import ZoneLineAnnotator
    z = Zone(name="sq", points=[[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]])
    c = ZoneLineCounter("cam", zones=[z], lines=[horizontal()], names=NAMES, frame_size=(400, 200))
    run(c, [(150, y) for y in range(60, 200, 10)])
    img = np.zeros((200, 400, 3), np.uint8)
    ann = ZoneLineAnnotator([z], [horizontal()])
    ann.annotate(img, c.counts())
    (ZONE_COLOR,), (LINE_COLOR,) = ann.colors()   # the live view's colours too (drawing.draw_zones' order)
    def near(region, color):   # (H, W, 3) -> (W,) True where a pixel of the column is about `color`
        return (np.abs(region.astype(int) - np.array(color)).max(axis=2) < 80).any(axis=0)

    assert near(img[99:102, 120:195], LINE_COLOR).all()        # the line y=100, x 0..200 (label over its start)
    assert near(img[149:152, 120:280], ZONE_COLOR).all()       # the zone's bottom edge y=150, x 100..300
    assert near(img[84:96, 97:104], LINE_COLOR).any()          # the direction arrow: up from the middle
    assert not near(img[104:116, 97:104], LINE_COLOR).any()    # ... not down
    assert (img[160:200, 310:400] == 0).all()                  # nothing elsewhere
