"""MQTT delivery against a real mosquitto broker (started by tests/mqtt_broker.py on a free
127.0.0.1 port) and a real paho subscriber: events, retained counts, availability and last
will, a broker killed and restarted mid-run, an unreachable broker, credentials."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ASSETS, COCO_NAMES, YF_CFG, YF_WEIGHTS
from mqtt_broker import MosquittoBroker, Subscriber, free_port, mosquitto_available, wait_until
from procs import metrics, wait_for
from trackpipe.models.types import Tracks
from trackpipe.pipeline.events import Line, ZoneLineCounter
from trackpipe.pipeline.events.config import EventConfigError, MqttConfig
from trackpipe.pipeline.events.mqtt import MqttPublisher

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def broker(monkeypatch, tmp_path):
    ok, reason = mosquitto_available()
    if not ok:
        pytest.skip(reason)
    monkeypatch.setenv("TRACKPIPE_CACHE", str(tmp_path))   # the default outbox folder: this test's own
    b = MosquittoBroker().start()
    yield b
    b.close()


def crossing_events(n_tracks, start_id=1):
    """Real events: ``n_tracks`` cars crossing a line downwards, from a ZoneLineCounter."""
    c = ZoneLineCounter("road", lines=[Line(name="l1", points=[[0, 100], [400, 100]])],
                        names=["person", "bicycle", "car"])
    out = []
    for f in range(12):
        y = 60 + 10 * f
        ids = np.arange(start_id, start_id + n_tracks)
        x = (ids % 180) * 2.0
        xyxy = np.stack([x, np.full(len(ids), y - 40.0), x + 20, np.full(len(ids), float(y))], 1)
        out += c.update(Tracks(xyxy, np.full(len(ids), 0.9), np.full(len(ids), 2), track_id=ids), f * 0.1, seq=f)
    return c, out


def event_msgs(sub, topic="trackpipe/road/events"):
    return [m.json() for m in sub.snapshot(topic)]


def test_events_counts_available_and_clean_close(broker):
    sub = Subscriber(broker.port)
    assert sub.wait_subscribed(30)
    pub = MqttPublisher(MqttConfig(url=broker.url)).start()
    counter, evs = crossing_events(30)
    assert len(evs) == 30
    for e in evs:
        assert pub.offer(e)
    assert sub.wait_for(lambda m: len(event_msgs(sub)) == 30, 60)
    got = event_msgs(sub)
    assert [g["id"] for g in got] == [e.id for e in evs]                    # every event, in order
    assert got[-1] == json.loads(evs[-1].to_json())
    assert sub.wait_for(lambda m: sub.last("trackpipe/road/l1/car") is not None and
                        sub.last("trackpipe/road/l1/car").json() == {"in": 0, "out": 30}, 30)
    assert sub.last("trackpipe/available").payload == b"online"
    jpeg = b"\xff\xd8\xff\xe0fake-but-bytes\xff\xd9"
    pub.offer_snapshot("road", jpeg)
    assert sub.wait_for(lambda m: sub.last("trackpipe/road/snapshot") is not None, 30)
    assert sub.last("trackpipe/road/snapshot").payload == jpeg
    st = pub.close(5)
    assert (st.offered, st.sent, st.dropped, st.failed) == (30, 30, 0, 0)
    assert sub.wait_for(lambda m: sub.last("trackpipe/available").payload == b"offline", 30)
    sub.close()
    # a late subscriber gets the retained state: counts and "offline"
    late = Subscriber(broker.port)
    assert late.wait_for(lambda m: late.last("trackpipe/road/l1/car") is not None
                         and late.last("trackpipe/available") is not None, 30)
    assert late.last("trackpipe/road/l1/car").retain and late.last("trackpipe/road/l1/car").json()["out"] == 30
    assert late.last("trackpipe/available").payload == b"offline"
    late.close()
    assert counter.counts()["lines"]["l1"]["car"] == {"in": 0, "out": 30}


def test_broker_killed_and_restarted(broker, caplog):
    caplog.set_level(logging.INFO, logger="trackpipe.pipeline.events")
    sub = Subscriber(broker.port)
    assert sub.wait_subscribed(30)
    pub = MqttPublisher(MqttConfig(url=broker.url, queue_size=20, reconnect_min_s=0.1,   # memory only
                                   reconnect_max_s=0.5, outbox=False)).start()
    _, before = crossing_events(10, start_id=1)
    _, during = crossing_events(200, start_id=1000)
    _, after = crossing_events(10, start_id=5000)
    for e in before:
        pub.offer(e)
    assert sub.wait_for(lambda m: len(event_msgs(sub)) == 10, 60)

    broker.kill()                                    # SIGKILL: no goodbye to anyone
    assert wait_until(lambda: not pub.connected, 30)
    worst = 0.0
    for e in during:                                 # the pipeline keeps producing
        t0 = time.perf_counter()
        pub.offer(e)
        worst = max(worst, time.perf_counter() - t0)
    assert worst < 0.5, f"offer() blocked {worst:.3f}s while the broker was down"
    assert wait_until(lambda: pub.stats().failed >= 2, 60)   # reconnect attempts fail while it is down
    st = pub.stats()
    assert st.dropped >= 200 - 20 - 1 and st.queued <= 20 and not st.connected

    broker.start()                                   # same port
    assert wait_until(lambda: pub.connected, 60)
    assert sub.wait_for(lambda m: sub.connects >= 2, 60)
    assert sub.wait_subscribed(30)
    time.sleep(0.5)                                  # let the subscriber's SUBSCRIBE settle
    for e in after:
        pub.offer(e)
    ids_after = {e.id for e in after}
    assert sub.wait_for(lambda m: ids_after <= {g["id"] for g in event_msgs(sub)}, 60)
    # the newest of the events queued during the outage went out after the reconnection
    got_during = [g["track_id"] for g in event_msgs(sub) if g["track_id"] >= 1000 and g["track_id"] < 5000]
    assert len(got_during) <= 21 and got_during == sorted(got_during)
    # retained state was published again to the restarted (empty) broker
    late = Subscriber(broker.port)
    assert late.wait_for(lambda m: late.last("trackpipe/available") is not None
                         and late.last("trackpipe/road/l1/car") is not None, 30)
    assert late.last("trackpipe/available").payload == b"online"
    assert late.last("trackpipe/road/l1/car").json() == {"in": 0, "out": 10}   # newest counts, from `after`
    late.close()
    st = pub.close(5)
    assert st.sent >= 20 and st.dropped >= 179 and st.offered == 220
    msgs = [r.getMessage() for r in caplog.records]
    assert any("connection lost" in m for m in msgs) and any("reconnected after" in m for m in msgs)
    sub.close()


PUBLISHER_SCRIPT = textwrap.dedent("""
    import sys, time
    from trackpipe.pipeline.events.config import MqttConfig
    from trackpipe.pipeline.events.mqtt import MqttPublisher
    pub = MqttPublisher(MqttConfig(url=sys.argv[1], keepalive_s=5)).start()
    pub.offer({"event": "hello", "camera": "road"})
    while pub.stats().sent < 1:
        time.sleep(0.02)
    print("READY", flush=True)
    time.sleep(600)
