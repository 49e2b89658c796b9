"""Process liveness and file removal shared by the pipeline's clean-up and the Triton backend's
shared-memory regions (both remove what a dead process left in /dev/shm)."""

from __future__ import annotations

import os
from collections.abc import Iterable


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts as alive; pid <= 0 never does)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_dead(pid: int) -> bool:
    """Whether ``pid`` names a process (> 0) that is gone: what it left behind may be removed."""
    return pid > 0 and not pid_alive(pid)


def unlink_all(paths: Iterable[str]) -> int:
    """Unlink each of ``paths`` that can be -> how many were."""
    n = 0
    for path in paths:
        try:
            os.unlink(path)
            n += 1
        except OSError:
            pass
    return n
