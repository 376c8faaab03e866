"""Audio in: decode a clip (libsndfile, or the standard library for plain 16-bit WAVs), mono, resample to
the render's rate, fit to its duration (the loudest window of a longer clip); long recordings in
blocks. Every refusal is an AudioError naming the file and the reason; memory is bounded whatever the
header claims (MAX_AUDIO_SECONDS, WHOLE_DECODE_SAMPLES, BLOCK_SECONDS)."""
from __future__ import annotations

import io
import math
import os
import re
import stat
import wave as stdlib_wave
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
import torchaudio.functional as AF

from preprocess.settings import (BLOCK_SECONDS, MAX_AUDIO_SECONDS, MAX_SINC_KERNEL, SOXR_QUALITY,
                                 WHOLE_DECODE_SAMPLES, AudioError, RenderSettings)


def open_audio(path: str | os.PathLike, data: bytes | None = None,
               max_seconds: float = MAX_AUDIO_SECONDS) -> sf.SoundFile:
    """Open a clip (or its bytes, `data`) and check its header before anything is decoded.

    A header that declares more than `max_seconds` of audio is refused here: a sparse multi-GB file
    or a forged length costs nothing. The caller closes the returned SoundFile.
    """
    path = Path(path)
    if (len(data) if data is not None else path.stat().st_size) == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        handle = sf.SoundFile(io.BytesIO(data) if data is not None else str(path))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as err:
        raise AudioError(f"{path}: cannot decode audio ({_plain(err)})") from None
    if handle.frames <= 0:
        handle.close()
        raise AudioError(f"{path}: no audio frames")
    seconds = handle.frames / handle.samplerate
    if seconds > max_seconds:
        handle.close()
        raise AudioError(f"{path}: header declares {seconds:.0f} s of audio, more than the limit of "
                         f"{max_seconds:.0f} s (--max-seconds); not decoded")
    return handle


def _plain(err: Exception) -> str:
    """An error message without object reprs (`<_io.BytesIO object at 0x...>`): same run, same text."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the file", str(err))


def _read(handle: sf.SoundFile, frames: int, path: Path) -> np.ndarray:
    """Up to `frames` frames as float32 mono (channels averaged), checked for NaN/inf."""
    try:
        samples = handle.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as err:
        raise AudioError(f"{path}: cannot decode audio ({_plain(err)})") from None
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return _mono(samples)


def _mono(samples: np.ndarray) -> np.ndarray:
    """frames x channels float32 -> mono: the channels' mean; one channel as it is (the mean of one
    value is that value; .mean(axis=1) over 16,000 rows of one costs more than the decode)."""
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)


def load_audio(path: str | os.PathLike, settings: RenderSettings, data: bytes | None = None,
               max_seconds: float = MAX_AUDIO_SECONDS) -> np.ndarray:
    """Decode a whole clip to float32 mono at settings.sample_rate (not yet padded).

    `data`: the file's bytes, when the caller has read them already (preprocess hashes them too, so
    each file is read once); `path` then only names the clip in errors. For long recordings use
    `audio_blocks` (bounded memory) instead; this holds the whole clip.
    """
    path = Path(path)
    with open_audio(path, data, max_seconds) as handle:
        samples, rate = _read(handle, -1, path), handle.samplerate
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: no audio frames")
    return prepare_waveform(samples, rate, settings, fit=False)


def audio_blocks(handle: sf.SoundFile, path: str | os.PathLike, settings: RenderSettings,
                 block_seconds: float = BLOCK_SECONDS):
    """Yield a recording as float32 mono blocks at settings.sample_rate, decoding `block_seconds` at a
    time: memory stays bounded whatever the length. Resampled by a streaming soxr resampler."""
    path = Path(path)
    frames = max(1, int(block_seconds * handle.samplerate))
    stream = None
    if handle.samplerate != settings.sample_rate:
        stream = soxr.ResampleStream(handle.samplerate, settings.sample_rate, 1, dtype="float32",
                                     quality=SOXR_QUALITY)
    while True:
        block = _read(handle, frames, path)
        last = len(block) < frames
        if stream is not None:
            block = stream.resample_chunk(block, last=last)
        if len(block):
            yield np.ascontiguousarray(block, dtype=np.float32)
        if last:
            return


def _plain_pcm16(data: bytes, max_seconds: float) -> tuple[np.ndarray, int] | None:
    """(float32 mono samples, rate) of a whole, plain 16-bit PCM WAV (the format of Speech Commands and
    of most recorders), read by the standard library's `wave`: 6x less CPU than libsndfile through a
    file object, a tenth of preprocess's time per clip. The samples are libsndfile's to the bit (int16
    / 32768 is exact in float32; channels averaged the same way). None for anything else, and for any
    file that is not exactly what its header says (short data, extensible headers, 0 frames, over the
    length cap): libsndfile then decodes it, and names the problem if there is one."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    try:
        with stdlib_wave.open(io.BytesIO(data)) as handle:
            channels, rate, frames = handle.getnchannels(), handle.getframerate(), handle.getnframes()
            if (handle.getsampwidth() != 2 or handle.getcomptype() != "NONE" or frames <= 0 or rate <= 0
                    or frames * channels > WHOLE_DECODE_SAMPLES or frames / rate > max_seconds):
                return None
            raw = handle.readframes(frames)
    except (stdlib_wave.Error, EOFError, ValueError, OverflowError, RuntimeError):  # Runtime: bad chunk size
        return None
    if len(raw) != frames * channels * 2:
        return None
    samples = np.frombuffer(raw, "<i2").astype(np.float32)
    samples *= np.float32(1 / 32768)  # in place: one float32 copy of the clip, not two
    return _mono(samples.reshape(frames, channels)), rate


