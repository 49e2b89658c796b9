"""A real small disk for the tests of full-disk behaviour: a tmpfs of a few MB (needs root, or
the right to mount; the tests skip with the reason otherwise)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "2m"):
    """Mount a ``size`` tmpfs on ``folder`` (created) for the ``with`` block; always unmounted."""
    folder.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                         check=False, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {(res.stderr or res.stdout).strip() or res.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def fill(folder: Path, leave: int = 0, name: str = "filler") -> Path:
    """A file that takes all but ``leave`` bytes of ``folder``'s disk."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    path = folder / name
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return path
