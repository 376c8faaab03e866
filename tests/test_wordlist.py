"""The unknown word list: eSpeak NG phonemes, sound-alikes (the hard negatives) and true homophones."""
from __future__ import annotations

import collections
import json
import time

import numpy as np
import pytest

from preprocess import synth, voices, wordlist
from preprocess.espeak import TIE, Voice, load_engine, phonemize

VOICE = Voice("en-US", "f2", pitch=60, pitch_range=40, rate=160)


def test_no_unknown_word_is_a_folder_name_preprocess_reads_otherwise():
    from preprocess.layout import SILENCE, SPLITS, UNKNOWN
    reserved = {*SPLITS, UNKNOWN, SILENCE}
    assert set(wordlist.RESERVED) == reserved
    assert not reserved & set(wordlist.LEXICON)
    assert not reserved & set(wordlist.unknown_plan(["yes", "no"], [], 2000))


def test_phonemes_are_plausible_ipa_and_ties_mark_one_phoneme():
    with load_engine() as engine:
        yes, no = engine.phonemes("yes"), engine.phonemes("no")
        tied = engine.phonemes("no", ties=True)
        two_clauses = engine.phonemes("Hello. There")
    assert "j" in yes and "s" in yes and no.startswith("n") and TIE not in no
    assert TIE in tied and tied.replace(TIE, "") == no
    assert len(two_clauses.split()) == 2  # every clause, not just the first
    assert wordlist.phoneme_segments(tied) == ("n", "oʊ")
    assert wordlist.phoneme_segments("t͡ʃˈɜːt͡ʃ") == wordlist.phoneme_segments("tʃˈɜːtʃ") == ("tʃ", "ɜ", "tʃ")


def test_phoneme_distance_is_edits_of_whole_phonemes():
    ipa = dict(zip(["no", "know", "go", "nope", "now", "yes", "yet", "guess"],
                   phonemize(("no", "know", "go", "nope", "now", "yes", "yet", "guess"))))
    assert wordlist.phoneme_distance(ipa["no"], ipa["know"]) == 0
    assert {wordlist.phoneme_distance(ipa["no"], ipa[w]) for w in ("go", "nope", "now")} == {1}
    assert {wordlist.phoneme_distance(ipa["yes"], ipa[w]) for w in ("yet", "guess")} == {1}
    assert wordlist.phoneme_distance("ˈaɪ", "ˈa͡ɪ") == 0 and wordlist.phoneme_distance("ab", "ba") == 2


def test_a_few_hundred_words_are_transcribed_fast_and_cached():
    phonemize.cache_clear()
    wordlist._distance_table.cache_clear()
    started = time.perf_counter()
    alikes = wordlist.sound_alikes(["yes", "no"])
    first = time.perf_counter() - started
    started = time.perf_counter()
    assert wordlist.sound_alikes(["yes", "no"]) == alikes
    assert first < 3 and time.perf_counter() - started < first


def test_homophones_are_excluded_and_casual_forms_are_hard_negatives():
    assert {"know", "noh", "yess"} <= set(wordlist.homophones(["yes", "no"]))
    assert set(wordlist.homophones(["right"])) >= {"write", "rite", "wright"}
    assert {"to", "too"} <= set(wordlist.homophones(["two"])) and "ate" in wordlist.homophones(["eight"])
    unknown = set(wordlist.unknown_words(["yes", "no"]))
    assert not unknown & {"yes", "no", "know", "noh", "yess"}
    assert {"yeah", "nope", "now", "nose", "go", "yet", "guess"} <= unknown  # kept: the boundary needs them


def test_sound_alikes_share_most_phonemes_closest_first():
    alikes = wordlist.sound_alikes(["yes", "no"])
    assert {"nope", "go", "now", "nose", "note", "yet", "guess", "yell", "less"} <= set(alikes)
    assert not set(alikes) & {"yes", "no", "know"}
    assert "zero" not in alikes and "kitchen" not in alikes
    stop = wordlist.sound_alikes(["stop"])
    assert {"top", "shop", "step", "stock"} <= set(stop)
    for targets in (["yes", "no"], ["stop"], ["up", "down", "left", "right"]):
        found = wordlist.sound_alikes(targets)
        target_ipa = phonemize(tuple(targets))
        distance = {w: min(wordlist.phoneme_distance(p, t) for t in target_ipa)
                    for w, p in zip(found, phonemize(tuple(found)))}
        assert found == sorted(found, key=lambda w: (distance[w], w)) and set(distance.values()) <= {1, 2}
    assert "pup" in wordlist.sound_alikes(["up"]) and "fight" in wordlist.sound_alikes(["right"])
    assert wordlist.sound_alikes(["zorp"]) == wordlist.sound_alikes(["Zorp"])  # any word, any case


def test_every_target_gets_its_sound_alikes_in_turn():
    order = wordlist.unknown_sound_alikes(["yes", "no"], exclude=["bow"])
    assert sorted(order) == sorted(w for w in wordlist.sound_alikes(["yes", "no"]) if w != "bow")
    yes, no = (set(wordlist.sound_alikes([t])) for t in ("yes", "no"))
    assert order[0] in yes and order[1] in no and order[2] in yes  # not all of "no"'s before "yes"'s
    assert {"guess", "yeah", "yet", "go", "nope"} <= set(order[:60])


@pytest.mark.parametrize("targets, count, share", [(["yes", "no"], 300, 0.3), (["stop"], 97, 0.5),
                                                   (["up", "down", "left", "right", "stop"], 40, 1.0)])
