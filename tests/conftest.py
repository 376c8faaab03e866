"""Shared fixtures. The real clips live beside the repository in ../shared (never copied in).

Tests that need them take the `real_data` fixture (or one built on it) and are marked `real_data`
automatically. On a bare clone (no ../shared) they are skipped with the reason; with
SPECVISION_REQUIRE_REAL_DATA=1 (set by .ci/run) a missing folder is a failure instead, so CI can
never pass by skipping them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_DATA = SHARED_DATA / "speech_commands_real"
OTHER_WORDS = SHARED_DATA / "speech_commands_other_words"
REQUIRE_ENV = "SPECVISION_REQUIRE_REAL_DATA"

# Tests run on 2 cores next to each other: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Mark every test that (directly or through other fixtures) uses the shared real clips."""
    for item in items:
        if {"real_data", "other_words"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_data)


def shared_folder(path: Path, probe: str) -> Path:
    """`path` if it holds `probe`; otherwise skip (bare clone) or fail (CI: SPECVISION_REQUIRE_REAL_DATA=1)."""
    if (path / probe).exists():
        return path
    reason = f"shared real clips not found at {path} (CI provides ../shared beside the repo)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 makes them mandatory")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data/speech_commands_real: 403 yes + 391 no real clips from 200 speakers."""
    return shared_folder(REAL_DATA, "yes")


@pytest.fixture(scope="session")
def other_words() -> Path:
    """../shared/data/speech_commands_other_words: 2,154 real bed/cat/happy clips, the same speakers."""
    return shared_folder(OTHER_WORDS, "bed")


@pytest.fixture(scope="session")
def real_images(real_data, tmp_path_factory) -> Path:
    """All 794 real clips rendered by `python -m preprocess --source folder` (speaker-hash split)."""
    from preprocess.prepare import main

    out = tmp_path_factory.mktemp("real_images") / "images"
    code = main(["--source", "folder", "--root", str(real_data), "--out", str(out),
                 "--val-pct", "20", "--test-pct", "20", "--workers", "2"])
    assert code == 0
    return out
