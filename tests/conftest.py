"""Shared fixtures: synthetic speech made here (every machine) and the real clips in ../shared.

The default data is synthetic (`speech`, `speech_images`, `speech_model`: eSpeak NG, offline,
deterministic), rendered and trained once per session and shared between test modules. The real
clips live beside the repository in ../shared (never copied in); tests where they are the point
(real speakers, the official lists, accuracy on real speech) use them.

Tests that need them take the `real_data` fixture (or one built on it) and are marked `real_data`
automatically. On a bare clone (no ../shared) they are skipped with the reason; with
SPECVISION_REQUIRE_REAL_DATA=1 (set by .ci/run) a missing folder is a failure instead, so CI can
never pass by skipping them.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_DATA = SHARED_DATA / "speech_commands_real"
OTHER_WORDS = SHARED_DATA / "speech_commands_other_words"
MORE_WORDS = SHARED_DATA / "speech_commands_more"
REQUIRE_ENV = "SPECVISION_REQUIRE_REAL_DATA"

# Tests run on 2 cores next to each other: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


# fixtures that train a model (once per session, seconds each): the tests that use them are `slow`
TRAINED_MODELS = {"speech_model", "real_model"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that (directly or through other fixtures) uses the shared real clips `real_data`,
    and every test that needs a trained model `slow`, so `-m "not slow"` never trains one."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if {"real_data", "other_words", "more_words"} & names:
            item.add_marker(pytest.mark.real_data)
        if TRAINED_MODELS & names:
            item.add_marker(pytest.mark.slow)


def shared_folder(path: Path, probe: str) -> Path:
    """`path` if it holds `probe`; otherwise skip (bare clone) or fail (CI: SPECVISION_REQUIRE_REAL_DATA=1)."""
    if (path / probe).exists():
        return path
    reason = f"shared real clips not found at {path} (CI provides ../shared beside the repo)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 makes them mandatory")
    pytest.skip(reason)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that `build(folder)` fills once per test run, even when pytest-xdist runs the suite in
    several worker processes (`make test` does): the first worker to ask builds it under a file lock
    in the run's shared temporary folder, the others wait for it and reuse it. Trained models and
    rendered datasets are the suite's costliest fixtures; building them once per worker would double them."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, shared by its workers (pytest-xdist's documented recipe)
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data/speech_commands_real: 403 yes + 391 no real clips from 200 speakers."""
    return shared_folder(REAL_DATA, "yes")


@pytest.fixture(scope="session")
def other_words() -> Path:
    """../shared/data/speech_commands_other_words: 2,154 real bed/cat/happy clips, the same speakers."""
    return shared_folder(OTHER_WORDS, "bed")


@pytest.fixture(scope="session")
def more_words() -> Path:
    """../shared/data/speech_commands_more: 1,560 more yes/no (mostly train/validation speakers) and
    500 clips each of down, left, right, stop, up; the same people as the other two folders."""
    return shared_folder(MORE_WORDS, "up")


@pytest.fixture(scope="session")
def real_images(real_data, tmp_path_factory) -> Path:
    """All 794 real clips rendered by `python -m preprocess --source folder` (speaker-hash split)."""
    from preprocess.prepare import main

    def build(folder: Path) -> None:
        assert main(["--source", "folder", "--root", str(real_data), "--out", str(folder / "images"),
                     "--val-pct", "20", "--test-pct", "20", "--workers", "2", "--quiet"]) == 0

    return built_once(tmp_path_factory, "real_images", build) / "images"


# ---------------------------------------------------------------- synthetic speech (every machine)

SPEECH_PER_WORD = 100  # clips per word: 50 eSpeak speakers, split 132/12/56 images (train/val/test)
SPEECH_EPOCHS = 2      # `python -m train` epochs of the shared synthetic model (a real, weak model)
REAL_EPOCHS = 3        # the real-clips model: enough to tell yes/no for unseen speakers (5 gave 0.92, 3 0.90)
BROKEN_CLIP = "yes/broken_nohash_0.wav"  # one undecodable file, so the manifest has a failure to show


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> Path:
    """yes/no speech made here by `python -m preprocess.synth` (eSpeak NG, offline, byte-identical
    for the same seed), plus one broken file that preprocess reports as failed. The default data of
    every test that needs *some* speech; tests where the real recordings are the point use real_data."""
    from preprocess import synth

    def build(folder: Path) -> None:
        out = folder / "audio"
        assert synth.main(["--words", "yes", "no", "--per-word", str(SPEECH_PER_WORD), "--out", str(out),
                           "--seed", "0", "--workers", "2", "--quiet"]) == 0
        (out / BROKEN_CLIP).write_bytes(b"RIFF\x00\x00 this is no wave")

    return built_once(tmp_path_factory, "speech", build) / "audio"


@pytest.fixture(scope="session")
def speech_images(speech, tmp_path_factory) -> Path:
    """`python -m preprocess --source folder` on `speech` (speaker-hash split 60/20/20)."""
    from preprocess.prepare import main

    def build(folder: Path) -> None:
        code = main(["--source", "folder", "--root", str(speech), "--out", str(folder / "images"),
                     "--val-pct", "20", "--test-pct", "20", "--workers", "2", "--quiet"])
        assert code == 1  # 1: some clip failed (the broken one), the rest rendered

    return built_once(tmp_path_factory, "speech_images", build) / "images"


def train_model(tmp_path_factory, images: Path, name: str, epochs: int) -> Path:
    """`python -m train` with one torch thread, images cached in RAM, no progress bars -> models/name,
    once per test run."""
    from train.train import main

    def build(folder: Path) -> None:
        assert main(["--images", str(images), "--out", str(folder / name), "--epochs", str(epochs),
                     "--batch-size", "32", "--cache", "--workers", "0", "--threads", "1", "--no-progress"]) == 0

    return built_once(tmp_path_factory, f"{name}_model", build) / name


@pytest.fixture(scope="session")
def speech_model(speech_images, tmp_path_factory) -> Path:
    """models/tiny: `python -m train` for a few epochs on speech_images (model.pt, metrics.json, ...),
    shared by the train, predict, export and report tests."""
    return train_model(tmp_path_factory, speech_images, "tiny", SPEECH_EPOCHS)


@pytest.fixture(scope="session")
def real_model(real_images, tmp_path_factory) -> Path:
    """`python -m train` for REAL_EPOCHS on the real clips' train split (test accuracy 0.90 on unseen
    speakers): for the tests about real speech."""
    return train_model(tmp_path_factory, real_images, "real", REAL_EPOCHS)


def first_clips(root: Path, label: str, count: int | None = None) -> list[Path]:
    """The first `count` (default: all) clips of root/label by name, never the broken one."""
    return [p for p in sorted((root / label).glob("*.wav")) if p.name != Path(BROKEN_CLIP).name][:count]
