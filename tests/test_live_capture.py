"""Latest-frame capture in its three parts, each alone (a real shared-memory ring, real ZeroMQ
sockets, a real video), then together in-process: slot allocation, the source watchdog, the
publisher, and a finished live capture whose end-of-stream still leaves."""

from __future__ import annotations

import os
import time

import pytest

from conftest import VIDEO_360
from trackpipe.pipeline.runtime import cleanup
from trackpipe.pipeline.common.shared import Flag
from trackpipe.pipeline.stages.live.publisher import Publisher
from trackpipe.pipeline.stages.live.slots import SlotAllocator
from trackpipe.pipeline.stages.live.watchdog import SourceWatchdog
from trackpipe.pipeline.transport import bus as busmod
from trackpipe.pipeline.transport import messages as m
from trackpipe.pipeline.transport.bus import Bus
from trackpipe.pipeline.transport.ring import FrameRing

SHAPE = (8, 8, 3)


@pytest.fixture
def ring():
    r = FrameRing.create(cleanup.ring_name(cleanup.new_run_id()), 3, SHAPE)
    yield r
    r.close()
    r.unlink()


def _write(slots: SlotAllocator, ring: FrameRing):
    slot, dropped = slots.take()
    assert slot is not None
    ring.begin_write(slot)
    return slots.commit(slot, SHAPE, time.time(), time.monotonic()), dropped


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


# --- slots ------------------------------------------------------------------------------------

def test_slots_stage_publish_release(ring):
    slots = SlotAllocator(ring, reclaim_after_s=2.0)
    (meta, dropped_old), dropped = _write(slots, ring)
    assert meta.seq == 0 and not dropped and not dropped_old and slots.has_staged()
    # a newer frame replaces the staged one: a drop, and its slot is free again
    (meta2, dropped_old), _ = _write(slots, ring)
    assert dropped_old and meta2.seq == 1 and ring.is_free(meta.slot)
    pub = slots.take_staged()
    assert pub == meta2 and slots.in_flight == 1 and not slots.has_staged()
    ring.release(pub.slot, pub.seq)            # render is done with it
    slot, _ = slots.take()
    assert slot is not None and slots.in_flight == 0


def test_slots_overwrite_the_staged_frame_when_full_then_reclaim(ring):
    clock = Clock()
    slots = SlotAllocator(ring, reclaim_after_s=2.0, clock=clock)
    for _ in range(2):                          # two frames in flight (never released)
        _write(slots, ring)
        slots.take_staged()
    (staged, _), _ = _write(slots, ring)        # the third slot holds the staged frame
    slot, dropped = slots.take()                # full: the staged frame gives way
    assert slot == staged.slot and dropped and not slots.has_staged()
    slots.abort(slot)
    ring.release(staged.slot, staged.seq)
    ring.begin_write(slot)
    slots.commit(slot, SHAPE, 0.0, 0.0)
    slots.take_staged()                         # now all three are in flight
    assert slots.take() == (None, True)         # read and discard: never wait on the pipeline
    clock.t += 2.5                              # a reader died: its slots come back after reclaim_after_s
    slot, dropped = slots.take()
    assert slot is not None and not dropped and slots.in_flight == 2


def test_slots_release_and_restart_adoption(ring):
    slots = SlotAllocator(ring, reclaim_after_s=2.0)
    (meta, _), _ = _write(slots, ring)
    pub = slots.take_staged()
    slots.release(pub)                          # given up before it went out: its slot is free
    assert slots.in_flight == 0 and ring.is_free(pub.slot) and not slots.has_staged()
    (meta, _), _ = _write(slots, ring)
    slots.take_staged()
    assert meta.slot == pub.slot
    slots.release(pub)                          # an older frame of that slot: the newer one stays
    assert slots.in_flight == 1 and not ring.is_free(meta.slot)
    again = SlotAllocator(ring, reclaim_after_s=2.0, next_seq=meta.seq + 1)   # a restarted capture
    assert again.in_flight == 1 and again.next_seq == meta.seq + 1
    assert slots.discard_staged() is False


# --- watchdog ---------------------------------------------------------------------------------

