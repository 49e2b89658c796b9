"""Cross-layer equalization keeps the fp32 function and balances per-channel weight ranges."""

import cv2
import numpy as np
import onnxruntime as ort

from trackpipe.models.darknet import fused_conv_params, load_network
from trackpipe.models.equalize import equalizable_pairs, equalize
from trackpipe.models.onnx_export import export_onnx
from trackpipe.models.preprocess import preprocess
from tests.assets import FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, IMAGES


def _channel_spread(layer):
    k = layer.params["kernel"] if "var" not in layer.params else fused_conv_params(layer)[0]
    r = np.abs(k).reshape(len(k), -1).max(axis=1)
    return r.max() / max(r.min(), 1e-12)


def test_equalize_preserves_outputs_and_narrows_ranges(tmp_path):
    net = load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS)
    eq = equalize(net)
    assert len(equalizable_pairs(net)) > 40
    blob, _ = preprocess([cv2.imread(str(IMAGES / "dog.jpg"))], net.input_size)
    a = ort.InferenceSession(str(export_onnx(net, tmp_path))).run(None, {"image": blob})
    b = ort.InferenceSession(str(export_onnx(eq, tmp_path, variant="cle"))).run(None, {"image": blob})
    for x, y in zip(a, b):
        assert np.abs(x - y).max() / np.abs(x).max() < 1e-4
    before = max(_channel_spread(l) for l in net.conv_layers())
    after = max(_channel_spread(l) for l in eq.conv_layers())
    assert after < before / 4
    assert all("var" in l.params for l in net.conv_layers() if l.attrs["batch_normalize"]), "input untouched"
