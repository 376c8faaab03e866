"""What is suspicious about one clip, computed while it is rendered (the audio is decoded then anyway).

    record = clip_record(wave, image, settings)   # -> manifest columns (strings), see MANIFEST_FIELDS

`wave` is the decoded clip at the render rate *before* it is fitted to the window (so its length is
the source's duration), `image` the PIL image written for it. Pure functions of their inputs: the
same clip gives the same record on every run. `python -m preprocess` stores the record in
manifest.csv, so `python -m preprocess.audit` never decodes the clips again.

Per-clip flags (the audit adds duplicate_audio, duplicate_image and suspect_label, which need the
whole dataset or a model):
    silent    the loudest 20 ms frame is below SILENT_DB dBFS (nothing was said, or the mic was off)
    clipped   the waveform sits on its peak value in flat runs: the recorder ran out of range
    cut_off   the window starts or ends inside the word: an edge frame is within EDGE_DB of the
              loudest frame and well above the clip's noise floor
    short     the source is shorter than SHORT_FRACTION of the window (padded with silence)
"""
from __future__ import annotations

import base64
import functools

import numpy as np

from preprocess.render import RenderSettings, fit_length

CLIP_FLAGS = ("silent", "clipped", "cut_off", "short")
MANIFEST_FIELDS = ("source_s", "level_db", "flags", "image_blocks", "flags_version")
VERSION = "1"            # bump when a rule or threshold changes: preprocess then renders every clip again

FRAME_S = 0.020          # level frames: 20 ms, hop 10 ms
SILENT_DB = -50.0        # loudest frame below this (dBFS RMS): near-silent. Quiet real speech peaks ~-35
CLIP_TOLERANCE = 2.0 / 32768  # "on the peak": within 2 LSB of 16-bit audio
CLIP_MIN_RUN = 3         # samples in a row on the peak make a plateau (a sharp natural peak is 1-2)
CLIP_MIN_SAMPLES = 12    # samples on plateaus before a clip counts as clipped
CLIP_MIN_PEAK = 0.05     # plateaus below -26 dBFS are quantisation of a quiet clip, not clipping
EDGE_S = 0.030           # how much of each edge is looked at
EDGE_DB = 8.0            # an edge this close to the loudest frame is inside the word ...
EDGE_ABOVE_FLOOR_DB = 25.0  # ... if it is also this far above the quietest frames (not just noise)
SHORT_FRACTION = 0.5     # a source under half the window is "short"
SKETCH_BANDS, SKETCH_BLOCKS = 8, 16  # image sketch: 8 frequency bands x 16 time blocks, 1 byte each
SKETCH_MIN_SPREAD = 3    # block means (in levels) varying less than this: too uniform to compare
DB_FLOOR = -120.0        # level of digital silence (keeps the numbers finite)


