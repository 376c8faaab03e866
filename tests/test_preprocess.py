"""`python -m preprocess`: sources, splits, bad input, incremental and killed runs. Real files throughout."""
from __future__ import annotations

import collections
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from torchvision.datasets import ImageFolder

from conftest import REPO
from preprocess import flags, prepare, sources
from preprocess.render import RenderSettings, read_png_metadata

SR = 16000


def tone(freq=440.0, seconds=1.0, sr=SR, amplitude=0.3):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_dataset(root: Path, per_class=6, classes=("up", "down")) -> Path:
    """root/<class>/<speaker>_nohash_<n>.wav: short tones, a different pitch per class."""
    for c, label in enumerate(classes):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            sf.write(root / label / f"spk{i:02d}_nohash_0.wav", tone(300 + 400 * c + 10 * i, 0.5), SR)
    return root


def run(root, out, *extra, workers=1):
    return prepare.main(["--source", "folder", "--root", str(root), "--out", str(out),
                         "--workers", str(workers), "--quiet", *extra])


def manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def pngs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- split

def test_group_id():
    assert sources.group_id("0a7c2a8d_nohash_3.wav") == "0a7c2a8d"
    assert sources.group_id("my_recording.flac") == "my_recording"


def test_which_set_proportions_on_many_ids():
    counts = collections.Counter(sources.which_set(f"speaker{i}", 10, 20) for i in range(20000))
    assert counts["val"] / 20000 == pytest.approx(0.10, abs=0.01)
    assert counts["test"] / 20000 == pytest.approx(0.20, abs=0.01)
    assert sources.which_set("x", 0, 0) == "train"
    with pytest.raises(ValueError):
        sources.which_set("x", 60, 50)


def test_which_set_on_the_200_real_speakers(real_data):
    """Google's SHA-1 puts all these (official test) speakers in one band; ours spreads them as asked."""
    speakers = {sources.group_id(p.name) for p in real_data.glob("*/*_nohash_*.wav")}
    assert len(speakers) == 200
    counts = collections.Counter(sources.which_set(s, 20, 20) for s in speakers)
    # binomial(200, 0.2) has sd 5.7: 40 +- 15 is a 2.6-sigma band
    assert 25 <= counts["val"] <= 55 and 25 <= counts["test"] <= 55 and counts["train"] >= 90


def test_adding_files_never_moves_old_ones(tmp_path):
    root = make_dataset(tmp_path / "audio", per_class=4)
    before = {c.source: c.split for c in sources.folder_clips(root, val_pct=30, test_pct=30)}
    make_dataset(root, per_class=12)
    after = {c.source: c.split for c in sources.folder_clips(root, val_pct=30, test_pct=30)}
    assert len(after) == 24 and all(after[s] == split for s, split in before.items())


# ---------------------------------------------------------------- real clips

def test_real_images_folder_source(real_images, real_data):
    """The shared fixture: 794 real clips, speaker-hash split, readable by ImageFolder."""
    rows = manifest(real_images)
    assert len(rows) == 794 and all(r["status"] == "ok" for r in rows)
    assert collections.Counter(r["label"] for r in rows) == {"yes": 403, "no": 391}
    split_of_speaker = collections.defaultdict(set)
    for r in rows:
        split_of_speaker[sources.group_id(r["source"])].add(r["split"])
    assert len(split_of_speaker) == 200
    assert all(len(s) == 1 for s in split_of_speaker.values()), "a speaker straddles splits"
    shares = collections.Counter(r["split"] for r in rows)
    assert 0.12 < shares["val"] / 794 < 0.28 and 0.12 < shares["test"] / 794 < 0.28
    record = json.loads((real_images / "render.json").read_text())
    assert record["settings_hash"] == RenderSettings.from_dict(record["settings"]).digest()
    assert record["source"] == {"kind": "folder", "root": str(real_data.resolve())}
    row = rows[0]
    meta = read_png_metadata(real_images / row["png"])
    assert meta == {"source": row["source"], "label": row["label"], "split": row["split"],
                    "settings_hash": record["settings_hash"], "sha256": row["sha256"],
                    **{key: row[key] for key in flags.MANIFEST_FIELDS}}  # the audit's numbers, kept in both
    for split in sources.SPLITS:
        dataset = ImageFolder(str(real_images / split))
        assert dataset.classes == ["no", "yes"] and len(dataset) == shares[split]
        assert dataset[0][0].size == (81, 201)


@pytest.mark.slow
def test_speechcommands_source_puts_every_real_clip_in_test(real_data, tmp_path):
    out = tmp_path / "images"
    code = prepare.main(["--source", "speechcommands", "--root", str(real_data), "--out", str(out),
                         "--workers", "2", "--quiet"])
    assert code == 0
    rows = manifest(out)
    assert len(rows) == 794 and {r["split"] for r in rows} == {"test"}
    assert not any("_background_noise_" in r["source"] for r in rows)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["test"]


