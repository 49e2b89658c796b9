"""NVIDIA Triton Inference Server backend: the network runs on a Triton server, our
pre-processing and decoding run here (the same `Detections` as every backend).

    --backend triton --triton-url grpc://HOST:8001 [--triton-model NAME] [--triton-version N]

URLs: ``grpc://`` (default port 8001) and ``http://`` (8000); ``grpcs://`` / ``https://`` use TLS
(the system's root certificates). A bearer token, where the server asks for one, is read from
$TRACKPIPE_TRITON_TOKEN (never from a config file) and sent as ``Authorization: Bearer ...``.

The served model is our ONNX export (`python -m models export --format triton`, or
`python -m models serve`): input "image" (B, 3, H, W) float32, outputs "head_<i>"
(B, A*(5+C), h, w). At start the server must answer (else BackendUnavailable naming the URL)
and serve that model with those shapes (else ModelConfigError, one line).

Faults while running: a request that fails because the server went away (connection refused,
unavailable, the model not loaded yet) is retried with a fresh connection every ``RETRY_S``
seconds until it succeeds: no frame is lost. ``on_wait(lost, reason)`` (set by the infer stage)
is called on each retry and says whether to keep waiting; without it the error is raised.
``state`` is "ok" or "lost"; ``lost_count`` counts the outages.

System shared memory (spec ``triton_shm``; the region: `triton_shm`): with a server on this host
(a loopback URL) the blob and the heads go through one POSIX shared-memory region registered with
the server, not inside the messages. ``auto``: on for a loopback host, and when the server refuses
the region (e.g. in a container with a /dev/shm of its own) one INFO line and the messages
instead; ``on``: that refusal is an error (one line); ``off``: never. A server that comes back
after an outage has forgotten the region: it is registered again before the next request.

`wait_for_server`: an absent server waited for at start (``triton_wait``), as an absent camera is.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Callable, List, Optional

import numpy as np

from ..detector import Detector
from ..errors import BackendUnavailable, ModelConfigError, ModelError, require
from ..triton_repo import DEFAULT_NAME, TritonURL, expected_io, parse_url, spec_url
from .triton_shm import ShmRegion, free_bytes, is_local, registered_names, remote_error, remove_stale_files, stale

log = logging.getLogger(__name__)

RETRY_S = 0.25             # a lost server is asked again this often
PROBE_TIMEOUT_S = 5.0      # one question to a server that may not be there (`server_answers`)
TOKEN_ENV = "TRACKPIPE_TRITON_TOKEN"
LATENCY_WINDOW = 1000      # client-side latencies kept for the profile


class DetectorStopped(ModelError):
    """The run stopped while the detector waited for its server."""


def _client_module(protocol: str):
    if protocol == "grpc":   # gRPC's own INFO lines (a failed TLS handshake...) would add to our one line
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    return require(f"tritonclient.{protocol}", "triton", "the triton backend")


def make_client(url: TritonURL):
    """A tritonclient InferenceServerClient for ``url`` (gRPC or HTTP)."""
    mod = _client_module(url.protocol)
    if url.protocol == "grpc":
        return mod.InferenceServerClient(url.address, ssl=url.ssl, root_certificates=url.ca)
    return mod.InferenceServerClient(url.address, ssl=url.ssl, connection_timeout=5.0, network_timeout=60.0,
                                     ssl_options={"ca_certs": url.ca} if url.ca else None)


def auth_headers() -> Optional[dict]:
    """$TRACKPIPE_TRITON_TOKEN as ``authorization: Bearer ...`` (for a proxy in front of the server),
    and as Triton's own restricted-protocol header of that key (tritonserver
    ``--grpc-restricted-protocol=inference:authorization=Bearer ...``). gRPC keys are lower case."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return None
    return {"authorization": f"Bearer {token}", "triton-grpc-protocol-authorization": f"Bearer {token}"}


def _reason(e: BaseException) -> str:
    msg = getattr(e, "message", None)
    text = (msg() if callable(msg) else None) or str(e) or type(e).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return ("its TLS certificate is not trusted here (give the authority that signed it: --triton-ca FILE, "
                "model.triton_ca)")
    return text.strip().splitlines()[0][:200]


def _fatal(e: BaseException) -> bool:
    """An error no retry can mend (the request is wrong, or not allowed), vs. the server being away."""
    status = str(getattr(e, "status", lambda: "")() or "")
    return (any(k in status for k in ("INVALID_ARG", "UNAUTHENTICATED", "PERMISSION_DENIED"))
            or status in ("400", "401", "403") or "restricted" in _reason(e))


