"""python -m train.openset: does the model say "neither" when it should? The open-set benchmark.

On speaker-disjoint folds of any number of real class folders (`--data DIR ...`: `--words` are the
targets, every other class folder a non-target word, `_background_noise_` background recordings;
train/folds.py: a speaker is on one side in all folders, and each fold holds some non-target words
out of training altogether), it trains

    closed   the target words only                    (what `python -m train` does on them)
    open     targets / unknown / silence              (unknown: the seen other words, real, plus
                                                       --synthetic-unknown eSpeak NG words; silence:
                                                       noise crops and generated non-speech)

with the default recipe, keeps them as OUT/closed/model.pt and OUT/open/model.pt (fold k > 0:
OUT/fold<k>/...), and scores both on test material only:

    target_acc                      target clips of the test speakers labelled correctly
    false_accept_rate               seen other words' test clips labelled as a target
    unseen_word_false_accept_rate   held-out words' test clips (never in training) labelled as a target
    noise_false_accept_rate         1 s crops of the test regions of the background recordings
    nonspeech_false_accept_rate     generated non-speech (tones, chords, chirps, clicks, ...)
    false_accepts_per_hour          detections when scanning a --negative-hours recording of test
                                    material only: never-seen words, non-speech, noise, pauses
    scan_recall                     targets found with their label when laid into a recording
    frr_at_fa_per_hour              false rejects at 0.5 / 1 / 2 false accepts an hour, the threshold
                                    swept over the same two scans (train/det_curve.py: the DET curve)

`--folds K` repeats it over K folds (each speaker tested once, each non-target word held out once)
and reports means (the DET figures pooled over folds); `--synthetic N` trains both models on N
eSpeak NG clips per class instead (no recorded speech in training) and scores them on the same real
test material; `--score-only DIR` trains nothing and scores again the models a run with `--out DIR`
kept. The last line is one JSON object: {"closed": {...}, "open": {...}, ...}.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from preprocess import cli, nonspeech, openworld, silence, sources
from preprocess import prepare as prepare_cli
from preprocess import synth as synth_cli
from preprocess.render import load_audio
from train import det_curve, detect, folds, recordings
from train import train as train_cli
from train.folds import Material
from train.predict import Predictor

TARGETS = ["yes", "no"]
UNKNOWN_PCT = 25.0          # open model: shares of each split (balanced: one class in four each)
SILENCE_PCT = 25.0
SYNTHETIC_UNKNOWN = 300     # eSpeak NG clips of other words added to the unknown class (docs/benchmarks.md)
NOISE_CROPS = 300           # test noise crops scored per fold
NONSPEECH_CLIPS = 300       # generated non-speech clips scored per fold
NEGATIVE_HOURS = 2.0        # resolves 0.5 false accepts an hour (one in the whole recording)
SAMPLE_RATE = recordings.SAMPLE_RATE
VAL_PCT = folds.VAL_PCT


# ---------------------------------------------------------------- training data

def _link(path: Path, into: Path, name: str) -> None:
    into.mkdir(parents=True, exist_ok=True)
    link = into / name
    if not link.exists():
        link.symlink_to(path.resolve())


def synth_clips(folder: Path, targets: list[str], split: str | None = None) -> tuple[list, list]:
    """(target clips, other-word clips) of a preprocess.synth folder as (word, path), by split."""
    found = ([], [])
    for clip in sources.folder_clips(folder, None, val_pct=VAL_PCT, test_pct=0):
        if split is None or clip.split == split:
            found[clip.label not in targets].append((clip.label, clip.path, clip.split))
    return found


def build_audio(material: Material, folder: Path, seed: int, targets_words: list[str],
                synthetic: Path | None, synthetic_unknown: Path | None) -> None:
    """folder/<train|val|test>/<class>/ (links and noise crops): the open model's data; the closed one
    uses its target folders. `synthetic`: train/val come from that synth folder, test stays real.
    `synthetic_unknown`: that synth folder's other words join the unknown candidates of train/val."""
    shutil.rmtree(folder, ignore_errors=True)
    targets = {s: list(v) for s, v in material.targets.items()}
    others = {s: list(v) for s, v in material.others.items()}
    if synthetic is not None:
        for split in ("train", "val"):
            targets[split], others[split] = [], []
        made_targets, made_others = synth_clips(synthetic, targets_words)
        for word, path, split in made_targets:
            targets[split].append((word, path))
        for word, path, split in made_others:
            others[split].append((word, path))
    if synthetic_unknown is not None:
        for word, path, split in synth_clips(synthetic_unknown, targets_words)[1]:
            others[split].append((f"synth-{word}", path))
    for split in sources.SPLITS:
        for word, path in targets[split]:
            _link(path, folder / split / word, path.name)
    fake = [sources.Clip(f"{s}/{w}/{p.name}", w, s, p) for s in sources.SPLITS for w, p in targets[s]]
    unknown_counts = openworld.split_counts(fake, UNKNOWN_PCT, SILENCE_PCT)
    candidates = [sources.Clip(f"{w}/{p.name}", w, s, p) for s in sources.SPLITS for w, p in others[s]]
    unknown, notes = openworld.sample_unknown(candidates, unknown_counts, seed)
    for clip in unknown:
        _link(clip.path, folder / clip.split / openworld.UNKNOWN, openworld.png_stem(clip) + clip.path.suffix)
    crops, more = silence.plan_crops(material.regions, openworld.split_counts(fake, SILENCE_PCT, UNKNOWN_PCT),
                                       seed)
    for split in sources.SPLITS:
        silence.write_crops([c for c in crops if c.split == split], folder / split / openworld.SILENCE)
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
    crops, _ = silence.plan_crops(material.regions, {"train": 0, "val": 0, "test": count}, seed + 7919,
                                    digital_pct=0.0, nonspeech_pct=0.0)
    return [recordings.to_16k(*c.samples()) for c in crops]


