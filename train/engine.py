"""One training epoch and one scoring pass over a DataLoader (torchvision references/classification's
`train_one_epoch` / `evaluate`), and the weight average the trainer validates. No files, no flags:
`train.train` runs whole trainings with these, `train.evaluate` scores a folder with `score_loader`.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from train.checkpoint import unwrap_model


def autocast(device: torch.device, amp: bool, cpu_bf16: bool = False):
    """float16 autocast on CUDA when `amp`; bfloat16 autocast on the CPU when `cpu_bf16` (training
    steps only: AVX-512 BF16 / AMX matrix units through oneDNN); a no-op context otherwise."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    if cpu_bf16 and device.type == "cpu":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return nullcontext()


def cpu_bf16_supported() -> bool:
    """Whether this CPU has native bfloat16 for oneDNN (AVX-512 BF16 or AMX); elsewhere bf16 autocast is
    emulated, slower than float32, so the trainer falls back to float32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def exponential_average(model: nn.Module, decay: float) -> AveragedModel:
    """A copy of the bare model whose weights and BatchNorm buffers follow the trained ones with
    `decay` per `update_parameters` call (torchvision's --model-ema). The average of the last
    ~1/(1-decay) steps is smoother than any single step's weights, so selecting the best epoch on a
    small validation set picks a genuinely good model. The first update copies the weights."""
    model = unwrap_model(model)  # the bare model inside DistributedDataParallel
    device = next(model.parameters()).device
    return AveragedModel(model, device=device, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_one_epoch(model, loader, criterion, optimizer, scheduler, device, scaler=None, amp=False,
                    desc="train", progress=True, ema: AveragedModel | None = None,
                    ema_copy_steps: int = 0, channels_last: bool = False, cpu_bf16: bool = False) -> dict:
    """One pass over `loader`; -> {"loss", "acc", "images", "seconds"} summed over all processes.

    `channels_last`: the batch is given to the (channels-last) model in NHWC memory order; `cpu_bf16`:
    forward and loss under bfloat16 autocast on the CPU (weights, gradients and optimizer stay float32).

    `ema` is updated after every optimizer step; while the scheduler has taken at most
    `ema_copy_steps` steps (the learning-rate warm-up) it just copies the weights, as torchvision's
    reference does, so the fast-moving early weights never weigh on the average.
    """
    model.train()
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    # disable=None: a bar on a terminal only; logs get the one line per epoch, not ten bar updates
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=None if progress else True,
               dynamic_ncols=True)
    for images, labels in bar:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp, cpu_bf16):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(unwrap_model(model))
            if scheduler.last_epoch <= ema_copy_steps:
                ema.n_averaged.fill_(0)  # the next update copies again
        loss_sum += loss.detach().double() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", refresh=False)
    totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64,
                                                                    device=device)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    loss_total, correct_total, images_total = totals.tolist()
    return {"loss": loss_total / images_total, "acc": correct_total / images_total,
            "images": int(images_total), "seconds": time.perf_counter() - start}


@torch.inference_mode()
def score_loader(model, loader, criterion, device, amp=False, desc="eval", progress=True) -> dict:
    """-> {"loss", "acc", "labels", "predictions", "confidences"} (lists in dataset order)."""
    model.eval()
    loss_sum, labels_all, predictions, confidences = 0.0, [], [], []
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=None if progress else True,
               dynamic_ncols=True)  # None: only on a terminal, as in train_one_epoch
    for images, labels in bar:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        loss_sum += criterion(logits.float(), labels).item() * len(labels)
        probabilities = logits.float().softmax(1)
        confidence, predicted = probabilities.max(1)
        labels_all += labels.tolist()
        predictions += predicted.tolist()
        confidences += confidence.tolist()
    count = max(len(labels_all), 1)
    correct = sum(p == t for p, t in zip(predictions, labels_all))
    return {"loss": loss_sum / count, "acc": correct / count, "labels": labels_all,
            "predictions": predictions, "confidences": confidences}
