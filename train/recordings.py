"""Long test recordings for the open-set benchmark, made of one fold's test material only.

    long_recording(material, words, minutes, seed)   # words laid once each, in order: scan recall
    negative_blocks(material, clips, hours, seed)     # hours of never-seen words, non-speech, noise,
                                                      # pauses, made block by block: false accepts/hour

Why hours: a false-accept rate of 0.5 an hour needs hours of audio to be seen at all (10 minutes
resolve only 6 an hour). The negative recording is generated and scanned in blocks of a few
seconds, so its length costs time, never memory.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import soundfile as sf

from preprocess.render import RenderSettings, prepare_waveform

SAMPLE_RATE = 16000
WORD_GAP_S = (1.0, 4.0)        # recall recording: pause between words
NEGATIVE_GAP_S = (1.0, 8.0)    # negative recording: background between clips (mean 4.5 s)
WORD_GAIN_DB = (-12.0, 0.0)    # level of a laid clip re. its recording
NOISE_GAIN_DB = (-40.0, -5.0)  # level of a background stretch re. its recording
PAUSE_SHARE = 0.25             # share of background stretches that are near-silence instead of noise
FADE_S = 0.05                  # fades where background pieces meet: no clicks


def to_16k(wave: np.ndarray, rate: int) -> np.ndarray:
    return prepare_waveform(wave, rate, RenderSettings(sample_rate=SAMPLE_RATE), fit=False)


def _fade(piece: np.ndarray) -> np.ndarray:
    fade = min(len(piece) // 2, int(SAMPLE_RATE * FADE_S))
    if fade:
        ramp = np.linspace(0, 1, fade, dtype=np.float32)
        piece[:fade] *= ramp
        piece[-fade:] *= ramp[::-1]
    return piece


def background(material, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Test-region noise stretches (2-10 s) at varied gains and near-silent pauses, faded."""
    test_regions = [r for r in material.regions if r.split == "test"]
    pieces, total = [], 0
    while total < seconds * SAMPLE_RATE:
        length = rng.uniform(2.0, 10.0)
        if rng.random() < PAUSE_SHARE or not test_regions:
            piece = rng.standard_normal(int(length * SAMPLE_RATE)).astype(np.float32) * np.float32(1e-4)
        else:
            region = test_regions[int(rng.integers(len(test_regions)))]
            frames = min(region.end - region.start, int(length * region.rate))
            start = region.start + int(rng.integers(0, region.end - region.start - frames + 1))
            data, rate = sf.read(str(region.path), start=start, frames=frames, dtype="float32", always_2d=True)
            piece = to_16k(data.mean(axis=1), rate) * np.float32(10 ** (rng.uniform(*NOISE_GAIN_DB) / 20))
        pieces.append(_fade(piece))
        total += len(piece)
    return np.concatenate(pieces)


def long_recording(material, words: list[tuple[str, np.ndarray]], minutes: float, seed: int
                   ) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Every word of `words` laid once, in order, with 1-4 s pauses, into test background (and more
    background to reach `minutes`); -> (waveform at 16 kHz, [(word, start_s, end_s)] per laid clip)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x10C6]))
    laid, position = [], rng.uniform(*WORD_GAP_S)
    for word, wave in words:
        laid.append((word, position, position + len(wave) / SAMPLE_RATE))
        position = laid[-1][2] + rng.uniform(*WORD_GAP_S)
    total = max(minutes * 60, position)
    bed = background(material, total, rng)[:int(total * SAMPLE_RATE)]
    for (word, start, _), (_, wave) in zip(laid, words):
        first = int(round(start * SAMPLE_RATE))
        piece = wave[:len(bed) - first] * np.float32(10 ** (rng.uniform(*WORD_GAIN_DB) / 20))
        bed[first:first + len(piece)] += piece
    return np.clip(bed, -1.0, 1.0), laid


def negative_blocks(material, clips: list[tuple[str, np.ndarray]], hours: float, seed: int,
                    laid: list | None = None) -> Iterator[np.ndarray]:
    """Blocks of an `hours`-long recording with no target word in it: the clips (a fold's never-seen
    words and generated non-speech) in seeded random order, all of them once before any repeats,
    each at a random gain after 1-8 s of test background. `laid`, when given, receives
    (word, start_s, end_s) of each clip laid."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xFA1]))
    total, done, order = int(round(hours * 3600 * SAMPLE_RATE)), 0, []
    if not clips:
        raise ValueError("negative recording: no clips to lay")
    while done < total:
        if not order:
            order = list(rng.permutation(len(clips)))
        word, wave = clips[order.pop()]
        first = int(rng.uniform(*NEGATIVE_GAP_S) * SAMPLE_RATE)
        bed = background(material, (first + len(wave)) / SAMPLE_RATE, rng)[:first + len(wave)]
        bed[first:] += wave * np.float32(10 ** (rng.uniform(*WORD_GAIN_DB) / 20))
        block = _fade(np.clip(bed, -1.0, 1.0))[:total - done]  # a block ends in silence, as it starts
        if laid is not None and first < len(block):
            laid.append((word, (done + first) / SAMPLE_RATE, (done + len(block)) / SAMPLE_RATE))
        done += len(block)
        yield block
