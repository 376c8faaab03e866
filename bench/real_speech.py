"""A trained checkpoint scored on folders of real labelled recordings, as a new user would try it.

    python -m bench.real_speech --model models/demo/model.pt \
        --data ../shared/data/speech_commands_real ../shared/data/speech_commands_more \
               ../shared/data/speech_commands_other_words [--words yes no] [--out real.json]

Why: a model trained only on synthetic speech (eSpeak NG) is judged by how it does on real people.
Each DIR holds class folders (`DIR/<word>/*.wav`, the Speech Commands layout; folders starting with
`_` or `.` are skipped), a word's clips pooled over all DIRs. Every clip gets the model's top-1 label
(no threshold), rendered by the one render path (train.predictor.Predictor, what predict does).
A clip of a target word (--words, default the model's targets) is correct, rejected (`unknown`,
`silence` or any class not in --words) or confused with another target word; a clip of any other
word is a false accept when it is labelled as a target word. `target_acc_at_non_target_accept` adds
the threshold-free view: the best target accuracy while at most 5 % / 10 % of the other words' clips
are accepted, moving only how readily the model answers "none of them" (see operating_points).
Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from preprocess import cli
from preprocess.atomic import atomic_write_text
from preprocess.render import AUDIO_EXTENSIONS, AudioError, load_audio
from train.predictor import InputError, Predictor

BATCH_SIZE = 64          # images per forward pass (train.predict's default)
SKIP_PREFIXES = ("_", ".")  # _background_noise_ and hidden folders are not words
DIGITS = 4               # rates in the report; the counts behind them are exact
NON_TARGET_LIMITS = (0.05, 0.10)  # false-accept budgets for the threshold-free operating points
OFFSET_RANGE, OFFSET_STEPS = 6.0, 241  # the offset on "none of them" swept in logit units, 0.05 apart


def collect(dirs: list[Path]) -> dict[str, list[Path]]:
    """word -> its clips, pooled over all DIRs (sorted, so runs and reports are reproducible)."""
    clips: dict[str, list[Path]] = {}
    for root in dirs:
        if not root.is_dir():
            raise cli.SpecVisionError(f"--data {root}: no such folder")
        found = 0
        for folder in sorted(root.iterdir()):
            if not folder.is_dir() or folder.name.startswith(SKIP_PREFIXES):
                continue
            files = sorted(f for f in folder.iterdir()
                           if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            clips.setdefault(folder.name, []).extend(files)
            found += len(files)
        if not found:  # most likely the path of one class folder, or of an empty download
            raise cli.SpecVisionError(f"--data {root}: no clips found; expected class folders of audio "
                                      f"({', '.join(AUDIO_EXTENSIONS)}) as in DIR/<word>/clip.wav")
    return {word: files for word, files in clips.items() if files}


def load(predictor: Predictor, path: Path) -> torch.Tensor:
    """The image tensor predict makes of a clip; a long one gives its loudest window (as predict --bench)."""
    wave = predictor.clip_wave(path, predictor.default_hop_s())
    if wave is None:
        wave = load_audio(path, predictor.settings)
    return predictor.audio_tensor(wave)


def label_clips(predictor: Predictor, clips: list[tuple[str, Path]], batch_size: int,
                quiet: bool) -> tuple[list[tuple[str, torch.Tensor]], list[str]]:
    """-> ([(folder word, logits)], [failure messages]); a clip that cannot be read is skipped."""
    labels, failures, pending = [], [], []

    def flush() -> None:
        if pending:
            logits = predictor.logits(torch.stack([t for _, t in pending])).float()
            labels.extend((word, row) for (word, _), row in zip(pending, logits))
            pending.clear()

    for word, path in tqdm(clips, desc="real speech", unit="clip", file=sys.stderr,
                           disable=True if quiet else None):
        try:
            pending.append((word, load(predictor, path)))
        except (AudioError, InputError, OSError) as err:  # one bad file must not end the benchmark
            message = str(err) if str(err).startswith(str(path)) else f"{path}: {err}"
            tqdm.write(f"warning: {message}", file=sys.stderr)
            failures.append(message)
        if len(pending) >= batch_size:
            flush()
    flush()
    return labels, failures


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, DIGITS) if whole else None


def operating_points(logits: list[tuple[str, torch.Tensor]], classes: list[str], words: list[str]) -> dict:
    """The best target accuracy reachable while at most 5 % / 10 % of the non-target clips are called a
    target, moving only the answer "none of them" (one offset on every non-target class's logit).
    Threshold-free: two recipes on one curve differ only in where their default point sits on it."""
    if not logits:
        return {}
    folder = [w for w, _ in logits]
    table_ = torch.stack([row for _, row in logits])
    target_cls = torch.tensor([c in words for c in classes])
    is_target = torch.tensor([w in words for w in folder])
    truth = torch.tensor([classes.index(w) if w in classes else -1 for w in folder])
    found = {}
    for offset in torch.linspace(-OFFSET_RANGE, OFFSET_RANGE, OFFSET_STEPS):
        best = (table_ - offset * (~target_cls).float()).argmax(dim=1)
        accepted = target_cls[best] & ~is_target
        acc = float((best == truth)[is_target].float().mean()) if is_target.any() else 0.0
        accepted_clips, other_clips = int(accepted.sum()), int((~is_target).sum())
        for limit in NON_TARGET_LIMITS:  # counts, not a float32 rate: 1 of 10 is within 10 %
            if accepted_clips <= limit * other_clips + 1e-9 and acc > found.get(str(limit), -1.0):
                found[str(limit)] = acc
    return {limit: round(acc, DIGITS) for limit, acc in found.items()}


def score(logits: list[tuple[str, torch.Tensor]], classes: list[str], words: list[str],
          all_words: list[str]) -> dict:
    """Counts per folder word -> the report's rates (denominators: the clips that were scored)."""
    per = {w: Counter() for w in all_words}
    labels = [(word, classes[int(row.argmax())]) for word, row in logits]
    for word, label in labels:
        per[word]["clips"] += 1
        per[word]["acc" if label == word else "accepted" if label in words else "rejected"] += 1
    targets = {w: per[w] for w in words}
    others = {w: c for w, c in per.items() if w not in words}
    n_target, n_other = sum(c["clips"] for c in targets.values()), sum(c["clips"] for c in others.values())
    correct, rejected = sum(c["acc"] for c in targets.values()), sum(c["rejected"] for c in targets.values())
    return {"target_clips": n_target, "non_target_clips": n_other,
            "target_acc": rate(correct, n_target), "rejected_rate": rate(rejected, n_target),
            # `accepted` of a target word's clip: labelled as another target word
            "confused_rate": rate(n_target - correct - rejected, n_target),
            "non_target_accept_rate": rate(sum(c["accepted"] for c in others.values()), n_other),
            "per_word": {w: {"clips": c["clips"], "acc": rate(c["acc"], c["clips"]),
                             "rejected": rate(c["rejected"], c["clips"])} for w, c in targets.items()},
            "non_target_per_word": {w: {"clips": c["clips"], "accepted": rate(c["accepted"], c["clips"])}
                                    for w, c in others.items()},
            "target_acc_at_non_target_accept": operating_points(logits, classes, words) if n_other else {}}


def table(report: dict) -> list[str]:
    """The human-readable summary printed before the JSON line."""
    def cell(value: float | None, width: int) -> str:  # None: no clip of that word was scored
        return f"{'-' if value is None else value:>{width}}"

    lines = [f"{'target word':16s}{'clips':>7s}{'acc':>8s}{'rejected':>10s}"]
    lines += [f"{w:16s}{c['clips']:>7d}{cell(c['acc'], 8)}{cell(c['rejected'], 10)}"
              for w, c in report["per_word"].items()]
    lines.append(f"{'non-target word':16s}{'clips':>7s}{'accepted':>10s}")
    lines += [f"{w:16s}{c['clips']:>7d}{cell(c['accepted'], 10)}"
              for w, c in report["non_target_per_word"].items()]
    lines.append(f"target_acc {report['target_acc']}  rejected {report['rejected_rate']}  confused "
                 f"{report['confused_rate']}  non-target accepted {report['non_target_accept_rate']}  "
                 f"({report['clips']} clips, {report['failed']} failed, {report['seconds']} s)")
    for limit, acc in report["target_acc_at_non_target_accept"].items():
        lines.append(f"best target_acc with at most {float(limit):.0%} of non-target clips accepted: {acc}")
    return lines


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_speech", description=__doc__.split("\n\n")[2])
    parser.add_argument("--model", type=Path, required=True, help="model.pt written by `python -m train`")
    parser.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR",
                        help="folders of class folders of audio (DIR/<word>/*.wav); a word's clips are "
                             "pooled over them")
    parser.add_argument("--words", nargs="+", help="the target words (default: the model's targets)")
    parser.add_argument("--out", type=Path, help="also write the JSON object to this file")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="(default: %(default)s)")
    cli.add_quiet_flag(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise cli.SpecVisionError("--batch-size must be at least 1")
    start = time.perf_counter()
    predictor = Predictor(args.model, "cpu")
    words = list(dict.fromkeys(args.words or predictor.targets))
    if missing := [w for w in words if w not in predictor.classes]:
        raise cli.SpecVisionError(f"--words {' '.join(missing)}: not a class of {args.model} "
                                  f"(its classes: {' '.join(predictor.classes)})")
    clips = collect(args.data)
    for word in words:
        if word not in clips:  # still reported (0 clips), so a default run on partial data works
            print(f"warning: no clips of target word {word!r} in --data", file=sys.stderr)
    if not any(word in clips for word in words):
        raise cli.SpecVisionError(f"no clips of the target words ({' '.join(words)}) in --data "
                                  f"(class folders found: {' '.join(sorted(clips))})")
    ordered = [(word, path) for word in sorted(clips) for path in clips[word]]
    labels, failures = label_clips(predictor, ordered, args.batch_size, args.quiet)
    report = {"model": str(args.model), "words": words, "clips": len(labels),
              **score(labels, predictor.classes, words, sorted(set(clips) | set(words))),
              "failed": len(failures), "seconds": round(time.perf_counter() - start, 2)}
    print("\n".join(table(report)))
    line = json.dumps(report)
    if args.out is not None:
        atomic_write_text(args.out, line + "\n")
    print(line)
    return cli.EXIT_INPUT_FAILED if failures else cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
