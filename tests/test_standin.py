"""The Speech Commands stand-in: the dataset's split rule against the official lists, the layout,
growing it, and `--source speechcommands` on it giving the official split."""
from __future__ import annotations

import csv
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import soundfile as sf

from preprocess import prepare, standin, synth

WORDS = ["yes", "no", "up"]
PER_WORD = 16            # 8 speakers; with seed 0 they fall in all three sets (2 outside training)
SPLIT_OF_SET = {"training": "train", "validation": "val", "testing": "test"}
NAME = re.compile(r"[0-9a-f]{8}_nohash_[0-9]+\.wav")
ESPEAK_ONLY = ["--engine", "espeak", "--speaker-transform", "off"]


def make_standin(out: Path, per_word: int = PER_WORD, words=WORDS) -> int:
    # the layout is the subject here: eSpeak alone (its speakers put this seed's ids in every set)
    return synth.main(["--layout", "speechcommands", "--words", *words, "--per-word", str(per_word),
                       "--out", str(out), "--seed", "0", "--workers", "2", "--quiet", *ESPEAK_ONLY])


def read_rows(out: Path) -> list[dict]:
    with open(out / prepare.MANIFEST, newline="") as handle:
        return list(csv.DictReader(handle))


def read_list(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("standin") / "speech_commands"
    assert make_standin(out) == 0
    return out


@pytest.mark.parametrize("lists", [".", "lists_v0.01"])
def test_which_set_reproduces_every_official_list_entry(real_data, lists):
    """The official lists (v0.02: 9,981 + 11,005 entries of 35 words; v0.01) were made by this rule."""
    for set_name, file_name in standin.LISTS.items():
        entries = read_list(real_data / lists / file_name)
        assert len(entries) > 6000
        wrong = [e for e in entries if standin.which_set(e) != set_name]
        assert wrong == [], f"{len(wrong)} of {len(entries)} {file_name} entries elsewhere, e.g. {wrong[:3]}"
    # and the real clips named in no list are training clips by the rule (none of ours: all are test)
    listed = set(read_list(real_data / "testing_list.txt")) | set(read_list(real_data / "validation_list.txt"))
    for path in sorted((real_data / "yes").glob("*.wav"))[:50]:
        assert f"yes/{path.name}" in listed and standin.which_set(path.name) == "testing"


def test_which_set_shares_and_speaker_ids():
    ids = standin.speaker_ids(0, [f"voice{i}" for i in range(4000)])
    assert len(set(ids.values())) == 4000 and all(re.fullmatch(r"[0-9a-f]{8}", v) for v in ids.values())
    # the first k ids do not depend on how many speakers there are
    assert standin.speaker_ids(0, [f"voice{i}" for i in range(10)]) == {f"voice{i}": ids[f"voice{i}"]
                                                                        for i in range(10)}
    shares = {s: sum(standin.which_set(f"{v}_nohash_0.wav") == s for v in ids.values()) / 4000
              for s in ("training", "validation", "testing")}
    assert abs(shares["validation"] - 0.1) < 0.02 and abs(shares["testing"] - 0.1) < 0.02, shares
    assert standin.which_set("a/b/0a7c2a8d_nohash_3.wav") == standin.which_set("0a7c2a8d_nohash_0.wav")


def test_layout_names_noise_and_lists(standin_dir):
    folders = sorted(p.name for p in standin_dir.iterdir() if p.is_dir())
    assert folders == sorted(WORDS + [standin.NOISE_DIR])
    clips = sorted(p.relative_to(standin_dir).as_posix() for w in WORDS for p in (standin_dir / w).iterdir())
    assert len(clips) == len(WORDS) * PER_WORD
    assert all(NAME.fullmatch(c.split("/")[1]) for c in clips), clips[:5]
    # every speaker says every word, each twice (as synth's speakers do)
    speakers = {w: {c.split("/")[1].split("_")[0] for c in clips if c.startswith(w + "/")} for w in WORDS}
    assert speakers["yes"] == speakers["no"] == speakers["up"] and len(speakers["yes"]) == PER_WORD // 2
    for name in standin.NOISE_FILES:
        info = sf.info(str(standin_dir / standin.NOISE_DIR / name))
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 16000 * standin.NOISE_SECONDS)
    lists = {s: read_list(standin_dir / f) for s, f in standin.LISTS.items()}
    assert lists["validation"] and lists["testing"]  # this seed puts speakers in every set
    for set_name, entries in lists.items():
        assert entries == sorted(c for c in clips if standin.which_set(c) == set_name)


def test_speechcommands_source_gives_the_official_split(standin_dir, tmp_path):
    out = tmp_path / "images"
    code = prepare.main(["--source", "speechcommands", "--root", str(standin_dir), "--words", *WORDS,
                         "--out", str(out), "--workers", "2", "--quiet"])
    assert code == 0
    rows = read_rows(out)
    assert len(rows) == len(WORDS) * PER_WORD
    assert {r["source"]: r["split"] for r in rows} == {
        r["source"]: SPLIT_OF_SET[standin.which_set(r["source"])] for r in rows}
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for row in rows:
        assert (out / row["png"]).is_file() and row["png"].startswith(f"{row['split']}/{row['label']}/")