def scored_nonspeech(seed: int) -> list[np.ndarray]:
    """The generated non-speech clips scored (the training sets' are nonspeech.clip(seed, split, i):
    here another seed, so never the same clips)."""
    return [nonspeech.clip(seed + 7919, "test", i)[0] for i in range(NONSPEECH_CLIPS)]


def scanner_settings(predictor: Predictor, scanner: dict | None) -> dict:
    """detect.scan's hop_s / smooth_s / threshold: those given, else the model's defaults."""
    return {"hop_s": predictor.default_hop_s(), "smooth_s": detect.DEFAULT_SMOOTH_S,
            "threshold": detect.DEFAULT_THRESHOLD, **{k: v for k, v in (scanner or {}).items() if v is not None}}


def scan_scores(predictor: Predictor, material: Material, negatives: list, hours: float, seed: int,
                scanner: dict | None = None) -> tuple[dict, dict]:
    """Two scans: `hours` of test material with no target in it (`negatives`: (word, wave) clips laid
    in turn over test background) and the test targets laid between negatives; -> (false accepts per
    hour and scan recall at the scanner's threshold, the DET sweep of both scans)."""
    scanner = scanner_settings(predictor, scanner)
    started = time.perf_counter()
    negative = detect.scan(predictor, "negative", recordings.negative_blocks(material, negatives, hours, seed),
                           estimate=int(hours * 3600 * SAMPLE_RATE), **scanner)
    targets = [(w, load_audio(p, predictor.settings)) for w, p in material.targets["test"]]
    words = [(w, x) for w, x in negatives if w != "nonspeech"]
    mixed_words = [x for pair in zip(targets, words) for x in pair] + targets[len(words):]
    mixed, laid = recordings.long_recording(material, mixed_words, 0.0, seed + 1)
    positive = detect.scan(predictor, "positive", mixed, **scanner)
    laid_targets = [(w, a, b) for w, a, b in laid if w in predictor.targets]
    misses = scan_misses(positive, predictor.classes, laid_targets)
    recalled = len(laid_targets) - sum(misses.values())
    hours = negative.duration_s / 3600
    seconds = time.perf_counter() - started  # both recordings made, rendered window by window, scanned
    return ({"false_accepts": len(negative.detections), "negative_hours": round(hours, 3),
             "scan_seconds": round(seconds, 1),
             "scan_x_real_time": round((negative.duration_s + positive.duration_s) / seconds, 1),
             "false_accepts_per_hour": round(len(negative.detections) / hours, 3),
             "scan_recall": round(recalled / max(1, len(laid_targets)), 4), "scan_targets": len(laid_targets),
             "scan_misses": misses, **scanner},
            det_curve.sweep(negative, positive, predictor.classes, laid_targets))