def test_speechcommands_v001_lists_and_words(real_data, tmp_path):
    """--version v0.01 with its own lists: the listed clips where the list files say, the others
    (v0.02 speakers that v0.01 never listed) where the dataset's own rule puts their speaker."""
    lists = real_data / "lists_v0.01"
    val = set((lists / "validation_list.txt").read_text().split())
    test = set((lists / "testing_list.txt").read_text().split())
    clips = sources.speechcommands_clips(real_data, ["no"], "v0.01", lists)
    assert len(clips) == 391
    for clip in clips:
        rule = sources.OFFICIAL_SETS[sources.official_which_set(clip.source)]
        assert clip.split == ("val" if clip.source in val else "test" if clip.source in test else rule)
    with pytest.raises(sources.SourceError, match="not Speech Commands v0.01 words"):
        sources.speechcommands_clips(real_data, ["yes", "forward"], "v0.01")
    with pytest.raises(sources.SourceError, match="no folder for the word 'left'"):
        sources.speechcommands_clips(real_data, ["left"])


def test_clips_the_lists_do_not_name_follow_the_datasets_own_rule(real_data, more_words):
    """speech_commands_more is cut from v0.01: some of its clips are in neither v0.02 list, and their
    speakers are validation or test speakers by the dataset's rule (the manifest's hash_split)."""
    import csv
    rows = {r["path"]: r["hash_split"] for r in csv.DictReader(open(more_words / "manifest.csv"))}
    listed = set((real_data / "validation_list.txt").read_text().split())
    listed |= set((real_data / "testing_list.txt").read_text().split())
    clips = sources.speechcommands_clips(more_words, ["yes", "no", "up", "down", "left", "right", "stop"],
                                         "v0.02", real_data)
    assert len(clips) == len(rows) == 4060
    assert [c.split for c in clips] == [{"validation": "val", "testing": "test"}.get(rows[c.source], "train")
                                        for c in clips]
    unlisted = [c for c in clips if c.source not in listed]
    assert sum(c.split != "train" for c in unlisted) > 50  # the case the lists alone would get wrong


def test_bad_options_exit_2_with_a_message(tmp_path, capsys):
    root = make_dataset(tmp_path / "audio", per_class=2)
    assert run(root, tmp_path / "o1", "--words", "up", "sideways") == 2
    assert "sideways" in capsys.readouterr().err
    assert run(tmp_path / "missing", tmp_path / "o2") == 2
    assert "not a directory" in capsys.readouterr().err
    assert run(root, tmp_path / "o3", "--val-pct", "70", "--test-pct", "40") == 2
    assert run(root, tmp_path / "o4", "--db-min", "10", "--db-max", "0") == 2
    assert "db_max" in capsys.readouterr().err


def test_help_explains_the_cli(capsys):
    """In this process (`python -m preprocess` itself runs in the killed-run, shard and hostile tests)."""
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--source", "--root", "--words", "--val-pct", "--feature", "--workers", "--force"):
        assert flag in text


# ---------------------------------------------------------------- folder layouts

def test_presplit_folder_underscore_dirs_words_and_collisions(tmp_path):
    root = tmp_path / "audio"
    for split in ("train", "test"):
        for label in ("cat", "dog", "bird"):
            (root / split / label).mkdir(parents=True)
            sf.write(root / split / label / "a.wav", tone(500), SR)
    sf.write(root / "train" / "cat" / "a.flac", tone(900), SR)  # same stem as a.wav
    (root / "train" / "_background_noise_").mkdir()
    sf.write(root / "train" / "_background_noise_" / "noise.wav", tone(100), SR)
    out = tmp_path / "images"
    assert run(root, out, "--words", "cat", "dog") == 0
    assert sorted(pngs(out)) == ["test/cat/a.png", "test/dog/a.png", "train/cat/a.flac.png",
                                 "train/cat/a.wav.png", "train/dog/a.png"]
    assert {r["split"] for r in manifest(out)} == {"train", "test"}


# ---------------------------------------------------------------- bad input

