"""train.openset's data handling: speaker-disjoint folds over both shared folders, test-only material
and the long test recordings. (The benchmark's training runs are minutes long: docs/benchmarks.md.)"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest

from preprocess import sources
from train import openset


def test_every_speaker_is_tested_in_exactly_one_fold_and_never_trained_on_there(real_data, other_words):
    folds = 5
    materials = [openset.real_material(real_data, other_words, k, folds) for k in range(folds)]
    tested = collections.Counter()
    for material in materials:
        sides = collections.defaultdict(set)
        for kind in (material.targets, material.others):
            for split, clips in kind.items():
                for _, path in clips:
                    sides[sources.group_id(path.name)].add(split)
        assert all(len(s) == 1 for s in sides.values())  # yes/no and other words: one side per speaker
        tested.update(s for s, v in sides.items() if v == {"test"})
        assert len(material.targets["test"]) > 100 and len(material.others["test"]) > 200
        for region in material.regions:  # noise chunks: one split each, never overlapping
            overlapping = [r for r in material.regions if r.path == region.path and r is not region
                           and r.start < region.end and region.start < r.end]
            assert not overlapping
    assert set(tested.values()) == {1}


def test_long_recording_is_made_of_test_material_and_lays_every_word(real_data, other_words):
    material = openset.real_material(real_data, other_words, 0, 1)
    rng = np.random.default_rng(0)
    words = [("bed", rng.uniform(-0.3, 0.3, 16000).astype(np.float32)) for _ in range(5)]
    wave, laid = openset.long_recording(material, words, minutes=0.5, seed=0)
    assert len(wave) >= 30 * openset.SAMPLE_RATE and len(laid) == 5
    for (_, start, end), (_, nxt, _) in zip(laid, laid[1:]):
        assert end - start == pytest.approx(1.0) and nxt - end >= openset.WORD_GAP_S[0] - 1e-9
    assert float(np.abs(wave).max()) <= 1.0
    again, _ = openset.long_recording(material, words, minutes=0.5, seed=0)
    assert np.array_equal(wave, again)


def test_score_only_needs_kept_models_and_excludes_out(tmp_path, capsys, real_data, other_words):
    common = ["--real", str(real_data), "--other", str(other_words)]
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed" / "model.pt").write_bytes(b"")
    assert openset.main(["--score-only", str(tmp_path), *common]) == 2  # open/model.pt missing
    assert f"no model at {tmp_path / 'open' / 'model.pt'}" in capsys.readouterr().err
    assert openset.main(["--score-only", str(tmp_path), "--out", str(tmp_path), *common]) == 2
    assert openset.main(common) == 2
    assert "--score-only DIR" in capsys.readouterr().err
    for bad in (["--hop", "0"], ["--smooth", "-1"], ["--threshold", "1.5"]):
        assert openset.main(["--out", str(tmp_path / "x"), *bad, *common]) == 2, bad
        assert "--hop must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_scan_misses_names_the_stage_that_lost_each_clip():
    from train import detect
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
    edge = detect.Detection("no", 0.9, 8.1, 8.3, 8.0 + openset.MATCH_SLACK_S)
    assert sum(openset.scan_misses(dataclasses.replace(scan, detections=[edge]), ["no", "yes"],
                                   laid[3:4]).values()) == 0
    late = dataclasses.replace(edge, time=8.0 + openset.MATCH_SLACK_S + 0.05)
    assert openset.scan_misses(dataclasses.replace(scan, detections=[late]), ["no", "yes"],
                               laid[3:4])["detection"] == 1