def scan_misses(scan, classes: list[str], laid: list[tuple[str, float, float]]) -> dict:
    """Laid clips (word, start_s, end_s) with no detection of their word within MATCH_SLACK_S, by the
    first stage that lost them: 'model' (no window overlapping the clip gives the word the threshold),
    'gate' (only gated windows do), 'smoothing' (the smoothed posterior never reaches it there),
    'detection' (it does, yet no detection matches: refractory, a neighbour, the matching slack)."""
    misses = dict.fromkeys(("model", "gate", "smoothing", "detection"), 0)
    for word, start, end in laid:
        if det_curve.found(scan.detections, word, start, end):
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


def score(model_path: Path, material: Material, hours: float, seed: int, scanner: dict | None = None
          ) -> tuple[dict, dict]:
    """Every figure for one model, and its DET sweep."""
    predictor = Predictor(model_path)
    torch.set_num_threads(1)
    settings = predictor.settings
    targets = material.targets["test"]
    labels = classify(predictor, [load_audio(p, settings) for _, p in targets])
    seen = [(w, load_audio(p, settings)) for w, p in material.others["test"]]
    unseen = [(w, load_audio(p, settings)) for w, p in material.unseen]
    nonspeech_clips = scored_nonspeech(seed)

    def accept_rate(waves: list[np.ndarray]) -> float | None:
        answers = classify(predictor, waves)
        return round(float(np.mean([lab in predictor.targets for lab in answers])), 4) if answers else None

    result = {
        "target_acc": round(float(np.mean([lab == w for lab, (w, _) in zip(labels, targets)])), 4),
        "false_accept_rate": accept_rate([x for _, x in seen]),
        "unseen_word_false_accept_rate": accept_rate([x for _, x in unseen]),
        "noise_false_accept_rate": accept_rate(test_noise_crops(material, NOISE_CROPS, seed)),
        "nonspeech_false_accept_rate": accept_rate(nonspeech_clips),
        "unseen_words": {w: accept_rate([x for v, x in unseen if v == w]) for w in material.held_out},
        "test_targets": len(targets), "test_seen_words": len(seen), "test_unseen_words": len(unseen),
    }
    negatives = (unseen or seen) + [("nonspeech", x) for x in nonspeech_clips]
    scans, curve = scan_scores(predictor, material, negatives, hours, seed, scanner)
    result.update(scans)
    result["frr_at_fa_per_hour"] = det_curve.frr_at(curve)
    return result, curve


# ---------------------------------------------------------------- one fold

def fold_folder(root: Path, fold: int) -> Path:
    return root if fold == 0 else root / f"fold{fold}"


def synthesize(args, material: Material, work: Path, per_word: int, unknown: int, name: str) -> Path:
    """preprocess.synth into work/name: the targets and `unknown` other words (none of the --data
    words: those stay real, and the held-out ones never heard), over the fold's train noise."""
    out = work / name
    noise = write_train_noise(material, work / "train_noise")
    extra = (["--unknown-exclude", *args.corpus.words] if args.corpus.words else []) + (
        ["--noise-dir", str(noise)] if any(noise.iterdir()) else [])  # else synth's generated noise
    code = synth_cli.main(["--words", *args.words, "--per-word", str(per_word), "--unknown", str(unknown),
                           *extra, "--out", str(out), "--seed", str(args.seed), "--workers", str(args.workers), "--quiet"])
    if code == cli.EXIT_UNUSABLE:  # exit 1, some clips failed (named on stderr): the others will do
        raise SystemExit(f"synth failed (exit {code})")
    return out


def run_fold(args, fold: int) -> dict:
    folder = fold_folder(args.out, fold)
    work = folder / "work"
    material = folds.fold_material(args.corpus, fold, args.folds)
    synthetic = synthetic_unknown = None
    if args.synthetic:
        synthetic = synthesize(args, material, work, args.synthetic, args.synthetic, "synth")
    elif args.synthetic_unknown:
        synthetic_unknown = synthesize(args, material, work, args.synthetic_unknown, args.synthetic_unknown,
                                       "synth_unknown")
    build_audio(material, work / "audio", args.seed, args.words, synthetic, synthetic_unknown)
    for name, words in (("closed", args.words), ("open", None)):
        if name not in args.models:
            continue
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
    """Both models of one fold (folder/closed, folder/open), scored on the fold's test material;
    each model's DET sweep is kept beside it (det.json)."""
    results = {"held_out_words": material.held_out}
    for name in args.models:
        results[name], curve = score(folder / name / "model.pt", material, args.negative_hours, args.seed + fold,
                                     scanner={"hop_s": args.hop, "smooth_s": args.smooth,
                                              "threshold": args.threshold})
        (folder / name / "det.json").write_text(json.dumps(curve))
        results[name]["det"] = curve
        print(f"fold {fold} {name}: {json.dumps({k: v for k, v in results[name].items() if k != 'det'})}",
              file=sys.stderr)
    return results


