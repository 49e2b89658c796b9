"""A Triton Inference Server model repository for our detector (`export --format triton`).

    REPO/<name>/config.pbtxt     inputs/outputs with their dims, max_batch_size, dynamic batching
                                 (a queue delay), instance groups
    REPO/<name>/1/model.onnx     the ONNX export (input "image" (B, 3, H, W) float32 RGB [0, 1];
                                 outputs "head_<i>" (B, A*(5+C), h, w), the raw yolo head tensors)

`platform: "onnxruntime_onnx"` is what NVIDIA's own container serves unchanged (docs/triton.md).
`python -m models serve` writes the same repository with `backend: "python"` instead (the
server bundled in the nvidia-pytriton wheel has only the python backend): its `1/model.py` runs
the model with our own backends (`models.serve.TritonPythonModel`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from .errors import ModelConfigError, ModelError

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
PLATFORMS = ("onnxruntime", "python")
DEFAULT_NAME = "trackpipe_yolo"
DEFAULT_URL = "grpc://127.0.0.1:8001"
SCHEMES = {"grpc": ("grpc", False, 8001), "grpcs": ("grpc", True, 8001),
           "http": ("http", False, 8000), "https": ("http", True, 8000)}
# the model.py of the python backend: our TritonPythonModel, running in the server's python stub
PYTHON_MODEL = "from trackpipe.models.serve import TritonPythonModel  # noqa: F401\n"


@dataclass(frozen=True)
class TensorIO:
    """One input or output: name and dims without the batch dimension, e.g. ("image", (3, 320, 320))."""

    name: str
    dims: Tuple[int, ...]


@dataclass(frozen=True)
class RepoModel:
    """What config.pbtxt says of one model.

    max_batch_size: the largest batch Triton forms (and a client may send); queue_delay_us:
    how long dynamic batching waits for more requests (Triton's max_queue_delay_microseconds);
    instances/kind: the instance group (KIND_CPU or KIND_GPU); parameters: string parameters
    the python backend reads (e.g. the model spec as JSON).
    """

    name: str
    inputs: Tuple[TensorIO, ...]
    outputs: Tuple[TensorIO, ...]
    max_batch_size: int = 8
    queue_delay_us: int = 2000
    instances: int = 1
    kind: str = "KIND_CPU"
    platform: str = "onnxruntime"
    parameters: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ModelError(f"model name {self.name!r}: use letters, digits, '_', '.' or '-'")
        if not 1 <= self.max_batch_size <= 1024:
            raise ModelError(f"max_batch_size {self.max_batch_size} is outside [1, 1024]")
        if not 0 <= self.queue_delay_us <= 10_000_000:
            raise ModelError(f"queue delay {self.queue_delay_us} us is outside [0, 10 s]")
        if not 1 <= self.instances <= 64:
            raise ModelError(f"instances {self.instances} is outside [1, 64]")
        if self.kind not in ("KIND_CPU", "KIND_GPU"):
            raise ModelError(f"instance kind {self.kind!r}: KIND_CPU or KIND_GPU")
        if self.platform not in PLATFORMS:
            raise ModelError(f"platform {self.platform!r}: one of {', '.join(PLATFORMS)}")


def onnx_io(path: Path) -> Tuple[Tuple[TensorIO, ...], Tuple[TensorIO, ...]]:
    """(inputs, outputs) of an ONNX file with a dynamic first (batch) dimension; dims without it.
    A fixed batch or a dynamic dim other than the first is a ModelError."""
    import onnx  # noqa: PLC0415

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}

    def dims(v) -> TensorIO:
        shape = v.type.tensor_type.shape.dim
        rest = [d.dim_value if d.HasField("dim_value") else -1 for d in shape[1:]]
        if not shape or shape[0].HasField("dim_value") or any(d <= 0 for d in rest):
            raise ModelError(f"{path}: tensor {v.name} must have a dynamic batch dimension and fixed others "
                             f"(got {[d.dim_value or d.dim_param for d in shape]})")
        return TensorIO(v.name, tuple(rest))

    return (tuple(dims(v) for v in graph.input if v.name not in init), tuple(dims(v) for v in graph.output))


def _tensors(kind: str, items: Tuple[TensorIO, ...]) -> str:
    rows = [f'  {{ name: "{t.name}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, t.dims))} ] }}' for t in items]
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def config_pbtxt(m: RepoModel) -> str:
    """The model's config.pbtxt (protobuf text format, Triton's ModelConfig)."""
    head = ('platform: "onnxruntime_onnx"\n' if m.platform == "onnxruntime" else 'backend: "python"\n')
    text = f'name: "{m.name}"\n{head}max_batch_size: {m.max_batch_size}\n'
    text += _tensors("input", m.inputs) + _tensors("output", m.outputs)
    text += f"dynamic_batching {{\n  max_queue_delay_microseconds: {m.queue_delay_us}\n}}\n"
    text += f"instance_group [\n  {{ count: {m.instances} kind: {m.kind} }}\n]\n"
    for k, v in sorted(m.parameters.items()):
        text += f'parameters {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}\n'
    return text


def write_repo(out: Path, model: RepoModel, onnx_path: Optional[Path] = None, replace: bool = False) -> Path:
    """Write ``out/<model.name>/config.pbtxt`` and ``1/model.onnx`` (a copy of ``onnx_path``), plus
    ``1/model.py`` for the python platform. An existing model folder is an error unless
    ``replace``. -> the model folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out} is a file, not a directory")
    folder = out / model.name
    if folder.exists():
        if not replace:
            raise ModelError(f"{folder} already exists; remove it or choose another --out or --triton-model")
        shutil.rmtree(folder)
    version = folder / "1"
    version.mkdir(parents=True)
    if onnx_path is not None:
        shutil.copyfile(onnx_path, version / "model.onnx")
    if model.platform == "python":
        (version / "model.py").write_text(PYTHON_MODEL)
    tmp = folder / f".config.pbtxt.tmp{os.getpid()}"
    tmp.write_text(config_pbtxt(model))
    os.replace(tmp, folder / "config.pbtxt")
    return folder


