"""Decoding, NMS and letterbox mapping on small hand-made cases."""

import numpy as np
import pytest

from trackpipe.models.darknet import YoloHead
from trackpipe.models.postprocess import decode_head, decode_heads, nms, nms_detections
from trackpipe.models.preprocess import Letterbox, preprocess
from trackpipe.models.types import Detections


def test_nms_is_class_aware_and_greedy():
    xyxy = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    score = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    cls = np.array([0, 0, 1, 0], np.int32)
    keep = nms(xyxy, score, cls, 0.5)
    assert keep.tolist() == [0, 2, 3]  # 1 suppressed by 0; 2 is another class


def test_nms_large_input_matches_small_path():
    rng = np.random.default_rng(0)
    tl = rng.uniform(0, 500, (1500, 2))
    xyxy = np.concatenate([tl, tl + rng.uniform(10, 80, (1500, 2))], 1).astype(np.float32)
    score = rng.uniform(0, 1, 1500).astype(np.float32)
    cls = rng.integers(0, 3, 1500).astype(np.int32)
    big = nms(xyxy, score, cls, 0.45)  # > 1024: rows computed on demand
    per_class = np.concatenate([np.flatnonzero(cls == c)[nms(xyxy[cls == c], score[cls == c], cls[cls == c], 0.45)]
                                for c in range(3)])
    assert sorted(big.tolist()) == sorted(per_class.tolist())


def test_class_filter():
    d = Detections([[0, 0, 1, 1], [2, 2, 3, 3]], [0.9, 0.8], [0, 5])
    assert nms_detections(d, 0.5, classes=[5]).class_id.tolist() == [5]


def test_decode_one_cell_by_hand():
    head = YoloHead(index=1, source=0, anchors=np.array([[10, 20]], np.float32), classes=2, scale_x_y=1.2)
    raw = np.zeros((1 * 7, 2, 2), np.float32)  # A=1, 5+C=7, grid 2x2
    raw[:, 1, 0] = [0.0, 0.0, np.log(2.0), 0.0, 10.0, 10.0, -10.0]  # cell y=1, x=0
    rows = decode_head(raw, head, (64, 64))
    r = rows[2]  # row = (y * gw + x) * A + a = 2
    s = 1.2
    assert r[0] == pytest.approx((0 + 0.5 * s - (s - 1) / 2) / 2 * 64)
    assert r[1] == pytest.approx((1 + 0.5 * s - (s - 1) / 2) / 2 * 64)
    assert r[2:4] == pytest.approx([20.0, 20.0])
    assert r[4] == pytest.approx(1 / (1 + np.exp(-10)))
    assert r[5] == pytest.approx(r[4] / (1 + np.exp(-10)), rel=1e-6)


def test_decode_new_coords():
    head = YoloHead(index=1, source=0, anchors=np.array([[10, 20]], np.float32), classes=1, new_coords=True)
    raw = np.full((6, 1, 1), 0.5, np.float32)
    r = decode_head(raw, head, (32, 32))[0]
    assert r[2:4] == pytest.approx([10.0, 20.0])  # (0.5 * 2)^2 * anchor
    assert r[5] == pytest.approx(0.25)


def test_letterbox_roundtrip():
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[100:200, 300:400] = 255
    blob, (lb,) = preprocess([frame], (320, 320), letterbox=True)
    assert blob.shape == (1, 3, 320, 320)
    assert lb.scale_x == lb.scale_y == pytest.approx(0.5)
    back = lb.to_frame(np.array([[150, 50 + lb.pad_y, 200, 100 + lb.pad_y]], np.float32))
    np.testing.assert_allclose(back, [[300, 100, 400, 200]], atol=1e-4)


def test_decode_heads_maps_to_frame_and_clips():
    head = YoloHead(index=1, source=0, anchors=np.array([[64, 64]], np.float32), classes=1)
    raw = np.zeros((6, 1, 1), np.float32)
    raw[4:] = 10
    lb = Letterbox(0.5, 0.25, 0, 0, 64, 128)
    d = decode_heads([raw], [head], (32, 32), lb, 0.25)
    np.testing.assert_allclose(d.xyxy, [[0, 0, 64, 128]])  # 64x64 box centred at (16,16) -> clipped


def test_preprocess_rejects_non_frames():
    with pytest.raises(ValueError, match="BGR uint8 frame"):
        preprocess([np.zeros((10, 10), np.uint8)], (32, 32))


def test_candidate_cap_keeps_the_best_scores():
    rng = np.random.default_rng(1)
    tl = rng.uniform(0, 1000, (50_000, 2))
    d = Detections(np.concatenate([tl, tl + 5], 1), rng.uniform(0, 1, 50_000), np.zeros(50_000, np.int32))
    out = nms_detections(d, 0.45, max_candidates=100)
    assert len(out) <= 100 and out.score.min() >= np.sort(d.score)[-100]


