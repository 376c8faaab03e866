"""python -m train.openset: does the model say "neither" when it should? The open-set benchmark.

In one run, on one speaker-disjoint split of the real clips (yes/no and other words, the speakers of
both folders split together), it trains

    closed   yes / no                            (what `python -m train` did before)
    open     yes / no / unknown / silence        (unknown: other words; silence: noise crops)

with the default recipe, keeps them as OUT/closed/model.pt and OUT/open/model.pt (fold k > 0:
OUT/fold<k>/...), and scores both on test material only:

    target_acc                 yes/no clips of the test speakers labelled correctly
    false_accept_rate          other-word clips of the test speakers labelled yes or no
    noise_false_accept_rate    1 s crops of the test regions of the background recordings labelled yes/no
    nonspeech_false_accept_rate  generated non-speech (preprocess/nonspeech.py: tones, chords, chirps,
                               clicks, ...) labelled yes/no; a seed and split no training set uses
    nonspeech_false_accepts_per_hour  detections when scanning those clips laid with pauses over test noise
    false_accepts_per_hour     detections when scanning a >= --long-minutes recording made only of
                               test material (other-word clips over test noise at varied gains, pauses)
    scan_recall                share of the yes/no test clips found with their label when laid into
                               such a recording

`--folds K` repeats it over K speaker-disjoint folds (each fold's speakers are the test side once)
and reports means; `--synthetic N` trains both models on N eSpeak NG clips per class instead (no
recorded speech in training; the background recordings' train regions are used) and scores them on
the same real test material; `--score-only DIR` trains nothing and scores again the models a run with
`--out DIR` kept (with `--hop`, `--smooth`, `--threshold`: at other scanner settings). Missed scan
clips are counted by the stage that lost them (`scan_misses`). The last
line is one JSON object: {"closed": {...}, "open": {...}, ...}.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from preprocess import cli, nonspeech, openworld, sources
from preprocess import prepare as prepare_cli
from preprocess import synth as synth_cli
from preprocess.render import RenderSettings, load_audio, prepare_waveform
from train import detect
from train import train as train_cli
from train.predict import Predictor

REAL = Path("../shared/data/speech_commands_real")
OTHER = Path("../shared/data/speech_commands_other_words")
TARGETS = ["yes", "no"]
FOLD_SALT = b"specvision-openset-fold-v1:"
VAL_SALT = b"specvision-openset-val-v1:"
SINGLE_TEST_PCT = 20.0      # --folds 1: test speakers (one fold of five)
VAL_PCT = 12.5              # of the non-test speakers: validation (early stopping)
UNKNOWN_PCT = 25.0          # open model: shares of each split (balanced: one class in four each)
SILENCE_PCT = 25.0
NOISE_CROPS = 300           # test noise crops scored per fold
NONSPEECH_CLIPS = 300       # generated non-speech clips scored per fold
LONG_MINUTES = 10.0
WORD_GAP_S = (1.0, 4.0)     # long recordings: pause between words
WORD_GAIN_DB = (-12.0, 0.0)    # level of a laid word re. its recording
NOISE_GAIN_DB = (-40.0, -5.0)  # level of a background stretch re. its recording
PAUSE_SHARE = 0.25          # share of background stretches that are near-silence instead of noise
MATCH_SLACK_S = 0.3         # a detection belongs to a laid clip if its time is within the clip +- this
SAMPLE_RATE = 16000
SYNTH_EXCLUDE = ["bed", "cat", "happy"]  # the real other words scored here: unheard by synthetic models


# ---------------------------------------------------------------- speaker folds

def _percent(salt: bytes, key: str) -> float:
    return int.from_bytes(hashlib.sha256(salt + key.encode()).digest()[:8], "big") / 2 ** 64 * 100.0


def split_of(key: str, fold: int, folds: int) -> str:
    """Split of a speaker (or noise chunk) in fold `fold`: test if its hash falls in the fold's band."""
    p = _percent(FOLD_SALT, key)
    width = SINGLE_TEST_PCT if folds == 1 else 100.0 / folds
    if fold * width <= p < (fold + 1) * width:
        return "test"
    return "val" if _percent(VAL_SALT, key) < VAL_PCT else "train"


