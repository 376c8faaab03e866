"""Where labelled clips come from: a folder of class folders, or Google Speech Commands.

Both sources return a sorted list of `Clip` (absolute path, path relative to the audio root, label,
split). Rendering never looks at anything else, so the two sources behave the same downstream.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import os
from pathlib import Path

from preprocess.cli import SpecVisionError
from preprocess.layout import SPLITS
from preprocess.render import AUDIO_EXTENSIONS

# Salt for the speaker-hash split. Changing it moves every speaker: never change it.
SPLIT_SALT = b"specvision-split-v1:"
NOHASH = "_nohash_"

SPEECH_COMMANDS_WORDS = {
    "v0.01": ("bed bird cat dog down eight five four go happy house left marvin nine no off on one "
              "right seven sheila six stop three tree two up wow yes zero").split(),
}
SPEECH_COMMANDS_WORDS["v0.02"] = sorted(SPEECH_COMMANDS_WORDS["v0.01"]
                                        + "backward follow forward learn visual".split())


class SourceError(SpecVisionError):
    """The audio root or the options cannot give a usable list of clips."""


@dataclasses.dataclass(frozen=True, order=True)
class Clip:
    source: str   # path relative to the audio root, '/'-separated (the manifest key)
    label: str
    split: str
    path: Path    # absolute path of the audio file


def group_id(file_name: str) -> str:
    """Speaker/group of a clip: the name part before '_nohash_' (Speech Commands), else the stem."""
    stem = Path(file_name).stem
    return stem.split(NOHASH, 1)[0] if NOHASH in stem else stem


def which_set(group: str, val_pct: float, test_pct: float) -> str:
    """Stable split of a group id: 'train', 'val' or 'test'.

    The split depends only on the group id (never on the other files), so all clips of one speaker
    land in the same split and adding files never moves the old ones. It is Google's `which_set`
    idea with a different hash: Google hashes the speaker with SHA-1, and the official test speakers
    (all of the shared real clips) then sit in one band of that hash, so they would all land in one
    split. SHA-256 of a fixed salt plus the group spreads them evenly.
    """
    if val_pct < 0 or test_pct < 0 or val_pct + test_pct > 100:
        raise ValueError(f"need 0 <= val-pct, test-pct and val-pct + test-pct <= 100, "
                         f"got {val_pct} and {test_pct}")
    digest = hashlib.sha256(SPLIT_SALT + group.encode("utf-8")).digest()
    percent = int.from_bytes(digest[:8], "big") / 2 ** 64 * 100.0  # uniform in [0, 100)
    if percent < val_pct:
        return "val"
    if percent < val_pct + test_pct:
        return "test"
    return "train"


# Speech Commands' own split rule (its README, TensorFlow's input_data.py): list names -> our splits
OFFICIAL_SETS = {"validation": "val", "testing": "test", "training": "train"}
MAX_NUM_WAVS_PER_CLASS = 2 ** 27 - 1  # input_data.py's constant: part of the hash -> percent map


def official_which_set(filename: str, validation_percentage: float = 10.0,
                       testing_percentage: float = 10.0) -> str:
    """'validation', 'testing' or 'training': the rule that made the dataset's lists.

    As in TensorFlow's speech_commands/input_data.py (and the dataset's README): the speaker id
    (the name before `_nohash_`) is hashed with SHA-1, taken modulo MAX_NUM_WAVS_PER_CLASS + 1 and
    scaled to a percentage. It reproduces every entry of the official v0.01 and v0.02 lists (tested).
    """
    speaker = re.sub(r"_nohash_.*$", "", Path(filename).name)
    hashed = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    percentage = (hashed % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        raise SourceError(f"{folder}: cannot list the folder ({err.strerror or err})") from None


def _audio_files(folder: Path) -> list[Path]:
    """Every entry named like a clip: dangling links, FIFOs and folders too, so that the run reports
    them as failed (named, with the reason) instead of skipping them silently.

    os.scandir, not a Path per entry: 100k clips list in a fraction of the time.
    """
    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries
                           if os.path.splitext(e.name)[1].lower() in AUDIO_EXTENSIONS
                           and not e.name.startswith("."))
    except OSError as err:
        raise SourceError(f"{folder}: cannot list the folder ({err.strerror or err})") from None
    return [folder / name for name in names]


def _class_dirs(folder: Path, words: list[str] | None) -> list[Path]:
    """Class folders under `folder` (names starting with '_' or '.' are not classes)."""
    classes = [p for p in _entries(folder) if p.is_dir() and not p.name.startswith(("_", "."))]
    if words:
        found = {p.name for p in classes}
        missing = [w for w in words if w not in found]
        if missing:
            raise SourceError(f"{folder}: no class folder for {missing} (found: {sorted(found) or 'none'})")
        classes = [p for p in classes if p.name in words]
    return classes


def folder_clips(root: str | Path, words: list[str] | None = None,
                 val_pct: float = 10.0, test_pct: float = 10.0) -> list[Clip]:
    """`root/<class>/*.{wav,flac,ogg,mp3}`, split by speaker hash; or `root/<split>/<class>/*` as given."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory")
    clips: list[Clip] = []
    presplit = [s for s in SPLITS if (root / s).is_dir()]
    if presplit:  # the folder already says which split each clip is in
        for split in presplit:
            for class_dir in _class_dirs(root / split, words):
                for path in _audio_files(class_dir):
                    clips.append(Clip(path.relative_to(root).as_posix(), class_dir.name, split, path))
    else:
        try:
            which_set("", val_pct, test_pct)  # check the percentages once, before any file
        except ValueError as err:
            raise SourceError(str(err)) from None
        for class_dir in _class_dirs(root, words):
            for path in _audio_files(class_dir):
                split = which_set(group_id(path.name), val_pct, test_pct)
                clips.append(Clip(path.relative_to(root).as_posix(), class_dir.name, split, path))
    if not clips:
        raise SourceError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in class folders")
    return sorted(clips)


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise SourceError(f"{path}: split list not found")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def speechcommands_clips(root: str | Path, words: list[str], version: str = "v0.02",
                         lists_dir: str | Path | None = None) -> list[Clip]:
    """An extracted Speech Commands copy: `root/<word>/*.wav` plus the official split lists.

    Clips named in validation_list.txt go to 'val', in testing_list.txt to 'test'. A clip in neither
    list goes where the dataset's own rule puts its speaker (official_which_set): in a complete
    copy that is 'train', as the README prescribes, but copies cut from another version (TensorFlow's
    mini_speech_commands came from v0.01) hold clips the lists do not name whose speakers are
    validation or test speakers, and calling those 'train' would put a test speaker in training.
    `lists_dir` defaults to `root`.
    """
    root = Path(root).resolve()
    lists = Path(lists_dir).resolve() if lists_dir else root
    if version not in SPEECH_COMMANDS_WORDS:
        raise SourceError(f"unknown Speech Commands version {version!r}; "
                          f"use one of {sorted(SPEECH_COMMANDS_WORDS)}")
    unknown = [w for w in words if w not in SPEECH_COMMANDS_WORDS[version]]
    if unknown:
        raise SourceError(f"not Speech Commands {version} words: {unknown} "
                          f"(choose from: {' '.join(SPEECH_COMMANDS_WORDS[version])})")
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory")
    val_list = _read_list(lists / "validation_list.txt")
    test_list = _read_list(lists / "testing_list.txt")
    clips = []
    for word in sorted(set(words)):
        if not (root / word).is_dir():
            raise SourceError(f"{root}: no folder for the word {word!r}")
        for path in _audio_files(root / word):
            source = f"{word}/{path.name}"
            split = ("val" if source in val_list else "test" if source in test_list
                     else OFFICIAL_SETS[official_which_set(path.name)])
            clips.append(Clip(source, word, split, path))
    if not clips:
        raise SourceError(f"{root}: no clips for the words {words}")
    return sorted(clips)
