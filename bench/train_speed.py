"""Training speed of the default recipe on the CPU: float32 NCHW (the default) against channels-last and
bf16 autocast (`--channels-last`, `--bf16`), whole trainings side by side.

    python -m bench.train_speed --images images_real [images_real_20 ...] [--variants fp32 bf16_channels_last]

Each variant trains the default network with the default recipe on the same images, seed and thread
count (1), epochs interleaved (variant A epoch 1, B epoch 1, ... ) so that load from other programs
slows all alike; early stopping as usual. Prints training images/s, best epoch, test accuracy and the
test predictions that differ per variant, per images folder; the last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.side_by_side import train_interleaved  # noqa: E402

VARIANTS = {"fp32": ["--no-channels-last", "--no-bf16"], "channels_last": ["--channels-last", "--no-bf16"],
            "bf16": ["--no-channels-last", "--bf16"], "bf16_channels_last": ["--channels-last", "--bf16"]}


def side_by_side(images: str, out: Path, variants: list[str], seed: int, epochs: int | None) -> dict:
    finished = train_interleaved({name: [
        "--images", images, "--out", str(out / name), "--seed", str(seed), "--workers", "0", "--cache",
        "--no-progress", *VARIANTS[name], *(["--epochs", str(epochs)] if epochs else [])] for name in variants})
    results = {}
    for name, (metrics, _) in finished.items():
        results[name] = {"train_img_per_s": round(metrics["train_images_per_s"], 1),
                         "epochs_run": len(metrics["epochs"]), "best_epoch": metrics["best_epoch"],
                         "best_val_acc": round(metrics["best_val_acc"], 4),
                         "test_acc": round(metrics["test"]["accuracy"], 4),
                         "test_images": len(metrics["test_predictions"]),
                         "precision": metrics["train_precision"], "channels_last": metrics["channels_last"],
                         "predicted": [p["predicted"] for p in metrics["test_predictions"]]}
    first = variants[0]
    for name in variants:
        results[name]["speedup_vs_" + first] = round(results[name]["train_img_per_s"] / results[first]["train_img_per_s"], 2)
        results[name]["test_answers_differing_from_" + first] = sum(
            a != b for a, b in zip(results[name].pop("predicted") if name != first else results[name]["predicted"],
                                   results[first]["predicted"]))
    results[first].pop("predicted")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16_channels_last"], choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="(default: the recipe's)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "seed": args.seed, "bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}
    with tempfile.TemporaryDirectory(prefix="train-speed-") as work:
        for images in args.images:
            runs = side_by_side(images, Path(work) / Path(images).name, args.variants, args.seed, args.epochs)
            print(f"\n{images}:")
            for name, figures in runs.items():
                print(f"  {name:>14}: {figures['train_img_per_s']:7.1f} images/s "
                      f"({figures['speedup_vs_' + args.variants[0]]:.2f}x), best epoch {figures['best_epoch']}/"
                      f"{figures['epochs_run']}, val acc {figures['best_val_acc']:.4f}, test acc {figures['test_acc']:.4f}"
                      f" ({figures['test_answers_differing_from_' + args.variants[0]]} of {figures['test_images']} test "
                      f"answers differ from {args.variants[0]})")
            result[images] = runs
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
