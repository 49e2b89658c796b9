"""cfg parsing, layer shapes and the .weights reader's checks."""

import numpy as np
import pytest

from trackpipe.models.darknet import (build_network, load_cfg, load_network, parse_cfg, read_weights,
                                      write_random_weights)
from trackpipe.models.errors import ModelError, UnsupportedLayerError, WeightsError
from tests.assets import CFG, FASTEST

ALL_CFGS = [CFG / "yolov4.cfg", CFG / "yolov4-tiny.cfg", CFG / "yolov3.cfg", CFG / "yolov3-tiny.cfg",
            FASTEST / "yolo-fastest-1.1-xl.cfg", FASTEST / "yolo-fastest-1.1.cfg"]
OFFICIAL_SIZES = {"yolov4.cfg": 257_717_640, "yolov4-tiny.cfg": 24_251_276, "yolov3.cfg": 248_007_048,
                  "yolov3-tiny.cfg": 35_434_956, "yolo-fastest-1.1-xl.cfg": 3_693_964,
                  "yolo-fastest-1.1.cfg": 1_384_268}


@pytest.mark.parametrize("cfg", ALL_CFGS, ids=lambda p: p.name)
def test_every_cfg_resolves_with_official_weight_size(cfg):
    net = load_cfg(cfg)
    assert net.weights_bytes() == OFFICIAL_SIZES[cfg.name]
    w, h = net.input_size
    strides = sorted(w // y.grid[1] for y in net.yolo_layers)
    assert set(strides) <= {8, 16, 32}
    assert net.num_classes == 80


def test_size_override_changes_grids():
    net = load_cfg(CFG / "yolov4.cfg", (416, 416))
    assert [y.grid for y in net.yolo_layers] == [(52, 52), (26, 26), (13, 13)]
    assert net.layers[-1].shape == (13, 13, 255)


def test_yolo_head_attributes():
    net = load_cfg(CFG / "yolov4.cfg")
    assert [y.scale_x_y for y in net.yolo_layers] == [1.2, 1.1, 1.05]
    np.testing.assert_array_equal(net.yolo_layers[0].anchors, [[12, 16], [19, 36], [40, 28]])
    tiny = load_cfg(CFG / "yolov4-tiny.cfg")
    route = [l for l in tiny.layers if l.type == "route" and l.attrs["groups"] == 2][0]
    assert route.shape[2] == tiny.layers[route.inputs[0]].shape[2] // 2


def test_unsupported_layer_names_layer_and_line(tmp_path):
    text = (CFG / "yolov3-tiny.cfg").read_text().replace("[maxpool]", "[local]", 1)
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(text)
    line = text.splitlines().index("[local]") + 1
    with pytest.raises(UnsupportedLayerError, match=rf"bad.cfg:{line}: unsupported layer type \[local\] \(layer 1\)"):
        load_cfg(cfg)


def test_bad_activation_and_missing_net():
    with pytest.raises(UnsupportedLayerError, match="activation 'gelu'"):
        build_network(parse_cfg("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=8\nactivation=gelu\n"))
    with pytest.raises(ModelError, match=r"first section must be \[net\]"):
        parse_cfg("[convolutional]\nfilters=8\n")


def test_route_out_of_range_is_an_error():
    with pytest.raises(ModelError, match="outside the network"):
        build_network(parse_cfg("[net]\nwidth=32\nheight=32\n[route]\nlayers=-3\n"))


@pytest.fixture(scope="module")
def tiny_random(tmp_path_factory):
    net = load_cfg(CFG / "yolov4-tiny.cfg")
    path = tmp_path_factory.mktemp("w") / "tiny.weights"
    assert write_random_weights(net, path) == 24_251_276
    return path


def test_read_weights_fills_every_conv(tiny_random):
    net = load_network(CFG / "yolov4-tiny.cfg", tiny_random)
    for layer in net.conv_layers():
        a = layer.attrs
        assert layer.params["kernel"].shape == (a["filters"], a["in_channels"] // a["groups"], a["size"], a["size"])
        assert ("var" in layer.params) == a["batch_normalize"]


def test_truncated_weights_name_expected_and_actual(tiny_random, tmp_path):
    bad = tmp_path / "cut.weights"
    bad.write_bytes(tiny_random.read_bytes()[:-100])
    net = load_cfg(CFG / "yolov4-tiny.cfg")
    with pytest.raises(WeightsError,
                       match=r"24,251,176 bytes but yolov4-tiny.cfg needs exactly 24,251,276 \(truncated"):
        read_weights(net, bad)
    assert all(not l.params for l in net.conv_layers()), "nothing is loaded from a bad file"


def test_weights_for_another_cfg(tiny_random):
    with pytest.raises(WeightsError, match="wrong weights for this cfg"):
        load_network(CFG / "yolov3-tiny.cfg", tiny_random)


def test_not_a_weights_file(tmp_path):
    f = tmp_path / "x.weights"
    f.write_bytes(b"\xff" * 64)
    with pytest.raises(WeightsError, match="not a darknet weights file"):
        load_network(CFG / "yolov4-tiny.cfg", f)
