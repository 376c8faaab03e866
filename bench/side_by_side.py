"""Trainings run side by side: epochs interleaved (A epoch 1, B epoch 1, A epoch 2, ...), so load from
other programs slows all alike and a ratio of their speeds means something on a shared machine."""
from __future__ import annotations

import sys

from train.train import Training, build_parser


def train_interleaved(argvs: dict[str, list[str]]) -> dict[str, tuple[dict, Training]]:
    """{name: `python -m train` arguments} -> {name: (its metrics, its Training)}, in the given order."""
    runs = {name: Training(build_parser().parse_args(argv)) for name, argv in argvs.items()}
    while not all(run.done for run in runs.values()):
        for name, run in runs.items():
            if not run.done:
                print(f"[{name}]", end=" ", file=sys.stderr, flush=True)
                run.run_epoch()
    return {name: (run.finish(), run) for name, run in runs.items()}
