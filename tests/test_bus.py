"""ZeroMQ bus: message encoding, Detections/Tracks round trip, ipc across a real process, timeouts."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from trackpipe.models.types import Detections, Tracks
from trackpipe.pipeline.runtime import cleanup
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport import messages as m
from trackpipe.pipeline.transport.bus import Bus


def test_encode_decode_roundtrip():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([1, 2, 3], np.int64)
    kind, h, arrs = m.decode_parts(m.encode_parts("frame", {"seq": 7, "shape": [2, 3, 3]}, {"a": a, "b": b}))
    assert kind == "frame" and h == {"seq": 7, "shape": [2, 3, 3]}
    np.testing.assert_array_equal(arrs["a"], a)
    assert arrs["b"].dtype == np.int64 and arrs["b"].tolist() == [1, 2, 3]
    kind, h, arrs = m.decode_parts(m.encode_parts("eos"))
    assert (kind, h, arrs) == ("eos", {}, {})


def test_detections_and_tracks_roundtrip():
    d = Detections(np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), np.array([0.5, 0.9], np.float32),
                   np.array([0, 2], np.int32))
    meta = m.FrameMeta(5, 1, 1.5, 2.5, (4, 6, 3))
    back = m.decode(m.encode(m.Detections(meta, d, 0.01))).dets
    assert type(back) is Detections and len(back) == 2
    np.testing.assert_array_equal(back.xyxy, d.xyxy)
    t = Tracks(d.xyxy, d.score, d.class_id, track_id=np.array([3, 9], np.int64))
    back = m.decode(m.encode(m.Tracked(meta, t))).tracks
    assert type(back) is Tracks and back.track_id.tolist() == [3, 9]
    back.xyxy[0, 0] = 100  # writable copies
    empty = m.decode(m.encode(m.Tracked(meta, Tracks.empty()))).tracks
    assert type(empty) is Tracks and len(empty) == 0


def _child_send(run_dir, n, done):
    b = Bus(run_dir)
    s = b.push("t", hwm=10)
    for i in range(n):
        d = Detections(np.full((i, 4), i, np.float32), np.ones(i, np.float32), np.zeros(i, np.int32))
        busmod.send(s, m.Detections(m.FrameMeta(i, 0, 0.0, 0.0, (1, 1, 3)), d))
    busmod.send(s, m.EndOfStream(n))
    # the reader is back-pressured (HWM 10 each side): what is still in the kernel's socket buffer
    # when the sender disconnects can be dropped by libzmq (zeromq/libzmq#4660: ipc drops messages
    # and ignores LINGER when the reader has a HWM), so the sender stays until it is read
    # (in a run, frames in flight are bounded by the ring's slots, far below every HWM)
    done.wait(60)
    b.close(linger_ms=2000)


@pytest.mark.timeout(150)
def test_ipc_between_processes_in_order():
    run_id = cleanup.new_run_id()
    run_dir = cleanup.make_run_dir(run_id)
    assert os.stat(run_dir).st_mode & 0o777 == 0o700
    b = Bus(run_dir)
    try:
        inp = b.pull("t", hwm=10)
        ctx = mp.get_context("spawn")
        done = ctx.Event()
        p = ctx.Process(target=_child_send, args=(run_dir, 50, done))
        p.start()
        seqs = []
        while True:
            msg = busmod.recv(inp, 60000)  # the first waits for a spawned interpreter
            assert msg is not None, (len(seqs), p.exitcode)
            if isinstance(msg, m.EndOfStream):
                done.set()
                assert msg.frames == 50
                break
            assert len(msg.dets) == msg.meta.seq
            seqs.append(msg.meta.seq)
        p.join(60)
        assert seqs == list(range(50)) and p.exitcode == 0
    finally:
        b.close()
        cleanup.remove_run(run_id)
    assert not os.path.exists(run_dir)


def test_recv_times_out_fast(tmp_path):
    b = Bus(str(tmp_path))
    try:
        s = b.pull("x")
        t = time.monotonic()
        assert busmod.recv(s, 100) is None
        assert time.monotonic() - t < 0.5
        assert busmod.recv_nowait(s) is None
    finally:
        b.close()


def test_send_gives_up_when_stopped(tmp_path):
    """A full HWM with no reader: send retries until the stop event is set, never forever."""
    import threading
    b = Bus(str(tmp_path))
    try:
        s = b.push("nobody", hwm=1, send_timeout_ms=50)
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        t = time.monotonic()
        results = [busmod.send(s, m.Release(i, i), stop=stop) for i in range(5)]
        assert not all(results) and time.monotonic() - t < 3
    finally:
        b.close()
