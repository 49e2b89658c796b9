"""The on-disk outbox of a delivery target (pipeline/events/outbox.py): order, bounds that drop
the oldest with a count, one process per file, rows that outlive a SIGKILLed writer, settings.
Delivery through it against real servers: tests/test_webhooks.py and tests/test_mqtt.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from trackpipe.pipeline.events.config import EventConfigError, MqttConfig, WebhookConfig
from trackpipe.pipeline.events.outbox import Outbox, OutboxBusy, OutboxConfig, OutboxError, target_key

pytestmark = pytest.mark.timeout(60)


def body(i: int, size: int = 0) -> bytes:
    return (f'{{"n":{i}}}' + " " * size).encode()


def ns(rows):
    return [int(r.body.decode().split(":")[1].split("}")[0]) for r in rows]


def test_order_and_rows_outlive_a_reopen(tmp_path):
    path = tmp_path / "box.sqlite"
    box = Outbox.open(path, max_events=100, max_bytes=10**6, target="webhook http://h/hook")
    assert box.add([("t/a", body(i)) for i in range(5)]) == 0
    first = box.next_after(0)[0]
    assert (ns([first]), first.route) == ([0], "t/a")
    assert box.delete([first.id]) == 1 and box.delete([first.id]) == 0    # a row is removed once
    box.close()
    box = Outbox.open(path, max_events=100, max_bytes=10**6)
    assert len(box) == 4 and ns(box.next_after(0, limit=10)) == [1, 2, 3, 4]
    rows = box.next_after(0, limit=10)
    assert ns(box.next_after(rows[1].id, limit=10)) == [3, 4]             # after a cursor
    box.add([("t/a", body(5))])
    assert rows[-1].id < box.next_after(rows[-1].id)[0].id                 # ids only grow
    box.delete([r.id for r in box.next_after(0, limit=10)])
    assert len(box) == 0 and box.nbytes == 0
    box.close()
    assert not path.exists()      # an empty outbox leaves no file: a file means events wait


def test_bounds_drop_the_oldest_with_a_count(tmp_path):
    box = Outbox.open(tmp_path / "n.sqlite", max_events=10, max_bytes=10**6)
    assert box.add([("", body(i)) for i in range(7)]) == 0
    assert box.add([("", body(i)) for i in range(7, 15)]) == 5             # 15 > 10: the 5 oldest
    assert len(box) == 10 and ns(box.next_after(0, limit=100)) == list(range(5, 15))
    box.close()
    one = len(body(0, 90))
    box = Outbox.open(tmp_path / "b.sqlite", max_events=1000, max_bytes=3 * one)
    assert box.add([("", body(i, 90)) for i in range(3)]) == 0
    assert box.add([("", body(3, 90))]) == 1 and ns(box.next_after(0, limit=9)) == [1, 2, 3]
    assert box.add([("", body(4, 5 * one))]) == 4 and len(box) == 0        # larger than the bound itself
    box.close()
    # lowered bounds apply when the file is opened again
    box = Outbox.open(tmp_path / "n.sqlite", max_events=4, max_bytes=10**6)
    assert ns(box.next_after(0, limit=100)) == [11, 12, 13, 14]
    box.close()


def test_one_process_per_outbox(tmp_path):
    path = tmp_path / "busy.sqlite"
    box = Outbox.open(path, 10, 10**6)
    with pytest.raises(OutboxBusy, match=rf"held by another process \(pid {os.getpid()}\)"):
        Outbox.open(path, 10, 10**6)
    box.add([("", body(1))])
    box.close()
    again = Outbox.open(path, 10, 10**6)         # released by close
    assert len(again) == 1
    again.close()
    box.close()                                  # twice: a no-op
    assert box.next_after(0) == [] and box.delete([1]) == 0


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from trackpipe.pipeline.events.outbox import Outbox
    box = Outbox.open(Path(sys.argv[1]), 1000, 10**6)
    for i in range(20):
        box.add([("", ('{"n":%d}' % i).encode())])
    print("READY", flush=True)
    time.sleep(600)
""")


def test_committed_rows_outlive_a_killed_writer(tmp_path):
    path = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    box = Outbox.open(path, 1000, 10**6)          # the kernel released the lock with the process
    assert ns(box.next_after(0, limit=100)) == list(range(20))
    box.close()


def test_unreadable_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="junk.sqlite"):
        Outbox.open(path, 10, 10**6)
    assert path.read_bytes().startswith(b"this is not")     # left as it was
    with pytest.raises(OutboxError) as e:                   # and not held by the failed open
        Outbox.open(path, 10, 10**6)
    assert not isinstance(e.value, OutboxBusy)


def test_settings():
    assert OutboxConfig.parse(None) == OutboxConfig() and OutboxConfig.parse(True).enabled
    assert not OutboxConfig.parse(False).enabled
    assert OutboxConfig.parse("/var/spool/tp").path_for("k").as_posix() == "/var/spool/tp/k.sqlite"
    c = OutboxConfig.parse({"max_events": 5, "max_mb": 0.5})
    assert (c.max_events, c.max_bytes) == (5, 500_000)
    assert OutboxConfig().path_for("k").parent.name == "outbox"
    w = WebhookConfig.from_dict({"url": "http://h/x", "outbox": {"dir": "/tmp/o", "max_events": 3}})
    assert w.outbox.max_events == 3 and w.outbox.dir == "/tmp/o"
    assert MqttConfig.from_dict({"url": "mqtt://b", "outbox": False}).outbox.enabled is False
    with pytest.raises(EventConfigError, match=r"^mqtt.outbox.max_events: expected an integer 1..100000000, got 0$"):
        MqttConfig.from_dict({"url": "mqtt://b", "outbox": {"max_events": 0}})
    with pytest.raises(EventConfigError, match=r"webhook.outbox: unknown key 'size' \(allowed: enabled, dir, "):
        WebhookConfig.from_dict({"url": "http://h/x", "outbox": {"size": 3}})
    with pytest.raises(EventConfigError, match=r"mqtt.outbox: expected true, false, a folder or a mapping"):
        MqttConfig.from_dict({"url": "mqtt://b", "outbox": 3})


def test_target_key_names_the_host_and_hides_credentials():
    a = target_key("webhook", "hooks.example.com", 443, "https://u:pa55@hooks.example.com/x?key=s3cret")
    b = target_key("webhook", "hooks.example.com", 443, "https://hooks.example.com/x?key=other")
    assert a.startswith("webhook-hooks.example.com-443-") and a != b
    assert "pa55" not in a and "s3cret" not in a and "/" not in a
