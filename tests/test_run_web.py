"""The live view of a real run: ``run_tracker.py --realtime --loop --headless --http-port 0`` as a
subprocess (own process group, the real Yolo-Fastest detector), read over real HTTP and in a real
browser (Debian chromium under Playwright); then Ctrl-C, after which no process, no /dev/shm entry
and no ipc folder may remain. The bound port is read from the run's ``live view on URL`` log line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from browser import browser_missing, chromium
from conftest import COCO_NAMES, ROOT, VIDEO_360, YF_CFG, YF_WEIGHTS, leftovers
from trackpipe.pipeline.web.mjpeg import read_mjpeg_part

from tests.procs import running_in_group, wait_for

MODEL = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES), "--size", "320",
         "--backend", "onnx", "--precision", "fp32"]
CAMERA = "cam0"           # pipeline.camera's default: the name in the events
URL_LINE = re.compile(r"live view on (http://\S+/)")


def start_run(args, tmp_path, env=None, realtime: bool = True) -> subprocess.Popen:
    """run_tracker.py on aiguys_video.mp4 in a loop, headless: played at 30 fps (``realtime``, a live
    source) or decoded as fast as it goes (lossless)."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(ROOT / "run_tracker.py"), "--source", str(VIDEO_360), *MODEL,
                             *(["--realtime"] if realtime else []), "--loop", "--headless", *args],
                            cwd=str(ROOT), env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr.txt", "w+"), text=True,
                            start_new_session=True)


def stderr_of(tmp_path) -> str:
    return (tmp_path / "stderr.txt").read_text()


def wait_url(p: subprocess.Popen, tmp_path, timeout: float = 120) -> str:
    """The live view's URL, from the run's log line (``--http-port 0`` binds a free port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = URL_LINE.search(stderr_of(tmp_path))
        if m:
            return m.group(1)
        assert p.poll() is None, f"the run ended ({p.returncode}): {stderr_of(tmp_path)}"
        time.sleep(0.1)
    pytest.fail(f"no 'live view on' line after {timeout}s: {stderr_of(tmp_path)}")


def get(url: str, headers=None, timeout: float = 10):
    """-> (status, headers, body); HTTP errors are answers too."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(url: str, **kw):
    status, _, body = get(url, **kw)
    assert status == 200, (url, status, body[:200])
    return json.loads(body)


