"""The "silence" class's audio: 1 s crops of background recordings at random gains, digital silence,
and generated non-speech (preprocess/nonspeech.py).

Each background recording is cut into NOISE_CHUNK_S chunks and every chunk belongs to one split (a
hash of file and chunk); a crop never leaves its chunk, so no two splits share a sample. A crop's
file name fixes its content, so a re-run keeps the crops it already wrote.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from preprocess import nonspeech, sources
from preprocess.atomic import atomic_writer
from preprocess.layout import SILENCE
from preprocess.render import AUDIO_EXTENSIONS

NOISE_FOLDER = "_background_noise_"   # a root's background recordings (Speech Commands layout)
NOISE_CHUNK_S = 3.0              # background recordings are split between splits in chunks this long
CROP_S = 1.0                     # silence crops: this long (the default clip duration)
SILENCE_GAIN_DB = (-45.0, 0.0)   # random gain of a crop, uniform in dB (quiet room to full level)
DIGITAL_SILENCE_PCT = 10.0       # share of the silence class that is digital silence (all zeros)
NONSPEECH_PCT = 25.0             # share of the silence class that is generated non-speech (measured:
                                 # without it tones, chords and chirps were called yes/no; benchmarks.md)
NONSPEECH_PREFIX = "nonspeech-"  # file names of generated non-speech (train's background mix leaves them out)


@dataclasses.dataclass(frozen=True)
class NoiseRegion:
    """Frames [start, end) of one background recording (at its own rate), owned by one split."""
    path: Path
    name: str
    rate: int
    start: int
    end: int
    split: str


def noise_files(folders: list[Path]) -> tuple[list[Path], list[str]]:
    """Decodable audio files in the folders: (paths, problems)."""
    found, problems = [], []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in AUDIO_EXTENSIONS or path.name.startswith("."):
                continue
            try:
                info = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError, OSError) as err:
                problems.append(f"{path}: not a readable recording ({err}); not used as noise")
                continue
            if info.frames < int(CROP_S * info.samplerate):
                problems.append(f"{path}: shorter than {CROP_S:g} s; not used as noise")
                continue
            found.append(path)
    return found, problems


def noise_regions(paths: list[Path], assign: Callable[[str], str],
                  chunk_s: float = NOISE_CHUNK_S) -> list[NoiseRegion]:
    """Each recording cut into chunks, each chunk given to assign('<file>#<chunk>'); adjacent chunks
    of one split are merged. Chunks never overlap, so neither do crops of different splits."""
    regions = []
    for path in paths:
        info = sf.info(str(path))
        chunk = int(round(chunk_s * info.samplerate))
        for index, start in enumerate(range(0, info.frames, chunk)):
            split = assign(f"{path.name}#{index}")
            end = min(start + chunk, info.frames)
            if regions and regions[-1].path == path and regions[-1].split == split \
                    and regions[-1].end == start:
                regions[-1] = dataclasses.replace(regions[-1], end=end)
            else:
                regions.append(NoiseRegion(path, path.name, info.samplerate, start, end, split))
    return regions


@dataclasses.dataclass(frozen=True)
class Crop:
    """One silence image's audio: CROP_S of a region at a gain, or (region None) digital silence, or
    generated non-speech (nonspeech: its kind; the clip is nonspeech.clip(seed, split, index))."""
    split: str
    index: int
    region: NoiseRegion | None
    offset: int          # frames into the recording
    gain_db: float
    nonspeech: str | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        if self.nonspeech is not None:  # the name fixes the content: generator version, seed, split, index
            return (f"{NONSPEECH_PREFIX}v{nonspeech.VERSION}-{self.nonspeech}_s{self.seed}_{self.split}_"
                    f"{self.index:05d}.wav")
        if self.region is None:
            return f"digital-silence_{self.split}_{self.index:05d}.wav"
        stem = re.sub(r"[^A-Za-z0-9]+", "-", Path(self.region.name).stem)
        return f"{stem}_{self.offset}_{self.gain_db:+.1f}dB.wav"

    def samples(self) -> tuple[np.ndarray, int]:
        """float32 mono audio of the crop and its sample rate (read from disk: only the crop)."""
        if self.nonspeech is not None:
            return nonspeech.clip(self.seed, self.split, self.index)[0], nonspeech.SAMPLE_RATE
        if self.region is None:
            return np.zeros(int(round(CROP_S * 16000)), np.float32), 16000
        frames = int(round(CROP_S * self.region.rate))
        data, rate = sf.read(str(self.region.path), start=self.offset, frames=frames, dtype="float32",
                             always_2d=True)
        wave = data.mean(axis=1) * np.float32(10 ** (self.gain_db / 20))
        return np.clip(wave, -1.0, 1.0).astype(np.float32), rate


def plan_crops(regions: list[NoiseRegion], counts: dict[str, int], seed: int,
               digital_pct: float = DIGITAL_SILENCE_PCT, nonspeech_pct: float = NONSPEECH_PCT
               ) -> tuple[list[Crop], list[str]]:
    """counts[split] crops per split: digital_pct % digital silence, nonspeech_pct % generated
    non-speech, the rest from that split's regions (a region picked in proportion to its usable
    length, then a uniform offset and gain). Index i of a split is always the same crop."""
    crops, notes = [], []
    for split_index, split in enumerate(sources.SPLITS):
        wanted = counts[split]
        digital = int(round(wanted * digital_pct / 100.0))
        generated = min(int(round(wanted * nonspeech_pct / 100.0)), wanted - digital)
        usable = [r for r in regions if r.split == split and r.end - r.start >= int(CROP_S * r.rate)]
        if not usable and wanted - digital - generated > 0:
            notes.append(f"silence: no background recording has a {CROP_S:g} s region in {split}; "
                         f"its silence class is digital silence and generated non-speech only")
            digital = wanted - generated
        room = np.array([r.end - r.start - int(CROP_S * r.rate) + 1 for r in usable], dtype=np.float64)
        for index in range(wanted):
            if index < digital:
                crops.append(Crop(split, index, None, 0, 0.0))
                continue
            if index < digital + generated:
                crops.append(Crop(split, index, None, 0, 0.0, nonspeech.kind_of(seed, split, index), seed))
                continue
            rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5117, split_index, index]))
            region = usable[int(rng.choice(len(usable), p=room / room.sum()))]
            offset = region.start + int(rng.integers(0, region.end - region.start - int(CROP_S * region.rate) + 1))
            gain = round(float(rng.uniform(*SILENCE_GAIN_DB)), 1)
            crops.append(Crop(split, index, region, offset, gain))
    return crops, notes


def write_crops(crops: list[Crop], folder: Path) -> list[sources.Clip]:
    """Write each crop as a 24-bit WAV in folder (kept if already there: its name fixes its content),
    remove crop files of earlier runs that are no longer planned; -> Clips labelled 'silence'."""
    folder.mkdir(parents=True, exist_ok=True)
    clips, names = [], set()
    for crop in crops:
        path = folder / crop.name
        names.add(crop.name)
        if not path.exists():
            wave, rate = crop.samples()
            with atomic_writer(path) as handle:  # 24-bit, not float: libsndfile stamps float WAVs with
                # the time (PEAK chunk), so the same crop would hash differently run to run
                sf.write(handle, wave, rate, subtype="PCM_24", format="WAV")
        clips.append(sources.Clip(f"{SILENCE}/{crop.name}", SILENCE, crop.split, path))
    for stale in folder.glob("*.wav"):
        if stale.name not in names:
            stale.unlink()
    return clips
