"""Standard Speech Commands set-ups: `python -m preprocess --source speechcommands --setup NAME`.

The set-ups papers and leaderboards compare against, each one flag instead of a word list and shares:

    12-class   yes no up down left right on off stop go, plus 'unknown' (every other word of the
               dataset: 25 in v0.02, 20 in v0.01) and 'silence' (crops of _background_noise_), with
               the counts of Google's speech_commands trainer (input_data.py, prepare_data_index):
               per split, unknown = silence = ceil(10 % of the split's target clips)
    35-words   every v0.02 word as its own class (no extra classes)
    30-words   every v0.01 word as its own class (with --version v0.01)

Any other subset is `--words W ...` (with --unknown-pct / --silence-pct for the extra classes).
A set-up only fills in options: the clips and the split come from the official lists as for any
`--words`, and the extra classes from preprocess/openworld.py (the one implementation of them).
Google picks the unknown clips by a seeded shuffle of all of them (so frequent words dominate);
openworld takes the words in turn (every word used evenly): the counts are Google's, the pick ours;
its silence class is openworld's too (noise crops, digital silence and generated non-speech).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from preprocess import openworld, sources

COMMANDS = "yes no up down left right on off stop go".split()   # the 10 targets of the 12-class task
GOOGLE_SHARE_PCT = 10.0   # input_data.py defaults: silence_percentage = unknown_percentage = 10
ALL_WORDS = {"35-words": "v0.02", "30-words": "v0.01"}          # set-up -> the version it is
SETUPS = ("12-class", *ALL_WORDS)


class SetupError(sources.SourceError):
    """A set-up combined with options it fixes itself, or a root that lacks its words."""


def add_argument(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--setup", choices=SETUPS,
        help="a standard Speech Commands benchmark instead of --words: "
             "12-class = yes no up down left right on off stop go + 'unknown' (all other words of "
             "the dataset) + 'silence' (_background_noise_ crops), per split ceil(10 %% of the "
             "target clips) each, as Google's speech_commands trainer; 35-words = all v0.02 words; "
             "30-words = all v0.01 words (--version v0.01). Official split lists; every word folder "
             "of the version must exist")


def apply(args: argparse.Namespace) -> None:
    """Fill in the options the set-up fixes (words, extra classes and their counts); refuse the
    options that would change it."""
    setup = getattr(args, "setup", None)
    if setup is None:
        return
    if args.source != "speechcommands":
        raise SetupError(f"--setup {setup} is a Speech Commands set-up: use it with "
                         f"--source speechcommands (a folder source takes --words)")
    fixed = [f"--{name.replace('_', '-')}" for name in ("words", "unknown_words", "unknown_root", "unknown_pct",
                                                         "silence_pct") if getattr(args, name)]
    if fixed:
        raise SetupError(f"--setup {setup} fixes the classes and their counts itself; leave out "
                         f"{' '.join(fixed)} (or leave out --setup and give --words and the shares)")
    if setup in ALL_WORDS:
        if args.version != ALL_WORDS[setup]:
            right = next(name for name, version in ALL_WORDS.items() if version == args.version)
            raise SetupError(f"--setup {setup} is the word set of Speech Commands {ALL_WORDS[setup]}: "
                             f"add --version {ALL_WORDS[setup]}, or use --setup {right} for {args.version}")
        args.words = list(sources.SPEECH_COMMANDS_WORDS[args.version])
        return
    args.words = list(COMMANDS)
    args.unknown_pct = args.silence_pct = GOOGLE_SHARE_PCT
    args.extra_counts = openworld.SHARE_OF_TARGETS


def check_root(args: argparse.Namespace, root: Path) -> None:
    """Every word folder of the version must be there: the set-up's classes (12-class: its unknown
    class too) are defined by the whole dataset, and a missing folder would silently change them."""
    setup = getattr(args, "setup", None)
    if setup is None:
        return
    missing = [w for w in sources.SPEECH_COMMANDS_WORDS[args.version] if not (Path(root) / w).is_dir()]
    if missing:
        raise SetupError(f"{root}: --setup {setup} needs every Speech Commands {args.version} word "
                         f"folder; missing: {' '.join(missing)} (is this a partial copy? --words W ... "
                         f"renders a subset)")


def record(args: argparse.Namespace, source: dict) -> dict:
    """The render.json source record, with the set-up named when one was used."""
    setup = getattr(args, "setup", None)
    return dict(source, setup=setup) if setup else source
