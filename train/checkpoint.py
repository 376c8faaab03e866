"""The model.pt format: everything needed to classify a new clip exactly as the training images were made.

A checkpoint is a plain dict (safe for ``torch.load(weights_only=True)``):

    format          "specvision-model"
    format_version  FORMAT_VERSION
    arch            name in train.models.ARCHITECTURES
    classes         list of class names, index = output unit
    input_size      [channels, height, width] of the images
    render          preprocess.render.RenderSettings.to_dict() copied from images/render.json
    state_dict      model weights
    metrics         test accuracy etc. (free-form, JSON-compatible)
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from preprocess.cli import SpecVisionError
from preprocess.atomic import atomic_writer, remove_stale_temps
from preprocess.render import RenderSettings
from train.models import build_model

FORMAT = "specvision-model"
FORMAT_VERSION = 1


class CheckpointError(SpecVisionError):
    """A model file that cannot be used; the message names the file and the reason."""


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temp file beside `path`, then rename: a crash never leaves a torn checkpoint
    (and the temp of a run killed while saving is removed by the next save)."""
    remove_stale_temps(path)
    with atomic_writer(path) as handle:
        torch.save(obj, handle)


def cpu_state_dict(model: torch.nn.Module) -> dict:
    """A detached CPU copy of the bare model's weights: later training steps do not change it."""
    return {k: v.detach().cpu().clone() for k, v in unwrap_model(model).state_dict().items()}


def make_checkpoint(model: torch.nn.Module, arch: str, classes: list[str], input_size, render: dict,
                    metrics: dict | None = None) -> dict:
    state = cpu_state_dict(model)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch, "classes": list(classes),
            "input_size": [int(x) for x in input_size], "render": dict(render), "state_dict": state,
            "metrics": dict(metrics or {})}


def _load_format(path: str | os.PathLike, expected_format: str, what: str, missing: str) -> dict:
    """torch.load(weights_only=True) a dict tagged format=expected_format, or raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {missing}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors come in many types
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise CheckpointError(f"{path}: not a {what} (missing format={expected_format!r})")
    return data


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and validate a model.pt; raises CheckpointError naming the file and what is wrong."""
    ckpt = _load_format(path, FORMAT, "SpecVision model", "no such model file")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('format_version')!r} is not "
                              f"supported by this SpecVision (expects {FORMAT_VERSION}); retrain or upgrade")
    missing = {"arch", "classes", "input_size", "render", "state_dict"} - set(ckpt)
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {sorted(missing)}")
    try:
        RenderSettings.from_dict(ckpt["render"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: render settings are incompatible with this version ({err})") from None
    return ckpt


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """-> (model in eval mode on `device`, checkpoint dict, RenderSettings)."""
    ckpt = load_checkpoint(path)
    try:
        model = build_model(ckpt["arch"], len(ckpt["classes"]), tuple(ckpt["input_size"]))
        model.load_state_dict(ckpt["state_dict"])
    except (ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: weights do not fit arch {ckpt['arch']!r} ({err})") from None
    return model.to(device).eval(), ckpt, RenderSettings.from_dict(ckpt["render"])


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DistributedDataParallel / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def load_train_state(path: str | os.PathLike, expected_format: str) -> dict:
    """Read a training run's resume state (weights, optimizer, scheduler, history) with weights_only=True."""
    return _load_format(path, expected_format, "training state",
                        "no saved training state to resume from (train without --resume first)")