class TritonDetector(Detector):
    """Sends the pre-processed batch (B, 3, H, W) float32 to Triton, decodes the returned heads."""

    name = "triton"

    def __init__(self, spec, network, names):
        super().__init__(spec, network, names)
        if spec.precision not in ("fp32", "auto"):
            raise BackendUnavailable(f"the triton backend runs the server's model as it is: precision "
                                     f"{spec.precision} is chosen when the model repository is written, not here")
        self.url = spec_url(spec)
        self.model_name = getattr(spec, "triton_model", None) or DEFAULT_NAME
        self.version = str(getattr(spec, "triton_version", None) or "")
        self.headers = auth_headers()
        self.on_wait: Optional[Callable[[bool, str], bool]] = None
        self.state = "ok"
        self.lost_count = 0
        self.requests = 0
        self.latency_ms: deque = deque(maxlen=LATENCY_WINDOW)
        self._last_stats: dict = {}
        self._mod = _client_module(self.url.protocol)
        self._errors = require("tritonclient.utils", "triton", "the triton backend").InferenceServerException
        self.shm_mode = getattr(spec, "triton_shm", None) or "auto"
        self.shm: Optional[ShmRegion] = None
        self._shm_registered = False
        self.client = self._connect()
        self.output_names = self._check_model()
        self.max_batch = self._max_batch()
        self.output_dims = [o.dims for o in expected_io(self.network)[1]]
        if self.shm_mode != "off":
            try:
                self.shm = self._open_shm()
            except BaseException:
                self.close()
                raise

    # --- start: the server answers, and serves our model ---------------------------------------
    def _connect(self):
        try:
            client = make_client(self.url)
            if client.is_server_live(headers=self.headers):
                return client
            why = "the server is not live"
        except Exception as e:  # noqa: BLE001 (tritonclient raises its own, gevent's and socket errors)
            why = _reason(e)
        raise BackendUnavailable(f"cannot reach the Triton server at {self.url.text}: {why}")

    def _check_model(self) -> List[str]:
        where = f"the Triton server at {self.url.text}"
        label = f"'{self.model_name}'" + (f" version {self.version}" if self.version else "")
        try:
            ready = self.client.is_model_ready(self.model_name, self.version, headers=self.headers)
        except Exception as e:  # noqa: BLE001
            raise BackendUnavailable(f"{where}: {_reason(e)}") from None
        if not ready:
            raise ModelConfigError(f"{where} has no ready model {label} (serving: {self._served() or 'none'}); "
                                   f"set --triton-model / --triton-version")
        meta = self._metadata()
        want_in, want_out = expected_io(self.network)
        ins, outs = meta["inputs"], meta["outputs"]

        def shape(t) -> tuple:
            return tuple(int(d) for d in t["shape"])

        if len(ins) != 1 or ins[0]["name"] != want_in.name or shape(ins[0])[1:] != want_in.dims:
            got = ", ".join(f"{t['name']} {list(shape(t))}" for t in ins)
            raise ModelConfigError(f"model {label} on {where} takes {got}; this detector sends "
                                   f"{want_in.name} [-1, {', '.join(map(str, want_in.dims))}] "
                                   f"(export it with: python -m models export --format triton)")
        by_name = {t["name"]: shape(t)[1:] for t in outs}
        for o in want_out:
            if by_name.get(o.name) != o.dims:
                got = ", ".join(f"{k} {list(v)}" for k, v in by_name.items())
                raise ModelConfigError(f"model {label} on {where} outputs {got}; this network needs "
                                       + ", ".join(f"{t.name} {list(t.dims)}" for t in want_out))
        return [o.name for o in want_out]

    def _max_batch(self) -> int:
        """The served model's max_batch_size: a larger batch goes in several requests."""
        try:
            kw = {"as_json": True} if self.url.protocol == "grpc" else {}
            cfg = self.client.get_model_config(self.model_name, self.version, headers=self.headers, **kw)
            cfg = cfg.get("config", cfg)
            return max(1, int(cfg.get("max_batch_size", 0) or 1))
        except Exception as e:  # noqa: BLE001  (a server that keeps its config private: one frame a request)
            log.info("max_batch_size of %s unknown (%s): one frame a request", self.model_name, _reason(e))
            return 1

    def _metadata(self) -> dict:
        m = self.client.get_model_metadata(self.model_name, self.version, headers=self.headers,
                                           **({"as_json": True} if self.url.protocol == "grpc" else {}))
        return {"inputs": m["inputs"], "outputs": m["outputs"]}

    def _served(self) -> str:
        try:
            idx = self.client.get_model_repository_index(
                headers=self.headers, **({"as_json": True} if self.url.protocol == "grpc" else {}))
            rows = idx.get("models", []) if isinstance(idx, dict) else idx
            return ", ".join(sorted({r.get("name", "?") for r in rows}))
        except Exception:  # noqa: BLE001
            return ""

    # --- system shared memory ---------------------------------------------------------------
    def _open_shm(self) -> Optional[ShmRegion]:
        """The region registered with the server, or None (``auto`` on a remote host, or refused:
        one INFO line). ``on`` refused: ModelConfigError (one line)."""
        host = self.url.address.rsplit(":", 1)[0]
        if not is_local(host):
            if self.shm_mode == "on":
                raise ModelConfigError(remote_error(self.url.text))
            return None
        self._remove_stale_regions()
        in_dims = expected_io(self.network)[0].dims
        frame_bytes = [4 * int(np.prod(d)) for d in (in_dims, *self.output_dims)]
        need, free = self.max_batch * sum(frame_bytes), free_bytes()
        region = None
        try:
            if 0 <= free < need:
                raise OSError(f"/dev/shm has {free >> 20} MiB free, the region needs {need >> 20} MiB")
            region = ShmRegion(self.max_batch, frame_bytes)
            self.shm = region
            self._register()
            return region
        except (self._errors, OSError) as e:
            self.shm = None
            if region is not None:
                region.close()
            why = (f"system shared memory with the Triton server at {self.url.text} did not work ({_reason(e)})")
            if self.shm_mode == "on":
                raise ModelConfigError(f"{why}; --triton-shm auto or off sends the tensors in the requests") from None
            log.info("%s: sending the tensors in the requests", why)
            return None

    def _register(self) -> None:
        """(Again) register the region: a name the server may still hold from before an outage is
        unregistered first."""
        shm = self.shm
        self.client.unregister_system_shared_memory(shm.name, headers=self.headers)
        self.client.register_system_shared_memory(shm.name, shm.key, shm.byte_size, headers=self.headers)
        self._shm_registered = True

    def _remove_stale_regions(self) -> None:
        """Regions of dead processes (a killed earlier detector): unlinked here, unregistered on the
        server (which keeps them mapped until then)."""
        removed = remove_stale_files()
        try:
            kw = {"as_json": True} if self.url.protocol == "grpc" else {}
            names = stale(registered_names(self.client.get_system_shared_memory_status(headers=self.headers, **kw)))
            for name in names:
                self.client.unregister_system_shared_memory(name, headers=self.headers)
        except Exception as e:  # noqa: BLE001  (a server that refuses shm says so when ours is registered)
            log.debug("stale shared memory regions on %s: %s", self.url.text, _reason(e))
            names = []
        if removed or names:
            log.info("removed the shared memory regions of dead processes: %d here, %d on the Triton server",
                     removed, len(names))

    # --- running ----------------------------------------------------------------------------
    def _request(self, blob: np.ndarray) -> List[np.ndarray]:
        blob = np.ascontiguousarray(blob, dtype=np.float32)
        inp = self._mod.InferInput("image", list(blob.shape), "FP32")
        outs = [self._mod.InferRequestedOutput(n) for n in self.output_names]
        shm = self.shm
        if shm is None:
            inp.set_data_from_numpy(blob)
        else:
            if not self._shm_registered:
                self._register()
            inp.set_shared_memory(shm.name, shm.write_input(blob), 0)
            for i, o in enumerate(outs):
                offset, size = shm.part(i + 1, blob.shape[0])
                o.set_shared_memory(shm.name, size, offset)
        res = self.client.infer(self.model_name, [inp], model_version=self.version, outputs=outs,
                                headers=self.headers)
        if shm is None:
            return [res.as_numpy(n) for n in self.output_names]
        return [shm.read_output(i, (blob.shape[0], *d)) for i, d in enumerate(self.output_dims)]

    def infer(self, blob: np.ndarray) -> List[np.ndarray]:
        """(B, 3, H, W) float32 -> the heads [(B, A*(5+C), h, w), ...]: one request per
        ``max_batch`` frames; waits out a lost server."""
        if blob.shape[0] <= self.max_batch:
            return self._infer_one(blob)
        parts = [self._infer_one(blob[i:i + self.max_batch]) for i in range(0, blob.shape[0], self.max_batch)]
        return [np.concatenate(heads) for heads in zip(*parts)]

    def _infer_one(self, blob: np.ndarray) -> List[np.ndarray]:
        registered_again = False
        while True:
            t0 = time.perf_counter()
            try:
                heads = self._request(blob)
            except (self._errors, OSError) as e:
                if self.shm is not None and not registered_again and "shared memory" in _reason(e).lower():
                    # a server restarted between two requests (none failed): it forgot the region
                    log.info("the Triton server at %s forgot the shared memory region: registering it again",
                             self.url.text)
                    self._shm_registered, registered_again = False, True
                    continue
                if _fatal(e):
                    hint = "" if self.headers else f" (a token goes in ${TOKEN_ENV})"
                    raise ModelError(f"the Triton server at {self.url.text} refused the request: {_reason(e)}{hint}")
                self._wait(_reason(e))
                continue
            self.latency_ms.append((time.perf_counter() - t0) * 1000.0)
            self.requests += 1
            if self.state != "ok":
                self.state = "ok"
                log.warning("Triton server at %s is back: detecting again", self.url.text)
                if self.on_wait is not None:
                    self.on_wait(False, "")
            return heads

    def _wait(self, reason: str) -> None:
        if self.state == "ok":
            self.state = "lost"
            self.lost_count += 1
            log.warning("lost the Triton server at %s (%s): waiting for it", self.url.text, reason)
        if self.on_wait is None:
            raise ModelError(f"lost the Triton server at {self.url.text}: {reason}")
        if not self.on_wait(True, reason):
            raise DetectorStopped("stopped while waiting for the Triton server")
        time.sleep(RETRY_S)
        self._shm_registered = False   # a server back after an outage may be a new one
        self._reconnect()

    def _reconnect(self) -> None:
        """A fresh channel: gRPC's own reconnect backs off for up to minutes."""
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.client = make_client(self.url)
        except Exception as e:  # noqa: BLE001
            log.debug("reconnect to %s: %s", self.url.text, e)

    def profile(self, server: bool = True) -> dict:
        """For the profile: this client's requests, state, outages and latency p50/p95 (ms, the
        last `LATENCY_WINDOW` requests) beside the server's own figures for the model (``server``:
        queue and compute ms per request and batch sizes formed since the previous call, from every
        client; `summarize_statistics`)."""
        lat = np.asarray(self.latency_ms, np.float64)
        out = {"url": self.url.text, "model": self.model_name, "state": self.state, "lost": self.lost_count,
               "requests": self.requests, "shm": self.shm is not None}
        if lat.size:
            out.update(client_ms_p50=round(float(np.percentile(lat, 50)), 2),
                       client_ms_p95=round(float(np.percentile(lat, 95)), 2))
        if server and self.state == "ok":
            grpc = self.url.protocol == "grpc"
            client = None
            try:  # the HTTP client is not thread-safe: its own connection beside a running request
                client = self.client if grpc else make_client(self.url)
                kw = {"as_json": True, "client_timeout": 2.0} if grpc else {}
                now = summarize_statistics(client.get_inference_statistics(
                    self.model_name, self.version, headers=self.headers, **kw))
                out["server"] = since(now, self._last_stats) if self._last_stats else now
                self._last_stats = now
            except Exception as e:  # noqa: BLE001  (figures only: never a reason to stop)
                log.debug("statistics of %s: %s", self.url.text, e)
            finally:
                if client is not None and not grpc:
                    client.close()
        return out

    def describe(self) -> str:
        return f"triton-{self.model_name}@{self.url.text}"

    def close(self) -> None:
        """Unregister and unlink the shared memory region (if any), close the connection."""
        client, self.client = getattr(self, "client", None), None
        shm, self.shm = getattr(self, "shm", None), None
        if shm is not None and client is not None and self.state == "ok":
            try:
                kw = {"client_timeout": PROBE_TIMEOUT_S} if self.url.protocol == "grpc" else {}
                client.unregister_system_shared_memory(shm.name, headers=self.headers, **kw)
            except Exception as e:  # noqa: BLE001  (a server gone forgets it anyway)
                log.debug("unregister %s: %s", shm.name, _reason(e))
        if shm is not None:
            shm.close()
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass


