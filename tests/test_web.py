"""Live view: the hub, the config and the HTTP API over real HTTP on 127.0.0.1 (real frames of
aiguys_video.mp4 / aiguys_test.mp4; the browser tests are in test_web_browser.py)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from browser import Publisher, moving_box, read_frames
from conftest import VIDEO_360, VIDEO_1080
from trackpipe.pipeline.web import LiveViewHub, WebConfig, WebConfigError, WebServer, WebServerError
from trackpipe.pipeline.web.mjpeg import read_mjpeg_part
from trackpipe.pipeline.web.provider import EVENT, FRAME

from tests.procs import wait_for

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def frames360():
    return read_frames(VIDEO_360, 30)


def get(url, headers=None):
    """(status, headers, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=20) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def open_stream(port: int, path: str, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", path, headers=headers or {})
    return conn, conn.getresponse()


@pytest.fixture
def hub():
    return LiveViewHub(max_events=50)


@pytest.fixture
def server(hub, monkeypatch):
    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    srv = WebServer(hub, WebConfig(port=0, max_fps=15), names=["person", "car"]).start()
    yield srv
    srv.stop()


# --- the hub ---------------------------------------------------------------------------------

def test_hub_keeps_a_private_copy_of_the_newest_frame(frames360):
    hub = LiveViewHub()
    f = frames360[0].copy()
    hub.publish_frame("a", 5, 100.0, f, moving_box(10))
    f[:] = 0                                           # the caller reuses its buffer
    snap = hub.latest("a")
    assert snap.seq == 5 and snap.t == 100.0 and np.array_equal(snap.frame, frames360[0])
    hub.publish_frame("a", 6, 101.0, frames360[1])
    assert hub.latest("a").seq == 6 and hub.latest("b") is None
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        hub.publish_frame("a", 7, 0.0, np.zeros((4, 4), np.uint8))


def test_hub_camera_states(frames360):
    hub = LiveViewHub(stale_after_s=0.2)
    hub.publish_camera_state("gate", "connecting")
    hub.publish_camera_state("door", None)
    for i in range(3):
        hub.publish_frame("yard", i, time.time(), frames360[i])
    by = {c.name: c for c in hub.cameras()}
    assert [c.name for c in hub.cameras()] == ["gate", "door", "yard"]
    assert by["gate"].state == "connecting" and by["door"].state == "starting" and by["door"].seq == -1
    assert by["yard"].state == "live" and (by["yard"].width, by["yard"].height) == (640, 360)
    assert by["yard"].seq == 2 and by["yard"].fps > 0
    time.sleep(0.3)
    assert {c.name: c.state for c in hub.cameras()}["yard"] == "stale"
    assert by["yard"].since is None
    stale = {c.name: c for c in hub.cameras()}["yard"]
    assert stale.fps == 0.0 and stale.since == by["yard"].last_frame_t     # no frame since then
    hub.publish_stats({"cameras": {"door": {"state": "waiting", "frames_out": 0}}})   # the profile says so
    assert {c.name: c.state for c in hub.cameras()}["door"] == "waiting"
    hub.publish_camera_state("door", "lost", since=1796609160.0)   # never had a frame: waiting for it
    assert {c.name: (c.state, c.since) for c in hub.cameras()}["door"] == ("waiting", 1796609160.0)
    hub.publish_camera_state("yard", "lost", since=1796609167.5)
    lost = {c.name: c for c in hub.cameras()}["yard"]
    assert (lost.state, lost.since, lost.fps) == ("lost", 1796609167.5, 0.0)
    assert lost.to_dict()["since"] == 1796609167.5


def test_hub_restored_shows_for_a_while_then_live(frames360):
    hub = LiveViewHub(restored_s=0.3)
    hub.publish_frame("gate", 1, time.time(), frames360[0])
    hub.publish_camera_state("gate", "lost", since=100.0)
    hub.publish_camera_state("gate", "restored", since=200.0)
    hub.publish_frame("gate", 2, time.time(), frames360[1])
    cam = hub.cameras()[0]
    assert (cam.state, cam.since) == ("restored", 200.0)
    wait_for(lambda: hub.cameras()[0].state == "live", 10, "restored to turn live")
    assert hub.cameras()[0].since is None


def test_rate_window_falls_to_zero_when_nothing_flows():
    from trackpipe.pipeline.web.hub import RateWindow

    w = RateWindow(window_s=5.0)
    assert w.rates({"a": 0}, now=100.0) == {"a": None}
    assert w.rates({"a": 10}, now=101.0) == {"a": 10.0}
    for i in range(2, 6):
        w.rates({"a": 10 * i}, now=100.0 + i)
    assert w.rates({"a": 60}, now=106.0)["a"] == pytest.approx(10.0)
    # nothing more: the rate falls over the window, to 0 once the window holds no growth
    falling = [w.rates({"a": 60}, now=106.0 + i)["a"] for i in range(1, 7)]
    assert falling == sorted(falling, reverse=True) and 0 < falling[0] < 10 and falling[-1] == 0.0
    assert w.rates({"a": 5}, now=113.0)["a"] == 0.0           # a counter that went back: no negative rate


def test_hub_stats_get_fps_now_per_stage_and_camera():
    hub = LiveViewHub(rate_window_s=60.0)
    report = {"stages": {"infer": {"items": 0, "fps": 25.0}}, "cameras": {"door": {"frames_out": 0, "fps": 25.0}}}
    hub.publish_stats(report)
    assert hub.stats()["stages"]["infer"]["fps_now"] is None and report["stages"]["infer"] == {"items": 0, "fps": 25.0}
    time.sleep(0.2)
    hub.publish_stats({"stages": {"infer": {"items": 5, "fps": 25.0}}, "cameras": {"door": {"frames_out": 5}}})
    s = hub.stats()
    assert s["stages"]["infer"]["fps_now"] > 0 and s["cameras"]["door"]["fps_now"] > 0
    hub.publish_camera_state("door", None)
    assert hub.cameras()[0].fps == s["cameras"]["door"]["fps_now"]


def test_counts_of_one_or_several_cameras():
    from trackpipe.pipeline.stages.web import counts_by_camera

    one = {"camera": "cam0", "zones": {}, "lines": {"road": {}}}
    assert counts_by_camera(one) == [one]
    several = {"a": {"camera": "a", "zones": {"z": {}}, "lines": {}}, "b": {"zones": {}, "lines": {"l": {}}}}
    assert [c["camera"] for c in counts_by_camera(several)] == ["a", "b"]
    assert counts_by_camera(None) == []


def test_hub_event_ring_is_bounded_and_read_by_seq():
    hub = LiveViewHub(max_events=5)
    assert hub.events_since(0) == [] and hub.last_event_seq() == 0
    for i in range(12):
        assert hub.publish_event({"event": "track_started", "track_id": i}) == i + 1
    assert [e["event_seq"] for e in hub.events_since(0)] == [8, 9, 10, 11, 12]
    assert [e["track_id"] for e in hub.events_since(10)] == [10, 11]
    assert [e["event_seq"] for e in hub.events_since(7, limit=2)] == [8, 9]
    assert hub.events_since(12) == [] and hub.last_event_seq() == 12


def test_hub_publishing_from_many_threads_numbers_events_once():
    hub = LiveViewHub(max_events=10_000)
    ths = [threading.Thread(target=lambda: [hub.publish_event({"event": "x"}) for _ in range(500)]) for _ in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert [e["event_seq"] for e in hub.events_since(0, limit=10_000)] == list(range(1, 2001))


def test_hub_listeners_and_a_broken_one(frames360, caplog):
    hub = LiveViewHub()
    got = []
    unsub = hub.subscribe(lambda kind, cam: got.append((kind, cam)))
    hub.subscribe(lambda kind, cam: 1 / 0)
    hub.publish_frame("a", 1, 0.0, frames360[0])
    hub.publish_event({"event": "x"})
    unsub()
    hub.publish_event({"event": "y"})
    assert got == [(FRAME, "a"), (EVENT, None)]
    assert "listener failed" in caplog.text


def test_hub_metrics_from_a_registry_or_published_text():
    from prometheus_client import CollectorRegistry, Gauge
    reg = CollectorRegistry()
    Gauge("trackpipe_stage_fps", "items per second", ["stage"], registry=reg).labels("infer").set(12.5)
    assert b'trackpipe_stage_fps{stage="infer"} 12.5' in LiveViewHub(registry=reg).metrics()
    hub = LiveViewHub()
    hub.publish_metrics(b"trackpipe_x 1\n")
    assert hub.metrics() == b"trackpipe_x 1\n"


# --- configuration ---------------------------------------------------------------------------

def test_config_checks_and_token_from_env():
    env = {}
    with pytest.raises(WebConfigError, match="exposes the live view.*token"):
        WebConfig(host="0.0.0.0").resolved(env)
    with pytest.raises(WebConfigError, match=r"--http-port \(output.http_port\) must be 0..65535"):
        WebConfig(port=70000).resolved(env)
    with pytest.raises(WebConfigError, match="max_fps"):
        WebConfig(max_fps=0).resolved(env)
    with pytest.raises(WebConfigError, match="at least 8"):
        WebConfig(token="short").resolved(env)
    cfg = WebConfig(host="0.0.0.0").resolved({"TRACKPIPE_HTTP_TOKEN": TOKEN})
    assert cfg.token == TOKEN and TOKEN not in repr(cfg)
    assert WebConfig(host="::1").resolved(env).token is None


# --- the API ---------------------------------------------------------------------------------

def test_json_endpoints_page_and_metrics(server, hub, frames360):
    u = server.url
    hub.publish_frame("cam", 3, 123.0, frames360[0], moving_box(20))
    hub.publish_stats({"stages": {"infer": {"fps": 21.5, "ms_p50": 9.1, "drops": np.int64(2)}},
                       "pipeline_fps": np.float32(20.0)})
    hub.publish_counts({"camera": "cam", "zones": {}, "lines": {"road": {"car": {"in": 2, "out": 1}}}})
    st, h, body = get(u + "healthz")
    assert st == 200 and json.loads(body) == {"status": "ok"}
    st, h, body = get(u + "api/cameras")
    cam = json.loads(body)["cameras"][0]
    assert st == 200 and cam["name"] == "cam" and cam["seq"] == 3 and cam["width"] == 640 and cam["viewers"] == 0
    st, h, body = get(u + "api/stats")
    assert json.loads(body) == {"stages": {"infer": {"fps": 21.5, "ms_p50": 9.1, "drops": 2}}, "pipeline_fps": 20.0}
    assert json.loads(get(u + "api/counts")[2]) == {"cam": {"camera": "cam", "zones": {},
                                                            "lines": {"road": {"car": {"in": 2, "out": 1}}}}}
    st, h, body = get(u)
    assert st == 200 and h["Content-Type"].startswith("text/html") and b"static/app.js" in body
    st, h, body = get(u + "static/app.js")
    assert st == 200 and b"EventSource" in body and "javascript" in h["Content-Type"]
    assert get(u + "static/secrets.txt")[0] == 404
    for name in ("", "static/app.js", "static/style.css"):          # everything served by us: no CDN
        text = get(u + name)[2]
        assert not any(ref in text for ref in (b"http:", b"https:", b"src=\"//", b"href=\"//")), name
    st, h, body = get(u + "metrics")
    assert st == 200 and h["Content-Type"].startswith("text/plain") and b"trackpipe_web_viewers" in body


def test_latest_jpg_is_the_annotated_frame(server, hub, frames360):
    raw = frames360[0]
    hub.publish_frame("cam", 1, time.time(), raw, moving_box(100))
    st, h, body = get(server.url + "api/cameras/cam/latest.jpg")
    assert st == 200 and h["Content-Type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == raw.shape
    diff = np.abs(img.astype(np.int16) - raw.astype(np.int16)).sum(axis=2)
    # the box outline (x 100..220, y 40..300) is drawn; far from it the JPEG matches the frame
    assert diff[150:250, 98:103].mean() > 60 and diff[150:250, 400:500].mean() < 30
    # the same frame twice: one encode
    assert get(server.url + "api/cameras/cam/latest.jpg")[2] == body
    assert server.live.feeds["cam"].encodes == 1


def test_unknown_camera_is_404_and_no_frame_yet_503(server, hub):
    hub.publish_camera_state("gate", "connecting")
    for path in ("api/cameras/nope/latest.jpg", "api/cameras/nope/stream.mjpeg", "api/cameras/x%2Fy/latest.jpg"):
        assert get(server.url + path)[0] == 404, path
    st, h, _ = get(server.url + "api/cameras/gate/latest.jpg")
    assert st == 503 and h["Retry-After"] == "1"


@pytest.mark.parametrize("query", ["since=abc", "since=-1", "since=1.5", "since=", "limit=0", "since=1&limit=x"])
def test_malformed_event_query_is_400(server, query):
    st, _, body = get(server.url + "api/events?" + query)
    assert st == 400 and b"must be an integer" in body
    if "limit" not in query:                   # the stream takes no limit
        assert get(server.url + "api/events/stream?" + query)[0] == 400


def test_events_since(server, hub):
    for i in range(3):
        hub.publish_event({"event": "track_started", "camera": "cam", "track_id": i})
    st, _, body = get(server.url + "api/events?since=1")
    r = json.loads(body)
    assert st == 200 and r["last_event_seq"] == 3
    assert [(e["event_seq"], e["track_id"]) for e in r["events"]] == [(2, 1), (3, 2)]
    assert json.loads(get(server.url + "api/events?since=3")[2])["events"] == []


def _sse_events(resp, n):
    out, data, eid = [], None, None
    while len(out) < n:
        line = resp.readline().decode().rstrip("\n")
        if line.startswith("id: "):
            eid = int(line[4:])
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            out.append((eid, data))
            data = None
    return out


def test_server_sent_events_from_since_then_live(server, hub):
    hub.publish_event({"event": "track_started", "track_id": 1})
    hub.publish_event({"event": "track_started", "track_id": 2})
    conn, resp = open_stream(server.port, "/api/events/stream?since=1")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    assert _sse_events(resp, 1) == [(2, {"event": "track_started", "track_id": 2, "event_seq": 2})]
    threading.Timer(0.3, hub.publish_event, [{"event": "line_cross", "line": "road"}]).start()
    assert _sse_events(resp, 1) == [(3, {"event": "line_cross", "line": "road", "event_seq": 3})]
    conn.close()


def _read_parts(resp, n):
    parts = []
    for _ in range(n):
        p = read_mjpeg_part(resp)
        assert p is not None
        parts.append(p)
    return parts


def test_mjpeg_stream_new_frames_at_a_capped_rate(hub, frames360, monkeypatch):
    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    with WebServer(hub, WebConfig(port=0, max_fps=5)) as srv, Publisher(hub, frames360, fps=40):
        conn, resp = open_stream(srv.port, "/api/cameras/cam/stream.mjpeg")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        t0 = time.monotonic()
        parts = _read_parts(resp, 8)
        span = time.monotonic() - t0
        seqs = [int(h["x-frame-seq"]) for h, _ in parts]
        assert seqs == sorted(set(seqs)), seqs
        for h, jpeg in parts:
            assert h["content-type"] == "image/jpeg" and int(h["content-length"]) == len(jpeg)
            assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)
        # 40 frames/s published, at most 5 encoded per second: 8 parts take >= 7 intervals
        assert span >= 7 * 0.2 * 0.9, span
        conn.close()


def test_frames_are_encoded_once_for_all_viewers_and_only_while_watched(server, hub, frames360):
    with Publisher(hub, frames360, fps=30):
        time.sleep(0.5)
        assert "cam" not in server.live.feeds               # nobody asked: nothing encoded
        streams = [open_stream(server.port, "/api/cameras/cam/stream.mjpeg") for _ in range(3)]
        got = [[int(h["x-frame-seq"]) for h, _ in _read_parts(r, 6)] for _, r in streams]
        feed = server.live.feeds["cam"]
        assert feed.viewers == 3
        assert json.loads(get(server.url + "api/cameras")[2])["cameras"][0]["viewers"] == 3
        for c, _ in streams:
            c.close()
        deadline = time.monotonic() + 10
        while feed.viewers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert feed.viewers == 0
        n = feed.encodes
        time.sleep(0.5)
        assert feed.encodes <= n + 1                     # stops encoding once the last viewer left
    # every viewer saw the same encodes: far fewer encodes than parts sent
    assert n <= max(max(g) - min(g) for g in got) + 8 and sum(len(g) for g in got) == 18


def test_stalled_client_stalls_neither_other_clients_nor_the_publisher(hub, monkeypatch):
    """A client that connects and never reads: its own writes wait (bounded by the socket buffers
    plus one part), it skips frames, and is dropped after write_timeout_s; the other viewer
    keeps getting new frames and publishing never waits."""
    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    big = read_frames(VIDEO_1080, 4)                      # ~200 KB per JPEG part
    with WebServer(hub, WebConfig(port=0, max_fps=15, write_timeout_s=3.0)) as srv, \
            Publisher(hub, big, fps=30) as pub:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", srv.port))
        stalled.sendall(b"GET /api/cameras/cam/stream.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 20
        while srv.live.feeds.get("cam") is None or srv.live.feeds["cam"].viewers < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        conn, resp = open_stream(srv.port, "/api/cameras/cam/stream.mjpeg")
        feed, seqs = srv.live.feeds["cam"], []
        # the socket buffers take a few MB first; then the stalled viewer falls behind ...
        deadline = time.monotonic() + 30
        while feed.behind() <= 3:
            assert time.monotonic() < deadline, "the stalled client never fell behind"
            seqs += [int(h["x-frame-seq"]) for h, _ in _read_parts(resp, 1)]
        published_at_stall, seen_at_stall = pub.count, seqs[-1]
        # ... the other one keeps getting new frames, and the stalled one is dropped after write_timeout_s
        while feed.viewers > 1:
            assert time.monotonic() < deadline + 30, "the stalled client was never dropped"
            seqs += [int(h["x-frame-seq"]) for h, _ in _read_parts(resp, 1)]
        seqs += [int(h["x-frame-seq"]) for h, _ in _read_parts(resp, 3)]
        assert seqs == sorted(set(seqs)) and len(seqs) > 10
        assert feed.skipped > 3
        # neither the publisher nor the other viewer waited for the stalled client
        assert pub.count > published_at_stall + 3 and seqs[-1] > seen_at_stall
        conn.close()
        stalled.close()


def test_too_many_live_clients_get_503(hub, frames360, monkeypatch):
    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    hub.publish_frame("cam", 1, time.time(), frames360[0])
    with WebServer(hub, WebConfig(port=0, max_stream_clients=1)) as srv:
        conn, resp = open_stream(srv.port, "/api/cameras/cam/stream.mjpeg")
        assert resp.status == 200 and read_mjpeg_part(resp) is not None
        st, h, _ = get(srv.url + "api/events/stream")
        assert st == 503 and h["Retry-After"] == "5"
        conn.close()


# --- the token ----------------------------------------------------------------------------------

def test_token_required_everywhere_but_healthz(hub, frames360, monkeypatch, caplog):
    monkeypatch.setenv("TRACKPIPE_HTTP_TOKEN", TOKEN)
    hub.publish_frame("cam", 1, time.time(), frames360[0])
    caplog.set_level(logging.DEBUG)
    with WebServer(hub, WebConfig(port=0)) as srv:
        u = srv.url
        for path in ("", "api/stats", "api/cameras", "api/events?since=0", "api/cameras/cam/latest.jpg",
                     "api/cameras/cam/stream.mjpeg", "api/events/stream", "metrics", "api/cameras/nope/latest.jpg",
                     "api/counts", "nothing-here"):
            st, h, _ = get(u + path)
            assert st == 401 and h["WWW-Authenticate"].startswith("Bearer"), path
            assert get(u + path, {"Authorization": "Bearer wrong-token"})[0] == 401, path
        assert get(u + "healthz")[0] == 200 and get(u + "static/app.js")[0] == 200    # no data in either
        assert get(u + "api/stats", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert get(u + f"api/cameras/cam/latest.jpg?token={TOKEN}")[0] == 200
        assert get(u + f"?token={TOKEN}")[0] == 200
    assert "api/cameras/cam/latest.jpg" in caplog.text and TOKEN not in caplog.text


def test_exposed_server_answers_401_without_the_token(hub, monkeypatch):
    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    with pytest.raises(WebConfigError, match="token"):
        WebServer(hub, WebConfig(host="0.0.0.0", port=0))
    with WebServer(hub, WebConfig(host="0.0.0.0", port=0, token=TOKEN)) as srv:
        assert get(f"http://127.0.0.1:{srv.port}/api/cameras")[0] == 401
        assert get(f"http://127.0.0.1:{srv.port}/api/cameras", {"Authorization": f"Bearer {TOKEN}"})[0] == 200


# --- lifecycle ---------------------------------------------------------------------------------

def test_port_in_use_is_one_clear_error(server, hub):
    with pytest.raises(WebServerError, match=rf"cannot serve the live view on 127.0.0.1:{server.port}: "):
        WebServer(hub, WebConfig(port=server.port)).start()


def test_stop_ends_open_streams(hub, frames360, monkeypatch):
    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    with Publisher(hub, frames360):
        srv = WebServer(hub, WebConfig(port=0)).start()
        conn, resp = open_stream(srv.port, "/api/cameras/cam/stream.mjpeg")
        _read_parts(resp, 1)
        econn, _ = open_stream(srv.port, "/api/events/stream")
        srv.stop(timeout=10)
        assert not srv._thread.is_alive()
        with pytest.raises((ConnectionError, http.client.IncompleteRead, OSError, ValueError)):
            while read_mjpeg_part(resp) is not None:
                pass
            raise ConnectionError("stream ended")
        conn.close()
        econn.close()


# --- event ids from the run's event log -----------------------------------------------------------

def test_event_log_numbers_rotates_and_is_read_back(tmp_path):
    from trackpipe.pipeline.web.eventlog import EventLogReader, EventLogWriter
    w = EventLogWriter(str(tmp_path), keep=3)
    r = EventLogReader(str(tmp_path), keep=3)
    assert r.history() == [] and r.read_new() == []
    assert [e["event_seq"] for e in w.write([{"event": "a", "n": np.int64(0)}, {"event": "b"}])] == [1, 2]
    assert [(e["event_seq"], e["event"]) for e in r.read_new()] == [(1, "a"), (2, "b")]
    for i in range(5):                                     # two rotations: 3 lines a file at most
        w.write([{"event": "c", "i": i}])
    assert [e["event_seq"] for e in r.read_new()] == [3, 4, 5, 6, 7]
    assert sum(1 for _ in tmp_path.glob("events*.jsonl")) == 2
    # a new reader (the web stage restarted) gets the newest `keep`; a new writer (track restarted) goes on
    r2 = EventLogReader(str(tmp_path), keep=3)
    assert [e["event_seq"] for e in r2.history()] == [5, 6, 7] and r2.read_new() == []
    w.close()
    w2 = EventLogWriter(str(tmp_path), keep=3)
    assert w2.write([{"event": "d"}])[0]["event_seq"] == 8
    assert [e["event_seq"] for e in r.read_new()] == [8] and [e["event_seq"] for e in r2.read_new()] == [8]
    w2.close()
    r.close()
    r2.close()


def test_event_log_line_cut_by_a_killed_writer(tmp_path):
    from trackpipe.pipeline.web.eventlog import EventLogReader, EventLogWriter
    w = EventLogWriter(str(tmp_path))
    w.write([{"event": "a"}, {"event": "b"}])
    w.close()
    with open(tmp_path / "events.jsonl", "ab") as f:      # killed in the middle of event 3
        f.write(b'{"event":"c","event_seq":3,"camera":"ca')
    r = EventLogReader(str(tmp_path))
    assert [e["event_seq"] for e in r.history()] == [1, 2]
    assert r.read_new() == []                             # no newline yet: not an event
    w = EventLogWriter(str(tmp_path))                     # the restarted writer ends the cut line
    w.write([{"event": "d"}])
    assert [(e["event_seq"], e["event"]) for e in r.read_new()] == [(3, "d")]
    w.close()
    r.close()


def test_hub_takes_events_numbered_elsewhere(caplog):
    hub = LiveViewHub(max_events=4)
    hub.publish_numbered([{"event": "a", "event_seq": 5}, {"event": "b", "event_seq": 6},
                          {"event": "c", "event_seq": 9}])     # a gap: ids need only grow
    assert hub.last_event_seq() == 9
    assert [e["event"] for e in hub.events_since(0)] == ["a", "b", "c"]
    assert [e["event"] for e in hub.events_since(6)] == ["c"] and [e["event"] for e in hub.events_since(7)] == ["c"]
    hub.publish_numbered([{"event": "old", "event_seq": 9}, {"event": "d", "event_seq": 10},
                          {"event": "e", "event_seq": 11}])
    assert "event id 9 after 9 left out" in caplog.text
    assert [e["event_seq"] for e in hub.events_since(0)] == [6, 9, 10, 11]     # the newest max_events


# --- clients that come and go, malformed requests ------------------------------------------------

def raw_request(port: int, head: bytes, timeout: float = 20) -> socket.socket:
    """A socket that sent ``head`` (the request line and headers, without the blank line)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(head + b"\r\n\r\n")
    return s


def status_of(s: socket.socket) -> int:
    line = s.makefile("rb").readline()
    return int(line.split()[1]) if line else -1


def test_clients_with_an_id_ahead_that_go_free_their_slots_without_a_write(hub, frames360, monkeypatch):
    """40 event streams with a Last-Event-ID from the future (a client of an earlier run), closed
    by their clients while nothing is written to them (no event, pings a minute apart): every slot
    is free again within seconds and MJPEG answers 200."""
    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    hub.publish_frame("cam", 1, time.time(), frames360[0])
    for _ in range(3):
        hub.publish_event({"event": "track_started"})
    with WebServer(hub, WebConfig(port=0, max_stream_clients=32, keepalive_s=60)) as srv:
        socks = [raw_request(srv.port, b"GET /api/events/stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 99999")
                 for _ in range(40)]
        statuses = sorted(status_of(s) for s in socks)
        assert statuses == [200] * 32 + [503] * 8
        assert srv.live.sse_clients == 32
        for s in socks:
            s.close()
        wait_for(lambda: srv.live.stream_clients == 0, 20, "the slots to be freed")
        conn, resp = open_stream(srv.port, "/api/cameras/cam/stream.mjpeg")
        assert resp.status == 200 and read_mjpeg_part(resp) is not None
        conn.close()


def test_an_id_ahead_starts_from_now_and_idle_streams_get_pings(hub, monkeypatch):
    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    for _ in range(3):
        hub.publish_event({"event": "track_started"})
    with WebServer(hub, WebConfig(port=0, keepalive_s=0.2)) as srv:
        conn, resp = open_stream(srv.port, "/api/events/stream", {"Last-Event-ID": "500"})
        lines = [resp.readline() for _ in range(4)]
        assert lines[:2] == [b"retry: 2000\n", b"\n"]
        assert lines[2] == b": event id 500 is ahead of this server's newest (3): events from now on\n"
        assert [resp.readline() for _ in range(2)] == [b": ping\n", b"\n"]     # nothing to send: a ping
        hub.publish_event({"event": "line_cross"})
        assert _sse_events(resp, 1) == [(4, {"event": "line_cross", "event_seq": 4})]
        conn.close()
        # an id within reach: what came after it
        conn, resp = open_stream(srv.port, "/api/events/stream", {"Last-Event-ID": "2"})
        assert [i for i, _ in _sse_events(resp, 2)] == [3, 4]
        conn.close()


def test_mjpeg_viewer_of_a_silent_camera_that_goes_frees_its_slot(hub, frames360, monkeypatch):
    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    hub.publish_frame("cam", 1, time.time(), frames360[0])           # one frame, then nothing
    with WebServer(hub, WebConfig(port=0, keepalive_s=60)) as srv:
        conn, resp = open_stream(srv.port, "/api/cameras/cam/stream.mjpeg")
        assert read_mjpeg_part(resp) is not None
        assert srv.live.stream_clients == 1
        conn.close()
        wait_for(lambda: srv.live.stream_clients == 0 and srv.live.feeds["cam"].viewers == 0, 20,
                 "the viewer's slot to be freed")


@pytest.mark.parametrize("value", ["\u00b2".encode(), "\u0663".encode(), b"9" * 5000, b"-1", b"1.5", b"0x10",
                                   b"99999999999999999999", b"\xff\xfe"])
def test_malformed_last_event_id_is_400(server, value, caplog):
    s = raw_request(server.port, b"GET /api/events/stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: " + value)
    assert status_of(s) == 400
    s.close()
    assert server.live.stream_clients == 0 and "Traceback" not in caplog.text


def test_malformed_requests_log_one_warning_line_and_no_traceback(hub, monkeypatch, caplog):
    """A 100 KB URL, a 100 KB header, 200 header lines, a non-HTTP request line, TLS to the plain
    port: each answered 400 (or the connection closed), and all of them together one WARNING line
    (then one per 10 s at most), with no traceback."""
    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    caplog.set_level(logging.INFO)
    bad = [b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x",
           b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000,
           b"GET / HTTP/1.1\r\nHost: x\r\n" + b"\r\n".join(b"X-%d: 1" % i for i in range(200)),
           b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\x00: 1",
           b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]
    with WebServer(hub, WebConfig(port=0)) as srv:
        for head in bad * 4:
            s = raw_request(srv.port, head)
            assert status_of(s) in (400, -1), head[:40]
            s.close()
        assert get(srv.url + "healthz")[0] == 200
        wait_for(lambda: srv.errors.errors >= 16, 20, "the failed requests to be counted")
        assert b"trackpipe_web_requests_failed_total" in get(srv.url + "metrics")[2]
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]          # aiohttp's and asyncio's too
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    assert "400" in lines[0].getMessage() and len(lines[0].getMessage()) < 400
    assert "Traceback" not in caplog.text


def test_request_error_log_is_rate_limited():
    from aiohttp.http_exceptions import LineTooLong
    from trackpipe.pipeline.web.errorlog import RequestErrorLog
    now = [0.0]
    logger = logging.getLogger("test.web.errors")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        elog = RequestErrorLog(logger, interval_s=10.0, clock=lambda: now[0])
        for t in (0.0, 1.0, 2.0, 9.9, 10.0, 10.5):
            now[0] = t
            elog.exception("Error handling request from %s", "10.0.0.1",
                           exc_info=LineTooLong("line \x1b[31m\n", "8190", "100000"))
        now[0] = 30.0
        elog.exception("Unhandled exception", exc_info=ValueError("x" * 1000))
    finally:
        logger.removeHandler(handler)
    msgs = [(r.levelno, r.getMessage()) for r in records]
    assert len(msgs) == 3 and elog.errors == 7
    assert msgs[0][0] == logging.WARNING
    assert msgs[0][1].startswith("live view: Error handling request from 10.0.0.1: 400 ")
    assert "\x1b" not in msgs[0][1] and "\n" not in msgs[0][1]
    assert msgs[1][1].endswith("(3 more since the previous line, not logged)")
    assert msgs[2][0] == logging.ERROR and "ValueError: xxx" in msgs[2][1] and len(msgs[2][1]) < 300
