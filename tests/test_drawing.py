"""The one drawing module: label layout (inside the frame, no overlaps, near the box, priority),
style scaling, label format, palette, and annotating real frames with real detections."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from trackpipe.models.types import Detections, Tracks
from trackpipe.pipeline.drawing import (
    DROPPED,
    DrawStyle,
    annotate,
    draw_lines,
    draw_polygons,
    label_text,
    layout_labels,
    overlay_items,
    palette_color,
)

from tests.conftest import VIDEO_360, VIDEO_1080


def overlaps(rects: np.ndarray) -> list:
    """Pairs (i, j) of kept label rects (x2/y2 exclusive) that share a pixel."""
    r = rects[rects[:, 0] != DROPPED]
    a, b = r[:, None, :], r[None, :, :]
    hit = (a[..., 0] < b[..., 2]) & (b[..., 0] < a[..., 2]) & (a[..., 1] < b[..., 3]) & (b[..., 1] < a[..., 3])
    np.fill_diagonal(hit, False)
    return list(zip(*np.nonzero(hit)))


def check_layout(rects, boxes, sizes, hw):
    """The layout invariants: shape, label sizes kept, inside the frame, no two overlapping."""
    h, w = hw
    assert rects.shape == (len(boxes), 4) and rects.dtype == np.int32
    kept = rects[:, 0] != DROPPED
    assert (rects[~kept] == DROPPED).all()
    r, s = rects[kept], np.asarray(sizes).reshape(-1, 2)[kept]
    assert (r[:, 2] - r[:, 0] == s[:, 0]).all() and (r[:, 3] - r[:, 1] == s[:, 1]).all()
    assert (r[:, :2] >= 0).all() and (r[:, 2] <= w).all() and (r[:, 3] <= h).all()
    assert overlaps(rects) == []
    return kept


def crowd(rng, n, h, w, spread=(0.2, 0.2)):
    cx, cy = rng.normal(w / 2, w * spread[0], n), rng.normal(h / 2, h * spread[1], n)
    bw = rng.uniform(0.02, 0.08, n) * w
    bh = bw * rng.uniform(1.5, 3.0, n)
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)


def touches(box, rect, gap=1) -> bool:
    """The label rect (exclusive ends) touches or overlaps the box (inclusive corners)."""
    return (rect[0] <= box[2] + gap and box[0] <= rect[2] - 1 + gap
            and rect[1] <= box[3] + gap and box[1] <= rect[3] - 1 + gap)


# ---------------------------------------------------------------------------------- layout

def test_layout_random_cases_hold_the_invariants_and_are_deterministic():
    rng = np.random.default_rng(0)
    for trial in range(150):
        h, w = int(rng.integers(16, 1081)), int(rng.integers(16, 1921))
        n = int(rng.integers(0, 120))
        corners = rng.uniform(-0.2, 1.2, (n, 2, 2)) * [w, h]           # some boxes cross the frame edges
        boxes = np.concatenate([corners.min(1), corners.max(1)], 1)
        sizes = np.stack([rng.integers(8, 200, n), np.full(n, int(rng.integers(8, 32)))], 1)
        pri = rng.random(n)
        rects = layout_labels(boxes, sizes, (h, w), priority=pri)
        check_layout(rects, boxes, sizes, (h, w))
        np.testing.assert_array_equal(rects, layout_labels(boxes, sizes, (h, w), priority=pri))


def test_layout_crowd_of_300_drops_lowest_priority_instead_of_overlapping():
    rng = np.random.default_rng(1)
    h, w = 1080, 1920
    style = DrawStyle.for_frame(h, w)
    boxes = crowd(rng, 300, h, w, spread=(0.08, 0.08))
    sizes = np.array([style.text_size(label_text("person", i + 1, 0.9)) for i in range(300)])
    pri = rng.random(300)
    rects = layout_labels(boxes, sizes, (h, w), priority=pri)
    kept = check_layout(rects, boxes, sizes, (h, w))
    assert 30 < kept.sum() < 300           # too many for the space: some dropped, many placed
    # a label is never dropped or moved for a lower-priority one: with the same boxes but only
    # the top k labels (the others of size 0: no label), those land exactly where they did
    order = np.argsort(-pri, kind="stable")
    for k in (1, 10, 50, 150):
        only_top = sizes.copy()
        only_top[order[k:]] = 0
        top = order[:k]
        np.testing.assert_array_equal(layout_labels(boxes, only_top, (h, w), priority=pri)[top], rects[top])
    assert (rects[order[:5], 0] != DROPPED).all()


def test_layout_default_order_is_the_given_order():
    boxes = np.array([[100, 100, 140, 180]] * 5, float)           # five labels want the same spot
    sizes = np.array([[60, 20]] * 5)
    rects = layout_labels(boxes, sizes, (400, 400))
    np.testing.assert_array_equal(rects[0], [100, 80, 160, 100])   # the first gets the preferred place
    check_layout(rects, boxes, sizes, (400, 400))


def test_isolated_box_label_sits_above_its_top_left_corner():
    rects = layout_labels(np.array([[200.4, 150.0, 300.0, 400.0]]), np.array([[120, 25]]), (720, 1280))
    np.testing.assert_array_equal(rects[0], [200, 125, 320, 150])


@pytest.mark.parametrize("hw", [(360, 640), (1080, 1920)])
def test_boxes_at_every_edge_and_corner(hw):
    h, w = hw
    bw, bh = w // 8, h // 4
    lw, lh = 150, 24
    xs = {"left": (-30, bw - 30), "mid": (w // 2 - bw // 2, w // 2 + bw // 2), "right": (w - bw + 30, w + 30)}
    ys = {"top": (-20, bh - 20), "mid": (h // 2 - bh // 2, h // 2 + bh // 2), "bottom": (h - bh + 20, h + 20)}
    for (xn, (x1, x2)) in xs.items():
        for (yn, (y1, y2)) in ys.items():
            box = np.array([[x1, y1, x2, y2]], float)
            rect = layout_labels(box, np.array([[lw, lh]]), hw)[0]
            check_layout(rect[None], box, [[lw, lh]], hw)
            clipped = np.clip(box[0], 0, [w, h, w, h])
            assert touches(clipped, rect), (xn, yn, rect)
            if yn != "top":
                assert rect[3] == max(int(y1), 0) or rect[1] == max(int(y1), 0), (xn, yn, rect)   # at the top edge
            else:
                assert rect[1] == 0                                                               # inside the top


def test_many_boxes_along_the_edges_stay_inside_without_overlap():
    h, w = 360, 640
    edge = []
    for t in np.linspace(0, 1, 25):
        edge += [[t * w - 20, -10, t * w + 20, 40], [t * w - 20, h - 40, t * w + 20, h + 10],
                 [-10, t * h - 30, 30, t * h + 30], [w - 30, t * h - 30, w + 10, t * h + 30]]
    boxes = np.array(edge, float)
    sizes = np.array([[70, 16]] * len(boxes))
    kept = check_layout(layout_labels(boxes, sizes, (h, w)), boxes, sizes, (h, w))
    assert kept.sum() >= 50


def test_label_avoids_hiding_a_small_neighbour_and_goes_inside_its_own_box():
    # the small box B lies just above A, where A's label would go by default: A's label moves
    # inside A's top instead of hiding B
    a, b = [100, 200, 300, 400], [100, 172, 160, 199]
    rects = layout_labels(np.array([a, b], float), np.array([[150, 28], [60, 20]]), (600, 800))
    ra = rects[0]
    assert not (ra[0] < b[2] and b[0] < ra[2] and ra[1] < b[3] and b[1] < ra[3]), ra
    np.testing.assert_array_equal(ra, [100, 200, 250, 228])


def test_tiny_frames():
    # a label larger than the frame is dropped; small ones are placed inside
    rects = layout_labels(np.array([[2, 2, 10, 10]], float), np.array([[40, 12]]), (16, 16))
    assert (rects == DROPPED).all()
    boxes = np.array([[0, 0, 32, 32], [5, 5, 20, 20], [10, 0, 31, 31]], float)
    sizes = np.array([[20, 8]] * 3)
    kept = check_layout(layout_labels(boxes, sizes, (32, 32)), boxes, sizes, (32, 32))
    assert kept.sum() == 3
    assert layout_labels(np.zeros((0, 4)), np.zeros((0, 2)), (10, 10)).shape == (0, 4)


# ---------------------------------------------------------------------------------- style, text, colours

def test_style_scales_with_the_frame():
    s360, s720, s1080 = (DrawStyle.for_frame(*hw) for hw in [(360, 640), (720, 1280), (1080, 1920)])
    assert (s360.font_px, s1080.font_px) == (9, 14)
    assert s360.thickness == 2 and s1080.thickness == 3
    assert s1080.text_bold and not s360.text_bold
    assert s360.label_h < s720.label_h < s1080.label_h
    # readable on both: text cap height >= 9 px, and a label is a smaller share of a big frame
    assert s360.label_h / 360 > s1080.label_h / 1080
    (_, th), _ = cv2.getTextSize("person 12 0.97", cv2.FONT_HERSHEY_SIMPLEX, s360.font_scale, s360.text_thickness)
    assert th >= 9
    assert DrawStyle.for_frame(1080, 1920) == DrawStyle.for_frame(1920, 1080)     # portrait = landscape
    tiny = DrawStyle.for_frame(48, 64)
    assert tiny.thickness == 1 and tiny.label_h < 20


def test_label_text_format():
    assert label_text("person", 12, 0.968) == "person 12 0.97"
    assert label_text("car", None, 0.5) == "car 0.50"
    assert label_text("car", 0, 0.5) == "car 0.50"
    assert label_text("dog", 3, 0.9, predicted=True) == "dog 3 pred"
    assert label_text("dog", 3, None) == "dog 3"


def test_palette_is_stable_and_distinct():
    cols = [palette_color(i) for i in range(18)]
    assert len(set(cols)) == 18
    assert all(isinstance(c, tuple) and len(c) == 3 and all(isinstance(v, int) for v in c) for c in cols)
    assert palette_color(5) == palette_color(5 + 18) == palette_color(np.int64(5))
    # distinguishable: every pair of consecutive ids differs clearly
    arr = np.array(cols + cols[:1], float)
    assert (np.abs(np.diff(arr, axis=0)).sum(1) > 80).all()


# ---------------------------------------------------------------------------------- plan and drawing

def test_overlay_items_match_annotate_and_handle_detections_and_predicted():
    h, w = 360, 640
    tr = Tracks(np.array([[50, 60, 150, 300], [400, 10, 500, 200]], np.float32), np.array([0.9, 0.6], np.float32),
                np.array([0, 2], np.int32), track_id=np.array([7, 8]), predicted=np.array([False, True]))
    items = overlay_items(tr, ["person", "bicycle", "car"], (h, w))
    assert [i.text for i in items] == ["person 7 0.90", "car 8 pred"]
    assert items[0].color_rgb == palette_color(7)[::-1] and items[0].color_bgr == palette_color(7)
    assert items[1].predicted and not items[0].predicted
    assert items[0].label == (50, 60 - DrawStyle.for_frame(h, w).label_h, 50 + (items[0].label[2] - 50), 60)
    frame = np.zeros((h, w, 3), np.uint8)
    annotate(frame, tr, ["person", "bicycle", "car"])
    for it in items:                         # the label fill is drawn where the plan says
        assert tuple(frame[it.label[3] - 1, it.label[2] - 1]) == it.color_bgr
    assert tuple(frame[150, items[0].box[0]]) == items[0].color_bgr           # solid outline
    dets = Detections(tr.xyxy, tr.score, tr.class_id)
    assert [i.text for i in overlay_items(dets, ["person", "bicycle", "car"], (h, w))] == ["person 0.90", "car 0.60"]
    assert [i.key for i in overlay_items(dets, ["person"], (h, w))] == [0, 2]
    assert overlay_items(Tracks.empty(), ["person"], (h, w)) == []
    assert overlay_items(tr, [], (h, w))[0].text == "0 7 0.90"      # unknown class: its id


def test_zones_and_lines_are_drawn_in_palette_colours():
    frame = np.zeros((360, 640, 3), np.uint8)
    poly = np.array([[100, 100], [300, 100], [300, 250], [100, 250]], float)
    draw_polygons(frame, [poly], ["entrance"], fill_alpha=0.2)
    assert tuple(frame[175, 100]) == palette_color(0)
    assert frame[175, 200].any() and not frame[175, 400].any()   # translucent fill inside only
    draw_lines(frame, [np.array([[400, 50], [600, 300]])], ["door"], keys=[3])
    assert tuple(frame[175, 500]) == palette_color(3)
    # annotate accepts zones as arrays or objects with points/name
    f2 = np.zeros((360, 640, 3), np.uint8)
    annotate(f2, Tracks.empty(), ["person"], zones=[SimpleNamespace(name="z", points=poly), [[400, 50], [600, 300]]])
    assert tuple(f2[175, 100]) == palette_color(0) and tuple(f2[175, 500]) == palette_color(1)


def _real_frame_tracks(video, index, detector):
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    assert ok
    d = detector.detect(frame)
    n = len(d)
    return frame, Tracks(d.xyxy, d.score, d.class_id, track_id=np.arange(1, n + 1),
                         predicted=np.arange(n) % 5 == 4)


@pytest.fixture(scope="module")
def detector():
    from trackpipe.models.factory import build_detector
    from trackpipe.models.spec import ModelSpec

    from tests.conftest import COCO_NAMES, YF_CFG, YF_WEIGHTS
    return build_detector(ModelSpec(cfg=YF_CFG, weights=YF_WEIGHTS, names=COCO_NAMES, size=(320, 320),
                                    backend="onnx"))


@pytest.mark.parametrize("video,index,min_dets", [(VIDEO_1080, 120, 10), (VIDEO_360, 120, 3)])
def test_annotate_real_frames_with_real_detections(video, index, min_dets, detector, tmp_path):
    frame, tracks = _real_frame_tracks(video, index, detector)
    h, w = frame.shape[:2]
    assert len(tracks) >= min_dets
    # add a synthetic crowd on top of the real boxes: labels must still be placed cleanly
    rng = np.random.default_rng(2)
    extra = crowd(rng, 60, h, w, spread=(0.1, 0.1))
    crowd_tracks = Tracks(np.concatenate([tracks.xyxy, extra]).astype(np.float32),
                          np.concatenate([tracks.score, rng.uniform(0.3, 1, 60)]).astype(np.float32),
                          np.concatenate([tracks.class_id, np.zeros(60, np.int32)]),
                          track_id=np.arange(1, len(tracks) + 61))
    kept_real = None
    for tr in (tracks, crowd_tracks):
        items = overlay_items(tr, detector.names, (h, w))
        rects = np.array([it.label if it.label else (DROPPED,) * 4 for it in items], np.int32)
        sizes = np.array([DrawStyle.for_frame(h, w).text_size(it.text) for it in items])
        kept = check_layout(rects, tr.xyxy, sizes, (h, w))
        kept_real = kept if kept_real is None else kept_real
        for it in items:
            if it.label and it.leader is None:
                assert touches(np.clip(it.box, 0, [w, h, w, h]), it.label, gap=DrawStyle.for_frame(h, w).thickness + 1)
    assert kept_real.all()                   # alone, the real detections keep all their labels
    out = annotate(frame.copy(), tracks, detector.names)
    assert (out != frame).any(axis=2).mean() > 0.005
    assert cv2.imwrite(str(tmp_path / f"drawing_{h}.png"), out)
