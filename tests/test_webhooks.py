"""Webhooks against a real local HTTP server (http.server on 127.0.0.1 in a thread):
200 OK in order, 500 then OK (retries), 404 (not retried), a server that never answers
(timeouts, bounded queue, counted drops, offer() never blocks), an unreachable URL; the outbox:
events a URL never took wait on disk and go first, in order, to the next sender or run of that
URL; its bound drops the oldest with a count."""

from __future__ import annotations

import http.server
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import ASSETS, COCO_NAMES, ROOT, YF_CFG, YF_WEIGHTS
from mqtt_broker import free_port, wait_until
from trackpipe.pipeline.events.config import EventConfigError, WebhookConfig
from trackpipe.pipeline.events.delivery import Backoff, BoundedQueue
from trackpipe.pipeline.events.webhook import WebhookSender

pytestmark = pytest.mark.timeout(120)


class HookServer:
    """A real HTTP server. mode: "ok" (200), "fail" (``status`` for the first ``fail_first``
    requests, then 200), "hang" (accepts, reads, never answers until close())."""

    def __init__(self, mode: str = "ok", fail_first: int = 0, status: int = 500, port: int = 0):
        self.mode, self.fail_first, self.status = mode, fail_first, status
        self.bodies, self.headers, self.requests = [], [], 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.requests += 1
                    n = outer.requests
                if outer.mode == "hang":
                    outer.release.wait(60)
                    return
                if outer.mode == "fail" and n <= outer.fail_first:
                    code = outer.status
                else:
                    code = 200
                    if outer.mode != "fail" or outer.status >= 500:
                        with outer.lock:
                            outer.bodies.append(json.loads(body))
                            outer.headers.append(dict(self.headers))
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request, monkeypatch, tmp_path):
    monkeypatch.setenv("TRACKPIPE_CACHE", str(tmp_path))   # the default outbox folder: this test's own
    s = HookServer(*getattr(request, "param", ("ok",)))
    yield s
    s.close()


def events(n, start=0):
    return [{"event": "line_cross", "id": f"e{i}", "camera": "cam", "line": "road", "n": i,
             "counts": {"in": i, "out": 0}} for i in range(start, start + n)]


def timed_offers(sender, items):
    worst = 0.0
    for e in items:
        t0 = time.perf_counter()
        sender.offer(e)
        worst = max(worst, time.perf_counter() - t0)
    return worst


def test_every_event_in_order(server, tmp_path):
    hook = WebhookSender(WebhookConfig(url=server.url)).start()    # the outbox in its default folder
    for e in events(40):
        hook.offer(e)
    assert wait_until(lambda: len(server.bodies) == 40, 60), server.bodies
    st = hook.close(5)
    assert [b["n"] for b in server.bodies] == list(range(40))
    assert server.headers[0]["Content-Type"] == "application/json"
    assert (st.sent, st.dropped, st.failed, st.rejected, st.queued, st.pending) == (40, 0, 0, 0, 0, 0)
    assert st.outbox.startswith(str(tmp_path / "outbox" / "webhook-127.0.0.1-"))   # <cache>/outbox
    assert st.outbox.endswith(".sqlite") and not os.path.exists(st.outbox)       # empty: no file left


@pytest.mark.parametrize("server", [("fail", 3, 500)], indirect=True)
def test_500_is_retried_then_delivered(server, caplog):
    caplog.set_level(logging.WARNING, logger="trackpipe.pipeline.events")
    hook = WebhookSender(WebhookConfig(url=server.url, backoff_initial_s=0.05, backoff_max_s=0.2)).start()
    for e in events(5):
        hook.offer(e)
    assert wait_until(lambda: len(server.bodies) == 5, 60)
    st = hook.close(5)
    assert [b["n"] for b in server.bodies] == list(range(5))      # the first was retried, order kept
    assert server.requests == 8 and st.failed == 3 and st.sent == 5 and st.dropped == 0
    lines = [r.getMessage() for r in caplog.records]
    assert sum("HTTP 500" in m for m in lines) == 3, lines          # one line per backoff step
    assert sum("delivering again after 3 failed" in m for m in lines) == 1


@pytest.mark.parametrize("server", [("fail", 10**6, 404)], indirect=True)
def test_4xx_is_not_retried(server):
    hook = WebhookSender(WebhookConfig(url=server.url, backoff_initial_s=0.05)).start()
    for e in events(6):
        hook.offer(e)
    assert wait_until(lambda: hook.stats().rejected == 6, 60)
    st = hook.close(5)
    assert server.requests == 6 and st.failed == 0 and st.sent == 0 and "HTTP 404" in st.last_error