@dataclasses.dataclass
class Material:
    """One fold's clips per split: targets {split: [(word, path)]}, other words, noise regions."""
    targets: dict
    others: dict
    regions: list


def real_material(real: Path, other: Path, fold: int, folds: int) -> Material:
    targets = {s: [] for s in sources.SPLITS}
    others = {s: [] for s in sources.SPLITS}
    for root, words, into in ((real, TARGETS, targets), (other, None, others)):
        for clip in sources.folder_clips(root, words):
            if words is None and clip.label in TARGETS:
                continue
            into[split_of(sources.group_id(clip.path.name), fold, folds)].append((clip.label, clip.path))
    noise, _ = openworld.noise_files([real / openworld.NOISE_FOLDER])
    regions = openworld.noise_regions(noise, lambda key: split_of(key, fold, folds))
    return Material(targets, others, regions)


# ---------------------------------------------------------------- training data

def _link(path: Path, into: Path, name: str) -> None:
    into.mkdir(parents=True, exist_ok=True)
    link = into / name
    if not link.exists():
        link.symlink_to(path.resolve())


def build_audio(material: Material, folder: Path, seed: int, synthetic: Path | None) -> None:
    """folder/<train|val|test>/<class>/ (links and noise crops): the open model's data; the closed one
    uses its yes/no folders. Synthetic: train/val come from the synth folder, test stays real."""
    shutil.rmtree(folder, ignore_errors=True)
    targets = {s: list(v) for s, v in material.targets.items()}
    others = {s: list(v) for s, v in material.others.items()}
    if synthetic is not None:
        for split in ("train", "val"):
            targets[split], others[split] = [], []
        for clip in sources.folder_clips(synthetic, None, val_pct=VAL_PCT, test_pct=0):
            (targets if clip.label in TARGETS else others)[clip.split].append((clip.label, clip.path))
    for split in sources.SPLITS:
        for word, path in targets[split]:
            _link(path, folder / split / word, path.name)
    fake = [sources.Clip(f"{s}/{w}/{p.name}", w, s, p) for s in sources.SPLITS for w, p in targets[s]]
    unknown_counts = openworld.split_counts(fake, UNKNOWN_PCT, SILENCE_PCT)
    candidates = [sources.Clip(f"{w}/{p.name}", w, s, p) for s in sources.SPLITS for w, p in others[s]]
    unknown, notes = openworld.sample_unknown(candidates, unknown_counts, seed)
    for clip in unknown:
        _link(clip.path, folder / clip.split / openworld.UNKNOWN, openworld.png_stem(clip) + clip.path.suffix)
    crops, more = openworld.plan_crops(material.regions, openworld.split_counts(fake, SILENCE_PCT, UNKNOWN_PCT),
                                       seed)
    for split in sources.SPLITS:
        openworld.write_crops([c for c in crops if c.split == split], folder / split / openworld.SILENCE)
    for note in notes + more:
        print(f"note: {note}", file=sys.stderr)


