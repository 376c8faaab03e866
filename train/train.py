"""Train a CNN on images/<train|val|test>/<class>/*.png (torchvision ImageFolder), like torchvision's
references/classification/train.py (its `train_one_epoch` / `evaluate` are in train/engine.py).

    python -m train --images images --out models/NAME             # CPU, minutes for a few thousand images
    torchrun --nproc-per-node 2 -m train --images images --out models/NAME   # DistributedDataParallel

Selection (early stopping, best weights) uses images/val; images/test is scored once at the end.
Writes models/NAME/model.pt (best on val), metrics.json, curves.png, confusion.png, and train_state.pt
(everything `--resume` needs to continue an interrupted run to the same result as an uninterrupted one).

Reproducibility: every random draw of epoch e is seeded from (--seed, e): shuffling, dropout and the
per-sample augmentations, so a resumed run replays exactly what the uninterrupted run would have done.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from preprocess import cli
from preprocess.cli import SpecVisionError
from preprocess.layout import read_render_record
from preprocess.openworld import SILENCE, target_classes
from preprocess.render import RenderSettings
from train import balance
from train.checkpoint import (STATE_FILE, atomic_torch_save, cpu_state_dict, load_train_state,
                              make_checkpoint, resume_config, save_train_state)
from train.engine import cpu_bf16_supported, exponential_average, score_loader, train_one_epoch
from train.augment import BACKGROUND_PROBABILITY, BackgroundMix, NoiseFloor, SpecAugment, SpeedPerturb
from train.data import DataError, build_datasets
from train.loaders import calibration_loader, eval_loader, loader_options, train_loader
from train.metrics import (classification_report, format_confusion, plot_confusion, plot_curves,
                           write_json_atomic)
from train.models import build_model, load_pretrained
from train.options import MODEL_FILE, build_parser

# ---------------------------------------------------------------- a whole run

class Training:
    """One training run, an epoch at a time (`main` loops over it; the benchmark interleaves two)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.rank, self.world_size, local_rank = _setup_distributed(args.device)
        self.is_main = self.rank == 0
        self.progress = not args.quiet and self.is_main
        self.device = _pick_device(args.device, local_rank)
        self.amp = self.device.type == "cuda" and args.amp is not False  # default on with CUDA
        on_cpu = self.device.type == "cpu"
        self.channels_last = bool(args.channels_last) and on_cpu
        self.cpu_bf16 = bool(args.bf16) and on_cpu and cpu_bf16_supported()
        if args.bf16 and on_cpu and not self.cpu_bf16 and self.is_main:
            _log("bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX); training in float32")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = False  # reproducible kernels over a few % of speed
            torch.backends.cudnn.deterministic = True

        self.render = read_render_record(args.images)
        self.settings = RenderSettings.from_dict(self.render["settings"])
        self.input_size = (self.settings.channels, *self.settings.image_size)
        noise = None
        if args.noise > 0 and self.settings.feature != "mfcc":  # mfcc pixels are not decibels
            noise = NoiseFloor(self.settings, probability=args.noise)
        asked = args.background is not None  # default: on wherever there is a silence class to draw from
        background_share = args.background if asked else BACKGROUND_PROBABILITY
        if asked and background_share > 0 and self.settings.feature == "mfcc":
            raise DataError("--background mixes decibel images; mfcc images are not (use 0)")
        speed = SpeedPerturb(self.settings, args.speed) if args.speed > 0 else None
        augment = SpecAugment(noise=noise, speed=speed) if args.augment else None
        self.datasets = build_datasets(args.images, self.settings, augment=augment, cache=args.cache,
                                       seed=args.seed, progress=self.progress,
                                       skip_bad=args.skip_bad_images)
        if augment is not None and background_share > 0 and self.settings.feature != "mfcc":
            augment.background = self._background_mix(noise, background_share, asked)
        self.classes = self.datasets["train"].classes
        self.loader_options = loader_options(self.device, args.workers)
        self.train_loader, self.train_generator = train_loader(
            self.datasets["train"], args.batch_size, args.seed, self.world_size, self.rank,
            self.loader_options)
        self.val_loader = eval_loader(self.datasets["val"], args.batch_size, self.loader_options)
        self.calibration_loader = None
        if args.bn_recalibration:
            self.calibration_loader = calibration_loader(self.datasets["train"], args.bn_recalibration,
                                                         args.batch_size, args.seed, self.loader_options)

        torch.manual_seed(args.seed)  # initial weights
        model = build_model(args.arch, len(self.classes), self.input_size)
        if args.pretrained:
            load_pretrained(model, args.arch, args.pretrained)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = self.model
        if self.world_size > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        balance.apply(self, args.balance)  # class imbalance: weighted loss or balanced sampler
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, args.weight_decay), lr=args.lr)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=args.lr, total_steps=args.epochs * len(self.train_loader),
            pct_start=args.warmup)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.ema = None
        if args.ema > 0:
            decay = 1.0 - 1.0 / max(1.0, args.ema * len(self.train_loader))
            self.ema = exponential_average(self.model, decay)
        # The weights that are validated, kept as the best and saved: the average when there is one.
        self.candidate = self.ema.module if self.ema is not None else self.model

        self.history: list[dict] = []
        self.best = {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf, "state_dict": None}
        self.stale_epochs = 0
        self.stopped_early = False
        self.train_images = 0
        self.train_seconds = 0.0
        self.writer = None
        if args.resume:
            self._load_state()
        if args.tensorboard and self.is_main:
            self.writer = _tensorboard_writer(self.out / "tensorboard")

    def _background_mix(self, codec: NoiseFloor | None, share: float, asked: bool) -> BackgroundMix | None:
        """The mix drawing from the training images of the class SILENCE, or None where there are none
        (an error if --background was given). The dB codec is built only then (~70 ms: its colour
        table), and shared with the noise floor's when that is on."""
        train = self.datasets["train"]
        if SILENCE in train.class_to_idx:
            mix = BackgroundMix(codec or NoiseFloor(self.settings), probability=share)
            if mix.bind(train, SILENCE):
                return mix
        if asked:
            raise DataError(f"{self.args.images}: --background {share} mixes in the training images of the "
                            f"class '{SILENCE}', and there are none (preprocess with --silence-pct, or train "
                            f"with --background 0)")
        return None

    # ------------------------------------------------------------ epochs

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    @property
    def done(self) -> bool:
        return self.stopped_early or self.epochs_done >= self.args.epochs

    def run_epoch(self) -> dict:
        """Train one epoch, validate, keep the best weights, save the resume state; -> the epoch record."""
        epoch = self.epochs_done + 1
        # Everything random in this epoch is a function of (seed, epoch): resume replays it exactly.
        torch.manual_seed(self.args.seed * 1000 + epoch)
        self.train_generator.manual_seed(self.args.seed * 1000 + epoch)
        self.datasets["train"].epoch = epoch
        if isinstance(self.train_loader.sampler, DistributedSampler):
            self.train_loader.sampler.set_epoch(epoch)
        lr = self.scheduler.get_last_lr()[0]
        start = time.perf_counter()
        train = train_one_epoch(self.net, self.train_loader, self.criterion, self.optimizer, self.scheduler,
                                self.device, self.scaler, self.amp, desc=f"epoch {epoch}/{self.args.epochs}",
                                progress=self.progress, ema=self.ema,
                                ema_copy_steps=int(self.args.warmup * self.scheduler.total_steps),
                                channels_last=self.channels_last, cpu_bf16=self.cpu_bf16)
        if self.calibration_loader is not None:
            # "Precise BN": with few steps per epoch and AdamW moving the weights fast, running
            # averages (momentum 0.1) trail the weights by epochs and validation swings to chance;
            # exact averages over clean training images give statistics of the current weights.
            update_bn(self.calibration_loader, self.candidate, self.device)
        self._sync_buffers()
        val = score_loader(self.candidate, self.val_loader, self.criterion, self.device, self.amp,
                           desc="val", progress=self.progress)
        record = {"epoch": epoch, "train_loss": train["loss"], "train_acc": train["acc"],
                  "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr,
                  "seconds": time.perf_counter() - start}
        self.history.append(record)
        self.train_images += train["images"]
        self.train_seconds += train["seconds"]

        if self.args.select == "acc":
            improved = (val["acc"], -val["loss"]) > (self.best["val_acc"], -self.best["val_loss"])
        else:
            improved = val["loss"] < self.best["val_loss"]
        if improved:
            self.best = {"epoch": epoch, "val_acc": val["acc"], "val_loss": val["loss"],
                         "state_dict": cpu_state_dict(self.candidate)}
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        self.stopped_early = self.stale_epochs >= self.args.patience and epoch < self.args.epochs
        if self.is_main:
            if improved:
                self._save_model({"best_epoch": epoch, "best_val_acc": val["acc"]})
            self._save_state()
            if self.writer is not None:
                for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                    self.writer.add_scalar(key.replace("_", "/", 1), record[key], epoch)
                self.writer.flush()
            _log(f"epoch {epoch:>3}/{self.args.epochs}  train loss {train['loss']:.4f} acc {train['acc']:.4f}"
                 f"  | val loss {val['loss']:.4f} acc {val['acc']:.4f}  | lr {lr:.2e}"
                 f"  {record['seconds']:.1f} s"
                 f"{'  *best' if improved else ''}")
            if self.stopped_early:
                _log(f"early stop: no better validation {self.args.select} in {self.args.patience} epochs")
        return record

    def finish(self) -> dict | None:
        """Score the best weights on the test split; write model.pt, metrics.json and plots (rank 0)."""
        if self.writer is not None:
            self.writer.close()
        metrics = None
        if self.is_main:
            self.model.load_state_dict(self.best["state_dict"])
            test_loader = eval_loader(self.datasets["test"], self.args.batch_size, self.loader_options)
            test = score_loader(self.model, test_loader, self.criterion, self.device, self.amp,
                                desc="test", progress=self.progress)
            report = classification_report(test["labels"], test["predictions"], self.classes)
            images_dir = Path(self.args.images)
            metrics = {
                "arch": self.args.arch, "classes": self.classes, "images": str(self.args.images),
                "epochs": self.history, "best_epoch": self.best["epoch"],
                "best_val_acc": self.best["val_acc"],
                "train_images_per_s": self.train_images / self.train_seconds if self.train_seconds else 0.0,
                "train_precision": "bf16 autocast" if self.cpu_bf16 else ("fp16 amp" if self.amp else "fp32"),
                "channels_last": self.channels_last,
                "test": {"accuracy": report["accuracy"], "loss": test["loss"],
                         "per_class": report["per_class"], "confusion": report["confusion"]},
                "test_predictions": [
                    {"png": Path(os.path.relpath(path, images_dir)).as_posix(), "label": self.classes[label],
                     "predicted": self.classes[predicted], "confidence": confidence}
                    for (path, label), predicted, confidence in zip(
                        self.datasets["test"].samples, test["predictions"], test["confidences"])],
            }
            self._save_model({k: v for k, v in metrics.items() if k not in ("epochs", "test_predictions")})
            write_json_atomic(metrics, self.out / "metrics.json")
            plot_curves(self.history, self.out / "curves.png")
            plot_confusion(report["confusion"], self.classes, self.out / "confusion.png",
                           title=f"{self.args.arch}: test accuracy {report['accuracy']:.3f}")
        if self.world_size > 1:
            dist.barrier()
        return metrics

    # ------------------------------------------------------------ files

    def _save_model(self, metrics: dict) -> None:
        state = self.best["state_dict"]
        model = build_model(self.args.arch, len(self.classes), self.input_size)
        model.load_state_dict(state)
        atomic_torch_save(make_checkpoint(model, self.args.arch, self.classes, self.input_size,
                                          self.render["settings"], metrics,
                                          targets=target_classes(self.classes, self.render)), self.out / MODEL_FILE)

    def _resume_config(self) -> dict:
        return resume_config(self.args, self.world_size, self.classes, self.settings.digest())

    def _state_parts(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "scaler": self.scaler, "ema": self.ema}

    def _save_state(self) -> None:
        save_train_state(self.out / STATE_FILE, self._resume_config(), self._state_parts(), {
            "history": self.history, "best": self.best, "stale_epochs": self.stale_epochs,
            "stopped_early": self.stopped_early, "train_images": self.train_images,
            "train_seconds": self.train_seconds})

    def _load_state(self) -> None:
        path = self.out / STATE_FILE
        progress = load_train_state(path, self._resume_config(), self._state_parts())
        self.history, self.best = progress["history"], progress["best"]
        self.stale_epochs, self.stopped_early = progress["stale_epochs"], progress["stopped_early"]
        self.train_images, self.train_seconds = progress["train_images"], progress["train_seconds"]
        if self.is_main:
            _log(f"resuming {path} after epoch {self.epochs_done} (best val acc {self.best['val_acc']:.4f} "
                 f"at epoch {self.best['epoch']})")

    def _sync_buffers(self) -> None:
        """Give every process rank 0's BatchNorm statistics, so all validate (and stop) identically."""
        if self.world_size > 1:
            for buffer in self.candidate.buffers():
                dist.broadcast(buffer, 0)


