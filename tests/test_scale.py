"""bench.scale: its measurements (real processes, real memory) and one tiny end-to-end run."""
from __future__ import annotations

import json
import os
import sys

import subprocess

import pytest

from bench import scale
from tests.conftest import REPO

ALLOCATE = ("import time; b = bytearray({mb} << 20); b[::4096] = b'x' * len(b[::4096]); "
            "time.sleep(1.5)")


def test_run_stage_measures_a_process_tree_peak_memory(tmp_path):
    # a parent holding ~40 MB with two children holding ~150 MB each, at the same time
    child = f"import subprocess, sys; ps = [subprocess.Popen([sys.executable, '-c', {ALLOCATE.format(mb=150)!r}]) for _ in range(2)]; " \
            f"{ALLOCATE.format(mb=40)}; [p.wait() for p in ps]"
    # measured from a fresh, small process as `python -m bench.scale` is (this one holds torch,
    # and a child's peak RSS starts at its parent's)
    driver = (f"import json, sys; from pathlib import Path; from bench import scale; "
              f"m = scale.run_stage('tree', [sys.executable, '-c', {child!r}], Path({str(tmp_path)!r})); "
              f"m.pop('log'); print(json.dumps(m))")
    out = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, check=True, cwd=REPO)
    measured = json.loads(out.stdout)
    assert 150 <= measured["peak_rss_mb"] < 260          # the largest single process
    assert 300 <= measured["peak_pss_total_mb"] < 500     # all three together
    assert measured["seconds"] >= 1.5


def test_failed_stage_names_itself_and_shows_its_log(tmp_path):
    with pytest.raises(scale.ScaleError, match=r"stage broken failed \(exit 3\)[\s\S]*boom"):
        scale.run_stage("broken", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], tmp_path)


def test_parse_counts_and_table():
    line = ("preprocess: 1015 clips -> /x/images: rendered 12, up to date 1003, failed 0, "
            "stale PNGs removed 0 (1.7 s)\n  split ...")
    assert scale.parse_counts(line) == {"clips": 1015, "rendered": 12, "up_to_date": 1003, "failed": 0,
                                        "seconds": 1.7}
    text = scale.table({"1000": {"clips": 1015, "render_s": 3.25}, "10000": {"error": "x"}})
    assert "| clips | 1,015 | - |" in text and "| render s (wall) | 3.2 | - |" in text


@pytest.mark.slow
def test_scale_end_to_end_on_a_tiny_standin(tmp_path, capsys):
    code = scale.main(["--sizes", "80", "--add", "8", "--words", "yes", "no", "up", "down",
                       "--work", str(tmp_path), "--workers", "2"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["80"]
    assert result["clips"] == 80 and result["rerun_rendered"] == 0
    assert result["add_clips"] == result["add_rerendered"] == 8 and result["clips_after_add"] == 88
    assert result["evaluate_images"] == result["predict_clips"] > 0
    for key in ("render", "rerun", "train", "train_cache", "evaluate", "predict", "report"):
        assert result[f"{key}_s"] > 0 and result[f"{key}_peak_rss_mb"] > 50, key
    assert os.path.isfile(tmp_path / "80" / "report" / "index.html")
