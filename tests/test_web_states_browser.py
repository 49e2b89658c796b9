"""The live page tells the truth through an outage, in a real browser: a real run
(``run_tracker.py``, the real Yolo-Fastest detector) of two real RTSP cameras (the GStreamer test
server playing a real video), one with a zone, one with a line; Debian's chromium under
Playwright. The line's camera comes after the run started, is killed and started again mid-run;
the page must show each state on the picture (starting, live, lost since HH:MM:SS, restored), the
camera's FPS at 0 during the outage, readable times, counts for both cameras and event rows
without empty fields.

Screenshots of each state go to ``$TRACKPIPE_TEST_ARTIFACTS/live-page-states/`` (default: the
test's tmp_path). One run serves every assertion; deadlines are generous and nothing asserts a
speed.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser import browser_missing, chromium
from conftest import VIDEO_360, leftovers
from test_run_web import MODEL, ROOT, get_json, stderr_of, wait_group_gone, wait_url

from tests.procs import wait_for

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))

HMS = r"\d\d:\d\d:\d\d"
CONFIG = """\
cameras:
  - name: door
    uri: "{door}"
    zones: [{{name: porch, points: [[0.1, 0.3], [0.9, 0.3], [0.9, 1.0], [0.1, 1.0]]}}]
  - name: road
    uri: "{road}"
    lines: [{{name: gate, points: [[0, 200], [640, 200]]}}]