""")


def test_last_will_when_the_publisher_dies(broker, tmp_path):
    """The broker sends the will only on an unclean disconnect: SIGKILL the publishing process."""
    sub = Subscriber(broker.port, ["trackpipe/available"])
    assert sub.wait_subscribed(30)
    script = tmp_path / "pub.py"
    script.write_text(PUBLISHER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), broker.url], stdout=subprocess.PIPE, text=True,
                            cwd=str(ROOT), start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        assert sub.wait_for(lambda m: sub.last("trackpipe/available") is not None
                            and sub.last("trackpipe/available").payload == b"online", 30)
        n = len(sub.snapshot())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert sub.wait_for(lambda m: len(m) > n and m[-1].payload == b"offline", 30), sub.snapshot()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        sub.close()


def test_unreachable_broker_logs_once_per_backoff_step(caplog):
    caplog.set_level(logging.WARNING, logger="trackpipe.pipeline.events")
    cfg = MqttConfig(url=f"mqtt://someone:hunter2@127.0.0.1:{free_port()}", queue_size=10,
                     reconnect_min_s=0.1, reconnect_max_s=0.4, outbox=False)
    pub = MqttPublisher(cfg).start()
    _, evs = crossing_events(50)
    worst = 0.0
    for e in evs:
        t0 = time.perf_counter()
        pub.offer(e)
        worst = max(worst, time.perf_counter() - t0)
    assert worst < 0.5
    t0 = time.monotonic()
    assert wait_until(lambda: pub.stats().failed >= 4, 60)
    elapsed = time.monotonic() - t0
    st = pub.close(1.0)
    lines = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert 4 <= len(lines) <= 2 + (elapsed + 1.0) / 0.08       # per attempt, never per event
    assert "Connection refused" in lines[0] and "attempt 1;" in lines[0]
    assert st.dropped == 50 and st.sent == 0 and not st.connected
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(pub) + repr(cfg) + str(st)
    assert "hunter2" not in text and "someone" not in text


def test_credentials_from_the_environment(monkeypatch, caplog, tmp_path):
    ok, reason = mosquitto_available()
    if not ok:
        pytest.skip(reason)
    caplog.set_level(logging.WARNING, logger="trackpipe.pipeline.events")
    monkeypatch.setenv("TRACKPIPE_CACHE", str(tmp_path))
    with MosquittoBroker(users={"cam": "s3cret-pw"}) as b:
        monkeypatch.setenv("TRACKPIPE_MQTT_USERNAME", "cam")
        monkeypatch.setenv("TRACKPIPE_MQTT_PASSWORD", "wrong-pw")
        bad = MqttPublisher(MqttConfig(url=b.url, reconnect_min_s=0.1, reconnect_max_s=0.2)).start()
        assert wait_until(lambda: any("refused" in r.getMessage() for r in caplog.records), 30)
        bad.close(1)
        monkeypatch.setenv("TRACKPIPE_MQTT_PASSWORD", "s3cret-pw")
        cfg = MqttConfig(url=b.url)
        assert cfg.username == "cam"
        good = MqttPublisher(cfg).start()
        good.offer({"event": "hello", "camera": "road"})
        assert wait_until(lambda: good.stats().sent == 1, 30)
        good.close(2)
        text = "\n".join(r.getMessage() for r in caplog.records) + repr(cfg) + repr(good)
        assert "s3cret-pw" not in text and "wrong-pw" not in text


def test_config_errors():
    with pytest.raises(EventConfigError, match="mqtt.url: expected mqtt://"):
        MqttConfig.from_dict({"url": "http://broker:1883"})
    with pytest.raises(EventConfigError, match="unknown key 'hots'"):
        MqttConfig.from_dict({"url": "mqtt://b", "hots": 1})
    c = MqttConfig.from_dict("mqtts://u:p%40ss@broker.local")
    assert (c.host, c.port, c.tls, c.username, c.password) == ("broker.local", 8883, True, "u", "p@ss")
    assert "p@ss" not in repr(c) and c.safe_url == "mqtts://broker.local:8883"


# --- the outbox: a broker that is down ------------------------------------------------------

@pytest.fixture
def broker_with_listener():
    """A broker with persistence and a subscriber whose session (clean_session=False) it keeps
    across stop()/start(): what is published while the subscriber reconnects still reaches it."""
    ok, reason = mosquitto_available()
    if not ok:
        pytest.skip(reason)
    b = MosquittoBroker(persistence=True).start()
    sub = Subscriber(b.port, ["trackpipe/#"], client_id=f"outbox-listener-{os.getpid()}", clean_session=False)
    try:
        assert sub.wait_subscribed(30)
        yield b, sub
    finally:
        sub.close()
        b.close()


def test_broker_down_at_start_every_event_arrives_in_order(broker_with_listener, tmp_path):
    broker, sub = broker_with_listener
    broker.stop()                                    # down before the publisher starts
    cfg = MqttConfig(url=broker.url, queue_size=20, reconnect_min_s=0.1, reconnect_max_s=0.5,
                     outbox={"dir": str(tmp_path)})
    pub = MqttPublisher(cfg).start()
    _, evs = crossing_events(200)
    worst = 0.0
    for i in range(0, 200, 10):                      # events keep coming while it is down: 10x the
        worst = max(worst, *(_timed_offer(pub, e) for e in evs[i:i + 10]))   # memory queue, kept on disk
        assert wait_until(lambda: pub.stats().queued == 0, 30), pub.stats()
    assert worst < 0.5, f"offer() blocked {worst:.3f}s while the broker was down"
    assert wait_until(lambda: pub.stats().failed >= 3 and pub.stats().pending == 200, 60), pub.stats()
    assert pub.stats().sent == 0 and pub.stats().dropped == 0
    broker.start()                                   # back: the outbox goes first, in order
    assert sub.wait_for(lambda m: len(event_msgs(sub)) >= 200, 60), len(event_msgs(sub))
    assert [g["id"] for g in event_msgs(sub)] == [e.id for e in evs]
    assert wait_until(lambda: pub.stats().sent == 200, 30)
    st = pub.close(5)
    assert (st.offered, st.sent, st.dropped, st.pending) == (200, 200, 0, 0) and not os.path.exists(st.outbox)

    # down at the end of a run: what is left waits on disk for the next run
    broker.stop()
    pub = MqttPublisher(cfg).start()
    _, late = crossing_events(20, start_id=3000)
    for e in late:
        pub.offer(e)
    assert wait_until(lambda: pub.stats().failed >= 1, 60)
    st = pub.close(1)
    assert (st.offered, st.sent, st.dropped, st.pending) == (20, 0, 0, 20) and os.path.exists(st.outbox)
    broker.start()
    nxt = MqttPublisher(cfg).start()                 # the next run
    assert sub.wait_for(lambda m: len(event_msgs(sub)) >= 220, 60)
    assert [g["id"] for g in event_msgs(sub)][200:] == [e.id for e in late]
    st = nxt.close(5)
    assert (st.restored, st.sent, st.pending) == (20, 20, 0)


def _timed_offer(pub, e) -> float:
    t0 = time.perf_counter()
    pub.offer(e)
    return time.perf_counter() - t0


TRAFFIC = ASSETS / "video" / "traffic-cars.mp4"
MODEL = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES), "--size", "320",
         "--backend", "onnx", "--precision", "fp32"]
ROAD = """lines:
  - name: road
    points: [[150, 430], [1080, 430]]
    directions: [away, toward]
