"""Training-time augmentations, on the image tensor (x = time, y = frequency), as torchvision keeps its
transforms apart from its datasets. They respect what a spectrogram is: shifting in time, masking
bands, mixing in a background recording and changing speed keep the label; flips do not (a flipped
spectrogram is a different sound), so there are none. Each draws from a generator seeded per
(seed, epoch, index): a resumed run replays exactly what the uninterrupted run would have done.
"""
from __future__ import annotations

from pathlib import Path

import librosa  # lazy: its modules load on first use (mel_frequencies: ~0.4 s, --speed on mel only)
import numpy as np
import torch

from preprocess.render import RenderSettings, colormap_lut
from preprocess.silence import NONSPEECH_PREFIX
from train.data import DataError, SpectrogramFolder

# Augmentation strength (fractions of the image width/height; a 201x81 image is 81 frames of 12.5 ms).
MAX_TIME_SHIFT = 0.25    # up to +-20 frames (250 ms): words are not always centred, and some real
                         # recordings cut the word off at the clip's edge
TIME_MASKS = 2           # SpecAugment: up to 2 masks of up to 10% of the frames each
MAX_TIME_MASK = 0.10
FREQ_MASKS = 2           # and up to 2 masks of up to 10% of the frequency rows each
MAX_FREQ_MASK = 0.10
NOISE_PROBABILITY = 0.0  # share of training images given a random noise floor: off, it did not
                         # help on the real clips (docs/guide.md); --noise 0.5 turns it on
NOISE_FLOOR_DB = (-70.0, -30.0)  # its level, uniform; clean clips sit near -70, noisy rooms near -40
NOISE_TILT_DB = 10.0     # +- dB from the lowest to the highest row: white-ish to pink-ish noise
BACKGROUND_PROBABILITY = 0.8  # share of training images mixed with a real background where the set has a
                              # 'silence' class (--background): Google's trainer mixes 80 %
BACKGROUND_GAIN_DB = (-10.0, 0.0)  # extra gain of that background, uniform (its crop has its own gain)
SPEED_CHANGE = 0.0       # speed perturbation, +-this fraction (--speed): off; 0.1 finds more words among
                         # other words but fires more on hiss and buzz (docs/benchmarks.md, speed perturbation)


class SpeedPerturb:
    """Play the clip faster or slower by a random factor s in [1 - change, 1 + change], in the image.

    Resampling audio by s (Ko et al.'s speed perturbation, Kaldi's 0.9/1.0/1.1) shortens every sound by
    s and raises every frequency by s: another speaking rate and another vocal tract on the same take.
    In a spectrogram that is a gather: output frame x shows source frame c + (x - c) * s (c: the
    centre) and output row at frequency f shows the source row at f / s, through the image's own row
    frequencies (linear for spectrogram, mel-spaced for mel; mfcc rows are not frequencies, so only
    time is stretched there). Nearest rows and frames, so every pixel is still one of the renderer's
    colours (the palette-based mixes after it stay exact); past an edge the edge frame/row repeats.
    """

    def __init__(self, settings: RenderSettings, change: float = 0.1):
        if not 0.0 < change < 1.0:
            raise ValueError(f"speed change must be in (0, 1), got {change}")
        self.change = change
        self.height, self.width = settings.image_size
        self.row_hz = row_frequencies(settings)  # bottom row first, or None (mfcc)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        draw = float(torch.rand((), generator=generator, dtype=torch.float64))
        return self.apply(image, 1.0 + self.change * (2.0 * draw - 1.0))

    def apply(self, image: torch.Tensor, factor: float) -> torch.Tensor:
        """The CxHxW image of the same clip played `factor` times as fast."""
        centre = (self.width - 1) / 2.0
        frames = torch.arange(self.width, dtype=torch.float64).sub_(centre).mul_(factor).add_(centre)
        frames = frames.round_().clamp_(0, self.width - 1).long()
        image = image.index_select(2, frames)
        if self.row_hz is not None:
            # source row (bottom = 0) of each output row: where its frequency / factor lies
            source = torch.from_numpy(np.interp(self.row_hz / factor, self.row_hz, np.arange(self.height)))
            rows = (self.height - 1) - source.round_().long().flip(0)  # top row = highest frequency
            image = image.index_select(1, rows)
        return image

    def __repr__(self) -> str:
        return f"speed x{1 - self.change:.2f}..{1 + self.change:.2f}"


