"""Live keyword spotting: the scanner of `train.detect.scan` run on audio as it arrives.

    scanner = StreamScanner(Predictor("models/demo/model.pt"))
    for block in blocks:                         # float32 mono at the model's rate, any block sizes
        for detection in scanner.push(block):    # detect.Detection, times in seconds of stream time
            print(detection)
    scanner.finish()                             # the end of the stream: the last (padded) windows

Both `python -m train.listen` (microphone, stdin, file) and `python -m train.serve` (a browser's
microphone over a websocket) use this one class. It runs detect.py's own pieces, with the same
settings and defaults as `train.predict` on a file: the same windows every hop (WindowFeeder), each
rendered by the one render path (preprocess.render.render_image -> image_to_tensor, exactly what
Predictor.audio_tensor does) and scored by Predictor.logits, the same frame levels and energy gate
(active_frames, window_activity, gate_posteriors), the same centred posterior average
(smooth_posteriors) and the same events (find_detections).

What a stream cannot do is wait for the end of the recording. After every new window it recomputes
that pipeline on a bounded history (the last HISTORY_S seconds of windows and frame levels), over
the windows whose centred average is complete (the newest `span // 2` windows wait for their right
side), and prints an event the first time it appears there: as soon as the smoothed posterior of
a word crosses the threshold, not when the word's run of windows has ended (which is about a window
later). A later event closer than the refractory period to a printed one is the same word (the file
scan keeps the stronger of the two; a stream cannot take back what it printed, so it keeps the
first). The gate's noise floor after a frame is measured over the audio that has arrived so far.
Those are the only differences from the file scan; tests/test_listen.py and bench/listen_bench.py
measure how often they change a detection.

Everything a stream holds is bounded: the history is trimmed to KEEP_S seconds at an offset where
windows, frame levels and floor estimates fall on the same grid as in the whole recording
(`origin_step`), so the pipeline on the history computes what it computes on the whole stream.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import soxr
import torch

from preprocess.render import image_to_tensor, render_image
from preprocess.settings import SOXR_QUALITY
from train import detect, gate

if TYPE_CHECKING:
    from PIL import Image

    from train.predict import Predictor

HISTORY_S = 14.0   # seconds of windows and frame levels held before the oldest are dropped ...
KEEP_S = 9.0       # ... down to about this many (so trimming happens every few seconds, not every window)


@dataclass
class Update:
    """What one new window tells a live view (train.serve): its image, posteriors and level."""
    index: int                      # window number in the stream (its start is index * hop)
    start_s: float
    image: "Image.Image | None"     # the exact image the model saw (kept only with keep_images=True)
    posteriors: np.ndarray          # softmax of this window, in predictor.classes order
    level_db: float                 # RMS level of the window's newest hop (dBFS)


class StreamScanner:
    """detect.scan on a stream: push blocks of samples at the model's rate, get detections as they
    happen. Options and defaults are train.predict's (hop_s / gate_db None: the predictor's)."""

    def __init__(self, predictor: Predictor, hop_s: float | None = None,
                 smooth_s: float = detect.DEFAULT_SMOOTH_S, threshold: float = detect.DEFAULT_THRESHOLD,
                 refractory_s: float = detect.DEFAULT_REFRACTORY_S, gate_db: float | None = None,
                 keep_images: bool = False, on_window=None):
        settings = predictor.settings
        self.predictor, self.classes = predictor, predictor.classes
        self.rate, self.window = settings.sample_rate, settings.num_samples
        hop_s = predictor.default_hop_s() if hop_s is None else hop_s
        self.hop = max(1, int(round(hop_s * self.rate)))
        self.gate_db = predictor.default_gate_db() if gate_db is None else gate_db
        self.threshold, self.refractory_s = threshold, refractory_s
        self.window_s, self.hop_s = self.window / self.rate, self.hop / self.rate
        self.span = detect.span_windows(smooth_s, self.hop_s)
        self.lookahead = self.span // 2          # windows a centred average waits for
        self.keep_images = keep_images
        self.on_window = on_window               # called with an Update for every window (a live view)
        frame_hop = int(round(detect.FRAME_HOP_S * self.rate))
        # the history starts at multiples of this: windows, frames, floor estimates (every FLOOR_STEP
        # frames) and the rounding of window starts to frames (an even number of frames) line up
        self.origin_step = math.lcm(self.hop, 2 * gate.FLOOR_STEP * frame_hop)
        self.frame_hop = frame_hop
        # events this far after the history's start have all their context in it (floor before a
        # frame, windows of the average, a window either side of the event)
        self.context_s = gate.FLOOR_SPAN_S + 2 * self.window_s + self.lookahead * self.hop_s
        self.feeder = detect.WindowFeeder(self.rate, self.window, self.hop, envelope_step=None)
        self.origin = 0                          # sample where the history starts
        self.first_window = 0                    # stream index of self.probs[0]
        self.probs = np.zeros((0, len(self.classes)))
        self.levels = np.zeros(0)                # frame levels from self.origin
        # printed detections that a new event may repeat, with the window run (stream indices) behind each
        self.recent: list[tuple[detect.Detection, int, int]] = []
        self.counts: Counter = Counter()         # detections per label, the whole stream
        self.windows = 0                         # windows scored, the whole stream
        self.finished = False
        self.last: Update | None = None

    # ------------------------------------------------------------ input

    @property
    def seconds(self) -> float:
        """Stream time received so far."""
        return self.feeder.total / self.rate

    def push(self, block: np.ndarray) -> list[detect.Detection]:
        """Samples at the model's rate (float32 mono) -> the detections they complete.

        The result does not depend on how the stream is cut into blocks: a block is fed up to each
        window's end in turn, and the pipeline is recomputed after every window."""
        if self.finished:
            raise RuntimeError("push() after finish()")
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        found: list[detect.Detection] = []
        while len(block):
            need = max(1, self.feeder.next_window + self.window - self.feeder.total)
            piece, block = block[:need], block[need:]
            found += self._feed(piece)
        return found

    def finish(self) -> list[detect.Detection]:
        """The end of the stream: the last windows (padded as the file scan pads them), every
        average complete; -> the detections still to come."""
        if self.finished:
            return []
        found = self._feed(None)
        self.finished = True
        return found

    # ------------------------------------------------------------ the pipeline

    def _feed(self, piece: np.ndarray | None) -> list[detect.Detection]:
        segments = list(self.feeder.feed(piece))
        self.levels = np.concatenate([self.levels, self.feeder.take_levels()])
        if not segments and piece is not None:
            return []
        if segments:
            self._score(segments, piece)
        found = self._detect(final=piece is None)
        self._trim()
        return found

    def _score(self, segments: list[np.ndarray], piece: np.ndarray | None) -> None:
        images = [render_image(segment, self.predictor.settings) for segment in segments]
        batch = torch.stack([image_to_tensor(image, self.predictor.channels) for image in images])
        probs = torch.softmax(self.predictor.logits(batch).double(), dim=1).numpy()
        self.probs = np.concatenate([self.probs, probs])
        for segment, image, row in zip(segments, images, probs):
            tail = segment[-self.hop:]
            level = 10.0 * np.log10(max(float(np.mean(np.square(tail, dtype=np.float64))), 1e-12))
            self.last = Update(self.windows, self.windows * self.hop / self.rate,
                               image if self.keep_images else None, row, max(level, gate.SILENCE_DB))
            self.windows += 1
            if self.on_window is not None:
                self.on_window(self.last)

    def _detect(self, final: bool) -> list[detect.Detection]:
        count = len(self.probs)
        decided = count if final else count - self.lookahead
        if decided <= 0:
            return []
        origin_s = self.origin / self.rate
        starts = (self.first_window + np.arange(count, dtype=np.int64)) * self.hop - self.origin
        starts_s = starts / self.rate
        frames = window_active = None
        if self.gate_db > 0:
            frames = detect.active_frames(self.levels, self.gate_db)
            window_active = detect.window_activity(frames, starts_s, self.window_s)
        gated = self.probs if window_active is None else detect.gate_posteriors(self.probs, window_active)
        smoothed = detect.smooth_posteriors(gated, self.span)
        runs: list[tuple[int, int]] = []
        events = detect.find_detections(starts_s[:decided], smoothed[:decided], self.classes, self.window_s,
                                        self.threshold, self.refractory_s,
                                        None if window_active is None else window_active[:decided],
                                        frames, self.levels, targets=self.predictor.targets, runs=runs)
        valid_from = 0.0 if self.origin == 0 else origin_s + self.context_s
        new = []
        for event, (first, last) in zip(events, runs):
            event = replace(event, start=event.start + origin_s, end=event.end + origin_s,
                            time=event.time + origin_s)
            first, last = first + self.first_window, last + self.first_window
            # the same word as a printed one: its run of windows has grown, or it is within the
            # refractory period of it (the file scan would have kept one of the two)
            if event.time < valid_from or any(first <= seen_last and seen_first <= last
                                               or abs(event.time - seen.time) < self.refractory_s
                                               for seen, seen_first, seen_last in self.recent):
                for k, (seen, seen_first, seen_last) in enumerate(self.recent):
                    if first <= seen_last and seen_first <= last:
                        self.recent[k] = (seen, min(first, seen_first), max(last, seen_last))
                continue
            new.append(event)
            self.recent.append((event, first, last))
            self.counts[event.label] += 1
        return new

    def _trim(self) -> None:
        """Drop the oldest history, keeping KEEP_S seconds, at a multiple of origin_step."""
        total = self.feeder.total
        if total - self.origin <= HISTORY_S * self.rate:
            return
        origin = (total - int(KEEP_S * self.rate)) // self.origin_step * self.origin_step
        if origin <= self.origin:
            return
        drop_windows = max(0, min(len(self.probs), origin // self.hop - self.first_window))
        self.probs = self.probs[drop_windows:]
        self.first_window += drop_windows
        self.levels = self.levels[(origin - self.origin) // self.frame_hop:]
        self.origin = origin
        forget = origin / self.rate + self.context_s - self.refractory_s - self.window_s
        self.recent = [r for r in self.recent if r[0].time >= forget or r[2] >= self.first_window]


class Resampler:
    """A device's or client's rate -> the model's, in blocks, with the soxr stream that
    preprocess.render.audio_blocks uses for files (same quality); a no-op at the model's rate."""

    def __init__(self, rate: int, target: int):
        self.rate, self.target = int(rate), int(target)
        self._stream = None if self.rate == self.target else soxr.ResampleStream(
            self.rate, self.target, 1, dtype="float32", quality=SOXR_QUALITY)

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if self._stream is None:
            return block
        return np.ascontiguousarray(self._stream.resample_chunk(block, last=last), dtype=np.float32)


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian 16-bit PCM bytes (an even count) -> float32 in [-1, 1), as libsndfile reads it."""
    samples = np.frombuffer(data, "<i2").astype(np.float32)
    samples *= np.float32(1 / 32768)
    return samples
