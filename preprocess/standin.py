"""The Speech Commands stand-in: preprocess.synth's speech in the dataset's exact layout.

`python -m preprocess.synth --layout speechcommands --per-word N --out DIR` writes what an extracted
Speech Commands v0.02 download looks like, offline:

    DIR/<word>/<speaker>_nohash_<k>.wav    all 35 v0.02 words (or --words); speaker: 8 hex digits
    DIR/_background_noise_/*.wav           generated noise recordings, 60 s each, and a README.md
    DIR/validation_list.txt                `word/file.wav` lines, chosen by the dataset's own rule:
    DIR/testing_list.txt                   Google's which_set (SHA-1 of the speaker id), 10 % / 10 %

so `python -m preprocess --source speechcommands --root DIR` treats it exactly like the real thing.
`--per-word 3000` gives 105,000 clips (the real v0.02 has 105,829). A speaker id is the first 8 hex
digits of a SHA-1 of the seed and the eSpeak voice setting (synth's speaker), so the real ids'
spread over the hash is imitated and the same speaker says every word.

Synthesizing 105k clips takes a while, so the stand-in resumes: clips already on disk are kept
(every clip is written atomically, so one that exists is whole) and only the missing ones are made.
Running it again with a larger --per-word therefore adds clips without touching the old files, the
way a dataset grows; the lists are rewritten for all clips.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from preprocess.sources import official_which_set as which_set  # the rule that made the lists
from preprocess.atomic import atomic_write_text
from preprocess.sources import SPEECH_COMMANDS_WORDS
from preprocess.effects import NOISE_COLOURS, coloured_noise, write_wav
from preprocess.voices import TAKES_PER_SPEAKER, ClipJob, SynthError

WORDS = SPEECH_COMMANDS_WORDS["v0.02"]
VALIDATION_PCT = 10.0                 # the dataset's split: 10 % validation, 10 % testing
TESTING_PCT = 10.0
SPEAKER_ID_SALT = "specvision-standin"
NOISE_DIR = "_background_noise_"
NOISE_SECONDS = 60                    # the real recordings are 60-95 s
NOISE_FILES = {"white_noise.wav": "white", "pink_noise.wav": "pink", "brown_noise.wav": "brown"}
NOISE_SEED_KEY = 0x4015E              # keeps the noise generators apart from the clips' (seed, word, index)
LISTS = {"validation": "validation_list.txt", "testing": "testing_list.txt"}




def speaker_ids(seed: int, groups: list[str]) -> dict[str, str]:
    """synth speaker group -> 8-hex speaker id, distinct, and the same for a group whatever the count.

    Ids are given in the order of `groups` (synth's speakers: the first k are the same for any
    count), and a collision (about 1 in 4,000 at 1,500 speakers) takes the next hash of that group.
    """
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for group in groups:
        attempt = 0
        while True:
            key = f"{SPEAKER_ID_SALT}:{seed}:{group}" + (f":{attempt}" if attempt else "")
            speaker = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
            if speaker not in taken:
                break
            attempt += 1
        ids[group] = speaker
        taken.add(speaker)
    return ids


@dataclasses.dataclass(frozen=True)
class StandinJob(ClipJob):
    """A synth clip (same audio for the same seed, word and index) under its dataset name."""
    speaker_id: str

    @property
    def relative_path(self) -> str:
        return f"{self.word}/{self.speaker_id}_nohash_{self.index % TAKES_PER_SPEAKER}.wav"


def rename_jobs(jobs: list[ClipJob], speakers: list, seed: int) -> list[StandinJob]:
    """synth's ClipJobs as stand-in jobs: `<word>/<8-hex id>_nohash_<take>.wav`."""
    ids = speaker_ids(seed, [s.group for s in speakers])
    return [StandinJob(**{f.name: getattr(job, f.name) for f in dataclasses.fields(job)},
                      speaker_id=ids[job.speaker.group]) for job in jobs]


