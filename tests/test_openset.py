"""train.openset and its parts: folds by speaker and by word over several folders (train/folds.py),
the test-only recordings (train/recordings.py), the DET sweep (train/det_curve.py). (The benchmark's
training runs are many minutes long: docs/benchmarks.md.)"""
from __future__ import annotations

import collections
import dataclasses
import itertools

import numpy as np
import pytest
import soundfile as sf

from preprocess import sources
from preprocess.cli import SpecVisionError
from preprocess.render import RenderSettings, load_audio
from train import det_curve, detect, folds, openset, recordings
from train.predict import Predictor

from conftest import first_clips


@pytest.fixture(scope="module")
def corpus(real_data, more_words, other_words):
    return folds.collect([real_data, more_words, other_words], ["yes", "no"])


def test_every_speaker_is_on_one_side_in_all_folders_and_every_held_out_word_stays_out(corpus):
    k = 5
    assert corpus.words == ["bed", "cat", "down", "happy", "left", "right", "stop", "up"]
    tested, held = collections.Counter(), collections.Counter()
    for fold in range(k):
        material = folds.fold_material(corpus, fold, k)
        sides = collections.defaultdict(set)
        for kind in (material.targets, material.others):
            for split, clips in kind.items():
                for _, path in clips:
                    sides[sources.group_id(path.name)].add(split)
        for _, path in material.unseen:
            sides[sources.group_id(path.name)].add("test")
        assert all(len(s) == 1 for s in sides.values())  # all three folders: one side per speaker
        tested.update(s for s, v in sides.items() if v == {"test"})
        assert material.held_out and len(material.unseen) > 100
        trained = {w for split in ("train", "val") for w, _ in material.others[split]}
        assert not trained & set(material.held_out)           # a held-out word is in no training split
        assert {w for w, _ in material.others["test"]} == set(corpus.words) - set(material.held_out)
        assert {w for w, _ in material.unseen} == set(material.held_out)
        held.update(material.held_out)
        for region in material.regions:  # noise chunks: one split each, never overlapping
            assert not [r for r in material.regions if r.path == region.path and r is not region
                        and r.start < region.end and region.start < r.end]
    assert set(tested.values()) == {1}
    assert held == collections.Counter(corpus.words)  # each real word held out exactly once


def test_held_out_words_rotate_and_one_fold_is_fold_0_of_five():
    words = ["w%d" % i for i in range(8)]
    over_five = [folds.held_out_words(words, k, 5) for k in range(5)]
    assert sorted(itertools.chain(*over_five)) == words
    assert folds.held_out_words(words, 0, 1) == over_five[0]
    assert folds.held_out_words(["only"], 0, 5) == []   # the unknown class keeps its one real word
    for key in ("a", "b", "speaker"):
        assert (folds.split_of(key, 0, 1) == "test") == (folds.split_of(key, 0, 5) == "test")


def _write(path, seconds=1.0, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(int(seconds * rate), np.float32), rate)


def test_folders_without_speaker_ids_empty_or_without_targets_are_clear_errors(tmp_path):
    _write(tmp_path / "named" / "yes" / "abc_nohash_0.wav")
    _write(tmp_path / "named" / "no" / "abd_nohash_0.wav")
    _write(tmp_path / "anon" / "cat" / "take1.wav")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecVisionError, match=r"anon: 1 of 1 clips have no speaker id .*cat/take1.wav"):
        folds.collect([tmp_path / "named", tmp_path / "anon"], ["yes", "no"])
    with pytest.raises(SpecVisionError, match=r"empty.*no audio files"):
        folds.collect([tmp_path / "named", tmp_path / "empty"], ["yes", "no"])
    with pytest.raises(SpecVisionError, match=r"missing: not a folder"):
        folds.collect([tmp_path / "missing"], ["yes", "no"])
    with pytest.raises(SpecVisionError, match=r"no class folder for the target words \['up'\]"):
        folds.collect([tmp_path / "named"], ["yes", "up"])
    corpus = folds.collect([tmp_path / "named"], ["yes", "no"])
    assert len(corpus.targets) == 2 and corpus.others == [] and corpus.words == []
    _write(tmp_path / "noise" / "_background_noise_" / "hum.wav", seconds=3.0)  # background recordings only
    corpus = folds.collect([tmp_path / "named", tmp_path / "noise"], ["yes", "no"])
    assert len(corpus.targets) == 2 and [p.name for p in corpus.noise] == ["hum.wav"]


