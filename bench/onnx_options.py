"""ONNX Runtime session settings for the predict engine: graph optimisation level (basic, extended,
all) on 1 thread, batch-1 forward time of the model's ONNX export beside PyTorch eager, interleaved.

    python -m bench.onnx_options --model models/real/model.pt [--runs 2000]

Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train import engines  # noqa: E402
from train.checkpoint import load_model  # noqa: E402

LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.onnx_options", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, ckpt, _ = load_model(args.model)
    runners = {"torch": engines.TorchEngine(model)}
    for level in LEVELS:
        runners[level] = engines.OnnxEngine(model, ckpt, args.model, threads=1, optimization=level)
    x = torch.rand(1, *[int(v) for v in ckpt["input_size"]])
    times = {name: [] for name in runners}
    for _ in range(args.runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - start)
    result = {}
    for name, values in times.items():
        ms = float(np.median(values[len(values) // 10:])) * 1000
        result[name] = round(ms, 3)
        print(f"{name:>20}: batch-1 forward {ms:.3f} ms (1 thread)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
