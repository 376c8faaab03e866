"""Shared fixtures. The real clips live beside the repository in ../shared (never copied in)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "speech_commands_real"

# Tests run on 2 cores next to each other: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data/speech_commands_real: 403 yes + 391 no real clips from 200 speakers."""
    if not (REAL_DATA / "yes").is_dir():
        pytest.fail(f"shared real clips not found at {REAL_DATA} (CI provides ../shared beside the repo)")
    return REAL_DATA


@pytest.fixture(scope="session")
def real_images(real_data, tmp_path_factory) -> Path:
    """All 794 real clips rendered by `python -m preprocess --source folder` (speaker-hash split)."""
    from preprocess.prepare import main

    out = tmp_path_factory.mktemp("real_images") / "images"
    code = main(["--source", "folder", "--root", str(real_data), "--out", str(out),
                 "--val-pct", "20", "--test-pct", "20", "--workers", "2"])
    assert code == 0
    return out
