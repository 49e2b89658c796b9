"""Live sources against a real RTSP server (tests/rtsp, GStreamer): latest-frame flow, the
watchdog's source_lost / source_restored around a frozen server (SIGSTOP) and a killed one,
and a SIGKILLed stage restarted while the rest keeps running."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from conftest import fake_detector_factory, leftovers
from trackpipe.pipeline.runtime.app import run_pipeline
from trackpipe.pipeline.config import Config
from trackpipe.pipeline.common.shared import StageBoard


@pytest.mark.timeout(120)
def test_rtsp_dropout_reconnect_and_stage_restart(tmp_path, yf_spec):
    from tests.rtsp.fixtures import RtspServer, rtsp_available
    ok, why = rtsp_available()
    if not ok:
        pytest.skip(why)
    srv = RtspServer(width=640, height=480, fps=25)
    srv.start()
    srv.wait_ready(20)
    cfg = Config()
    cfg.source.uri = srv.url
    cfg.source.watchdog_s = 1.0
    cfg.source.read_timeout_s = 2.0
    cfg.source.open_timeout_s = 2.0
    cfg.source.backoff_initial_s = 0.2
    cfg.source.backoff_max_s = 1.0
    cfg.output.headless = True
    cfg.output.events = str(tmp_path / "events.jsonl")
    cfg.output.mot = str(tmp_path / "mot.txt")
    cfg.profile.path = str(tmp_path / "profile.json")
    cfg.profile.interval_s = 0.2
    st = {"phase": 0, "t": time.monotonic()}

    def hook(sup):
        out = sup.board.get(sup.rc.stage_index["render"], StageBoard.OUT)
        cap = (sup.aggs["capture"].last or {}).get("gauges", {})
        now = time.monotonic()
        assert now - st["t"] < 60, f"stuck in phase {st['phase']}"
        if st["phase"] == 0 and out >= 20:
            srv.freeze()                                # the camera hangs: no frame, no error
            st.update(phase=0.5, t=now)
        elif st["phase"] == 0.5 and cap.get("source_up") == 0:
            st["frozen_after"] = now - st["t"]
            srv.resume()
            st.update(phase=0.7, t=now, out=out)
        elif st["phase"] == 0.7 and cap.get("source_up") == 1 and out >= st["out"] + 20:
            srv.kill()                                  # the camera goes away
            st.update(phase=1, t=now)
        elif st["phase"] == 1 and cap.get("source_up") == 0:
            st["lost_after"] = now - st["t"]
            srv.start()                                 # ... and comes back on the same port
            srv.wait_ready(20)
            st.update(phase=2, t=time.monotonic(), out=out)
        elif st["phase"] == 2 and cap.get("source_up") == 1 and out >= st["out"] + 20:
            os.kill(sup.procs["track"].pid, signal.SIGKILL)
            st.update(phase=3, t=now, out=out)
        elif st["phase"] == 3 and sup.aggs["track"].restarts == 1 and out >= st["out"] + 20:
            sup.request_stop()

    try:
        res = run_pipeline(cfg, yf_spec.with_(extra={}), fake_detector_factory, on_tick=hook)
    finally:
        srv.close()
    assert res.exit_code == 0, res.error
    assert st["phase"] == 3 and st["lost_after"] < 4.0 and st["frozen_after"] < 3.0
    r = res.report
    assert r["mode"] == "latest" and r["stages"]["track"]["restarts"] == 1
    events = [json.loads(ln) for ln in (tmp_path / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events if e["event"].startswith("source_")]
    assert kinds == ["source_lost", "source_restored"] * 2, kinds
    lost = [e for e in events if e["event"] == "source_lost"]
    assert lost[0]["reason"] == "no frame for 1s"  # the watchdog: a hung source never errors
    assert all({"event", "t", "seq"} <= set(e) for e in events)
    # a restarted tracker must not reuse the ids of the first one
    ids = [int(ln.split(",")[1]) for ln in (tmp_path / "mot.txt").read_text().splitlines()]
    assert any(i > 1_000_000 for i in ids)
    assert leftovers(os.getpid()) == []


@pytest.mark.timeout(120)
def test_precision_auto_judges_reduced_precision_on_a_live_streams_frames(tmp_path, monkeypatch):
    """A live source's probe frames are read from the stream (first use only): bf16 is judged on
    them and the choice cached; the next start reads no frame at all."""
    from conftest import COCO_NAMES, VIDEO_360, YF_CFG, YF_WEIGHTS
    from tests.rtsp.fixtures import RtspServer, rtsp_available
    from trackpipe.models.cpu import cpu_info
    from trackpipe.models.spec import ModelSpec
    from trackpipe.pipeline.media import sources
    from trackpipe.pipeline.runtime.app import resolve_auto
    from trackpipe.pipeline.runtime.inputs import probe_source
    ok, why = rtsp_available()
    if not ok:
        pytest.skip(why)
    srv = RtspServer(file=VIDEO_360)
    srv.start()
    try:
        srv.wait_ready(20)
        cfg = Config()
        cfg.source.uri = srv.url
        info = probe_source(cfg.source)
        assert info.live and info.kind == "stream"
        spec = ModelSpec(cfg=YF_CFG, weights=YF_WEIGHTS, names=COCO_NAMES, size=(320, 320), backend="auto",
                         precision="auto", cache_dir=tmp_path, extra={"auto_seconds": 1.0})
        first = resolve_auto(spec, info, cfg.source)
        (entry,) = [json.loads(p.read_text()) for p in (tmp_path / "auto").glob("*.json")]
        assert entry["fields"]["probe"] is True and entry["choice"]["probe"] == "12 given frames"
        bf16 = entry["choice"]["measured"]["openvino-bf16"]
        if cpu_info().has_bf16:
            assert bf16["agreement"]["ref_boxes"] >= 10       # judged on the stream's frames
        else:
            assert "bf16" in bf16["error"]

        def no_reading(*a, **k):
            raise AssertionError("a cached choice must not read the stream")

        monkeypatch.setattr(sources, "read_live_frames", no_reading)
        again = resolve_auto(spec, info, cfg.source)
        assert (again.backend, again.precision) == (first.backend, first.precision)
    finally:
        srv.close()