def write_train_noise(material: Material, folder: Path) -> Path:
    """The train/val regions of the background recordings as files (for synth's --noise-dir)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, region in enumerate(r for r in material.regions if r.split != "test"):
        data, rate = sf.read(str(region.path), start=region.start, frames=region.end - region.start,
                             dtype="float32", always_2d=True)
        if len(data) >= rate:
            sf.write(str(folder / f"{Path(region.name).stem}_{index:03d}.wav"), data.mean(axis=1), rate)
    return folder


# ---------------------------------------------------------------- scoring

def classify(predictor: Predictor, waves: list[np.ndarray]) -> list[str]:
    labels = []
    for i in range(0, len(waves), 64):
        batch = torch.stack([predictor.audio_tensor(w) for w in waves[i:i + 64]])
        labels += [predictor.classes[j] for j in predictor.logits(batch).argmax(1).tolist()]
    return labels


def test_noise_crops(material: Material, count: int, seed: int) -> list[np.ndarray]:
    crops, _ = openworld.plan_crops(material.regions, {"train": 0, "val": 0, "test": count}, seed + 7919,
                                    digital_pct=0.0, nonspeech_pct=0.0)
    return [to_16k(*c.samples()) for c in crops]


def to_16k(wave: np.ndarray, rate: int) -> np.ndarray:
    return prepare_waveform(wave, rate, RenderSettings(sample_rate=SAMPLE_RATE), fit=False)


def background(material: Material, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Test-region noise stretches (2-10 s) at varied gains and near-silent pauses, 50 ms fades."""
    test_regions = [r for r in material.regions if r.split == "test"]
    pieces, total = [], 0
    while total < seconds * SAMPLE_RATE:
        length = rng.uniform(2.0, 10.0)
        if rng.random() < PAUSE_SHARE or not test_regions:
            piece = rng.standard_normal(int(length * SAMPLE_RATE)).astype(np.float32) * np.float32(1e-4)
        else:
            region = test_regions[int(rng.integers(len(test_regions)))]
            frames = min(region.end - region.start, int(length * region.rate))
            start = region.start + int(rng.integers(0, region.end - region.start - frames + 1))
            data, rate = sf.read(str(region.path), start=start, frames=frames, dtype="float32", always_2d=True)
            piece = to_16k(data.mean(axis=1), rate) * np.float32(10 ** (rng.uniform(*NOISE_GAIN_DB) / 20))
        fade = min(len(piece) // 2, SAMPLE_RATE // 20)  # no clicks where pieces meet
        if fade:
            ramp = np.linspace(0, 1, fade, dtype=np.float32)
            piece[:fade] *= ramp
            piece[-fade:] *= ramp[::-1]
        pieces.append(piece)
        total += len(piece)
    return np.concatenate(pieces)


def long_recording(material: Material, words: list[tuple[str, np.ndarray]], minutes: float, seed: int
                   ) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Every word of `words` laid once, in order, with 1-4 s pauses, into test background (and more
    background to reach `minutes`); -> (waveform at 16 kHz, [(word, start_s, end_s)] per laid clip)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x10C6]))
    laid, position = [], rng.uniform(*WORD_GAP_S)
    for word, wave in words:
        laid.append((word, position, position + len(wave) / SAMPLE_RATE))
        position = laid[-1][2] + rng.uniform(*WORD_GAP_S)
    total = max(minutes * 60, position)
    bed = background(material, total, rng)[:int(total * SAMPLE_RATE)]
    for (word, start, _), (_, wave) in zip(laid, words):
        first = int(round(start * SAMPLE_RATE))
        piece = wave[:len(bed) - first] * np.float32(10 ** (rng.uniform(*WORD_GAIN_DB) / 20))
        bed[first:first + len(piece)] += piece
    return np.clip(bed, -1.0, 1.0), laid


def scanner_settings(predictor: Predictor, scanner: dict | None) -> dict:
    """detect.scan's hop_s / smooth_s / threshold: those given, else the model's defaults."""
    return {"hop_s": predictor.default_hop_s(), "smooth_s": detect.DEFAULT_SMOOTH_S,
            "threshold": detect.DEFAULT_THRESHOLD, **{k: v for k, v in (scanner or {}).items() if v is not None}}


