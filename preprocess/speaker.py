"""A speaker transform: one synthetic voice made into many speakers by moving its pitch and formants.

    shift = draw_shift(rng)                    # a man, a woman or a child, drawn from human ranges
    wave = change_voice(wave, 22050, shift, seed=7)

Praat's "Change gender" (through praat-parselmouth) does it: the formants move by `formant_ratio`
(a shorter vocal tract raises them all by the same factor: women's about 1.15x men's, children's
1.3x) and PSOLA sets the pitch median and range without changing the duration. Praat's PSOLA draws
random numbers, so the transform seeds Praat's generator per clip: same seed, same samples.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from preprocess.cli import SpecVisionError

PACKAGE = "praat-parselmouth (pip install praat-parselmouth)"
PITCH_FLOOR_HZ, PITCH_CEILING_HZ = 60.0, 600.0   # Praat's pitch analysis range (covers children)
# Kinds of speaker: share, formant ratio and pitch median (Hz) ranges, relative to an adult man's
# vocal tract (the voices here are adult men or eSpeak voices of any kind).
KINDS = {"man": (0.40, (0.88, 1.05), (80.0, 160.0)),
         "woman": (0.42, (1.08, 1.24), (150.0, 270.0)),
         "child": (0.18, (1.22, 1.38), (220.0, 380.0))}
PITCH_RANGE_FACTOR = (0.5, 1.6)                   # flatter or livelier intonation than the source
PAD_S = 0.1   # silence around the clip: on a short word alone Praat's pitch analysis can return zeros


class SpeakerError(SpecVisionError, RuntimeError):
    """The speaker transform is not installed or failed on a clip; the message says why."""


@dataclasses.dataclass(frozen=True)
class Shift:
    formant_ratio: float = 1.0
    pitch_hz: float = 0.0          # new pitch median; 0 keeps the source's
    pitch_range: float = 1.0       # scales the pitch excursions around the median

    @property
    def tag(self) -> str:
        """File-name-safe: 'f112-p180-r09' (formants x100, pitch Hz, range x10)."""
        return f"f{round(self.formant_ratio * 100):03d}-p{round(self.pitch_hz):03d}-r{round(self.pitch_range * 10):02d}"


def draw_shift(rng: np.random.Generator) -> Shift:
    """A speaker from KINDS: formants and pitch drawn together so that they stay a plausible pair."""
    names = list(KINDS)
    kind = KINDS[names[int(rng.choice(len(names), p=[KINDS[n][0] for n in names]))]]
    position = rng.random()  # a large tract goes with a low voice, within each kind
    ratio = kind[1][0] + position * (kind[1][1] - kind[1][0])
    low, high = kind[2]
    pitch = np.exp(np.log(low) + np.clip(position + rng.normal(0, 0.25), 0, 1) * (np.log(high) - np.log(low)))
    return Shift(round(float(ratio), 2), float(round(pitch)), round(float(rng.uniform(*PITCH_RANGE_FACTOR)), 1))


def _praat():
    try:
        import parselmouth
        from parselmouth.praat import call, run
    except ImportError as err:
        raise SpeakerError(f"the speaker transform needs {PACKAGE}: {err}") from None
    return parselmouth, call, run


def require() -> None:
    """Raise SpeakerError naming the package if Praat (praat-parselmouth) is missing."""
    _praat()


def change_voice(wave: np.ndarray, sample_rate: int, shift: Shift, seed: int) -> np.ndarray:
    """`wave` (float mono) spoken by the speaker `shift` describes; same length, float32."""
    if shift == Shift():
        return wave.astype(np.float32)
    try:
        return _change(wave, sample_rate, shift, seed)
    except SpeakerError:  # PSOLA found too little pitch to move (a short or rough word): formants only
        return _change(wave, sample_rate, Shift(shift.formant_ratio), seed)


def _change(wave: np.ndarray, sample_rate: int, shift: Shift, seed: int) -> np.ndarray:
    parselmouth, call, run = _praat()
    pad = int(PAD_S * sample_rate)
    sound = parselmouth.Sound(np.pad(wave.astype(np.float64), pad), sampling_frequency=float(sample_rate))
    try:
        run(f"random_initializeWithSeedUnsafelyButPredictably ({int(seed) % 2**31})\n")
        try:
            with warnings.catch_warnings():  # a whispered clip has no pitch: its formants still move
                warnings.simplefilter("ignore", parselmouth.PraatWarning)
                changed = call(sound, "Change gender", PITCH_FLOOR_HZ, PITCH_CEILING_HZ, shift.formant_ratio,
                               shift.pitch_hz, shift.pitch_range, 1.0)
        finally:
            run("random_initializeSafelyAndUnpredictably ()\n")
    except parselmouth.PraatError as err:
        raise SpeakerError(f"Praat could not change the voice to {shift}: {err}") from None
    out = np.asarray(changed.values[0], np.float32)[pad:pad + len(wave)]
    level = np.sqrt(np.mean(np.square(wave, dtype=np.float64)))
    if (changed.sampling_frequency != sample_rate or len(out) != len(wave) or not np.all(np.isfinite(out))
            or np.sqrt(np.mean(np.square(out, dtype=np.float64))) < 0.05 * level):
        raise SpeakerError(f"Praat returned an unusable sound for {shift}")
    return out
