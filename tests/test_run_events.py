"""Zones, lines and event delivery in a real run: run_tracker.py as a subprocess with the real
Yolo-Fastest detector on the real traffic video, a counting line across the road (the one of
benchmarks/bench_lines.py), a real mosquitto broker and a real paho subscriber."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import pytest
from conftest import ASSETS, COCO_NAMES, ROOT, YF_CFG, YF_WEIGHTS
from mqtt_broker import MosquittoBroker, Subscriber, free_port, mosquitto_available

pytestmark = pytest.mark.timeout(150)

TRAFFIC = ASSETS / "video" / "traffic-cars.mp4"     # 1280x720, 335 frames, 29.97 fps
MODEL = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES), "--size", "320",
         "--backend", "onnx", "--precision", "fp32"]
LINE = """lines:
  - name: road
    points: [[150, 430], [1080, 430]]
    directions: [away, toward]
    classes: [car, motorbike, bus, truck]
zones:
  - name: far_lane
    points: [[0.45, 0.2], [0.75, 0.2], [0.75, 0.55], [0.45, 0.55]]
"""


def _run(tmp_path, *args, config: str = LINE, timeout: float = 130) -> subprocess.CompletedProcess:
    (tmp_path / "cfg.yaml").write_text(config)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / "run_tracker.py"), "--source", str(TRAFFIC), *MODEL,
                           "--config", str(tmp_path / "cfg.yaml"), "--headless", *args], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=timeout)


def _events(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_line_across_the_road_counts_each_car_once(tmp_path):
    r = _run(tmp_path, "--max-frames", "150", "--events", str(tmp_path / "e.jsonl"), "--mot", str(tmp_path / "t.txt"),
             "--profile", str(tmp_path / "p.json"), "--output", str(tmp_path / "o.mp4"))
    assert r.returncode == 0, r.stderr
    ev = _events(tmp_path / "e.jsonl")
    cross = [e for e in ev if e["event"] == "line_cross"]
    assert len(cross) >= 2                                    # cars cross at ~frames 57, 57, 98, 129, 131
    per_id = collections.Counter(e["track_id"] for e in cross)
    assert max(per_id.values()) == 1                          # no id counted twice
    assert all(e["line"] == "road" and e["class"] == "car" and e["camera"] == "cam0" for e in cross)
    assert all(e["direction"] == "toward" for e in cross)    # every car drives towards the camera
    assert [e["counts"]["toward"] for e in cross] == list(range(1, len(cross) + 1))
    started = {e["track_id"] for e in ev if e["event"] == "track_started"}
    assert set(per_id) <= started
    # every zone_enter has its zone_exit by the end of the stream
    zin = collections.Counter(e["track_id"] for e in ev if e["event"] == "zone_enter")
    zout = collections.Counter(e["track_id"] for e in ev if e["event"] == "zone_exit")
    assert zin == zout
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["frames_out"] == 150
    counts = prof["stages"]["track"]["counts"]
    assert counts["camera"] == "cam0" and counts["lines"]["road"]["car"] == {"away": 0, "toward": len(cross)}
    assert counts["zones"]["far_lane"]["car"]["occupancy"] == 0


def test_mqtt_subscriber_receives_the_events(tmp_path):
    ok, reason = mosquitto_available()
    if not ok:
        pytest.skip(reason)
    with MosquittoBroker() as broker:
        sub = Subscriber(broker.port, ["trackpipe/#"])
        try:
            assert sub.wait_subscribed(30)
            r = _run(tmp_path, "--max-frames", "150", "--camera", "road", "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
                     "--events", str(tmp_path / "e.jsonl"), "--profile", str(tmp_path / "p.json"))
            assert r.returncode == 0, r.stderr
            written = _events(tmp_path / "e.jsonl")
            ids = {e["id"] for e in written if "id" in e}
            assert sub.wait_for(lambda m: len([x for x in m if x.topic == "trackpipe/road/events"]) >= len(written), 20)
            got = [m.json() for m in sub.snapshot("trackpipe/road/events")]
            # every event written to the file arrived, in order (zone/line events carry an id)
            assert [e["event"] for e in got] == [e["event"] for e in written]
            assert {e["id"] for e in got if "id" in e} == ids and any(e["event"] == "line_cross" for e in got)
            # retained counts per line and class, and the availability topic
            cars = sub.last("trackpipe/road/road/car")
            n_cross = sum(e["event"] == "line_cross" for e in written)
            assert cars is not None and cars.json() == {"away": 0, "toward": n_cross}
            assert [m.payload for m in sub.snapshot("trackpipe/available")][-1] == b"offline"
            stats = json.loads((tmp_path / "p.json").read_text())["stages"]["sink"]["delivery"]
            assert stats[0]["sent"] == len(written) and stats[0]["dropped"] == 0
        finally:
            sub.close()


def test_mqtt_snapshots_a_subscriber_receives_jpegs_of_new_tracks(tmp_path):
    """``mqtt.snapshots: true``: render encodes the JPEG of each new car, the sink's MQTT delivery
    publishes it on ``trackpipe/<camera>/snapshot`` (retained); no snapshots folder needed."""
    import cv2
    import numpy as np
    ok, reason = mosquitto_available()
    if not ok:
        pytest.skip(reason)
    with MosquittoBroker() as broker:
        sub = Subscriber(broker.port, ["trackpipe/+/snapshot"])
        try:
            assert sub.wait_subscribed(30)
            config = LINE + f"mqtt:\n  url: mqtt://127.0.0.1:{broker.port}\n  snapshots: true\n" \
                "output:\n  snapshot_classes: [car]\n"
            r = _run(tmp_path, "--max-frames", "60", "--camera", "road", "--profile", str(tmp_path / "p.json"),
                     config=config)
            assert r.returncode == 0, r.stderr
            render = json.loads((tmp_path / "p.json").read_text())["stages"]["render"]
            assert render["snapshots_sent"] >= 1 and render["snapshots_dropped"] == 0
            assert sub.wait_for(lambda m: len(m) >= 1, 20)
            for msg in sub.snapshot("trackpipe/road/snapshot"):
                img = cv2.imdecode(np.frombuffer(msg.payload, np.uint8), cv2.IMREAD_COLOR)
                assert img is not None and img.shape == (720, 1280, 3)
            assert not list(tmp_path.glob("**/*.jpg"))     # MQTT only: no files
        finally:
            sub.close()


def test_unreachable_broker_the_run_completes_every_frame(tmp_path):
    port = free_port()   # nothing listens there
    r = _run(tmp_path, "--max-frames", "90", "--mqtt", f"mqtt://127.0.0.1:{port}", "--webhook",
             f"http://127.0.0.1:{port}/hook", "--events", str(tmp_path / "e.jsonl"), "--mot", str(tmp_path / "t.txt"),
             "--profile", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["frames_in"] == prof["frames_out"] == 90
    delivery = prof["stages"]["sink"]["delivery"]
    assert len(delivery) == 2 and all(d["sent"] == 0 and d["connected"] is False for d in delivery)
    assert all(d["offered"] == prof["stages"]["sink"]["events"] for d in delivery)
    assert "Traceback" not in r.stderr


BAD = {
    "zone of 2 points": ("zones:\n  - name: gate\n    points: [[0, 0], [10, 10]]\n",
                         "error: {cfg}: zones[0].points: a zone needs at least 3 points, got 2"),
    "unknown key": ("lines:\n  - name: road\n    pionts: [[0, 0], [10, 10]]\n",
                    "error: {cfg}: lines[0]: unknown key 'pionts' (allowed: name, points"),
    "unknown class": ("lines:\n  - name: road\n    points: [[0, 0], [10, 10]]\n    classes: [unicorn]\n",
                      "error: lines[0].classes: unknown class 'unicorn'"),
    "bad mqtt url": ("mqtt: http://broker\n", "error: {cfg}: mqtt.url: expected mqtt://HOST[:PORT]"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(BAD))
def test_bad_zone_line_or_delivery_config_one_line_exit_2(tmp_path, case):
    config, expected = BAD[case]
    r = _run(tmp_path, "--events", str(tmp_path / "e.jsonl"), config=config, timeout=50)
    assert r.returncode == 2
    expected = expected.replace("{cfg}", str(tmp_path / "cfg.yaml"))    # a key from the file: the file first
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(expected), r.stderr
    assert not (tmp_path / "e.jsonl").exists()
