"""python -m preprocess.synth: an offline spoken-word data set made with eSpeak NG.

    OUT/<word>/<speaker>_nohash_<take>.wav   16 kHz mono 16-bit PCM, exactly --duration seconds
    OUT/synth.json                           the arguments, engine and speakers that made it

A "speaker" is one eSpeak voice setting: accent (language), voice variant (male/female/croak/
whisper/...), base pitch, pitch range and rate. Its name is the group id before `_nohash_`, so the
folder source's speaker-hash split keeps every speaker on one side, and every speaker says every word
TAKES_PER_SPEAKER times. Each take then varies on its own: a little pitch/rate/range jitter, the
intonation of a statement/exclamation/question, breathiness, where the word sits in the clip, a
microphone-like EQ, a small room's reverb, the level, a non-speech burst (breath, click), and
background noise at a random SNR (generated white/pink/brown noise, and the --noise-dir recordings).

All randomness of a clip comes from a generator seeded by (--seed, word, clip index), and the engine's
output depends only on its arguments, so the same arguments give byte-identical files whatever the
worker count. Exit status: 0 when every clip was written, 1 when some failed, 2 when the run could
not start (no eSpeak NG, bad options).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing
import re
import sys
import time
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf
import torch
import torchaudio.transforms as T
from tqdm import tqdm

from preprocess import cli
from preprocess.cli import SpecVisionError
from preprocess.atomic import atomic_write_text, atomic_writer
from preprocess.espeak import EngineError, Voice, list_variants, load_engine
from preprocess.render import AUDIO_EXTENSIONS, AudioError, RenderSettings, load_audio
from preprocess.wordlist import unknown_words

SAMPLE_RATE = 16000
DEFAULT_WORDS = ["yes", "no"]
# Accents: the English voices in espeak-ng-data/lang/gmw (en-Shaw, the Shavian alphabet, is a script).
LANGUAGES = ("en", "en-US", "en-029", "en-GB-scotland", "en-GB-x-gbclan", "en-GB-x-gbcwmd",
             "en-GB-x-rp", "en-US-nyc")
# Voice variants (espeak-ng-data/voices/!v), None = the language's own voice. The robot voices
# (robosoft*, UniRobot, anikaRobot, Demonic) are left out: nobody talks like them.
VARIANTS = (None, "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
            "croak", "whisper", "whisperf", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
            "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene",
            "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike",
            "Mr serious", "Nguyen", "Reed", "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm",
            "Tweaky", "adam", "anika", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris",
            "caleb", "david", "ed", "edward", "edward2", "fast", "grandma", "grandpa", "gustave", "ian",
            "iven", "iven2", "iven3", "iven4", "john", "kaukovalta", "linda", "marcelo", "max", "michel",
            "miguel", "mike2", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro",
            "shelby", "steph", "steph2", "steph3", "travis", "victor", "zac")

TAKES_PER_SPEAKER = 2        # clips of each word per speaker
PITCH = (10, 90)             # eSpeak pitch 0-99 (the variant maps it to Hz)
PITCH_RANGE = (5, 95)        # eSpeak intonation range 0-99
RATE = (110, 250)            # words per minute (eSpeak default 175)
TAKE_PITCH_JITTER = 5        # +- per take, eSpeak units
TAKE_RANGE_JITTER = 10
TAKE_RATE_JITTER = 0.08      # +- fraction per take
ENDINGS = ("", ".", "!", "?", ",")  # punctuation changes eSpeak's intonation contour
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
CHUNK = 16                   # clips per worker message
ASPECTS = ("voice", "text", "eq", "reverb", "place", "gain", "noise", "breath", "event")  # a generator each


class SynthError(SpecVisionError):
    """The run cannot start (bad options or noise folder); the message says why."""


# ---------------------------------------------------------------- speakers and clip plans

@dataclasses.dataclass(frozen=True)
class Speaker:
    voice: Voice

    @property
    def group(self) -> str:
        """File-name-safe id, e.g. 'enus-f3-p42-r61-s180': every setting that makes the voice."""
        v = self.voice
        language = re.sub(r"[^a-z0-9]", "", v.language.lower())
        variant = re.sub(r"[^a-z0-9]", "", (v.variant or "default").lower())
        return f"{language}-{variant}-p{v.pitch:02d}-r{v.pitch_range:02d}-s{v.rate:03d}"


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(keys)))


def _word_key(word: str) -> int:
    return int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "big")


def make_speakers(seed: int, count: int, languages=LANGUAGES, variants=VARIANTS) -> list[Speaker]:
    """`count` distinct speakers; the first k are the same for any count >= k.

    Variants and accents are dealt in a seeded order, cycling, so every variant is used once there
    are as many speakers as variants, and accents rotate across variants.
    """
    rng = _rng(seed, 0x5BEA)
    variant_order = [variants[i] for i in rng.permutation(len(variants))]
    language_order = [languages[i] for i in rng.permutation(len(languages))]
    speakers, groups = [], set()
    for index in range(count):
        variant = variant_order[index % len(variants)]
        language = language_order[(index + index // len(variants)) % len(languages)]
        for _ in range(1000):  # redraw the prosody in the (rare) case of an existing group id
            speaker = Speaker(Voice(language, variant, pitch=int(rng.integers(*PITCH, endpoint=True)),
                                    pitch_range=int(rng.integers(*PITCH_RANGE, endpoint=True)),
                                    rate=int(rng.integers(*RATE, endpoint=True))))
            if speaker.group not in groups:
                break
        else:
            raise SynthError(f"cannot make {count} distinct speakers from {len(variants)} variants and "
                             f"{len(languages)} accents: use more of them or fewer clips")
        groups.add(speaker.group)
        speakers.append(speaker)
    return speakers


@dataclasses.dataclass(frozen=True)
class ClipJob:
    word: str
    index: int        # 0 .. per_word-1
    speaker: Speaker
    seed: int

    @property
    def take(self) -> int:
        return self.index % TAKES_PER_SPEAKER

    @property
    def relative_path(self) -> str:
        return f"{self.word}/{self.speaker.group}_nohash_{self.take}.wav"


@dataclasses.dataclass(frozen=True)
class UnknownJob(ClipJob):
    """A clip of a non-target word: index counts that word's clips, so every file name is new."""

    @property
    def relative_path(self) -> str:
        return f"{self.word}/{self.speaker.group}_nohash_u{self.index}.wav"


