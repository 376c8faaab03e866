"""Open-world classes: "unknown" (other words) and "silence" (background noise and silence).

A keyword spotter hears mostly things that are not its words. Two extra classes teach it to say so:

    unknown   clips of words that are not targets: Speech Commands' other words, a folder source's
              non-target class folders, and any --unknown-root (a folder of class folders, all unknown)
    silence   1 s crops of background recordings (the root's _background_noise_ and any --noise-dir)
              at random gains, plus some digital silence and some generated non-speech (tones,
              chords, melodies, chirps, clicks, knocks, beeps, buzz: preprocess/nonspeech.py)

Each is sampled to a share of every split (`--unknown-pct`, `--silence-pct`: percent of the split's
images). Splits stay leak-free:
  * every clip goes to the split of its speaker, by the same rule as the targets (the folder source's
    speaker hash; Speech Commands' official lists, whose speakers are mapped onto clips of extra roots,
    and Google's own hash formula for speakers the lists never name), so a speaker recorded in two
    roots is on one side;
  * each background recording is cut into NOISE_CHUNK_S chunks and every chunk belongs to one split
    (a hash of file and chunk), and a crop never leaves its chunk: no two splits share a sample.
Everything is a pure function of the clip names, the noise files and --seed: same inputs, same set.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import math
import os
import re
from pathlib import Path
from typing import Callable

from preprocess import nonspeech, sources
from preprocess.layout import EXTRA_CLASSES, SILENCE, UNKNOWN  # noqa: F401 (the class names, used as openworld.*)
from preprocess.silence import (DIGITAL_SILENCE_PCT, NOISE_FOLDER, NONSPEECH_PCT, SILENCE_GAIN_DB, noise_files,
                                noise_regions, plan_crops, write_crops)

CROP_FOLDER = ".openworld"       # OUT/.openworld/silence/*.wav: the crops, rendered like any clip
SAMPLE_SALT = b"specvision-unknown-v1:"
# What --unknown-pct/--silence-pct are a percent of (args.extra_counts; only preprocess/setups.py sets
# the second): the split's images, or, as Google's speech_commands trainer, its target clips, rounded up.
SHARE_OF_SPLIT, SHARE_OF_TARGETS = "of-split", "of-targets"
# Google's speech_commands which_set(): for speakers the official lists do not name.


class OpenWorldError(sources.SourceError):
    """Options or inputs that cannot give the extra classes; the message says why."""


# ---------------------------------------------------------------- options (both sources)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "open world (extra classes 'unknown' and 'silence'; --words are then the target words)")
    group.add_argument("--unknown-pct", type=float, default=0.0, metavar="PCT",
                       help="percent of each split's images that are the class 'unknown': clips of "
                            "non-target words, every speaker on the side of the split the targets put "
                            "them (default: %(default)s, no such class)")
    group.add_argument("--unknown-words", nargs="+", metavar="WORD",
                       help="which non-target words may be unknown (default: all: Speech Commands' other "
                            "words, or the folder source's other class folders, plus --unknown-root)")
    group.add_argument("--unknown-root", type=Path, action="append", default=[], metavar="DIR",
                       help="another folder of <word>/*.wav class folders, all of them unknown words "
                            "(repeatable), e.g. `python -m preprocess.synth --unknown N` output")
    group.add_argument("--silence-pct", type=float, default=0.0, metavar="PCT",
                       help="percent of each split's images that are the class 'silence': 1 s crops of "
                            f"ROOT/{NOISE_FOLDER} and --noise-dir recordings at random gains "
                            f"({SILENCE_GAIN_DB[0]:.0f}..{SILENCE_GAIN_DB[1]:.0f} dB) and digital silence "
                            "(default: %(default)s, no such class)")
    group.add_argument("--noise-dir", type=Path, action="append", default=[], metavar="DIR",
                       help="more background recordings for the silence class (repeatable)")
    group.add_argument("--digital-silence-pct", type=float, default=DIGITAL_SILENCE_PCT, metavar="PCT",
                       help="percent of the silence class that is digital silence (default: %(default)s)")
    group.add_argument("--nonspeech-pct", type=float, metavar="PCT",
                       help="percent of the silence class that is generated non-speech: tones, chords, "
                            "melodies, chirps, click trains, knocks, beeps, buzz, loud noise, so that "
                            f"such sounds are not taken for words (default: {NONSPEECH_PCT:g}, or what "
                            "--digital-silence-pct leaves if less)")
    group.add_argument("--seed", type=int, default=0,
                       help="picks the unknown clips, the silence crops and the generated non-speech "
                            "(default: %(default)s)")
    parser.set_defaults(extra_counts=SHARE_OF_SPLIT)


def enabled(args: argparse.Namespace) -> bool:
    return args.unknown_pct > 0 or args.silence_pct > 0


def check_options(args: argparse.Namespace) -> None:
    if args.nonspeech_pct is None:  # not given: the default, within what digital silence leaves
        args.nonspeech_pct = max(0.0, min(NONSPEECH_PCT, 100.0 - args.digital_silence_pct))
    for name in ("unknown_pct", "silence_pct", "digital_silence_pct", "nonspeech_pct"):
        value = getattr(args, name)
        if not 0.0 <= value <= 100.0:
            raise OpenWorldError(f"--{name.replace('_', '-')} must be between 0 and 100, got {value:g}")
    if args.digital_silence_pct + args.nonspeech_pct > 100.0:
        raise OpenWorldError(f"--digital-silence-pct {args.digital_silence_pct:g} + --nonspeech-pct "
                             f"{args.nonspeech_pct:g} are shares of the silence class: they must total "
                             f"100 or less")
    if args.unknown_pct + args.silence_pct >= 100.0:
        raise OpenWorldError(f"--unknown-pct {args.unknown_pct:g} + --silence-pct {args.silence_pct:g} "
                             f"leave no room for the target words (must total under 100)")
    if not enabled(args):
        extra = [f"--{n}" for n, v in (("unknown-words", args.unknown_words),
                                       ("unknown-root", args.unknown_root),
                                       ("noise-dir", args.noise_dir)) if v]
        if extra:
            raise OpenWorldError(f"{' '.join(extra)} need --unknown-pct or --silence-pct above 0")
        return
    if args.source == "folder" and not args.words:
        raise OpenWorldError("--source folder with --unknown-pct/--silence-pct needs --words: the target "
                             "words (every other class folder can then be unknown)")
    clash = [w for w in args.words or [] if w in EXTRA_CLASSES]
    if clash:
        raise OpenWorldError(f"--words {clash}: these names are the extra classes; rename the folders")
    if args.unknown_words:
        overlap = sorted(set(args.unknown_words) & set(args.words or []))
        if overlap:
            raise OpenWorldError(f"--unknown-words {overlap} are also target words")
    for folder in args.unknown_root + args.noise_dir:
        if not folder.is_dir():
            raise OpenWorldError(f"{folder}: not a directory")


# ---------------------------------------------------------------- speaker split rules



def speaker_splits(clips: list[sources.Clip]) -> dict[str, str]:
    """speaker -> split as the given clips place them; a speaker in two splits is an error."""
    seen: dict[str, str] = {}
    for clip in clips:
        speaker = sources.group_id(Path(clip.source).name)
        if seen.setdefault(speaker, clip.split) != clip.split:
            raise OpenWorldError(f"speaker {speaker} is in both {seen[speaker]} and {clip.split} "
                                 f"(e.g. {clip.source}); the split lists are inconsistent")
    return seen


# ---------------------------------------------------------------- unknown words

def _word_clips(root: Path, words: list[str] | None, split_of: Callable[[str, str], str],
                prefix: str) -> list[sources.Clip]:
    """root/<word>/* for each word folder (all when words is None), split by split_of(source, name)."""
    clips = []
    for word_dir in sources._class_dirs(root, None):
        if words is not None and word_dir.name not in words:
            continue
        for path in sources._audio_files(word_dir):
            source = f"{prefix}{word_dir.name}/{path.name}"
            clips.append(sources.Clip(source, word_dir.name, split_of(source, path.name), path))
    return clips


def unknown_candidates(args: argparse.Namespace, targets: list[sources.Clip],
                       main_root: Path) -> list[sources.Clip]:
    """Every clip that may become 'unknown' (label = its word), with its speaker's split."""
    target_words = set(args.words or [c.label for c in targets])
    if args.source == "folder":
        def split_of(source: str, name: str) -> str:
            return sources.which_set(sources.group_id(name), args.val_pct, args.test_pct)
        presplit = [s for s in sources.SPLITS if (main_root / s).is_dir()]
        if presplit:
            main = [c for c in sources.folder_clips(main_root, None) if c.label not in target_words]
        else:
            main = _word_clips(main_root, None, split_of, "")
    else:
        lists_dir = Path(args.lists).resolve() if args.lists else main_root
        known = {name: "val" for name in sources._read_list(lists_dir / "validation_list.txt")}
        known.update({name: "test" for name in sources._read_list(lists_dir / "testing_list.txt")})
        speakers = speaker_splits(targets + [sources.Clip(s, "", split, Path(s)) for s, split in known.items()])

        def split_of(source: str, name: str) -> str:
            listed = known.get(re.sub(r"^\+unknown\d+/", "", source))
            return listed or speakers.get(sources.group_id(name)) or sources.OFFICIAL_SETS[sources.official_which_set(name)]
        words = [w for w in sources.SPEECH_COMMANDS_WORDS[args.version] if (main_root / w).is_dir()]
        main = [c for c in _word_clips(main_root, words, split_of, "") if c.label not in target_words]
    extra = []
    for index, root in enumerate(args.unknown_root):
        extra += _word_clips(root.resolve(), None, split_of, f"+unknown{index}/")
    clips = [c for c in main + extra if c.label not in target_words]
    if args.unknown_words:
        missing = sorted(set(args.unknown_words) - {c.label for c in clips})
        if missing:
            raise OpenWorldError(f"--unknown-words {missing}: no clips of these words found")
        clips = [c for c in clips if c.label in args.unknown_words]
    return clips


def split_counts(targets: list[sources.Clip], share_pct: float, other_pct: float,
                 rule: str = SHARE_OF_SPLIT) -> dict[str, int]:
    """Images of one extra class per split so that it makes share_pct of the split's images; or, by
    SHARE_OF_TARGETS, share_pct of the split's target clips rounded up (Google's input_data.py:
    `int(math.ceil(set_size * percentage / 100))`, the same expression, so the same float rounding)."""
    per_split = collections.Counter(c.split for c in targets)
    if rule == SHARE_OF_TARGETS:
        return {s: int(math.ceil(per_split[s] * share_pct / 100)) for s in sources.SPLITS}
    rest = 100.0 - share_pct - other_pct
    return {s: int(round(per_split[s] * share_pct / rest)) for s in sources.SPLITS}


def _order_key(seed: int, source: str) -> bytes:
    return hashlib.sha256(SAMPLE_SALT + f"{seed}:{source}".encode("utf-8")).digest()


def sample_unknown(candidates: list[sources.Clip], counts: dict[str, int], seed: int
                   ) -> tuple[list[sources.Clip], list[str]]:
    """counts[split] clips per split, words taken in turn (many words, evenly), relabelled 'unknown'.

    Within a word the order is a seeded hash of the clip name: a stable pick that does not depend
    on which other files exist.
    """
    chosen, notes = [], []
    for split in sources.SPLITS:
        by_word = collections.defaultdict(list)
        for clip in candidates:
            if clip.split == split:
                by_word[clip.label].append(clip)
        queues = [sorted(by_word[w], key=lambda c: _order_key(seed, c.source)) for w in sorted(by_word)]
        picked: list[sources.Clip] = []
        depth = 0
        while len(picked) < counts[split] and any(depth < len(q) for q in queues):
            for queue in queues:
                if depth < len(queue) and len(picked) < counts[split]:
                    picked.append(queue[depth])
            depth += 1
        if len(picked) < counts[split]:
            notes.append(f"unknown: only {len(picked)} of {counts[split]} wanted clips in {split} "
                         f"(not enough non-target clips of speakers in that split)")
        chosen += [dataclasses.replace(c, label=UNKNOWN) for c in picked]
    return chosen, notes


# ---------------------------------------------------------------- the whole step (python -m preprocess)

def extend(args: argparse.Namespace, targets: list[sources.Clip], source: dict, out: Path
           ) -> tuple[list[sources.Clip], dict, list[str]]:
    """Targets + the sampled unknown and silence clips, the render.json source record (which says
    which classes are targets), and notes for the summary."""
    if not enabled(args):
        return targets, source, []
    root = Path(source["root"])
    notes: list[str] = []
    clips = list(targets)
    record = dict(source, targets=sorted({c.label for c in targets}))
    if args.unknown_pct > 0:
        candidates = unknown_candidates(args, targets, root)
        if not candidates:
            raise OpenWorldError(f"--unknown-pct {args.unknown_pct:g}: no clips of non-target words found "
                                 f"under {root}{' or --unknown-root' if args.unknown_root else ''}")
        counts = split_counts(targets, args.unknown_pct, args.silence_pct, args.extra_counts)
        unknown, more = sample_unknown(candidates, counts, args.seed)
        clips += unknown
        notes += more
        record["unknown"] = {"pct": args.unknown_pct, "seed": args.seed,
                             "words": sorted({c.label for c in candidates}),
                             "roots": [str(r.resolve()) for r in args.unknown_root]}
    if args.silence_pct > 0:
        folders = ([root / NOISE_FOLDER] if (root / NOISE_FOLDER).is_dir() else []) + list(args.noise_dir)
        paths, problems = noise_files(folders)
        notes += problems
        if not paths and args.digital_silence_pct + args.nonspeech_pct < 100:
            raise OpenWorldError(f"--silence-pct {args.silence_pct:g}: no background recordings in "
                                 f"{root / NOISE_FOLDER} or --noise-dir (use --noise-dir DIR, or make "
                                 f"--digital-silence-pct and --nonspeech-pct total 100)")
        val_pct, test_pct = (args.val_pct, args.test_pct) if args.source == "folder" else (10.0, 10.0)
        regions = noise_regions(paths, lambda key: sources.which_set(key, val_pct, test_pct))
        crops, more = plan_crops(regions, split_counts(targets, args.silence_pct, args.unknown_pct,
                                                       args.extra_counts),
                                 args.seed, args.digital_silence_pct, args.nonspeech_pct)
        notes += more
        clips += write_crops(crops, out / CROP_FOLDER / SILENCE)
        record["silence"] = {"pct": args.silence_pct, "digital_pct": args.digital_silence_pct,
                             "nonspeech_pct": args.nonspeech_pct, "nonspeech_version": nonspeech.VERSION,
                             "seed": args.seed, "gain_db": list(SILENCE_GAIN_DB),
                             "noise": [str(p.resolve()) for p in paths]}
    if args.extra_counts != SHARE_OF_SPLIT:  # recorded only when not the default: older records stay valid
        record["extra_counts"] = args.extra_counts
    return sorted(clips), record, notes


def png_stem(clip: sources.Clip) -> str:
    """Unknown clips of different words may share a file name: their PNG name keeps the word."""
    # string ops, not pathlib: this runs for every clip, and Path objects cost seconds at 100k clips
    if clip.label == UNKNOWN:
        return re.sub(r"[^\w.-]+", "-", os.path.splitext(clip.source)[0].lstrip("+"))
    return os.path.splitext(clip.source.rsplit("/", 1)[-1])[0]


def audio_location(source: str, render_record: dict | None, images_dir: Path) -> tuple[Path, str] | None:
    """(root, path inside it) of a manifest source that is not under the audio root: a silence crop
    (IMAGES/.openworld/silence/...) or a clip of an --unknown-root ('+unknown<i>/...'); else None."""
    if source.startswith(f"{SILENCE}/"):
        return Path(images_dir) / CROP_FOLDER, source
    match = re.match(r"^\+unknown(\d+)/(.+)$", source)
    roots = ((render_record or {}).get("source") or {}).get("unknown", {}).get("roots", [])
    if match and int(match.group(1)) < len(roots):
        return Path(roots[int(match.group(1))]), match.group(2)
    return None


def target_classes(classes: list[str], render_record: dict | None = None) -> list[str]:
    """The classes that are words to spot: render.json's 'targets' if recorded, else all but the
    extra classes."""
    recorded = ((render_record or {}).get("source") or {}).get("targets")
    if recorded:
        return [c for c in classes if c in recorded]
    return [c for c in classes if c not in EXTRA_CLASSES]