def test_unknown_plan_gives_the_asked_share_to_sound_alikes(targets, count, share):
    exclude = ["bed", "go"]
    plan = wordlist.unknown_plan(targets, exclude, count, share)
    assert len(plan) == count and plan == wordlist.unknown_plan(targets, exclude, count, share)
    alikes = wordlist.unknown_sound_alikes(targets, exclude)
    said = [w for w in plan if w in alikes]
    assert len(said) == round(share * count)
    assert said == [alikes[i % len(alikes)] for i in range(len(said))]  # closest first, then again
    banned = {*targets, *exclude, *wordlist.homophones(targets)}
    assert not set(plan) & banned and set(plan) <= set(wordlist.unknown_words(targets, exclude))
    if 0 < share < 1:  # spread among the other words, not bunched at one end
        first_half = sum(w in alikes for w in plan[:count // 2])
        assert abs(first_half - len(said) / 2) <= 1


def test_unknown_plan_spreads_other_words_over_the_whole_list():
    words = wordlist.unknown_words(["yes", "no"])
    plan = wordlist.unknown_plan(["yes", "no"], [], 100, share=0)
    assert len(set(plan)) == 100 and plan[0] == words[0] and words.index(plan[-1]) > 0.9 * len(words)
    no_alikes = wordlist.unknown_plan(["marvin"], [], 10, share=0.5)  # marvin has none: all go to the others
    assert no_alikes == wordlist.unknown_plan(["marvin"], [], 10, 0.0)
    longer = wordlist.unknown_plan(["yes", "no"], [], 2 * len(words), share=0)
    assert set(collections.Counter(longer).values()) == {2}
    with pytest.raises(ValueError, match="between 0 and 1"):
        wordlist.unknown_plan(["yes"], [], 10, share=1.5)
    assert wordlist.unknown_plan(["yes"], [], 0) == []


def test_repeated_words_get_distinct_file_names():
    speakers = voices.make_speakers(0, 3)
    jobs = voices.plan_unknown_jobs(["go", "a", "go", "go", "b"], 5, speakers, seed=0)
    assert [(j.word, j.index) for j in jobs] == [("go", 0), ("a", 0), ("go", 1), ("go", 2), ("b", 0)]
    assert len({j.relative_path for j in jobs}) == 5
    cycled = voices.plan_unknown_jobs(["a", "b"], 5, speakers, seed=0)  # a short list is taken in turn
    assert [(j.word, j.index) for j in cycled] == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]


def test_phonemes_do_not_change_later_synth_output():
    with load_engine() as engine:
        before = engine.synth("yes", VOICE)
        engine.phonemes("nope, yellow and guess")
        after = engine.synth("yes", VOICE)
    with load_engine() as fresh:
        fresh.phonemes("nope", ties=True)  # the very first call of an engine
        first = fresh.synth("yes", VOICE)
    phonemize.cache_clear()
    phonemize(("no", "know", "nose"))  # an engine of its own, closed again
    with load_engine() as again:
        last = again.synth("yes", VOICE)
    assert before.tobytes() == after.tobytes() == first.tobytes() == last.tobytes()
    assert len(before) > 0.1 * 22050 and np.abs(before).max() > 0.05


def test_synth_records_the_sound_alikes_and_checks_the_share(tmp_path, capsys):
    out = tmp_path / "synth"
    assert synth.main(["--words", "no", "--per-word", "2", "--unknown", "8", "--sound-alike-share", "0.5",
                       "--out", str(out), "--workers", "1", "--quiet", "--variants", "f2",
                       "--languages", "en-US"]) == 0
    info = json.loads((out / "synth.json").read_text())
    assert info["sound_alike_share"] == 0.5 and {"go", "now", "nope"} <= set(info["sound_alikes"])
    said = [p.parent.name for p in out.glob("*/*.wav") if p.parent.name != "no"]
    assert len(said) == 8 and sum(w in info["sound_alikes"] for w in said) == 4
    assert "know" not in said and sorted(set(said)) == sorted(info["unknown_words"])
    assert synth.main(["--words", "no", "--per-word", "2", "--unknown", "8", "--sound-alike-share", "1.5",
                       "--out", str(tmp_path / "bad")]) == 2
    assert "--sound-alike-share must be between 0 and 1" in capsys.readouterr().err


def test_binary_engine_transcribes_with_the_program(tmp_path):
    """The espeak-ng program's --ipa output, clause lines joined (a stand-in program: CI has none)."""
    from preprocess.espeak import BinaryEngine, EngineError
    program = tmp_path / "espeak-ng"
    program.write_text('#!/bin/sh\necho "$@" > "$0.args"\n[ "$4" = fail ] && exit 3\n'
                       "printf ' hælˈoʊ\\n ðˈɛɹ\\n'\n", encoding="utf-8")  # a line per clause, as it prints
    program.chmod(0o755)
    engine = object.__new__(BinaryEngine)  # no --version probe or test utterance
    engine.binary = str(program)
    assert engine.phonemes("Hello. There", "en-gb", ties=True) == "hælˈoʊ ðˈɛɹ"
    args = (tmp_path / "espeak-ng.args").read_text().split()
    assert args == ["-q", "--ipa=1", "-v", "en-gb", "--", "Hello.", "There"]
    with pytest.raises(EngineError, match="failed"):
        engine.phonemes("x", "fail")
