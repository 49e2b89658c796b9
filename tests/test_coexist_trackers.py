"""trackpipe and roboflow's ``trackers`` (PyPI) in one virtual environment: both import, both work.

roboflow's distribution installs a top-level ``trackers`` package; ours is ``trackpipe.trackers``
(pyproject's package-dir mapping), so they must not shadow each other. The test makes a scratch
virtual environment that sees this environment's packages (a ``site.addsitedir`` line, so the
editable trackpipe install and numpy/OpenCV/SciPy are shared, not copied) and installs
``trackers`` there with pip: its dependencies are light (supervision, pydeprecate; no torch),
pip adds only what is missing. Then one script imports both and runs a tracker of each on the
same few boxes. Needs PyPI (skips, saying so, when it cannot be reached). About 30-60 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import trackers                                   # roboflow's
    import supervision as sv
    import trackpipe.trackers                         # ours
    from trackpipe.models.types import Detections
    from trackpipe.trackers.factory import build_tracker

    boxes = [np.array([[10 + 2 * t, 20, 60 + 2 * t, 90], [200, 50 - t, 260, 130 - t]], np.float32)
             for t in range(8)]
    rf = trackers.SORTTracker(minimum_consecutive_frames=1)
    ours = build_tracker("sort")
    rf_ids, our_ids = [], []
    for b in boxes:
        det = sv.Detections(xyxy=b.astype(float), confidence=np.array([0.9, 0.8]), class_id=np.array([0, 2]))
        rf_ids.append(rf.update(det).tracker_id.tolist())
        tr = ours.update(Detections(b, np.array([0.9, 0.8], np.float32), np.array([0, 2], np.int32)))
        our_ids.append(sorted(tr.track_id.tolist()))
    print(json.dumps({"roboflow_file": trackers.__file__, "ours_file": trackpipe.trackers.__file__,
                      "sort": rf.__class__.__module__, "rf_ids": rf_ids, "our_ids": our_ids}))
""")


@pytest.mark.timeout(600)
def test_roboflow_trackers_and_trackpipe_in_one_environment(tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    with open(os.path.join(site, "zz_trackpipe_env.pth"), "w") as f:   # after the scratch env's own packages
        f.write(f"import site; site.addsitedir({ours!r})\n")
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "trackers"],
                         capture_output=True, text=True, timeout=480)
    if pip.returncode != 0:
        text = pip.stderr + pip.stdout
        if any(k in text for k in ("Could not find a version", "NewConnectionError", "No matching distribution",
                                   "Temporary failure in name resolution", "Network is unreachable")):
            pytest.skip("PyPI cannot be reached: " + text.strip().splitlines()[-1])
        raise AssertionError(text[-3000:])
    run = subprocess.run([str(py), "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    # two different packages: roboflow's in the scratch env, ours from the repository
    assert r["roboflow_file"].startswith(str(env_dir)) and "/trackers/__init__.py" in r["roboflow_file"]
    assert not r["ours_file"].startswith(str(env_dir))
    assert r["ours_file"].endswith(os.path.join("trackers", "__init__.py"))
    assert r["sort"].startswith("trackers.core.sort")
    # both track the two boxes with two stable ids
    assert len(set(r["rf_ids"][-1])) == 2 and all(i >= 0 for i in r["rf_ids"][-1])
    assert r["rf_ids"][-1] == r["rf_ids"][-2]
    assert r["our_ids"][-1] == r["our_ids"][-2] and len(r["our_ids"][-1]) == 2