def test_negative_recording_is_test_material_of_held_out_words_only(corpus):
    material = folds.fold_material(corpus, 0, 5)
    clips = [(w, load_audio(p, RenderSettings())) for w, p in material.unseen[:20]]
    laid = []
    blocks = list(recordings.negative_blocks(material, clips, 0.02, seed=3, laid=laid))
    wave = np.concatenate(blocks)
    assert len(wave) == int(0.02 * 3600 * recordings.SAMPLE_RATE)
    assert max(len(b) for b in blocks) <= (recordings.NEGATIVE_GAP_S[1] + 1.0) * recordings.SAMPLE_RATE + 1
    assert laid and {w for w, _, _ in laid} <= set(material.held_out)
    assert {p for _, p in material.unseen} <= {p for _, p in corpus.others}
    assert all(sources.group_id(p.name) for _, p in material.unseen)
    tested = {sources.group_id(p.name) for _, p in material.targets["test"]}
    trained = {sources.group_id(p.name) for s in ("train", "val") for _, p in material.targets[s]}
    assert not {sources.group_id(p.name) for _, p in material.unseen} & trained
    assert tested.isdisjoint(trained)
    assert float(np.abs(wave).max()) <= 1.0
    again = np.concatenate(list(recordings.negative_blocks(material, clips, 0.02, seed=3)))
    assert np.array_equal(wave, again)   # seeded: the same recording every time


def test_long_recording_is_made_of_test_material_and_lays_every_word(corpus):
    material = folds.fold_material(corpus, 0, 1)
    rng = np.random.default_rng(0)
    words = [("bed", rng.uniform(-0.3, 0.3, 16000).astype(np.float32)) for _ in range(5)]
    wave, laid = recordings.long_recording(material, words, minutes=0.5, seed=0)
    assert len(wave) >= 30 * recordings.SAMPLE_RATE and len(laid) == 5
    for (_, start, end), (_, nxt, _) in zip(laid, laid[1:]):
        assert end - start == pytest.approx(1.0) and nxt - end >= recordings.WORD_GAP_S[0] - 1e-9
    assert float(np.abs(wave).max()) <= 1.0
    again, _ = recordings.long_recording(material, words, minutes=0.5, seed=0)
    assert np.array_equal(wave, again)


def test_operating_points_pick_the_lowest_threshold_within_the_budget():
    curve = {"thresholds": [0.5, 0.6, 0.7, 0.8], "false_accepts": [9, 4, 2, 0], "misses": [1, 2, 5, 9],
             "negative_hours": 4.0, "targets": 100}
    points = det_curve.operating_points(curve)
    assert points["0.5"] == {"threshold": 0.7, "frr": 0.05, "fa_per_hour": 0.5}
    assert points["1"] == {"threshold": 0.6, "frr": 0.02, "fa_per_hour": 1.0}
    assert det_curve.frr_at(curve) == {"0.5": 0.05, "1": 0.02, "2": 0.02}
    never = dict(curve, false_accepts=[9, 9, 9, 9])
    assert det_curve.operating_points(never)["0.5"] == {"threshold": None, "frr": 1.0, "fa_per_hour": None}
    both = det_curve.pooled([curve, dict(curve, false_accepts=[1, 0, 0, 0], negative_hours=4.0)])
    assert both["false_accepts"] == [10, 4, 2, 0] and both["negative_hours"] == 8.0 and both["targets"] == 200
    assert det_curve.frr_at(both)["0.5"] == 0.02


def test_det_numbers_agree_with_a_direct_scan_at_each_threshold(speech_model, speech, tmp_path):
    """The sweep re-applies thresholds to one scan's posteriors; scanning again at that threshold
    must give the same false accepts and the same misses."""
    predictor = Predictor(speech_model / "model.pt")
    rate = predictor.settings.sample_rate
    words = [(w, load_audio(p, predictor.settings)) for w in ("yes", "no") for p in first_clips(speech, w, 6)]
    gap = np.zeros(rate, np.float32)
    pos_wave = np.concatenate([x for _, wave in words for x in (gap, wave)] + [gap])
    laid = [(w, (2 * i + 1) * 1.0, (2 * i + 2) * 1.0) for i, (w, _) in enumerate(words)]
    noise = np.random.default_rng(1).normal(0, 0.05, rate * 30).astype(np.float32)
    negative = detect.scan(predictor, "neg", noise)
    positive = detect.scan(predictor, "pos", pos_wave)
    thresholds = [0.3, 0.5, 0.7, 0.9]
    curve = det_curve.sweep(negative, positive, predictor.classes, laid, thresholds)
    for t, fa, missed in zip(thresholds, curve["false_accepts"], curve["misses"]):
        assert len(detect.scan(predictor, "neg", noise, threshold=t).detections) == fa
        assert det_curve.misses(detect.scan(predictor, "pos", pos_wave, threshold=t).detections, laid) == missed
    assert curve["misses"] == sorted(curve["misses"])  # a higher threshold never finds more
    assert curve["targets"] == len(laid) and curve["negative_hours"] == pytest.approx(30 / 3600)


