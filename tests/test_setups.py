"""Standard Speech Commands set-ups (`--setup 12-class | 35-words | 30-words`) on the stand-in:
the class folders, Google's counts of unknown and silence, the official split, clear refusals."""
from __future__ import annotations

import collections
import csv
import math
import os
from pathlib import Path

import pytest

from preprocess import openworld, prepare, setups, sources, standin, synth

PER_WORD = 16   # 8 speakers; seed 0: 6 in training, 1 in validation, 1 in testing (12 / 2 / 2 clips a word)
SPLIT_OF_SET = {"training": "train", "validation": "val", "testing": "test"}
EXTRA = [openworld.UNKNOWN, openworld.SILENCE]


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory) -> Path:
    """All 35 v0.02 word folders, _background_noise_ and the official-rule lists (560 clips, ~5 s)."""
    out = tmp_path_factory.mktemp("setups") / "speech_commands"
    assert synth.main(["--layout", "speechcommands", "--per-word", str(PER_WORD), "--out", str(out),
                       "--seed", "0", "--workers", "2", "--quiet", "--engine", "espeak",
                       "--speaker-transform", "off"]) == 0  # the layout is the subject: eSpeak alone is faster
    return out


def root_view(standin_dir: Path, root: Path, drop: set[str] = frozenset(),
              omit: set[str] = frozenset()) -> Path:
    """A root that links to the stand-in, without the word folders `omit` and the clips `drop`."""
    root.mkdir()
    for entry in standin_dir.iterdir():
        if entry.name in omit:
            continue
        touched = [d for d in drop if d.startswith(entry.name + "/")]
        if not touched:
            os.symlink(entry, root / entry.name)
            continue
        (root / entry.name).mkdir()
        for clip in entry.iterdir():
            if f"{entry.name}/{clip.name}" not in drop:
                os.symlink(clip, root / entry.name / clip.name)
    return root


def official_split(source: str) -> str:
    return SPLIT_OF_SET[standin.which_set(source)]


def rows_of(out: Path) -> list[dict]:
    with open(out / prepare.MANIFEST, newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["status"] == "ok"]


def clips_in(standin_dir: Path, word: str, split: str) -> list[str]:
    return sorted(f"{word}/{p.name}" for p in (standin_dir / word).iterdir()
                  if official_split(f"{word}/{p.name}") == split)


def test_12_class_has_googles_counts_on_the_official_split(standin_dir, tmp_path, capsys):
    # targets per split 113 / 19 / 20, none a multiple of 10: ceil (Google) and round differ on 113
    drop = set(clips_in(standin_dir, "yes", "train")[:4] + clips_in(standin_dir, "no", "train")[:3]
               + clips_in(standin_dir, "up", "val")[:1])
    root = root_view(standin_dir, tmp_path / "root", drop=drop)
    out = tmp_path / "images"
    assert prepare.main(["--source", "speechcommands", "--root", str(root), "--setup", "12-class",
                         "--out", str(out), "--workers", "2", "--quiet"]) == 0
    rows = rows_of(out)
    targets = collections.Counter(r["split"] for r in rows if r["label"] in setups.COMMANDS)
    assert targets == {"train": 113, "val": 19, "test": 20}
    want = {"train": 12, "val": 2, "test": 2}     # ceil(10 % of 113, 19, 20): input_data.py's rule
    assert want == {s: math.ceil(n * 10 / 100) for s, n in targets.items()}
    for split in sources.SPLITS:
        folders = sorted(p.name for p in (out / split).iterdir())
        assert folders == sorted(setups.COMMANDS + EXTRA), split
        for extra in EXTRA:
            assert len(list((out / split / extra).glob("*.png"))) == want[split], (split, extra)
    # every target and every unknown clip on its speaker's official side; unknown = non-target words
    unknown = [r for r in rows if r["label"] == openworld.UNKNOWN]
    for row in rows:
        if row["label"] != openworld.SILENCE:
            assert row["split"] == official_split(row["source"]), row
    words = {r["source"].split("/")[0] for r in unknown}
    assert not words & set(setups.COMMANDS) and len(words) >= 12  # taken in turn: many words
    assert words <= set(sources.SPEECH_COMMANDS_WORDS["v0.02"]) - set(setups.COMMANDS)
    record = prepare.read_render_record(out)["source"]
    assert record["setup"] == "12-class" and record["extra_counts"] == openworld.SHARE_OF_TARGETS
    assert len(record["unknown"]["words"]) == 25 and sorted(record["targets"]) == sorted(setups.COMMANDS)
    # the same flag again: nothing to do
    capsys.readouterr()
    assert prepare.main(["--source", "speechcommands", "--root", str(root), "--setup", "12-class",
                         "--out", str(out), "--workers", "2", "--quiet"]) == 0
    assert f"rendered 0, up to date {len(rows)}," in capsys.readouterr().out  # 152 targets + 2 x 16