def server_answers(url: TritonURL, model: str, version: str = "") -> str:
    """'' when the server at ``url`` is live and ``model`` ready, or the server ready without it (the
    detector's own check then says what it serves instead); else why not, in a few words."""
    try:
        client = make_client(url)
    except Exception as e:  # noqa: BLE001
        return _reason(e)
    kw = {"client_timeout": PROBE_TIMEOUT_S} if url.protocol == "grpc" else {}
    headers = auth_headers()
    try:
        if not client.is_server_live(headers=headers, **kw):
            return "the server is not live yet"
        if client.is_model_ready(model, version, headers=headers, **kw) or client.is_server_ready(headers=headers,
                                                                                                  **kw):
            return ""
        return f"model '{model}' is not ready yet"
    except Exception as e:  # noqa: BLE001  (tritonclient's own, gRPC's and socket errors)
        return _reason(e)
    finally:
        client.close()


def wait_for_server(spec, still=None, backoff_s: tuple = (0.5, 30.0), sleep=time.sleep) -> None:
    """Until the server of backend triton ``spec`` answers (`server_answers`), as an absent camera
    is waited for: one WARNING line ``waiting for the Triton server at URL (why): retrying, Ctrl-C to
    stop``, then ``still``'s ``still waiting for ...`` lines (the pipeline passes its
    `pipeline.media.waiting.StillWaiting`; None: no such lines) while the retries back off from
    ``backoff_s[0]`` s, doubling, to ``backoff_s[1]``. Nothing is held meanwhile: Ctrl-C
    (KeyboardInterrupt) leaves nothing behind."""
    url = spec_url(spec)
    model, version = getattr(spec, "triton_model", None) or DEFAULT_NAME, str(getattr(spec, "triton_version", None)
                                                                                or "")
    what = f"the Triton server at {url.text}"
    delay = backoff_s[0]
    why = server_answers(url, model, version)
    if not why:
        return
    if still is not None:
        still.begin()
    log.warning("waiting for %s (%s): retrying, Ctrl-C to stop", what, why)
    while why:
        if still is not None and still.due():
            log.warning("%s", still.line(what))
        log.debug("%s: %s; next try in %.1fs", what, why, delay)
        sleep(delay)
        delay = min(delay * 2, backoff_s[1])
        why = server_answers(url, model, version)
    if still is not None:
        still.end()
    log.info("%s answers: starting", what)


