"""Helpers for the tests and benchmarks that run the CLI as a subprocess: process groups, stage
processes, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path


def wait_for(cond, timeout: float, what: str):
    """Poll ``cond()`` every 0.1 s until it is truthy (-> its value); AssertionError naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def run_to_exit(cmd: list, cwd, env: dict, timeout: float) -> tuple:
    """Run ``cmd`` in its own process group, stderr captured -> (exit code, stderr, pid); the
    group is killed if it outlives ``timeout`` seconds."""
    p = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        _, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return p.returncode, err, p.pid


def metrics(port: int) -> dict:
    """A run's Prometheus metrics on 127.0.0.1:``port``: ``{'name{labels}': value}``; {} while
    nothing answers there."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in text.splitlines()
                                     if ln.startswith("trackpipe_"))}


def running_in_group(pgid: int) -> list:
    """Pids of process group ``pgid`` that are not zombies (an orphan's zombie waits for init to
    reap it, which on this VM's init takes seconds: a zombie holds nothing)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def stage_pid(parent: int, stage: str) -> int:
    """The running child of ``parent`` named tp-<stage> (stages set their process name), or -1."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if (d / "comm").read_text().strip() == f"tp-{stage}" and int(fields[1]) == parent and fields[0] != "Z":
                return int(d.name)
        except (OSError, ValueError, IndexError):
            continue
    return -1


def run_on_terminal(argv, env, timeout: float = 300.0, cwd=None, stamps=None) -> tuple:
    """Run ``argv`` with stderr on a pseudo-terminal (120x24, as a user's terminal: progress bars
    drawn; stdout discarded) -> (exit code, what the terminal received with '\\r\\n' made '\\n').
    ``stamps``: a list that gets (seconds since the start, text) for every piece received."""
    import errno
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(list(argv), cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    out = bytearray()
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError as e:  # EIO: every writer closed the terminal
                if e.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            out += chunk
            if stamps is not None:
                stamps.append((time.monotonic() - t0, chunk.decode(errors="replace")))
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, out.decode(errors="replace").replace("\r\n", "\n")


def screen_lines(text: str) -> list:
    """The lines left on the terminal: each line's last carriage-return segment, escapes removed."""
    import re
    lines = []
    for raw in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).split("\n"):
        shown = raw.split("\r")[-1].strip()
        if shown:
            lines.append(shown)
    return lines
