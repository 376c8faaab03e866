"""The eSpeak NG synthetic source: real engine, real files; determinism, format, voices, split, errors.
(Piper, the engine mix and the speaker transform: test_voices.py.)"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from preprocess import effects, synth, voices
from preprocess.espeak import (EngineError, LibraryEngine, Voice, default_library_paths, list_variants,
                               load_engine)
from preprocess.sources import group_id, which_set
from conftest import REPO

torch.set_num_threads(1)
WORDS = ["yes", "no"]
VARIANTS = ["default", "m3", "f2", "whisper"]
LANGUAGES = ["en", "en-US"]
PER_WORD = len(VARIANTS) * len(LANGUAGES) * voices.TAKES_PER_SPEAKER  # every accent x variant, both takes


def run_synth(out: Path, *extra: str, workers: int = 2) -> int:
    return synth.main(["--words", *WORDS, "--per-word", str(PER_WORD), "--out", str(out), "--seed", "3",
                       "--variants", *VARIANTS, "--languages", *LANGUAGES, "--workers", str(workers),
                       "--engine", "espeak", "--speaker-transform", "off", "--quiet", *extra])


def wav_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.wav"))}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "audio"
    assert run_synth(out) == 0
    return out


def test_same_arguments_give_byte_identical_files_whatever_the_worker_count(synth_dir, tmp_path):
    again = tmp_path / "again"
    assert run_synth(again, workers=1) == 0
    first, second = wav_bytes(synth_dir), wav_bytes(again)
    assert len(first) == len(WORDS) * PER_WORD
    assert first == second
    assert (synth_dir / "synth.json").read_bytes() == (again / "synth.json").read_bytes()
    other_seed = tmp_path / "seed4"
    assert synth.main(["--words", "yes", "--per-word", "4", "--out", str(other_seed), "--seed", "4",
                       "--variants", *VARIANTS, "--languages", *LANGUAGES, "--quiet"]) == 0
    assert not set(wav_bytes(other_seed).values()) & set(first.values())


def test_files_are_16k_mono_16bit_of_exactly_the_duration(synth_dir, tmp_path):
    for path in sorted(synth_dir.rglob("*.wav")):
        info = sf.info(str(path))
        found = (info.samplerate, info.channels, info.subtype, info.frames)
        assert found == (16000, 1, "PCM_16", 16000), path
    assert not list(synth_dir.rglob(".*"))  # no temp files left
    data, _ = sf.read(str(next(synth_dir.rglob("*.wav"))), dtype="float32")
    assert 0.01 < np.abs(data).max() <= 1.0  # a word, not silence

    short = tmp_path / "short"
    assert synth.main(["--words", "no", "--per-word", "2", "--out", str(short), "--duration", "0.75",
                       "--variants", "m1", "--quiet", "--workers", "1"]) == 0
    assert [sf.info(str(p)).frames for p in sorted(short.rglob("*.wav"))] == [12000, 12000]


def test_every_word_accent_and_variant_is_produced(synth_dir):
    info = json.loads((synth_dir / "synth.json").read_text())
    seen = {(s["language"], s["variant"] or "default") for s in info["speakers"]}
    assert seen == {(lang, variant) for lang in LANGUAGES for variant in VARIANTS}
    for word in WORDS:
        groups = {group_id(p.name) for p in (synth_dir / word).glob("*.wav")}
        assert groups == {s["group"] for s in info["speakers"]}  # every speaker says every word
        assert len(list((synth_dir / word).glob("*.wav"))) == PER_WORD


def test_every_bundled_voice_speaks():
    """All default accents and variants exist in the wheel's data and give non-silent speech."""
    library, data = default_library_paths()
    assert set(voices.VARIANTS) - {None} <= set(list_variants(data))
    bundled = [Voice(lang) for lang in voices.LANGUAGES] + [Voice("en-US", v) for v in voices.VARIANTS]
    with LibraryEngine(library, data) as engine:
        for voice in bundled:
            wave = engine.synth("yes", voice)
            assert len(wave) > 0.1 * engine.sample_rate and np.abs(wave).max() > 0.05, voice.name


def test_default_speakers_cycle_through_every_variant_and_accent():
    jobs, speakers = voices.plan_jobs(WORDS, voices.TAKES_PER_SPEAKER * len(voices.VARIANTS), seed=0)
    assert {s.voice.variant for s in speakers} == set(voices.VARIANTS)
    assert {s.voice.language for s in speakers} == set(voices.LANGUAGES)
    assert len({s.group for s in speakers}) == len(speakers)
    assert voices.make_speakers(0, 10) == speakers[:10]  # more clips never change the first speakers


def test_library_output_does_not_depend_on_what_was_synthesized_before():
    with load_engine() as engine:
        for variant in ("f3", "klatt", "whisper"):
            first = engine.synth("yes?", Voice("en-US", variant, 40, 60, 190))
            engine.synth("no", Voice("en", "m3", 80, 10, 300))
            assert np.array_equal(first, engine.synth("yes?", Voice("en-US", variant, 40, 60, 190))), variant


