"""Common English words for a synthetic 'unknown' class (`python -m preprocess.synth --unknown N`).

A keyword spotter has to say "not mine" to any word, and an unknown class of a few words does not
teach that: with only bed/cat/happy as unknown, a model still answered "no" to a third of unheard
words like "go" or "zero". So the class is made of many words, spread evenly.

What is left out, per target: the target itself and its near-homophones (NEAR_HOMOPHONES: words a
listener, or a spotter, could not tell from it: "know" for "no", "yeah" for "yes"). Words that merely
share a sound ("go", "so", "less") are kept on purpose: they are the hard negatives a spotter must
learn to reject, and leaving them out would only hide its false accepts.
"""
from __future__ import annotations

# A few hundred frequent, distinct spoken words (function words, numbers, everyday nouns, verbs and
# adjectives), including the Speech Commands vocabulary.
COMMON_WORDS = tuple("""
a about above across after again air all almost also always am an and animal another answer any
apple around as ask at away baby back backward bad bag ball bed before begin behind below best
better between big bird black blue boat body book both box boy bread bring brother brown build bus
but buy by call came can car card care carry cat chair change child city clean clock close cold
come could country cup cut dance dark day dinner do dog door down draw dream drink drive each
early earth eat egg eight end enough even evening every eye face fall family far farm fast father
feel few find fine fire first fish five floor flower fly follow food foot for forward four friend
from front full game garden get girl give glass go gold good green ground group grow had hand happy
hard has hat have he head hear heart help her here high hill him his hold home horse hot hour house
how hundred I ice if in inside into is it jump just keep kind king kitchen lady lake land large last
late laugh learn leave left leg letter light like line lion listen little live long look love low
machine make man many marvin may me meat milk mind minute money moon more morning mother mountain
move much music must my name near never new next nice night nine north number of off often old on
once one only open or orange other our out over page paper park part party pen people pick picture
place plant play please point pull push put queen question quick quiet rain read red right river
road rock room round run sad said same say school sea second see seven she sheila ship shoe short
should show side simple sing sister sit six sky sleep slow small smile snow some song soon sound
south speak spring stand star start stay still stone stop story street strong such summer sun sure
table take talk teacher ten than thank that the their them then there these they thing think this
those three through time to today together too top town tree true try turn two under until up us
use very visual voice wait walk wall want warm was watch water way we weather week well went were
west what when where which while white who why wind window winter with woman wood word work world
would write wrong wow year yellow you young your zero
""".split())

# Near-homophones: words that sound (almost) the same as the key, never unknown when the key is a
# target. Homophones proper, the casual forms of the word, and one-phoneme variants of it.
NEAR_HOMOPHONES = {
    "yes": ("yes", "yess", "yeah", "yea", "yep", "yah", "yesh"),
    "no": ("no", "know", "noh", "nope", "nah", "now", "knows", "nose"),
    "go": ("go", "goes", "goh"),
    "up": ("up", "yup", "pup"),
    "off": ("off", "of", "often"),
    "on": ("on", "an", "in"),
    "two": ("two", "to", "too"),
    "four": ("four", "for", "fore", "floor"),
    "eight": ("eight", "ate"),
    "right": ("right", "write", "rite", "wright"),
    "one": ("one", "won"),
    "tree": ("tree", "three"),
    "three": ("three", "tree"),
    "bed": ("bed", "bad", "red"),
    "cat": ("cat", "cut", "hat"),
    "sea": ("sea", "see"),
    "see": ("see", "sea"),
}


def sound_alikes(word: str) -> set[str]:
    """The word and its near-homophones (lower case)."""
    word = word.lower()
    return {word, *NEAR_HOMOPHONES.get(word, ())}


def unknown_words(targets: list[str], exclude: list[str] = ()) -> list[str]:
    """COMMON_WORDS without the targets, their near-homophones and `exclude`, in list order."""
    banned = {w.lower() for w in exclude}
    for target in targets:
        banned |= sound_alikes(target)
    return [w for w in COMMON_WORDS if w.lower() not in banned]