@cli.command
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("epochs", "batch_size", "patience"):
        if getattr(args, name) < 1:
            raise SpecVisionError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("noise", "background"):
        if getattr(args, name) is not None and not 0.0 <= getattr(args, name) <= 1.0:
            raise SpecVisionError(f"--{name} is a share of the training images, from 0 to 1")
    if not 0.0 <= args.speed < 0.5:
        raise SpecVisionError("--speed is a fraction of the speed, from 0 (off) to below 0.5")
    if args.threads:
        torch.set_num_threads(args.threads)
    training = None
    try:
        training = Training(args)
        if training.is_main:
            _log(_describe(training))
        while not training.done:
            training.run_epoch()
        metrics = training.finish()
    except ValueError as err:  # a setting no run can use (torch and the recipe say which)
        raise SpecVisionError(str(err)) from None
    except KeyboardInterrupt:
        if training is not None and training.epochs_done and training.is_main:
            print(f"\ninterrupted after epoch {training.epochs_done}: continue with the same command "
                  f"plus --resume", file=sys.stderr)
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if metrics is not None:
        print(summary(metrics, training))
    skipped = [problem for dataset in training.datasets.values() for problem in dataset.skipped]
    for problem in skipped:
        print(f"skipped: {problem}", file=sys.stderr)
    return cli.EXIT_INPUT_FAILED if skipped else cli.EXIT_OK


