"""`python -m train`'s recipe (each setting a flag, its default here) and its command line."""
from __future__ import annotations

import argparse

from preprocess import cli
from preprocess.openworld import SILENCE
from train import balance
from train.augment import BACKGROUND_PROBABILITY, NOISE_PROBABILITY, SPEED_CHANGE
from train.checkpoint import STATE_FILE
from train.models import ARCHITECTURES, DEFAULT_ARCH

EPOCHS = 60               # upper bound; early stopping may end sooner. 30 left the open-world model
                          # 3.5 points short on real speech (docs/benchmarks.md, open-world)
PATIENCE = 10             # stop after this many epochs without a better validation score
SELECT = "loss"           # "loss": lowest val loss is best; "acc": highest val accuracy, ties -> lower loss.
                          # Accuracy on a small val set moves in whole-image steps and its maximum is
                          # mostly luck (docs/guide.md); the loss weighs every image's confidence.
BATCH_SIZE = 64           # per process
LR = 3e-3                 # peak learning rate of the one-cycle schedule
WARMUP = 0.2              # fraction of the steps spent warming up to LR, then cosine decay
WEIGHT_DECAY = 0.05       # AdamW, on conv/linear weights only (not on norms and biases)
LABEL_SMOOTHING = 0.1
SEED = 0
GPU_WORKERS = 8           # DataLoader worker processes with CUDA; on the CPU decoding costs ~5% of a step
                          # and extra processes only compete with torch's own threads, so 0 there
BN_RECALIBRATION = 1024   # training images (un-augmented) that re-estimate BatchNorm statistics per epoch
EMA_EPOCHS = 2.0          # validate/keep an exponential moving average of the weights over ~2 epochs
CHANNELS_LAST = False     # CPU: the model and each batch in NHWC memory order (oneDNN's fast layout)
BF16 = False              # CPU: training steps under bfloat16 autocast where the CPU has native bf16
                          # (AVX-512 BF16 / AMX; elsewhere float32). Measured in docs/benchmarks.md
                          # ("Training speed on the CPU"): 2.3x the images/s per step together, the same
                          # accuracy on one split; off by default until measured over folds, so the
                          # default recipe keeps its float32 weights

MODEL_FILE = "model.pt"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a CNN on spectrogram PNGs in IMAGES/{train,val,test}/<class>/ (torchvision "
                    "ImageFolder). Picks the best epoch on val (early stopping), scores it on test and "
                    "writes OUT/model.pt, metrics.json, curves.png, confusion.png. Under `torchrun "
                    "--nproc-per-node N` it trains with DistributedDataParallel (NCCL on GPUs, gloo on CPU).",
        epilog="Exit status: 0 on success, 1 when --skip-bad-images left images out, 2 for bad options or "
               "unusable images (the message names the file), 130 when interrupted (continue with --resume).")
    parser.add_argument("--images", required=True, help="folder written by `python -m preprocess` "
                        "(train/, val/, test/ and render.json)")
    parser.add_argument("--out", required=True, help="output folder, e.g. models/NAME")
    parser.add_argument("--arch", default=DEFAULT_ARCH, choices=sorted(ARCHITECTURES),
                        help="network (default: %(default)s); cnnet is the learning module's baseline")
    parser.add_argument("--pretrained", metavar="PATH|imagenet", default=None,
                        help="start a torchvision arch (resnet18, mobilenet_v3_small) from ImageNet weights: "
                             "a local .pth file, or 'imagenet' for torchvision's (torch hub cache or "
                             "download)")
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help="maximum number of epochs (default: %(default)s)")
    parser.add_argument("--patience", type=int, default=PATIENCE,
                        help="early stopping: epochs without a better validation score "
                             "(default: %(default)s)")
    parser.add_argument("--select", choices=("loss", "acc"), default=SELECT,
                        help="validation score that picks the best epoch and drives early stopping: loss "
                             "(lowest), or acc (highest accuracy, ties broken by loss) "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help="images per step and process (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=LR,
                        help="peak learning rate of AdamW's one-cycle schedule (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=WARMUP,
                        help="fraction of the steps warming up to --lr (default: %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY,
                        help="AdamW weight decay (default: %(default)s)")
    parser.add_argument("--label-smoothing", type=float, default=LABEL_SMOOTHING,
                        help="(default: %(default)s)")
    parser.add_argument("--balance", choices=balance.MODES, default=balance.DEFAULT,
                        help="class imbalance (e.g. a large 'unknown' class): draw images inversely to "
                             "their class size (sampler), weight the loss per class (loss), or neither "
                             "(default: %(default)s)")
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="turn off the random time shift and SpecAugment masks on training images")
    parser.add_argument("--noise", type=float, default=NOISE_PROBABILITY, metavar="P",
                        help="share of training images mixed with a random background-noise floor, in dB "
                             "(spectrogram and mel images; 0: off) (default: %(default)s)")
    parser.add_argument("--speed", type=float, default=SPEED_CHANGE, metavar="C",
                        help="speed perturbation: play each training image at a random 1-C..1+C times its "
                             "speed (shorter and higher, or longer and lower: other speaking rates and "
                             "voices; 0: off) (default: %(default)s)")
    parser.add_argument("--background", type=float, default=None, metavar="P",
                        help=f"share of training images mixed with a random training image of the class "
                             f"'{SILENCE}' (real background noise), their powers added, as if recorded over "
                             f"it; needs that class (default: {BACKGROUND_PROBABILITY} where the images have "
                             f"it, else 0)")
    parser.add_argument("--ema", type=float, default=EMA_EPOCHS, metavar="EPOCHS",
                        help="validate and keep an exponential moving average of the weights over about "
                             "this many epochs; 0: the raw weights (default: %(default)s)")
    parser.add_argument("--bn-recalibration", type=int, default=BN_RECALIBRATION, metavar="N",
                        help="before each validation, re-estimate BatchNorm statistics on N un-augmented "
                             "training images; 0 keeps the running averages (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="seed of every random choice (default: %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when available (default: %(default)s)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision (default: on with CUDA; never on the CPU)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=CHANNELS_LAST,
                        help="CPU: keep the model and each batch in channels-last (NHWC) memory order, "
                             "oneDNN's fast layout (default: %(default)s; --no-channels-last: NCHW)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=BF16,
                        help="CPU: run each training step's forward pass and loss under bfloat16 autocast "
                             "where the CPU has native bf16 (AVX-512 BF16 or AMX; elsewhere float32); "
                             "weights, optimizer and validation stay float32 (default: %(default)s; "
                             "--no-bf16: float32)")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"DataLoader worker processes (default: 0 on the CPU, up to {GPU_WORKERS} "
                             f"with CUDA)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per process (default: torch's choice, one per core)")
    parser.add_argument("--cache", action="store_true",
                        help="decode every PNG once and keep it in RAM (uint8, ~49 kB per 201x81 image)")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue the interrupted run in OUT from its {STATE_FILE}")
    parser.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="leave out unreadable or wrongly sized PNGs (named on stderr; exit status 1) "
                             "instead of refusing to start")
    cli.add_quiet_flag(parser)
    return parser
