"""Open-world classes: 'unknown' and 'silence' in preprocess, synth's unknown words, class balancing,
prediction and the scanner treating the extra classes as non-events.

Data: the shared real clips (yes/no, other words, _background_noise_), eSpeak NG speech and generated
noise files. No training: models here are small real networks with made-up weights where only the
handling of their answers is tested.
"""
from __future__ import annotations

import collections
import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from preprocess import openworld, prepare, silence, sources, synth, wordlist
from preprocess.render import RenderSettings
from train import balance, detect, predict
from train.checkpoint import atomic_torch_save, make_checkpoint
from train.models import DEFAULT_ARCH, build_model

torch.set_num_threads(1)
CLASSES = ["no", "silence", "unknown", "yes"]


def rows(images: Path) -> list[dict]:
    with open(images / "manifest.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["status"] == "ok"]


def speaker(row: dict) -> str:
    return sources.group_id(Path(row["source"]).name)


@pytest.fixture(scope="module")
def open_images(real_data, other_words, tmp_path_factory) -> Path:
    """Real yes/no + unknown from the other-words folder (25 %) + silence (20 %), speaker-hash split."""
    out = tmp_path_factory.mktemp("open") / "images"
    code = prepare.main(["--source", "folder", "--root", str(real_data), "--words", "yes", "no",
                         "--unknown-root", str(other_words), "--unknown-pct", "25", "--silence-pct", "20",
                         "--val-pct", "20", "--test-pct", "20", "--out", str(out), "--workers", "2",
                         "--quiet"])
    assert code == 0
    return out


# ---------------------------------------------------------------- preprocess: shares and splits

def test_extra_classes_have_their_share_of_every_split(open_images):
    table = collections.Counter((r["split"], r["label"]) for r in rows(open_images))
    for split in sources.SPLITS:
        total = sum(table[(split, c)] for c in CLASSES)
        assert table[(split, "unknown")] / total == pytest.approx(0.25, abs=0.01)
        assert table[(split, "silence")] / total == pytest.approx(0.20, abs=0.01)
        assert table[(split, "yes")] > 0 and table[(split, "no")] > 0
        crops = [r["source"] for r in rows(open_images) if r["split"] == split and r["label"] == "silence"]
        generated = sum("/nonspeech-" in s for s in crops)
        assert generated == round(len(crops) * silence.NONSPEECH_PCT / 100)  # its share of silence
    record = json.loads((open_images / "render.json").read_text())["source"]
    assert record["targets"] == ["no", "yes"]
    assert record["silence"]["nonspeech_pct"] == silence.NONSPEECH_PCT
    assert record["unknown"]["words"] == ["bed", "cat", "happy"]
    # every word is used in every split, in turn (not all the clips of one word first)
    words = collections.Counter((r["split"], r["source"].split("/")[1]) for r in rows(open_images)
                                if r["label"] == "unknown")
    for split in sources.SPLITS:
        counts = [words[(split, w)] for w in ("bed", "cat", "happy")]
        assert max(counts) - min(counts) <= 1


def test_no_speaker_is_in_two_splits_across_both_shared_folders(open_images):
    splits = collections.defaultdict(set)
    for row in rows(open_images):
        if row["label"] != "silence":
            splits[speaker(row)].add(row["split"])
    crossing = {s: v for s, v in splits.items() if len(v) > 1}
    assert not crossing
    unknown_speakers = {speaker(r) for r in rows(open_images) if r["label"] == "unknown"}
    target_speakers = {speaker(r) for r in rows(open_images) if r["label"] in ("yes", "no")}
    assert len(unknown_speakers & target_speakers) > 20  # the same people are in both folders


def test_speechcommands_source_puts_unknown_speakers_on_their_official_side(real_data, other_words, tmp_path):
    out = tmp_path / "images"
    code = prepare.main(["--source", "speechcommands", "--root", str(real_data), "--unknown-root",
                         str(other_words), "--unknown-pct", "30", "--out", str(out), "--workers", "2",
                         "--quiet"])
    assert code == 0
    official = {}
    for name, split in (("validation_list.txt", "val"), ("testing_list.txt", "test")):
        for line in (real_data / name).read_text().split():
            official[sources.group_id(Path(line).name)] = split
    unknown = [r for r in rows(out) if r["label"] == "unknown"]
    assert unknown
    for row in unknown:
        assert row["split"] == official.get(speaker(row), "train")


def test_noise_crops_of_different_splits_never_overlap(real_data):
    paths, problems = silence.noise_files([real_data / silence.NOISE_FOLDER])
    assert len(paths) == 6 and not problems
    regions = silence.noise_regions(paths, lambda key: sources.which_set(key, 20, 20))
    crops, notes = silence.plan_crops(regions, {"train": 300, "val": 100, "test": 100}, seed=3)
    assert not notes
    assert sum(c.region is None and c.nonspeech is None for c in crops) == 30 + 10 + 10  # digital, 10 %
    assert sum(c.nonspeech is not None for c in crops) == 75 + 25 + 25  # generated non-speech, 25 %
    spans = collections.defaultdict(list)
    for crop in crops:
        if crop.region is None:
            continue
        region = crop.region
        assert region.split == crop.split
        assert region.start <= crop.offset and crop.offset + region.rate <= region.end
        spans[region.name].append((crop.offset, crop.offset + region.rate, crop.split))
    for name, items in spans.items():
        for a0, a1, sa in items:
            for b0, b1, sb in items:
                assert sa == sb or a1 <= b0 or b1 <= a0, f"{name}: {sa} and {sb} crops overlap"
    # all three splits get crops of several recordings, and the plan is a pure function of its inputs
    assert {c.split for c in crops if c.region} == set(sources.SPLITS)
    again, _ = silence.plan_crops(regions, {"train": 300, "val": 100, "test": 100}, seed=3)
    assert again == crops


def test_silence_crops_are_written_deterministically_at_their_gain(tmp_path):
    rate = 8000
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, rate * 20).astype(np.float32)
    folder = tmp_path / "noise"
    folder.mkdir()
    sf.write(folder / "hum.wav", noise, rate, subtype="FLOAT")
    regions = silence.noise_regions([folder / "hum.wav"], lambda key: "train")
    crops, _ = silence.plan_crops(regions, {"train": 5, "val": 0, "test": 0}, seed=0, digital_pct=20,
                                    nonspeech_pct=0)
    clips = silence.write_crops(crops, tmp_path / "crops")
    assert [c.label for c in clips] == ["silence"] * 5
    digital, *noisy = [sf.read(c.path)[0] for c in clips]
    assert not np.any(digital)
    for crop, wave in zip(crops[1:], noisy):
        expected = noise[crop.offset:crop.offset + rate] * 10 ** (crop.gain_db / 20)
        np.testing.assert_allclose(wave, expected, atol=1e-6)
    first = [c.path.read_bytes() for c in clips]
    silence.write_crops(crops, tmp_path / "crops")
    assert [c.path.read_bytes() for c in clips] == first