def summary(metrics: dict, training: Training) -> str:
    test = metrics["test"]
    classes = metrics["classes"]
    width = max(len(c) for c in classes)
    sizes = ", ".join(f"{split} {len(dataset)}" for split, dataset in training.datasets.items())
    lines = [
        "",
        f"== {metrics['arch']} on {metrics['images']}  ({sizes} images)",
        f"epochs run {len(metrics['epochs'])}/{training.args.epochs}"
        f"{' (early stop)' if training.stopped_early else ''}; best epoch {metrics['best_epoch']} "
        f"(by val {training.args.select}): val acc {metrics['best_val_acc']:.4f} "
        f"loss {training.best['val_loss']:.4f}",
        f"training speed {metrics['train_images_per_s']:.0f} images/s on {training.device.type}"
        f" x{training.world_size}; total {sum(e['seconds'] for e in metrics['epochs']):.0f} s",
        f"test accuracy {test['accuracy']:.4f}  loss {test['loss']:.4f}",
    ]
    for name in classes:
        scores = test["per_class"][name]
        lines.append(f"  {name:>{width}}  precision {scores['precision']:.3f}  recall {scores['recall']:.3f}"
                     f"  support {scores['support']}")
    lines += ["confusion (rows true, columns predicted):", format_confusion(test["confusion"], classes),
              f"wrote {training.out / MODEL_FILE}, metrics.json, curves.png, confusion.png"
              f"{', tensorboard/' if training.args.tensorboard else ''} in {training.out}"]
    return "\n".join(lines)


# ---------------------------------------------------------------- helpers

def _describe(training: Training) -> str:
    sizes = ", ".join(f"{split} {len(ds)}" for split, ds in training.datasets.items())
    params = sum(p.numel() for p in training.model.parameters())
    return (f"{training.args.arch} ({params / 1e3:.0f}k parameters) on {training.device}"
            f"{f' x{training.world_size} processes' if training.world_size > 1 else ''}"
            f"{' with AMP' if training.amp else ''}{' bf16 autocast' if training.cpu_bf16 else ''}"
            f"{' channels-last' if training.channels_last else ''}; classes {training.classes}; images {sizes}; "
            f"input {list(training.input_size)}; "
            f"augment {training.datasets['train'].augment if training.args.augment else 'off'}")


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights; none on biases and norm parameters (1-d tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _setup_distributed(device: str) -> tuple[int, int, int]:
    """-> (rank, world_size, local_rank); starts the process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not _distributed():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


def _pick_device(device: str, local_rank: int) -> torch.device:
    return cli.pick_device(device, local_rank)


def _tensorboard_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(str(path))
