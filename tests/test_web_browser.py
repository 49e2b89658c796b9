"""The live page in a real browser: Debian's chromium driven by Playwright, fed by real videos
played in real time through the real Yolo-Fastest detector and SORT (tests/browser.py).

Skipped, with the reason, where chromium or playwright is missing. Deadlines are generous and
nothing here asserts a speed (benchmarks/bench_web.py measures those).
"""

from __future__ import annotations

import contextlib

import cv2
import numpy as np
import pytest
from browser import LiveFeed, Publisher, browser_missing, chromium, read_frames
from conftest import ASSETS, COCO_NAMES, VIDEO_360, YF_CFG, YF_WEIGHTS
from trackpipe.pipeline.web import LiveViewHub, WebConfig, WebServer

from tests.procs import wait_for

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))

TOKEN = "browser-test-token"
SCREENSHOT = "/tmp/web_page.png"
TRAFFIC = ASSETS / "video" / "traffic-cars.mp4"      # 1280x720
ALL_IMGS_SHOWN = ("() => { const i = [...document.querySelectorAll('img.cam')];"
                  " return i.length == 2 && i.every(x => x.naturalWidth > 0); }")


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def live(browser):
    """Hub + server (no token) + two real cameras through one shared detector."""
    from trackpipe.models.factory import build_detector
    from trackpipe.models.spec import ModelSpec
    from trackpipe.pipeline.events import Line

    det = build_detector(ModelSpec(cfg=YF_CFG, weights=YF_WEIGHTS, names=COCO_NAMES, size=(320, 320),
                                   backend="onnx"))
    road = Line(name="road", points=[[0, 430], [1280, 430]], units="px", confirm_frames=2)
    hub = LiveViewHub(max_events=200)
    server = WebServer(hub, WebConfig(port=0), names=det.names, zones={"traffic": [road]}).start()
    feed = LiveFeed(hub, {"street": VIDEO_360, "traffic": TRAFFIC}, det, det.names, lines={"traffic": [road]}).start()
    yield hub, server, feed, browser
    feed.stop()
    server.stop()
    assert feed.error is None, feed.error


def _img(shot: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)


def test_page_shows_cameras_table_and_live_events(live):
    hub, server, feed, browser = live
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(server.url)
        page.wait_for_function(ALL_IMGS_SHOWN, timeout=30_000)
        first_ms = page.evaluate("() => [...document.querySelectorAll('img.cam')].map(i => +i.dataset.firstFrameMs)")
        print(f"first frame shown {first_ms} ms after navigation start")
        assert all(ms > 0 for ms in first_ms)

        # frames change: two screenshots of the street camera differ
        cam = page.locator("img[data-camera=street]")
        shot1 = _img(cam.screenshot())
        wait_for(lambda: np.abs(_img(cam.screenshot()).astype(np.int16) - shot1).mean() > 2.0, 20, "a new frame")

        # the stage table fills and updates
        row = page.locator("#stages tr[data-stage=infer]")
        row.wait_for(timeout=20_000)
        before = row.inner_text()
        page.wait_for_function("(t) => { const r = document.querySelector('#stages tr[data-stage=infer]');"
                               " return r && r.innerText != t; }", arg=before, timeout=20_000)
        assert page.locator("#stages tr[data-stage=capture]").count() == 1

        # an event row appears when a new track starts (through the live EventSource)
        page.wait_for_selector("body[data-events=open]", timeout=20_000)
        n0 = hub.last_event_seq()
        wait_for(lambda: hub.last_event_seq() > n0, 60, "a new track to start")
        li = page.locator(f'#events li[data-seq="{n0 + 1}"]')
        li.wait_for(timeout=20_000)
        assert hub.events_since(n0, 1)[0]["event"] in li.inner_text()

        page.screenshot(path=SCREENSHOT, full_page=True)
        shot = cv2.imread(SCREENSHOT)
        box = cam.bounding_box()
        x, y, w, h = (round(v) for v in (box["x"], box["y"], box["width"], box["height"]))
        assert w > 300 and shot[y:y + h, x:x + w].std() > 20        # a camera picture, not an empty box
    finally:
        page.close()
    assert feed.tracks_started > 0 and feed.frames > 0


def test_page_with_a_token(live):
    hub, _, _, browser = live
    with WebServer(hub, WebConfig(port=0, token=TOKEN)) as server:
        page = browser.new_page()
        try:
            assert page.goto(server.url).status == 401
            page.goto(server.url + "?token=" + TOKEN)
            page.wait_for_function(ALL_IMGS_SHOWN, timeout=30_000)        # <img> URLs carry the token
            page.locator("#stages tr[data-stage=infer]").wait_for(timeout=20_000)   # fetch sends it as a header
            page.wait_for_selector("body[data-events=open]", timeout=20_000)       # EventSource URL carries it
        finally:
            page.close()


def test_many_cameras_leave_connections_for_the_api(browser, monkeypatch):
    """Six cameras: a browser keeps ~6 connections per server, so four stream MJPEG and two
    refresh latest.jpg; the stage table and the event stream still get through."""
    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    hub = LiveViewHub()
    frames = read_frames(VIDEO_360, 10)
    hub.publish_stats({"stages": {"infer": {"fps": 1.0}}})
    with WebServer(hub, WebConfig(port=0)) as server, contextlib.ExitStack() as stack:
        for i in range(6):
            stack.enter_context(Publisher(hub, frames, camera=f"cam{i}", fps=10))
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        try:
            page.goto(server.url)
            page.wait_for_function("() => { const i = [...document.querySelectorAll('img.cam')];"
                                   " return i.length == 6 && i.every(x => x.naturalWidth > 0); }", timeout=30_000)
            modes = page.evaluate("() => [...document.querySelectorAll('img.cam')].map(i => i.dataset.mode)")
            assert modes == ["mjpeg"] * 4 + ["snapshots"] * 2
            page.locator("#stages tr[data-stage=infer]").wait_for(timeout=20_000)
            page.wait_for_selector("body[data-events=open]", timeout=20_000)
            n = hub.publish_event({"event": "track_started", "camera": "cam5", "track_id": 1})
            page.locator(f'#events li[data-seq="{n}"]').wait_for(timeout=20_000)
        finally:
            page.close()
