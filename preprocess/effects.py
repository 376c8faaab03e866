"""Audio effects that make a clean synthetic word sound recorded: trimming, microphone EQ, room
reverb, breath, non-speech bursts, coloured and recorded noise; and the 16 kHz WAV they are written as.
Every function takes its random generator: the same seed gives the same clip."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf
import torch
import torchaudio.transforms as T

from preprocess.atomic import atomic_writer
from preprocess.render import AUDIO_EXTENSIONS, AudioError, RenderSettings, load_audio
from preprocess.voices import SynthError

SAMPLE_RATE = 16000
POSITION = (0.0, 1.0)        # where the word starts: fraction of the clip's free time before it
TRIM_DB = 45.0               # trim the engine's leading/trailing silence below peak - TRIM_DB
PEAK_DBFS = (-25.0, -1.0)    # level of the word's peak (real recordings: about -18 to -1 dBFS)
NOISE_PROBABILITY = 0.9
SNR_DB = (3.0, 40.0)         # speech RMS over noise RMS
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f^exponent
RECORDED_NOISE_SHARE = 0.5   # with --noise-dir: recordings for half the noisy clips, colours for the rest
EQ_PROBABILITY = 0.8
HIGHPASS_HZ = (40.0, 400.0)  # small microphones lose the bass...
LOWPASS_HZ = (2500.0, 7500.0)  # ...and cheap ones or codecs the treble
PEAK_EQ_DB = (-8.0, 8.0)     # one resonance of a room or a mic
PEAK_EQ_HZ = (250.0, 5000.0)
REVERB_PROBABILITY = 0.4
RT60_S = (0.08, 0.5)         # small rooms: decay time to -60 dB
REVERB_WET = (0.05, 0.5)     # reverberant over direct energy
BREATH_PROBABILITY = 0.5     # aspiration noise riding on the voice (eSpeak's vowels are too clean)
BREATH_DB = (-30.0, -12.0)   # its RMS re. the speech RMS
BREATH_HIGHPASS_HZ = 1500.0
EVENT_PROBABILITY = 0.3      # one non-speech burst (breath, lip smack, click, bump) somewhere
EVENT_DB = (-20.0, 0.0)      # its RMS re. the speech RMS
EVENT_MS = (15.0, 250.0)
EVENT_BAND_HZ = (200.0, 7000.0)


def trim_silence(wave: np.ndarray, below_peak_db: float = TRIM_DB) -> np.ndarray:
    """Cut the engine's leading and trailing silence (samples below peak - below_peak_db)."""
    level = np.abs(wave)
    loud = np.nonzero(level > level.max() * 10 ** (-below_peak_db / 20))[0] if len(wave) else []
    return wave[loud[0]:loud[-1] + 1] if len(loud) else wave[:0]


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]  # no infinite DC gain
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return (noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)).astype(np.float32)


def _peaking_sos(freq: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """RBJ audio-EQ-cookbook peaking filter as one second-order section."""
    a, w0 = 10 ** (gain_db / 40), 2 * np.pi * freq / sr
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a]
    den = [1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a]
    return np.array([b + den]) / den[0]


def random_eq(rng: np.random.Generator, wave: np.ndarray, sr: int) -> np.ndarray:
    """A microphone: high-pass, low-pass and one resonance, all mild and random."""
    sos = np.vstack([
        scipy.signal.butter(2, rng.uniform(*HIGHPASS_HZ), "highpass", fs=sr, output="sos"),
        scipy.signal.butter(2, min(rng.uniform(*LOWPASS_HZ), 0.45 * sr), "lowpass", fs=sr, output="sos"),
        _peaking_sos(rng.uniform(*PEAK_EQ_HZ), rng.uniform(*PEAK_EQ_DB), rng.uniform(0.7, 2.0), sr)])
    return scipy.signal.sosfilt(sos, wave).astype(np.float32)


def random_reverb(rng: np.random.Generator, wave: np.ndarray, sr: int) -> np.ndarray:
    """A small room: direct sound plus exponentially decaying noise (the tail is kept)."""
    rt60 = rng.uniform(*RT60_S)
    t = np.arange(1, int(rt60 * sr)) / sr
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail *= np.sqrt(rng.uniform(*REVERB_WET) / np.sum(tail ** 2))
    return scipy.signal.fftconvolve(wave, np.concatenate([[1.0], tail])).astype(np.float32)


