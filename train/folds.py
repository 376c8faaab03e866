"""Folds for the open-set benchmark: any number of class folders, split by speaker and by word.

    corpus   = collect([DIR, ...], targets)       # every clip of every folder, with its speaker
    material = fold_material(corpus, fold, folds)  # one fold's clips per split, held-out words, noise

Why by speaker: the same people speak in every folder (a speaker's "yes" in one folder, their "cat"
in another), so the split hashes the speaker id, never the folder or the file: a speaker is on one
side in all folders at once. Why by word as well: a model trained with "bed" in its unknown class
and scored on other takes of "bed" measures memory, not the open world. Each fold holds some
non-target words out of training altogether (the words rotate over the folds, so each is held out
once) and scores them apart, as never-seen words.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from preprocess import silence, sources
from preprocess.cli import SpecVisionError

FOLD_SALT = b"specvision-openset-fold-v1:"
VAL_SALT = b"specvision-openset-val-v1:"
SINGLE_TEST_PCT = 20.0      # --folds 1: test speakers (one fold of five)
SINGLE_WORD_GROUPS = 5      # --folds 1: held-out words as in fold 0 of five
VAL_PCT = 12.5              # of the non-test speakers: validation (early stopping)


class FoldError(SpecVisionError):
    """The --data folders cannot give a speaker-disjoint split."""


def _percent(salt: bytes, key: str) -> float:
    return int.from_bytes(hashlib.sha256(salt + key.encode()).digest()[:8], "big") / 2 ** 64 * 100.0


def split_of(key: str, fold: int, folds: int) -> str:
    """Split of a speaker (or noise chunk) in fold `fold`: test if its hash falls in the fold's band."""
    p = _percent(FOLD_SALT, key)
    width = SINGLE_TEST_PCT if folds == 1 else 100.0 / folds
    if fold * width <= p < (fold + 1) * width:
        return "test"
    return "val" if _percent(VAL_SALT, key) < VAL_PCT else "train"


def held_out_words(words: list[str], fold: int, folds: int) -> list[str]:
    """Non-target words kept out of fold `fold`'s training: every folds-th word of the sorted list,
    shifted by the fold, so over the folds each word is held out exactly once. A single word is
    never held out (the unknown class would have no real word left)."""
    words = sorted(words)
    if len(words) < 2:
        return []
    groups = folds if folds > 1 else SINGLE_WORD_GROUPS
    return [w for i, w in enumerate(words) if i % groups == fold % groups]


@dataclasses.dataclass
class Corpus:
    """Every clip of the --data folders: targets and other words as (word, path), noise files."""
    targets: list
    others: list
    noise: list
    words: list          # the non-target words found


@dataclasses.dataclass
class Material:
    """One fold's clips per split: targets {split: [(word, path)]}, seen other words {split: ...},
    the never-seen words' test clips [(word, path)], the held-out words, noise regions."""
    targets: dict
    others: dict
    unseen: list
    held_out: list
    regions: list


def collect(folders: list[Path], targets: list[str]) -> Corpus:
    """Class folders of every folder in `folders`: each of `targets` is a target word, every other
    class folder a non-target word, `_background_noise_` background recordings. Each clip needs a
    speaker id (Speech Commands names: SPEAKER_nohash_N.wav), else no split can keep speakers apart."""
    found_targets, others, noise = [], [], []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FoldError(f"{folder}: not a folder")
        noise_only = (folder / silence.NOISE_FOLDER).is_dir() and not any(
            p.is_dir() and not p.name.startswith(("_", ".")) for p in folder.iterdir())
        try:
            clips = [] if noise_only else sources.folder_clips(folder)  # a folder of background recordings only
        except sources.SourceError as err:
            raise FoldError(str(err)) from None
        anonymous = [c.path for c in clips if sources.NOHASH not in c.path.stem]
        if anonymous:
            raise FoldError(f"{folder}: {len(anonymous)} of {len(clips)} clips have no speaker id in their "
                            f"name (first: {anonymous[0].relative_to(folder)}); name them "
                            f"SPEAKER{sources.NOHASH}N.wav so that a split can keep each speaker on one side")
        for clip in clips:
            (found_targets if clip.label in targets else others).append((clip.label, clip.path))
        if (folder / silence.NOISE_FOLDER).is_dir():
            paths, _ = silence.noise_files([folder / silence.NOISE_FOLDER])
            noise += paths
    missing = sorted(set(targets) - {w for w, _ in found_targets})
    if missing:
        raise FoldError(f"no class folder for the target words {missing} in {', '.join(map(str, folders))}")
    return Corpus(sorted(found_targets), sorted(others), sorted(noise), sorted({w for w, _ in others}))


def fold_material(corpus: Corpus, fold: int, folds: int) -> Material:
    held = held_out_words(corpus.words, fold, folds)
    targets = {s: [] for s in sources.SPLITS}
    others = {s: [] for s in sources.SPLITS}
    unseen = []
    for word, path in corpus.targets:
        targets[split_of(sources.group_id(path.name), fold, folds)].append((word, path))
    for word, path in corpus.others:
        split = split_of(sources.group_id(path.name), fold, folds)
        if word not in held:
            others[split].append((word, path))
        elif split == "test":  # a held-out word's other speakers: in no split at all
            unseen.append((word, path))
    regions = silence.noise_regions(corpus.noise, lambda key: split_of(key, fold, folds))
    return Material(targets, others, unseen, held, regions)
