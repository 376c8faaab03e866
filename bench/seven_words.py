"""Seven real words, speaker-disjoint: the default model against the learning module's CNNet.

    python -m bench.seven_words --data ../shared/data/speech_commands_real ../shared/data/speech_commands_more \
        --out seven/

yes, no, up, down, left, right, stop as seven classes ("any word list", tested on real speech). The
clips of all --data folders are split together by speaker (train/folds.py, the open-set benchmark's
split: fold --fold of --folds, each speaker on one side in every folder), rendered once with
`python -m preprocess`, and both networks are trained side by side on the same images
(train/bench.py: interleaved epochs, one thread each, the trainer's defaults). Accuracy is on the
test speakers only. Last line: one JSON object (bench.cnnet's, plus the split's sizes).
"""
from __future__ import annotations

import argparse
import collections
import json
import shutil
from pathlib import Path

import torch

from preprocess import cli, sources
from preprocess import prepare as prepare_cli
from bench import cnnet as train_bench
from train import folds
from train.options import EPOCHS, PATIENCE

WORDS = ["yes", "no", "up", "down", "left", "right", "stop"]


def link_split(material: folds.Material, folder: Path) -> dict:
    """folder/<split>/<word>/ links to the fold's target clips; -> clips per split."""
    shutil.rmtree(folder, ignore_errors=True)
    counts = collections.Counter()
    for split, clips in material.targets.items():
        for word, path in clips:
            (folder / split / word).mkdir(parents=True, exist_ok=True)
            (folder / split / word / path.name).symlink_to(path.resolve())
            counts[split] += 1
    return dict(counts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seven_words", description=__doc__.split("\n\n")[1])
    parser.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR",
                        help="folders of class folders (speaker ids in the file names)")
    parser.add_argument("--words", nargs="+", default=WORDS, help="the classes (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="working folder (audio links, images, models)")
    parser.add_argument("--folds", type=int, default=5, help="speaker folds (default: %(default)s)")
    parser.add_argument("--fold", type=int, default=0, help="the fold whose speakers are tested (default: 0)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epoch budget (default: %(default)s)")
    parser.add_argument("--patience", type=int, default=PATIENCE, help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=cli.available_cores())
    args = parser.parse_args(argv)
    if not 0 <= args.fold < args.folds:
        raise cli.SpecVisionError(f"--fold must be in 0..{args.folds - 1}")
    corpus = folds.collect(args.data, args.words)
    material = folds.fold_material(corpus, args.fold, args.folds)
    counts = link_split(material, args.out / "audio")
    images = args.out / "images"
    if prepare_cli.main(["--source", "folder", "--root", str(args.out / "audio"), "--out", str(images),
                         "--words", *args.words, "--force", "--workers", str(args.workers), "--quiet"]) != 0:
        raise cli.SpecVisionError(f"preprocess failed for {images}")
    torch.set_num_threads(train_bench.THREADS)
    results = train_bench.run_side_by_side(str(images), args.out / "models", args.epochs, args.patience,
                                           args.seed, progress=False)
    cnnet, default = results["cnnet"], results["default"]
    print(f"{'':22s}{'cnnet':>10s}{'default':>10s}")
    for key in ("parameters", "train_img_per_s", "epochs_run", "best_val_acc", "test_acc"):
        print(f"{key:22s}{cnnet[key]:>10}{default[key]:>10}")
    print(json.dumps({**results, "speedup": round(default["train_img_per_s"] / cnnet["train_img_per_s"], 2),
                      "words": args.words, "clips": counts, "fold": args.fold, "folds": args.folds,
                      "test_speakers": len({sources.group_id(p.name) for _, p in material.targets["test"]})}))
    return 0


if __name__ == "__main__":
    cli.run(main)
