"""``python -m trackers evaluate`` end to end, including bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trackpipe.trackers import mot

REPO = Path(__file__).resolve().parents[1]
MOT = REPO / ".." / "shared" / "assets" / "mot"

pytestmark = pytest.mark.skipif(not MOT.is_dir(), reason="shared MOT assets missing")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "trackers", "evaluate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_json_last_line_and_result_files(tmp_path):
    r = run_cli("--mot-root", "../shared/assets/mot", "--seqs", "TUD-Campus,KITTI-13",
                "--tracker", "sort-mot15", "--json", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    data = json.loads(lines[-1])
    assert list(data) == ["OVERALL", "TUD-Campus", "KITTI-13"]
    for key in ("mota", "idf1", "idsw", "fp", "fn", "ms_per_frame"):
        assert key in data["OVERALL"] and key in data["TUD-Campus"]
    assert 40 < data["TUD-Campus"]["mota"] < 80                # percent
    assert any(line.startswith("OVERALL") for line in lines[:-1])
    # the written results score the same through the evaluator
    res = mot.read_mot_file(tmp_path / "TUD-Campus.txt", "res")
    seq = mot.load_sequence(MOT, "TUD-Campus")
    s = mot.summarize([mot.accumulate(seq.gt, res)], ["TUD-Campus"])["TUD-Campus"]
    assert 100 * s["mota"] == pytest.approx(data["TUD-Campus"]["mota"], abs=0.05)


def test_tracker_choice_and_overrides():
    r = run_cli("--mot-root", str(MOT), "--seqs", "TUD-Campus", "--tracker", "deepsort",
                "--set", "max_age=10", "--json")
    assert r.returncode == 0, r.stderr
    assert "OVERALL" in json.loads(r.stdout.strip().splitlines()[-1])
    r = run_cli("--mot-root", str(MOT), "--seqs", "TUD-Campus", "--set", "max_ag=10")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "max_ag" in r.stderr


def _copy_seq(tmp_path, name="TUD-Campus"):
    dst = tmp_path / "mot" / name
    shutil.copytree(MOT / name, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


@pytest.mark.parametrize("target, corrupt, line, what", [
    ("det/det.txt", "4,-1,281.9,187.4,79.9\n", 4, "expected at least 7"),
    ("gt/gt.txt", "1,1,abc,181,121,229,1,-1,-1,-1\n", 2, "not a number"),
])
def test_malformed_input_is_one_clear_line(tmp_path, target, corrupt, line, what):
    seq = _copy_seq(tmp_path)
    path = seq / target
    rows = path.read_text().splitlines(keepends=True)
    rows.insert(line - 1, corrupt)
    path.write_text("".join(rows))
    r = run_cli("--mot-root", str(tmp_path / "mot"), "--json")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}:{line}: ") and what in err[0]
    assert r.stdout == ""


def test_missing_files_and_folders(tmp_path):
    seq = _copy_seq(tmp_path)
    (seq / "gt" / "gt.txt").unlink()
    r = run_cli("--mot-root", str(tmp_path / "mot"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {seq / 'gt' / 'gt.txt'}: gt file not found"
    r = run_cli("--mot-root", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "MOT root folder not found" in r.stderr
    r = run_cli("--mot-root", str(MOT), "--det-file", "det/nope.txt", "--seqs", "TUD-Campus")
    assert r.returncode == 2 and "det/nope.txt: det file not found" in r.stderr


def test_package_import_is_cheap():
    code = ("import sys, trackers\n"
            "heavy = [m for m in ('numpy', 'scipy', 'motmetrics', 'cv2', 'tensorflow') "
            "if m in sys.modules]\nsys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_default_is_hybrid_with_hota_and_score_floor_from_files():
    r = run_cli("--mot-root", str(MOT), "--seqs", "TUD-Campus", "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("tracker=hybrid") and "score_floor=0.5" in lines[0]
    assert "HOTA" in lines[1] and "DetA" in lines[1] and "AssA" in lines[1]
    o = json.loads(lines[-1])["OVERALL"]
    for key in ("hota", "deta", "assa", "mota", "idf1"):
        assert 20 < o[key] <= 100, (key, o)
    # explicit floor, no interpolation
    r2 = run_cli("--mot-root", str(MOT), "--seqs", "TUD-Campus", "--json", "--score-floor", "0.5",
                 "--interpolate", "0")
    assert r2.returncode == 0 and "interpolate" not in r2.stdout.splitlines()[0]
    r3 = run_cli("--mot-root", str(MOT), "--seqs", "TUD-Campus", "--score-floor", "1.5")
    assert r3.returncode == 2 and r3.stderr.startswith("error: --score-floor")
