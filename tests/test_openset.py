"""train.openset's data handling: speaker-disjoint folds over both shared folders, test-only material
and the long test recordings. (The benchmark's training runs are minutes long: docs/benchmarks.md.)"""
from __future__ import annotations

import collections

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
