"""Recording in a real run: the real GStreamer RTSP server plays a real video (aiguys_video.mp4,
people and a car; one keyframe a second) to run_tracker.py with ``--record``, ``--events``, a
webhook and the live view. Every ``track_ended`` of the classes asked carries its clip and
snapshot URLs; each clip decodes with PyAV and OpenCV, starts at the keyframe at or before
``start - pre_s`` (at most one GOP earlier) and ends at or after the event's end; each snapshot is
the frame where the object scored best (the server's stamp in its top rows says when it was made),
its box the track's. Then the review API over the recorded folder in a real server (the live
view's, with the review API mounted) and the review page in Debian's chromium: the events listed,
a clip plays and seeks, the drawn box lies on the object (Yolo-Fastest finds it there), a deleted
event and an expired one are said to be so."""

from __future__ import annotations

import http.server
import itertools
import json
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import ClassVar

import av
import cv2
import numpy as np
import pytest
from browser import browser_missing, chromium
from conftest import ASSETS, COCO_NAMES, ROOT, YF_CFG, YF_WEIGHTS
from rtsp.fixtures import RtspServer, decode_stamp, rtsp_available
from trackpipe.pipeline.recording.clips import segment_packets
from trackpipe.pipeline.recording.index import RecordIndex
from trackpipe.pipeline.recording.retention import CameraPolicy, Retention
from trackpipe.pipeline.recording.review import ReviewApi

MODEL = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES), "--size", "320",
         "--backend", "onnx", "--precision", "fp32"]
PRE_S, POST_S, GOP_S = 2.0, 2.0, 1.0        # the RTSP server sends a keyframe every second
CLASSES = ("person", "car")
RUN_S = 20
# one clock (docs/recording.md): the capture's frame times and the recorder's agree within this (measured under
# load: 0.04-0.06 s; 0.09 s from the camera making a frame), where decode times differed by up to 1.4 s
CLOCK_S = 0.25


