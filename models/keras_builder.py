"""Darknet `Network` -> tf.keras model (NHWC) with the weights set layer by layer.

Batch-norm is folded into the convolution (inference only). Every Keras layer is
named after its cfg index (`conv_12`, `route_30`, ...) and receives its weights
directly from the `Layer` it came from, never by matching generated names.
The model's outputs are the raw tensors feeding each yolo layer, (B, h, w, A*(5+C)).
Imports keras: only the TensorFlow backends import this module.
"""

from __future__ import annotations

from typing import List

import numpy as np

import keras
from keras import ops

from .darknet import Network, fused_conv_params, maxpool_padding
from .errors import UnsupportedLayerError


class ChannelSlice(keras.layers.Layer):
    """Channels [start, stop) of an NHWC tensor (route with groups)."""

    def __init__(self, start: int, stop: int, **kw):
        super().__init__(**kw)
        self.start, self.stop = start, stop

    def call(self, x):
        return x[..., self.start:self.stop]

    def compute_output_shape(self, s):
        return (*s[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


class NegInfPad(keras.layers.Layer):
    """Pads H and W with -inf, so darknet's maxpool padding never wins the max."""

    def __init__(self, pads, **kw):
        super().__init__(**kw)
        self.pads = tuple(tuple(p) for p in pads)

    def call(self, x):
        (t, b), (l, r) = self.pads
        return ops.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=-np.inf)

    def compute_output_shape(self, s):
        (t, b), (l, r) = self.pads
        return (s[0], None if s[1] is None else s[1] + t + b, None if s[2] is None else s[2] + l + r, s[3])

    def get_config(self):
        return {**super().get_config(), "pads": self.pads}


def _activation(x, name: str, act: str):
    if act == "linear":
        return x
    if act == "leaky":
        return keras.layers.LeakyReLU(negative_slope=0.1, name=name)(x)
    if act == "relu":
        return keras.layers.ReLU(name=name)(x)
    if act == "logistic":
        return keras.layers.Activation("sigmoid", name=name)(x)
    if act == "swish":
        return keras.layers.Activation(lambda t: t * ops.sigmoid(t), name=name)(x)
    if act == "mish":
        return keras.layers.Activation(lambda t: t * ops.tanh(ops.softplus(t)), name=name)(x)
    raise UnsupportedLayerError(f"activation {act!r}")


def build_keras_model(network: Network):
    """Return a keras.Model: input (B, H, W, C) float32 RGB [0,1] -> list of raw head tensors."""
    L = keras.layers
    w, h = network.input_size
    inp = keras.Input((h, w, network.channels), name="image", dtype="float32")
    outs: List = []

    def src(j: int):
        return inp if j < 0 else outs[j]

    for layer in network.layers:
        i, a, x = layer.index, layer.attrs, src(layer.inputs[0])
        if layer.type == "convolutional":
            kernel, bias = fused_conv_params(layer)
            if a["pad"]:
                x = L.ZeroPadding2D(a["pad"], name=f"pad_{i}")(x)
            groups, cin = a["groups"], a["in_channels"]
            if groups == 1:
                conv = L.Conv2D(a["filters"], a["size"], a["stride"], "valid", name=f"conv_{i}")
                x = conv(x)
                conv.set_weights([kernel.transpose(2, 3, 1, 0), bias])
            elif groups == cin == a["filters"]:
                conv = L.DepthwiseConv2D(a["size"], a["stride"], "valid", name=f"conv_{i}")
                x = conv(x)
                conv.set_weights([kernel.transpose(2, 3, 0, 1), bias])
            else:  # general grouped convolution: split, convolve, concatenate
                gi, go = cin // groups, a["filters"] // groups
                parts = []
                for g in range(groups):
                    xs = ChannelSlice(g * gi, (g + 1) * gi, name=f"conv_{i}_in{g}")(x)
                    conv = L.Conv2D(go, a["size"], a["stride"], "valid", name=f"conv_{i}_g{g}")
                    parts.append(conv(xs))
                    conv.set_weights([kernel[g * go:(g + 1) * go].transpose(2, 3, 1, 0), bias[g * go:(g + 1) * go]])
                x = L.Concatenate(axis=-1, name=f"conv_{i}")(parts)
            x = _activation(x, f"act_{i}", a["activation"])
        elif layer.type == "shortcut":
            x = L.Add(name=f"shortcut_{i}")([x, src(layer.inputs[1])])
            x = _activation(x, f"act_{i}", a["activation"])
        elif layer.type == "route":
            parts = []
            for j in layer.inputs:
                t = src(j)
                if a["groups"] > 1:
                    c = network.layers[j].shape[2] // a["groups"]
                    t = ChannelSlice(a["group_id"] * c, (a["group_id"] + 1) * c, name=f"route_{i}_from{j}")(t)
                parts.append(t)
            x = parts[0] if len(parts) == 1 else L.Concatenate(axis=-1, name=f"route_{i}")(parts)
        elif layer.type == "maxpool":
            top, bottom, left, right = maxpool_padding(network, layer)
            if top or bottom or left or right:
                x = NegInfPad(((top, bottom), (left, right)), name=f"pool_pad_{i}")(x)
            x = L.MaxPooling2D(a["size"], a["stride"], "valid", name=f"maxpool_{i}")(x)
        elif layer.type == "upsample":
            x = L.UpSampling2D(a["stride"], interpolation="nearest", name=f"upsample_{i}")(x)
        elif layer.type in ("dropout", "yolo"):
            pass  # identity at inference; yolo decoding is shared numpy post-processing
        outs.append(x)
        if tuple(x.shape[1:]) != layer.shape:
            raise AssertionError(f"layer {i} ({layer.type}): built {tuple(x.shape[1:])}, expected {layer.shape}")
    heads = [outs[j] for j in network.output_layers]
    return keras.Model(inp, heads, name="darknet")

