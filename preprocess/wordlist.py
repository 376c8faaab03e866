"""Common English words for a synthetic 'unknown' class (`python -m preprocess.synth --unknown N`).

A keyword spotter has to say "not mine" to any word, and an unknown class of a few words does not
teach that: with only bed/cat/happy as unknown, a model still answered "no" to a third of unheard
words like "go" or "zero". So the class is made of many words (LEXICON: COMMON_WORDS, frequent words,
and SHORT_WORDS, short words covering many onsets and rhymes), spread evenly.

Where a spotter errs is at the boundary of each target: words that share most of its sounds ("go",
"now", "nose", "nope" for "no"; "yet", "guess", "yell", "yeah" for "yes"). Those are the hard
negatives it must learn to reject, so they are kept, and put first: `sound_alikes` finds them for
any target (a made-up word too) by the edit distance between eSpeak NG's phonemes (phoneme_distance),
and `unknown_plan` gives them a share (SOUND_ALIKE_SHARE) of the unknown clips. Only true homophones
are left out (`homophones`: the same phonemes, "know" for "no", "write" for "right", plus the
HOMOPHONES spellings eSpeak does not read the same): no listener, nor spotter, could tell them apart,
and as "unknown" they would only teach the model to reject its own word. Casual forms ("yeah",
"nope", "nah") and one-phoneme variants ("nose", "now") are not homophones: leaving them out would
hide exactly the false accepts the boundary needs to learn.

The phonemes come from the eSpeak NG library (preprocess.espeak.phonemize, cached): these functions
load it for a moment, so call them before forking workers and while no other engine is open.
"""
from __future__ import annotations

import functools
import unicodedata

from preprocess.espeak import TIE, phonemize

SOUND_ALIKE_SHARE = 0.3      # of the unknown clips, the share that says a sound-alike of a target
MAX_SOUND_ALIKE_DISTANCE = 2  # phoneme edits; 1 for targets of one or two phonemes (see sound_alikes)
PHONEME_LANGUAGE = "en-us"

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

# A few hundred short common words, none of COMMON_WORDS, chosen for their neighbours: many onsets and
# rhymes around the usual command words (yes/no, up/down, left/right, go/stop, on/off, the digits).
SHORT_WORDS = tuple("""
yes no yet yell yeah yep yup yak yam yard yarn yawn yearn yolk yoke youth guess less mess dress
chess press bless nest net neck nod not note nope now nose knee know knows toe though bow dough oh
owe hello so sew row mow tow foe doe bone cone phone tone zone known grown load toad code goat coat
moat vote wrote throat shop stock sup pup pop hop mop cop drop chop crop plop clown gown crown frown
noun lift loft bite kite fight height sight might tight bright rip lip tip dip hip chip sip zip flip
trip slip skip drip lap map cap tap nap gap clap trap snap let met pet set bet jet wet vet led fed
wed shed sled lock dock knock sock mock block lot got dot pot spot shot knot plot nut hut gut shut
rut bell fell sell tell shell smell spell pin tin bin fin sin thin chin skin spin twin win hit fit
kit pit bit knit quit den hen dune tune noon spoon june cool pool tool fool rule bean mean lean seen
screen bee fee tea free bay hay lay pay ray gray clay tray pray die lie pie tie guy dry cry cow plow
vow toy joy soy done fun none ton won fog log hog jog frog rag tag wag flag drag dad mad pad glad
dig fig pig wig bar jar tar pour shore store core bold sold told fold cake bake rake wake snake mine
pine wine shine mile pile tile lime dime kid lid hid did slid add odd ink oak ache ape ace eel ear
arm art aim upper sown lost list rite ride wide hide tide step stoop stomp ate gate plate hive dive
alive sticks fix mix heaven hero mask task ant aunt bill fill mill pill will fuss plus mat pat rat
sat bat fat chat bark mark shark spark duck luck truck stuck dish wish fork pork cork gift shift
band sand bump dump lump pump ring wing kiss miss silk nail mail tail rail sail pail rice mice dice
cage stage pack sack track train brain chain rope soap hope found pound salt seat feet heat sheep
deep jeep glue clue tall hall teeth thumb drum toast post most ghost wheel meal deal heal hood zoo
cough soft lent rent bent tent sent lend send bend dawn goal goes knew
""".split())

