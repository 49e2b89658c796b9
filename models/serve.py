"""`python -m models serve --port P`: a real NVIDIA Triton Inference Server hosting our detector.

The server is the `tritonserver` binary bundled in the nvidia-pytriton wheel (installed with
``pip install --no-deps nvidia-pytriton``: its own Python proxy, and the numpy<2 pin that comes
with it, are not used). That build carries Triton's python backend only (no onnxruntime
backend), so the served model repository is `triton_repo`'s with ``backend: "python"``: Triton
receives the requests, forms the dynamic batches and keeps the statistics; the python backend's
stub runs `TritonPythonModel`, which concatenates each batch and runs it with our own backend
(``--backend auto``: the measured best pair on this machine, as in the pipeline).

The stub embeds the interpreter that runs `serve`: its version must be one the wheel has a stub
for, and it must be built with a shared libpython (pyenv's and Debian's are). `check_interpreter`
says which one fails, in one line. With this interpreter's bin directory first on PATH the stub
finds the same virtual environment (its site-packages, trackpipe included).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from .errors import ModelError

log = logging.getLogger(__name__)

WHEEL = "nvidia-pytriton==0.7.0"
INSTALL = f"pip install --no-deps {WHEEL}"
READY_TIMEOUT_S = 180.0     # a first start of backend auto measures the candidates


@dataclass(frozen=True)
class ServerFiles:
    """Where the wheel put the server: binary (tritonserver), libs (its shared libraries),
    python_backend (libtriton_python.so + utils) and stub (for this interpreter's version)."""

    binary: Path
    libs: Path
    python_backend: Path
    stub: Path


def find_server() -> ServerFiles:
    """The bundled server's files; ModelError naming the pip command when the wheel is missing."""
    spec = importlib.util.find_spec("pytriton")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"serve needs the Triton server of the nvidia-pytriton wheel, which is not installed: "
                         f"{INSTALL}")
    root = Path(list(spec.submodule_search_locations)[0])
    dist = root / "tritonserver"
    version = "%d.%d" % sys.version_info[:2]
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    files = ServerFiles(dist / "bin" / "tritonserver", root.parent / "nvidia_pytriton.libs",
                        dist / "backends" / "python", stub)
    if not files.binary.is_file():
        raise ModelError(f"the nvidia-pytriton wheel at {root} has no tritonserver binary; reinstall: {INSTALL}")
    if not files.stub.is_file():
        have = sorted(p.name for p in (dist / "python_backend_stubs").glob("*"))
        raise ModelError(f"the Triton python backend has no stub for Python {version} (it has {', '.join(have)}); "
                         f"run serve under one of those")
    return files


def check_interpreter() -> Path:
    """The directory of this interpreter's shared libpython, which the stub links to; ModelError
    (one line) when this Python was built without one."""
    libdir, lib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY") or ""
    version = sysconfig.get_config_var("VERSION")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir or not (Path(libdir) / lib).is_file():
        raise ModelError(f"serve runs the Triton python backend inside this interpreter ({sys.executable}), which was "
                         f"built without a shared libpython{version}.so; use a Python built with --enable-shared "
                         f"(pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared; Debian's python3) for the virtualenv")
    return Path(libdir)


def prepare_backends(files: ServerFiles, work: Path) -> Path:
    """``work/backends/python``: the python backend with this interpreter's stub. -> backends dir."""
    dst = work / "backends" / "python"
    dst.mkdir(parents=True, exist_ok=True)
    for f in files.python_backend.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)
    shutil.copy2(files.stub, dst / files.stub.name)
    return dst.parent