def row_frequencies(settings: RenderSettings) -> np.ndarray | None:
    """Centre frequency in Hz of each image row, lowest (the bottom row) first; None for mfcc."""
    if settings.feature == "spectrogram":
        return np.fft.rfftfreq(settings.n_fft, 1.0 / settings.sample_rate)
    if settings.feature == "mel":  # torchaudio MelSpectrogram's defaults: HTK scale, 0 .. Nyquist
        return librosa.mel_frequencies(settings.n_mels + 2, fmin=0.0, fmax=settings.sample_rate / 2,
                                       htk=True)[1:-1]  # the band edges' inner points are the centres
    return None


class NoiseFloor:
    """Add stationary background noise to a spectrogram image, in decibels, as the microphone would.

    Real recordings differ most in their background: many speakers recorded in noisy rooms. Pixels
    are levels of a fixed dB range (preprocess.render.to_levels), so an image can be turned back
    into dB, mixed with noise by adding powers (10*log10(10^(a/10) + 10^(b/10))) and turned into
    levels and colours again: the result is a spectrogram the renderer could have produced. The noise
    is Gaussian noise's periodogram: a level with a random spectral tilt, times exponential
    (chi-square, 2 degrees of freedom) fluctuations per pixel. Not for mfcc (not a dB image).
    """

    def __init__(self, settings: RenderSettings, probability: float = NOISE_PROBABILITY,
                 floor_db: tuple[float, float] = NOISE_FLOOR_DB, tilt_db: float = NOISE_TILT_DB):
        if settings.feature == "mfcc":
            raise ValueError("noise mixing needs spectrogram or mel images (mfcc pixels are not dB)")
        self.channels = settings.channels
        self.db_min, self.db_max = settings.pixel_range
        self.probability, self.floor_db, self.tilt_db = probability, floor_db, tilt_db
        lut = colormap_lut(settings.colormap)
        # level -> RGB, channels first: palette[:, levels] is the CxHxW image with no transpose
        self.palette = None if lut is None else torch.from_numpy(lut).float().div_(255.0).t().contiguous()
        if lut is not None:
            # RGB -> level through a small perfect hash (key mod the first size without collisions):
            # a searchsorted over the 256 colours costs ~3 ms per image, this ~0.2 ms.
            keys = lut[:, 0].astype("int64") * 65536 + lut[:, 1].astype("int64") * 256 + lut[:, 2]
            distinct = len(set(keys.tolist()))  # viridis has 2 pairs of equal neighbours in 8 bits
            self.table_size = next(n for n in range(256, 1 << 20)
                                   if len(set((keys % n).tolist())) == distinct)
            # int32 throughout (keys < 2^24): half the memory traffic of int64 on ~16k pixels an image
            self.slot_key = torch.full((self.table_size,), -1, dtype=torch.int32)
            self.slot_level = torch.zeros(self.table_size, dtype=torch.int32)
            for level, key in enumerate(keys.tolist()):
                self.slot_key[key % self.table_size] = key
                self.slot_level[key % self.table_size] = level
        # Signal power of each level, so the image -> power step is one gather.
        level_db = self.db_min + torch.arange(256.0) * ((self.db_max - self.db_min) / 255.0)
        self.level_power = 10.0 ** (level_db / 10.0)

    def levels(self, image: torch.Tensor) -> torch.Tensor:
        """float CxHxW image in [0, 1] (or its uint8 pixels) -> HxW integer levels 0..255 (int32)."""
        if image.dtype == torch.uint8:
            rgb = image.to(torch.int32)
        else:
            rgb = image.mul(255.0).round_().to(torch.int32)
        if self.palette is None:
            return rgb[0]
        keys = rgb[0].mul(65536).add_(rgb[1].mul(256)).add_(rgb[2])
        slots = keys % self.table_size
        if not torch.equal(self.slot_key[slots], keys):
            raise DataError("image has colours outside the render settings' colormap; cannot mix noise "
                            "(train with --no-augment or re-render the images)")
        return self.slot_level[slots]

    def image(self, levels: torch.Tensor) -> torch.Tensor:
        """HxW levels -> float CxHxW in [0, 1], exactly as a rendered PNG loads."""
        if self.palette is None:
            return levels[None].float().div_(255.0)
        return self.palette[:, levels]

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if float(torch.rand((), generator=generator)) >= self.probability:
            return image
        height, width = image.shape[1:]
        low, high = self.floor_db
        floor = low + (high - low) * float(torch.rand((), generator=generator))
        tilt = self.tilt_db * (2.0 * float(torch.rand((), generator=generator)) - 1.0)
        # Rows run from high frequency (top) to low (bottom): a tilt of +t makes high rows louder.
        row_power = 10.0 ** ((floor + tilt * torch.linspace(0.5, -0.5, height)[:, None]) / 10.0)
        fluctuation = torch.rand(height, width, generator=generator).log_().neg_()  # Exp(1)
        return self.from_power(self.power(image) + row_power * fluctuation)

    def power(self, image: torch.Tensor) -> torch.Tensor:
        """float CxHxW image (or its uint8 pixels) -> HxW signal power of its pixels."""
        return self.level_power[self.levels(image)]

    def from_power(self, power: torch.Tensor) -> torch.Tensor:
        """HxW power -> the image the renderer draws for it (levels quantised as to_levels does)."""
        span = self.db_max - self.db_min
        levels = ((10.0 * torch.log10(power) - self.db_min) * (255.0 / span)).clamp_(0.0, 255.0)
        return self.image(levels.add_(0.5).floor_().to(torch.int32))