"""


def live_run(tmp_path, broker, duration: float, down_until_events: int) -> tuple:
    """``run_tracker.py --realtime --loop --duration`` on the traffic video with the broker down
    until the run has written ``down_until_events`` events, failed to connect twice and shows
    them pending in its metrics; returns (return code, stderr, seconds the broker was down while
    the run delivered, the events file's events)."""
    cfg = tmp_path / "live.yaml"
    cfg.write_text(ROAD + f"mqtt:\n  url: {broker.url}\n  reconnect_min_s: 0.2\n  reconnect_max_s: 0.5\n"
                   f"  outbox: {{dir: {tmp_path / 'outbox'}}}\n")
    events, err = tmp_path / "live.jsonl", tmp_path / "live.err"
    port = free_port()
    pending = f'trackpipe_delivery_pending{{target="mqtt {broker.url}"}}'
    broker.stop()
    with open(err, "w") as f:
        proc = subprocess.Popen([sys.executable, str(ROOT / "run_tracker.py"), "--source", str(TRAFFIC), *MODEL,
                                 "--realtime", "--loop", "--duration", str(duration), "--headless", "--camera", "road",
                                 "--config", str(cfg), "--events", str(events),
                                 "--profile", str(tmp_path / "live.json"), "--metrics-port", str(port)],
                                cwd=str(ROOT), env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=f, stderr=f,
                                start_new_session=True)
    try:
        wait_for(lambda: "ready in" in err.read_text() or proc.poll() is not None, 120, "the run to start")
        t_ready = time.monotonic()
        wait_for(lambda: proc.poll() is not None or (
            events.exists() and len(events.read_text().splitlines()) >= down_until_events
            and err.read_text().count("cannot connect") >= 2
            and metrics(port).get(pending, 0) >= down_until_events), 120, "events pending while the broker is down")
        down_s = time.monotonic() - t_ready
        assert proc.poll() is None, "the run ended before the broker came back: " + err.read_text()[-2000:]
        broker.start()
        proc.wait(150)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode, err.read_text(), down_s, [json.loads(ln) for ln in events.read_text().splitlines()]


@pytest.mark.timeout(300)
def test_live_run_with_the_broker_down_at_first_delivers_every_event_in_order(broker_with_listener, tmp_path):
    broker, sub = broker_with_listener
    rc, err, down_s, written = live_run(tmp_path, broker, duration=10, down_until_events=3)
    assert rc == 0, err[-3000:]
    assert sub.wait_for(lambda m: len(event_msgs(sub)) >= len(written), 30), (len(event_msgs(sub)), len(written))
    def key(e):
        return e["event"], e.get("track_id"), e.get("seq"), e.get("id")
    assert [key(g) for g in event_msgs(sub)] == [key(e) for e in written]          # every event, in order
    delivery = json.loads((tmp_path / "live.json").read_text())["delivery"][f"mqtt {broker.url}"]
    assert (delivery["delivered"], delivery["pending"], delivery["dropped"]) == (len(written), 0, 0)
    assert err.strip().splitlines()[-1].endswith(f"events: mqtt {broker.url} delivered {len(written)}, "
                                                 "pending 0, dropped 0")
    assert down_s > 0.5 and not [f for f in os.listdir(tmp_path / "outbox") if f.endswith(".sqlite")]