@pytest.mark.parametrize("server", [("hang",)], indirect=True)
def test_server_that_never_answers(server, caplog):
    caplog.set_level(logging.WARNING, logger="trackpipe.pipeline.events")
    hook = WebhookSender(WebhookConfig(url=server.url, timeout_s=0.3, queue_size=5, outbox=False,
                                       backoff_initial_s=0.05, backoff_max_s=0.2)).start()
    worst = timed_offers(hook, events(200))
    assert worst < 0.5, f"offer() blocked {worst:.3f}s"          # generous: it only appends to a deque
    assert wait_until(lambda: hook.stats().failed >= 2, 60)
    st = hook.stats()
    assert st.queued <= 5 and st.dropped >= 200 - 5 - 1 and st.sent == 0 and not st.connected
    assert "no answer within 0.3s" in st.last_error
    t0 = time.monotonic()
    st = hook.close(timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert st.offered == 200 and st.sent == 0 and st.dropped + st.queued >= 199
    assert any("no answer within 0.3s" in r.getMessage() for r in caplog.records)


def test_unreachable_url_logs_once_per_backoff_step(caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="trackpipe.pipeline.events")
    monkeypatch.setenv("HOOK_TOKEN", "s3cr3t-token")
    url = f"http://user:pa55word@127.0.0.1:{free_port()}/hook?key=qu3ry-secret"
    cfg = WebhookConfig(url=url, headers={"Authorization": "Bearer ${HOOK_TOKEN}"}, queue_size=10,
                        backoff_initial_s=0.1, backoff_max_s=0.4, outbox=False)
    hook = WebhookSender(cfg).start()
    worst = timed_offers(hook, events(100))
    assert worst < 0.5
    t0 = time.monotonic()
    assert wait_until(lambda: hook.stats().failed >= 4, 60)
    elapsed = time.monotonic() - t0
    st = hook.close(1.0)
    lines = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    # one line per failed attempt, and attempts are spaced by the backoff (>= 0.08 s each after the first)
    assert len(lines) == st.failed and len(lines) <= 2 + (elapsed + 1.0) / 0.08
    assert st.dropped >= 89 and st.sent == 0
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(hook) + repr(cfg) + str(st)
    for secret in ("pa55word", "qu3ry-secret", "s3cr3t-token", "user:"):
        assert secret not in text
    assert "http://***@127.0.0.1:" in hook.name


def test_headers_from_env_reach_the_server(server, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", "abc123")
    hook = WebhookSender(WebhookConfig.from_dict({"url": server.url,
                                                 "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"},
                                                 "events": ["line_cross"]})).start()
    hook.offer({"event": "zone_enter", "n": -1})          # filtered out by `events`
    hook.offer(events(1)[0])
    assert wait_until(lambda: len(server.bodies) == 1, 60)
    hook.close(5)
    assert server.headers[0]["Authorization"] == "Bearer abc123" and server.bodies[0]["n"] == 0


def test_config_errors():
    with pytest.raises(EventConfigError, match="webhook.url: expected http"):
        WebhookConfig.from_dict({"url": "ftp://x"})
    with pytest.raises(EventConfigError, match="unknown key 'retry'"):
        WebhookConfig.from_dict({"url": "http://x", "retry": 3})


def test_bounded_queue_drops_oldest_and_backoff_is_capped():
    q = BoundedQueue({"event": 3, "snapshot": 1})
    assert [q.put(i) for i in range(5)] == [True, True, True, False, False]
    assert q.put("s1", "snapshot") and not q.put("s2", "snapshot")
    assert [q.get(0)[1] for _ in range(4)] == [2, 3, 4, "s2"] and q.get(0.01) is None
    assert q.dropped == {"event": 2, "snapshot": 1}
    b = Backoff(0.5, 4.0, jitter=0.2)
    d = [b.next() for _ in range(8)]
    assert all(0.4 <= x <= 0.5 for x in d[:1]) and all(3.2 <= x <= 4.0 for x in d[4:])


# --- the outbox -----------------------------------------------------------------------------

def test_events_a_url_never_took_go_first_to_its_next_sender(tmp_path, caplog):
    """A URL that never answers: the events wait in its outbox (nothing dropped); the next
    sender of that URL (the next run) delivers them first, in order, once it answers."""
    caplog.set_level(logging.INFO, logger="trackpipe.pipeline.events")
    cfg = dict(timeout_s=0.3, backoff_initial_s=0.05, backoff_max_s=0.2, outbox={"dir": str(tmp_path)})
    hang = HookServer("hang")
    port = hang.httpd.server_address[1]
    try:
        first = WebhookSender(WebhookConfig(url=hang.url, **cfg)).start()
        assert timed_offers(first, events(30)) < 0.5                    # offer() never blocks
        assert wait_until(lambda: first.stats().failed >= 2, 60)
        st = first.close(1.0)
    finally:
        hang.close()
    assert (st.offered, st.sent, st.dropped, st.pending, st.restored) == (30, 0, 0, 30, 0)
    assert os.path.exists(st.outbox) and os.path.dirname(st.outbox) == str(tmp_path)
    ok = HookServer("ok", port=port)                                     # the same URL answers now
    try:
        second = WebhookSender(WebhookConfig(url=ok.url, **cfg)).start()
        for e in events(5, start=30):
            second.offer(e)
        assert wait_until(lambda: len(ok.bodies) >= 35, 60), ok.bodies
        st2 = second.close(5)
    finally:
        ok.close()
    assert [b["n"] for b in ok.bodies] == list(range(35))               # the earlier run's first, in order
    assert (st2.restored, st2.offered, st2.sent, st2.pending, st2.dropped) == (30, 5, 35, 0, 0)
    assert st2.outbox == st.outbox and not os.path.exists(st.outbox)
    assert any("30 undelivered event(s) from an earlier run" in r.getMessage() for r in caplog.records)


def test_outbox_bound_drops_the_oldest_with_a_count(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="trackpipe.pipeline.events")
    port = free_port()                                                   # nothing listens yet
    cfg = WebhookConfig(url=f"http://127.0.0.1:{port}/hook", backoff_initial_s=0.05, backoff_max_s=0.2,
                        outbox={"dir": str(tmp_path), "max_events": 10})
    first = WebhookSender(cfg).start()
    for e in events(50):
        first.offer(e)
    assert wait_until(lambda: first.stats().failed >= 2, 60)
    st = first.close(1.0)
    assert (st.offered, st.sent, st.pending, st.dropped) == (50, 0, 10, 40)   # offered == pending + dropped
    full = [r.getMessage() for r in caplog.records if "outbox full" in r.getMessage()]
    assert len(full) == 1 and "the oldest are dropped" in full[0]       # one line, not one per event
    ok = HookServer("ok", port=port)
    try:
        second = WebhookSender(cfg).start()
        assert wait_until(lambda: len(ok.bodies) >= 10, 60)
        st2 = second.close(5)
    finally:
        ok.close()
    assert [b["n"] for b in ok.bodies] == list(range(40, 50))            # the newest 10, in order
    assert (st2.restored, st2.sent, st2.pending) == (10, 10, 0)


TRAFFIC = ASSETS / "video" / "traffic-cars.mp4"
MODEL = ["--cfg", str(YF_CFG), "--weights", str(YF_WEIGHTS), "--names", str(COCO_NAMES), "--size", "320",
         "--backend", "onnx", "--precision", "fp32"]


def _run(tmp_path, name: str, url: str, frames: int) -> subprocess.CompletedProcess:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"webhooks:\n  - url: {url}\n    timeout_s: 0.5\n    backoff_initial_s: 0.1\n"
                   f"    backoff_max_s: 0.5\n    outbox: {{dir: {tmp_path / 'outbox'}}}\n")
    return subprocess.run([sys.executable, str(ROOT / "run_tracker.py"), "--source", str(TRAFFIC), *MODEL,
                           "--headless", "--max-frames", str(frames), "--config", str(cfg),
                           "--events", str(tmp_path / f"{name}.jsonl"), "--profile", str(tmp_path / f"{name}.json")],
                          cwd=str(ROOT), env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True, text=True,
                          timeout=150)


