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
    targets         the classes that are words to spot (the others, 'unknown' and 'silence', are
                    answers that mean "none of them"); absent in older files: all but those two
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from preprocess.cli import SpecVisionError
from preprocess.atomic import atomic_writer, remove_stale_temps
from preprocess.openworld import target_classes
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
                    metrics: dict | None = None, targets: list[str] | None = None) -> dict:
    state = cpu_state_dict(model)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch, "classes": list(classes),
            "input_size": [int(x) for x in input_size], "render": dict(render), "state_dict": state,
            "metrics": dict(metrics or {}), "targets": target_classes(classes) if targets is None else list(targets)}


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


# ---------------------------------------------------------------- resume state (OUT/train_state.pt)

STATE_FILE = "train_state.pt"
STATE_FORMAT = "specvision-train-state"
# The flags a resumed run must share with the interrupted one to reach the same result; the run's
# classes, render settings and process count are checked too (resume_config).
RESUME_KEYS = ("arch", "epochs", "patience", "select", "batch_size", "lr", "warmup", "weight_decay",
               "label_smoothing", "seed", "augment", "noise", "ema", "bn_recalibration", "pretrained",
               "balance", "background", "speed", "channels_last", "bf16")
# The objects with a state_dict() that make up a run in progress (None where a run has no such part).
STATE_PARTS = ("model", "optimizer", "scheduler", "scaler", "ema")


def resume_config(args, world_size: int, classes: list[str], settings_hash: str) -> dict:
    """What must not change between an interrupted run and its --resume."""
    return {**{key: getattr(args, key) for key in RESUME_KEYS}, "world_size": world_size,
            "classes": list(classes), "settings_hash": settings_hash}


def save_train_state(path: str | os.PathLike, config: dict, parts: dict, progress: dict) -> None:
    """Write everything --resume needs: `parts` (STATE_PARTS -> objects with state_dict(), or None),
    the run's `progress` (history, best weights, counters) and its `config`, atomically."""
    states = {name: parts[name].state_dict() if parts[name] is not None else None for name in STATE_PARTS}
    atomic_torch_save({"format": STATE_FORMAT, "config": config, **states, "progress": progress}, path)


def load_train_state(path: str | os.PathLike, config: dict, parts: dict) -> dict:
    """Restore `parts` from a saved run (weights_only=True) after checking its config equals `config`;
    -> the saved progress. Raises CheckpointError naming the file and every differing setting."""
    state = _load_format(path, STATE_FORMAT, "training state",
                         "no saved training state to resume from (train without --resume first)")
    saved = state["config"]
    differing = [f"{k}: {saved.get(k)!r} -> {config[k]!r}" for k in config if saved.get(k) != config[k]]
    if differing:
        raise CheckpointError(f"{path}: cannot resume with different settings ({'; '.join(differing)}); "
                              f"use the original flags or start afresh without --resume")
    for name in STATE_PARTS:
        if parts[name] is not None and state[name] is not None:
            parts[name].load_state_dict(state[name])
    return state["progress"]
