"""Cross-layer equalization (Nagel et al., "Data-Free Quantization", ICCV 2019).

Depthwise-separable networks (Yolo-Fastest, MobileNets) have convolutions whose
output channels span very different ranges, so one per-tensor INT8 scale wastes
most of its levels on a few wide channels. For two convolutions in a chain
conv1 -> act -> conv2, where act is positively homogeneous (linear, relu, leaky:
act(s * x) = s * act(x) for s > 0) and nothing else reads conv1's output,
scaling conv1's output channel i by 1/s_i and conv2's input channel i by s_i
leaves the network's function unchanged. Choosing s_i = sqrt(r1_i / r2_i) (r =
per-channel weight range) gives both convolutions the same per-channel ranges.
The fp32 outputs are unchanged (up to float rounding); only quantization sees a
difference.
"""

from __future__ import annotations

import copy
import logging
from typing import List, Tuple

import numpy as np

from .darknet import Layer, Network, fused_conv_params

log = logging.getLogger(__name__)

HOMOGENEOUS = ("linear", "relu", "leaky")


def _readers(network: Network) -> List[List[int]]:
    readers: List[List[int]] = [[] for _ in network.layers]
    for layer in network.layers:
        for j in layer.inputs:
            if j >= 0:
                readers[j].append(layer.index)
    return readers


def equalizable_pairs(network: Network) -> List[Tuple[int, int]]:
    """(conv1, conv2) index pairs where conv1's output feeds only conv2, through a
    positively homogeneous activation (dropout layers in between are identities)."""
    readers = _readers(network)
    pairs = []
    for layer in network.conv_layers():
        if layer.attrs["activation"] not in HOMOGENEOUS:
            continue
        j = layer.index  # walk through dropouts (identities), each with a single reader
        while len(readers[j]) == 1 and network.layers[readers[j][0]].type == "dropout":
            j = readers[j][0]
        if len(readers[j]) != 1:
            continue
        nxt = network.layers[readers[j][0]]
        if nxt.type == "convolutional" and nxt.inputs == [j]:
            pairs.append((layer.index, nxt.index))
    return pairs


def _fold(layer: Layer) -> None:
    """Replace a conv's params by their batch-norm-folded form (kernel, bias only)."""
    kernel, bias = fused_conv_params(layer)
    layer.params = {"kernel": kernel.copy(), "bias": bias.copy()}
    layer.attrs = {**layer.attrs, "batch_normalize": False}


def equalize(network: Network, iterations: int = 4) -> Network:
    """Return a copy of `network` with cross-layer-equalized convolution weights.

    Batch-norm is folded first (the copy's convs have no batch-norm). Depthwise
    conv2 (groups == channels) scales per group; general grouped convs are skipped.
    """
    net = copy.deepcopy(network)
    for layer in net.conv_layers():
        _fold(layer)
    pairs = []
    for a, b in equalizable_pairs(net):
        g = net.layers[b].attrs["groups"]
        if g == 1 or g == net.layers[b].attrs["in_channels"] == net.layers[b].attrs["filters"]:
            pairs.append((a, b))
    for _ in range(iterations):
        for a, b in pairs:
            c1, c2 = net.layers[a].params, net.layers[b].params
            depthwise = net.layers[b].attrs["groups"] > 1
            r1 = np.abs(c1["kernel"]).reshape(len(c1["kernel"]), -1).max(axis=1)
            k2 = c2["kernel"]
            r2 = (np.abs(k2).reshape(len(k2), -1).max(axis=1) if depthwise
                  else np.abs(k2).transpose(1, 0, 2, 3).reshape(k2.shape[1], -1).max(axis=1))
            s = np.sqrt(np.maximum(r1, 1e-12) / np.maximum(r2, 1e-12)).astype(np.float32)
            s = np.clip(s, 1e-4, 1e4)
            c1["kernel"] = c1["kernel"] / s[:, None, None, None]
            c1["bias"] = c1["bias"] / s
            if depthwise:  # output channel i reads only input channel i
                c2["kernel"] = c2["kernel"] * s[:, None, None, None]
            else:
                c2["kernel"] = c2["kernel"] * s[None, :, None, None]
    log.debug("cross-layer equalization over %d conv pairs", len(pairs))
    return net
