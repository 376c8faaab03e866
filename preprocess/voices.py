"""Synthetic speakers: eSpeak NG voice settings and Piper settings, each maybe moved to another
man, woman or child by the speaker transform, dealt so that many clips come from many voices; and the
plan of which speaker says which clip (file names carry the speaker, so splits keep them apart)."""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import re

import numpy as np

from preprocess.cli import SpecVisionError
from preprocess.espeak import Voice
from preprocess.piper import PiperVoice
from preprocess.speaker import Shift, draw_shift

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
ENDINGS = ("", ".", "!", "?", ",")  # punctuation changes eSpeak's and Piper's intonation contour
ENGINES = ("espeak", "piper")
PIPER_SHARE = 0.5            # of the speakers when both engines are used
PIPER_LENGTH = (0.8, 1.45)   # Piper length_scale: faster..slower than the voice's own pace
PIPER_NOISE = (0.3, 1.0)     # noise_scale: how much each take's voice quality varies
PIPER_NOISE_W = (0.4, 1.2)   # noise_w: how much the phoneme durations vary
TAKE_LENGTH_JITTER = 0.08    # +- fraction per take
# Share of each engine's speakers moved by the speaker transform: Piper has one voice (an adult man),
# so nearly all of its speakers are transformed; eSpeak's variants already span men, women and more.
SHIFT_SHARE = {"espeak": 0.5, "piper": 0.9}


class SynthError(SpecVisionError):
    """The run cannot start (bad options or noise folder); the message says why."""


# ---------------------------------------------------------------- speakers and clip plans

@dataclasses.dataclass(frozen=True)
class Speaker:
    voice: Voice | PiperVoice
    shift: Shift | None = None

    @property
    def engine(self) -> str:
        return "piper" if isinstance(self.voice, PiperVoice) else "espeak"

    @property
    def group(self) -> str:
        """File-name-safe id of every setting that makes the voice, e.g. 'enus-f3-p42-r61-s180' or
        'piper-joe-l110-n067-w080-f112-p180-r09' (engine settings, then the speaker transform's)."""
        v = self.voice
        if isinstance(v, PiperVoice):
            name = (f"piper-joe-l{round(v.length * 100):03d}-n{round(v.noise * 100):03d}"
                    f"-w{round(v.noise_w * 100):03d}")
        else:
            language = re.sub(r"[^a-z0-9]", "", v.language.lower())
            variant = re.sub(r"[^a-z0-9]", "", (v.variant or "default").lower())
            name = f"{language}-{variant}-p{v.pitch:02d}-r{v.pitch_range:02d}-s{v.rate:03d}"
        return name + (f"-{self.shift.tag}" if self.shift else "")

    def describe(self) -> dict:
        return {"group": self.group, "engine": self.engine, **dataclasses.asdict(self.voice),
                "shift": dataclasses.asdict(self.shift) if self.shift else None}


def seeded_rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(keys)))


def word_key(word: str) -> int:
    return int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "big")


def make_speakers(seed: int, count: int, languages=LANGUAGES, variants=VARIANTS, engines=("espeak",),
                  shift_share: dict | None = None, piper_share: float = PIPER_SHARE) -> list[Speaker]:
    """`count` distinct speakers from `engines`; the first k are the same for any count >= k.

    With both engines, each speaker's engine is a seeded draw (`piper_share` Piper); then a seeded share
    of each engine's speakers (`shift_share`, e.g. SHIFT_SHARE; None: none) gets a speaker transform."""
    if not engines or any(e not in ENGINES for e in engines):
        raise SynthError(f"engines must be some of {list(ENGINES)}, got {list(engines)}")
    if "espeak" not in engines:
        piper = [True] * count
    elif "piper" not in engines:
        piper = [False] * count
    else:
        piper = [seeded_rng(seed, 0x919E, i).random() < piper_share for i in range(count)]
    shift_share = shift_share or {}
    espeak = _espeak_speakers(seed, count - sum(piper), languages, variants)
    made, taken, espeak_used = [], set(), 0
    for index, is_piper in enumerate(piper):
        rng = seeded_rng(seed, 0x5817, index)
        if not is_piper:
            espeak_used += 1
        for _ in range(1000):  # redraw in the (rare) case of an existing group id
            voice = _piper_voice(rng) if is_piper else espeak[espeak_used - 1].voice
            shift = draw_shift(rng) if rng.random() < shift_share.get("piper" if is_piper else "espeak", 0) else None
            speaker = Speaker(voice, shift)
            if speaker.group not in taken:
                break
        else:
            raise SynthError(f"cannot make {count} distinct speakers: use fewer clips")
        taken.add(speaker.group)
        made.append(speaker)
    return made


def _piper_voice(rng: np.random.Generator) -> PiperVoice:
    return PiperVoice(round(float(rng.uniform(*PIPER_LENGTH)), 2), round(float(rng.uniform(*PIPER_NOISE)), 2),
                      round(float(rng.uniform(*PIPER_NOISE_W)), 2))


def _espeak_speakers(seed: int, count: int, languages=LANGUAGES, variants=VARIANTS) -> list[Speaker]:
    """`count` distinct eSpeak speakers; the first k are the same for any count >= k.

    Variants and accents are dealt in a seeded order, cycling, so every variant is used once there
    are as many speakers as variants, and accents rotate across variants.
    """
    rng = seeded_rng(seed, 0x5BEA)
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
    """`count` clips of other words: clip i says words[i % len(words)] (a per-clip plan such as
    wordlist.unknown_plan, or a list to take in turn), and the speakers in turn (the targets'
    speakers: the same voices say target and unknown words, so voice is no clue to the class). A
    job's index counts the clips of its word so far, so no two files get one name."""
    jobs, said = [], collections.Counter()
    for i in range(count):
        word = words[i % len(words)]
        jobs.append(UnknownJob(word, said[word], speakers[i % len(speakers)], seed))
        said[word] += 1
    return jobs


def plan_jobs(words: list[str], per_word: int, seed: int, languages=LANGUAGES, variants=VARIANTS,
              engines=("espeak",), shift_share: dict | None = None, piper_share: float = PIPER_SHARE):
    speakers = make_speakers(seed, math.ceil(per_word / TAKES_PER_SPEAKER), languages, variants, engines,
                             shift_share, piper_share)
    jobs = [ClipJob(word, index, speakers[index // TAKES_PER_SPEAKER], seed)
            for word in words for index in range(per_word)]
    return jobs, speakers


def take_voice(base: Voice | PiperVoice, rng: np.random.Generator) -> Voice | PiperVoice:
    """The speaker's voice with this take's small pitch, range and rate (or Piper length) jitter."""
    if isinstance(base, PiperVoice):
        return dataclasses.replace(base, length=base.length * rng.uniform(1 - TAKE_LENGTH_JITTER,
                                                                          1 + TAKE_LENGTH_JITTER))
    def jitter(value: int, limit: int) -> int:
        return int(np.clip(value + rng.integers(-limit, limit + 1), 0, 99))
    pitch = jitter(base.pitch, TAKE_PITCH_JITTER)
    pitch_range = jitter(base.pitch_range, TAKE_RANGE_JITTER)
    rate = int(round(base.rate * rng.uniform(1 - TAKE_RATE_JITTER, 1 + TAKE_RATE_JITTER)))
    return dataclasses.replace(base, pitch=pitch, pitch_range=pitch_range, rate=rate)
