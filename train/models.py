"""Network architectures, built from (arch, num_classes, input_size) so a checkpoint can rebuild them."""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from preprocess.cli import SpecVisionError


class CNNet(nn.Module):
    """The PyTorch learning module's yes/no network: our baseline.

    Two 5x5 convs (32, 64 filters) with 2x2 max-pool, dropout, FC 50, FC classes. Two changes: the
    flatten size is derived from the image size instead of the module's hard-coded 51136, and the
    output is raw logits (the module put a ReLU on them, which zeroes every negative logit).
    """

    def __init__(self, num_classes: int, input_size: tuple[int, int, int]):
        super().__init__()
        channels, height, width = input_size
        self.conv1 = nn.Conv2d(channels, 32, kernel_size=5)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        flat_h, flat_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
        if flat_h < 1 or flat_w < 1:
            raise ValueError(f"cnnet needs images of at least 16x16 pixels, got {height}x{width}")
        self.fc1 = nn.Linear(64 * flat_h * flat_w, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        x = F.dropout(x, training=self.training)
        return self.fc2(x)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut, as in ResNet."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


class SpecResNet(nn.Module):
    """Compact residual CNN for spectrogram images: the default (measured in docs/benchmarks.md).

    A stride-2 stem and a max-pool shrink a 201x81 image 4x per side before any residual block (that
    is where cnnet spends its time: 32 full-resolution 5x5 maps), then three residual stages double
    the width while halving the resolution, and global average pooling feeds one linear layer.
    BatchNorm right after the stem conv makes the network invariant to the input's scale and offset,
    so it takes ToTensor() pixels as they are: no separate normalisation to keep in sync.
    """

    def __init__(self, num_classes: int, input_size: tuple[int, int, int],
                 widths: tuple[int, ...] = (24, 48, 96), stem_width: int = 24, dropout: float = 0.2):
        super().__init__()
        channels, height, width = input_size
        if height < 8 or width < 8:
            raise ValueError(f"specresnet needs images of at least 8x8 pixels, got {height}x{width}")
        self.stem = nn.Sequential(
            nn.Conv2d(channels, stem_width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True))
        stages, in_width = [], stem_width
        for index, out_width in enumerate(widths):
            stages.append(ResidualBlock(in_width, out_width, stride=1 if index == 0 else 2))
            in_width = out_width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(in_width, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class TorchvisionNet(nn.Module):
    """A torchvision classifier built with `num_classes` and no weights, fed like ImageNet models.

    ImageNet's mean/std normalisation lives here as buffers (so pretrained weights see the inputs they
    were trained on and the checkpoint stays self-contained); gray images are repeated to 3 channels.
    """

    IMAGENET_MEAN = (0.485, 0.456, 0.406)
    IMAGENET_STD = (0.229, 0.224, 0.225)

    def __init__(self, name: str, num_classes: int, input_size: tuple[int, int, int]):
        super().__init__()
        if input_size[0] not in (1, 3):
            raise ValueError(f"{name} takes 1- or 3-channel images, got {input_size[0]} channels")
        self.name = name
        import torchvision  # here, not at the top: it adds ~170 MB RSS to every predict and preprocess
        self.net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        self.register_buffer("mean", torch.tensor(self.IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net((x - self.mean) / self.std)


ARCHITECTURES = {
    "cnnet": CNNet,
    "specresnet": SpecResNet,
    "resnet18": functools.partial(TorchvisionNet, "resnet18"),
    "mobilenet_v3_small": functools.partial(TorchvisionNet, "mobilenet_v3_small"),
}
DEFAULT_ARCH = "specresnet"  # measured by `python -m bench.cnnet` against cnnet (docs/benchmarks.md)


def build_model(arch: str, num_classes: int, input_size: tuple[int, int, int]) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes=num_classes, input_size=tuple(input_size))


class PretrainedError(SpecVisionError):
    """ImageNet weights that cannot be had or do not fit; the message says what to do."""


def load_pretrained(model: nn.Module, arch: str, source: str) -> int:
    """Load ImageNet weights into a torchvision arch; returns how many tensors were loaded.

    `source` is a local .pth file (torchvision's ImageNet state dict), or "imagenet" for torchvision's
    own weights, found in the torch hub cache or downloaded (impossible offline: a clear error then).
    The classifier layer (1000 ImageNet classes) is left at its fresh initialisation.
    """
    if not isinstance(model, TorchvisionNet):
        torchvision_archs = sorted(a for a, f in ARCHITECTURES.items() if isinstance(f, functools.partial))
        raise PretrainedError(f"--pretrained works with the torchvision archs {torchvision_archs}, not {arch!r}")
    if source == "imagenet":
        import torchvision
        weights = torchvision.models.get_model_weights(model.name).DEFAULT
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as err:  # URLError, HTTPError, socket errors, ...: all mean "not available"
            raise PretrainedError(
                f"ImageNet weights for {model.name} are not in the torch hub cache ({torch.hub.get_dir()}) "
                f"and cannot be downloaded ({err.__class__.__name__}: {err}); fetch {weights.url} on a "
                f"machine with internet and pass the file: --pretrained PATH") from None
    else:
        path = Path(source)
        if not path.is_file():
            raise PretrainedError(f"{path}: no such weights file (pass a torchvision ImageNet .pth state "
                                  f"dict for {model.name}, e.g. {model.name}-*.pth, or 'imagenet')")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise PretrainedError(f"{path}: not a readable PyTorch weights file ({err})") from None
        if not isinstance(state, dict):
            raise PretrainedError(f"{path}: expected a state dict, got {type(state).__name__}")
    own = model.net.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    backbone = [k for k in own if not k.startswith(("fc.", "classifier.3."))]
    missing = [k for k in backbone if k not in fitting]
    if missing:
        raise PretrainedError(f"{source}: weights do not fit {model.name} ({len(missing)} tensors missing "
                              f"or of another shape, e.g. {missing[0]!r})")
    model.net.load_state_dict(fitting, strict=False)
    return len(fitting)