def server_env(files: ServerFiles, libpython: Path) -> dict:
    """The server's environment: its libraries and libpython found; this interpreter's bin directory
    first on PATH, so that the stub runs in the same (virtual) environment."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(libpython), str(files.libs)]
                                             + [p for p in [env.get("LD_LIBRARY_PATH", "")] if p])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def write_served_repo(spec, network, repo: Path, name: str, max_batch_size: int, queue_delay_us: int,
                      instances: int, probe: Optional[str] = None) -> Path:
    """The python-backend repository for ``spec`` (its mapping travels in config.pbtxt); ``probe``:
    real frames (a video, folder or glob) on which backend auto judges reduced precisions."""
    from .triton_repo import RepoModel, expected_io, write_repo  # noqa: PLC0415

    inp, outs = expected_io(network)
    mapping = spec.to_mapping()
    if mapping.get("cfg"):  # a resolved zoo model: its files, not its name again
        mapping["model"] = None
    params = {"spec": json.dumps(mapping), **({"probe": str(Path(probe).resolve())} if probe else {})}
    model = RepoModel(name, (inp,), outs, max_batch_size, queue_delay_us, instances, "KIND_CPU", "python", params)
    return write_repo(repo, model, replace=True)


def _preexec() -> None:  # runs in the child before exec: die with the parent (no orphaned server)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _children(pid: int) -> List[int]:
    """The pids whose parent is ``pid``."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _mapped_shm(pid: int) -> List[str]:
    """The /dev/shm files process ``pid`` maps (the python backend's regions)."""
    try:
        rows = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted({r.split(None, 5)[5] for r in rows if len(r.split(None, 5)) == 6
                   and r.split(None, 5)[5].startswith("/dev/shm/triton_python_backend_shm_region_")})