def rescore_fold(args, fold: int) -> dict:
    """--score-only: the models an earlier run kept, scored again (same split, seed, recordings)."""
    material = folds.fold_material(args.corpus, fold, args.folds)
    return score_fold(args, fold, fold_folder(args.score_only, fold), material)


MODELS = ("closed", "open")
KEYS = ("target_acc", "false_accept_rate", "unseen_word_false_accept_rate", "noise_false_accept_rate",
        "nonspeech_false_accept_rate", "false_accepts_per_hour", "scan_recall", "negative_hours")


def summarise(results: list[dict], models=MODELS) -> dict:
    """Means over folds (folds without a figure, e.g. no held-out word, left out); the DET figures
    from the folds' sweeps pooled (det_curve.pooled)."""
    summary = {}
    for name in models:
        values = {k: [f[name][k] for f in results if f[name][k] is not None] for k in KEYS}
        summary[name] = {k: round(float(np.mean(v)), 4) if v else None for k, v in values.items()}
        summary[name]["negative_hours"] = round(float(sum(values["negative_hours"])), 3)
        curve = det_curve.pooled([f[name]["det"] for f in results])
        summary[name]["frr_at_fa_per_hour"] = det_curve.frr_at(curve)
        summary[name]["operating_points"] = det_curve.operating_points(curve)
        summary[name]["det"] = curve
    return summary


def table(summary: dict, models=MODELS) -> str:
    keys = KEYS + ("frr@0.5/h", "frr@1/h", "frr@2/h")
    lines = ["| model | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
    for name in models:
        row = [summary[name][k] for k in KEYS] + list(summary[name]["frr_at_fa_per_hour"].values())
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:g}" for v in row) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.openset",
        description="Open-set benchmark: train a targets-only ('closed') and a targets/unknown/silence ('open') "
                    "model on speaker- and word-disjoint folds of real class folders and score both on test "
                    "material only: target accuracy, false-accept rates on seen and never-seen words, noise "
                    "crops and generated non-speech, false accepts per hour on hours of test-only audio, scan "
                    "recall, and false rejects at 0.5/1/2 false accepts an hour (a DET curve: OUT/det.png).",
        epilog="Example: python -m train.openset --out openset/ --data ../shared/data/speech_commands_real "
               "../shared/data/speech_commands_more ../shared/data/speech_commands_other_words --folds 5. "
               "Last line: one JSON object {\"closed\": {...}, \"open\": {...}} (means over folds). Exit "
               "status 0 on success, 2 for unusable options or data.")
    parser.add_argument("--out", type=Path, help="working and output folder (required unless --score-only)")
    parser.add_argument("--score-only", type=Path, metavar="DIR",
                        help="train nothing: score again the models a run with --out DIR kept "
                             "(DIR/closed, DIR/open, DIR/fold<k>/...), with the same --data, --folds and --seed")
    parser.add_argument("--data", type=Path, nargs="+", default=[], metavar="DIR",
                        help="folders of class folders (several: split together, each speaker on one side "
                             "in all of them); file names need speaker ids (SPEAKER_nohash_N.wav)")
    parser.add_argument("--words", nargs="+", default=TARGETS, metavar="WORD",
                        help="the target words; every other class folder is a non-target word (default: yes no)")
    parser.add_argument("--real", type=Path, action="append", default=[], help=argparse.SUPPRESS)  # old spelling
    parser.add_argument("--other", type=Path, action="append", default=[], help=argparse.SUPPRESS)  # of --data
    parser.add_argument("--folds", type=int, default=1,
                        help="speaker-disjoint folds, each the test side once; 1: one split with "
                             f"{folds.SINGLE_TEST_PCT:g}%% test speakers (default: %(default)s)")
    parser.add_argument("--fold", type=int, default=None, metavar="K",
                        help="run only fold K of --folds (0-based), e.g. to spread the folds over machines; "
                             "its outputs go where the whole run would put them (DIR/fold<K>)")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="train on N eSpeak NG clips per class (targets, unknown) instead of recorded "
                             "speech; scored on the same real test material")
    parser.add_argument("--synthetic-unknown", type=int, default=SYNTHETIC_UNKNOWN, metavar="N",
                        help="eSpeak NG clips of N other words (none of the --data words) join the real ones "
                             "as unknown candidates (0: real words only; default: %(default)s)")
    parser.add_argument("--negative-hours", type=float, default=NEGATIVE_HOURS, metavar="H",
                        help="length of the test-only negative recording per fold (default: %(default)s)")
    parser.add_argument("--hop", type=float, default=None, metavar="S",
                        help="scanner: seconds between windows (default: the model's, see python -m train.predict)")
    parser.add_argument("--smooth", type=float, default=None, metavar="S",
                        help=f"scanner: seconds of posterior averaging (default {detect.DEFAULT_SMOOTH_S})")
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help=f"scanner: smoothed confidence of a detection (default {detect.DEFAULT_THRESHOLD})")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training budget per model (default: the recipe's, see python -m train)")
    parser.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                        help="one more option for python -m train (repeatable, e.g. --train-arg=--speed=0.1)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="train and score only these (e.g. open, to compare open-model recipes; default: both)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=cli.available_cores(),
                        help="processes for rendering and synthesis (default: %(default)s)")
    return parser


