"""HOTA / DetA / AssA through TrackEval: hand-made cases with known values, and equality with
TrackEval's own MOTChallenge pipeline on py-motmetrics' TUD-Campus fixture."""

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from trackpipe.trackers import mot

REPO = Path(__file__).resolve().parents[1]
MOT = REPO / ".." / "shared" / "assets" / "mot"


def rows(items):
    """[(frame, id, left, top, w, h)] -> (K,10) MOT rows."""
    out = np.full((len(items), 10), -1.0)
    out[:, :6] = np.asarray(items, float)
    out[:, 6] = 1
    return out


def test_identity_switch_halves_association():
    """One object over 4 frames, boxes exact; the tracker changes its ID after frame 2.
    Every detection is a TP at every alpha (DetA 1); each TP's ID pairing covers 2 of the
    4 frames of the object (TPA 2, FNA 2, FPA 0 -> A 0.5), so AssA 0.5, HOTA sqrt(0.5)."""
    gt = rows([(f, 1, 10, 10, 20, 40) for f in range(1, 5)])
    res = rows([(1, 7, 10, 10, 20, 40), (2, 7, 10, 10, 20, 40),
                (3, 8, 10, 10, 20, 40), (4, 8, 10, 10, 20, 40)])
    s = mot.hota_summary({"S": mot.hota_sequence(gt, res)})["S"]
    assert s["deta"] == pytest.approx(1.0)
    assert s["assa"] == pytest.approx(0.5)
    assert s["hota"] == pytest.approx(np.sqrt(0.5))


def test_localisation_enters_through_the_alpha_thresholds():
    """Boxes at IoU 0.62 with a perfect ID: a TP at the 12 alphas 0.05..0.60 of TrackEval's 19
    (0.05..0.95), nothing above, so HOTA = DetA = AssA = 12/19."""
    gt = rows([(f, 1, 0, 0, 100, 100) for f in range(1, 6)])
    # shift along x so that IoU = (100 - d) / (100 + d) = 0.62 -> d = 38 / 1.62
    d = 38 / 1.62
    res = rows([(f, 3, d, 0, 100, 100) for f in range(1, 6)])
    s = mot.hota_summary({"S": mot.hota_sequence(gt, res)})["S"]
    for k in ("hota", "deta", "assa"):
        assert s[k] == pytest.approx(12 / 19), k


def test_empty_sides_and_overall_combination():
    gt = rows([(1, 1, 0, 0, 10, 10)])
    none = np.zeros((0, 10))
    a = mot.hota_sequence(gt, none)
    b = mot.hota_sequence(gt, rows([(1, 5, 0, 0, 10, 10)]))
    out = mot.hota_summary({"A": a, "B": b})
    assert out["A"]["hota"] == 0.0 and out["B"]["hota"] == pytest.approx(1.0)
    # combined: 1 TP and 1 FN at every alpha -> DetA 0.5, AssA 1
    assert out["OVERALL"]["deta"] == pytest.approx(0.5)
    assert out["OVERALL"]["assa"] == pytest.approx(1.0)


@pytest.mark.skipif(not MOT.is_dir(), reason="shared MOT assets missing")
def test_equals_trackeval_motchallenge_pipeline_on_tud_campus_fixture(tmp_path):
    """Our data preparation (gt conf >= 1, IoU by TrackEval, ids relabelled) gives exactly what
    TrackEval's MotChallenge2DBox (BENCHMARK MOT15) + Evaluator compute from the files."""
    import trackeval

    g = tmp_path / "gt" / "TUD-Campus"
    (g / "gt").mkdir(parents=True)
    shutil.copy(MOT / "TUD-Campus" / "gt" / "gt.txt", g / "gt" / "gt.txt")
    shutil.copy(MOT / "TUD-Campus" / "seqinfo.ini", g / "seqinfo.ini")
    t = tmp_path / "trackers" / "fixture" / "data"
    t.mkdir(parents=True)
    shutil.copy(MOT / "TUD-Campus" / "res" / "motmetrics_test.txt", t / "TUD-Campus.txt")
    cfg = trackeval.datasets.MotChallenge2DBox.get_default_dataset_config()
    cfg.update(GT_FOLDER=str(tmp_path / "gt"), TRACKERS_FOLDER=str(tmp_path / "trackers"),
               BENCHMARK="MOT15", SPLIT_TO_EVAL="train", SEQ_INFO={"TUD-Campus": None},
               SKIP_SPLIT_FOL=True, TRACKERS_TO_EVAL=["fixture"], PRINT_CONFIG=False)
    ec = trackeval.Evaluator.get_default_eval_config()
    ec.update(USE_PARALLEL=False, PRINT_RESULTS=False, PRINT_CONFIG=False, OUTPUT_SUMMARY=False,
              OUTPUT_DETAILED=False, PLOT_CURVES=False, TIME_PROGRESS=False)
    with contextlib.redirect_stdout(io.StringIO()):
        res, _ = trackeval.Evaluator(ec).evaluate([trackeval.datasets.MotChallenge2DBox(cfg)],
                                                  [trackeval.metrics.HOTA()])
    ref = res["MotChallenge2DBox"]["fixture"]["TUD-Campus"]["pedestrian"]["HOTA"]
    gt = mot.read_mot_file(MOT / "TUD-Campus" / "gt" / "gt.txt", "gt")
    ours = mot.hota_sequence(gt[gt[:, 6] >= 1],
                             mot.read_mot_file(MOT / "TUD-Campus" / "res" / "motmetrics_test.txt", "res"))
    for k in ("HOTA", "DetA", "AssA", "LocA"):
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-12, err_msg=k)
    assert float(np.mean(ours["HOTA"])) == pytest.approx(0.391397, abs=1e-6)
