"""Score a trained model on any folder of spectrogram PNGs in class folders.

    python -m train.evaluate --model models/NAME/model.pt --images images/test [--json]

Uses the trainer's own scoring pass (train.engine.score_loader) and `classification_report`, so the
numbers are the ones in metrics.json's "test" block when pointed at the same images.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from preprocess import cli
from train.checkpoint import load_model
from train.data import DataError, SpectrogramFolder
from train.engine import score_loader
from train.metrics import classification_report, format_confusion

BATCH_SIZE = 128


def score_folder(model, ckpt: dict, images_dir: str | Path, device: str | torch.device = "cpu",
                 batch_size: int = BATCH_SIZE, workers: int = 0, progress: bool = False,
                 skip_bad: bool = False) -> dict:
    """-> {"accuracy", "classes", "per_class", "confusion", "count"} in the model's class order."""
    classes = list(ckpt["classes"])
    channels, height, width = ckpt["input_size"]
    dataset = SpectrogramFolder(images_dir, channels, (height, width), progress=progress, skip_bad=skip_bad)
    unknown = [c for c in dataset.classes if c not in classes]
    if unknown:
        raise DataError(f"{images_dir}: class folder(s) {unknown} are not classes of this model {classes} "
                        f"(pass a folder of class folders, e.g. images/test)")
    # Folder order -> model order (the folder may hold only some of the model's classes).
    to_model = [classes.index(c) for c in dataset.classes]
    dataset.samples = [(path, to_model[target]) for path, target in dataset.samples]
    dataset.targets = [target for _, target in dataset.samples]
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    criterion = torch.nn.CrossEntropyLoss()
    result = score_loader(model, loader, criterion, torch.device(device), desc="evaluate", progress=progress)
    report = classification_report(result["labels"], result["predictions"], classes)
    return {"accuracy": report["accuracy"], "classes": classes, "per_class": report["per_class"],
            "confusion": report["confusion"], "count": len(dataset), "skipped": dataset.skipped}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        description="Accuracy, per-class precision/recall and the confusion matrix of a model.pt on a "
                    "folder of spectrogram PNGs in class folders (e.g. images/test).")
    parser.add_argument("--model", required=True, help="models/NAME/model.pt written by `python -m train`")
    parser.add_argument("--images", required=True, help="folder of class folders of PNGs")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object {"accuracy", "classes", "per_class", "confusion"}')
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader worker processes (default: %(default)s)")
    cli.add_device_flag(parser)
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="score without unreadable or wrongly sized PNGs (named on stderr; exit status "
                             "1) instead of refusing")
    return parser


@cli.command
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    device = cli.pick_device(args.device).type
    model, ckpt, _ = load_model(args.model, device)
    result = score_folder(model, ckpt, args.images, device, args.batch_size, args.workers,
                          progress=not args.json, skip_bad=args.skip_bad_images)
    for problem in result["skipped"]:
        print(f"skipped: {problem}", file=sys.stderr)
    status = cli.EXIT_INPUT_FAILED if result["skipped"] else cli.EXIT_OK
    if args.json:
        print(json.dumps({key: result[key] for key in ("accuracy", "classes", "per_class", "confusion")}))
        return status
    classes = result["classes"]
    width = max(len(c) for c in classes)
    print(f"{ckpt['arch']} model {args.model} on {args.images}: {result['count']} images")
    print(f"accuracy {result['accuracy']:.4f}")
    for name in classes:
        scores = result["per_class"][name]
        print(f"  {name:>{width}}  precision {scores['precision']:.3f}  recall {scores['recall']:.3f}"
              f"  support {scores['support']}")
    print("confusion (rows true, columns predicted):")
    print(format_confusion(result["confusion"], classes))
    return status


if __name__ == "__main__":
    cli.run(main)