def test_growing_keeps_old_clips_and_matches_a_fresh_run(standin_dir, tmp_path, capsys):
    grown = tmp_path / "grown"
    assert make_standin(grown) == 0
    before = {p: p.stat() for p in grown.rglob("*.wav")}
    assert make_standin(grown, per_word=PER_WORD + 4) == 0
    after = {p: p.stat() for p in grown.rglob("*.wav")}
    assert len(after) == len(before) + 4 * len(WORDS)
    for path, stat in before.items():  # untouched: same inode, same mtime
        assert (after[path].st_ino, after[path].st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), path
    # kept clips must be of the same seed: another seed is refused, nothing is written
    assert synth.main(["--layout", "speechcommands", "--words", *WORDS, "--per-word", str(PER_WORD + 8),
                       "--out", str(grown), "--seed", "1", "--quiet", *ESPEAK_ONLY]) == 2
    assert "made with {'seed': 0, 'duration': 1.0, 'engines': ['espeak']" in capsys.readouterr().err
    # and of the same voices: the default engine mix would add other speakers under other ids
    assert synth.main(["--layout", "speechcommands", "--words", *WORDS, "--per-word", str(PER_WORD + 8),
                       "--out", str(grown), "--seed", "0", "--quiet"]) == 2
    assert "'engines': ['espeak', 'piper']" in capsys.readouterr().err
    assert len(list(grown.rglob("*.wav"))) == len(after)
    fresh = tmp_path / "fresh"
    assert make_standin(fresh, per_word=PER_WORD + 4) == 0
    def contents(folder):
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
                if p.is_file() and p.name != "synth.json"}
    assert contents(grown) == contents(fresh)


def test_all_35_words_by_default(tmp_path):
    out = tmp_path / "all"
    assert synth.main(["--layout", "speechcommands", "--per-word", "1", "--out", str(out), "--quiet",
                       "--workers", "2", *ESPEAK_ONLY]) == 0
    words = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert words == standin.WORDS and len(words) == 35
    assert sum(1 for _ in out.glob("*/*_nohash_0.wav")) == 35


# ---------------------------------------------------------------- re-runs at scale: stat check

_OPENED: list[str] = []
_WATCH: list[str] = []  # path prefix whose opens are recorded (empty: none)


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _WATCH and isinstance(args[0], (str, Path)) and str(args[0]).startswith(_WATCH[0]):
        _OPENED.append(str(args[0]))


def render(root: Path, out: Path, workers: int = 2) -> int:
    return prepare.main(["--source", "speechcommands", "--root", str(root), "--words", *WORDS,
                         "--out", str(out), "--workers", str(workers), "--quiet"])


def backdate(root: Path, seconds: float = 3600) -> None:
    """Give every clip an old mtime, as an extracted download's files have."""
    for path in root.rglob("*.wav"):
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - int(seconds * 1e9)))


def test_noop_rerun_reads_no_audio_and_added_clips_alone_are_rendered(standin_dir, tmp_path, capsys):
    root = tmp_path / "speech_commands"
    shutil.copytree(standin_dir, root)
    backdate(root)
    out = tmp_path / "images"
    assert render(root, out) == 0
    rows = {r["source"]: r for r in read_rows(out)}
    assert all(r["size"] and r["mtime_ns"] for r in rows.values())  # old files: their stat is trusted
    first = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*.png")}
    capsys.readouterr()

    sys.addaudithook(_audit)  # every Python-level open() / os.open() in this process
    _WATCH[:] = [str(root)]
    try:
        assert render(root, out, workers=1) == 0  # in this process, so the hook sees every open
    finally:
        _WATCH.clear()
    assert [p for p in _OPENED if p.endswith(".wav")] == []
    assert "rendered 0, up to date 48, failed 0" in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*.png")} == first

    assert make_standin(root, per_word=PER_WORD + 4) == 0  # 4 more clips of each word
    capsys.readouterr()
    assert render(root, out) == 0
    assert "rendered 12, up to date 48, failed 0" in capsys.readouterr().out
    for path, (data, mtime_ns) in first.items():  # the old images were not written again
        assert (path.read_bytes(), path.stat().st_mtime_ns) == (data, mtime_ns)

    # The proof that is independent of the process: the old clips' bytes are replaced by noise of the
    # same size and their mtimes restored. A run that read them would hash and fail to decode them.
    for source, row in rows.items():
        path = root / source
        path.write_bytes(os.urandom(int(row["size"])))
        os.utime(path, ns=(int(row["mtime_ns"]), int(row["mtime_ns"])))
    assert render(root, out) == 0
    assert "rendered 0, up to date 60, failed 0" in capsys.readouterr().out
    # a changed stat falls back to the hash: this clip is read, and its noise is reported
    touched = sorted(rows)[0]
    os.utime(root / touched, ns=(0, int(rows[touched]["mtime_ns"]) + 1))
    assert render(root, out) == 1
    assert f"{touched}: " in capsys.readouterr().out
