"""cnnet (the baseline) vs. the default arch, trained side by side on the same images.

    python -m bench.cnnet --images images_real

Both runs use the trainer's defaults and the same epoch budget and early stopping; their epochs are
interleaved (cnnet epoch 1, default epoch 1, cnnet epoch 2, ...) so that load from other programs on a
shared machine slows both alike and the speed ratio stays meaningful even when absolute numbers are
noisy. Images are decoded into RAM first (--cache) and each run uses the same number of torch
threads, so training images/s measures the networks, not PNG decoding. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from preprocess import cli
from train.checkpoint import CheckpointError
from train.data import DataError
from train.models import DEFAULT_ARCH
from train.options import EPOCHS, PATIENCE
from bench.side_by_side import train_interleaved

BASELINE = "cnnet"
THREADS = 1  # one thread per run: steadier on a shared CPU, and the same for both networks


def run_side_by_side(images: str, out: Path, epochs: int, patience: int, seed: int,
                     progress: bool) -> dict:
    finished = train_interleaved({key: [
        "--images", images, "--out", str(out / key), "--arch", arch, "--epochs", str(epochs),
        "--patience", str(patience), "--seed", str(seed), "--workers", "0", "--cache",
        *([] if progress else ["--no-progress"])] for key, arch in (("cnnet", BASELINE), ("default", DEFAULT_ARCH))})
    results = {}
    for key, (metrics, run) in finished.items():
        seconds = [e["seconds"] for e in metrics["epochs"]]
        results[key] = {
            "arch": metrics["arch"],
            "parameters": sum(p.numel() for p in run.model.parameters()),
            "train_img_per_s": round(metrics["train_images_per_s"], 1),
            "epochs_run": len(metrics["epochs"]),
            "best_epoch": metrics["best_epoch"],
            "best_val_acc": round(metrics["best_val_acc"], 4),
            "seconds_to_best_val": round(sum(seconds[:metrics["best_epoch"]]), 1),
            "seconds_total": round(sum(seconds), 1),
            "test_acc": round(metrics["test"]["accuracy"], 4),
            "test_images": sum(metrics["test"]["per_class"][c]["support"] for c in metrics["classes"]),
        }
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cnnet",
        description="Train cnnet and the default arch side by side (same images, epochs, early stopping, "
                    "seed, threads) and compare training images/s, wall time to the best validation "
                    "accuracy and test accuracy. Last line: one JSON object.")
    parser.add_argument("--images", required=True,
                        help="folder from `python -m preprocess` (train/val/test split by speaker)")
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help="epoch budget of each run (default: the trainer's, %(default)s)")
    parser.add_argument("--patience", type=int, default=PATIENCE,
                        help="early stopping patience (default: the trainer's, %(default)s)")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="torch CPU threads of each run (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="keep both runs' outputs in OUT/cnnet and OUT/default "
                             "(default: a temporary folder)")
    cli.add_quiet_flag(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="specvision-bench-") as tmp:
            out = Path(args.out) if args.out else Path(tmp)
            results = run_side_by_side(args.images, out, args.epochs, args.patience, args.seed, not args.quiet)
    except (DataError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return cli.EXIT_UNUSABLE
    cnnet, default = results["cnnet"], results["default"]
    speedup = default["train_img_per_s"] / cnnet["train_img_per_s"]
    to_best = cnnet["seconds_to_best_val"] / max(default["seconds_to_best_val"], 1e-9)
    print(f"\n{'':22s}{'cnnet':>14s}{DEFAULT_ARCH:>14s}")
    for key, label in (("parameters", "parameters"), ("train_img_per_s", "train images/s"),
                       ("epochs_run", "epochs run"), ("best_epoch", "best epoch"),
                       ("best_val_acc", "best val acc"), ("seconds_to_best_val", "s to best val"),
                       ("seconds_total", "s total"), ("test_acc", "test acc")):
        print(f"{label:22s}{cnnet[key]:>14}{default[key]:>14}")
    print(f"speedup (train images/s) {speedup:.2f}x; time to best val {to_best:.2f}x; "
          f"{args.threads} torch thread(s); wall {time.perf_counter() - start:.0f} s. "
          f"Shared CPU: absolute numbers are noisy, the ratio is measured side by side.")
    print(json.dumps({"cnnet": cnnet, "default": default, "speedup": round(speedup, 2),
                      "time_to_best_speedup": round(to_best, 2), "threads": args.threads,
                      "epochs_budget": args.epochs, "images": args.images}))
    return 0


if __name__ == "__main__":
    cli.run(main)
