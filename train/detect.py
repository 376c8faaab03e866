"""Keyword spotting in a long recording: sliding windows -> smoothed posteriors -> detections.

Offline version of TensorFlow's ``recognize_commands`` (posterior averaging, a threshold and a
suppression period), with one addition for models that have no "silence" class:

    starts   = window_starts(len(wave), window, hop)          # a model-sized window every hop
    probs    = model(render(wave[s:s + window]) for s)         # done by train.predict (one render path)
    levels   = frame_levels_db(wave, sr)                       # 25 ms frames every 10 ms, dBFS
    frames   = active_frames(levels)                           # energy gate: frames above the local floor
    active   = window_activity(frames, starts_s, window_s)     # windows holding a sound event
    smoothed = smooth_posteriors(gate_posteriors(probs, active), span)  # centred moving average
    events   = find_detections(starts_s, smoothed, classes, window_s, threshold, refractory_s,
                               active, frames, levels)

Why an energy gate: a yes/no model has no "silence" or "noise" output, so softmax over two classes
happily says "yes 0.9" for a running tap. A window is only allowed to fire when it holds enough
frames clearly louder (ACTIVITY_MARGIN_DB) than the noise floor both before and after them (a low
percentile of frame levels over a second on each side). Steady noise (fans, hiss, taps, digital
silence), and the moment such a noise switches on or off, never fires, whatever the model says; a
word, louder than what surrounds it, does. Gated windows enter the posterior average as uniform
("no evidence"), so a noise the model calls "yes" cannot leak into the word next to it. Loud
non-speech bursts pass the gate and are left to the threshold: a model trained with a
background/unknown class is the real fix for those.

All functions above `scan` are pure (numpy in, numpy/dataclasses out) so they are tested without a
model; `scan` / `scan_file` run a train.predict.Predictor over the windows and return a `Scan`.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Protocol

import numpy as np
import torch

from preprocess.openworld import UNKNOWN
from preprocess.render import MAX_AUDIO_SECONDS, RenderSettings, audio_blocks, open_audio
from train.gate import (ACTIVITY_MARGIN_DB, FRAME_HOP_S, FRAME_S, active_frames,  # noqa: F401 (detect.*)
                        frame_levels_db, window_activity)


class Predictor(Protocol):
    """What the scanner needs of a model. train.predict.Predictor is the one the project uses; the
    scanner names only this, so predict may import the scanner and never the other way round."""
    settings: RenderSettings
    classes: list[str]
    targets: list[str]

    def audio_tensor(self, wave: np.ndarray) -> torch.Tensor: ...
    def window_tensors(self, windows: list[np.ndarray], hop: int) -> torch.Tensor: ...
    def logits(self, batch: torch.Tensor) -> torch.Tensor: ...
    def default_hop_s(self) -> float: ...
    def default_gate_db(self) -> float: ...

# ---------------------------------------------------------------- defaults (seconds, dB)
DEFAULT_HOP_S = 0.25          # one window every 250 ms: each word is seen by about 4 windows
HOP_WITH_SILENCE_S = 0.125    # models with a 'silence' class (no gate): 8 windows a word. Measured over five
                              # folds (docs/benchmarks.md): false accepts per hour 3.2 -> 0.5 for 0.7 points
                              # of recall; a yes/no model behind the gate only loses 1-2 points of recall with it
DEFAULT_SMOOTH_S = 0.75       # posterior averaging span (recognize_commands averages ~0.5-1 s)
DEFAULT_THRESHOLD = 0.7       # smoothed confidence a label must reach (recognize_commands default 0.7)
DEFAULT_REFRACTORY_S = 0.75   # words (middles) closer than this are one word: the stronger answer is kept
GATE_WITH_SILENCE_DB = 0.0    # models with a 'silence' class: no gate. Measured (docs/benchmarks.md,
                              # "Open-world keyword spotting"): the same 0 false accepts per hour with
                              # and without it; its recall cost (0.688 with, 0.751 without) was the
                              # floor defect fixed in active_frames: now 0.751 both, so it buys nothing
MAX_GAP_S = 0.15              # quieter gaps inside a word (a stop consonant) up to this long
SCAN_BATCH_SIZE = 8   # windows per forward pass when predict scans a file: a batch of 64 costs ~110 MB of
                      # activations (specresnet, 201x81), more than the rest of the scan
SCAN_WAVE_BATCH_SIZE = 64     # windows per forward pass of scan() on a waveform already in memory
ENVELOPE_BLOCKS = 4000        # min/max pairs kept for the timeline plot of a long recording


@dataclasses.dataclass(frozen=True)
class Detection:
    label: str
    confidence: float   # peak smoothed posterior of the label in its event
    start: float        # seconds: first active frame of the word (window bounds if the gate is off)
    end: float          # seconds: end of the last active frame
    time: float         # seconds: the word's energy centre (middle of start-end without levels)

    def to_dict(self) -> dict:
        return {"label": self.label, "confidence": round(self.confidence, 6),
                "start": round(self.start, 3), "end": round(self.end, 3), "time": round(self.time, 3)}


# ---------------------------------------------------------------- windows

def window_starts(num_samples: int, window: int, hop: int) -> np.ndarray:
    """Sample offsets of windows every `hop` samples; the last one may run past the end (pad it)."""
    if window <= 0 or hop <= 0:
        raise ValueError("window and hop must be positive")
    count = 1 if num_samples <= window else 1 + int(np.ceil((num_samples - window) / hop))
    return np.arange(count, dtype=np.int64) * hop


def pad_for_windows(wave: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """The waveform padded with silence so that every window is exactly `window` samples.

    Windows are then ``padded[s:s + window]`` views: no copy of the (possibly hour-long) recording
    per window.
    """
    needed = int(starts[-1]) + window
    return np.pad(wave, (0, max(0, needed - len(wave)))).astype(np.float32, copy=False)


class WindowFeeder:
    """A recording arriving in blocks -> its analysis windows, frame levels and plot envelope, holding
    only the current block and one window (bounded memory for hours of audio).

        feeder = WindowFeeder(rate, window, hop)
        for block in chain(blocks, [None]):          # None marks the end
            for segment in feeder.feed(block): ...   # window_starts(total)[k] : +window, padded at the end
        feeder.levels(), feeder.envelope()

    Gives what window_starts/pad_for_windows and frame_levels_db give for the whole waveform.
    """

    def __init__(self, sample_rate: int, window: int, hop: int, envelope_step: int | None = 1):
        self.rate, self.window, self.hop = sample_rate, window, hop
        self.frame, self.frame_hop = int(round(FRAME_S * sample_rate)), int(round(FRAME_HOP_S * sample_rate))
        self.envelope_step = None if envelope_step is None else max(1, envelope_step)  # None: no envelope
        self.buffer = np.zeros(0, np.float32)
        self.offset = 0                          # sample index of buffer[0]
        self.total = 0
        self.next_window = self.next_frame = self.next_envelope = 0
        self._levels: list[np.ndarray] = []
        self._envelope: list[np.ndarray] = []

    def feed(self, block: np.ndarray | None):
        """Yield every window complete after this block (all remaining ones, padded, when block is None)."""
        final = block is None
        if not final:
            self.buffer = np.concatenate([self.buffer, np.asarray(block, np.float32)])
            self.total += len(block)
        end = self.total
        self._frames(end, final)
        self._envelope_blocks(end)
        if final:
            count = len(window_starts(self.total, self.window, self.hop))
            needed = (count - 1) * self.hop + self.window - self.offset
            self.buffer = np.pad(self.buffer, (0, max(0, needed - len(self.buffer))))
            last = (count - 1) * self.hop
        else:
            last = end - self.window
        while self.next_window <= last:
            start = self.next_window - self.offset
            yield self.buffer[start:start + self.window]
            self.next_window += self.hop
        keep = min(self.next_window, self.next_frame, self.next_envelope) - self.offset
        if keep > 0:
            self.buffer, self.offset = self.buffer[keep:], self.offset + keep

    def _frames(self, end: int, final: bool) -> None:
        segment = self.buffer[self.next_frame - self.offset:end - self.offset]
        if len(segment) >= self.frame or (final and self.next_frame == 0):
            levels = frame_levels_db(segment, self.rate)
            self._levels.append(levels)
            self.next_frame += len(levels) * self.frame_hop

    def _envelope_blocks(self, end: int) -> None:
        step = self.envelope_step
        if step is None:  # a live stream (train.stream) keeps no plot envelope
            self.next_envelope = end
            return
        count = (end - self.next_envelope) // step
        if count > 0:
            start = self.next_envelope - self.offset
            blocks = self.buffer[start:start + count * step].reshape(count, step)
            self._envelope.append(np.stack([blocks.min(axis=1), blocks.max(axis=1)], axis=1))
            self.next_envelope += count * step

    def levels(self) -> np.ndarray:
        return np.concatenate(self._levels) if self._levels else np.zeros(0)

    def take_levels(self) -> np.ndarray:
        """The frame levels computed since the last call, forgotten here (a live stream keeps its own
        bounded history of them: train.stream)."""
        levels = self.levels()
        self._levels.clear()
        return levels

    def envelope(self) -> np.ndarray:
        return np.concatenate(self._envelope) if self._envelope else np.zeros((0, 2), np.float32)


# ---------------------------------------------------------------- posteriors

def smooth_posteriors(probs: np.ndarray, span: int) -> np.ndarray:
    """Centred moving average over `span` windows (made odd); edges average what exists."""
    probs = np.asarray(probs, dtype=np.float64)
    half = max(0, int(span) // 2)
    csum = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0)])
    idx = np.arange(len(probs))
    lo, hi = np.clip(idx - half, 0, len(probs)), np.clip(idx + half + 1, 0, len(probs))
    return (csum[hi] - csum[lo]) / (hi - lo)[:, None]


def gate_posteriors(probs: np.ndarray, window_active: np.ndarray) -> np.ndarray:
    """Posteriors of windows with no sound event -> uniform ("no evidence"), before smoothing.

    Without this, a window of pure noise that the model calls "yes 0.99" would leak into the
    average of the word next to it and could flip its label.
    """
    probs = np.array(probs, dtype=np.float64)
    probs[~np.asarray(window_active, bool)] = 1.0 / probs.shape[1]
    return probs


def span_windows(smooth_s: float, hop_s: float) -> int:
    """Seconds of smoothing -> an odd number of windows (at least 1)."""
    count = max(1, int(round(smooth_s / hop_s)))
    return count if count % 2 else count + 1


# ---------------------------------------------------------------- detections

def find_detections(starts_s: np.ndarray, smoothed: np.ndarray, classes: list[str], window_s: float,
                    threshold: float = DEFAULT_THRESHOLD, refractory_s: float = DEFAULT_REFRACTORY_S,
                    window_active: np.ndarray | None = None, frames_active: np.ndarray | None = None,
                    levels_db: np.ndarray | None = None, targets=None,
                    runs: list | None = None) -> list[Detection]:
    """One Detection per word (of `targets` only, when given: 'unknown' and 'silence' are no events).

    An *event* is a run of consecutive windows whose top smoothed label is the same, at or above
    `threshold`, and (if given) active. Its centre is the middle of the run: windows see a word from
    both sides symmetrically, so that is where the word is; with `frames_active` the word's start
    and end are then the sound event's active stretch there, and with `levels_db` its time is the
    stretch's energy centre (else the middle of start-end). Events closer than `refractory_s`
    (word middle to word middle) are one word, the model flipping labels on its edges: the one
    with the higher confidence x share of the word inside its centre window is kept, so each word
    is reported once, by the windows that saw it best (not by edge windows that were mostly noise).
    `runs`, when given a list, gets the (first, last) window indices of the run(s) each detection
    stands for, in the same order (train.stream tells a word it printed from a new one by them).
    """
    smoothed = np.asarray(smoothed, dtype=np.float64)
    n = len(starts_s)
    ok = np.ones(n, bool) if window_active is None else np.asarray(window_active, bool)
    top = smoothed.argmax(axis=1)
    fires = ok & (smoothed[np.arange(n), top] >= threshold)
    if targets is not None:
        fires &= np.isin(top, [i for i, name in enumerate(classes) if name in set(targets)])
    stretches = active_stretches(frames_active) if frames_active is not None else np.zeros((0, 2))
    found: list[Detection] = []
    scores: list[float] = []
    spans: list[tuple[int, int]] = []
    i = 0
    while i < n:
        if not fires[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and fires[j + 1] and top[j + 1] == top[i]:
            j += 1
        label = int(top[i])
        centre = float(starts_s[i] + starts_s[j]) / 2 + window_s / 2
        confidence = float(smoothed[i:j + 1, label].max())
        event = _word_bounds(classes[label], confidence, centre, window_s, stretches, levels_db)
        seen = min(event.end, centre + window_s / 2) - max(event.start, centre - window_s / 2)
        score = confidence * max(0.0, seen) / max(event.end - event.start, 1e-9)
        if found and event.time - found[-1].time < refractory_s:
            if score > scores[-1]:
                found[-1], scores[-1] = event, score
            spans[-1] = (spans[-1][0], j)
        else:
            found.append(event)
            scores.append(score)
            spans.append((i, j))
        i = j + 1
    if runs is not None:
        runs.extend(spans)
    return found


def _word_bounds(label: str, confidence: float, centre: float, window_s: float,
                 stretches: np.ndarray, levels_db: np.ndarray | None = None) -> Detection:
    """Start/end of the word: of the active stretches overlapping the window centred on the event,
    the one that overlaps it most, whole (the event centre can sit off the word when a noise on one
    side pulls the posteriors), at most one window either side of the centre. Without a gate (no
    stretches) or nothing active there: that window. Time: the energy centre of start-end when
    frame levels are given (a faint tail does not move it), else the middle."""
    lo, hi = max(0.0, centre - window_s / 2), centre + window_s / 2
    overlap = np.minimum(stretches[:, 1], hi) - np.maximum(stretches[:, 0], lo)
    if len(overlap) and overlap.max() > 0:
        start, end = stretches[int(np.argmax(overlap))]
        lo, hi = max(float(start), centre - window_s), min(float(end), centre + window_s)
    time = (lo + hi) / 2
    if levels_db is not None:
        first = int(np.ceil(lo / FRAME_HOP_S - 1e-9))
        last = min(len(levels_db), int(np.floor((hi - FRAME_S) / FRAME_HOP_S + 1e-9)) + 1)
        if last > first:
            power = 10.0 ** (np.asarray(levels_db[first:last], dtype=np.float64) / 10.0)
            times = np.arange(first, last) * FRAME_HOP_S + FRAME_S / 2
            time = float((power * times).sum() / power.sum())
    return Detection(label, confidence, lo, hi, time)


def active_stretches(frames_active: np.ndarray, max_gap_s: float = MAX_GAP_S) -> np.ndarray:
    """[[start_s, end_s], ...] of runs of active frames, runs closer than `max_gap_s` merged."""
    edges = np.diff(np.concatenate([[0], np.asarray(frames_active, np.int8), [0]]))
    first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    merged: list[list[float]] = []
    for a, b in zip(first * FRAME_HOP_S, last * FRAME_HOP_S + FRAME_S):
        if merged and a - merged[-1][1] <= max_gap_s:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return np.array(merged, dtype=np.float64).reshape(-1, 2)


# ---------------------------------------------------------------- a recording through a model

@dataclasses.dataclass
class Scan:
    """A long recording: per-window posteriors and the detections made from them."""
    path: str
    envelope: np.ndarray  # [blocks, 2] min and max of the waveform per block of `envelope_step` samples
    envelope_step: int
    num_samples: int
    sample_rate: int
    window_s: float
    starts_s: np.ndarray
    probs: np.ndarray
    smoothed: np.ndarray
    window_active: np.ndarray | None
    detections: list[Detection]
    threshold: float
    frames_active: np.ndarray | None = None  # the gate's active frames (None: no gate)
    levels_db: np.ndarray | None = None      # frame levels, for the words' times
    refractory_s: float = DEFAULT_REFRACTORY_S
    targets: tuple | None = None             # the labels reported (None: every class)

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    def to_dict(self) -> dict:
        best = max(self.detections, key=lambda d: d.confidence, default=None)
        return {"path": self.path, "label": best.label if best else UNKNOWN,
                "confidence": round(best.confidence, 6) if best else 0.0, "target": best is not None,
                "duration_s": round(self.duration_s, 3), "threshold": self.threshold,
                "detections": [d.to_dict() for d in self.detections]}

    def to_lines(self) -> list[str]:
        if not self.detections:
            return [f"{self.path}  {UNKNOWN}  0.000  (no detection in {self.duration_s:.2f} s)"]
        return [f"{self.path}  {d.label}  {d.confidence:.3f}  {d.start:.2f}-{d.end:.2f} s"
                for d in self.detections]


def scan(predictor: Predictor, path: str, wave, hop_s: float | None = None,
         smooth_s: float = DEFAULT_SMOOTH_S, threshold: float = DEFAULT_THRESHOLD,
         refractory_s: float = DEFAULT_REFRACTORY_S, gate_db: float | None = None,
         batch_size: int = SCAN_WAVE_BATCH_SIZE, estimate: int | None = None) -> Scan:
    """Windows of the model's duration every hop, each rendered like a clip (predictor.window_tensors:
    the pixels of predictor.audio_tensor, sharing the STFT frames of overlapping windows),
    then the pipeline above. Only target words are reported; hop_s / gate_db None: the predictor's
    default_hop_s() / default_gate_db().

    `wave`: the waveform at the model's rate, or an iterable of consecutive blocks of it (then
    `estimate`, its approximate length, sizes the plot envelope). Blocks are consumed as they come
    (WindowFeeder): only the last block and one window are held.
    """
    gate_db = predictor.default_gate_db() if gate_db is None else gate_db
    hop_s = predictor.default_hop_s() if hop_s is None else hop_s
    rate, window = predictor.settings.sample_rate, predictor.settings.num_samples
    hop = max(1, int(round(hop_s * rate)))
    blocks = [wave] if isinstance(wave, np.ndarray) else wave
    if estimate is None:
        estimate = len(wave) if isinstance(wave, np.ndarray) else 0
    feeder = WindowFeeder(rate, window, hop, envelope_step=max(1, estimate // ENVELOPE_BLOCKS))
    probs, batch = [], []

    def flush():
        if batch:  # consecutive windows, `hop` apart: rendered together, sharing their STFT frames
            probs.append(torch.softmax(predictor.logits(predictor.window_tensors(batch, hop)).double(),
                                       dim=1).numpy())
            batch.clear()

    for block in itertools.chain(blocks, [None]):  # None: the end
        for segment in feeder.feed(block):
            batch.append(segment)  # a view of the feeder's buffer, which is replaced, never written to
            if len(batch) >= batch_size:
                flush()
    flush()
    probs = np.concatenate(probs)
    starts = window_starts(feeder.total, window, hop)
    starts_s, window_s = starts / rate, window / rate
    levels = feeder.levels()
    frames = window_active = None
    if gate_db > 0:
        frames = active_frames(levels, gate_db)
        window_active = window_activity(frames, starts_s, window_s)
    gated = probs if window_active is None else gate_posteriors(probs, window_active)
    smoothed = smooth_posteriors(gated, span_windows(smooth_s, hop / rate))
    found = find_detections(starts_s, smoothed, predictor.classes, window_s, threshold, refractory_s,
                            window_active, frames, levels, targets=predictor.targets)
    return Scan(path, feeder.envelope(), feeder.envelope_step, feeder.total, rate, window_s, starts_s,
                probs, smoothed, window_active, found, threshold, frames, levels, refractory_s,
                tuple(predictor.targets))


def redetect(scan: Scan, classes: list[str], threshold: float) -> list[Detection]:
    """The detections `scan` would have made at another threshold (the posteriors stay: a threshold
    sweep costs no second pass of the model)."""
    return find_detections(scan.starts_s, scan.smoothed, classes, scan.window_s, threshold, scan.refractory_s,
                           scan.window_active, scan.frames_active, scan.levels_db, targets=scan.targets)


def scan_file(predictor: Predictor, path: str | os.PathLike, max_seconds: float = MAX_AUDIO_SECONDS,
              **options) -> Scan:
    """scan() of a recording decoded in blocks: memory is bounded whatever its length."""
    settings = predictor.settings
    with open_audio(path, None, max_seconds) as handle:
        estimate = int(handle.frames * settings.sample_rate / handle.samplerate)
        return scan(predictor, str(path), audio_blocks(handle, path, settings), estimate=estimate, **options)
