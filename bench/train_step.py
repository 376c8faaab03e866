"""Training step time of the default network on the CPU: fp32 NCHW (the default) against channels_last,
bf16 autocast and torch.compile, each alone and combined, interleaved step by step.

    python -m bench.train_step [--steps 30] [--batch-size 64] [--threads 1]

Random images of the default render size (3 x 201 x 81), the default recipe's loss and optimizer
(AdamW, label smoothing); forward + backward + step, 1 thread. A quick look at where training time could
be won; `python -m bench.train_speed` then trains whole models to compare accuracy. Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.models import DEFAULT_ARCH, build_model  # noqa: E402

VARIANTS = {"fp32": {}, "channels_last": {"channels_last": True}, "bf16": {"bf16": True},
            "bf16+channels_last": {"bf16": True, "channels_last": True}, "compile": {"compile": True}}


def make_step(channels_last=False, bf16=False, compile=False, batch_size=64):
    torch.manual_seed(0)
    model = build_model(DEFAULT_ARCH, 2, (3, 201, 81)).train()
    images = torch.rand(batch_size, 3, 201, 81)
    labels = torch.randint(0, 2, (batch_size,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    net = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = criterion(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, compile_s = {}, {}
    for name in args.variants:
        start = time.perf_counter()
        steps[name] = make_step(batch_size=args.batch_size, **VARIANTS[name])
        for _ in range(3):  # warm-up (and compilation)
            steps[name]()
        compile_s[name] = time.perf_counter() - start
    times = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    result = {"batch_size": args.batch_size, "threads": args.threads,
              "bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
              "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    base = float(np.median(times["fp32"])) if "fp32" in times else None
    for name, values in times.items():
        ms = float(np.median(values)) * 1000
        result[name] = {"step_ms": round(ms, 1), "images_per_s": round(args.batch_size / ms * 1000, 1),
                        "warmup_s": round(compile_s[name], 1)}
        if base:
            result[name]["speedup"] = round(base * 1000 / ms, 2)
        print(f"{name:>20}: {ms:7.1f} ms/step, {args.batch_size / ms * 1000:6.1f} images/s"
              f"{'' if not base else f', {base * 1000 / ms:.2f}x fp32'} (warm-up {compile_s[name]:.1f} s)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
