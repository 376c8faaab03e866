"""images/<split>/<class>/*.png -> tensors, exactly as predict will see a freshly rendered clip.

The model input is ``preprocess.render.image_to_tensor`` of the PNG (uint8 / 255, CxHxW): no resize,
no normalisation here (that lives inside the model, so a checkpoint is self-contained).
Training-time augmentations act on that tensor (train/augment.py).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor
from tqdm import tqdm

from preprocess.cli import SpecVisionError
from preprocess.images import ImageError, check_png, decode, open_png
from preprocess.layout import SPLITS
from preprocess.render import RenderSettings, image_to_tensor

class DataError(SpecVisionError):
    """An images folder that cannot be trained on; the message names the path and the reason."""


def load_png(path: str, channels: int) -> Image.Image:
    """ImageFolder loader: palette (viridis) PNGs -> RGB, gray -> L, like image_to_tensor.

    Header checks come first (no decompression bomb is decoded); a file that turned bad after the
    check before training is a DataError naming it."""
    try:
        with open_png(path) as image:
            return decode(image, path, "RGB" if channels == 3 else "L")
    except ImageError as err:
        raise DataError(str(err)) from None


def image_modes(channels: int) -> tuple[str, ...]:
    """PNG modes that load as the model's input: viridis palette (or RGB) for 3 channels, gray for 1."""
    return ("P", "RGB") if channels == 3 else ("L",)


def check_images(samples: list[tuple[str, int]], image_size: tuple[int, int], channels: int,
                 progress: bool = True, desc: str = "check") -> list[str]:
    """The fast check of every image before training or scoring (header, size, mode, checksums; no
    decoding): one message per unusable file, naming it."""
    height, width = image_size
    problems = []
    for path, _ in tqdm(samples, desc=desc, unit="img", leave=False, disable=not progress or None,
                        mininterval=0.5):
        try:
            check_png(path, (width, height), image_modes(channels))
        except ImageError as err:
            problems.append(str(err))
    return problems


def is_png(path: str) -> bool:
    return path.lower().endswith(".png") and not Path(path).name.startswith(".")  # not a save_png temp


