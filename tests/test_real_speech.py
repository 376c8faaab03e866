"""bench.real_speech: its rates against labels computed independently (train.predict's library call on
the same files), pooling of words over DIRs, skipped `_` folders, a corrupt clip, user mistakes.

The model is the session's synthetic yes/no model (conftest `speech_model`); the "real" folders are
small copies of its clips laid out as Speech Commands is, so the test runs on every machine.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import real_speech
from conftest import first_clips
from train import predict

pytestmark = pytest.mark.slow  # trains the session's tiny model (conftest speech_model)

KEYS = {"model", "clips", "target_acc", "rejected_rate", "confused_rate", "non_target_accept_rate",
        "per_word", "non_target_per_word", "failed", "seconds"}


@pytest.fixture(scope="module")
def model(speech_model) -> Path:
    return speech_model / "model.pt"


@pytest.fixture(scope="module")
def data(speech, tmp_path_factory) -> tuple[list[Path], dict[str, list[Path]], Path]:
    """Two DIRs: a/yes (5 + a corrupt file), a/no (3), a/_background_noise_ (skipped), b/no (3 more)
    -> ([a, b], the clips each word should be scored on, the corrupt file)."""
    root = tmp_path_factory.mktemp("real_speech")
    yes, no = first_clips(speech, "yes", 6), first_clips(speech, "no", 6)
    layout = {"a/yes": yes[:5], "a/no": no[:3], "b/no": no[3:], "a/_background_noise_": yes[5:]}
    for folder, clips in layout.items():
        (root / folder).mkdir(parents=True)
        for clip in clips:
            shutil.copy(clip, root / folder / clip.name)
    corrupt = root / "a" / "yes" / "corrupt_nohash_0.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    expected = {"yes": sorted((root / "a" / "yes").glob("*.wav")),
                "no": sorted((root / "a" / "no").glob("*.wav")) + sorted((root / "b" / "no").glob("*.wav"))}
    expected["yes"].remove(corrupt)
    return [root / "a", root / "b"], expected, corrupt


def test_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        real_speech.main(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m bench.real_speech")


def run(capsys, *argv) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = real_speech.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def top1(model: Path, clips: list[Path]) -> list[str]:
    """The labels `python -m train.predict` gives (no threshold), computed without the benchmark."""
    results = predict.predict(clips, model)
    assert not results.failures
    return [answer.label for answer in results.answers]


def test_rates_match_predict_and_a_corrupt_clip_is_named(model, data, tmp_path, capsys):
    dirs, expected, corrupt = data
    out = tmp_path / "report.json"
    code, lines, err = run(capsys, "--model", model, "--data", *dirs, "--words", "yes", "no", "--out", out,
                           "--batch-size", "4")
    assert code == 1, err  # the corrupt file failed; the others were scored
    assert f"warning: {corrupt}:" in err
    report = json.loads(lines[-1])
    assert KEYS <= set(report)
    assert json.loads(out.read_text()) == report
    assert report["failed"] == 1
    assert report["clips"] == len(expected["yes"]) + len(expected["no"]) == 11  # _background_noise_ skipped

    correct = rejected = 0
    for word, clips in expected.items():
        labels = top1(model, clips)
        hits = sum(label == word for label in labels)
        off = sum(label not in ("yes", "no") for label in labels)
        entry = report["per_word"][word]
        assert entry["clips"] == len(clips)  # b/no pooled with a/no
        assert entry["acc"] == round(hits / len(clips), 4)
        assert entry["rejected"] == round(off / len(clips), 4)
        correct, rejected = correct + hits, rejected + off
    total = report["clips"]
    assert report["target_acc"] == round(correct / total, 4)
    assert report["rejected_rate"] == round(rejected / total, 4)
    assert report["confused_rate"] == round((total - correct - rejected) / total, 4)
    for key in ("target_acc", "rejected_rate", "confused_rate"):
        assert 0.0 <= report[key] <= 1.0
    assert abs(report["target_acc"] + report["rejected_rate"] + report["confused_rate"] - 1.0) < 1e-3
    assert report["non_target_accept_rate"] is None and report["non_target_per_word"] == {}


def test_other_words_are_non_targets(model, data, capsys):
    dirs, expected, _ = data
    code, lines, err = run(capsys, "--model", model, "--data", *dirs, "--words", "yes")
    assert code == 1, err
    report = json.loads(lines[-1])
    assert set(report["per_word"]) == {"yes"} and set(report["non_target_per_word"]) == {"no"}
    # a "no" clip is a false accept when the model says "yes"
    accepted = top1(model, expected["no"]).count("yes") / len(expected["no"])
    assert report["non_target_per_word"]["no"] == {"clips": 6, "accepted": round(accepted, 4)}
    assert report["non_target_accept_rate"] == round(accepted, 4)
    # with one target word there is nothing to confuse it with
    yes = report["per_word"]["yes"]
    assert report["confused_rate"] == 0.0
    assert report["target_acc"] + report["rejected_rate"] == pytest.approx(1.0)
    assert yes["acc"] == report["target_acc"]


def test_user_mistakes_exit_2_with_the_reason(model, data, tmp_path, capsys):
    dirs, _, _ = data
    code, lines, err = run(capsys, "--model", model, "--data", *dirs, "--words", "yes", "maybe")
    assert code == 2
    assert "maybe" in err and "its classes: " in err and "yes" in err.split("its classes: ")[1]
    assert "Traceback" not in err and not lines
    code, _, err = run(capsys, "--model", model, "--data", dirs[0], tmp_path / "missing")
    assert code == 2 and f"{tmp_path / 'missing'}: no such folder" in err
    code, _, err = run(capsys, "--model", model, "--data", dirs[0] / "no")  # a class folder, not a DIR
    assert code == 2 and "no clips found" in err


def test_operating_points_trade_rejections_for_false_accepts_by_one_offset():
    """Two targets and 'unknown'; the offset on 'unknown' alone decides each point (worked by hand)."""
    import torch
    from bench.real_speech import operating_points
    classes = ["no", "unknown", "yes"]
    rows = [("yes", [0.0, 1.0, 2.0]),    # right at any offset >= -1
            ("yes", [0.0, 1.5, 1.0]),    # right once 'unknown' is lowered by more than 0.5
            ("no", [1.0, 3.0, 0.0]),     # right once lowered by more than 2
            ("cat", [0.0, 2.0, 1.2])]    # accepted (as yes) once lowered by more than 0.8
    rows += [("cat", [0.0, 5.5, 0.0])] * 9   # accepted only past 5.5
    points = operating_points([(w, torch.tensor(r)) for w, r in rows], classes, ["yes", "no"])
    # at most 5 % of the 10 other clips: none accepted, offset <= 0.8: the two yes right, not the no
    assert points["0.05"] == pytest.approx(2 / 3, abs=1e-4)
    # at most 10 %: one may be accepted, offset up to 5.5: all three right
    assert points["0.1"] == pytest.approx(1.0)
