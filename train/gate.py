"""The energy gate of the scanner: which 10 ms frames stand out from the noise around them, and which
windows hold enough of them to be allowed to fire (train/detect.py says why a yes/no model needs it).
Pure numpy: levels in, booleans out."""
from __future__ import annotations

import numpy as np

FRAME_S = 0.025               # energy frames for the gate and for word boundaries
FRAME_HOP_S = 0.010
FLOOR_SPAN_S = 1.0            # noise floors are measured over this much audio before and after a frame
FLOOR_PERCENTILE = 10.0       # ... as this low percentile of frame levels (robust to the word itself)
FLOOR_STEP = 5                # frames between floor estimates
FLOOR_ROWS = 2048             # floor estimates computed at a time (each copies FLOOR_SPAN_S of levels)
MIN_FLOOR_FRAMES = 10         # fewer frames than this on a side (recording edge): that side is silence
ACTIVITY_MARGIN_DB = 10.0     # a frame is "active" this far above the local floor ...
ABSOLUTE_FLOOR_DB = -65.0     # ... and above this level (dBFS; below it is silence whatever the floor)
MIN_ACTIVE_S = 0.15           # a window needs this much active audio to be allowed to fire
SILENCE_DB = -120.0           # level reported for digital silence (keeps log finite)


def frame_levels_db(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS level (dBFS) of FRAME_S frames every FRAME_HOP_S; frame k starts at k * FRAME_HOP_S."""
    frame, hop = int(round(FRAME_S * sample_rate)), int(round(FRAME_HOP_S * sample_rate))
    if len(wave) < frame:
        wave = np.pad(wave, (0, frame - len(wave)))
    energy = np.concatenate([[0.0], np.cumsum(np.asarray(wave, dtype=np.float64) ** 2)])
    starts = np.arange(0, len(wave) - frame + 1, hop)
    power = (energy[starts + frame] - energy[starts]) / frame
    return np.maximum(10.0 * np.log10(np.maximum(power, 1e-30)), SILENCE_DB)


def active_frames(levels_db: np.ndarray, margin_db: float = ACTIVITY_MARGIN_DB) -> np.ndarray:
    """Frames that stand out from the noise on *both* sides of them (bool per frame).

    The floor on each side is a low percentile of the FLOOR_SPAN_S of frame levels before (and
    after) the frame; a frame is active when it is `margin_db` above the higher of the two. A word
    is louder than what comes before and after it; a noise that switches on is louder than before
    but not than after, so it never counts, however long it lasts. Frames below ABSOLUTE_FLOOR_DB
    (silence) count in the floors *at* ABSOLUTE_FLOOR_DB: they must not be left out, or a word in
    near-silence has only its own frames in the floor and is measured against itself (a clean word
    longer than a tenth of a second was then never active). Only time before the start and after
    the end of the recording is left out. Floors are computed every FLOOR_STEP frames (cheap for
    long files).
    """
    levels_db = np.asarray(levels_db, dtype=np.float64)
    n, span = len(levels_db), max(1, int(round(FLOOR_SPAN_S / FRAME_HOP_S)))
    audible = np.maximum(levels_db, ABSOLUTE_FLOOR_DB)
    padded = np.concatenate([np.full(span, np.nan), audible, np.full(span, np.nan)])
    views = np.lib.stride_tricks.sliding_window_view(padded, span)  # views[k] = padded[k:k + span]
    at = np.arange(0, n, FLOOR_STEP)
    floor = np.empty(len(at))
    for lo in range(0, len(at), FLOOR_ROWS):  # rows of `span` copies each: in pieces, memory stays flat
        rows = at[lo:lo + FLOOR_ROWS]
        before, after = views[rows + 1], views[rows + span]  # frames (i - span, i] and [i, i + span)
        floor[lo:lo + FLOOR_ROWS] = np.maximum(_low_percentile(before), _low_percentile(after))
    floor = np.repeat(floor, FLOOR_STEP)[:n]
    return levels_db >= np.maximum(floor + margin_db, ABSOLUTE_FLOOR_DB)


def _low_percentile(rows: np.ndarray) -> np.ndarray:
    """FLOOR_PERCENTILE of each row's finite values; ABSOLUTE_FLOOR_DB where too few exist."""
    count = np.isfinite(rows).sum(axis=1)
    ordered = np.sort(rows, axis=1)  # NaN sorts last
    k = np.minimum((count * FLOOR_PERCENTILE / 100.0).astype(np.int64), np.maximum(count - 1, 0))
    value = ordered[np.arange(len(rows)), k]
    return np.where(count >= MIN_FLOOR_FRAMES, value, ABSOLUTE_FLOOR_DB)


def window_activity(active: np.ndarray, starts_s: np.ndarray, window_s: float) -> np.ndarray:
    """True for windows holding at least MIN_ACTIVE_S of active frames (the others may not fire)."""
    counts = np.concatenate([[0], np.cumsum(np.asarray(active, dtype=np.int64))])
    first = np.clip(np.round(starts_s / FRAME_HOP_S).astype(np.int64), 0, len(active))
    ends = np.round((starts_s + window_s - FRAME_S) / FRAME_HOP_S).astype(np.int64) + 1
    last = np.clip(ends, 0, len(active))
    return (counts[last] - counts[first]) * FRAME_HOP_S >= MIN_ACTIVE_S - 1e-9
