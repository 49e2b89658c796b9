"""Triton system shared memory: the input blob and the heads of backend triton through one POSIX
shared-memory region registered with a server on this host, instead of inside the gRPC/HTTP
messages.

The region is ``/dev/shm/trackpipe_<pid>_<random>_triton`` (``pid``: the process of the detector,
e.g. the infer stage), sized for the served model's ``max_batch_size`` frames:

    [0, in)                  input "image"   (max_batch, 3, H, W) float32
    [in, in + out_0)         output head_0   (max_batch, A*(5+C), h0, w0) float32
    ...                      one part per output, in the detector's output order

A request of B frames uses the first B frames of each part. The region is registered with the
server under its own name (a name is unique per detector), unregistered and unlinked on close.
The name follows `pipeline.runtime.cleanup`'s run names, so a region of a killed process is
removed by the next run's ``clean_stale()``; a detector made again in a restarted stage also
removes the regions of dead processes at once, on this host and in the server's registrations
(the server keeps a region mapped until it is unregistered).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
from multiprocessing import resource_tracker, shared_memory
from typing import Iterable, List, Sequence, Tuple

import numpy as np

from ..pids import pid_dead, unlink_all

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
SUFFIX = "_triton"
NAME_RE = re.compile(r"^trackpipe_(\d+)_[0-9a-f]+_triton$")


def is_local(host: str) -> bool:
    """``host`` (a URL's host, IPv6 without brackets) is this machine by its loopback name:
    localhost, 127.0.0.0/8 or ::1. Names are not resolved."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def remote_error(url: str) -> str:
    """The line for ``triton_shm: on`` with a server that is not on this host."""
    return (f"triton_shm: on needs the Triton server on this host (a loopback URL: localhost, 127.0.0.0/8, ::1), "
            f"got {url}; use auto or off")


def new_name() -> str:
    """A region name unique to this detector: ``trackpipe_<pid>_<random>_triton``."""
    return f"trackpipe_{os.getpid()}_{secrets.token_hex(4)}{SUFFIX}"


def owner_pid(name: str) -> int:
    """The pid in a region name of ours, else -1."""
    m = NAME_RE.match(name.lstrip("/"))
    return int(m.group(1)) if m else -1


def stale(names: Iterable[str]) -> List[str]:
    """The names of ours (`NAME_RE`) whose process is gone."""
    return [n for n in names if pid_dead(owner_pid(n))]


def remove_stale_files() -> int:
    """Unlink /dev/shm regions of ours whose process is gone. -> how many."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    return unlink_all(os.path.join(SHM_DIR, name) for name in stale(names))


class ShmRegion:
    """One region for a request of up to ``max_batch`` frames: the input part and one part per
    output. ``frame_bytes``: the bytes of one frame of the input, then of each output (float32).
    Not tracked by multiprocessing's resource tracker: the owner unlinks it (`close`), and a killed
    owner's region is removed by name (module docstring)."""

    def __init__(self, max_batch: int, frame_bytes: Sequence[int]):
        self.max_batch = int(max_batch)
        self.frame_bytes = tuple(int(b) for b in frame_bytes)
        sizes = [self.max_batch * b for b in self.frame_bytes]
        self.offsets = tuple(int(o) for o in np.cumsum([0] + sizes[:-1]))
        self.byte_size = int(sum(sizes))
        self.name = new_name()
        self._shm = shared_memory.SharedMemory(self.name, create=True, size=self.byte_size)
        resource_tracker.unregister(self._shm._name, "shared_memory")  # noqa: SLF001  (ours to unlink)

    @property
    def key(self) -> str:
        """The POSIX name the server opens (``/<name>``)."""
        return "/" + self.name

    def part(self, index: int, batch: int) -> Tuple[int, int]:
        """(offset, bytes) of part ``index`` (0: the input, 1...: the outputs) for ``batch`` frames."""
        if not 1 <= batch <= self.max_batch:
            raise ValueError(f"batch {batch} is outside [1, {self.max_batch}]")
        return self.offsets[index], batch * self.frame_bytes[index]

    def write_input(self, blob: np.ndarray) -> int:
        """Copy the (B, 3, H, W) float32 blob into the input part. -> its bytes."""
        offset, size = self.part(0, blob.shape[0])
        view = np.ndarray(blob.shape, np.float32, buffer=self._shm.buf, offset=offset)
        view[...] = blob
        return size

    def read_output(self, index: int, shape: Sequence[int]) -> np.ndarray:
        """A copy of output ``index`` (0-based), ``shape`` (B, ...) float32: the next request
        writes over the region."""
        offset, _ = self.part(index + 1, int(shape[0]))
        return np.ndarray(tuple(shape), np.float32, buffer=self._shm.buf, offset=offset).copy()

    def close(self) -> None:
        """Unmap and unlink (idempotent)."""
        shm, self._shm = getattr(self, "_shm", None), None
        if shm is None:
            return
        try:
            shm.close()
        except BufferError:  # an array still views the buffer: the mapping goes with the process
            pass
        try:  # not shm.unlink(): that would tell the resource tracker, which never knew of it
            os.unlink(os.path.join(SHM_DIR, self.name))
        except FileNotFoundError:
            pass


def free_bytes() -> int:
    """Free space of /dev/shm (a container's may be small: 64 MiB by default), -1 if unknown."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


def registered_names(status) -> List[str]:
    """Region names in a system shared memory status answer (gRPC JSON: {"regions": {name: ...}};
    HTTP: [{"name": ...}, ...])."""
    if isinstance(status, dict):
        regions = status.get("regions", {})
        return list(regions) if isinstance(regions, dict) else [r.get("name", "") for r in regions]
    return [r.get("name", "") for r in status or [] if isinstance(r, dict)]
