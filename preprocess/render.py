"""Audio clip -> spectrogram image. The one render path shared by preprocess, predict and show.

    waveform = load_audio(path, settings)      # decode, mono, resample, pad/trim (float32, [-1, 1])
    image    = render_image(waveform, settings)  # PIL image: palette (viridis) or gray
    save_png(image, out_path, metadata)         # atomic write with text metadata

Loudness is mapped to pixels with a *fixed* dB range (never per-image min/max), so one pixel value
means the same level in every image: silence is dark, a shout is bright, and the network can use it.
Rows are flipped so low frequencies sit at the bottom, as on every spectrogram plot.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os

import numpy as np
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T
from PIL import Image, PngImagePlugin

from preprocess.atomic import atomic_write_bytes
# The render's parts are importable from here too, as one render path: its settings and audio input.
from preprocess.audio import (audio_blocks, decode_clip, fit_length, load_audio, load_clip,  # noqa: F401
                              loudest_window, open_audio, prepare_waveform, read_plain_wav, resample)
from preprocess.settings import (AUDIO_EXTENSIONS, COLORMAPS, DEFAULT_RANGES, FEATURES,  # noqa: F401
                                 MAX_AUDIO_SECONDS, POWER_FLOOR, RENDER_VERSION, AudioError, RenderSettings)


# ---------------------------------------------------------------- features -> pixels

@functools.lru_cache(maxsize=8)
def _feature_transform(settings: RenderSettings):
    if settings.feature == "spectrogram":
        return T.Spectrogram(n_fft=settings.n_fft, hop_length=settings.hop_length, power=2.0)
    return T.MelSpectrogram(sample_rate=settings.sample_rate, n_fft=settings.n_fft,
                            hop_length=settings.hop_length, n_mels=settings.n_mels, power=2.0)


@functools.lru_cache(maxsize=8)
def _dct_matrix(settings: RenderSettings) -> torch.Tensor:
    return AF.create_dct(settings.n_mfcc, settings.n_mels, norm="ortho")


def colormap_lut(name: str) -> np.ndarray | None:
    """Level -> RGB (256x3 uint8) of a colormap; None for gray.

    Viridis is embedded (VIRIDIS_RGB, below) rather than read from matplotlib at run time: importing
    matplotlib costs ~0.1 s in every preprocess worker and every predict call, for 768 bytes.
    tests/test_render.py checks the table against matplotlib's own viridis.
    """
    return None if name == "gray" else np.frombuffer(VIRIDIS_RGB, np.uint8).reshape(256, 3).copy()


def _power_spectrogram(wave: np.ndarray, settings: RenderSettings) -> torch.Tensor:
    """|STFT|^2: what T.Spectrogram(power=2.0) computes (its torch.stft call and .abs().pow(2.0)), called
    directly: the module's call overhead is a fifth of the feature's time for a 1 s clip.

    The centring pad (reflect, n_fft // 2 each side) is done by slicing, the same samples that
    torch.stft(center=True) copies with torch's reflection pad, at a third of its cost."""
    spectrogram, pad = _feature_transform(settings), settings.n_fft // 2
    padded = 0 < pad < len(wave)  # else (shorter than half a window): torch.stft's own padding and error
    if padded:
        wave = np.concatenate([wave[pad:0:-1], wave, wave[-2:-pad - 2:-1]])
    spec = torch.stft(torch.from_numpy(wave), settings.n_fft, settings.hop_length, spectrogram.win_length,
                      spectrogram.window, center=not padded, pad_mode="reflect", normalized=False, onesided=True,
                      return_complex=True)
    return spec.abs().pow_(2.0)


def feature_matrix(waveform: np.ndarray, settings: RenderSettings) -> np.ndarray:
    """The feature in its physical unit (dB, or MFCC of dB), rows = low to high frequency/quefrency."""
    with torch.inference_mode():
        wave = np.ascontiguousarray(waveform)
        if settings.feature == "spectrogram":
            power = _power_spectrogram(wave, settings)
        else:
            power = _feature_transform(settings)(torch.from_numpy(wave))
        db = power.clamp_min_(POWER_FLOOR).log10_().mul_(10.0)  # in place: the same values, no copies
        if settings.feature == "mfcc":
            db = (db.transpose(-1, -2) @ _dct_matrix(settings)).transpose(-1, -2)
    return db.numpy()


def to_levels(matrix: np.ndarray, settings: RenderSettings) -> np.ndarray:
    """Fixed-range map to 8-bit levels (HxW uint8), low frequencies at the bottom."""
    lo, hi = settings.pixel_range
    scaled = matrix - lo  # then in place: the same float32 operations as np.floor(clip(..) + 0.5)
    scaled *= 255.0 / (hi - lo)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += 0.5
    return np.floor(scaled, out=scaled)[::-1].astype(np.uint8, order="C")


def to_image(levels: np.ndarray, settings: RenderSettings) -> Image.Image:
    """Levels -> PIL image: 'L' for gray, 'P' with the colormap as palette for viridis.

    A palette PNG decodes (``.convert("RGB")``, as ImageFolder's loader does) to exactly the
    colormapped pixels, at half the file size and a tenth of the encode time of an RGB PNG.
    """
    image = Image.fromarray(levels)
    if settings.colormap == "viridis":
        image.putpalette(VIRIDIS_RGB)
    return image


def render_image(waveform: np.ndarray, settings: RenderSettings) -> Image.Image:
    """Mono float32 waveform at settings.sample_rate (any length: it is fitted) -> PIL image."""
    if len(waveform) != settings.num_samples:
        waveform = fit_length(np.asarray(waveform, dtype=np.float32), settings.num_samples)
    return to_image(to_levels(feature_matrix(waveform, settings), settings), settings)


@functools.lru_cache(maxsize=4)
def _level_table(colormap: str) -> np.ndarray:
    """Level (0..255) -> the float32 pixel(s) ToTensor() gives for it: [channels, 256].

    Made by the same torch operations as image_to_tensor (uint8 -> float, / 255), so every entry is
    that function's value for that level, bit for bit (tests/test_render.py checks all 256)."""
    lut = colormap_lut(colormap)
    levels = np.arange(256, dtype=np.uint8)[:, None] if lut is None else lut  # 256 x channels
    return torch.from_numpy(np.ascontiguousarray(levels.T)).float().div_(255.0).numpy()


def render_tensor(waveform: np.ndarray, settings: RenderSettings) -> torch.Tensor:
    """image_to_tensor(render_image(waveform, settings), settings.channels), the same floats, without
    the PIL image: the 8-bit levels (the same to_levels of the same feature_matrix) index the table
    of what ToTensor() makes of each level. What predict and the scanner feed the network."""
    if len(waveform) != settings.num_samples:
        waveform = fit_length(np.asarray(waveform, dtype=np.float32), settings.num_samples)
    levels = to_levels(feature_matrix(waveform, settings), settings)
    return torch.from_numpy(np.take(_level_table(settings.colormap), levels, axis=1))


def render_tensors(windows: list[np.ndarray], hop: int, settings: RenderSettings) -> torch.Tensor:
    """torch.stack([render_tensor(w, settings) for w in windows]) for consecutive windows of one
    recording, `hop` samples apart (the long-recording scanner's), computing the STFT frames that
    overlapping windows share once.

    A window's frames are its two reflect-padded edge frames (computed per window, from the same
    padded samples torch.stft(center=True) uses) and interior frames that lie wholly inside the
    window: those are frames of the recording itself, and with `hop` a multiple of hop_length the
    windows share them (at a 0.25 s hop, 79 of a 1 s window's 81 frames come from earlier windows).
    Every value is then the same computation on the same samples (an FFT per frame, then elementwise
    |.|^2, floor, dB and level map), so the tensors are equal bit for bit (tests/test_render.py).
    Features other than the spectrogram, a hop that is not a whole number of STFT hops, and windows not
    of the render length take render_tensor per window."""
    n, hl, n_fft = settings.num_samples, settings.hop_length, settings.n_fft
    pad = n_fft // 2
    frames = 1 + n // hl
    first, last = -(-pad // hl), (pad + n - n_fft) // hl  # interior frames: wholly inside the window
    transform = _feature_transform(settings) if settings.feature == "spectrogram" else None
    if (transform is None or len(windows) < 2 or not 0 < hop <= n or hop % hl or not 0 < pad < n
            or transform.win_length != n_fft or last < first or any(len(w) != n for w in windows)):
        return torch.stack([render_tensor(w, settings) for w in windows])
    count, step = len(windows), hop // hl
    windows = [np.asarray(w, dtype=np.float32) for w in windows]
    span = np.concatenate([windows[0]] + [w[n - hop:] for w in windows[1:]])  # the recording they cover
    edges = [j for j in range(frames) if j < first or j > last]
    padded_edges = []
    for w in windows:
        padded = np.concatenate([w[pad:0:-1], w, w[-2:-pad - 2:-1]])  # what stft(center=True) pads
        padded_edges += [padded[j * hl:j * hl + n_fft] for j in edges]
    stft = functools.partial(torch.stft, n_fft=n_fft, hop_length=hl, win_length=n_fft, window=transform.window,
                             center=False, normalized=False, onesided=True, return_complex=True)
    with torch.inference_mode():
        inner = stft(torch.from_numpy(span[first * hl - pad:])).T            # [frames of the span, freq]
        outer = stft(torch.from_numpy(np.stack(padded_edges)))[:, :, 0]      # [windows x edges, freq]
        db = torch.cat([inner, outer]).abs().pow_(2.0).clamp_min_(POWER_FLOOR).log10_().mul_(10.0)
    index = np.empty((count, frames), np.int64)
    interior = np.arange(first, last + 1)
    index[:, first:last + 1] = np.arange(count)[:, None] * step + (interior - first)[None, :]
    index[:, edges] = len(inner) + np.arange(count * len(edges)).reshape(count, len(edges))
    matrix = db.numpy()[index].transpose(0, 2, 1)  # [windows, freq, frames], as feature_matrix per window
    lo, hi = settings.pixel_range
    scaled = matrix - lo  # to_levels, per value the same float32 operations
    scaled *= 255.0 / (hi - lo)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += 0.5
    levels = np.floor(scaled, out=scaled)[:, ::-1].astype(np.uint8).astype(np.intp, order="C")
    table = _level_table(settings.colormap)  # [channels, 256]
    out = np.empty((count, len(table), *levels.shape[1:]), np.float32)
    for channel, values in enumerate(table):  # (intp indices: take converts uint8 ones on every call)
        np.take(values, levels, out=out[:, channel])
    return torch.from_numpy(out)


def render_file(path: str | os.PathLike, settings: RenderSettings, data: bytes | None = None,
                max_seconds: float = MAX_AUDIO_SECONDS) -> Image.Image:
    """Audio file (or its bytes, `data`) -> the image `python -m preprocess` writes for it."""
    return render_image(load_clip(path, settings, data, max_seconds), settings)


def image_to_tensor(image: Image.Image, channels: int) -> torch.Tensor:
    """PIL image -> float CxHxW in [0, 1], as ``ToTensor()`` gives for the PNG read by ImageFolder."""
    array = np.array(image.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)  # a writable copy
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


# ---------------------------------------------------------------- PNG files


def save_png(image: Image.Image, path: str | os.PathLike, metadata: dict[str, str] | None = None,
             temp_dir: str | os.PathLike | None = None) -> None:
    """Write a PNG atomically (temp file, then rename): never a partial image.

    The temp file is made in `temp_dir` (same filesystem; default: beside the PNG).

    Stored uncompressed (zlib level 0): spectrogram pixels are noise to deflate, which saves only
    ~11 % of the bytes at level 1 (16.9 -> 15.1 KiB per default image) for 6x the encode time and
    3x the decode time in every training epoch.
    """
    atomic_write_bytes(path, encode_png(image, metadata), temp_dir)


def encode_png(image: Image.Image, metadata: dict[str, str] | None = None) -> memoryview:
    """The PNG bytes save_png writes: uncompressed, `metadata` as specvision:KEY text chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(f"specvision:{key}", str(value))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=0)
    return buffer.getbuffer()


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
    from preprocess.images import open_png  # (images imports nothing from here)
    with open_png(path) as image:
        text = getattr(image, "text", {}) or {}
    return {k.split(":", 1)[1]: v for k, v in text.items() if k.startswith("specvision:")}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# matplotlib's viridis at 256 levels, as (colormap(level)[:3] * 255 + 0.5) truncated to uint8, RGB per level
VIRIDIS_RGB = bytes.fromhex(
    "44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467481668481769"
    "48186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979472a7a472c7a"
    "472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84433d84433e85423f85"
    "4240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b"
    "3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d"
    "33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e"
    "2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e"
    "26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d"
    "21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f88"
    "1fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad81"
    "28ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc74"
    "3fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc863"
    "5ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d"
    "84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32"
    "addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21a"
    "d8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723fde725"
)