def test_bad_options_and_data_are_usage_errors(tmp_path, capsys, real_data, other_words):
    common = ["--data", str(real_data), str(other_words)]
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed" / "model.pt").write_bytes(b"")
    cases = [(["--score-only", str(tmp_path), *common], f"no model at {tmp_path / 'open' / 'model.pt'}"),
             (["--score-only", str(tmp_path), "--out", str(tmp_path), *common], "--score-only DIR"),
             (["--out", str(tmp_path / "x")], "--data: give the folders"),
             (["--out", str(tmp_path / "x"), "--negative-hours", "0", *common], "--negative-hours > 0"),
             (["--out", str(tmp_path / "x"), "--data", str(tmp_path / "none")], "none: not a folder"),
             (["--out", str(tmp_path / "x"), "--folds", "5", "--fold", "5", *common], "--fold must be in 0..4")]
    cases += [(["--out", str(tmp_path / "x"), *bad, *common], "--hop must be > 0")
              for bad in (["--hop", "0"], ["--smooth", "-1"], ["--threshold", "1.5"])]
    for argv, message in cases:
        assert openset.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "error: " in err and message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "x").exists()


def test_old_spelling_real_and_other_still_reads_both_folders(tmp_path, real_data, other_words):
    args = openset.build_parser().parse_args(["--out", str(tmp_path / "x"), "--real", str(real_data),
                                              "--other", str(other_words)])
    openset.check(args)
    assert args.data == [real_data, other_words] and args.corpus.words == ["bed", "cat", "happy"]


def test_scan_misses_names_the_stage_that_lost_each_clip():
    starts = np.arange(40) * 0.25                       # 1 s windows every 0.25 s over 10.75 s
    probs = np.full((40, 2), 0.5)                       # classes no, yes
    probs[2:5] = [0.05, 0.95]                           # yes clip at 1.0-2.0 s: detected below
    probs[9] = [0.1, 0.9]                               # yes clip at 3.0-4.0 s: one gated window only
    probs[17] = [0.8, 0.2]                              # no clip at 5.0-6.0 s: one window, smoothed away
    probs[25:28] = [0.9, 0.1]                           # no clip at 7.0-8.0 s: smoothed fine, no detection
    active = np.ones(40, bool)
    active[9] = False
    smoothed = detect.smooth_posteriors(detect.gate_posteriors(probs, active), 3)
    found = [detect.Detection("yes", 0.95, 1.2, 1.6, 1.4), detect.Detection("yes", 0.9, 7.2, 7.6, 7.4)]
    scan = detect.Scan("x", np.zeros((0, 2)), 1, 0, 16000, 1.0, starts, probs, smoothed, active, found, 0.7)
    laid = [("yes", 1.0, 2.0), ("yes", 3.0, 4.0), ("no", 5.0, 6.0), ("no", 7.0, 8.0), ("yes", 9.0, 10.0)]
    assert openset.scan_misses(scan, ["no", "yes"], laid) == {"model": 1, "gate": 1, "smoothing": 1,
                                                              "detection": 1}
    # the matching slack: a detection of the word just outside the clip still counts, further out not
    edge = detect.Detection("no", 0.9, 8.1, 8.3, 8.0 + det_curve.MATCH_SLACK_S)
    assert sum(openset.scan_misses(dataclasses.replace(scan, detections=[edge]), ["no", "yes"],
                                   laid[3:4]).values()) == 0
    late = dataclasses.replace(edge, time=8.0 + det_curve.MATCH_SLACK_S + 0.05)
    assert openset.scan_misses(dataclasses.replace(scan, detections=[late]), ["no", "yes"],
                               laid[3:4])["detection"] == 1


def test_summary_pools_the_det_curves_and_averages_the_rest_over_folds():
    def fold(acc, unseen, fa, misses, hours):
        det = {"thresholds": [0.5, 0.9], "false_accepts": fa, "misses": misses, "negative_hours": hours,
               "targets": 10}
        return {"open": {**dict.fromkeys(openset.KEYS, 0.0), "target_acc": acc,
                         "unseen_word_false_accept_rate": unseen, "negative_hours": hours, "det": det}}
    summary = openset.summarise([fold(0.9, 0.1, [4, 1], [0, 2], 2.0), fold(1.0, None, [2, 0], [1, 3], 2.0)],
                                models=["open"])
    assert "closed" not in summary and summary["open"]["target_acc"] == 0.95
    assert summary["open"]["unseen_word_false_accept_rate"] == 0.1   # a fold without held-out words: left out
    assert summary["open"]["negative_hours"] == 4.0
    assert summary["open"]["det"]["false_accepts"] == [6, 1] and summary["open"]["det"]["misses"] == [1, 5]
    assert summary["open"]["frr_at_fa_per_hour"] == {"0.5": 0.25, "1": 0.25, "2": 0.05}
    assert "| open |" in openset.table(summary, ["open"])