# ---------------------------------------------------------------- bad options

@pytest.mark.parametrize("extra, message", [
    (["--words", "yes", "no", "--unknown-pct", "120"], "between 0 and 100"),
    (["--words", "yes", "no", "--unknown-pct", "60", "--silence-pct", "40"], "leave no room"),
    (["--unknown-pct", "20"], "needs --words"),
    (["--words", "yes", "maybe", "--unknown-pct", "20"], "maybe"),
    (["--words", "yes", "no", "--noise-dir", "."], "need --unknown-pct or --silence-pct"),
    (["--words", "yes", "unknown", "--silence-pct", "10"], "extra classes"),
    (["--words", "yes", "no", "--unknown-pct", "10"], "no clips of non-target words"),
    (["--words", "yes", "no", "--silence-pct", "10", "--nonspeech-pct", "120"], "between 0 and 100"),
    (["--words", "yes", "no", "--silence-pct", "10", "--digital-silence-pct", "90", "--nonspeech-pct", "20"],
     "total 100 or less"),
])
def test_bad_open_world_options_are_clear_errors(real_data, tmp_path, capsys, extra, message):
    code = prepare.main(["--source", "folder", "--root", str(real_data), "--out", str(tmp_path / "o"),
                         "--quiet", *extra])
    assert code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- synthetic unknown words