source: {{watchdog_s: 1.5, read_timeout_s: 1.0, open_timeout_s: 3.0, backoff_initial_s: 0.3, backoff_max_s: 1.0}}
"""


WATCH_ROWS = """(kind) => { window.rows = [];
  new MutationObserver((ms) => { for (const m of ms) for (const n of m.addedNodes)
    if (n.dataset && n.dataset.event === kind) window.rows.push(n.textContent); })
  .observe(document.querySelector('#events'), { childList: true }); }"""


def artifacts_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("TRACKPIPE_TEST_ARTIFACTS") or tmp_path) / "live-page-states"
    d.mkdir(parents=True, exist_ok=True)
    return d


def state_of(page, camera: str) -> str:
    return page.get_attribute(f"figure[data-camera={camera}]", "data-state") or ""


def note_of(page, camera: str) -> str:
    return page.inner_text(f".state-note[data-camera={camera}]")


def wait_state(page, camera: str, state: str, timeout_s: float) -> None:
    page.wait_for_selector(f"figure[data-camera={camera}][data-state={state}]", timeout=timeout_s * 1000)


def event_rows(page) -> list[str]:
    return page.eval_on_selector_all("#events li", "els => els.map(e => e.innerText)")


def check_event_rows(rows: list[str]) -> None:
    """Every row: a readable time, the kind, then only fields that have a value."""
    for row in rows:
        assert re.match(rf"^{HMS} \w+", row), row
        assert not re.search(r"#(\s|$)|\s\s|undefined|null|NaN", row), f"an empty field in {row!r}"


@pytest.mark.timeout(300)
def test_page_states_through_a_camera_outage(tmp_path):
    import subprocess
    import sys

    from tests.rtsp.fixtures import RtspServer, rtsp_available
    ok, why = rtsp_available()
    if not ok:
        pytest.skip(f"RTSP test server unavailable: {why}")
    out = artifacts_dir(tmp_path)
    door, road = RtspServer(file=VIDEO_360), RtspServer(file=VIDEO_360)
    p = None
    try:
        door.start().wait_ready(30)          # road's camera is not there yet: the page shows it starting
        cfg = tmp_path / "cams.yaml"
        cfg.write_text(CONFIG.format(door=door.url, road=road.url))
        p = subprocess.Popen([sys.executable, str(ROOT / "run_tracker.py"), "--config", str(cfg), *MODEL,
                              "--headless", "--http-port", "0"], cwd=str(ROOT),
                             env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.DEVNULL,
                             stderr=open(tmp_path / "stderr.txt", "w+"), text=True, start_new_session=True)
        url = wait_url(p, tmp_path)
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("figure[data-camera=road]", timeout=60_000)
            assert state_of(page, "road") in ("starting", "waiting")
            assert re.fullmatch(rf"starting…|waiting for the camera since {HMS}", note_of(page, "road"))
            assert page.locator("figure[data-camera=road] .view").bounding_box()["height"] > 100   # not a strip
            page.screenshot(path=str(out / "1-starting.png"), full_page=True)
            road.start().wait_ready(30)

            # both cameras live, their pictures shown; counts for both; event rows readable
            wait_state(page, "door", "live", 120)
            wait_state(page, "road", "live", 120)
            page.wait_for_function("() => [...document.querySelectorAll('img.cam')].every(i => i.naturalWidth > 0)",
                                   timeout=60_000)
            page.wait_for_selector("#counts tr[data-camera=door]", timeout=60_000)
            page.wait_for_function("() => document.querySelector('#counts').innerText.includes('line gate')",
                                   timeout=60_000)
            counts = page.inner_text("#counts")
            assert re.search(r"door\s+zone porch", counts) and re.search(r"road\s+line gate", counts), counts
            assert not page.is_visible(".state-note[data-camera=road]")
            page.wait_for_selector("#events li", timeout=60_000)
            page.wait_for_selector("body[data-events=open]", timeout=60_000)     # the live event stream
            check_event_rows(event_rows(page))
            assert re.match(rf"^updated {HMS}$", page.inner_text("#status"))
            page.screenshot(path=str(out / "2-live.png"), full_page=True)

            # the road camera dies: lost since HH:MM:SS on its last frame (dimmed, not black), fps 0
            # the page keeps its newest 50 rows: record every source_lost row as it is added
            page.evaluate(WATCH_ROWS, "source_lost")
            road.kill()
            page.wait_for_function("() => window.rows.length > 0", timeout=60_000)
            lost_rows = page.evaluate("() => window.rows")
            assert all(re.match(rf"^{HMS} source_lost road\b", r) for r in lost_rows), lost_rows
            check_event_rows(lost_rows)
            wait_state(page, "road", "lost", 60)
            assert re.fullmatch(rf"lost since {HMS} · reconnecting", note_of(page, "road")), note_of(page, "road")
            caption = page.inner_text("figure[data-camera=road] figcaption")
            assert "lost · 0.0 fps" in caption, caption
            # the camera's measured rate (frames over the last seconds, not its last value) falls to 0
            wait_for(lambda: get_json(url + "api/stats")["cameras"]["road"]["fps_now"] == 0.0, 60,
                     "the lost camera's fps_now to fall to 0")
            assert get_json(url + "api/stats")["cameras"]["door"]["fps_now"] > 0
            assert state_of(page, "door") == "live"
            page.wait_for_function("() => !document.querySelector('figure[data-camera=road] .poster').hidden"
                                   " && document.querySelector('figure[data-camera=road] .poster').naturalWidth > 0",
                                   timeout=60_000)
            view = page.locator("figure[data-camera=road] .view")
            shot = cv2.imdecode(np.frombuffer(view.screenshot(), np.uint8), cv2.IMREAD_COLOR)
            assert shot.shape[0] > 100 and shot.std() > 10, "the lost camera's picture is blank"
            check_event_rows(event_rows(page))
            page.screenshot(path=str(out / "3-lost.png"), full_page=True)

            # back: "restored at HH:MM:SS"
            road.start().wait_ready(30)
            wait_state(page, "road", "restored", 60)
            assert re.fullmatch(rf"restored at {HMS}", note_of(page, "road")), note_of(page, "road")
            page.screenshot(path=str(out / "4-restored.png"), full_page=True)
            check_event_rows(event_rows(page))      # (restored turns live after 10 s: tests/test_web.py)
            page.close()
        os.killpg(p.pid, signal.SIGINT)
        wait_group_gone(p, 20)
        assert p.returncode == 130, stderr_of(tmp_path)
        assert "Traceback" not in stderr_of(tmp_path) and leftovers(p.pid) == []
        print(f"screenshots in {out}")
    finally:
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        door.close(), road.close()