# What a synth.json written before the engine choice existed means: eSpeak NG alone, untransformed.
OLD_VOICES = {"engines": ["espeak"], "speaker_transform": "off", "piper_share": 0.5}


def missing_jobs(jobs: list, out: Path, seed: int, duration: float, voices: dict | None = None) -> list:
    """The jobs whose clip is not on disk yet (written atomically: a clip that exists is complete).

    Kept clips must come from the same seed, duration and voices (`voices`: engines, speaker
    transform, Piper share; synth.json says what made them), or the folder would mix two data sets
    (other voices are other speakers, under other ids): then SynthError.
    """
    info_path = out / "synth.json"
    asked = {"seed": seed, "duration": duration, **(voices or {})}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
            made = {key: info.get(key, OLD_VOICES.get(key)) if key in OLD_VOICES else info[key] for key in asked}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SynthError(f"{info_path}: unreadable ({err}); use a fresh --out") from None
        if made != asked:
            raise SynthError(f"{out} holds a stand-in made with {made}, not {asked}: its clips would be "
                             "mixed with these; use a fresh --out")
    return [job for job in jobs if not (out / job.relative_path).is_file()]


def write_noise(out: Path, seed: int, sample_rate: int) -> list[str]:
    """OUT/_background_noise_/: generated noise recordings (kept if already there) and a README."""
    folder = out / NOISE_DIR
    written = []
    for index, (name, colour) in enumerate(NOISE_FILES.items()):
        if (folder / name).is_file():
            continue
        rng = np.random.default_rng(np.random.SeedSequence([seed, NOISE_SEED_KEY, index]))
        noise = coloured_noise(rng, NOISE_SECONDS * sample_rate, NOISE_COLOURS[colour])
        write_wav(folder / name, np.clip(noise * 0.1, -1.0, 1.0))  # RMS -20 dBFS, peaks well inside
        written.append(name)
    atomic_write_text(folder / "README.md",
                      "Generated background noise of the SpecVision Speech Commands stand-in "
                      "(python -m preprocess.synth --layout speechcommands): "
                      + ", ".join(f"{name} ({colour} noise)" for name, colour in NOISE_FILES.items())
                      + f", {NOISE_SECONDS} s each at 16 kHz, -20 dBFS RMS.\n")
    return written


def write_lists(out: Path, relative_paths: list[str]) -> dict[str, int]:
    """validation_list.txt and testing_list.txt for these clips; returns the clip count per set."""
    sets: dict[str, list[str]] = {"training": [], "validation": [], "testing": []}
    for path in sorted(relative_paths):
        sets[which_set(path)].append(path)
    for name, file_name in LISTS.items():
        atomic_write_text(out / file_name, "".join(f"{path}\n" for path in sets[name]))
    return {name: len(paths) for name, paths in sets.items()}


def finish(out: Path, jobs: list[StandinJob], kept: int, seed: int, sample_rate: int) -> str:
    """After synthesis: the noise folder and the split lists. Returns a line for the summary."""
    write_noise(out, seed, sample_rate)
    # the lists cover every clip in the word folders, as the dataset's do (also clips of an earlier,
    # larger run, which synth warns about): the rule decides, whichever run made the file
    on_disk = [f"{p.parent.name}/{p.name}" for p in out.glob("*/*.wav") if not p.parent.name.startswith("_")]
    counts = write_lists(out, on_disk)
    speakers = len({job.speaker_id for job in jobs})
    return (f"speechcommands layout: {kept} clips were already there and kept; {speakers} speaker ids; "
            f"lists by SHA-1 of the speaker ({VALIDATION_PCT:g} % / {TESTING_PCT:g} %) over the "
            f"{len(on_disk)} clips in the word folders: train {counts['training']}, validation "
            f"{counts['validation']}, testing {counts['testing']}; {NOISE_DIR}/ "
            f"{len(NOISE_FILES)} generated recordings")
