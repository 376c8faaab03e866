"""Generated non-speech: 1 s signals that are not words, for the 'silence' class (preprocess/openworld.py).

Why: a model whose 'silence' class holds only background recordings and digital silence has never
heard a tone, a chord, a chirp or a click train, and a softmax must put them somewhere: fold 0's
real-trained open model called 136 of 200 such clips "yes" or "no" (docs/benchmarks.md, "sounds the
silence class never saw"). Real audio is full of them (music, alarms, phones, hum, clatter), so a share
of the silence class is made of them.

Each clip is a pure function of (seed, split, index): the same inputs give the same samples, the
splits never share a clip, and a file's name (silence.Crop.name) carries VERSION, the seed, the split
and the index, so changing this generator means raising VERSION (old files are then replaced).
"""
from __future__ import annotations

import numpy as np

VERSION = 1
SAMPLE_RATE = 16000
LEVEL_DB = (-40.0, -6.0)     # RMS level in dBFS, uniform: from barely there to loud
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
STREAM = 0x9051              # keeps these draws apart from the noise crops' (silence.Crop.name)


def _log_uniform(rng: np.random.Generator, low: float, high: float, size=None):
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def tone(rng, t):
    """A steady pitch with a few harmonics (whistle, alarm, instrument note)."""
    f = _log_uniform(rng, 50, 4000)
    return sum(rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * f * k * t + rng.uniform(0, 2 * np.pi))
               for k in range(1, int(rng.integers(1, 4)) + 1))


def chord(rng, t):
    """Two to four notes of a major/minor triad and its octave at once."""
    f = _log_uniform(rng, 100, 1500)
    ratios = rng.choice([1, 1.26, 1.19, 1.5, 1.68, 2, 2.52], int(rng.integers(2, 5)), replace=False)
    return sum(np.sin(2 * np.pi * f * r * t + rng.uniform(0, 2 * np.pi)) for r in ratios)


def melody(rng, t):
    """Two to eight notes in a row, each with a plucked (decaying) envelope."""
    notes = int(rng.integers(2, 9))
    base = _log_uniform(rng, 150, 1200)
    steps = rng.choice([0, 2, 3, 4, 5, 7, 9, 12], notes)
    x = np.zeros_like(t)
    edges = np.linspace(0, len(t), notes + 1).astype(int)
    for step, start, end in zip(steps, edges[:-1], edges[1:]):
        local = t[start:end] - t[start]
        f = base * 2 ** (step / 12)
        x[start:end] = (np.sin(2 * np.pi * f * local) + 0.3 * np.sin(4 * np.pi * f * local)) \
            * np.exp(-local * rng.uniform(2, 12))
    return x


def chirp(rng, t):
    """A sweep between two pitches lasting 0.2-1 s (sirens, swipes, birdsong)."""
    f0, f1 = _log_uniform(rng, 100, 5000, 2)
    length = int(rng.uniform(0.2, 1.0) * len(t))
    local = t[:length]
    phase = 2 * np.pi * (f0 * local + (f1 - f0) * local ** 2 / (2 * local[-1] + 1e-9))
    x = np.zeros_like(t)
    start = int(rng.integers(0, len(t) - length + 1))
    x[start:start + length] = np.sin(phase)
    return x


def clicks(rng, t):
    """A regular train of short clicks, 2-40 a second (ticking, dripping, typing)."""
    x = np.zeros_like(t)
    step = int(SAMPLE_RATE / rng.uniform(2, 40))
    x[int(rng.integers(0, step))::step] = 1.0
    return np.convolve(x, rng.standard_normal(int(rng.integers(1, 40))), "same")


def knocks(rng, t):
    """One to six impacts at random times, each a decaying resonance (knocks, taps, clatter)."""
    x = np.zeros_like(t)
    for _ in range(int(rng.integers(1, 7))):
        start = int(rng.integers(0, len(t) - 800))
        local = t[: len(t) - start]
        ring = np.sin(2 * np.pi * _log_uniform(rng, 200, 5000) * local) + 0.5 * rng.standard_normal(len(local))
        x[start:] += ring * np.exp(-local * rng.uniform(30, 300)) * rng.uniform(0.3, 1)
    return x


def beep(rng, t):
    """A tone switched on and off 1-8 times a second (phones, alarms, reversing trucks)."""
    f = _log_uniform(rng, 300, 4000)
    gate = np.sin(2 * np.pi * rng.uniform(1, 8) * t + rng.uniform(0, 2 * np.pi)) > rng.uniform(-0.5, 0.5)
    return np.sin(2 * np.pi * f * t) * gate


def noise(rng, t):
    """Gaussian noise from white to pink, at any level (fans, rain, hiss louder than the recordings)."""
    spectrum = np.fft.rfft(rng.standard_normal(len(t)))
    return np.fft.irfft(spectrum / (np.arange(len(spectrum)) + 1) ** rng.uniform(0, 1.0), len(t))


def buzz(rng, t):
    """A square or sawtooth wave: mains hum and its harmonics, buzzers, synthesizers."""
    f = float(rng.choice([50.0, 60.0, 100.0, 120.0])) if rng.random() < 0.3 else _log_uniform(rng, 50, 2000)
    phase = f * t + rng.uniform(0, 1)
    return np.sign(np.sin(2 * np.pi * phase)) if rng.random() < 0.5 else 2 * (phase % 1.0) - 1


def warble(rng, t):
    """A tone whose loudness (tremolo) or pitch (vibrato) swings 2-20 times a second."""
    f, rate = _log_uniform(rng, 100, 3000), rng.uniform(2, 20)
    if rng.random() < 0.5:
        return np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * rate * t))
    depth = f * rng.uniform(0.01, 0.2)
    return np.sin(2 * np.pi * f * t + depth / rate * np.sin(2 * np.pi * rate * t))


KINDS = {f.__name__: f for f in (tone, chord, melody, chirp, clicks, knocks, beep, noise, buzz, warble)}


def kind_of(seed: int, split: str, index: int) -> str:
    """The kind of clip (seed, split, index) is (cheap: the first draw of its generator)."""
    return _pick_kind(_rng(seed, split, index))


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, STREAM, SPLIT_CODES[split], index]))


def _pick_kind(rng: np.random.Generator) -> str:
    return list(KINDS)[int(rng.integers(len(KINDS)))]


def clip(seed: int, split: str, index: int) -> tuple[np.ndarray, str]:
    """1 s of float32 mono audio at SAMPLE_RATE and its kind; 10 ms fades, RMS at a level in LEVEL_DB."""
    rng = _rng(seed, split, index)
    kind = _pick_kind(rng)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    x = KINDS[kind](rng, t)
    x = x - x.mean()
    fade = np.linspace(0.0, 1.0, SAMPLE_RATE // 100)
    x[:len(fade)] *= fade
    x[-len(fade):] *= fade[::-1]
    x = x / (np.sqrt(np.mean(x ** 2)) + 1e-12) * 10 ** (rng.uniform(*LEVEL_DB) / 20)
    return np.clip(x, -1.0, 1.0).astype(np.float32), kind
