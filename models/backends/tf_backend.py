"""TensorFlow backend: the Keras model built from the cfg, run as a compiled tf.function."""

from __future__ import annotations

import logging
from typing import List

import numpy as np

from ..detector import Detector
from ..errors import BackendUnavailable

log = logging.getLogger(__name__)


def import_tf():
    """TensorFlow (its import-time native log lines kept off stderr), or MissingExtra (a
    BackendUnavailable) naming the pip command."""
    from ..errors import require  # noqa: PLC0415
    return require("tensorflow", "tf", "the tf backend")


class TFDetector(Detector):
    name = "tf"

    def __init__(self, spec, network, names):
        super().__init__(spec, network, names)
        tf = import_tf()
        if spec.threads:
            tf.config.threading.set_intra_op_parallelism_threads(spec.threads)
        if spec.precision != "fp32":
            raise BackendUnavailable(f"the tf backend runs fp32 only; {spec.precision} needs onnx, tensorrt or tftrt")
        from ..keras_builder import build_keras_model  # noqa: PLC0415

        self.model = build_keras_model(network)
        w, h = network.input_size
        sig = tf.TensorSpec([None, h, w, network.channels], tf.float32, name="image")
        self._fn = tf.function(lambda x: self.model(x, training=False), input_signature=[sig], jit_compile=False)

    def infer(self, blob: np.ndarray) -> List[np.ndarray]:
        outs = self._fn(np.ascontiguousarray(blob.transpose(0, 2, 3, 1)))
        return [np.ascontiguousarray(o.numpy().transpose(0, 3, 1, 2)) for o in outs]
