"""auto: the measured backend/precision choice, its label-free accuracy check, its cache; the CPU probe."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from trackpipe.models import auto
from trackpipe.models.cpu import CpuInfo, cap_flags, parse_cpuinfo
from trackpipe.models.darknet import load_network
from trackpipe.models.factory import build_detector
from trackpipe.models.quantize import read_calibration_frames
from trackpipe.models.spec import ModelSpec
from trackpipe.models.types import Detections
from tests.assets import FASTEST_XL_CFG, FASTEST_XL_WEIGHTS, IMAGES, NAMES, ROOT, VIDEO

SPEC = ModelSpec(cfg=FASTEST_XL_CFG, weights=FASTEST_XL_WEIGHTS, names=NAMES, backend="auto", precision="auto",
                 extra={"auto_seconds": 1.0})


# --- pure parts --------------------------------------------------------------------------

def test_cpuinfo_flags_and_isa_cap():
    text = "processor: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 fma avx512f avx512bw avx512vl avx512dq " \
           "avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8\n"
    name, flags = parse_cpuinfo(text)
    assert name == "Test CPU" and {"avx512_bf16", "amx_tile"} <= flags and "fpu" not in flags
    assert CpuInfo(name, flags).tier == "amx"
    assert CpuInfo(name, cap_flags(flags, "AVX512_CORE_BF16")).tier == "avx512-bf16"
    no_bf16 = CpuInfo(name, cap_flags(flags, "AVX512_CORE_VNNI"))
    assert no_bf16.tier == "vnni" and not no_bf16.has_bf16
    assert CpuInfo(name, cap_flags(flags, "AVX2")).tier == "other"


def test_int8_weight_bits_follow_the_cpus_int8_instructions():
    """7-bit weights exactly where u8 x s8 kernels saturate: x86 without VNNI/AMX; part of the cache key."""
    flags = frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "amx_int8"})
    assert CpuInfo("x", flags).int8_weight_bits == 8
    assert CpuInfo("x", cap_flags(flags, "AVX512_CORE_VNNI")).int8_weight_bits == 8
    assert CpuInfo("x", frozenset({"avx2", "fma", "avx_vnni"})).int8_weight_bits == 8  # AVX-VNNI (Alder Lake)
    for cap in ("AVX2", "AVX512_CORE"):
        assert CpuInfo("x", cap_flags(flags, cap)).int8_saturates
        assert CpuInfo("x", cap_flags(flags, cap)).int8_weight_bits == 7
    assert not CpuInfo("arm", frozenset(), x86=False).int8_saturates  # no vpmaddubsw there
    assert CpuInfo("x", cap_flags(flags, "AVX2")).key() != CpuInfo("x", cap_flags(flags, "AVX2"), x86=False).key()


def _dets(boxes, scores, classes):
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), scores, classes)


def test_agreement_counts_matched_boxes():
    ref = [_dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [0, 1])]
    assert auto.agreement(ref, ref)["f1"] == 1.0
    moved = [_dets([[0, 0, 10, 10], [30, 30, 50, 50]], [0.9, 0.8], [0, 1])]  # IoU 1/7 for the second
    assert auto.agreement(ref, moved)["f1"] == 0.5
    other_class = [_dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [0, 2])]
    assert auto.agreement(ref, other_class)["recall"] == 0.5
    assert auto.agreement([Detections.empty()], [Detections.empty()])["f1"] == 1.0
    # a box just under the cut in the candidate is no disagreement when the tolerant set has it
    assert auto.agreement(ref, [ref[0][:1]], cand_all=ref)["recall"] == 1.0


def test_candidate_pairs_follow_the_request(tmp_path):
    pairs = auto.candidate_pairs
    assert pairs(SPEC) == [("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]
    assert ("onnx", "int8") in pairs(SPEC.with_(calib=tmp_path))
    assert pairs(SPEC.with_(precision="fp32")) == [("onnx", "fp32"), ("openvino", "fp32")]
    assert pairs(SPEC.with_(backend="openvino")) == [("openvino", "fp32"), ("openvino", "bf16")]


# --- measured on the real model ----------------------------------------------------------

@pytest.fixture(scope="module")
def probe():
    return read_calibration_frames(str(VIDEO / "aiguys_video.mp4"), 12)


@pytest.fixture(scope="module")
def network():
    return load_network(FASTEST_XL_CFG, FASTEST_XL_WEIGHTS)


def test_choice_is_measured_cached_and_named(tmp_path, probe, network, caplog):
    spec = SPEC.with_(cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="trackpipe.models"):
        det = build_detector(spec, network, probe_frames=probe)
    choice = det.choice
    assert det.describe().startswith(choice.label) and not choice.cached
    m = choice.measured
    assert m["onnx-fp32"]["fps"] > 0 and "openvino-fp32" in m
    if "fps" in m.get("openvino-bf16", {}):  # judged on the probe frames and passed
        assert m["openvino-bf16"]["agreement"]["f1"] >= auto.MIN_AGREEMENT
    assert choice.fps >= choice.baseline_fps  # never slower than the onnx-fp32 it was timed against
    assert any(f"auto -> {choice.label}" in r.getMessage() for r in caplog.records)
    det.close()
    again = auto.choose(spec, network, probe)
    assert again.cached and again.label == choice.label
    files = list((tmp_path / "auto").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["choice"]["backend"] == choice.backend


def test_corrupt_and_stale_entries_are_measured_again(tmp_path, probe, network, caplog):
    spec = SPEC.with_(cache_dir=tmp_path, precision="fp32")
    auto.choose(spec, network, probe)
    path = auto.cache_path(spec, network)
    path.write_text('{"fields": {"version": 1}, "choi')  # a torn write
    with caplog.at_level(logging.WARNING, logger="trackpipe.models.auto"):
        c = auto.choose(spec, network, probe)
    assert not c.cached and [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    data = json.loads(path.read_text())
    data["fields"]["libraries"]["openvino"] = "1.0"  # measured under another OpenVINO
    data["choice"]["backend"] = "tf"
    path.write_text(json.dumps(data))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trackpipe.models.auto"):
        c = auto.choose(spec, network, probe)
    stale = [r.getMessage() for r in caplog.records if "stale" in r.getMessage()]
    assert not c.cached and len(stale) == 1 and "libraries" in stale[0] and c.backend in ("onnx", "openvino")
    data = json.loads(path.read_text())
    data["choice"]["backend"] = "cuda"  # right fields, impossible content
    path.write_text(json.dumps(data))
    assert not auto.choose(spec, network, probe).cached


def test_without_real_frames_reduced_precision_is_no_candidate(tmp_path, network):
    c = auto.choose(SPEC.with_(cache_dir=tmp_path), network, None)
    assert c.precision == "fp32" and "no real frames" in c.measured["openvino-bf16"]["error"]


def test_without_openvino_auto_is_onnx(tmp_path, probe, network, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    c = auto.choose(SPEC.with_(cache_dir=tmp_path), network, probe)
    assert c.label == "onnx-fp32" and "not installed" in c.measured["openvino-fp32"]["error"]


def test_bench_reports_auto_with_its_choice(tmp_path):
    r = subprocess.run([sys.executable, "-m", "trackpipe.models", "bench", "--cfg", str(FASTEST_XL_CFG), "--weights",
                        str(FASTEST_XL_WEIGHTS), "--backends", "onnx,auto", "--seconds", "1", "--image",
                        str(IMAGES / "dog.jpg"), "--cache-dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(res) == {"onnx", "auto"} and res["auto"]["fps"] > 0
    assert res["auto"]["choice"] in ("onnx-fp32", "openvino-fp32", "openvino-bf16")
    assert f"-> {res['auto']['choice']}" in r.stdout
