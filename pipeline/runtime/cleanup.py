"""Per-run names and the removal of what a killed earlier run left behind.

Every run is ``trackpipe_<supervisor pid>_<random>``: the shared-memory segment is
``/dev/shm/trackpipe_<pid>_<rand>_ring`` and the ipc endpoints live in the private
(0700) directory ``<tmp>/trackpipe_<pid>_<rand>/``. A name whose pid is no longer
alive belongs to a dead run and is removed at the next start.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import secrets
import shutil
import tempfile
from typing import List, Tuple

from trackpipe.models.pids import pid_alive, pid_dead, unlink_all

log = logging.getLogger(__name__)

PREFIX = "trackpipe_"
SHM_DIR = "/dev/shm"
_NAME_RE = re.compile(r"^trackpipe_(\d+)_[0-9a-f]+")


def new_run_id() -> str:
    return f"{os.getpid()}_{secrets.token_hex(4)}"


def ipc_root() -> str:
    return tempfile.gettempdir()


def run_dir_path(run_id: str) -> str:
    return os.path.join(ipc_root(), PREFIX + run_id)


def ring_name(run_id: str) -> str:
    return f"{PREFIX}{run_id}_ring"


def make_run_dir(run_id: str) -> str:
    path = run_dir_path(run_id)
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)  # whatever the umask
    return path


def _owner_pid(name: str) -> int:
    m = _NAME_RE.match(os.path.basename(name))
    return int(m.group(1)) if m else -1


def run_artifacts(run_id: str) -> List[str]:
    """Paths a run with this id may have created (for tests and checks)."""
    return [p for p in (os.path.join(SHM_DIR, ring_name(run_id)), run_dir_path(run_id)) if os.path.exists(p)]


def artifacts_of_pid(pid: int) -> List[str]:
    pat = f"{PREFIX}{pid}_*"
    return sorted(glob.glob(os.path.join(SHM_DIR, pat)) + glob.glob(os.path.join(ipc_root(), pat)))


def remove_shm_of(pid: int) -> int:
    """Unlink the shared memory a dead process of this run named after itself (e.g. a stage's
    Triton region, ``trackpipe_<stage pid>_..._triton``) -> how many; none while it lives."""
    if pid_alive(pid):
        return 0
    return unlink_all(glob.glob(os.path.join(SHM_DIR, f"{PREFIX}{pid}_*")))


def clean_stale() -> Tuple[int, int]:
    """Remove trackpipe shared memory and ipc directories whose owner process is dead.

    -> (segments removed, directories removed)."""
    dirs = 0
    shm = unlink_all(path for path in glob.glob(os.path.join(SHM_DIR, PREFIX + "*")) if pid_dead(_owner_pid(path)))
    for path in glob.glob(os.path.join(ipc_root(), PREFIX + "*")):
        if pid_dead(_owner_pid(path)) and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            dirs += not os.path.exists(path)
    if shm or dirs:  # routine after a crash: nothing for the user to do
        log.debug("removed %d stale shared-memory segment(s) and %d ipc folder(s) of dead runs", shm, dirs)
    return shm, dirs


def remove_run(run_id: str) -> None:
    """Remove this run's segment and ipc folder (idempotent)."""
    try:
        os.unlink(os.path.join(SHM_DIR, ring_name(run_id)))
    except FileNotFoundError:
        pass
    shutil.rmtree(run_dir_path(run_id), ignore_errors=True)