def plan_unknown_jobs(words: list[str], count: int, speakers: list[Speaker], seed: int) -> list[UnknownJob]:
    """`count` clips of other words, the words taken in turn and the speakers in turn (the targets'
    speakers: the same voices say target and unknown words, so voice is no clue to the class)."""
    return [UnknownJob(words[i % len(words)], i // len(words), speakers[i % len(speakers)], seed)
            for i in range(count)]


def plan_jobs(words: list[str], per_word: int, seed: int, languages=LANGUAGES, variants=VARIANTS):
    speakers = make_speakers(seed, math.ceil(per_word / TAKES_PER_SPEAKER), languages, variants)
    jobs = [ClipJob(word, index, speakers[index // TAKES_PER_SPEAKER], seed)
            for word in words for index in range(per_word)]
    return jobs, speakers


# ---------------------------------------------------------------- audio effects (numpy/scipy)

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
    scale = _rms(speech) / (_rms(hiss) + 1e-12) * 10 ** (rng.uniform(*BREATH_DB) / 20)
    return (speech + hiss * scale).astype(np.float32)


def noise_event(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """n samples of silence with one band-limited noise burst (unit RMS over the burst) somewhere."""
    length = max(8, int(rng.uniform(*EVENT_MS) / 1000 * sr))
    low = rng.uniform(EVENT_BAND_HZ[0], EVENT_BAND_HZ[1] / 2)
    high = min(rng.uniform(2 * low, EVENT_BAND_HZ[1]), 0.45 * sr)
    burst = scipy.signal.sosfilt(scipy.signal.butter(2, [low, high], "bandpass", fs=sr, output="sos"),
                                 rng.standard_normal(length))
    burst *= np.hanning(length) ** rng.uniform(0.5, 3.0)  # soft breath to sharp click
    burst /= _rms(burst) + 1e-12
    event = np.zeros(n, np.float32)
    start = int(rng.integers(max(1, n - length + 1)))
    event[start:start + length] = burst[:n - start]
    return event


def _rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))


def take_voice(base: Voice, rng: np.random.Generator) -> Voice:
    """The speaker's voice with this take's small pitch, range and rate jitter."""
    def jitter(value: int, limit: int) -> int:
        return int(np.clip(value + rng.integers(-limit, limit + 1), 0, 99))
    pitch = jitter(base.pitch, TAKE_PITCH_JITTER)
    pitch_range = jitter(base.pitch_range, TAKE_RANGE_JITTER)
    rate = int(round(base.rate * rng.uniform(1 - TAKE_RATE_JITTER, 1 + TAKE_RATE_JITTER)))
    return dataclasses.replace(base, pitch=pitch, pitch_range=pitch_range, rate=rate)


def synthesize_clip(engine, job: ClipJob, num_samples: int, noises: list[np.ndarray]) -> np.ndarray:
    """One clip: float32 mono at SAMPLE_RATE, exactly num_samples long, in [-1, 1]."""
    seeds = np.random.SeedSequence([job.seed, _word_key(job.word), job.index]).spawn(len(ASPECTS))
    rngs = {aspect: np.random.default_rng(s) for aspect, s in zip(ASPECTS, seeds)}
    voice = take_voice(job.speaker.voice, rngs["voice"])
    text = job.word + ENDINGS[int(rngs["text"].integers(len(ENDINGS)))]

    raw = engine.synth(text, voice)
    speech = trim_silence(resample(raw, engine.sample_rate))
    if len(speech) == 0:
        raise EngineError(f"eSpeak NG produced silence for {text!r} with voice {voice.name}")
    if rngs["breath"].random() < BREATH_PROBABILITY:
        speech = add_breath(rngs["breath"], speech, SAMPLE_RATE)
    if rngs["eq"].random() < EQ_PROBABILITY:
        speech = random_eq(rngs["eq"], speech, SAMPLE_RATE)
    if rngs["reverb"].random() < REVERB_PROBABILITY:
        speech = random_reverb(rngs["reverb"], speech, SAMPLE_RATE)
    speech = speech[:num_samples]  # a very slow word keeps its start

    clip = np.zeros(num_samples, np.float32)
    offset = int(round(rngs["place"].uniform(*POSITION) * (num_samples - len(speech))))
    clip[offset:offset + len(speech)] = speech
    peak_db = rngs["gain"].uniform(*PEAK_DBFS)
    gain = 10 ** (peak_db / 20) / (np.abs(speech).max() + 1e-12)
    clip *= gain
    speech_rms = _rms(speech) * gain
    if rngs["event"].random() < EVENT_PROBABILITY:
        clip += noise_event(rngs["event"], num_samples, SAMPLE_RATE) * speech_rms * 10 ** (
            rngs["event"].uniform(*EVENT_DB) / 20)
    if rngs["noise"].random() < NOISE_PROBABILITY:
        snr_db = rngs["noise"].uniform(*SNR_DB)
        clip += noise_segment(rngs["noise"], num_samples, noises) * speech_rms * 10 ** (-snr_db / 20)
    return np.clip(clip, -1.0, 1.0)


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


# ---------------------------------------------------------------- workers

_WORKER: dict = {}


def _init_worker(engine_options: dict, noises: list[np.ndarray], num_samples: int, out: str) -> None:
    torch.set_num_threads(1)  # one process per core already
    _WORKER.update(engine=load_engine(**engine_options), noises=noises, num_samples=num_samples,
                   out=Path(out))


def _run_jobs(jobs: list[ClipJob]) -> list[tuple[str, str | None]]:
    results = []
    for job in jobs:
        try:
            wave = synthesize_clip(_WORKER["engine"], job, _WORKER["num_samples"], _WORKER["noises"])
            write_wav(_WORKER["out"] / job.relative_path, wave)
            results.append((job.relative_path, None))
        except (EngineError, OSError, ValueError, sf.LibsndfileError) as err:
            results.append((job.relative_path, str(err)))
    return results


def _close_worker() -> None:
    engine = _WORKER.pop("engine", None)
    if engine is not None:
        engine.close()


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.synth",
        description="Synthesize a spoken-word data set with eSpeak NG: "
                    "OUT/<word>/<speaker>_nohash_<take>.wav (16 kHz mono 16-bit), ready for "
                    "`python -m preprocess --source folder --root OUT`.",
        epilog="Each speaker (accent, voice variant, pitch, range, rate) says every word "
               f"{TAKES_PER_SPEAKER} times; each take gets its own intonation, breathiness, position, EQ, "
               "reverb, level, click/breath burst and background noise. Same arguments, same bytes. "
               "Exit status: 0 all clips written, 1 some failed, 2 could not start.")
    parser.add_argument("--words", nargs="+", metavar="WORD",
                        help="words to say, one folder each (default: %s; with --layout speechcommands "
                             "all 35 of Speech Commands v0.02)" % " ".join(DEFAULT_WORDS))
    parser.add_argument("--layout", choices=("folder", "speechcommands"), default="folder",
                        help="folder: OUT/<word>/<voice setting>_nohash_<take>.wav; speechcommands: the "
                             "exact layout of an extracted Speech Commands download (8-hex speaker ids, "
                             "_background_noise_/, validation_list.txt and testing_list.txt by the "
                             "dataset's SHA-1 rule) for `python -m preprocess --source speechcommands`; "
                             "it keeps clips already in OUT and makes only the missing ones "
                             "(default: %(default)s)")
    parser.add_argument("--per-word", type=int, required=True, metavar="N", help="clips per word")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0,
                        help="picks speakers and variations (default: %(default)s)")
    parser.add_argument("--unknown", type=int, default=0, metavar="N",
                        help="also write N clips of other common English words (a built-in list of a few "
                             "hundred, without the --words and their near-homophones), one folder per "
                             "word, spread evenly: the 'unknown' class of `python -m preprocess --source "
                             "folder --words ... --unknown-pct P` (default: %(default)s)")
    parser.add_argument("--unknown-exclude", nargs="+", default=[], metavar="WORD",
                        help="words to leave out of the unknown list too (e.g. ones you test on)")
    parser.add_argument("--background", type=float, default=0.0, metavar="SECONDS",
                        help="also write OUT/_background_noise_/ with generated white, pink and brown noise "
                             "recordings this long (seeded): the background the folder source crops for a "
                             "'silence' class (--silence-pct) (default: %(default)s, none)")
    parser.add_argument("--noise-dir", type=Path,
                        help="background recordings (e.g. Speech Commands' _background_noise_) for half "
                             "of the noisy clips; the others, and all without this option, get generated "
                             "white/pink/brown noise")
    parser.add_argument("--duration", type=float, default=1.0,
                        help="clip length in seconds (default: %(default)s)")
    cli.add_workers_flag(parser)
    parser.add_argument("--languages", nargs="+", default=list(LANGUAGES), metavar="LANG",
                        help="eSpeak English accents to use (default: all %(default)s)")
    parser.add_argument("--variants", nargs="+", metavar="VARIANT",
                        help="eSpeak voice variants to use; 'default' is the accent's own voice "
                             "(default: the %d human-sounding ones bundled)" % len(VARIANTS))
    parser.add_argument("--engine", choices=("library", "binary"), default="library",
                        help="try first: the espeakng-loader library via ctypes, or the espeak-ng "
                             "program on PATH (the other is the fallback; default: %(default)s)")
    cli.add_quiet_flag(parser)
    return parser