def frame_levels(wave: np.ndarray, sample_rate: int, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level in dBFS of frames of `frame_s` every `frame_s / 2` (at least one frame)."""
    frame = max(1, int(round(frame_s * sample_rate)))
    hop = max(1, frame // 2)
    if len(wave) < frame:
        wave = np.pad(wave, (0, frame - len(wave)))
    squares = np.square(wave, dtype=np.float64)
    # the frames as a strided view (what sliding_window_view(squares, frame)[::hop] gives, without its
    # per-call checks): the same memory layout, so the same summation order and the same means
    frames = np.lib.stride_tricks.as_strided(squares, ((len(squares) - frame) // hop + 1, frame),
                                             (squares.strides[0] * hop, squares.strides[0]), writeable=False)
    power = frames.mean(axis=1)
    return np.maximum(10.0 * np.log10(np.maximum(power, 1e-30)), DB_FLOOR)


def is_silent(levels: np.ndarray) -> bool:
    return float(levels.max()) < SILENT_DB


def is_clipped(wave: np.ndarray) -> bool:
    """Flat runs on the peak value: a clipped recorder holds its rail for several samples in a row.

    Works for clipping below full scale too (a gain stage after the clipper). Natural peaks of speech
    are sharp: one or two samples at the maximum, not runs of three.
    """
    magnitude = np.abs(wave)
    peak = float(magnitude.max(initial=0.0))
    if peak < CLIP_MIN_PEAK:
        return False
    on_peak = magnitude >= peak - CLIP_TOLERANCE
    if np.count_nonzero(on_peak) < CLIP_MIN_SAMPLES:  # too few on the peak for any runs to add up
        return False
    # lengths of runs of consecutive on-peak samples
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on_peak.view(np.int8), [0]])))
    runs = edges[1::2] - edges[::2]
    return int(runs[runs >= CLIP_MIN_RUN].sum()) >= CLIP_MIN_SAMPLES


def is_cut_off(window: np.ndarray, sample_rate: int, levels: np.ndarray | None = None) -> bool:
    """The fitted window (what the image shows) begins or ends inside the word.

    `levels`: the window's `frame_levels`, when the caller has them already."""
    if levels is None:
        levels = frame_levels(window, sample_rate)
    loudest, floor = float(levels.max()), None
    edge = max(1, int(round(EDGE_S / (FRAME_S / 2))))  # frames covering EDGE_S at each end
    for part in (levels[:edge], levels[-edge:]):
        level = float(part.max())
        if level >= loudest - EDGE_DB:
            if floor is None:  # (only needed for a loud edge: most clips never compute it)
                floor = float(np.percentile(levels, 10))
            if level >= floor + EDGE_ABOVE_FLOOR_DB:
                return True
    return False


def is_short(num_samples: int, settings: RenderSettings) -> bool:
    return num_samples < SHORT_FRACTION * settings.num_samples


def image_blocks(levels: np.ndarray) -> str:
    """A small sketch of a spectrogram image for near-duplicate search, as base64 text.

    `levels`: H x W pixel levels, e.g. ``np.asarray(png)`` (a viridis PNG's palette indices are its
    levels). The sketch is the mean level of 8 frequency bands x 16 time blocks, one byte each; the
    audit compares sketches by cosine similarity after removing their mean (see `sketch_vectors`),
    so a copy at another gain or in another encoding still matches.
    """
    levels = np.asarray(levels)
    if levels.ndim == 2 and levels.dtype == np.uint8 and _exact_block_sums(levels.shape):
        blocks = _block_means(levels)
    else:
        levels = levels.astype(np.float32, copy=False)
        if levels.ndim == 3:  # RGB: any fixed mix will do, the same for every image
            levels = levels.mean(axis=2)
        rows = np.array_split(np.arange(levels.shape[0]), SKETCH_BANDS)
        cols = np.array_split(np.arange(levels.shape[1]), SKETCH_BLOCKS)
        blocks = np.array([[levels[r[0]:r[-1] + 1, c[0]:c[-1] + 1].mean() for c in cols] for r in rows])
    return base64.b64encode(np.floor(blocks + 0.5).astype(np.uint8).tobytes()).decode("ascii")


def _split_starts(length: int, parts: int) -> np.ndarray:
    """First index of each of np.array_split's `parts` pieces of range(length)."""
    size, extra = divmod(length, parts)
    return np.array([i * size + min(i, extra) for i in range(parts)])


def _exact_block_sums(shape: tuple[int, int]) -> bool:
    """Whether every block's sum of 8-bit levels is exact in float32 (below 2^24), so that the float32
    .mean() per block of the general path and the integer sums of `_block_means` round alike."""
    rows, cols = -(-shape[0] // SKETCH_BANDS), -(-shape[1] // SKETCH_BLOCKS)
    return shape[0] >= SKETCH_BANDS and shape[1] >= SKETCH_BLOCKS and rows * cols * 255 < (1 << 24)


@functools.lru_cache(maxsize=8)
def _block_layout(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first row of each band, first column of each block, pixels per block) of an image shape."""
    rows, cols = _split_starts(shape[0], SKETCH_BANDS), _split_starts(shape[1], SKETCH_BLOCKS)
    return rows, cols, np.outer(np.diff(rows, append=shape[0]), np.diff(cols, append=shape[1]))


def _block_means(levels: np.ndarray) -> np.ndarray:
    """The block means of a uint8 image in two reductions (np.add.reduceat) instead of 128 slices:
    the same numbers as the general path (integer sums, exact; one division each), 20x faster."""
    rows, cols, counts = _block_layout(levels.shape)
    sums = np.add.reduceat(np.add.reduceat(levels, rows, axis=0, dtype=np.int64), cols, axis=1)
    return (sums / counts).astype(np.float32)


def sketch_vectors(sketches: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Sketches -> (unit vectors N x 128 float32, usable mask). Unusable: missing, malformed, or too
    uniform to tell apart from other images (silence, steady hum: every such image looks alike)."""
    size = SKETCH_BANDS * SKETCH_BLOCKS
    vectors = np.zeros((len(sketches), size), np.float32)
    usable = np.zeros(len(sketches), bool)
    for i, text in enumerate(sketches):
        try:
            raw = np.frombuffer(base64.b64decode(text or "", validate=True), np.uint8)
        except ValueError:
            continue
        if raw.size != size or int(raw.max()) - int(raw.min()) < SKETCH_MIN_SPREAD:
            continue
        centred = raw.astype(np.float32) - raw.mean()
        vectors[i] = centred / np.linalg.norm(centred)
        usable[i] = True
    return vectors, usable


def clip_flags(wave: np.ndarray, settings: RenderSettings, levels: np.ndarray | None = None,
               source_samples: int | None = None) -> list[str]:
    """The per-clip flags of a decoded clip at the render rate, before fitting (see the module doc).

    `levels`: its `frame_levels`, when the caller has them already. `source_samples`: the source's
    length at the render rate when `wave` is only its loudest window (a long recording decoded in
    blocks: render.decode_clip); default len(wave)."""
    wave = np.asarray(wave, dtype=np.float32)
    flags = []
    if levels is None:
        levels = frame_levels(wave, settings.sample_rate)
    if is_silent(levels):
        flags.append("silent")
    if is_clipped(wave):
        flags.append("clipped")
    # a silent clip has no word to cut off; its noise would only make the edge test guess
    if "silent" not in flags:
        window = fit_length(wave, settings.num_samples)
        # a clip that fills the window exactly is its own window: its levels are those computed above
        if is_cut_off(window, settings.sample_rate, levels if window is wave else None):
            flags.append("cut_off")
    if is_short(len(wave) if source_samples is None else source_samples, settings):
        flags.append("short")
    return flags


def clip_record(wave: np.ndarray, image, settings: RenderSettings,
                source_samples: int | None = None) -> dict[str, str]:
    """The manifest columns (MANIFEST_FIELDS) of a rendered clip: its numbers as strings.

    `source_samples`: as in clip_flags (default: len(wave))."""
    wave = np.asarray(wave, dtype=np.float32)
    source_samples = len(wave) if source_samples is None else source_samples
    levels = frame_levels(wave, settings.sample_rate)
    return {"source_s": f"{source_samples / settings.sample_rate:.3f}",
            "level_db": f"{float(levels.max()):.1f}",
            "flags": ";".join(clip_flags(wave, settings, levels, source_samples)),
            "image_blocks": image_blocks(np.asarray(image)),
            "flags_version": VERSION}


def is_current(record: dict) -> bool:
    """Whether a manifest row (or PNG metadata) holds a complete record made by these rules."""
    return record.get("flags_version") == VERSION and all(record.get(key) is not None for key in MANIFEST_FIELDS)