class TritonServer:
    """A running tritonserver (a child process) on ``repo``: start(), wait_ready(), stop(), kill().

    grpc_port/http_port on 127.0.0.1-reachable interfaces; metrics_port 0: no metrics endpoint.
    The server's output goes to ``log_path`` (default: a file in its work directory); ``extra``:
    more tritonserver options (e.g. ``--grpc-restricted-protocol=...`` to ask for a token).
    """

    def __init__(self, repo: Path, grpc_port: int, http_port: int, metrics_port: int = 0,
                 work: Optional[Path] = None, log_path: Optional[Path] = None, extra: tuple = ()):
        self.files = find_server()
        self.libpython = check_interpreter()
        self.repo = Path(repo)
        self.grpc_port, self.http_port, self.metrics_port = grpc_port, http_port, metrics_port
        self._own_work = work is None
        self.work = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="trackpipe-triton-"))
        self.backends = prepare_backends(self.files, self.work)
        self.log_path = Path(log_path) if log_path else self.work / "tritonserver.log"
        self.proc: Optional[subprocess.Popen] = None
        self.extra = list(extra)

    def command(self) -> List[str]:
        cmd = [str(self.files.binary), f"--model-repository={self.repo}", f"--backend-directory={self.backends}",
               f"--grpc-port={self.grpc_port}", f"--http-port={self.http_port}", "--exit-on-error=true",
               "--strict-model-config=true", "--log-verbose=0"]
        if self.metrics_port:
            cmd += [f"--metrics-port={self.metrics_port}", "--allow-metrics=true", "--allow-gpu-metrics=false"]
        else:
            cmd += ["--allow-metrics=false"]
        return cmd + self.extra

    def start(self) -> "TritonServer":
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.command(), stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=server_env(self.files, self.libpython),
                                         preexec_fn=_preexec)
        return self

    def ready(self, model: str = "") -> bool:
        url = f"http://127.0.0.1:{self.http_port}/v2" + (f"/models/{model}/ready" if model else "/health/ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, model: str = "", timeout: float = READY_TIMEOUT_S) -> None:
        """Until the server (and ``model``) is ready; ModelError with the server's reason when it
        exits first, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.ready(model):
            if self.proc is not None and self.proc.poll() is not None:
                raise ModelError(f"the Triton server exited (code {self.proc.returncode}): {self.failure()}")
            if time.monotonic() > deadline:
                raise ModelError(f"the Triton server was not ready in {timeout:.0f} s (its log: {self.log_path})")
            time.sleep(0.2)

    def failure(self) -> str:
        """The server log's most telling error line."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        for ln in lines:  # the model's own error (its Python traceback follows as literal \\n)
            if "failed to load '" in ln:
                return "failed to load " + ln.split("failed to load ", 1)[1].split("\\n")[0].strip('"')[:400]
        for ln in reversed(lines):
            if "error" in ln.lower():
                return ln.strip()[:400]
        return lines[-1].strip()[:400] if lines else "no output"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would. A python backend stub whose server dies in the middle of a
        request hangs (on a lock in the shared memory it shares with the server) instead of
        exiting: the stubs are SIGKILLed too and the server's shared memory regions unlinked."""
        if self.alive():
            stubs, regions = _children(self.proc.pid), _mapped_shm(self.proc.pid)
            self.proc.kill()
            self.proc.wait(30)
            for pid in stubs:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for path in regions:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def stop(self, timeout: float = 30.0) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        if self._own_work:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(spec, network, grpc_port: int, http_port: int, metrics_port: int = 0, name: Optional[str] = None,
          max_batch_size: int = 8, queue_delay_us: int = 2000, instances: int = 1,
          repo: Optional[Path] = None, on_ready=None, probe: Optional[str] = None,
          tls: Optional[tuple] = None) -> int:
    """Serve ``spec`` until SIGINT/SIGTERM (-> 0) or the server dies (ModelError). ``tls``: (PEM
    certificate, PEM key) files: gRPC over TLS (grpcs://; HTTP stays plain: tritonserver has no
    TLS for it)."""
    from .triton_repo import DEFAULT_NAME  # noqa: PLC0415

    if spec.backend == "triton":
        raise ModelError("serve runs the model here: choose a local --backend (default auto), not triton")
    name = name or DEFAULT_NAME
    stop = {"sig": None}

    def on_signal(sig, _frame):
        stop["sig"] = sig

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    work = Path(tempfile.mkdtemp(prefix="trackpipe-serve-"))
    try:
        repo_dir = Path(repo) if repo is not None else work / "repo"
        write_served_repo(spec, network, repo_dir, name, max_batch_size, queue_delay_us, instances, probe)
        extra = () if tls is None else ("--grpc-use-ssl=true", f"--grpc-server-cert={Path(tls[0]).resolve()}",
                                        f"--grpc-server-key={Path(tls[1]).resolve()}")
        with TritonServer(repo_dir, grpc_port, http_port, metrics_port, work=work, extra=extra) as server:
            server.start()
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not server.ready(name):
                if stop["sig"] is not None:
                    return 0
                if not server.alive():
                    raise ModelError(f"the Triton server exited (code {server.proc.returncode}): {server.failure()}")
                if time.monotonic() > deadline:
                    raise ModelError(f"the Triton server was not ready in {READY_TIMEOUT_S:.0f} s: {server.failure()}")
                time.sleep(0.2)
            line = (f"serving {name} on {'grpcs' if tls else 'grpc'}://127.0.0.1:{grpc_port} and "
                    f"http://127.0.0.1:{http_port} "
                    f"(dynamic batching up to {max_batch_size}, queue delay {queue_delay_us} us)")
            print(line, flush=True)
            if on_ready is not None:
                on_ready(server)
            while stop["sig"] is None:
                if not server.alive():
                    raise ModelError(f"the Triton server exited (code {server.proc.returncode}): {server.failure()}")
                time.sleep(0.2)
            return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        shutil.rmtree(work, ignore_errors=True)


class _DLTensor(ctypes.Structure):
    """DLPack's DLTensor (the head of DLManagedTensor)."""

    _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32),
                ("ndim", ctypes.c_int32), ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                ("lanes", ctypes.c_uint16), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