class BackgroundMix:
    """Mix a real background into a training image: a random training image of the 'silence' class
    (1 s crops of the background recordings at random gains, digital silence, generated tones and
    clicks: see preprocess.openworld), its power added to the image's, pixel by pixel, at a further
    random gain.

    Google's speech_commands trainer mixes `_background_noise_` into 80 % of its training clips for the
    same reason: words are heard over dishes, taps and fans, and a model trained on clean clips loses
    them there (the scanner's recall, docs/benchmarks.md). Adding powers is how uncorrelated sounds add
    in a spectrogram (on average), so the result is close to what rendering the mixed audio would give,
    and the train stage stays image-only. The silence images of the train split only: val/test unseen.
    Not the generated non-speech among them (file names NONSPEECH_PREFIX...): those sounds are there to
    be told apart from words, and at their levels (up to -6 dBFS) they bury a word rather than sit
    behind it; mixed in, they cost the scanner 4.6 points of recall on fold 0 (docs/benchmarks.md).
    """

    def __init__(self, codec: NoiseFloor, probability: float, gain_db: tuple[float, float] = BACKGROUND_GAIN_DB):
        self.codec, self.probability, self.gain_db = codec, probability, gain_db
        self.dataset: SpectrogramFolder | None = None
        self.indices = torch.zeros(0, dtype=torch.int64)

    def bind(self, dataset: SpectrogramFolder, class_name: str) -> int:
        """Draw backgrounds from `dataset`'s images of `class_name` (recordings and digital silence, not
        generated non-speech); -> how many there are."""
        self.dataset = dataset
        if class_name in dataset.class_to_idx:
            label = dataset.class_to_idx[class_name]
            self.indices = torch.tensor([i for i, (path, t) in enumerate(dataset.samples) if t == label
                                         and not Path(path).name.startswith(NONSPEECH_PREFIX)],
                                        dtype=torch.int64)
        return len(self.indices)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not len(self.indices) or float(torch.rand((), generator=generator)) >= self.probability:
            return image
        pick = int(self.indices[int(torch.randint(0, len(self.indices), (1,), generator=generator))])
        low, high = self.gain_db
        gain = 10.0 ** ((low + (high - low) * float(torch.rand((), generator=generator))) / 10.0)
        background = self.codec.power(self.dataset.load_uint8(pick))  # no float round trip
        return self.codec.from_power(self.codec.power(image) + gain * background)