def test_speaker_hash_split_keeps_each_synthetic_voice_on_one_side(synth_dir, tmp_path):
    # Every file of a speaker (both words, all takes) gets one split from its group id...
    _, speakers = voices.plan_jobs(WORDS, 400, seed=0)
    splits = {s.group: which_set(s.group, 20, 20) for s in speakers}
    assert set(splits.values()) == {"train", "val", "test"}
    # ...and `python -m preprocess --source folder` on the synthetic folder does exactly that.
    from preprocess.prepare import main as prepare
    images = tmp_path / "images"
    assert prepare(["--source", "folder", "--root", str(synth_dir), "--out", str(images),
                    "--val-pct", "25", "--test-pct", "25", "--workers", "1", "--quiet"]) == 0
    with open(images / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(WORDS) * PER_WORD and all(r["status"] == "ok" for r in rows)
    by_group: dict[str, set[str]] = {}
    for row in rows:
        by_group.setdefault(group_id(row["source"]), set()).add(row["split"])
    assert all(len(found) == 1 for found in by_group.values()), by_group
    assert len({split for found in by_group.values() for split in found}) >= 2


@pytest.mark.slow  # a subprocess: the CLI's message and exit status
def test_clear_error_when_no_engine_is_found(tmp_path):
    missing = str(tmp_path / "no" / "libespeak-ng.so")
    with pytest.raises(EngineError, match="no eSpeak NG engine available") as caught:
        load_engine(library=missing, binary_path="")
    assert missing in str(caught.value) and "no espeak-ng on PATH" in str(caught.value)

    env = dict(os.environ, SPECVISION_ESPEAK_LIBRARY=missing, PATH="")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "preprocess.synth", "--per-word", "2", "--out", str(out)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "no eSpeak NG engine available" in result.stderr and missing in result.stderr
    assert not out.exists()  # nothing written


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="no espeak-ng program installed")
def test_binary_fallback_when_the_library_is_missing(tmp_path):
    engine = load_engine(library=str(tmp_path / "missing.so"))
    assert engine.kind == "binary"
    wave = engine.synth("no", Voice("en-US", "f2", 60, 40, 160))
    assert len(wave) > 0.1 * engine.sample_rate and np.abs(wave).max() > 0.05
    assert np.array_equal(wave, engine.synth("no", Voice("en-US", "f2", 60, 40, 160)))


def test_bad_options_and_noise_folders_fail_clearly(tmp_path, capsys):
    assert synth.main(["--per-word", "0", "--out", str(tmp_path / "a")]) == 2
    assert "--per-word" in capsys.readouterr().err
    assert synth.main(["--per-word", "2", "--out", str(tmp_path / "b"), "--variants", "nosuchvoice"]) == 2
    assert "nosuchvoice" in capsys.readouterr().err
    empty = tmp_path / "empty_noise"
    empty.mkdir()
    (empty / "broken.wav").write_bytes(b"not audio")
    assert synth.main(["--per-word", "2", "--out", str(tmp_path / "c"), "--noise-dir", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "no usable audio files" in err and "broken.wav" in err


def test_noise_dir_recordings_are_mixed_in(tmp_path):
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    hum = 0.1 * np.sin(2 * np.pi * 50 * np.arange(3 * 16000) / 16000)  # 3 s of mains hum
    sf.write(noise_dir / "hum.wav", hum.astype(np.float32), 16000)
    out, plain = tmp_path / "noisy", tmp_path / "plain"
    for folder, extra in ((out, ["--noise-dir", str(noise_dir)]), (plain, [])):
        assert synth.main(["--words", "yes", "--per-word", "4", "--out", str(folder), "--variants", "m1",
                           "--quiet", "--workers", "1", *extra]) == 0
    info = json.loads((out / "synth.json").read_text())
    assert "hum.wav" in info["noise"] and len(list(out.rglob("*.wav"))) == 4
    assert wav_bytes(out) != wav_bytes(plain)  # the recording went into some clips


def test_coloured_noise_has_the_asked_spectral_slope():
    rng = np.random.default_rng(0)
    low_over_high = []
    for exponent in (0.0, 1.0, 2.0):
        noise = effects.coloured_noise(rng, 16000, exponent)
        assert abs(np.sqrt(np.mean(noise ** 2)) - 1) < 1e-3
        power = np.abs(np.fft.rfft(noise)) ** 2
        low_over_high.append(power[20:200].mean() / power[2000:8000].mean())  # 20-200 Hz vs 2-8 kHz
    white, pink, brown = low_over_high  # expected about 1, 55 (1/f) and 4000 (1/f^2)
    assert 0.5 < white < 2 and 20 < pink < 150 and brown > 1000


def test_trim_silence_keeps_only_the_sound():
    wave = np.zeros(1000, np.float32)
    wave[300:500] = 0.5
    assert len(effects.trim_silence(wave)) == 200
    assert len(effects.trim_silence(np.zeros(100, np.float32))) == 0


def test_breath_follows_the_voice_and_events_are_one_short_burst():
    rng = np.random.default_rng(1)
    speech = np.zeros(16000, np.float32)
    speech[4000:8000] = 0.3 * np.sin(2 * np.pi * 200 * np.arange(4000) / 16000)
    breathy = effects.add_breath(rng, speech, 16000)
    added = breathy - speech
    assert effects.rms(added[4200:7800]) > 0.01 and np.abs(added[:3800]).max() < 1e-3  # only where it speaks
    high = np.abs(np.fft.rfft(added))[2000:].sum() / np.abs(np.fft.rfft(added)).sum()
    assert high > 0.8  # above ~2 kHz: hiss, not a second voice
    event = effects.noise_event(rng, 16000, 16000)
    active = np.nonzero(event)[0]
    assert 0 < active[-1] - active[0] < effects.EVENT_MS[1] / 1000 * 16000
