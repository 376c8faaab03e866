"""int8 against fp32 on more real clips than a model's own test split: every clip of the model's classes
under the given folders whose speaker is not in the model's training or validation split.

    python -m bench.int8_accuracy --model models/real/model.pt --images images_real --clips ../shared/data/speech_commands_more

Needs `python -m train.export --model M --format onnx --int8` first (model.onnx and model.int8.onnx
beside the model). Each clip is rendered as train.predict renders it, then both ONNX files score the
same tensors (1 thread). Last line: JSON.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train import quantize as q  # noqa: E402
from train.predict import Predictor  # noqa: E402


def speaker(name: str) -> str:
    return Path(name).stem.split("_nohash_")[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.int8_accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--images", required=True, type=Path, help="the model's images folder (its manifest.csv)")
    parser.add_argument("--clips", required=True, type=Path, nargs="+")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    predictor = Predictor(args.model, engine="torch")
    with open(args.images / "manifest.csv", newline="") as handle:
        seen = {speaker(row["source"]) for row in csv.DictReader(handle) if row["split"] in ("train", "val")}
    tensors, labels, names = [], [], set()
    for root in args.clips:
        for index, name in enumerate(predictor.classes):
            for clip in sorted((root / name).glob("*.wav")):
                if speaker(clip.name) in seen or (name, clip.name) in names:
                    continue
                names.add((name, clip.name))
                tensor, _ = predictor.load(clip, predictor.default_hop_s())
                tensors.append(tensor)
                labels.append(index)
    images, labels = torch.stack(tensors).numpy(), np.array(labels)
    fp32 = q.run_logits(args.model.with_name(args.model.stem + ".onnx"), images)
    int8 = q.run_logits(args.model.with_name(args.model.stem + ".int8.onnx"), images)
    result = {"clips": len(labels), "speakers_left_out": len(seen),
              "fp32_acc": round(q.accuracy(fp32, labels), 4), "int8_acc": round(q.accuracy(int8, labels), 4),
              "same_answer": round(float((fp32.argmax(1) == int8.argmax(1)).mean()), 4)}
    print(f"{result['clips']} clips of speakers outside the model's train/val splits: fp32 {result['fp32_acc']:.4f}, "
          f"int8 {result['int8_acc']:.4f}, the same answer for {result['same_answer'] * 100:.2f} %")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