class SpecAugment:
    """Speed perturbation and background noise (optional), random time shift, SpecAugment time and
    frequency masks. Never flips.

    The time shift moves the frames along x; the part pushed over one edge is dropped (a word cut off,
    as in real clips) and the frames entering at the other edge are copies of the image's own quietest
    frames, i.e. its background: every column stays a real frame of this recording.

    Masks are filled with the image's per-channel mean (the SpecAugment paper's "mean value"), so a
    masked band carries no information and adds no colour a spectrogram could not have on average.
    """

    def __init__(self, max_shift: float = MAX_TIME_SHIFT, time_masks: int = TIME_MASKS,
                 max_time_mask: float = MAX_TIME_MASK, freq_masks: int = FREQ_MASKS,
                 max_freq_mask: float = MAX_FREQ_MASK, noise: NoiseFloor | None = None,
                 background: BackgroundMix | None = None, speed: SpeedPerturb | None = None):
        self.max_shift = max_shift
        self.time_masks, self.max_time_mask = time_masks, max_time_mask
        self.freq_masks, self.max_freq_mask = freq_masks, max_freq_mask
        self.noise, self.background, self.speed = noise, background, speed

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _, height, width = image.shape
        if self.speed is not None:  # first: the speaker's rate and pitch change, not the room's
            image = self.speed(image, generator)
        if self.noise is not None:
            image = self.noise(image, generator)
        if self.background is not None:
            image = self.background(image, generator)
        image = self._shift(image, int(self.max_shift * width), generator)
        fill = image.mean(dim=(1, 2), keepdim=True)
        for _ in range(self.time_masks):
            self._mask(image, 2, int(self.max_time_mask * width), fill, generator)
        for _ in range(self.freq_masks):
            self._mask(image, 1, int(self.max_freq_mask * height), fill, generator)
        return image

    @staticmethod
    def _shift(image: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor:
        shift = int(torch.randint(-limit, limit + 1, (1,), generator=generator)) if limit > 0 else 0
        if shift == 0:
            return image.clone()
        width = image.shape[2]
        quietest = image.mean(dim=(0, 1)).argsort(stable=True)[:max(1, width // 4)]  # darkest = lowest level
        picks = quietest[torch.randint(0, len(quietest), (abs(shift),), generator=generator)]
        background = image[:, :, picks]
        if shift > 0:
            return torch.cat([background, image[:, :, :width - shift]], dim=2)
        return torch.cat([image[:, :, -shift:], background], dim=2)

    @staticmethod
    def _mask(image: torch.Tensor, dim: int, max_size: int, fill: torch.Tensor,
              generator: torch.Generator) -> None:
        if max_size < 1:
            return
        size = int(torch.randint(0, max_size + 1, (1,), generator=generator))
        start = int(torch.randint(0, image.shape[dim] - size + 1, (1,), generator=generator))
        band = image.narrow(dim, start, size)
        band.copy_(fill.expand_as(band))

    def __repr__(self) -> str:
        parts = [] if self.speed is None else [str(self.speed)]  # in the order they are applied
        if self.noise is not None:
            parts.append(f"noise floor {self.noise.floor_db[0]:.0f}..{self.noise.floor_db[1]:.0f} dB on "
                         f"{self.noise.probability:.0%}")
        if self.background is not None:
            parts.append(f"background mix {self.background.gain_db[0]:.0f}..{self.background.gain_db[1]:.0f} dB "
                         f"on {self.background.probability:.0%} ({len(self.background.indices)} images)")
        parts.append(f"shift<={self.max_shift:.0%} of width, {self.time_masks} time masks "
                     f"<={self.max_time_mask:.0%}, {self.freq_masks} freq masks <={self.max_freq_mask:.0%}")
        return f"SpecAugment({', '.join(parts)})"
