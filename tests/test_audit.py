"""preprocess.flags and preprocess.audit: each flag on a constructed clip, planted faults in a copy of
the real clips, and the page in headless Chromium."""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from preprocess import audit, flags, sources
from preprocess.render import RenderSettings, load_audio, render_image

SR = 16000
SETTINGS = RenderSettings()
PLANTED_PER_KIND = 10


# ---------------------------------------------------------------- constructed clips, one flag each

def word(seconds: float = 1.0, at: float = 0.35, length: float = 0.3, level: float = 0.3,
         noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    """A word-like burst (a vowel: harmonics of 140 Hz, smooth envelope) in faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    vowel = sum(np.sin(2 * np.pi * 140 * k * t + k) / k for k in range(1, 12))
    envelope = np.clip(1 - np.abs((t - at - length / 2) / (length / 2)), 0, None) ** 0.5
    wave = level * vowel / np.abs(vowel).max() * envelope + noise * rng.standard_normal(len(t))
    return wave.astype(np.float32)


def test_a_plain_word_has_no_flags():
    assert flags.clip_flags(word(), SETTINGS) == []


def test_silent_clip():
    quiet = word(level=3e-4, noise=3e-5)  # a word at -70 dBFS: the mic was off
    assert flags.clip_flags(quiet, SETTINGS) == ["silent"]
    assert flags.clip_flags(np.zeros(SR, np.float32), SETTINGS) == ["silent"]  # digital silence
    assert flags.clip_flags(word(level=0.02), SETTINGS) == []  # quiet but spoken: -40 dBFS peaks


def test_clipped_clip_at_full_scale_and_below():
    loud = np.clip(word() * 8, -1.0, 1.0)
    assert flags.clip_flags(loud, SETTINGS) == ["clipped"]
    # clipped, then turned down (a gain stage after the clipper): the plateau is not at full scale
    assert flags.clip_flags(np.clip(word() * 8, -1.0, 1.0) * 0.5, SETTINGS) == ["clipped"]
    # as a 16-bit file, read back: the plateau is 32767 or -32768, still found
    assert "clipped" in flags.clip_flags(np.round(loud * 32767) / 32768, SETTINGS)
    # a loud clean tone peaks once per cycle: not clipped
    tone = (0.99 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    assert "clipped" not in flags.clip_flags(tone, SETTINGS)


def test_cut_off_word_at_either_edge():
    assert flags.clip_flags(word(at=-0.1), SETTINGS) == ["cut_off"]      # starts before the window
    assert flags.clip_flags(word(at=0.8), SETTINGS) == ["cut_off"]       # still going at the end
    assert flags.clip_flags(word(at=0.05), SETTINGS) == []               # close to the start, but inside
    # steady noise touches both edges too, but is not a word: no louder part than the edges' own level
    noise = (0.05 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32)
    assert flags.clip_flags(noise, SETTINGS) == []


def test_short_source():
    assert flags.clip_flags(word(seconds=0.4, at=0.05), SETTINGS) == ["short"]
    assert flags.clip_flags(word(seconds=0.6, at=0.15), SETTINGS) == []  # padded, but not "much" shorter


def test_clip_record_is_the_manifest_columns_and_deterministic():
    wave = word()
    image = render_image(wave, SETTINGS)
    record = flags.clip_record(wave, image, SETTINGS)
    assert tuple(record) == flags.MANIFEST_FIELDS
    assert record["source_s"] == "1.000" and record["flags"] == ""
    assert -20 < float(record["level_db"]) < -10  # RMS of the loudest 20 ms of a 0.3-peak vowel
    assert record == flags.clip_record(wave.copy(), render_image(wave, SETTINGS), SETTINGS)


def test_image_sketch_finds_a_copy_at_another_gain_and_not_another_word():
    wave = word()
    same = flags.image_blocks(np.asarray(render_image(wave, SETTINGS)))
    quieter = flags.image_blocks(np.asarray(render_image(wave * 0.5, SETTINGS)))  # -6 dB copy
    other = flags.image_blocks(np.asarray(render_image(word(at=0.5, length=0.2, seed=3), SETTINGS)))
    silence = flags.image_blocks(np.asarray(render_image(np.zeros(SR, np.float32), SETTINGS)))
    vectors, usable = flags.sketch_vectors([same, quieter, other, silence, "not base64!"])
    assert usable.tolist() == [True, True, True, False, False]  # silence: all images of it look alike
    assert vectors[0] @ vectors[1] >= audit.DUPLICATE_COSINE
    assert vectors[0] @ vectors[2] < audit.DUPLICATE_COSINE


def test_duplicates_only_across_classes_or_splits():
    rows = [{"sha256": "a", "label": "yes", "split": "train", "image_blocks": ""},
            {"sha256": "a", "label": "no", "split": "train", "image_blocks": ""},    # label conflict
            {"sha256": "b", "label": "yes", "split": "train", "image_blocks": ""},
            {"sha256": "b", "label": "yes", "split": "test", "image_blocks": ""},    # leakage
            {"sha256": "c", "label": "yes", "split": "val", "image_blocks": ""},
            {"sha256": "c", "label": "yes", "split": "val", "image_blocks": ""}]     # a plain copy
    assert audit.duplicate_audio(rows) == {0: [1], 1: [0], 2: [3], 3: [2]}
    sketch = flags.image_blocks(np.asarray(render_image(word(), SETTINGS)))
    for row in rows:
        row["image_blocks"] = sketch
    found = audit.duplicate_images(rows)
    assert set(found) == set(range(6)) and sorted(found[0]) == [3, 4, 5]  # never pairs within a split


# ---------------------------------------------------------------- planted faults in a copy of the real clips

def _write(path: Path, wave: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, SR, subtype="PCM_16")


def plant_faults(real: Path, root: Path, seed: int = 0) -> dict[str, list[str]]:
    """A copy of the real yes/no clips (links) with PLANTED_PER_KIND clips of each fault written in.

    -> {kind: [source paths relative to root]}, plus "untouched": the clips left as they were.
    """
    clips = sorted(p.relative_to(real).as_posix() for p in real.glob("*/*.wav"))
    rng = random.Random(seed)
    chosen = rng.sample(clips, 6 * PLANTED_PER_KIND)
    kinds = ["silent", "clipped", "cut_off", "duplicate_class", "duplicate_split", "swapped"]
    picked = {k: chosen[i * PLANTED_PER_KIND:(i + 1) * PLANTED_PER_KIND] for i, k in enumerate(kinds)}
    planted: dict[str, list[str]] = {k: [] for k in kinds}
    for rel in clips:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel not in picked["silent"] + picked["clipped"] + picked["cut_off"] + picked["swapped"]:
            (root / rel).symlink_to(real / rel)
    for rel in picked["silent"]:  # the mic was off: the same take 60 dB down
        _write(root / rel, sf.read(real / rel, dtype="float32")[0] * 1e-3)
        planted["silent"].append(rel)
    for rel in picked["clipped"]:  # recorded 18 dB too hot
        wave = sf.read(real / rel, dtype="float32")[0]
        _write(root / rel, np.clip(wave * 8 / max(np.abs(wave).max(), 1e-3), -1, 1))
        planted["clipped"].append(rel)
    for rel in picked["cut_off"]:  # the recording started in the middle of the word
        wave = sf.read(real / rel, dtype="float32")[0]
        energy = np.convolve(wave.astype(np.float64) ** 2, np.ones(1600), "same")
        start = max(0, int(np.argmax(energy)) - 400)
        _write(root / rel, np.pad(wave[start:], (0, start)))
        planted["cut_off"].append(rel)
    for rel in picked["duplicate_class"]:  # the same file filed under the other word too
        label, name = rel.split("/")
        copy = f"{'no' if label == 'yes' else 'yes'}/{name}"
        if (root / copy).exists():
            copy = f"{'no' if label == 'yes' else 'yes'}/dupclass{name}"
        (root / copy).symlink_to(real / rel)
        planted["duplicate_class"] += [rel, copy]
    for n, rel in enumerate(picked["duplicate_split"]):  # the same file under a speaker of another split
        label, name = rel.split("/")
        split = sources.which_set(sources.group_id(name), 20, 20)
        speaker = next(f"dup{n}x{k}" for k in range(1000)
                       if sources.which_set(f"dup{n}x{k}", 20, 20) != split)
        copy = f"{label}/{speaker}_nohash_0.wav"
        (root / copy).symlink_to(real / rel)
        planted["duplicate_split"] += [rel, copy]
    for rel in picked["swapped"]:  # filed under the wrong word
        label, name = rel.split("/")
        wrong = f"{'no' if label == 'yes' else 'yes'}/{name}"
        if (root / wrong).exists():
            wrong = f"{'no' if label == 'yes' else 'yes'}/swapped{name}"
        (root / wrong).symlink_to(real / rel)
        planted["swapped"].append(wrong)
    touched = {c for group in planted.values() for c in group} | set(chosen)
    planted["untouched"] = [c for c in clips if c not in touched]
    return planted


@pytest.fixture(scope="module")
def planted(real_data, tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """-> (images dir rendered from the planted copy, the planted clips)."""
    from preprocess.prepare import main

    base = tmp_path_factory.mktemp("planted")
    faults = plant_faults(real_data, base / "clips")
    assert main(["--source", "folder", "--root", str(base / "clips"), "--out", str(base / "images"),
                 "--val-pct", "20", "--test-pct", "20", "--workers", "2", "--quiet"]) == 0
    return base / "images", faults


def read_flags(out: Path) -> dict[str, list[str]]:
    with open(out / "flags.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == ["source", "png", "split", "label", "flags"]
    return {row["source"]: row["flags"].split(";") for row in rows}


EXPECTED = {"silent": ["silent"], "clipped": ["clipped"], "cut_off": ["cut_off"],
            "duplicate_class": ["duplicate_audio"], "duplicate_split": ["duplicate_audio", "duplicate_image"]}


@pytest.mark.slow
def test_every_planted_fault_is_flagged_and_few_untouched_clips(planted, tmp_path, capsys):
    images, faults = planted
    out = tmp_path / "audit"
    assert audit.main([str(images), "--out", str(out), "--quiet"]) == 0
    found = read_flags(out)
    for kind, expected in EXPECTED.items():
        for source in faults[kind]:
            assert set(expected) <= set(found.get(source, [])), f"{kind} {source}: flagged {found.get(source)}"
    untouched = [s for s in faults["untouched"] if s in found]
    share = len(untouched) / len(faults["untouched"])
    print(f"untouched clips flagged: {len(untouched)} of {len(faults['untouched'])} ({share:.1%})")
    assert share < 0.05, {s: found[s] for s in untouched}
    # the summary table counts what flags.csv lists
    page = (out / "index.html").read_text()
    assert "specvision-audit" in page and "suspect_label" not in capsys.readouterr().out
    with open(images / "manifest.csv", newline="") as handle:
        manifest = list(csv.DictReader(handle))
    assert f">{len(manifest)}<" in page


@pytest.mark.slow
def test_swapped_labels_rank_in_the_top_20_with_a_model(planted, tmp_path):
    """A real model trained on the planted images; the train split is judged out of fold."""
    from train.train import main as train_main

    images, faults = planted
    model_dir = tmp_path / "models" / "planted"
    assert train_main(["--images", str(images), "--out", str(model_dir), "--epochs", "10", "--cache",
                       "--no-progress"]) == 0
    out = tmp_path / "audit"
    assert audit.main([str(images), "--out", str(out), "--model", str(model_dir / "model.pt"),
                       "--folds", "3", "--fold-epochs", "10", "--quiet"]) == 0
    with open(out / "suspects.csv", newline="") as handle:
        ranking = list(csv.DictReader(handle))
    top = [row["source"] for row in ranking[:20]]
    missed = [s for s in faults["swapped"] if s not in top]
    assert missed == [], f"swapped clips outside the top 20: {missed}; top 20: {ranking[:20]}"
    found = read_flags(out)
    assert all("suspect_label" in found.get(s, []) for s in faults["swapped"])
    page = (out / "index.html").read_text()
    assert "out-of-fold: 3 quick" in page and "never trained on this split" in page
    assert {row["how"] for row in ranking} <= {"out-of-fold", "the model, out-of-sample"}