def _check_args(args) -> None:
    if args.per_word < 1 or args.unknown < 0:
        raise SynthError("--per-word must be at least 1 and --unknown not negative")
    if args.duration <= 0 or args.workers < 1 or args.seed < 0:
        raise SynthError("--duration must be positive, --workers at least 1, --seed not negative")
    bad = [w for w in args.words if not re.fullmatch(r"[^\W_][\w' -]*", w) or w.startswith((".", "_"))]
    if bad or len(set(args.words)) != len(args.words):
        raise SynthError(f"--words must be distinct words usable as folder names, got {args.words}")
    unknown = [lang for lang in args.languages if lang not in LANGUAGES]
    if unknown:
        raise SynthError(f"--languages: unknown {unknown}; choose from {list(LANGUAGES)}")


def _pick_variants(requested: list[str] | None, available: list[str]) -> tuple[tuple, list[str]]:
    """The variants to use (None = default voice) and the requested ones the engine lacks."""
    wanted = VARIANTS if requested is None else tuple(None if v == "default" else v for v in requested)
    have = set(available)
    missing = [v for v in wanted if v is not None and v not in have]
    if requested is not None and missing:
        raise SynthError(f"--variants: eSpeak data has no {missing} (it has: {sorted(have)})")
    return tuple(v for v in wanted if v is None or v in have), missing


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    standin = None
    if args.layout == "speechcommands":
        from preprocess import standin
    if args.words is None:
        args.words = list(standin.WORDS) if standin else DEFAULT_WORDS
    try:
        _check_args(args)
        engine_options = {"prefer": args.engine}
        with load_engine(**engine_options) as probe:  # closed before the workers fork
            engine_text = f"{probe.kind} ({probe.version})"
            available = list_variants(probe.data_path)
        variants, skipped = _pick_variants(args.variants, available)
        noises, noise_names, noise_problems = load_noises(args.noise_dir) if args.noise_dir else ([], [], [])
        jobs, speakers = plan_jobs(args.words, args.per_word, args.seed, tuple(args.languages), variants)
        others = unknown_words(args.words, args.unknown_exclude) if args.unknown else []
        jobs += plan_unknown_jobs(others, args.unknown, speakers, args.seed) if others else []
        todo = jobs
        if standin:  # dataset names; clips already there are kept (resume, or grow with --per-word)
            jobs = standin.rename_jobs(jobs, speakers, args.seed)
            todo = standin.missing_jobs(jobs, args.out, args.seed, args.duration)
    except (SynthError, EngineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for problem in noise_problems:
        print(f"warning: skipped noise file {problem}", file=sys.stderr)
    if skipped:
        print(f"warning: this eSpeak data lacks {len(skipped)} variants, not used: {skipped}",
              file=sys.stderr)

    num_samples = int(round(SAMPLE_RATE * args.duration))
    args.out.mkdir(parents=True, exist_ok=True)
    chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
    init_args = (engine_options, noises, num_samples, str(args.out))
    failures = []
    with tqdm(total=len(todo), unit="clip", desc="synth", disable=args.quiet) as bar:
        if args.workers == 1:
            _init_worker(*init_args)
            results = map(_run_jobs, chunks)
        else:  # fork: the workers share the noise arrays; each loads its own eSpeak library
            pool = multiprocessing.get_context("fork").Pool(args.workers, _init_worker, init_args)
            results = pool.imap(_run_jobs, chunks)
        try:
            for chunk_results in results:
                failures += [(path, error) for path, error in chunk_results if error]
                bar.update(len(chunk_results))
        finally:
            if args.workers == 1:
                _close_worker()
            else:
                pool.terminate()
                pool.join()

    seconds = time.perf_counter() - started
    noise_text = "generated " + "/".join(NOISE_COLOURS)
    if noise_names:
        noise_text = f"{', '.join(noise_names)} ({RECORDED_NOISE_SHARE:.0%}) + {noise_text}"
    planned = {job.relative_path for job in jobs}
    stale = [p for word in {j.word for j in jobs} for p in sorted((args.out / word).glob("*.wav"))
             if f"{word}/{p.name}" not in planned]
    if stale:
        print(f"warning: {len(stale)} other .wav files in {args.out} (e.g. {stale[0]}) were not made by "
              "this run and will be used downstream too; use a fresh --out", file=sys.stderr)
    if args.background > 0:
        write_background(args.out / "_background_noise_", args.background, args.seed)
    _write_info(args, engine_text, speakers, noise_names, len(jobs) - len(failures), others)
    if standin:
        print(standin.finish(args.out, jobs, len(jobs) - len(todo), args.seed, SAMPLE_RATE))
    unknown_text = f" + {args.unknown} of {len(others)} other words" if args.unknown else ""
    print(f"synth: {len(jobs) - len(failures)}/{len(jobs)} clips ({len(args.words)} words x {args.per_word}"
          f"{unknown_text}) "
          f"from {len(speakers)} speakers ({len({s.voice.variant for s in speakers})} variants, "
          f"{len({s.voice.language for s in speakers})} accents) in {seconds:.1f} s "
          f"({len(todo) / seconds * 60:.0f} clips/min) with {engine_text}; noise: "
          f"{noise_text} -> {args.out}")
    for path, error in failures[:20]:
        print(f"  failed {path}: {error}", file=sys.stderr)
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
    return 1 if failures else 0


def write_background(folder: Path, seconds: float, seed: int) -> None:
    """Generated noise recordings, one per colour, at a modest level (RMS -30 dBFS), with slow level
    changes so that crops of them differ; named like Speech Commands' _background_noise_ files."""
    n = int(round(seconds * SAMPLE_RATE))
    for colour, exponent in NOISE_COLOURS.items():
        rng = _rng(seed, 0xBAC6, _word_key(colour))
        sway = 10 ** (np.interp(np.arange(n), np.linspace(0, n, 8), rng.uniform(-10, 10, 8)) / 20)
        wave = coloured_noise(rng, n, exponent) * 10 ** (-30 / 20) * sway
        write_wav(folder / f"{colour}_noise.wav", np.clip(wave, -1, 1).astype(np.float32))


def _write_info(args, engine_text: str, speakers: list[Speaker], noise_names: list[str],
                written: int, others: list[str]) -> None:
    info = {"words": args.words, "per_word": args.per_word, "seed": args.seed, "duration": args.duration,
            "unknown": args.unknown, "unknown_words": others[:args.unknown],
            "sample_rate": SAMPLE_RATE, "engine": engine_text, "written": written,
            "noise": noise_names + list(NOISE_COLOURS),
            "speakers": [dict(group=s.group, **dataclasses.asdict(s.voice)) for s in speakers]}
    atomic_write_text(args.out / "synth.json", json.dumps(info, indent=1))


if __name__ == "__main__":
    cli.run(main)