class SpectrogramFolder(ImageFolder):
    """ImageFolder of spectrogram PNGs -> (float CxHxW in [0, 1], class index).

    `cache` decodes every PNG once into one uint8 tensor (1/4 the RAM of floats; ~49 kB per 201x81
    RGB image) so later epochs skip PNG decoding. `augment(tensor, generator)` is applied per sample
    with a generator seeded from (seed, epoch, index): augmentations are reproducible whatever the
    number of DataLoader workers or processes.
    """

    def __init__(self, root: str | Path, channels: int, image_size: tuple[int, int],
                 augment=None, cache: bool = False, seed: int = 0, progress: bool = True,
                 skip_bad: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: no such folder (expected class folders of PNG images)")
        try:
            super().__init__(str(root), loader=functools.partial(load_png, channels=channels),
                             is_valid_file=is_png)
        except FileNotFoundError as err:  # ImageFolder's message for no classes / no images
            raise DataError(f"{root}: no PNG images in class folders ({str(err).strip()})") from None
        self.channels = channels
        self.image_size = tuple(image_size)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._cache: torch.Tensor | None = None
        self._check_size(self.samples[0][0])
        self.skipped = self._drop_bad_images(root, skip_bad, progress)
        if cache:
            # filled in place: stacking a list of decoded images held them twice at the peak
            self._cache = torch.empty((len(self.samples), channels, *self.image_size), dtype=torch.uint8)
            images = tqdm(self.samples, desc=f"cache {root.name}", unit="img", leave=False,
                          disable=not progress)
            for index, (path, _) in enumerate(images):
                self._cache[index] = self._decode_uint8(path)

    def _drop_bad_images(self, root: Path, skip_bad: bool, progress: bool) -> list[str]:
        """Check every image now, so a bad one is named before training starts; drop them if asked."""
        problems = check_images(self.samples, self.image_size, self.channels, progress, f"check {root.name}")
        if problems and not skip_bad:
            listed = "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise DataError(f"{root}: {len(problems)} unusable image(s): {listed} (re-render them, or "
                            f"pass --skip-bad-images to leave them out)")
        if problems:
            bad = {message.split(": ", 1)[0] for message in problems}
            self.samples = [(path, target) for path, target in self.samples if path not in bad]
            self.targets = [target for _, target in self.samples]
            self.imgs = self.samples
            if not self.samples:
                raise DataError(f"{root}: no usable image left after skipping {len(problems)} bad one(s)")
        return problems

    def _check_size(self, path: str) -> None:
        try:
            with open_png(path) as image:
                width, height = image.size
        except ImageError:
            return  # named (or skipped) by _drop_bad_images with the other unusable files
        if (height, width) != self.image_size:
            raise DataError(f"{path}: image is {height}x{width} (HxW) but render.json settings give "
                            f"{self.image_size[0]}x{self.image_size[1]}; re-render or use matching images")

    def _decode_uint8(self, path: str) -> torch.Tensor:
        tensor = pil_to_tensor(self.loader(path))
        if tuple(tensor.shape[1:]) != self.image_size:
            raise DataError(f"{path}: image is {tensor.shape[1]}x{tensor.shape[2]} (HxW), expected "
                            f"{self.image_size[0]}x{self.image_size[1]} like the other images")
        return tensor

    def load_uint8(self, index: int) -> torch.Tensor:
        """The un-augmented image of sample `index` as uint8 CxHxW pixels (the cache's, or decoded)."""
        if self._cache is not None:
            return self._cache[index]
        return self._decode_uint8(self.samples[index][0])

    def load_tensor(self, index: int) -> torch.Tensor:
        """The un-augmented model input for sample `index`."""
        if self._cache is not None:
            return self._cache[index].float().div_(255.0)  # the same arithmetic as image_to_tensor
        path = self.samples[index][0]
        tensor = image_to_tensor(self.loader(path), self.channels)
        if tuple(tensor.shape[1:]) != self.image_size:
            raise DataError(f"{path}: image is {tensor.shape[1]}x{tensor.shape[2]} (HxW), expected "
                            f"{self.image_size[0]}x{self.image_size[1]} like the other images")
        return tensor

    def __getitem__(self, index: int):
        tensor = self.load_tensor(index)
        if self.augment is not None:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
            tensor = self.augment(tensor, generator)
        return tensor, self.targets[index]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


class Unaugmented(torch.utils.data.Dataset):
    """The same images without augmentation (shares the cache)."""

    def __init__(self, dataset: SpectrogramFolder):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset.load_tensor(index), self.dataset.targets[index]


def build_datasets(images_dir: str | Path, settings: RenderSettings, augment=None, cache: bool = False,
                   seed: int = 0, progress: bool = True, splits=SPLITS,
                   skip_bad: bool = False) -> dict[str, SpectrogramFolder]:
    """{split: SpectrogramFolder} with the same class list in every split (or a DataError)."""
    images_dir = Path(images_dir)
    datasets = {}
    for split in splits:
        datasets[split] = SpectrogramFolder(images_dir / split, settings.channels, settings.image_size,
                                            augment=augment if split == "train" else None,
                                            cache=cache, seed=seed, progress=progress, skip_bad=skip_bad)
    classes = datasets[splits[0]].classes
    if len(classes) < 2:
        raise DataError(f"{images_dir / splits[0]}: found {len(classes)} class folder(s) {classes}; "
                        f"a classifier needs at least 2")
    for split, dataset in datasets.items():
        if dataset.classes != classes:
            raise DataError(f"{images_dir / split}: classes {dataset.classes} differ from "
                            f"{splits[0]}'s {classes}; every split needs the same class folders")
    return datasets