def _greedy_reference(xyxy, score, cls, thr):
    """Textbook greedy NMS, one box at a time (the previous implementation)."""
    from trackpipe.models.postprocess import box_iou

    order = np.argsort(-score, kind="stable")
    keep = []
    for i in order:
        if all(cls[j] != cls[i] or box_iou(xyxy[i:i + 1], xyxy[j:j + 1])[0, 0] <= thr for j in keep):
            keep.append(i)
    return np.asarray(keep, np.int64)


@pytest.mark.parametrize("n,classes,spread", [(600, 1, 200), (900, 5, 400), (3000, 80, 1000)])
def test_blocked_nms_equals_textbook_greedy(n, classes, spread):
    """Blocks of 256 (several), many overlaps, several classes: the same boxes in the same order;
    with max_det: exactly the first max_det of them."""
    rng = np.random.default_rng(n)
    tl = rng.uniform(0, spread, (n, 2))
    xyxy = np.concatenate([tl, tl + rng.uniform(10, 90, (n, 2))], 1).astype(np.float32)
    score = rng.uniform(0.3, 1, n).astype(np.float32)
    cls = rng.integers(0, classes, n).astype(np.int32)
    ref = _greedy_reference(xyxy, score, cls, 0.45) if n <= 900 else None
    full = nms(xyxy, score, cls, 0.45)
    if ref is not None:
        assert full.tolist() == ref.tolist()
    capped = nms(xyxy, score, cls, 0.45, max_det=37)
    assert capped.tolist() == full[:37].tolist()


def test_nms_ties_keep_index_order():
    xyxy = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    keep = nms(xyxy, np.array([0.5, 0.5, 0.5], np.float32), np.zeros(3, np.int32), 0.5)
    assert keep.tolist() == [0, 2]


def _flood_heads(rng, classes=80, grid=(26, 26), anchors=3):
    head = YoloHead(index=1, source=0, anchors=rng.uniform(10, 100, (anchors, 2)).astype(np.float32),
                    classes=classes, grid=grid)
    raw = rng.normal(0, 1, (anchors * (5 + classes), *grid)).astype(np.float32)
    return head, raw


def test_decode_candidates_equals_reference_decoder():
    """The thresholded decoder returns exactly the (box, class) pairs of the full reference decoder."""
    from trackpipe.models.postprocess import decode_candidates

    rng = np.random.default_rng(3)
    head, raw = _flood_heads(rng, classes=7, grid=(9, 11))
    rows = decode_head(raw, head, (352, 288))
    rows = rows[rows[:, 4] > 0.3]
    b, c = np.nonzero(rows[:, 5:] > 0.3)
    ref = np.column_stack([c, rows[b, 0], rows[b, 1], rows[b, 2], rows[b, 3], rows[b, 5 + c]])
    xyxy, score, cls = decode_candidates([raw], [head], (352, 288), 0.3, max_candidates=0)
    got = np.column_stack([cls, (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                           xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1], score])
    assert len(ref) > 50 and len(got) == len(ref)
    ref, got = ref[np.lexsort(ref[:, ::-1].T)], got[np.lexsort(got[:, ::-1].T)]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)


def test_flood_is_capped_and_matches_the_uncapped_top():
    """Random heads: max_det caps the output; the kept boxes are the best
    of the full greedy result (candidate cap large enough not to matter here)."""
    from trackpipe.models.postprocess import postprocess

    rng = np.random.default_rng(4)
    head, raw = _flood_heads(rng, classes=20, grid=(10, 10))  # ~4,000 candidates
    lb = Letterbox(1.0, 1.0, 0, 0, 416, 416)
    capped = postprocess([raw], [head], (416, 416), lb, 0.25, 0.45, max_det=300, max_candidates=100_000)
    full = postprocess([raw], [head], (416, 416), lb, 0.25, 0.45, max_det=0, max_candidates=100_000)
    assert len(capped) == 300 and len(full) > 600
    np.testing.assert_array_equal(capped.xyxy, full.xyxy[:300])
    assert np.all(np.diff(capped.score) <= 0)
    few = postprocess([raw], [head], (416, 416), lb, 0.25, 0.45, max_det=300, max_candidates=500)
    assert len(few) <= 300 and few.score.min() >= np.sort(full.score)[-500] - 1e-6


def test_postprocess_class_filter():
    from trackpipe.models.postprocess import postprocess

    rng = np.random.default_rng(5)
    head, raw = _flood_heads(rng, classes=4, grid=(8, 8))
    d = postprocess([raw], [head], (256, 256), Letterbox(1, 1, 0, 0, 256, 256), 0.25, 0.45, classes=(2,))
    assert len(d) > 0 and set(d.class_id.tolist()) == {2}