def scan_scores(predictor: Predictor, material: Material, minutes: float, seed: int, gate_db: float,
                scanner: dict | None = None) -> dict:
    """False accepts per hour and scan recall; `scanner`: detect.scan's hop_s / smooth_s / threshold
    where given (else the model's defaults); the settings used are part of the result."""
    scanner = scanner_settings(predictor, scanner)
    settings = predictor.settings
    others = [(w, load_audio(p, settings)) for w, p in material.others["test"]]
    targets = [(w, load_audio(p, settings)) for w, p in material.targets["test"]]
    quiet, _ = long_recording(material, others, minutes, seed)  # every test other word, once
    found = detect.scan(predictor, "long-others", quiet, gate_db=gate_db, **scanner).detections
    hours = len(quiet) / SAMPLE_RATE / 3600
    mixed_words = [x for pair in zip(targets, others) for x in pair] + targets[len(others):]
    mixed, laid = long_recording(material, mixed_words, 0.0, seed + 1)  # each target, between other words
    scan = detect.scan(predictor, "long-targets", mixed, gate_db=gate_db, **scanner)
    laid_targets = [(w, a, b) for w, a, b in laid if w in TARGETS]
    misses = scan_misses(scan, predictor.classes, laid_targets)
    recalled = len(laid_targets) - sum(misses.values())
    return {"false_accepts": len(found), "long_minutes": round(hours * 60, 2),
            "false_accepts_per_hour": round(len(found) / hours, 2),
            "scan_recall": round(recalled / max(1, len(laid_targets)), 4), "scan_targets": len(laid_targets),
            "scan_misses": misses, "gate_db": gate_db, **scanner}


def scan_misses(scan, classes: list[str], laid: list[tuple[str, float, float]]) -> dict:
    """Laid clips (word, start_s, end_s) with no detection of their word within MATCH_SLACK_S, by the
    first stage that lost them: 'model' (no window overlapping the clip gives the word the threshold),
    'gate' (only gated windows do), 'smoothing' (the smoothed posterior never reaches it there),
    'detection' (it does, yet no detection matches: refractory, a neighbour, the matching slack)."""
    misses = dict.fromkeys(("model", "gate", "smoothing", "detection"), 0)
    for word, start, end in laid:
        if any(d.label == word and start - MATCH_SLACK_S <= d.time <= end + MATCH_SLACK_S
               for d in scan.detections):
            continue
        k = classes.index(word)
        over = (scan.starts_s < end) & (scan.starts_s + scan.window_s > start)
        raw = over & (scan.probs[:, k] >= scan.threshold)
        if not raw.any():
            misses["model"] += 1
        elif scan.window_active is not None and not (raw & scan.window_active).any():
            misses["gate"] += 1
        elif not (over & (scan.smoothed[:, k] >= scan.threshold)).any():
            misses["smoothing"] += 1
        else:
            misses["detection"] += 1
    return misses


def scored_nonspeech(seed: int) -> list[np.ndarray]:
    """The generated non-speech clips scored (the training sets' are nonspeech.clip(seed, split, i):
    here another seed, so never the same clips)."""
    return [nonspeech.clip(seed + 7919, "test", i)[0] for i in range(NONSPEECH_CLIPS)]


def nonspeech_scan(predictor: Predictor, material: Material, clips: list[np.ndarray], seed: int,
                   gate_db: float, scanner: dict | None = None) -> dict:
    """False accepts per hour on a recording of the scored non-speech clips, each laid once with 1-4 s
    pauses over test background (music, beeps and clicks between the words of a real room)."""
    scanner = scanner_settings(predictor, scanner)
    wave, _ = long_recording(material, [("nonspeech", w) for w in clips], 0.0, seed + 31)
    found = detect.scan(predictor, "long-nonspeech", wave, gate_db=gate_db, **scanner).detections
    hours = len(wave) / SAMPLE_RATE / 3600
    return {"nonspeech_false_accepts_per_hour": round(len(found) / hours, 2),
            "nonspeech_minutes": round(hours * 60, 2)}