def test_unknown_word_list_never_holds_a_target_or_its_homophones():
    assert len(wordlist.COMMON_WORDS) >= 300 and len(set(wordlist.LEXICON)) == len(wordlist.LEXICON)
    for targets in (["yes", "no"], ["go", "stop"], ["right", "four", "two"], ["cat"]):
        words = set(wordlist.unknown_words(targets))
        assert not words & {*targets, *wordlist.homophones(targets)}
        assert len(words) > 300
    assert "know" in wordlist.homophones(["no"]) and "write" in wordlist.homophones(["right"])
    assert {"go", "zero", "bed", "yeah", "nope"} <= set(wordlist.unknown_words(["yes", "no"]))  # hard negs
    assert "bed" not in wordlist.unknown_words(["yes", "no"], exclude=["bed"])


def test_synth_writes_an_unknown_class_that_preprocess_samples(tmp_path):
    out = tmp_path / "synth"
    assert synth.main(["--words", "yes", "no", "--per-word", "12", "--unknown", "30", "--out", str(out),
                       "--workers", "1", "--quiet"]) == 0
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(folders) == 32 and "yes" in folders and "no" in folders
    others = [f for f in folders if f not in ("yes", "no")]
    assert not set(others) & set(wordlist.homophones(["yes", "no"]))
    info = json.loads((out / "synth.json").read_text())
    assert info["unknown"] == 30 and len(info["unknown_words"]) == 30
    assert sum(w in info["sound_alikes"] for w in others) == 9  # SOUND_ALIKE_SHARE of 30
    images = tmp_path / "images"
    assert prepare.main(["--source", "folder", "--root", str(out), "--words", "yes", "no", "--unknown-pct",
                         "30", "--silence-pct", "20", "--digital-silence-pct", "100", "--val-pct", "0",
                         "--test-pct", "0", "--out", str(images), "--workers", "1", "--quiet"]) == 0
    labels = collections.Counter(r["label"] for r in rows(images))
    assert labels == {"yes": 12, "no": 12, "unknown": 14, "silence": 10}  # 30 % and 20 % of 48
    # the same inputs and seed pick the same clips and crops, whatever the output folder
    again = tmp_path / "again"
    assert prepare.main(["--source", "folder", "--root", str(out), "--words", "yes", "no", "--unknown-pct",
                         "30", "--silence-pct", "20", "--digital-silence-pct", "100", "--val-pct", "0",
                         "--test-pct", "0", "--out", str(again), "--workers", "1", "--quiet"]) == 0
    assert {(r["png"], r["sha256"]) for r in rows(again)} == {(r["png"], r["sha256"]) for r in rows(images)}


def test_silence_crops_are_the_same_bytes_on_every_run(tmp_path):
    """The crop files are hashed into the manifest: a float WAV's time-stamped PEAK chunk made two runs
    a second apart disagree."""
    noise = tmp_path / "noise.wav"
    sf.write(noise, np.random.default_rng(0).standard_normal(16000 * 10).astype(np.float32) * 0.1, 16000)
    regions = [silence.NoiseRegion(noise, noise.name, 16000, 0, 16000 * 10, "train")]
    crops, _ = silence.plan_crops(regions, {"train": 4, "val": 0, "test": 0}, seed=0, digital_pct=50)
    first = silence.write_crops(crops, tmp_path / "first")
    time.sleep(1.1)
    second = silence.write_crops(crops, tmp_path / "second")
    assert [c.path.read_bytes() for c in first] == [c.path.read_bytes() for c in second]