def export_triton(spec, network, out: Path, name: str = DEFAULT_NAME, max_batch_size: int = 8,
                  queue_delay_us: int = 2000, instances: int = 1, kind: str = "KIND_CPU") -> Path:
    """`python -m models export --format triton`: the fp32 ONNX export of ``network`` as a model
    repository for Triton's onnxruntime backend (CPU or GPU instances). -> the model folder."""
    from .onnx_export import export_onnx  # noqa: PLC0415

    path = export_onnx(network, spec.cache_dir)
    inputs, outputs = onnx_io(path)
    model = RepoModel(name, inputs, outputs, max_batch_size, queue_delay_us, instances, kind, "onnxruntime")
    return write_repo(out, model, path)


def expected_io(network) -> Tuple[TensorIO, Tuple[TensorIO, ...]]:
    """What our decoding needs from a served model: input "image" (3, H, W) and one output per yolo
    layer, "head_<i>" (A*(5+C), h, w) in the network's yolo-layer order."""
    w, h = network.input_size
    outs: List[TensorIO] = []
    for i, layer in enumerate(network.yolo_layers):
        gh, gw = layer.grid
        outs.append(TensorIO(f"head_{i}", (len(layer.anchors) * (5 + layer.classes), gh, gw)))
    return TensorIO("image", (3, h, w)), tuple(outs)


@dataclass(frozen=True)
class TritonURL:
    """A parsed --triton-url: protocol "grpc" or "http", "host:port", TLS or not, as given; ``ca``:
    the PEM file of the certificate authorities the server's TLS certificate is checked against
    (None: the system's)."""

    protocol: str
    address: str
    ssl: bool
    text: str
    ca: Optional[str] = None


def parse_url(url: str, ca: Optional[str] = None) -> TritonURL:
    """``grpc://host[:port]``, ``http://host[:port]`` (and grpcs/https) -> TritonURL; ModelConfigError
    (one line naming the key) otherwise. ``ca``: a PEM file (`TritonURL.ca`), TLS URLs only."""
    bad = ModelConfigError(f"triton_url: expected grpc://HOST:PORT or http://HOST:PORT, got {url!r}")
    if not isinstance(url, str):
        raise bad
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad from None
    if parts.scheme not in SCHEMES or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise bad
    protocol, ssl, default_port = SCHEMES[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if ca is not None:
        if not ssl:
            raise ModelConfigError(f"triton_ca: a certificate file is for a grpcs:// or https:// triton_url, "
                                   f"got {url!r}")
        if not Path(ca).is_file():
            raise ModelConfigError(f"triton_ca: no such file: {ca}")
        ca = str(ca)
    return TritonURL(protocol, f"{host}:{port or default_port}", ssl, url, ca)


def spec_url(spec) -> TritonURL:
    """The server of backend triton ``spec`` (a ModelSpec): its triton_url (default `DEFAULT_URL`)
    and triton_ca."""
    return parse_url(getattr(spec, "triton_url", None) or DEFAULT_URL, getattr(spec, "triton_ca", None))