def read_plain_wav(path: str | os.PathLike, max_seconds: float = MAX_AUDIO_SECONDS,
                   max_bytes: int = 1 << 20) -> tuple[np.ndarray, int] | None:
    """(float32 mono samples, rate) of a regular .wav file of at most `max_bytes` that is a whole, plain
    16-bit PCM WAV, read at once by the standard library (_plain_pcm16: libsndfile's samples to the
    bit, at a tenth of its cost for a 1 s clip); None for anything else: decode that with libsndfile
    (open_audio / load_audio), which also names what is wrong with a broken file."""
    path = Path(path)
    if path.suffix.lower() != ".wav":
        return None
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or not 0 < info.st_size <= max_bytes:
                return None
            data = handle.read(max_bytes + 1)
    except OSError:
        return None
    return _plain_pcm16(data, max_seconds) if len(data) <= max_bytes else None


def decode_clip(path: str | os.PathLike, settings: RenderSettings, data: bytes | None = None,
                max_seconds: float = MAX_AUDIO_SECONDS) -> tuple[np.ndarray, int]:
    """(wave, source_samples) at settings.sample_rate, with bounded memory; fit_length(wave) is what
    preprocess renders.

    Clips up to WHOLE_DECODE_SAMPLES are decoded whole (the path every image so far was made with) and
    returned unfitted; longer ones are decoded in blocks and only their loudest window is kept
    (`loudest_window`: the same window, bit for bit, when no resampling is needed). source_samples:
    the whole source's length at the render rate (preprocess.flags needs it).
    """
    path = Path(path)
    whole = _plain_pcm16(data, max_seconds) if data is not None else None
    if whole is None:
        with open_audio(path, data, max_seconds) as handle:
            if handle.frames * handle.channels > WHOLE_DECODE_SAMPLES:
                seen = [0]

                def counted(blocks):
                    for block in blocks:
                        seen[0] += len(block)
                        yield block
                window = loudest_window(counted(audio_blocks(handle, path, settings)), settings.num_samples)
                return window, seen[0]
            whole = _read(handle, -1, path), handle.samplerate
        if whole[0].shape[0] == 0:
            raise AudioError(f"{path}: no audio frames")
    wave = prepare_waveform(*whole, settings, fit=False)
    return wave, len(wave)