# Folder names that mean something else to `python -m preprocess` (split folders, the open-world
# classes): an unknown word folder called "train" would turn the synth folder into a pre-split one.
RESERVED = ("train", "val", "test", "unknown", "silence")
LEXICON = tuple(w for w in COMMON_WORDS + SHORT_WORDS if w not in RESERVED)

# True homophones and spellings, never unknown when one of them is a target (most are also found by
# their phonemes; these are the ones eSpeak may read apart, e.g. "yess" as "jɛsz").
HOMOPHONE_GROUPS = (("yes", "yess"), ("no", "know", "noh"), ("go", "goh"), ("two", "to", "too"),
                    ("four", "for", "fore"), ("eight", "ate"), ("right", "write", "rite", "wright"),
                    ("one", "won"), ("sea", "see"), ("by", "buy", "bye"), ("new", "knew"),
                    ("hear", "here"), ("sun", "son"), ("wood", "would"), ("night", "knight"),
                    ("not", "knot"), ("nose", "knows"), ("so", "sew"), ("toe", "tow"), ("hour", "our"))
HOMOPHONES = {word: tuple(w for w in group if w != word) for group in HOMOPHONE_GROUPS for word in group}

STRESS_AND_LENGTH = str.maketrans("", "", "ˈˌːˑ")
PAIRS = {"aɪ", "aʊ", "eɪ", "oʊ", "ɔɪ", "əʊ", "tʃ", "dʒ"}  # one phoneme when a transcription is untied


def phoneme_segments(ipa: str) -> tuple[str, ...]:
    """IPA as a tuple of phonemes, stress, length and tie marks dropped: 'nˈo͡ʊz' -> ('n', 'oʊ', 'z').

    One phoneme is one character, with its combining marks, and with what a tie bar (U+0361, as
    phonemize writes eSpeak's multi-letter phonemes) or, in untied IPA, PAIRS joins to it.
    """
    segments: list[str] = []
    join = False
    for char in ipa.translate(STRESS_AND_LENGTH):
        if char.isspace() or char in "-_":
            join = False
        elif char in (TIE, "\u035c", "\u200d"):
            join = bool(segments)
        elif segments and (join or unicodedata.combining(char) or segments[-1] + char in PAIRS):
            segments[-1] += char
            join = False
        else:
            segments.append(char)
    return tuple(segments)


def phoneme_distance(a: str, b: str) -> int:
    """Levenshtein distance between two IPA transcriptions, in phonemes (phoneme_segments): each
    insertion, deletion or substitution of a phoneme costs 1, whatever the phonemes. 'no' - 'know' 0,
    'no' - 'go' 1, 'no' - 'nope' 1, 'yes' - 'yet' 1."""
    x, y = phoneme_segments(a), phoneme_segments(b)
    previous = list(range(len(y) + 1))
    for i, p in enumerate(x, 1):
        current = [i]
        for j, q in enumerate(y, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (p != q)))
        previous = current
    return previous[-1]


