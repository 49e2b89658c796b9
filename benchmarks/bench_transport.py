#!/usr/bin/env python
"""Cost of moving one 1080p BGR frame to another process: shared-memory ring vs ZeroMQ payload
vs multiprocessing.Queue.

For each transport a producer process sends N frames to a consumer process:
- latency: one frame at a time (the producer waits for an ack), from just before the
  producer writes the frame to the moment the consumer holds a verified view or copy of
  it (id stamp checked), in ms (time.perf_counter, the same clock in both processes);
- throughput: frames/s with the producer running ahead (4 slots / HWM 4 / maxsize 4).

Ring = copy into a shared-memory slot + a small ZeroMQ message (seq, slot) + the consumer
maps the slot (zero copy); the slot goes back by a release message, as in the pipeline.
Ring handoff = the same without the copy (the pipeline's capture decodes into the slot).

    python benchmarks/bench_transport.py [--frames 200] [--width 1920 --height 1080]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _frame(shape, i: int) -> np.ndarray:
    f = np.full(shape, i % 251, np.uint8)
    f[0, :8, 0] = np.frombuffer(np.int64(i).tobytes(), np.uint8)
    return f


def _fid(view) -> int:
    return int(np.frombuffer(bytes(view[0, :8, 0]), np.int64)[0])


# --- ring ------------------------------------------------------------------------------------

def _ring_producer(ring_name, run_dir, n, shape, pingpong, copy=True):
    from trackpipe.pipeline.transport.bus import Bus
    from trackpipe.pipeline.transport.ring import FrameRing
    ring = FrameRing.attach(ring_name)
    bus = Bus(run_dir)
    out = bus.push("frames", hwm=64, send_timeout_ms=10000)
    ctl = bus.pull("ctl")
    src = [_frame(shape, i) for i in range(4)]
    slot = 0
    for i in range(n):
        while not ring.is_free(slot):  # credit: wait for the release
            ctl.poll(100)
            while ctl.poll(0):
                ctl.recv_multipart()
        t0 = time.perf_counter()
        ring.begin_write(slot)
        if copy:  # a frame decoded elsewhere; capture avoids this copy by decoding into the slot
            np.copyto(ring.frame(slot, shape), src[i % 4])
        ring.frame(slot, shape)[0, :8, 0] = np.frombuffer(np.int64(i).tobytes(), np.uint8)
        ring.end_write(slot, i, shape, time.time(), time.monotonic())
        out.send_multipart([b"frame", json.dumps({"seq": i, "slot": slot, "t0": t0}).encode()])
        if pingpong:
            while ring.seq(slot) == i and not ring.is_free(slot):
                ctl.poll(100)
                while ctl.poll(0):
                    ctl.recv_multipart()
        slot = (slot + 1) % ring.slots
    ring.close()
    bus.close(linger_ms=2000)


def bench_ring(n: int, shape, pingpong: bool, copy: bool = True):
    from trackpipe.pipeline.runtime import cleanup
    from trackpipe.pipeline.transport.bus import Bus
    from trackpipe.pipeline.transport.ring import FrameRing
    run_id = cleanup.new_run_id()
    run_dir = cleanup.make_run_dir(run_id)
    ring = FrameRing.create(cleanup.ring_name(run_id), 4, shape)
    bus = Bus(run_dir)
    inp = bus.pull("frames", hwm=64)
    ctl = bus.push("ctl", hwm=64, flush=False)
    p = mp.get_context("spawn").Process(target=_ring_producer, args=(ring.name, run_dir, n, shape, pingpong, copy))
    p.start()
    lat, bad = [], 0
    try:
        t_start = None
        for _ in range(n):
            if not inp.poll(60000):
                raise RuntimeError("ring producer stalled")
            parts = inp.recv_multipart()
            h = json.loads(parts[1])
            view = ring.frame(h["slot"], shape)
            bad += _fid(view) != h["seq"]
            t1 = time.perf_counter()
            t_start = t_start or h["t0"]
            lat.append((t1 - h["t0"]) * 1000)
            del view
            ring.release(h["slot"], h["seq"])
            ctl.send_multipart([b"release"])
        elapsed = time.perf_counter() - t_start
        p.join(30)
    finally:
        if p.is_alive():
            p.kill()
        ring.close()
        ring.unlink()
        bus.close()
        cleanup.remove_run(run_id)
    return lat, n / elapsed, bad


# --- zmq payload ----------------------------------------------------------------------------------

def _zmq_producer(addr, ack_addr, n, shape, pingpong):
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 4)
    s.connect(addr)
    ack = ctx.socket(zmq.PULL)
    ack.connect(ack_addr)
    src = [_frame(shape, i) for i in range(4)]
    for i in range(n):
        f = src[i % 4].copy()  # a fresh frame, as from a decoder (zero-copy send keeps a reference)
        f[0, :8, 0] = np.frombuffer(np.int64(i).tobytes(), np.uint8)
        t0 = time.perf_counter()
        s.send_multipart([json.dumps({"seq": i, "t0": t0}).encode(), f], copy=False)
        if pingpong:
            ack.recv()
    s.close(linger=5000)
    ack.close(0)
    ctx.term()


def bench_zmq(n: int, shape, pingpong: bool):
    import zmq
    d = tempfile.mkdtemp(prefix="trackpipe_bench_")
    addr, ack_addr = f"ipc://{d}/f.ipc", f"ipc://{d}/a.ipc"
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 4)
    s.bind(addr)
    ack = ctx.socket(zmq.PUSH)
    ack.bind(ack_addr)
    p = mp.get_context("spawn").Process(target=_zmq_producer, args=(addr, ack_addr, n, shape, pingpong))
    p.start()
    lat, bad, t_start = [], 0, None
    try:
        for _ in range(n):
            if not s.poll(60000):
                raise RuntimeError("zmq producer stalled")
            hdr, buf = s.recv_multipart(copy=False)
            h = json.loads(bytes(hdr))
            view = np.frombuffer(buf, np.uint8).reshape(shape)
            bad += _fid(view) != h["seq"]
            t1 = time.perf_counter()
            t_start = t_start or h["t0"]
            lat.append((t1 - h["t0"]) * 1000)
            if pingpong:
                ack.send(b"")
        elapsed = time.perf_counter() - t_start
        p.join(30)
    finally:
        if p.is_alive():
            p.kill()
        s.close(0)
        ack.close(0)
        ctx.term()
        import shutil
        shutil.rmtree(d, ignore_errors=True)
    return lat, n / elapsed, bad


# --- multiprocessing.Queue --------------------------------------------------------------------

def _queue_producer(q, ack, n, shape, pingpong):
    src = [_frame(shape, i) for i in range(4)]
    for i in range(n):
        f = src[i % 4].copy()  # a fresh frame, as from a decoder (the queue pickles it later)
        f[0, :8, 0] = np.frombuffer(np.int64(i).tobytes(), np.uint8)
        t0 = time.perf_counter()
        q.put((i, t0, f))
        if pingpong:
            ack.get()


def bench_queue(n: int, shape, pingpong: bool):
    ctx = mp.get_context("spawn")
    q, ack = ctx.Queue(maxsize=4), ctx.Queue()
    p = ctx.Process(target=_queue_producer, args=(q, ack, n, shape, pingpong))
    p.start()
    lat, bad, t_start = [], 0, None
    try:
        for _ in range(n):
            i, t0, f = q.get(timeout=60)
            bad += _fid(f) != i
            t1 = time.perf_counter()
            t_start = t_start or t0
            lat.append((t1 - t0) * 1000)
            if pingpong:
                ack.put(1)
        elapsed = time.perf_counter() - t_start
        p.join(30)
    finally:
        if p.is_alive():
            p.kill()
    return lat, n / elapsed, bad


def bench_ring_handoff(n: int, shape, pingpong: bool):
    """The ring without the copy: what crosses when capture decodes straight into the slot."""
    return bench_ring(n, shape, pingpong, copy=False)


BENCHES = {"ring": bench_ring, "ring_handoff": bench_ring_handoff, "zmq": bench_zmq, "mp_queue": bench_queue}


def run(frames: int = 200, shape=(1080, 1920, 3), which=tuple(BENCHES)) -> dict:
    results = {}
    for name in which:
        fn = BENCHES[name]
        lat, _, bad1 = fn(frames, shape, pingpong=True)
        _, fps, bad2 = fn(frames, shape, pingpong=False)
        lat = lat[min(10, len(lat) // 10):]  # drop warm-up (page faults of fresh buffers)
        results[name] = {"ms_p50": round(statistics.median(lat), 3),
                         "ms_p95": round(float(np.percentile(lat, 95)), 3),
                         "fps": round(fps, 1), "bad_frames": bad1 + bad2}
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--only", nargs="*", choices=list(BENCHES), default=list(BENCHES))
    a = ap.parse_args(argv)
    shape = (a.height, a.width, 3)
    res = run(a.frames, shape, a.only)
    print(f"transport of one {a.width}x{a.height} BGR frame ({shape[0] * shape[1] * 3 / 1e6:.1f} MB), "
          f"{a.frames} frames, {os.cpu_count()} CPUs")
    print(f"{'transport':<13} {'latency p50 ms':>15} {'p95 ms':>8} {'stream fps':>11} {'bad':>4}")
    for k, r in res.items():
        print(f"{k:<13} {r['ms_p50']:>15.3f} {r['ms_p95']:>8.3f} {r['fps']:>11.1f} {r['bad_frames']:>4}")
    print(json.dumps({"bench": "transport", "width": a.width, "height": a.height, "frames": a.frames,
                      "cpu_count": os.cpu_count(), "results": res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