@pytest.mark.timeout(320)
def test_run_keeps_what_a_silent_webhook_never_took_and_the_next_run_delivers_it(tmp_path):
    hang = HookServer("hang")
    port = hang.httpd.server_address[1]
    try:
        r1 = _run(tmp_path, "run1", hang.url, 90)
    finally:
        hang.close()
    assert r1.returncode == 0, r1.stderr
    ev1 = [json.loads(ln) for ln in (tmp_path / "run1.jsonl").read_text().splitlines()]
    p1 = json.loads((tmp_path / "run1.json").read_text())["delivery"][f"webhook {hang.url}"]
    assert len(ev1) >= 3 and (p1["delivered"], p1["pending"], p1["dropped"]) == (0, len(ev1), 0)
    last = r1.stderr.strip().splitlines()[-1]                           # the final line says so
    assert "WARNING events: webhook" in last and f"delivered 0, pending {len(ev1)} (in " in last, last
    ok = HookServer("ok", port=port)
    try:
        r2 = _run(tmp_path, "run2", ok.url, 30)
        assert r2.returncode == 0, r2.stderr
        ev2 = [json.loads(ln) for ln in (tmp_path / "run2.jsonl").read_text().splitlines()]
        assert wait_until(lambda: len(ok.bodies) >= len(ev1) + len(ev2), 10)
    finally:
        ok.close()
    def key(e):
        return e["event"], e.get("track_id"), e.get("seq")
    assert [key(b) for b in ok.bodies] == [key(e) for e in ev1 + ev2]    # run 1's events first, in order
    p2 = json.loads((tmp_path / "run2.json").read_text())["delivery"][f"webhook {ok.url}"]
    assert (p2["delivered"], p2["pending"], p2["dropped"]) == (len(ev1) + len(ev2), 0, 0)
    assert r2.stderr.strip().splitlines()[-1].endswith(f"delivered {len(ev1) + len(ev2)}, pending 0, dropped 0")
    assert not os.listdir(tmp_path / "outbox") or all(f.endswith(".lock") for f in os.listdir(tmp_path / "outbox"))
