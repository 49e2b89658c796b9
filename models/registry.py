"""The one list of backend and precision names: the config, the flags and the factory read it.

``auto`` is a choice made at build time (the factory measures or probes), not a backend of
its own.
"""

from __future__ import annotations

# inference backends, in the order help texts list them
BACKENDS = ("auto", "onnx", "openvino", "tf", "opencv", "tensorrt", "tftrt", "triton")
# numeric precisions; a backend refuses the ones it cannot run, with the reason
PRECISIONS = ("fp32", "fp16", "int8", "bf16", "auto")