def _dlpack_copy(capsule) -> np.ndarray:
    """A float32 CPU DLPack capsule -> a C-contiguous copy of its tensor. The python backend stub's own
    ``as_numpy()`` reads wrong data under numpy 2, and ``np.from_dlpack`` renames the capsule, which
    the stub's destructor then rejects; reading it in place leaves the capsule as it was."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    t = _DLTensor.from_address(get(capsule, b"dltensor"))
    if t.device_type != 1 or (t.code, t.bits, t.lanes) != (2, 32, 1):  # kDLCPU, float32
        raise ValueError(f"expected a float32 CPU tensor, got device {t.device_type} dtype {(t.code, t.bits)}")
    shape = tuple(t.shape[i] for i in range(t.ndim))
    if t.strides:
        want, step = [], 1
        for d in reversed(shape):
            want.insert(0, step)
            step *= d
        if [t.strides[i] for i in range(t.ndim)] != want:
            raise ValueError("expected a C-contiguous tensor")
    n = int(np.prod(shape))
    buf = (ctypes.c_float * n).from_address(t.data + t.byte_offset)
    return np.frombuffer(buf, np.float32, n).reshape(shape).copy()


class _DLManaged(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _DLPackOut:
    """A float32 C-contiguous array offered by DLPack in a capsule of our own: numpy's own capsule,
    once the stub has consumed and renamed it, makes numpy's destructor raise. ``live`` (address ->
    what the tensor points into) keeps the array until the stub calls the deleter."""

    def __init__(self, arr: np.ndarray, live: dict, deleter):
        arr = np.ascontiguousarray(arr, np.float32)
        shape = (ctypes.c_int64 * arr.ndim)(*arr.shape)
        m = _DLManaged()
        t = m.dl_tensor
        t.data, t.device_type, t.device_id, t.ndim = arr.ctypes.data, 1, 0, arr.ndim
        t.code, t.bits, t.lanes = 2, 32, 1
        t.shape, t.strides, t.byte_offset = ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64)), None, 0
        m.deleter = ctypes.cast(deleter, ctypes.c_void_p)
        self.address = ctypes.addressof(m)
        live[self.address] = (arr, shape, m)

    def __dlpack__(self, *args, **kwargs):
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(self.address, b"dltensor", None)

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU


class TritonPythonModel:
    """Triton python backend model (loaded by the stub from the repository's model.py): builds our
    detector from the spec in config.pbtxt's parameters and runs each batch Triton formed in one
    call; requests (each (b_i, 3, H, W)) are concatenated and the heads split back."""

    def initialize(self, args) -> None:
        from .factory import build_detector  # noqa: PLC0415
        from .spec import ModelSpec  # noqa: PLC0415

        config = json.loads(args["model_config"])
        mapping = json.loads(config["parameters"]["spec"]["string_value"])
        probe = config["parameters"].get("probe", {}).get("string_value")
        frames = None
        if probe:  # as the pipeline's auto does with its source's frames
            from .quantize import read_calibration_frames  # noqa: PLC0415
            frames = read_calibration_frames(probe, 12)
        self.det = build_detector(ModelSpec.from_mapping(mapping), probe_frames=frames)
        self.outputs = [o["name"] for o in config["output"]]
        self.live: dict = {}   # DLPack outputs the stub still holds
        self.deleter = _DELETER(lambda address: self.live.pop(address, None))
        print(f"trackpipe: {config['name']} runs on {self.det.describe()}", flush=True)

    def execute(self, requests):
        import triton_python_backend_utils as pb  # noqa: PLC0415  (exists inside the stub only)

        blobs = [_dlpack_copy(pb.get_input_tensor_by_name(r, "image").to_dlpack()) for r in requests]
        sizes = [b.shape[0] for b in blobs]
        heads = self.det.infer(blobs[0] if len(blobs) == 1 else np.concatenate(blobs))
        out, start = [], 0
        for n in sizes:
            # DLPack: the stub's pb.Tensor(name, ndarray) sends empty data under numpy 2
            out.append(pb.InferenceResponse([pb.Tensor.from_dlpack(name, _DLPackOut(h[start:start + n], self.live,
                                                                                    self.deleter))
                                             for name, h in zip(self.outputs, heads)]))
            start += n
        return out

    def finalize(self) -> None:
        det = getattr(self, "det", None)
        if det is not None:
            det.close()