def load_clip(path: str | os.PathLike, settings: RenderSettings, data: bytes | None = None,
              max_seconds: float = MAX_AUDIO_SECONDS) -> np.ndarray:
    """A clip fitted to the render window (what preprocess renders), with bounded memory (decode_clip)."""
    return fit_length(decode_clip(path, settings, data, max_seconds)[0], settings.num_samples)


def loudest_window(blocks, num_samples: int) -> np.ndarray:
    """fit_length of the concatenated `blocks`, holding only one window and one block at a time.

    The energy is the same sequential float64 cumulative sum as fit_length's (continued across
    blocks), so the chosen window, first maximum included, is the same.
    """
    kept = np.zeros(0, np.float32)  # the last num_samples samples seen
    kept_energy = np.zeros(1)       # cumulative energy at the start of each kept sample, and after
    best, best_energy, seen = None, -1.0, 0
    for block in blocks:
        energy = np.cumsum(np.concatenate([kept_energy[-1:], block.astype(np.float64) ** 2]))
        samples = np.concatenate([kept, block])
        energy = np.concatenate([kept_energy[:-1], energy])  # energy[i] = before samples[i]
        seen += len(block)
        if len(samples) >= num_samples:
            windows = energy[num_samples:] - energy[:-num_samples]
            first_new = max(0, len(kept) + 1 - num_samples)  # windows not seen with the last block
            windows = windows[first_new:]
            if len(windows):
                i = int(np.argmax(windows))
                if windows[i] > best_energy:  # strictly: the first maximum wins, as in fit_length
                    start = first_new + i
                    best, best_energy = samples[start:start + num_samples].copy(), float(windows[i])
        kept, kept_energy = samples[-num_samples:], energy[-(num_samples + 1):]
    if best is None:  # shorter than the window after all (resampled): pad like fit_length
        return fit_length(kept, num_samples)
    return best


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """float32 mono `wave` at `rate` -> `target`, with memory and time bounded for every pair of rates.

    torchaudio's polyphase kernel has (target/g) x (rate/g + 2 width) taps (g = gcd of the rates):
    tiny for the usual rates (44.1 kHz -> 16 kHz: 76 k), gigabytes for awkward ones (8001 Hz: 128 M;
    44101 Hz: 706 M). It stays the resampler whenever its kernel is small, so every image made so far
    keeps its pixels; beyond MAX_SINC_KERNEL, soxr (VHQ) does the job in constant memory.
    """
    g = math.gcd(rate, target)
    orig, new = rate // g, target // g
    width = math.ceil(6 * orig / (min(orig, new) * 0.99))  # torchaudio's lowpass_filter_width, rolloff
    if new * (2 * width + orig) <= MAX_SINC_KERNEL:
        return AF.resample(torch.from_numpy(wave), rate, target).numpy()
    return soxr.resample(wave, rate, target, quality=SOXR_QUALITY).astype(np.float32, copy=False)


def prepare_waveform(samples: np.ndarray, sample_rate: int, settings: RenderSettings,
                     fit: bool = True) -> np.ndarray:
    """Mono float samples at any rate -> float32 at settings.sample_rate, optionally fitted."""
    wave = np.ascontiguousarray(samples, dtype=np.float32)
    if sample_rate != settings.sample_rate:
        wave = resample(wave, sample_rate, settings.sample_rate)
    return fit_length(wave, settings.num_samples) if fit else wave


def fit_length(wave: np.ndarray, num_samples: int) -> np.ndarray:
    """Pad short clips with silence on both sides (centred); cut long ones to their loudest window.

    Both are deterministic. Centring keeps a short word in the middle of the image; the loudest
    window keeps the word of a slightly-too-long clip rather than its leading silence.
    """
    n = len(wave)
    if n == num_samples:
        return wave
    if n < num_samples:
        left = (num_samples - n) // 2
        return np.pad(wave, (left, num_samples - n - left)).astype(np.float32, copy=False)
    energy = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
    window_energy = energy[num_samples:] - energy[:-num_samples]
    start = int(np.argmax(window_energy))  # first maximum: ties resolve the same way every time
    return wave[start:start + num_samples]