def noise_segment(rng: np.random.Generator, n: int, noises: list[np.ndarray]) -> np.ndarray:
    """n samples of background, unit RMS: a random stretch of a --noise-dir recording (with
    probability RECORDED_NOISE_SHARE when there are any), else generated colour noise."""
    if noises and rng.random() < RECORDED_NOISE_SHARE:
        source = noises[int(rng.integers(len(noises)))]
        if len(source) < n:
            source = np.tile(source, n // len(source) + 1)
        start = int(rng.integers(len(source) - n + 1))
        segment = source[start:start + n].astype(np.float32)
        return segment / (np.sqrt(np.mean(segment ** 2)) + 1e-12)
    colour = list(NOISE_COLOURS)[int(rng.integers(len(NOISE_COLOURS)))]
    return coloured_noise(rng, n, NOISE_COLOURS[colour])


def add_breath(rng: np.random.Generator, speech: np.ndarray, sr: int) -> np.ndarray:
    """Add high-passed noise that follows the speech envelope (10 ms RMS): a breathy voice."""
    envelope = np.sqrt(np.convolve(speech.astype(np.float64) ** 2, np.ones(sr // 100) / (sr // 100), "same"))
    hiss = scipy.signal.sosfilt(scipy.signal.butter(2, BREATH_HIGHPASS_HZ, "highpass", fs=sr, output="sos"),
                                rng.standard_normal(len(speech))) * envelope
    scale = rms(speech) / (rms(hiss) + 1e-12) * 10 ** (rng.uniform(*BREATH_DB) / 20)
    return (speech + hiss * scale).astype(np.float32)


def noise_event(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """n samples of silence with one band-limited noise burst (unit RMS over the burst) somewhere."""
    length = max(8, int(rng.uniform(*EVENT_MS) / 1000 * sr))
    low = rng.uniform(EVENT_BAND_HZ[0], EVENT_BAND_HZ[1] / 2)
    high = min(rng.uniform(2 * low, EVENT_BAND_HZ[1]), 0.45 * sr)
    burst = scipy.signal.sosfilt(scipy.signal.butter(2, [low, high], "bandpass", fs=sr, output="sos"),
                                 rng.standard_normal(length))
    burst *= np.hanning(length) ** rng.uniform(0.5, 3.0)  # soft breath to sharp click
    burst /= rms(burst) + 1e-12
    event = np.zeros(n, np.float32)
    start = int(rng.integers(max(1, n - length + 1)))
    event[start:start + length] = burst[:n - start]
    return event


def rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))


_RESAMPLE_SETTINGS = RenderSettings(sample_rate=SAMPLE_RATE)  # load_audio only reads the rate


@functools.lru_cache(maxsize=4)
def _resampler(rate: int) -> T.Resample:
    return T.Resample(rate, SAMPLE_RATE)


def resample(wave: np.ndarray, rate: int) -> np.ndarray:
    """To SAMPLE_RATE with torchaudio's sinc resampler, as render.prepare_waveform does, but with the
    filter kernel made once per rate (building it is 95% of the time for eSpeak's 22050 Hz)."""
    if rate == SAMPLE_RATE:
        return wave.astype(np.float32)
    with torch.inference_mode():
        return _resampler(rate)(torch.from_numpy(np.ascontiguousarray(wave, np.float32))).numpy()


def write_wav(path: Path, wave: np.ndarray) -> None:
    """16-bit PCM WAV, atomically (temp file beside it, then rename): never a half-written clip."""
    with atomic_writer(path) as handle:
        sf.write(handle, wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def load_noises(folder: Path) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Every decodable audio file in `folder` at SAMPLE_RATE: (waves, names, problems)."""
    if not folder.is_dir():
        raise SynthError(f"--noise-dir {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    waves, names, problems = [], [], []
    for path in files:
        try:
            wave = load_audio(path, _RESAMPLE_SETTINGS)
        except AudioError as err:
            problems.append(str(err))
            continue
        if np.sqrt(np.mean(wave.astype(np.float64) ** 2)) < 1e-5:
            problems.append(f"{path}: silent, not usable as noise")
            continue
        waves.append(wave)
        names.append(path.name)
    if not waves:
        reasons = "; ".join(problems) or "none found"
        raise SynthError(f"--noise-dir {folder}: no usable audio files ({reasons})")
    return waves, names, problems