# ---------------------------------------------------------------- training: class balance

def test_loss_weights_and_sampler_balance_the_classes():
    targets = [0] * 600 + [1] * 300 + [2] * 100
    weights = balance.loss_weights(targets, 3)
    assert weights.tolist() == pytest.approx([1000 / 1800, 1000 / 900, 1000 / 300])
    assert balance.loss_weights([0, 1, 2, 0, 1, 2], 3).tolist() == pytest.approx([1.0, 1.0, 1.0])
    draws = list(balance.balanced_sampler(targets, 3, torch.Generator().manual_seed(0)))
    assert len(draws) == len(targets)
    shares = collections.Counter(targets[i] for i in draws)
    for c in range(3):
        assert shares[c] / len(draws) == pytest.approx(1 / 3, abs=0.05)
    again = list(balance.balanced_sampler(targets, 3, torch.Generator().manual_seed(0)))
    assert again == draws


# ---------------------------------------------------------------- prediction and the scanner

@pytest.fixture
def open_model(tmp_path) -> Path:
    settings = {"sample_rate": 16000, "duration": 1.0, "feature": "spectrogram", "n_fft": 400,
                "hop_length": 200, "n_mels": 64, "n_mfcc": 40, "db_min": None, "db_max": None,
                "colormap": "viridis", "version": 1}
    torch.manual_seed(0)
    model = build_model(DEFAULT_ARCH, 4, (3, 201, 81))
    path = tmp_path / "model.pt"
    atomic_torch_save(make_checkpoint(model.eval(), DEFAULT_ARCH, CLASSES, (3, 201, 81), settings,
                                      targets=["no", "yes"]), path)
    return path


def test_unknown_and_silence_are_answers_that_are_not_targets(open_model):
    predictor = predict.Predictor(open_model)
    assert predictor.targets == ["no", "yes"]
    for index, name in enumerate(CLASSES):
        logits = torch.full((4,), -3.0)
        logits[index] = 3.0
        row = predictor.prediction("clip.wav", logits, threshold=0.0, top_k=2).to_dict()
        assert row["label"] == name and row["confidence"] > 0.9
        assert row["target"] is (name in ("yes", "no"))
    low = predictor.prediction("clip.wav", torch.zeros(4), threshold=0.5, top_k=1).to_dict()
    assert low["label"] == "unknown" and low["target"] is False


def test_old_checkpoints_without_targets_treat_the_extra_classes_as_non_targets(open_model):
    ckpt = torch.load(open_model, weights_only=True)
    del ckpt["targets"]
    atomic_torch_save(ckpt, open_model)
    assert predict.Predictor(open_model).targets == ["no", "yes"]


def test_scanner_reports_target_words_only():
    starts = np.arange(12) * 0.25
    smoothed = np.full((12, 4), 0.02)
    smoothed[0:4, 2] = 0.94   # 'unknown' for a second
    smoothed[5:7, 1] = 0.94   # then 'silence'
    smoothed[8:11, 3] = 0.94  # then 'yes'
    found = detect.find_detections(starts, smoothed, CLASSES, 1.0, threshold=0.7, targets=["no", "yes"])
    assert [d.label for d in found] == ["yes"]
    every = detect.find_detections(starts, smoothed, CLASSES, 1.0, threshold=0.7)
    assert [d.label for d in every] == ["unknown", "silence", "yes"]


