"""Webhooks against a real local HTTP server (http.server on 127.0.0.1 in a thread):
200 OK in order, 500 then OK (retries), 404 (not retried), a server that never answers
(timeouts, bounded queue, counted drops, offer() never blocks), an unreachable URL."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time

import pytest

from mqtt_broker import free_port, wait_until
from trackpipe.pipeline.events.config import EventConfigError, WebhookConfig
from trackpipe.pipeline.events.delivery import Backoff, BoundedQueue
from trackpipe.pipeline.events.webhook import WebhookSender

pytestmark = pytest.mark.timeout(120)


class HookServer:
    """A real HTTP server. mode: "ok" (200), "fail" (``status`` for the first ``fail_first``
    requests, then 200), "hang" (accepts, reads, never answers until close())."""

    def __init__(self, mode: str = "ok", fail_first: int = 0, status: int = 500):
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

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
def server(request):
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


def test_every_event_in_order(server):
    hook = WebhookSender(WebhookConfig(url=server.url)).start()
    for e in events(40):
        hook.offer(e)
    assert wait_until(lambda: len(server.bodies) == 40, 60), server.bodies
    st = hook.close(5)
    assert [b["n"] for b in server.bodies] == list(range(40))
    assert server.headers[0]["Content-Type"] == "application/json"
    assert (st.sent, st.dropped, st.failed, st.rejected, st.queued) == (40, 0, 0, 0, 0)


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
    hook = WebhookSender(WebhookConfig(url=server.url, timeout_s=0.3, queue_size=5,
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
                        backoff_initial_s=0.1, backoff_max_s=0.4)
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
