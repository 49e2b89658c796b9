"""precision auto without --calib: int8 calibrated once on the source's own frames, the probe held out."""

import json
import logging
import shutil

import cv2
import pytest

from trackpipe.models import auto
from trackpipe.models.autocalib import (FRAMES, cached_calibration, calibration_dir, held_out_frames,
                                        source_calibration)
from trackpipe.models.darknet import load_network
from trackpipe.models.errors import ModelError
from trackpipe.models.cpu import cpu_info
from trackpipe.models.quantize import load_meta, qdq_name, read_calibration_frames
from trackpipe.models.spec import ModelSpec
from tests.assets import FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, NAMES, VIDEO

SOURCE = str(VIDEO / "aiguys_video.mp4")   # 319 frames, 640x360
SPEC = ModelSpec(cfg=FASTEST_XL_CFG, weights=FASTEST_XL_WEIGHTS, names=NAMES, backend="auto", precision="auto",
                 extra={"auto_seconds": 1.0})


@pytest.fixture(scope="module")
def network():
    return load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS)


@pytest.fixture(scope="module")
def probe():
    return read_calibration_frames(SOURCE, 12)   # spread over the video, as `models bench --probe` reads them


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, network, probe):
    """One calibration of Yolo-Fastest on aiguys_video.mp4, shared by the tests that read it."""
    cache = tmp_path_factory.mktemp("cache")
    return cache, source_calibration(network, SOURCE, probe, cache)


def test_calibration_frames_never_include_the_probe_frames(probe):
    frames = held_out_frames(SOURCE, 20, probe)
    assert len(frames) == 20
    assert not any((f == p).all() for f in frames for p in probe)
    # without that exclusion the same spread would have taken some of them
    plain = read_calibration_frames(SOURCE, 20 + len(probe))
    assert any((f == p).all() for f in plain for p in probe)


def test_source_calibration_is_complete_self_contained_and_reused(calibrated, network, caplog):
    cache, out = calibrated
    assert out == calibration_dir(network, cache)
    meta = load_meta(out)
    assert meta.frames == FRAMES and meta.source == str(out / "frames") and meta.method == "minmax"
    assert len(list((out / "frames").glob("*.jpg"))) == FRAMES     # readable without the source
    assert (out / qdq_name(cpu_info().int8_weight_bits)).is_file() and (out / "calib_cache.json").is_file()
    mtime = (out / "meta.json").stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="trackpipe.models"):
        assert source_calibration(network, "/nonexistent/other.mp4", [], cache) == out
    assert (out / "meta.json").stat().st_mtime_ns == mtime and not caplog.records   # no second calibration


def test_an_incomplete_calibration_is_rebuilt_with_one_warning(tmp_path, network, probe, caplog):
    out = calibration_dir(network, tmp_path)
    out.mkdir(parents=True)
    (out / "meta.json").write_text('{"model_key": "x", "cf')        # a torn write
    assert cached_calibration(network, tmp_path) is None
    with caplog.at_level(logging.WARNING, logger="trackpipe.models.autocalib"):
        assert source_calibration(network, SOURCE, probe, tmp_path) == out
    assert sum("incomplete" in r.getMessage() for r in caplog.records) == 1
    assert cached_calibration(network, tmp_path) == out


def test_a_source_too_short_to_calibrate_says_so(tmp_path, network):
    folder = tmp_path / "few"
    folder.mkdir()
    for i, f in enumerate(read_calibration_frames(SOURCE, 5)):
        cv2.imwrite(str(folder / f"{i}.jpg"), f)
    with pytest.raises(ModelError, match="gives 5 frames besides the probe's; int8 calibration needs 16"):
        source_calibration(network, str(folder), [], tmp_path / "cache")
    c = auto.choose(SPEC.with_(cache_dir=tmp_path / "cache", backend="onnx"), network,
                    read_calibration_frames(SOURCE, 12), calib_source=str(folder))
    assert c.precision == "fp32" and c.measured["onnx-int8"]["error"].startswith("no calibration: ")


def test_auto_offers_int8_calibrated_on_the_source_and_runs_with_it(calibrated, network, probe):
    cache, out = calibrated
    spec = SPEC.with_(cache_dir=cache, backend="onnx")   # onnx-fp32 vs onnx-int8: what is judged and timed
    assert auto.candidate_pairs(spec, self_calib=True) == [("onnx", "fp32"), ("onnx", "int8")]
    c = auto.choose(spec, network, probe, calib_source=SOURCE)
    m = c.measured["onnx-int8"]
    assert m["agreement"]["ref_boxes"] >= auto.MIN_REF_BOXES and ("fps" in m or "error" in m)
    if c.precision == "int8":
        assert c.calib == str(out) and auto.chosen_spec(spec, c).calib == out
    else:
        assert c.calib == "" and auto.chosen_spec(spec, c).calib is None
    # cached with the calibration; a cached int8 choice whose calibration is gone is measured again
    again = auto.choose(spec, network, probe, calib_source=SOURCE)
    assert again.cached and again.label == c.label and again.calib == c.calib
    path = auto.cache_path(spec, network, auto.cache_fields(spec, network, True, True))
    data = json.loads(path.read_text())
    data["choice"].update(precision="int8", calib=str(cache / "gone"))
    path.write_text(json.dumps(data))
    assert not auto.choose(spec, network, probe, calib_source=SOURCE).cached


def test_self_calibration_can_be_turned_off(tmp_path, network, probe):
    spec = SPEC.with_(cache_dir=tmp_path, backend="onnx", extra={"auto_seconds": 0.5, "auto_calibrate": False})
    c = auto.choose(spec, network, probe, calib_source=SOURCE)
    assert "onnx-int8" not in c.measured and not (tmp_path / "calib-auto").exists()
    # an explicit precision is never calibrated behind the user's back
    assert not auto.self_calibrates(SPEC.with_(precision="bf16"), True, SOURCE)
    assert not auto.self_calibrates(SPEC, False, SOURCE)   # no probe frames: nothing to judge int8 on
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_failing_self_calibration_leaves_int8_out_and_never_stops_the_run(tmp_path, network, probe, monkeypatch,
                                                                             caplog):
    import trackpipe.models.autocalib as ac

    def broken(*a, **k):
        raise RuntimeError("quantizer exploded")

    monkeypatch.setattr(ac, "source_calibration", broken)
    with caplog.at_level(logging.WARNING, logger="trackpipe.models.auto"):
        c = auto.choose(SPEC.with_(cache_dir=tmp_path, backend="onnx"), network, probe, calib_source=SOURCE)
    assert c.label == "onnx-fp32"
    assert c.measured["onnx-int8"]["error"] == "no calibration: RuntimeError: quantizer exploded"
    assert sum("int8 left out" in r.getMessage() for r in caplog.records) == 1


def test_a_long_video_is_read_over_its_first_frames_only():
    first = read_calibration_frames(SOURCE, 20, max_read=20)          # frames 0..19, in order
    spread = read_calibration_frames(SOURCE, 5, max_read=20)          # 0, 5, 10, 14, 19
    assert len(first) == 20 and len(spread) == 5
    assert all((a == first[i]).all() for a, i in zip(spread, (0, 5, 10, 14, 19)))