def test_default_gate_and_hop_depend_on_the_silence_class(open_model, tmp_path):
    opened = predict.Predictor(open_model)
    assert opened.default_gate_db() == detect.GATE_WITH_SILENCE_DB
    assert opened.default_hop_s() == detect.HOP_WITH_SILENCE_S < detect.DEFAULT_HOP_S
    ckpt = torch.load(open_model, weights_only=True)
    model = build_model(DEFAULT_ARCH, 2, (3, 201, 81))
    closed_path = tmp_path / "closed.pt"
    atomic_torch_save(make_checkpoint(model.eval(), DEFAULT_ARCH, ["no", "yes"], (3, 201, 81), ckpt["render"]),
                      closed_path)
    closed = predict.Predictor(closed_path)
    assert closed.default_gate_db() == detect.ACTIVITY_MARGIN_DB
    assert closed.default_hop_s() == detect.DEFAULT_HOP_S
    # the scan (library and command line) uses the model's hop unless one is given
    wave = np.random.default_rng(0).normal(0, 0.01, 3 * 16000).astype(np.float32)
    for predictor, hop in ((opened, detect.HOP_WITH_SILENCE_S), (closed, detect.DEFAULT_HOP_S)):
        assert np.allclose(np.diff(detect.scan(predictor, "w", wave).starts_s), hop)
        assert predict.Options().hop(predictor) == hop
        assert predict.Options(hop_s=0.5).hop(predictor) == 0.5
        assert np.allclose(np.diff(detect.scan(predictor, "w", wave, hop_s=0.5).starts_s), 0.5)
    # a window shorter than the default hop: scanned every window, not refused; a longer --hop still is
    short_settings = dict(ckpt["render"], duration=0.1)
    short_path = tmp_path / "short.pt"
    width = RenderSettings.from_dict(short_settings).image_size[1]
    atomic_torch_save(make_checkpoint(build_model(DEFAULT_ARCH, 4, (3, 201, width)).eval(), DEFAULT_ARCH, CLASSES,
                                      (3, 201, width), short_settings, targets=["no", "yes"]), short_path)
    short = predict.Predictor(short_path)
    assert short.default_hop_s() == 0.1
    predict.Options().check(short)
    assert np.allclose(np.diff(detect.scan(short, "w", wave).starts_s), 0.1)
    with pytest.raises(ValueError, match="--hop 0.2 is longer than the model's window"):
        predict.Options(hop_s=0.2).check(short)


def test_balance_modes_change_the_loss_or_the_loader_and_auto_leaves_balanced_sets_alone():
    from types import SimpleNamespace

    def training(targets):
        dataset = SimpleNamespace(targets=targets)
        loader = torch.utils.data.DataLoader(list(range(len(targets))), batch_size=4, drop_last=True)
        return SimpleNamespace(datasets={"train": dataset}, classes=["a", "b"], world_size=1,
                               args=SimpleNamespace(label_smoothing=0.1), criterion="plain",
                               train_loader=loader, train_generator=torch.Generator(),
                               loader_options={})

    balanced, skewed = [0, 1] * 10, [0] * 16 + [1] * 4
    run = training(balanced)
    balance.apply(run, "auto")
    assert run.criterion == "plain" and not isinstance(run.train_loader.sampler,
                                                       torch.utils.data.WeightedRandomSampler)
    run = training(skewed)
    balance.apply(run, "loss")
    assert run.criterion.weight.tolist() == pytest.approx([20 / 32, 20 / 8])
    run = training(skewed)
    balance.apply(run, "auto")
    expected = {"sampler": torch.utils.data.WeightedRandomSampler}.get(balance.MEASURED)
    if expected is not None:
        assert isinstance(run.train_loader.sampler, expected) and run.train_loader.batch_size == 4
    else:
        assert run.criterion.weight is not None


def test_report_finds_the_audio_of_crops_and_extra_roots(tmp_path):
    record = {"source": {"root": "/data", "unknown": {"roots": ["/more/words"]}}}
    assert openworld.audio_location("silence/x_1_-3.0dB.wav", record, tmp_path) == \
        (tmp_path / ".openworld", "silence/x_1_-3.0dB.wav")
    assert openworld.audio_location("+unknown0/bed/a_nohash_0.wav", record, tmp_path) == \
        (Path("/more/words"), "bed/a_nohash_0.wav")
    assert openworld.audio_location("yes/a_nohash_0.wav", record, tmp_path) is None
