"""Class imbalance: an open-world set has more 'unknown' (or fewer 'silence') images than target words.

Two remedies, chosen with `python -m train --balance`:

    sampler   draw training images with probability 1 / (images of their class): every class is seen
              equally often per epoch (torch WeightedRandomSampler, with replacement, one epoch = as
              many draws as images, so schedules and epoch lengths do not change)
    loss      keep the data as it is and weight the cross-entropy of class c by N / (C * N_c)
              (scikit-learn's "balanced" weights), in training and in validation
    none      neither
    auto      (default) MEASURED when the largest class has more than IMBALANCE times the images of
              the smallest, else none: a balanced set (plain yes/no) trains exactly as before

The sampler draws from the training loader's generator, which train.py re-seeds every epoch: the
draws are reproducible and a resumed run replays them. Measured choice: docs/benchmarks.md
("Open-world keyword spotting").
"""
from __future__ import annotations

import collections

import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

MODES = ("auto", "none", "sampler", "loss")
DEFAULT = "auto"
MEASURED = "loss"      # the better of the two, measured on an imbalanced open set (docs/benchmarks.md)
IMBALANCE = 1.2


def class_counts(targets: list[int], num_classes: int) -> list[int]:
    counts = collections.Counter(targets)
    return [counts[c] for c in range(num_classes)]


def loss_weights(targets: list[int], num_classes: int) -> torch.Tensor:
    """N / (C * N_c) per class: 1 for every class when the set is balanced."""
    counts = torch.tensor(class_counts(targets, num_classes), dtype=torch.float64).clamp_(min=1)
    return (counts.sum() / (num_classes * counts)).float()


def balanced_sampler(targets: list[int], num_classes: int, generator: torch.Generator) -> WeightedRandomSampler:
    counts = class_counts(targets, num_classes)
    weights = torch.tensor([1.0 / counts[t] for t in targets], dtype=torch.float64)
    return WeightedRandomSampler(weights, num_samples=len(targets), replacement=True, generator=generator)


def apply(training, mode: str) -> None:
    """Make a train.train.Training balance its classes: its criterion (loss) or train loader (sampler)."""
    dataset = training.datasets["train"]
    num_classes = len(training.classes)
    if mode == "auto":
        counts = class_counts(dataset.targets, num_classes)
        mode = MEASURED if max(counts) > IMBALANCE * max(1, min(counts)) else "none"
        if mode != "none" and training.world_size > 1:
            mode = "loss"
    if mode == "none":
        return
    if mode == "loss":
        training.criterion = nn.CrossEntropyLoss(weight=loss_weights(dataset.targets, num_classes),
                                                 label_smoothing=training.args.label_smoothing)
        return
    if mode != "sampler":
        raise ValueError(f"--balance must be one of {MODES}, got {mode!r}")
    if training.world_size > 1:
        raise ValueError("--balance sampler is not available under torchrun (each process would need its "
                         "own shard of the draws); use --balance loss")
    old = training.train_loader
    sampler = balanced_sampler(dataset.targets, num_classes, training.train_generator)
    training.train_loader = DataLoader(dataset, batch_size=old.batch_size, sampler=sampler,
                                       drop_last=old.drop_last, **training.loader_options)