def score(model_path: Path, material: Material, minutes: float, seed: int, compare_gates: bool,
          scanner: dict | None = None) -> dict:
    """Every figure for one model; the scans use the model's default energy gate (with
    compare_gates, both gate settings are scanned and reported under 'gate_variants')."""
    predictor = Predictor(model_path)
    torch.set_num_threads(1)
    settings = predictor.settings
    targets = material.targets["test"]
    labels = classify(predictor, [load_audio(p, settings) for _, p in targets])
    other_labels = classify(predictor, [load_audio(p, settings) for _, p in material.others["test"]])
    noise_labels = classify(predictor, test_noise_crops(material, NOISE_CROPS, seed))
    nonspeech_clips = scored_nonspeech(seed)
    nonspeech_labels = classify(predictor, nonspeech_clips)

    def accept_rate(answers: list[str]) -> float:
        return round(float(np.mean([lab in predictor.targets for lab in answers])), 4)

    result = {
        "target_acc": round(float(np.mean([lab == w for lab, (w, _) in zip(labels, targets)])), 4),
        "false_accept_rate": accept_rate(other_labels),
        "noise_false_accept_rate": accept_rate(noise_labels),
        "nonspeech_false_accept_rate": accept_rate(nonspeech_labels),
        "test_targets": len(targets), "test_other_words": len(other_labels), "test_noise_crops": len(noise_labels),
    }
    default = predictor.default_gate_db()
    gates = sorted({default, 0.0, detect.ACTIVITY_MARGIN_DB}) if compare_gates else [default]
    scans = {gate: scan_scores(predictor, material, minutes, seed, gate, scanner) for gate in gates}
    result.update(scans[default])
    result.update(nonspeech_scan(predictor, material, nonspeech_clips, seed, default, scanner))
    if compare_gates:
        result["gate_variants"] = list(scans.values())
    return result


# ---------------------------------------------------------------- one fold

def run_fold(args, fold: int) -> dict:
    folder = args.out if fold == 0 else args.out / f"fold{fold}"
    work = folder / "work"
    material = real_material(args.real, args.other, fold, args.folds)
    synthetic = None
    if args.synthetic:
        synthetic = work / "synth"
        noise = write_train_noise(material, work / "train_noise")
        code = synth_cli.main(["--words", *TARGETS, "--per-word", str(args.synthetic), "--unknown",
                               str(args.synthetic), "--unknown-exclude", *SYNTH_EXCLUDE, "--out",
                               str(synthetic), "--seed", str(args.seed), "--noise-dir", str(noise),
                               "--workers", str(args.workers), "--quiet"])
        if code:
            raise SystemExit(f"synth failed (exit {code})")
    build_audio(material, work / "audio", args.seed, synthetic)
    for name, words in (("closed", TARGETS), ("open", None)):
        images = work / f"images_{name}"
        argv = ["--source", "folder", "--root", str(work / "audio"), "--out", str(images), "--force",
                "--workers", str(args.workers), "--quiet"]
        if words:
            argv += ["--words", *words]
        if prepare_cli.main(argv) != 0:
            raise SystemExit(f"preprocess failed for {images}")
        train_argv = ["--images", str(images), "--out", str(folder / name), "--no-progress", "--cache",
                      "--seed", str(args.seed), *args.train_args]
        if train_cli.main(train_argv) != 0:
            raise SystemExit(f"training failed: python -m train {' '.join(train_argv)}")
    return score_fold(args, fold, folder, material)


def score_fold(args, fold: int, folder: Path, material: Material) -> dict:
    """Both models of one fold (folder/closed, folder/open), scored on the fold's test material."""
    results = {}
    for name in ("closed", "open"):
        results[name] = score(folder / name / "model.pt", material, args.long_minutes, args.seed + fold,
                              compare_gates=name == "open" and fold == 0,  # the gate study: one fold
                              scanner={"hop_s": args.hop, "smooth_s": args.smooth, "threshold": args.threshold})
        print(f"fold {fold} {name}: {json.dumps(results[name])}", file=sys.stderr)
    return results


def rescore_fold(args, fold: int) -> dict:
    """--score-only: the models an earlier run kept, scored again (same split, seed, recordings)."""
    folder = args.score_only if fold == 0 else args.score_only / f"fold{fold}"
    return score_fold(args, fold, folder, real_material(args.real, args.other, fold, args.folds))


KEYS = ("target_acc", "false_accept_rate", "noise_false_accept_rate", "nonspeech_false_accept_rate",
        "false_accepts_per_hour", "nonspeech_false_accepts_per_hour", "scan_recall")