def wait_group_gone(p: subprocess.Popen, timeout: float) -> None:
    t0 = time.monotonic()
    while p.poll() is None or running_in_group(p.pid):
        if time.monotonic() - t0 > timeout:
            os.killpg(p.pid, signal.SIGKILL)
            pytest.fail(f"processes of group {p.pid} still alive after {timeout}s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One real run for the whole module; the last test stops it with Ctrl-C."""
    tmp = tmp_path_factory.mktemp("web_run")
    p = start_run(["--http-port", "0", "--profile", str(tmp / "p.json")], tmp)
    try:
        url = wait_url(p, tmp)
        wait_for(lambda: any(c["seq"] >= 0 for c in get_json(url + "api/cameras")["cameras"]), 120,
                 "the first frame on the live view")
        yield p, url, tmp
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


@pytest.mark.timeout(180)
def test_api_of_a_running_pipeline(run):
    p, url, _ = run
    assert url.startswith("http://127.0.0.1:")                    # loopback by default
    assert get_json(url + "healthz") == {"status": "ok"}
    cams = get_json(url + "api/cameras")["cameras"]
    assert [c["name"] for c in cams] == [CAMERA]
    assert cams[0]["state"] == "live" and (cams[0]["width"], cams[0]["height"]) == (640, 360)

    status, headers, body = get(url + f"api/cameras/{CAMERA}/latest.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (360, 640, 3) and img.std() > 20
    assert get(url + "api/cameras/nope/latest.jpg")[0] == 404
    assert get(url + "api/cameras/nope/stream.mjpeg")[0] == 404

    # a person enters within the first frames of aiguys_video.mp4: a track_started event with its camera
    ev = wait_for(lambda: [e for e in get_json(url + "api/events")["events"] if e["event"] == "track_started"],
                  60, "a track_started event")
    assert ev[0]["camera"] == CAMERA and ev[0]["class"] == "person" and ev[0]["event_seq"] >= 1

    # the supervisor's aggregated profile and metrics, forwarded once a second
    stats = wait_for(lambda: (s := get_json(url + "api/stats")).get("stages", {}).get("infer", {}).get("items")
                     and s, 30, "the live profile")
    assert {"capture", "infer", "track", "render", "web"} <= set(stats["stages"])
    assert stats["mode"] == "latest" and stats["frames_in"] > 0
    metrics = wait_for(lambda: get(url + "metrics")[2].decode(), 30, "metrics")
    assert 'trackpipe_stage_fps{stage="infer"}' in metrics
    assert "trackpipe_web_viewers" in metrics                     # the server's own, after the pipeline's
    assert p.poll() is None


@pytest.mark.timeout(120)
def test_mjpeg_stream_of_a_running_pipeline(run):
    _, url, _ = run
    with urllib.request.urlopen(url + f"api/cameras/{CAMERA}/stream.mjpeg", timeout=20) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        seqs = []
        for _ in range(5):
            part = read_mjpeg_part(r)
            assert part is not None
            headers, jpeg = part
            assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)
            seqs.append(int(headers["x-frame-seq"]))
            if len(seqs) == 2:  # while it streams, the camera counts the viewer
                cams = get_json(url + "api/cameras")["cameras"]
                assert cams[0]["viewers"] == 1
    assert seqs == sorted(seqs) and seqs[-1] > seqs[0]           # new frames keep coming


@pytest.mark.timeout(120)
@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_page_shows_the_run_live_in_a_browser(run):
    _, url, _ = run
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        try:
            page.goto(url)
            page.wait_for_function("() => { const i = [...document.querySelectorAll('img.cam')];"
                                   " return i.length == 1 && i[0].naturalWidth > 0; }", timeout=30_000)
            cam = page.locator(f"img[data-camera={CAMERA}]")
            shot1 = cv2.imdecode(np.frombuffer(cam.screenshot(), np.uint8), cv2.IMREAD_COLOR)
            assert shot1.std() > 20                                 # a picture, not an empty box
            wait_for(lambda: np.abs(cv2.imdecode(np.frombuffer(cam.screenshot(), np.uint8), cv2.IMREAD_COLOR)
                                    .astype(np.int16) - shot1).mean() > 2.0, 30, "the picture to change")
            page.locator("#stages tr[data-stage=infer]").wait_for(timeout=20_000)
            page.wait_for_selector("#events li", timeout=30_000)   # track events of the run
        finally:
            page.close()


@pytest.mark.timeout(60)
def test_ctrl_c_stops_the_run_and_its_web_stage_cleanly(run):
    p, url, tmp = run
    os.killpg(p.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole group
    wait_group_gone(p, 10.0)
    assert p.wait(1) == 130, stderr_of(tmp)
    assert "Traceback" not in stderr_of(tmp)
    assert leftovers(p.pid) == []
    with pytest.raises(OSError):                                  # the port is closed
        urllib.request.urlopen(url + "healthz", timeout=2)
    report = json.loads((tmp / "p.json").read_text())
    assert report["outcome"] == "interrupted" and report["stages"]["web"]["items"] > 0


@pytest.mark.timeout(60)
def test_exposed_host_without_a_token_exits_2_before_any_stage(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRACKPIPE_HTTP_TOKEN"}
    p = start_run(["--http-port", "0", "--http-host", "0.0.0.0"], tmp_path, env=env)
    assert p.wait(60) == 2
    err = stderr_of(tmp_path).strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --http-host 0.0.0.0 exposes the live view"), err
    assert "TRACKPIPE_HTTP_TOKEN" in err[0]
    assert leftovers(p.pid) == []


@pytest.mark.timeout(180)
def test_exposed_host_with_a_token_from_the_environment(tmp_path):
    token = "run-web-test-token"
    p = start_run(["--http-port", "0", "--http-host", "0.0.0.0"], tmp_path,
                  env=dict(os.environ, TRACKPIPE_HTTP_TOKEN=token))
    try:
        url = wait_url(p, tmp_path).replace("0.0.0.0", "127.0.0.1")
        assert get(url + "healthz")[0] == 200                     # open: no token needed
        assert get(url + "api/cameras")[0] == 401
        assert get(url + "api/cameras", headers={"Authorization": f"Bearer {token}"})[0] == 200
        assert token not in stderr_of(tmp_path)
    finally:
        os.killpg(p.pid, signal.SIGINT)
        wait_group_gone(p, 10.0)
    assert p.wait(1) == 130
    assert leftovers(p.pid) == []


def test_copy_frame_reads_under_the_seqlock_and_takes_no_slot_credit():
    from trackpipe.pipeline.stages.web import copy_frame
    from trackpipe.pipeline.transport.messages import FrameMeta
    from trackpipe.pipeline.transport.ring import FrameRing

    ring = FrameRing.create(f"trackpipe_test_web_{os.getpid()}", 2, (360, 640, 3))
    try:
        frame = cv2.VideoCapture(str(VIDEO_360)).read()[1]
        ring.begin_write(1)
        ring.frame(1, frame.shape)[:] = frame
        ring.end_write(1, 41, frame.shape, time.time(), time.monotonic())
        meta = FrameMeta(seq=41, slot=1, t_capture=0.0, t_mono=0.0, shape=frame.shape)
        out = copy_frame(ring, meta)
        assert out is not None and np.array_equal(out, frame)
        ring.frame(1, frame.shape)[:] = 0                         # a private copy, not a view
        assert np.array_equal(out, frame)
        assert not ring.is_free(1)                                 # no credit taken: render releases
        ring.begin_write(1)                                        # capture rewriting the slot
        assert copy_frame(ring, meta) is None
        ring.end_write(1, 49, frame.shape, time.time(), time.monotonic())
        assert copy_frame(ring, meta) is None                      # reused for a later frame
    finally:
        ring.close()
        ring.unlink()


def test_web_config_from_the_run_config(monkeypatch):
    from trackpipe.pipeline.config import Config
    from trackpipe.pipeline.errors import ConfigError
    from trackpipe.pipeline.stages.web import web_config

    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    cfg = Config()
    cfg.output.http_port = 0
    w = web_config(cfg)
    assert (w.host, w.port, w.token) == ("127.0.0.1", 0, None)
    cfg.output.http_host = "0.0.0.0"
    with pytest.raises(ConfigError, match="TRACKPIPE_HTTP_TOKEN"):
        web_config(cfg)
    monkeypatch.setenv("TRACKPIPE_HTTP_TOKEN", "from-the-environment")
    assert web_config(cfg).token == "from-the-environment"
    cfg.output.http_token = "short"
    with pytest.raises(ConfigError, match="at least 8"):
        web_config(cfg)


def stage_pid(parent: int, stage: str) -> int:
    """The child of ``parent`` named tp-<stage>, or -1."""
    from pathlib import Path
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "comm").read_text().strip() == f"tp-{stage}" and \
                    int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                return int(d.name)
        except (OSError, ValueError, IndexError):
            continue
    return -1


@pytest.mark.timeout(180)
def test_a_killed_web_stage_is_restarted_and_a_file_run_goes_on(tmp_path):
    """The live view holds no frame: its death never stops a run, not even a lossless file run."""
    p = start_run(["--http-port", "0", "--profile", str(tmp_path / "p.json")], tmp_path, realtime=False)
    try:
        url = wait_url(p, tmp_path)
        wait_for(lambda: get_json(url + "api/cameras")["cameras"][0]["seq"] >= 0, 120, "a frame")
        os.kill(stage_pid(p.pid, "web"), signal.SIGKILL)
        wait_for(lambda: len(URL_LINE.findall(stderr_of(tmp_path))) == 2, 60, "the web stage to come back")
        url2 = URL_LINE.findall(stderr_of(tmp_path))[1]
        wait_for(lambda: get_json(url2 + "api/cameras")["cameras"][0]["seq"] >= 0, 60, "a frame after the restart")
        assert p.poll() is None
        assert "stage 'web' died (killed by SIGKILL); restarting it" in stderr_of(tmp_path)
    finally:
        os.killpg(p.pid, signal.SIGINT)
        wait_group_gone(p, 10.0)
    assert p.wait(1) == 130
    assert leftovers(p.pid) == []
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["stages"]["web"]["restarts"] == 1 and report["frames_out"] > 0


def test_the_web_stage_is_in_the_topology_only_when_asked_for():
    from trackpipe.pipeline.runtime.topology import Topology

    assert "web" not in Topology.build(1, sink=False)
    t = Topology.build(2, sink=False, web=True)
    assert t.names == ["capture", "infer", "track", "render", "web"]
    assert t.spec("web").upstream == "track" and not t.spec("web").terminal
    assert t.spec("track").downstream == ("render", "web") and t.terminal == ["render"]
    assert t.spec("capture").released_by == "render"              # the web stage never returns slots


@pytest.mark.timeout(180)
def test_live_view_of_two_cameras_one_of_them_rtsp(tmp_path):
    """A realtime file and a real RTSP camera in one run: both on the page's API with their own
    frames; the RTSP camera's server killed -> that camera alone shows as lost; Ctrl-C: clean."""
    from tests.rtsp.fixtures import RtspServer, rtsp_available
    ok, why = rtsp_available()
    if not ok:
        pytest.skip(f"RTSP test server unavailable: {why}")
    srv = RtspServer(width=320, height=240, fps=15).start()
    p = None
    try:
        srv.wait_ready(20)
        p = start_run(["--http-port", "0", "--source", srv.url, "--camera", "walk", "--camera", "gate",
                       "--set", "source.watchdog_s=2"], tmp_path)
        url = wait_url(p, tmp_path)

        def cams():
            return {c["name"]: c for c in get_json(url + "api/cameras")["cameras"]}

        wait_for(lambda: all(c["seq"] >= 0 for c in cams().values()) and len(cams()) == 2, 120,
                 "frames of both cameras")
        for name, shape in (("walk", (360, 640, 3)), ("gate", (240, 320, 3))):
            status, headers, body = get(url + f"api/cameras/{name}/latest.jpg")
            assert status == 200, name
            assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == shape
        srv.kill()
        wait_for(lambda: cams()["gate"]["state"] == "lost", 20, "the RTSP camera shown as lost")
        seq = cams()["walk"]["seq"]
        wait_for(lambda: cams()["walk"]["seq"] > seq + 10 and cams()["walk"]["state"] == "live", 20,
                 "the other camera going on")
        lost = [e for e in get_json(url + "api/events")["events"] if e["event"] == "source_lost"]
        assert [e["camera"] for e in lost] == ["gate"]
        os.killpg(p.pid, signal.SIGINT)
        wait_group_gone(p, 10)
        assert p.returncode == 130 and "Traceback" not in stderr_of(tmp_path)
        assert leftovers(p.pid) == []
    finally:
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        srv.close()


@pytest.mark.parametrize("clean_slots", [False, True])
def test_render_leaves_the_slots_clean_while_the_live_view_reads_them(tmp_path, clean_slots):
    """Lossless render draws on the slot in place, unless the live view reads the slots too: then
    on a private copy, so that the view's copy is the camera's frame (not boxes drawn twice)."""
    from types import SimpleNamespace

    from trackpipe.models.types import Tracks
    from trackpipe.pipeline.drawing.boxes import BoxAnnotator
    from trackpipe.pipeline.profiling.stats import StageStats
    from trackpipe.pipeline.stages.render import CameraOutput, RenderProcess
    from trackpipe.pipeline.transport.messages import FrameMeta, Tracked
    from trackpipe.pipeline.transport.ring import FrameRing
    from trackpipe.pipeline.video import VideoWriter

    frame = cv2.VideoCapture(str(VIDEO_360)).read()[1]
    ring = FrameRing.create(f"trackpipe_test_render_{os.getpid()}", 2, frame.shape)
    cam = SimpleNamespace(index=0, name="cam0", snapshots=None, info=SimpleNamespace(fps=30.0, width=640, height=360))
    out = CameraOutput(cam, ring, SimpleNamespace(send_multipart=lambda *a, **k: None), None, None)
    out.video = VideoWriter.open(tmp_path / "v.mp4", 30.0, frame.shape[:2])
    r = RenderProcess.__new__(RenderProcess)
    r.rc, r.clean_slots, r.outs, r.window, r.stats = SimpleNamespace(mode="lossless"), clean_slots, [out], None, \
        StageStats("render")
    r.annotator = BoxAnnotator(["person"])
    r.scratch = np.empty(frame.shape, np.uint8) if r._private() else None
    try:
        ring.begin_write(1)
        ring.frame(1, frame.shape)[:] = frame
        ring.end_write(1, 7, frame.shape, time.time(), time.monotonic())
        box = Tracks(np.array([[100, 100, 300, 300]], np.float32), np.array([0.9], np.float32),
                     np.zeros(1, np.int32), track_id=np.array([3], np.int64))
        meta = FrameMeta(seq=7, slot=1, t_capture=time.time(), t_mono=time.monotonic(), shape=frame.shape)
        assert r.render(Tracked(meta, box, False, 0.0, 0.0, []))
        assert out.video.frames == 1
        assert np.array_equal(ring.frame(1, frame.shape), frame) == clean_slots
    finally:
        out.video.close()
        ring.close()
        ring.unlink()


class EventStream:
    """An EventSource in a thread: reads ``url`` as Server-Sent Events and, like a browser,
    reconnects (every 0.3 s) with ``Last-Event-ID`` set to the last id it got. ``events``:
    [(id, event dict)] in the order received; ``connects``: how many times it connected."""

    def __init__(self, url: str):
        import threading
        self.url, self.events, self.connects, self.last_id = url, [], 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import http.client
        import urllib.parse
        u = urllib.parse.urlsplit(self.url)
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
            try:
                headers = {"Last-Event-ID": str(self.last_id)} if self.last_id is not None else {}
                conn.request("GET", f"{u.path}?{u.query}" if u.query else u.path, headers=headers)
                resp = conn.getresponse()
                if resp.status != 200:
                    raise ConnectionError(f"status {resp.status}")
                self.connects += 1
                eid, data = None, None
                while not self._stop.is_set():
                    try:
                        line = resp.readline()
                    except TimeoutError:
                        continue
                    if not line:
                        break
                    line = line.decode().rstrip("\n")
                    if line.startswith("id: "):
                        eid = int(line[4:])
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                    elif line == "" and data is not None:
                        self.events.append((eid, data))
                        self.last_id, data = eid, None
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            self._stop.wait(0.3)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def event_key(e: dict) -> tuple:
    """What tells one event from another in the events file and in the live view."""
    return e["event"], e.get("camera"), e.get("seq"), e.get("track_id"), e.get("zone"), e.get("line")


@pytest.mark.timeout(240)
def test_event_ids_outlive_a_restart_of_the_web_stage(tmp_path):
    """A client of the event stream whose web stage is SIGKILLed and restarted by the supervisor
    reconnects with its Last-Event-ID (to the same address, with --http-port 0 too) and gets
    every event it missed: what it got in all is the run's events file, in order, with no gap."""
    events_file = tmp_path / "events.jsonl"
    p = start_run(["--http-port", "0", "--events", str(events_file)], tmp_path)
    stream = None
    try:
        url = wait_url(p, tmp_path)
        stream = EventStream(url + "api/events/stream?since=0")
        wait_for(lambda: len(stream.events) >= 3, 120, "three events before the kill")
        before = len(stream.events)
        os.kill(stage_pid(p.pid, "web"), signal.SIGKILL)
        wait_for(lambda: len(URL_LINE.findall(stderr_of(tmp_path))) == 2, 60, "the web stage to come back")
        assert URL_LINE.findall(stderr_of(tmp_path))[1] == url          # the same port again
        wait_for(lambda: stream.connects >= 2, 30, "the client to reconnect")
        # events of the time it was down and of after the restart
        seq_at_restart = max(e["seq"] for _, e in stream.events)
        wait_for(lambda: len(stream.events) > before + 3 and stream.events[-1][1]["seq"] > seq_at_restart + 30,
                 90, "events after the restart")
        got = list(stream.events)
        in_file = wait_for(lambda: (lines := [json.loads(x) for x in events_file.read_text().splitlines()])
                           and event_key(got[-1][1]) in map(event_key, lines) and lines,
                           30, "the events file to have the last event received")
        assert p.poll() is None
    finally:
        if stream is not None:
            stream.close()
        os.killpg(p.pid, signal.SIGINT)
        wait_group_gone(p, 10.0)
    ids = [i for i, _ in got]
    assert ids == list(range(1, len(got) + 1)), ids                    # never reused, no gap
    assert [event_key(e) for _, e in got] == [event_key(e) for e in in_file[:len(got)]]
    assert all(e["event_seq"] == i for i, e in got)
    assert "stage 'web' died (killed by SIGKILL); restarting it" in stderr_of(tmp_path)
    assert leftovers(p.pid) == []