def server_statistics(url: str, model: str, version: str = "", ca: Optional[str] = None) -> dict:
    """Triton's own statistics of ``model`` (its statistics API), see `summarize_statistics`."""
    u = parse_url(url, ca)
    client = make_client(u)
    try:
        kw = {"as_json": True} if u.protocol == "grpc" else {}
        return summarize_statistics(client.get_inference_statistics(model, version, headers=auth_headers(), **kw))
    finally:
        client.close()


def summarize_statistics(st: dict) -> dict:
    """A statistics answer (JSON form) -> requests, executions (batches formed), queue and compute
    time per request (ms, means since the server started) and {batch size: executions}."""
    rows = st.get("model_stats", []) if isinstance(st, dict) else []
    if not rows:
        return {}

    def ns(d: dict, key: str) -> tuple:
        v = d.get(key, {}) or {}
        return int(v.get("count", 0)), int(v.get("ns", 0))

    req, exe, q_ns, c_ns = 0, 0, 0, 0
    batches: dict = {}
    for r in rows:
        inf = r.get("inference_stats", {}) or {}
        req += ns(inf, "success")[0]
        exe += int(r.get("execution_count", 0))
        q_ns += ns(inf, "queue")[1]
        c_ns += sum(ns(inf, k)[1] for k in ("compute_input", "compute_infer", "compute_output"))
        for b in r.get("batch_stats", []) or []:
            size = int(b.get("batch_size", 0))
            batches[size] = batches.get(size, 0) + ns(b, "compute_infer")[0]
    return {"requests": req, "executions": exe,
            "queue_ms": round(q_ns / req / 1e6, 3) if req else 0.0,
            "compute_ms": round(c_ns / req / 1e6, 3) if req else 0.0,
            "batches": dict(sorted(batches.items()))}


def since(now: dict, before: dict) -> dict:
    """`summarize_statistics` figures of the interval between two of them."""
    if not now or not before:
        return now or {}
    n = now["requests"] - before["requests"]

    def mean(key: str) -> float:
        return round((now[key] * now["requests"] - before[key] * before["requests"]) / n, 3) if n > 0 else 0.0

    batches = {k: v - before["batches"].get(k, 0) for k, v in now["batches"].items()}
    return {"requests": n, "executions": now["executions"] - before["executions"], "queue_ms": mean("queue_ms"),
            "compute_ms": mean("compute_ms"), "batches": {k: v for k, v in batches.items() if v}}