def fold_ids(args) -> list[int]:
    return list(range(args.folds)) if args.fold is None else [args.fold]


def check(args) -> None:
    """Unusable options or data -> cli.SpecVisionError (exit 2) before anything is trained."""
    if args.folds < 1 or args.synthetic < 0 or args.synthetic_unknown < 0 or args.negative_hours <= 0:
        raise cli.SpecVisionError("--folds must be >= 1, --synthetic and --synthetic-unknown >= 0, "
                             "--negative-hours > 0")
    if ((args.hop is not None and args.hop <= 0) or (args.smooth is not None and args.smooth < 0)
            or (args.threshold is not None and not 0 <= args.threshold <= 1)):
        raise cli.SpecVisionError("--hop must be > 0, --smooth >= 0, --threshold in 0..1")
    if args.fold is not None and not 0 <= args.fold < args.folds:
        raise cli.SpecVisionError(f"--fold must be in 0..{args.folds - 1}")
    if (args.out is None) == (args.score_only is None):
        raise cli.SpecVisionError("give --out (train and score) or --score-only DIR (score kept models)")
    args.data = list(args.data) + args.real + args.other
    if not args.data:
        raise cli.SpecVisionError("--data: give the folders of class folders to split (e.g. --data DIR1 DIR2)")
    args.corpus = folds.collect(args.data, args.words)
    if args.score_only is not None:
        missing = [str(fold_folder(args.score_only, k) / name / "model.pt") for k in fold_ids(args)
                   for name in args.models if not (fold_folder(args.score_only, k) / name / "model.pt").is_file()]
        if missing:
            raise cli.SpecVisionError(f"--score-only: no model at {', '.join(missing)}")


@cli.command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check(args)
    args.train_args = (["--epochs", str(args.epochs)] if args.epochs else []) + args.train_arg
    start = time.perf_counter()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), args.workers)))
    fold_run = run_fold if args.score_only is None else rescore_fold
    ids = fold_ids(args)
    results = [fold_run(args, fold) for fold in tqdm(ids, desc="folds", disable=len(ids) < 2)]
    summary = summarise(results, args.models)
    out = args.out or args.score_only
    det_curve.plot({name: summary[name]["det"] for name in args.models}, out / "det.png")
    (out / "det.json").write_text(json.dumps({name: summary[name].pop("det") for name in args.models}))
    for fold in results:
        for name in args.models:
            fold[name].pop("det")
    summary.update(folds=args.folds, fold=args.fold, synthetic=args.synthetic, synthetic_unknown=args.synthetic_unknown,
                   words=args.words, data=[str(d) for d in args.data], per_fold=results,
                   seconds=round(time.perf_counter() - start, 1))
    print(table(summary, args.models))
    print(f"DET curve: {out / 'det.png'}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    cli.run(main)