def test_watchdog_lost_once_restored_once_and_backoff():
    clock = Clock()
    wd = SourceWatchdog(timeout_s=5.0, backoff_initial_s=0.5, backoff_max_s=2.0, clock=clock)
    wd.opened()
    assert wd.up and wd.check() is None
    clock.t += 5.1
    assert wd.check() == "no frame for 5s"
    assert wd.check() is None and wd.lose() is False       # noticed twice: reported once
    assert [wd.next_backoff() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert wd.frame() is True and wd.frame() is False        # restored once
    assert wd.next_backoff() == 0.5 and (wd.lost_count, wd.reconnects) == (1, 1)
    wd.opening_started()
    clock.t += 60
    assert wd.check() is None                                # an open in progress is not a stall
    assert wd.lose() is True and not wd.up


# --- publisher --------------------------------------------------------------------------------

def test_publisher_answers_wants_and_sends_events_in_order(ring, tmp_path):
    bus = Bus(str(tmp_path))
    try:
        out = bus.push("frames", hwm=8, bind=True)
        inp = bus.pull("frames", hwm=8, bind=False)
        slots = SlotAllocator(ring, reclaim_after_s=2.0)
        pub = Publisher(out, slots, "test://src")
        _write(slots, ring)
        assert pub.publish() is None                        # nobody asked
        pub.wanted(1)
        pub.wanted(1)                                       # a resent want does not add up
        assert pub.wants == 1
        pub.queue_event(m.SourceEvent("source_restored", 1.0, 0, "test://src"))
        deadline = time.monotonic() + 5
        while pub.pending_events and time.monotonic() < deadline:  # waits here until a reader connects
            pub.flush_events()
            time.sleep(0.01)
        assert pub.pending_events == 0
        meta = pub.publish()
        assert meta is not None and pub.published == 1 and pub.wants == 0
        got = [busmod.recv(inp, 2000) for _ in range(2)]
        assert isinstance(got[0], m.SourceEvent) and got[1] == m.Frame(meta)
        pub.end_of_stream(2, Flag())
        assert [busmod.recv(inp, 2000) for _ in range(2)] == [m.EndOfStream(1)] * 2
    finally:
        bus.close()


def test_publisher_sends_skipped_frames_unasked_and_holds_one_to_detect(ring, tmp_path):
    """The gate's skipped frames need no want; a frame to detect waits for one, and a newer
    frame that takes its place is detected instead; a loss drops the held frame."""
    bus = Bus(str(tmp_path))
    try:
        out = bus.push("frames", hwm=8, bind=True)
        inp = bus.pull("frames", hwm=8, bind=False)
        slots = SlotAllocator(ring, reclaim_after_s=2.0)
        decide = {0: False, 1: True, 2: False, 3: False}    # seq -> the gate's call
        drops = []
        pub = Publisher(out, slots, "test://src", make=lambda meta: m.Frame(meta, decide[meta.seq]),
                        on_drop=lambda: drops.append(1))
        deadline = time.monotonic() + 5
        (first, _), _ = _write(slots, ring)
        while pub.publish() is None and time.monotonic() < deadline:   # until a reader connects
            time.sleep(0.01)
        assert pub.published == 1 and busmod.recv(inp, 2000) == m.Frame(first, False)
        (held, _), _ = _write(slots, ring)
        assert pub.publish() is None and pub.held.meta == held          # to detect: waits for a want
        (newer, _), _ = _write(slots, ring)
        assert pub.publish() is None and drops == [1] and ring.is_free(held.slot)
        assert pub.held == m.Frame(newer, True)             # skipped by the gate, detected in its place
        pub.wanted(1)
        assert pub.publish() == newer and pub.wants == 0 and busmod.recv(inp, 2000) == m.Frame(newer, True)
        (lost, _), _ = _write(slots, ring)
        decide[lost.seq] = True
        assert pub.publish() is None and pub.held is not None
        pub.queue_event(m.SourceEvent("source_lost", 1.0, lost.seq, "test://src", "read failed"))
        pub.flush_events()                                  # made before the loss: never sent after it
        assert pub.held is None and drops == [1, 1] and ring.is_free(lost.slot)
        assert isinstance(busmod.recv(inp, 2000), m.SourceEvent)
    finally:
        bus.close()


# --- together -----------------------------------------------------------------------------------

class _Stage:
    """The attributes of the capture process that `LiveCapture` uses (a unit test of the code
    around the real ring, source and sockets)."""

    def __init__(self, ring, source, cfg, out, ctl, max_frames):
        from trackpipe.pipeline.profiling.stats import StageStats
        self.ring, self.source, self.source_cfg, self.out, self.ctl = ring, source, cfg, out, ctl
        self.stats = StageStats("capture")
        self.shape = (360, 640, 3)
        self.reclaim_after_s, self.seq, self.uri = 2.0, 0, str(VIDEO_360)
        self.consumers, self.max_frames = 1, max_frames
        self.rc = type("RC", (), {"stop": Flag()})()
        self.index, self.camera = 0, "cam0"
        self.outs = 0

    def stopping(self):
        return self.rc.stop.is_set()

    def tick(self):
        pass

    def count_out(self):
        self.outs += 1


@pytest.mark.timeout(60)
def test_live_capture_ends_with_end_of_stream_and_leaves_the_stage_running(tmp_path):
    """A finished latest-mode capture sends its end-of-stream and does not mark the stage as
    stopping (it used to, through the stage's SIGTERM flag, so that the socket closed with
    linger 0 and the message could be lost)."""
    from trackpipe.pipeline.config import SourceConfig
    from trackpipe.pipeline.media.sources import make_source
    from trackpipe.pipeline.stages.capture import fit_into
    from trackpipe.pipeline.stages.live.capture import LiveCapture
    ring = FrameRing.create(cleanup.ring_name(cleanup.new_run_id()), 4, (360, 640, 3))
    bus = Bus(str(tmp_path))
    try:
        out = bus.push("frames", hwm=64, bind=True)
        inp = bus.pull("frames", hwm=64, bind=False)
        ctl = bus.pull("ctl")
        want = bus.push("ctl", hwm=64)
        cfg = SourceConfig(realtime=True, fps=200.0)
        src = make_source(str(VIDEO_360), cfg)
        stage = _Stage(ring, src, cfg, out, ctl, max_frames=5)
        live = LiveCapture(stage, fit_into)
        frames = []

        import threading

        def infer():  # ask, take, release: what infer + render do
            while True:
                busmod.send(want, m.Want())
                msg = busmod.recv(inp, 5000)
                if msg is None or isinstance(msg, m.EndOfStream):
                    frames.append(msg)
                    return
                if isinstance(msg, m.Frame):
                    frames.append(msg)
                    ring.release(msg.meta.slot, msg.meta.seq)

        t = threading.Thread(target=infer)
        t.start()
        assert live.run() == 5
        t.join(10)
        src.close()
        assert [f.meta.seq for f in frames[:-1]] == sorted(f.meta.seq for f in frames[:-1]) and len(frames) == 6
        assert frames[-1] == m.EndOfStream(5)
        assert not stage.stopping() and stage.outs == 5 and not live.thread_stuck
        assert stage.stats.gauges["frames_grabbed"] >= 5 and stage.stats.gauges["source_up"] == 1
    finally:
        bus.close()
        ring.close()
        ring.unlink()
    assert not os.path.exists(f"/dev/shm/{ring.name}")