def test_plain_shares_are_of_the_split_and_the_setup_counts_are_of_the_targets():
    """--unknown-pct 10 --silence-pct 10 alone make each extra class 10 % of the split's images
    (12.5 % of its targets); the set-up's rule is Google's 10 % of the targets, rounded up."""
    targets = [sources.Clip(f"w/{i}.wav", "w", "train", Path("x")) for i in range(113)]
    assert openworld.split_counts(targets, 10, 10)["train"] == 14                      # round(113 / 8)
    assert openworld.split_counts(targets, 10, 10, openworld.SHARE_OF_TARGETS)["train"] == 12  # ceil(11.3)


@pytest.mark.parametrize("setup, version, words", [("35-words", "v0.02", 35), ("30-words", "v0.01", 30)])
def test_all_words_setups_make_every_word_a_class(standin_dir, tmp_path, setup, version, words):
    out = tmp_path / "images"
    assert prepare.main(["--source", "speechcommands", "--root", str(standin_dir), "--setup", setup,
                         "--version", version, "--out", str(out), "--workers", "2", "--quiet"]) == 0
    expected = sorted(sources.SPEECH_COMMANDS_WORDS[version])
    assert len(expected) == words
    for split in sources.SPLITS:
        assert sorted(p.name for p in (out / split).iterdir()) == expected
    rows = rows_of(out)
    assert len(rows) == words * PER_WORD
    assert all(r["split"] == official_split(r["source"]) for r in rows)
    assert prepare.read_render_record(out)["source"]["setup"] == setup


@pytest.mark.parametrize("extra, omit, message", [
    (["--setup", "12-class"], {"cat", "visual"},
     "--setup 12-class needs every Speech Commands v0.02 word folder; missing: cat visual"),
    (["--setup", "12-class"], {"up"}, "missing: up"),
    (["--setup", "35-words"], {"learn"}, "missing: learn"),
    (["--setup", "12-class", "--words", "yes", "no"], set(), "leave out --words"),
    (["--setup", "12-class", "--unknown-pct", "20"], set(), "leave out --unknown-pct"),
    (["--setup", "12-class", "--silence-pct", "5"], set(), "leave out --silence-pct"),
    (["--setup", "30-words"], set(), "add --version v0.01, or use --setup 35-words for v0.02"),
    (["--setup", "35-words", "--version", "v0.01"], set(), "add --version v0.02"),
])
def test_bad_setups_are_clear_errors(standin_dir, tmp_path, capsys, extra, omit, message):
    root = root_view(standin_dir, tmp_path / "root", omit=omit)
    out = tmp_path / "images"
    assert prepare.main(["--source", "speechcommands", "--root", str(root), *extra, "--out", str(out),
                         "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert not list(out.rglob("*.png"))


def test_setup_needs_the_speechcommands_source(standin_dir, tmp_path, capsys):
    assert prepare.main(["--source", "folder", "--root", str(standin_dir), "--setup", "12-class",
                         "--out", str(tmp_path / "images"), "--quiet"]) == 2
    assert "use it with --source speechcommands" in capsys.readouterr().err


@pytest.mark.parametrize("lists, test_set_size", [(".", 4890), ("lists_v0.01", 3081)])
def test_googles_rule_on_the_official_lists_gives_the_published_test_set(real_data, lists, test_set_size):
    """The 12-class test split of the real dataset: the official testing list's target clips plus
    ceil(10 %) unknown and silence each = the size of Google's companion test set (v0.02: 4,890
    clips, of which 419 yes and 405 no, as in ../shared; v0.01: 3,081)."""
    entries = (real_data / lists / "testing_list.txt").read_text().split()
    targets = [sources.Clip(e, e.split("/")[0], "test", Path(e)) for e in entries
               if e.split("/")[0] in setups.COMMANDS]
    counts = openworld.split_counts(targets, setups.GOOGLE_SHARE_PCT, setups.GOOGLE_SHARE_PCT,
                                    openworld.SHARE_OF_TARGETS)
    assert len(targets) + 2 * counts["test"] == test_set_size