def table(summary: dict) -> str:
    lines = ["| model | " + " | ".join(KEYS) + " |", "| --- |" + " ---: |" * len(KEYS)]
    for name in ("closed", "open"):
        lines.append(f"| {name} | " + " | ".join(f"{summary[name][k]:g}" for k in KEYS) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.openset",
        description="Open-set benchmark: train a yes/no ('closed') and a yes/no/unknown/silence ('open') "
                    "model on one speaker-disjoint split and score both on test material only: target "
                    "accuracy, false-accept rates on other words, on noise crops and on generated non-speech, "
                    "false accepts per hour on a long test-only recording and on one of the non-speech, "
                    "and the scanner's recall of yes/no.",
        epilog="Last line: one JSON object {\"closed\": {...}, \"open\": {...}} (means over folds). Exit "
               "status 0 on success, 2 for unusable options or data.")
    parser.add_argument("--out", type=Path, help="working and output folder (required unless --score-only)")
    parser.add_argument("--score-only", type=Path, metavar="DIR",
                        help="train nothing: score again the models a run with --out DIR kept "
                             "(DIR/closed, DIR/open, DIR/fold<k>/...), with the same --folds and --seed")
    parser.add_argument("--real", type=Path, default=REAL, help="yes/no clips (default: %(default)s)")
    parser.add_argument("--other", type=Path, default=OTHER, help="other-word clips (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=1,
                        help="speaker-disjoint folds, each the test side once; 1: one split with "
                             f"{SINGLE_TEST_PCT:g}%% test speakers (default: %(default)s)")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="train on N eSpeak NG clips per class (yes, no, unknown) instead of recorded "
                             "speech; scored on the same real test material")
    parser.add_argument("--long-minutes", type=float, default=LONG_MINUTES,
                        help="length of the test-only long recording (default: %(default)s)")
    parser.add_argument("--hop", type=float, default=None, metavar="S",
                        help="scanner: seconds between windows (default: the model's, see python -m train.predict)")
    parser.add_argument("--smooth", type=float, default=None, metavar="S",
                        help=f"scanner: seconds of posterior averaging (default {detect.DEFAULT_SMOOTH_S})")
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help=f"scanner: smoothed confidence of a detection (default {detect.DEFAULT_THRESHOLD})")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training budget per model (default: the recipe's, see python -m train)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=cli.available_cores(),
                        help="processes for rendering and synthesis (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.folds < 1 or args.synthetic < 0 or args.long_minutes <= 0:
        print("error: --folds must be >= 1, --synthetic >= 0, --long-minutes > 0", file=sys.stderr)
        return 2
    if ((args.hop is not None and args.hop <= 0) or (args.smooth is not None and args.smooth < 0)
            or (args.threshold is not None and not 0 <= args.threshold <= 1)):
        print("error: --hop must be > 0, --smooth >= 0, --threshold in 0..1", file=sys.stderr)
        return 2
    for folder, probe in ((args.real, "yes"), (args.other, None)):
        if not folder.is_dir() or (probe and not (folder / probe).is_dir()):
            print(f"error: {folder}: not a folder of class folders", file=sys.stderr)
            return 2
    if (args.out is None) == (args.score_only is None):
        print("error: give --out (train and score) or --score-only DIR (score kept models)", file=sys.stderr)
        return 2
    if args.score_only is not None:
        missing = [str(args.score_only / (f"fold{k}" if k else "") / name / "model.pt")
                   for k in range(args.folds) for name in ("closed", "open")
                   if not (args.score_only / (f"fold{k}" if k else "") / name / "model.pt").is_file()]
        if missing:
            print(f"error: --score-only: no model at {', '.join(missing)}", file=sys.stderr)
            return 2
    args.train_args = ["--epochs", str(args.epochs)] if args.epochs else []
    start = time.perf_counter()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), args.workers)))
    fold_run = run_fold if args.score_only is None else rescore_fold
    folds = [fold_run(args, fold) for fold in tqdm(range(args.folds), desc="folds", disable=args.folds < 2)]
    summary = {name: {k: round(float(np.mean([f[name][k] for f in folds])), 4) for k in KEYS}
               for name in ("closed", "open")}
    summary["folds"] = args.folds
    summary["synthetic"] = args.synthetic
    summary["per_fold"] = folds
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print(table(summary))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
