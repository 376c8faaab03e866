"""What a render is made of: RenderSettings (every value that changes a pixel; its digest travels in
every PNG, render.json and model.pt), the limits that keep any input bounded, and AudioError."""
from __future__ import annotations

import dataclasses
import hashlib
import json

from preprocess.cli import SpecVisionError

RENDER_VERSION = 1  # bump when the pixels a given setting produces change
FEATURES = ("spectrogram", "mel", "mfcc")
COLORMAPS = ("viridis", "gray")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
# Fixed pixel ranges per feature: dB re. full scale-ish power of a Hann-windowed STFT. A full-scale
# sine peaks near +40 dB with n_fft=400; 16-bit quantisation noise sits near -70 dB.
DEFAULT_RANGES = {"spectrogram": (-80.0, 40.0), "mel": (-80.0, 40.0), "mfcc": (-150.0, 150.0)}
POWER_FLOOR = 1e-10  # -100 dB: keeps digital silence finite (no -inf, no NaN)
# Bounded memory whatever the input (issue 11):
MAX_AUDIO_SECONDS = 4 * 3600.0      # a header declaring more audio is refused before decoding
WHOLE_DECODE_SAMPLES = 8_000_000    # decoded whole up to this many samples (32 MB float32), else in blocks
BLOCK_SECONDS = 10.0                # audio decoded per block of a long recording
MAX_SINC_KERNEL = 1 << 20           # torchaudio resampling kernel taps allowed (8 MB as float64), else soxr
SOXR_QUALITY = "VHQ"


class AudioError(SpecVisionError):
    """A clip that cannot be rendered; the message names the file and the reason."""

    exit_code = 1  # one input failed; the others are still processed


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    sample_rate: int = 16000
    duration: float = 1.0
    feature: str = "spectrogram"
    n_fft: int = 400
    hop_length: int = 200
    n_mels: int = 64
    n_mfcc: int = 40
    db_min: float | None = None  # None -> DEFAULT_RANGES[feature]
    db_max: float | None = None
    colormap: str = "viridis"
    version: int = RENDER_VERSION

    def __post_init__(self):
        if self.feature not in FEATURES:
            raise ValueError(f"feature must be one of {FEATURES}, got {self.feature!r}")
        if self.colormap not in COLORMAPS:
            raise ValueError(f"colormap must be one of {COLORMAPS}, got {self.colormap!r}")
        if self.sample_rate <= 0 or self.duration <= 0 or self.hop_length <= 0 or self.n_fft <= 0:
            raise ValueError("sample_rate, duration, n_fft and hop_length must be positive")
        lo, hi = self.pixel_range
        if not hi > lo:
            raise ValueError(f"db_max ({hi}) must be above db_min ({lo})")

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.duration))

    @property
    def pixel_range(self) -> tuple[float, float]:
        lo, hi = DEFAULT_RANGES[self.feature]
        return (lo if self.db_min is None else self.db_min, hi if self.db_max is None else self.db_max)

    @property
    def channels(self) -> int:
        return 3 if self.colormap == "viridis" else 1

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels: a pure function of the settings."""
        height = {"spectrogram": self.n_fft // 2 + 1, "mel": self.n_mels, "mfcc": self.n_mfcc}[self.feature]
        return height, 1 + self.num_samples // self.hop_length  # centred STFT frames

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RenderSettings":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown render settings: {sorted(unknown)}")
        return cls(**data)

    def digest(self) -> str:
        """Short stable hash of the settings; stored in every PNG and checked on re-runs."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