class Hooks(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hooks.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    ok, reason = rtsp_available()
    if not ok:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("recrun")
    hooks = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    srv = RtspServer(file=ASSETS / "video" / "aiguys_video.mp4")
    srv.start()
    srv.wait_ready(20)
    rec = tmp / "rec"
    try:
        p = subprocess.run([sys.executable, str(ROOT / "run_tracker.py"), "--source", srv.url, *MODEL, "--headless",
                            "--record", str(rec), "--events", str(tmp / "events.jsonl"), "--duration", str(RUN_S),
                            "--webhook", f"http://127.0.0.1:{hooks.server_port}/",
                            "--set", "record.segment_s=4", "--set", f"record.pre_s={PRE_S}",
                            "--set", f"record.post_s={POST_S}", "--set", f"record.classes=[{','.join(CLASSES)}]"],
                           cwd=ROOT, capture_output=True, text=True, timeout=RUN_S + 150, check=False)
    finally:
        srv.close()
        hooks.shutdown()
    assert p.returncode == 0, p.stderr[-3000:]
    events = [json.loads(ln) for ln in (tmp / "events.jsonl").read_text().splitlines()]
    return {"root": rec, "events": events, "hooks": list(Hooks.received), "stderr": p.stderr, "tmp": tmp}


def ended(events):
    return [e for e in events if e["event"] == "track_ended" and e.get("class") in CLASSES]


def test_every_track_ended_has_a_clip_and_a_snapshot(run, yf_spec):
    from trackpipe.models.factory import build_detector
    detector = build_detector(yf_spec)
    root = run["root"]
    evs = ended(run["events"])
    assert len(evs) >= 3, run["stderr"][-2000:]
    hooked = {e.get("review_id") for e in run["hooks"] if e.get("event") == "track_ended"}
    index = RecordIndex(root)
    first = index.segments()[0].start
    api = ReviewApi(root, default_roll=(PRE_S, POST_S))
    try:
        for e in evs:
            rid = e["review_id"]
            assert e["clip"] == f"/api/events/{rid}/clip.mp4" and e["snapshot"] == f"/api/events/{rid}/snapshot.jpg"
            assert rid in hooked                                      # the webhook got the same URLs
            rec = index.event(rid)
            assert rec is not None and rec.label == e["class"]
            info, path = api._cut(rec.camera, rec.start - PRE_S, rec.end + POST_S, rec.id)
            # (an object there when the run started: its footage begins with the recording's)
            assert rec.start - PRE_S - GOP_S - 0.1 <= info["start"] <= max(rec.start - PRE_S, first) + 1e-3
            assert info["end"] >= rec.end
            with av.open(str(path)) as c:
                frames = list(c.decode(video=0))
            n, t0 = len(frames), frames[0].time
            recorded = {s.counter: info["start"] + f.time - t0 for s, f in
                        ((decode_stamp(f.to_ndarray(format="bgr24")), f) for f in frames
                         if abs(info["start"] + f.time - t0 - rec.t_best) < 0.5) if s is not None}
            cap, m = cv2.VideoCapture(str(path)), 0
            while cap.read()[0]:
                m += 1
            assert n == m == info["frames"] > 0
            # the snapshot: the frame render had when the object scored best, its box the track's there
            # (a track still open when the run was stopped may end before render saw it: none then)
            if e["reason"] == "stopped" and rec.snapshot is None:
                continue
            assert rec.snapshot, (rid, e["reason"], run["stderr"][-1500:])
            snap = cv2.imread(str(root / rec.snapshot))
            assert snap is not None and snap.shape == (rec.height, rec.width, 3)
            stamp = decode_stamp(snap)
            # made by the server just before; the recording has the same frame at the same time
            assert stamp is not None and -0.01 <= rec.t_best - stamp.wall < CLOCK_S, (stamp, rec.t_best)
            assert abs(recorded[stamp.counter] - rec.t_best) < CLOCK_S, (recorded.get(stamp.counter), rec.t_best)
            row = min(rec.boxes, key=lambda b: abs(b[0] - rec.t_best))
            assert row[1:5] == rec.box
            dets = detector.detect(snap)                              # the object is in the box
            ious = [iou(np.array(rec.box), d) for d in dets.xyxy[dets.class_id == rec.class_id]]
            assert ious and max(ious) >= 0.5, (rid, rec.box, dets.xyxy.tolist())
    finally:
        api.close()


def test_the_index_lists_every_segment_on_disk(run):
    root = run["root"]
    index = RecordIndex(root)
    segs = index.segments()
    on_disk = sorted(str(p.relative_to(root)) for p in root.glob("cam0/*/*.mp4"))
    assert sorted(s.path for s in segs) == on_disk and len(segs) >= RUN_S // 5
    for a, b in itertools.pairwise(segs):
        assert b.start - a.end < 0.2                                  # one connection, no gaps
    for s in segs:
        first = next(iter(segment_packets(root, s)))
        assert first[0].is_keyframe


# --- the review API and page ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def review(run, tmp_path_factory):
    """A copy of the recording served by the live view's server with the review API mounted."""
    from trackpipe.pipeline.web import LiveViewHub, WebConfig, WebServer
    root = tmp_path_factory.mktemp("review") / "rec"
    shutil.copytree(run["root"], root)
    srv = WebServer(LiveViewHub(), WebConfig(port=0), names=["person"],
                    review=ReviewApi(root, default_roll=(PRE_S, POST_S))).start()
    yield srv, root
    srv.stop()


def get(url, method="GET", headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_the_review_api(review, run):
    srv, _ = review
    base = srv.url.rstrip("/")
    status, _, body = get(base + "/api/events?limit=500")
    events = json.loads(body)
    assert status == 200 and {e["id"] for e in events} >= {e["review_id"] for e in ended(run["events"])}
    one = events[len(events) // 2]                    # one well inside the recording
    assert {"id", "camera", "label", "start", "end", "score", "clip", "snapshot"} <= set(one)
    status, _, body = get(base + f"/api/events?label={one['label']}&after={one['start'] - 1}&before={one['end'] + 1}")
    assert status == 200 and one["id"] in {e["id"] for e in json.loads(body)}
    assert json.loads(get(base + "/api/events?label=giraffe")[2]) == []
    assert get(base + "/api/events?after=yesterday")[0] == 400
    detail = json.loads(get(base + f"/api/events/{one['id']}")[2])
    assert detail["boxes"] and detail["clip_start"] <= one["start"] - PRE_S + 1e-3
    status, headers, body = get(base + one["clip"], headers={"Range": "bytes=100-199"})
    assert status == 206 and len(body) == 100 and headers["Content-Range"].startswith("bytes 100-199/")
    status, headers, body = get(base + one["snapshot"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    assert get(base + one["snapshot"] + "?box=0")[2] != body                  # clean: without the box
    segs = json.loads(get(base + f"/api/recordings/{one['camera']}")[2])["segments"]
    s0 = segs[1]
    status, _, body = get(base + f"/api/recordings/{one['camera']}/export.mp4?start={s0['start'] + 0.5}"
                                 f"&end={s0['start'] + 2.5}")
    assert status == 200 and body[4:8] == b"ftyp"
    status, _, body = get(base + f"/api/recordings/{one['camera']}/export.mp4?start=1000&end=1010")
    assert status == 404 and "no footage" in json.loads(body)["error"]
    assert get(base + "/api/recordings/nocam")[0] == 404
    assert get(base + "/api/events/nope")[0] == 404


def newest_person(base):
    events = json.loads(get(base + "/api/events?label=person&limit=500")[2])
    return max((e for e in events if e["end"] - e["start"] > 2.0), key=lambda e: e["score"])


def test_the_review_page_plays_a_clip_with_the_box_on_the_object(review, yf_spec):
    why = browser_missing()
    if why:
        pytest.skip(why)
    from trackpipe.models.factory import build_detector
    srv, root = review
    base = srv.url.rstrip("/")
    ev = newest_person(base)
    detector = build_detector(yf_spec)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base + "/review")
        page.wait_for_selector(f"li.event[data-id='{ev['id']}']", timeout=30000)
        assert page.locator("li.event").count() >= 3
        page.click(f"li.event[data-id='{ev['id']}']")
        page.wait_for_function("() => document.querySelector('#clip').readyState >= 2", timeout=30000)
        t1 = page.evaluate("() => document.querySelector('#clip').currentTime")
        page.wait_for_function(f"() => document.querySelector('#clip').currentTime > {t1} + 0.3", timeout=30000)
        # seek to where the object is, pause, and compare the drawn box with a detection on that frame
        detail = json.loads(get(base + f"/api/events/{ev['id']}")[2])
        tau = round(detail["t_best"] - detail["clip_start"], 2)
        page.evaluate(f"() => {{ const v = document.querySelector('#clip'); v.pause(); v.currentTime = {tau}; }}")
        page.wait_for_function(f"() => {{ const v = document.querySelector('#clip'); return !v.seeking && "
                               f"Math.abs(v.currentTime - {tau}) < 0.05 && window.review.box; }}", timeout=30000)
        shown = page.evaluate("() => [document.querySelector('#clip').currentTime, window.review.box]")
        page.screenshot(path="/tmp/review_page.png")
        _, _, clip = get(base + ev["clip"])
        path = root / "clip-under-test.mp4"
        path.write_bytes(clip)
        with av.open(str(path)) as c:
            frames = list(c.decode(video=0))
        frame = min(frames, key=lambda f: abs(f.time - shown[0])).to_ndarray(format="bgr24")
        dets = detector.detect(frame)
        box = np.array(shown[1], np.float32)
        ious = [iou(box, d) for d in dets.xyxy[dets.class_id == 0]]
        # on a miss: what was drawn and found, the event's times and the clip's frame times
        assert ious and max(ious) >= 0.5, (shown, dets.xyxy.tolist(), {k: detail.get(k) for k in (
            "start", "end", "t_best", "clip_start", "clip_end")}, (frames[0].time, frames[-1].time, len(frames)))
        # switched off: nothing drawn, the recording stays clean
        page.uncheck("#show-boxes")
        page.wait_for_function("() => { const c = document.querySelector('#overlay'); const d = c.getContext('2d')"
                               ".getImageData(0, 0, c.width, c.height).data; "
                               "return !d.some((v, i) => i % 4 == 3 && v > 0); }", timeout=10000)


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_deleted_and_an_expired_event_answer_410_and_the_page_says_so(review):
    srv, root = review
    base = srv.url.rstrip("/")
    events = json.loads(get(base + "/api/events?limit=500")[2])
    oldest, newest = events[-1], events[0]
    assert get(base + f"/api/events/{newest['id']}", method="DELETE")[0] == 200
    status, _, body = get(base + newest["clip"])
    assert status == 410 and "deleted" in json.loads(body)["error"]
    # retention deletes the oldest footage (a writer of this folder, as the recorder is)
    index = RecordIndex(root, writer=True)
    first = index.segments()[0]
    Retention(root, index, {oldest["camera"]: CameraPolicy("all", PRE_S, POST_S, 0)},
              max_gb=(index.total_bytes() - first.bytes) / 1e9).apply()
    index.close()
    status, _, body = get(base + oldest["clip"])
    assert status == 410 and "retention" in json.loads(body)["error"]
    why = browser_missing()
    if why:
        pytest.skip(why)
    with chromium() as browser:
        page = browser.new_page()
        page.goto(base + "/review")
        page.wait_for_selector(f"li.event[data-id='{oldest['id']}']", timeout=30000)
        page.click(f"li.event[data-id='{oldest['id']}']")
        page.wait_for_function("() => document.querySelector('#message').textContent.includes('deleted')",
                               timeout=30000)
        assert "retention" in page.text_content("#message")