def write_good_and_bad(root: Path) -> dict[str, str]:
    """Every awkward input the README promises to handle ("Bad input").
    Returns {source: expected reason substring or 'ok'}."""
    good, bad = root / "good", root / "bad"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    expect = {}

    def put(name, data, sr=SR, **kw):
        sf.write(good / name, data, sr, **kw)
        expect[f"good/{name}"] = "ok"
    put("pcm16.wav", tone())
    put("stereo.wav", np.stack([tone(), tone(880)], axis=1))
    put("u8.wav", tone(), subtype="PCM_U8")
    put("pcm24.wav", tone(), subtype="PCM_24")
    put("float.wav", tone(), subtype="FLOAT")
    for rate in (8000, 22050, 44100, 48000):
        put(f"rate{rate}.wav", tone(sr=rate), rate)
    put("short.wav", tone(seconds=0.1))
    put("long.wav", tone(seconds=3.3))
    put("silence.wav", np.zeros(SR, dtype=np.float32))
    put("noise.wav", np.random.default_rng(1).uniform(-0.5, 0.5, SR).astype(np.float32))
    put("one_sample.wav", np.array([0.5], dtype=np.float32))
    put("tone.flac", tone(), format="FLAC")
    put("tone.ogg", tone(), format="OGG")
    sf.write(bad / "truncated_data.wav", tone(), SR)  # cut mid-data: the frames there are kept
    data = (bad / "truncated_data.wav").read_bytes()
    (bad / "truncated_data.wav").write_bytes(data[: len(data) // 2])
    expect["bad/truncated_data.wav"] = "ok"

    (bad / "truncated_header.wav").write_bytes(data[:30])
    expect["bad/truncated_header.wav"] = "cannot decode"
    (bad / "empty.wav").write_bytes(b"")
    expect["bad/empty.wav"] = "empty file"
    (bad / "text.wav").write_text("hello, I am a text file\n" * 50)
    expect["bad/text.wav"] = "cannot decode"
    (bad / "random.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    expect["bad/random.wav"] = "cannot decode"
    nan = tone()
    nan[1000:1010] = np.nan
    sf.write(bad / "nan.wav", nan, SR, subtype="FLOAT")
    expect["bad/nan.wav"] = "NaN"
    inf = tone()
    inf[5] = np.inf
    sf.write(bad / "inf.wav", inf, SR, subtype="FLOAT")
    expect["bad/inf.wav"] = "infinite"
    (bad / "dangling.wav").symlink_to(bad / "does_not_exist.wav")
    expect["bad/dangling.wav"] = "cannot read file"
    return expect


def test_bad_input_is_reported_and_the_run_goes_on(tmp_path, capsys):
    root = tmp_path / "audio"
    expect = write_good_and_bad(root)
    if os.geteuid() != 0:  # root reads anything; elsewhere a chmod-000 file must be reported too
        sf.write(root / "bad" / "locked.wav", tone(), SR)
        (root / "bad" / "locked.wav").chmod(0)
        expect["bad/locked.wav"] = "cannot read file"
    out = tmp_path / "images"
    assert run(root, out, "--val-pct", "0", "--test-pct", "0", workers=2) == 1  # non-zero: some failed
    printed = capsys.readouterr().out
    rows = {r["source"]: r for r in manifest(out)}
    assert set(rows) == set(expect)
    for source, reason in expect.items():
        row = rows[source]
        if reason == "ok":
            assert row["status"] == "ok" and (out / row["png"]).is_file(), source
        else:
            assert row["status"] == "failed" and row["png"] == "", source
            assert reason in row["reason"] and str(root) not in row["reason"], (source, row["reason"])
            assert f"{source}: {row['reason']}" in printed  # the summary names file and reason
            assert not (out / "train" / "bad" / (Path(source).stem + ".png")).exists()
    assert not leftovers(out)
    assert len(pngs(out)) == sum(1 for r in expect.values() if r == "ok")


# ---------------------------------------------------------------- determinism, incremental, kill

def test_deterministic_output(tmp_path):
    root = make_dataset(tmp_path / "audio")
    assert run(root, tmp_path / "a", workers=2) == 0
    assert run(root, tmp_path / "b", workers=1) == 0
    assert pngs(tmp_path / "a") == pngs(tmp_path / "b")
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    for out in (tmp_path / "a", tmp_path / "b"):  # no temp files or worker temp folders left
        assert not leftovers(out) and not (out / prepare.STAGING).exists()


def test_incremental_rerun(tmp_path, capsys):
    root = make_dataset(tmp_path / "audio")
    out = tmp_path / "images"
    assert run(root, out) == 0
    first = pngs(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    capsys.readouterr()

    assert run(root, out) == 0  # nothing changed: nothing rendered
    assert "rendered 0, up to date 12" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes

    changed = root / "up" / "spk01_nohash_0.wav"
    sf.write(changed, tone(2500, 0.5), SR)
    (root / "down" / "spk02_nohash_0.wav").unlink()
    assert run(root, out) == 0
    assert "rendered 1, up to date 10, failed 0, stale PNGs removed 1" in capsys.readouterr().out
    rows = {r["source"]: r for r in manifest(out)}
    assert len(rows) == 11 and "down/spk02_nohash_0.wav" not in rows
    assert pngs(out)[rows["up/spk01_nohash_0.wav"]["png"]] != first[rows["up/spk01_nohash_0.wav"]["png"]]

    (out / "manifest.csv").unlink()  # e.g. a killed run: the PNG metadata still says what is done
    assert run(root, out) == 0
    assert "rendered 0, up to date 11" in capsys.readouterr().out
    assert len(manifest(out)) == 11


def test_other_settings_are_refused_unless_forced(tmp_path, capsys):
    root = make_dataset(tmp_path / "audio", per_class=2)
    out = tmp_path / "images"
    assert run(root, out) == 0
    before = pngs(out)
    assert run(root, out, "--n-fft", "512") == 2
    assert "n_fft 400 -> 512" in capsys.readouterr().err and pngs(out) == before
    assert run(root, out, "--n-fft", "512", "--force") == 0
    record = json.loads((out / "render.json").read_text())
    assert record["settings"]["n_fft"] == 512
    assert all(read_png_metadata(out / p)["settings_hash"] == record["settings_hash"] for p in pngs(out))
    for name in pngs(out):
        with Image.open(out / name) as image:
            assert image.height == 257


@pytest.mark.slow
def test_killed_run_then_rerun_completes(tmp_path):
    root = make_dataset(tmp_path / "audio", per_class=60)
    clean = tmp_path / "clean"
    assert run(root, clean, workers=2) == 0
    out = tmp_path / "images"
    command = [sys.executable, "-m", "preprocess", "--source", "folder", "--root", str(root),
               "--out", str(out), "--workers", "2", "--quiet"]
    proc = subprocess.Popen(command, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list(out.rglob("*.png"))) < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, mid-way
    proc.wait()
    done = len(list(out.rglob("*.png")))
    assert 0 < done < 120, "the run should have been killed mid-way"
    assert not (out / "manifest.csv").exists()
    assert run(root, out, workers=2) == 0
    assert pngs(out) == pngs(clean)
    assert len(manifest(out)) == 120 and not leftovers(out)
    assert not (out / prepare.STAGING).exists()  # the workers' temp folders are gone too


def test_render_flags_reach_the_images(tmp_path):
    root = make_dataset(tmp_path / "audio", per_class=2)
    out = tmp_path / "images"
    assert run(root, out, "--feature", "mel", "--n-mels", "48", "--colormap", "gray", "--duration", "0.5") == 0
    settings = RenderSettings.from_dict(json.loads((out / "render.json").read_text())["settings"])
    assert (settings.feature, settings.n_mels, settings.colormap, settings.duration) == ("mel", 48, "gray", 0.5)
    for name in pngs(out):
        with Image.open(out / name) as image:
            assert image.mode == "L" and (image.height, image.width) == settings.image_size == (48, 41)


def test_bench_prints_one_json_line(tmp_path, capsys):
    from bench import preprocess_speed as bench
    root = make_dataset(tmp_path / "audio", per_class=3)
    assert bench.main([str(root), "--workers", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"clips", "project_clips_per_s", "baseline_clips_per_s", "speedup"}
    assert result["clips"] == 6 and result["project_clips_per_s"] > 0 and result["baseline_clips_per_s"] > 0
    assert result["speedup"] == pytest.approx(result["project_clips_per_s"] / result["baseline_clips_per_s"], rel=0.05)


def test_foreign_pngs_are_left_alone(tmp_path, capsys):
    root = make_dataset(tmp_path / "audio", per_class=2)
    out = tmp_path / "images"
    (out / "train" / "up").mkdir(parents=True)
    Image.new("L", (4, 4)).save(out / "train" / "up" / "holiday.png")
    assert run(root, out, "--force") == 0
    assert (out / "train" / "up" / "holiday.png").is_file()
    assert "train/up/holiday.png: not made by preprocess, left alone" in capsys.readouterr().out


def test_a_clip_the_render_pool_never_answers_is_a_named_failure(tmp_path, monkeypatch, capsys):
    """If the worker pool ever ends without a result for some clip, that clip is failed by name in the
    manifest and the exit status is 1: no KeyError from the summary, no row missing from the manifest."""
    root, out = make_dataset(tmp_path / "data", per_class=3), tmp_path / "images"
    real_run_tasks = prepare.run_tasks

    def losing_one(tasks, *args, **kwargs):
        results = list(real_run_tasks(tasks, *args, **kwargs))
        lost = max(results, key=lambda result: result[0])  # the last clip's answer never arrives
        yield from (result for result in results if result is not lost)

    monkeypatch.setattr(prepare, "run_tasks", losing_one)
    assert run(root, out) == 1
    rows = manifest(out)
    failed = [row for row in rows if row["status"] == "failed"]
    assert len(rows) == 6 and len(failed) == 1
    assert "no result came back from the render workers" in failed[0]["reason"]
    assert failed[0]["source"] in capsys.readouterr().out
