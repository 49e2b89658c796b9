"""The typed stage protocol: every message kind round-trips through its wire encoding; stats
snapshots keep summed counters apart from gauges when processes are merged."""

from __future__ import annotations

import numpy as np
import pytest

from trackpipe.models.types import Detections as DetArrays
from trackpipe.models.types import Tracks
from trackpipe.pipeline.profiling.aggregate import GroupAggregate, StageAggregate
from trackpipe.pipeline.profiling.stats import StageStats
from trackpipe.pipeline.transport import messages as m

META = m.FrameMeta(seq=12, slot=3, t_capture=1700000000.25, t_mono=123.5, shape=(360, 640, 3), source_id=1,
                   camera="door")


def _dets(n=2):
    return DetArrays(np.arange(4 * n, dtype=np.float32).reshape(n, 4), np.full(n, 0.5, np.float32),
                     np.arange(n, dtype=np.int32))


def _roundtrip(msg):
    parts = m.encode(msg)
    assert bytes(parts[0]) == msg.KIND.value.encode()
    return m.decode(parts)


def test_every_kind_has_one_message_type():
    assert set(m.MESSAGE_TYPES) == set(m.Kind)
    assert len({c for c in m.MESSAGE_TYPES.values()}) == len(m.Kind)


def test_frame_meta_and_frame():
    back = _roundtrip(m.Frame(META))
    assert isinstance(back, m.Frame) and back.meta == META and back.meta.shape == (360, 640, 3)


def test_detections_kept_and_dropped():
    back = _roundtrip(m.Detections(META, _dets(3), t_infer=0.012))
    assert isinstance(back, m.Detections) and not back.dropped and back.meta == META
    np.testing.assert_array_equal(back.dets.xyxy, _dets(3).xyxy)
    assert back.t_infer == pytest.approx(0.012)
    dropped = _roundtrip(m.Detections(META, None))
    assert dropped.dropped and dropped.dets is None


def test_tracked_kept_empty_and_dropped():
    d = _dets(2)
    t = Tracks(d.xyxy, d.score, d.class_id, track_id=np.array([4, 7], np.int64))
    back = _roundtrip(m.Tracked(META, t, t_infer=0.01, t_track=0.002))
    assert isinstance(back, m.Tracked) and not back.dropped
    assert back.tracks.track_id.tolist() == [4, 7] and back.t_track == pytest.approx(0.002)
    back.tracks.xyxy[0, 0] = 99.0  # writable copies
    empty = _roundtrip(m.Tracked(META, Tracks.empty()))
    assert len(empty.tracks) == 0 and not empty.dropped
    dropped = _roundtrip(m.Tracked(META, None, dropped=True))
    assert dropped.dropped and dropped.tracks is None


@pytest.mark.parametrize("msg", [
    m.EndOfStream(319), m.Want(), m.Release(5, 77),
    m.SourceEvent("source_lost", 1700000000.5, 41, "rtsp://cam/1", "read failed"),
    m.SourceEvent("source_restored", 1700000001.5, 42, "rtsp://cam/1"),
    m.State("infer.1", m.StageState.ERROR, "infer: model missing"), m.State("render", m.StageState.QUIT),
    m.Log("track", 30, "trackpipe.x", "hello"),
])
def test_small_messages_roundtrip(msg):
    assert _roundtrip(msg) == msg


def test_drawn_rects():
    rects = np.array([[1, 2, 30, 5], [1, 5, 4, 40]], np.int32)
    back = _roundtrip(m.Drawn(9, rects))
    assert back.seq == 9 and back.rects.dtype == np.int32 and back.rects.tolist() == rects.tolist()


def test_source_event_fields_for_the_events_file():
    ev = m.SourceEvent("source_lost", 1.0, 3, "rtsp://x", "no frame for 5s")
    assert ev.fields() == {"source": "rtsp://x", "reason": "no frame for 5s"}


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown message kind"):
        m.decode([b"frames!", b"{}"])


def test_stats_counters_summed_gauges_newest():
    a, b = StageStats("infer"), StageStats("infer.1")
    for s, n in ((a, 3), (b, 5)):
        for _ in range(n):
            s.item(0.0, 0.01)
            s.add("detect_s", 0.01)
            s.add("detect_n")
    a.gauges["backend"] = "onnx"
    b.gauges["backend"] = "onnx"
    snap = _roundtrip(m.Stats(a.snapshot())).snapshot
    assert snap.counters["detect_n"] == 3 and snap.gauges == {"backend": "onnx"}
    aa, ab = StageAggregate("infer"), StageAggregate("infer.1")
    aa.update(snap)
    ab.update(b.snapshot())
    total = GroupAggregate("infer", [aa, ab]).total()
    assert total["items"] == 8 and total["counters"]["detect_n"] == 8
    assert total["counters"]["detect_s"] == pytest.approx(0.08)
    # a restart: the counters of the earlier incarnation add up, gauges are the newest
    s2 = StageStats("infer")
    s2.item(0.0, 0.01)
    s2.add("detect_n")
    s2.gauges["backend"] = "tf"
    aa.new_incarnation()
    aa.update(s2.snapshot())
    t = aa.total()
    assert t["items"] == 4 and t["counters"]["detect_n"] == 4 and t["gauges"]["backend"] == "tf"
    assert aa.report()["backend"] == "tf" and "detect_n" not in aa.report()


def test_snapshot_carries_the_jpeg_bytes():
    jpeg = np.frombuffer(b"\xff\xd8 jpeg \xff\xd9", np.uint8)
    back = _roundtrip(m.Snapshot(1, 40, 7, jpeg))
    assert (back.source_id, back.seq, back.track_id) == (1, 40, 7) and back.jpeg.tobytes() == jpeg.tobytes()
