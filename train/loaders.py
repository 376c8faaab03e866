"""The training run's DataLoaders: shuffled and reseeded per epoch (a DistributedSampler shard under
DDP), a fixed calibration subset for BatchNorm, and evaluation batches."""
from __future__ import annotations

import os
import random

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from train.data import Unaugmented
from train.options import GPU_WORKERS

def loader_options(device: torch.device, workers: int | None) -> dict:
    if workers is None:
        workers = min(GPU_WORKERS, os.cpu_count() or 1) if device.type == "cuda" else 0
    return {"num_workers": workers, "pin_memory": device.type == "cuda",
            "worker_init_fn": seed_worker if workers else None,
            "persistent_workers": False}  # fresh workers each epoch see the new epoch's seed


def train_loader(dataset, batch_size: int, seed: int, world_size: int, rank: int,
                 options: dict) -> tuple[DataLoader, torch.Generator]:
    """-> (shuffling loader, its generator: reseeded each epoch); a DistributedSampler shard under DDP."""
    generator = torch.Generator()
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                     drop_last=True)
    per_process = len(sampler) if sampler is not None else len(dataset)
    # A last batch of 1-2 images makes BatchNorm's batch statistics meaningless: drop it, unless
    # it is the only one.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                        generator=generator, drop_last=per_process > batch_size, **options)
    return loader, generator


def calibration_loader(dataset, size: int, batch_size: int, seed: int, options: dict) -> DataLoader:
    """A fixed random subset of `size` un-augmented training images (val/test images look like these)."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    subset = Subset(Unaugmented(dataset), order[:size].tolist())
    return DataLoader(subset, batch_size=batch_size, shuffle=False, drop_last=len(subset) > batch_size,
                      **options)


def eval_loader(dataset, batch_size: int, options: dict) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size * 2, shuffle=False, **options)


def seed_worker(worker_id: int) -> None:
    """DataLoader seeds torch per worker; seed numpy and random from it too, for user transforms."""
    import numpy as np
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