@functools.lru_cache(maxsize=32)
def _distance_table(targets: tuple[str, ...], lexicon: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """Per target (lower case), the phoneme distance of every lexicon word, and its sound-alike
    limit last: one transcription of each, however many questions are asked about them."""
    lexicon_ipa = phonemize(tuple(w.lower() for w in lexicon), PHONEME_LANGUAGE)
    return tuple((*(phoneme_distance(ipa, t) for ipa in lexicon_ipa), sound_alike_limit(t))
                 for t in phonemize(targets, PHONEME_LANGUAGE))


def sound_alike_limit(target_ipa: str) -> int:
    """The largest distance at which a word is a sound-alike of this target: half its phonemes,
    rounded up, between 1 and MAX_SOUND_ALIKE_DISTANCE ('no', 2 phonemes: 1; 'yes', 'stop': 2)."""
    return min(MAX_SOUND_ALIKE_DISTANCE, max(1, (len(phoneme_segments(target_ipa)) + 1) // 2))


def _per_target(targets, lexicon) -> list[dict[str, int]]:
    """For each target, its sound-alikes (word -> distance): lexicon words within its limit, neither
    a target nor a homophone of any."""
    targets = tuple(t.lower() for t in targets)
    banned = set(targets) | set(homophones(targets, lexicon))
    found = []
    for row in _distance_table(targets, tuple(lexicon)):
        *distances, limit = row
        found.append({w.lower(): d for w, d in zip(lexicon, distances)
                      if 0 < d <= limit and w.lower() not in banned})
    return found


def sound_alikes(targets: list[str], lexicon: tuple[str, ...] = LEXICON) -> list[str]:
    """Lexicon words that share most of a target's phonemes, closest first: those within
    sound_alike_limit of a target (distance 0, a homophone, is not one), sorted by (distance to the
    nearest target, word). Never a target or one of its homophones."""
    nearest: dict[str, int] = {}
    for found in _per_target(targets, lexicon):
        for word, distance in found.items():
            nearest[word] = min(distance, nearest.get(word, distance))
    return sorted(nearest, key=lambda w: (nearest[w], w))


def homophones(targets: list[str], lexicon: tuple[str, ...] = LEXICON) -> list[str]:
    """Words that sound the same as a target (sorted, not the targets): lexicon words with the same
    phonemes, and the HOMOPHONES spellings."""
    targets = tuple(t.lower() for t in targets)
    rows = _distance_table(targets, tuple(lexicon))
    same = {w.lower() for row in rows for w, d in zip(lexicon, row) if d == 0}
    same |= {h for t in targets for h in HOMOPHONES.get(t, ())}
    return sorted(same - set(targets))


def unknown_words(targets: list[str], exclude: list[str] = ()) -> list[str]:
    """LEXICON without the targets, their homophones and `exclude`, in list order."""
    banned = {w.lower() for w in (*targets, *exclude)} | set(homophones(targets))
    return [w for w in LEXICON if w.lower() not in banned]


def unknown_sound_alikes(targets: list[str], exclude: list[str] = ()) -> list[str]:
    """The sound-alikes that unknown_words keeps (not in `exclude`), in the order unknown_plan says
    them: each target's closest first (by distance, then word), the targets taken in turn, so that
    every target gets its hard negatives however few clips there are."""
    excluded = {w.lower() for w in exclude}
    queues = [sorted((w for w in found if w not in excluded), key=lambda w, f=found: (f[w], w))
              for found in _per_target(targets, LEXICON)]
    order: dict[str, None] = {}
    for rank in range(max(map(len, queues), default=0)):
        order.update((queue[rank], None) for queue in queues if rank < len(queue))
    return list(order)


def unknown_plan(targets: list[str], exclude: list[str], count: int,
                 share: float = SOUND_ALIKE_SHARE) -> list[str]:
    """The word of each of `count` unknown clips, deterministic.

    round(share * count) clips say the sound-alikes (unknown_sound_alikes), cycling from the first;
    the others say the other unknown_words, in list order: all of them in turn as often as the count
    allows, then evenly spaced ones for the rest, so every part of the lexicon is heard. Sound-alike
    clips are spread evenly among the others. No sound-alikes: all clips go to the other words.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the sound-alike share must be between 0 and 1, got {share}")
    words = unknown_words(targets, exclude) if count > 0 else []
    if not words:
        return []
    alikes = unknown_sound_alikes(targets, exclude) if share > 0 else []
    hard = set(alikes)
    others = [w for w in words if w not in hard]
    n_alike = 0 if not alikes else count if not others else int(round(share * count))
    rest = count - n_alike
    full, remainder = divmod(rest, len(others)) if others else (0, 0)
    other_order = others * full + [others[k * len(others) // remainder] for k in range(remainder)]
    plan, taken = [], 0
    for i in range(count):
        if (i + 1) * n_alike // count > taken:  # the i-th clip is the next sound-alike one
            plan.append(alikes[taken % len(alikes)])
            taken += 1
        else:
            plan.append(other_order[i - taken])
    return plan
