"""Classify clips, spectrogram PNGs, folders and long recordings with a trained model.

    python -m train.predict --model models/demo/model.pt clip.wav images/test/yes/a.png folder/ long.wav

A wav is rendered in memory by `preprocess.render` with the settings stored in the checkpoint, so it
gets exactly the pixels `python -m preprocess` would have written; a PNG is read as ImageFolder reads
it. The network input is ToTensor() of that image (any normalisation lives inside the model).
A clip longer than the model's duration by more than one hop is scanned with sliding windows
(train.detect) and reported as word detections with times.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from preprocess.cli import SpecVisionError
from preprocess import cli
from preprocess.atomic import atomic_writer
from preprocess.images import ImageError, decode, open_png
from preprocess.openworld import SILENCE, target_classes
from preprocess.render import (AUDIO_EXTENSIONS, MAX_AUDIO_SECONDS, AudioError, audio_blocks, image_to_tensor,
                               load_audio, open_audio, render_image)
from train import detect
from train.checkpoint import CheckpointError, load_model

BATCH_SIZE = 64
PNG_EXTENSIONS = (".png",)
UNKNOWN = "unknown"
BENCH_MAX_CLIPS = 200
BENCH_WARMUP = 5
SCAN_BATCH_SIZE = 8   # windows per forward pass in a long-recording scan: a batch of 64 costs ~110 MB of
                      # activations (specresnet, 201x81), more than the rest of the scan
ENVELOPE_BLOCKS = 4000  # min/max pairs kept for the timeline plot of a long recording
EXIT_OK, EXIT_INPUT_FAILED, EXIT_UNUSABLE = 0, 1, 2


class InputError(SpecVisionError):
    """One input that cannot be classified; the message names the file and the reason."""

    exit_code = 1


@dataclass
class Prediction:
    """One clip or PNG: the label (or `unknown` below the threshold) and the raw numbers behind it."""
    path: str
    label: str
    confidence: float
    top_k: list[tuple[str, float]]
    logits: list[float]
    target: bool = True   # the label is a word to spot (not 'unknown', 'silence' or below threshold)

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "confidence": round(self.confidence, 6),
                "target": self.target,
                "top_k": [{"label": lab, "confidence": round(p, 6)} for lab, p in self.top_k],
                "logits": self.logits}

    def to_line(self) -> str:
        line = f"{self.path}  {self.label}  {self.confidence:.3f}"
        if len(self.top_k) > 1:
            line += "  (" + ", ".join(f"{lab} {p:.3f}" for lab, p in self.top_k) + ")"
        return line


@dataclass
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
    detections: list[detect.Detection]
    threshold: float

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


class Predictor:
    """A checkpoint ready to classify: its model, classes and render settings."""

    def __init__(self, model_path: str | os.PathLike, device: str = "cpu"):
        self.model, self.ckpt, self.settings = load_model(model_path, device)
        self.device = torch.device(device)
        self.classes = list(self.ckpt["classes"])
        # Which answers are words to spot; 'unknown' and 'silence' answer "none of them".
        self.targets = list(self.ckpt.get("targets") or target_classes(self.classes))
        expected = [self.settings.channels, *self.settings.image_size]
        if [int(x) for x in self.ckpt["input_size"]] != expected:
            raise CheckpointError(f"{model_path}: input_size {list(self.ckpt['input_size'])} does not match "
                                  f"the image its render settings make ({expected})")
        self.channels, self.height, self.width = expected

    # ------------------------------------------------------------ inputs -> tensors

    def png_tensor(self, path: Path) -> torch.Tensor:
        """A PNG made by preprocess -> the tensor ImageFolder + ToTensor would give; checked first."""
        try:
            with open_png(path) as image:  # header checks first: a decompression bomb is never decoded
                mode, (width, height) = image.mode, image.size
                # preprocess writes its text chunks before the pixels: they are in the header's info
                metadata = {k.split(":", 1)[1]: v for k, v in image.info.items()
                            if isinstance(k, str) and k.startswith("specvision:")}
                if (width, height) == (self.width, self.height):
                    tensor = image_to_tensor(decode(image, path), self.channels)
        except ImageError as err:
            raise InputError(str(err)) from None
        if (width, height) != (self.width, self.height):
            raise InputError(f"{path}: image is {width}x{height} pixels but the model expects "
                             f"{self.width}x{self.height} (width x height); render it with the model's "
                             f"settings")
        allowed = ("P", "RGB") if self.channels == 3 else ("L",)
        if mode not in allowed:
            raise InputError(f"{path}: image mode {mode!r} but the model expects {' or '.join(allowed)} "
                             f"({self.settings.colormap} colormap, {self.channels} channel(s))")
        digest = metadata.get("settings_hash")
        if digest is not None and digest != self.settings.digest():
            raise InputError(f"{path}: rendered with other settings (hash {digest}) than the model's "
                             f"({self.settings.digest()}); re-render it from the audio")
        return tensor

    def audio_tensor(self, wave: np.ndarray) -> torch.Tensor:
        return image_to_tensor(render_image(wave, self.settings), self.channels)

    def is_long(self, wave: np.ndarray, hop_s: float) -> bool:
        """Scan only when a window can move at least one hop; a slightly long clip is fitted like
        preprocess does (its loudest window), so it gets the same image as its PNG."""
        return len(wave) > self.settings.num_samples + int(round(hop_s * self.settings.sample_rate))

    def load(self, path: Path, hop_s: float,
             max_seconds: float = MAX_AUDIO_SECONDS) -> tuple[torch.Tensor | None, Path | None]:
        """-> (image tensor, None) for a clip or PNG, (None, path) for a long recording (scan_file).

        Only a clip whose header says it is short is decoded here; a long recording is streamed."""
        suffix = path.suffix.lower()
        if suffix in PNG_EXTENSIONS:
            return self.png_tensor(path), None
        if suffix in AUDIO_EXTENSIONS:
            with open_audio(path, None, max_seconds) as handle:  # header checks, length cap
                seconds = handle.frames / handle.samplerate
            if seconds > self.settings.duration + hop_s + 1.0:
                return None, path
            wave = load_audio(path, self.settings, max_seconds=max_seconds)
            return (None, path) if self.is_long(wave, hop_s) else (self.audio_tensor(wave), None)
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected audio "
                         f"({', '.join(AUDIO_EXTENSIONS)}) or a .png spectrogram")

    # ------------------------------------------------------------ tensors -> answers

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch.to(self.device)).float().cpu()

    def prediction(self, path: str, logits: torch.Tensor, threshold: float, top_k: int) -> Prediction:
        probs = torch.softmax(logits.double(), dim=0)
        order = torch.argsort(probs, descending=True, stable=True).tolist()
        best = order[0]
        confidence = float(probs[best])
        label = self.classes[best] if confidence >= threshold else UNKNOWN
        return Prediction(path, label, confidence,
                          [(self.classes[i], float(probs[i])) for i in order[:max(1, top_k)]],
                          [float(x) for x in logits], label in self.targets)

    def default_gate_db(self) -> float:
        """The energy gate is for models that cannot say "silence"; with a silence class the gate is
        GATE_WITH_SILENCE_DB (measured: docs/benchmarks.md, open-world keyword spotting)."""
        return detect.GATE_WITH_SILENCE_DB if SILENCE in self.classes else detect.ACTIVITY_MARGIN_DB

    def scan_file(self, path: str | os.PathLike, max_seconds: float = MAX_AUDIO_SECONDS, **options) -> Scan:
        """scan() of a recording decoded in blocks: memory is bounded whatever its length."""
        with open_audio(path, None, max_seconds) as handle:
            estimate = int(handle.frames * self.settings.sample_rate / handle.samplerate)
            return self.scan(str(path), audio_blocks(handle, path, self.settings), estimate=estimate,
                             **options)

    def scan(self, path: str, wave, hop_s: float = detect.DEFAULT_HOP_S,
             smooth_s: float = detect.DEFAULT_SMOOTH_S, threshold: float = detect.DEFAULT_THRESHOLD,
             refractory_s: float = detect.DEFAULT_REFRACTORY_S, gate_db: float | None = None,
             batch_size: int = BATCH_SIZE, estimate: int | None = None) -> Scan:
        """Windows of the model's duration every hop, each rendered like a clip, then train.detect.
        Only target words are reported; gate_db None: the model's default_gate_db().

        `wave`: the waveform at the model's rate, or an iterable of consecutive blocks of it (then
        `estimate`, its approximate length, sizes the plot envelope). Blocks are consumed as they come
        (detect.WindowFeeder): only the last block and one window are held.
        """
        gate_db = self.default_gate_db() if gate_db is None else gate_db
        rate, window = self.settings.sample_rate, self.settings.num_samples
        hop = max(1, int(round(hop_s * rate)))
        blocks = [wave] if isinstance(wave, np.ndarray) else wave
        if estimate is None:
            estimate = len(wave) if isinstance(wave, np.ndarray) else 0
        feeder = detect.WindowFeeder(rate, window, hop, envelope_step=max(1, estimate // ENVELOPE_BLOCKS))
        probs, batch = [], []

        def flush():
            if batch:
                probs.append(torch.softmax(self.logits(torch.stack(batch)).double(), dim=1).numpy())
                batch.clear()

        for block in itertools.chain(blocks, [None]):  # None: the end
            for segment in feeder.feed(block):
                batch.append(self.audio_tensor(segment))
                if len(batch) >= batch_size:
                    flush()
        flush()
        probs = np.concatenate(probs)
        starts = detect.window_starts(feeder.total, window, hop)
        starts_s, window_s = starts / rate, window / rate
        levels = feeder.levels()
        frames = window_active = None
        if gate_db > 0:
            frames = detect.active_frames(levels, gate_db)
            window_active = detect.window_activity(frames, starts_s, window_s)
        gated = probs if window_active is None else detect.gate_posteriors(probs, window_active)
        smoothed = detect.smooth_posteriors(gated, detect.span_windows(smooth_s, hop / rate))
        found = detect.find_detections(starts_s, smoothed, self.classes, window_s, threshold, refractory_s,
                                       window_active, frames, levels, targets=self.targets)
        return Scan(path, feeder.envelope(), feeder.envelope_step, feeder.total, rate, window_s, starts_s,
                    probs, smoothed, window_active, found, threshold)


# ---------------------------------------------------------------- files

def expand_inputs(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Files named or found (recursively, sorted) in folders; errors for missing paths and empty folders."""
    supported = set(AUDIO_EXTENSIONS) | set(PNG_EXTENSIONS)
    files, errors = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if not f.is_dir() and f.suffix.lower() in supported
                           and not any(part.startswith(".") for part in f.relative_to(path).parts))
            odd = [f for f in found if not f.is_file()]  # FIFOs, sockets, dangling links: named, not read
            errors += [f"{f}: not a regular file; not read" for f in odd]
            found = [f for f in found if f.is_file()]
            if not found:
                errors.append(f"{path}: folder has no audio ({', '.join(AUDIO_EXTENSIONS)}) or .png files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            errors.append(f"{path}: not a regular file (a FIFO, socket or device); not read")
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors


def predict_files(predictor: Predictor, files: list[Path], args, emit,
                  report_error) -> tuple[int, int, list[Scan]]:
    """Classify `files` in order, batching clips; -> (answered, failed, scans). Never raises per file."""
    pending: list[tuple[str, torch.Tensor]] = []
    answered = failed = 0
    scans: list[Scan] = []
    threshold = 0.0 if args.threshold is None else args.threshold

    def flush():
        nonlocal answered
        if pending:
            logits = predictor.logits(torch.stack([t for _, t in pending]))
            for (name, _), row in zip(pending, logits):
                emit(predictor.prediction(name, row, threshold, args.top_k))
                answered += 1
            pending.clear()

    progress = tqdm(files, desc="predict", unit="file", disable=True if len(files) < 2 else None)
    for path in progress:
        try:
            tensor, long_path = predictor.load(path, args.hop, args.max_seconds)
        except (AudioError, InputError) as err:
            report_error(str(err))
            failed += 1
            continue
        if tensor is not None:
            pending.append((str(path), tensor))
            if len(pending) >= args.batch_size:
                flush()
            continue
        flush()  # keep the output in input order
        try:
            scan = predictor.scan_file(long_path, args.max_seconds, hop_s=args.hop, smooth_s=args.smooth,
                                       threshold=detect.DEFAULT_THRESHOLD if args.threshold is None
                                       else args.threshold, refractory_s=args.refractory,
                                       gate_db=args.gate_db,
                                       batch_size=min(args.batch_size, SCAN_BATCH_SIZE))
        except AudioError as err:  # found while streaming (a corrupt block, NaN samples)
            report_error(str(err))
            failed += 1
            continue
        scans.append(scan)
        emit(scan)
        answered += 1
    flush()
    return answered, failed, scans


# ---------------------------------------------------------------- timeline plot

def plot_timeline(scan: Scan, classes: list[str], out: Path) -> None:
    """Waveform with the detections on top, per-class confidence over time below; atomic write."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    colors = [f"C{i}" for i in range(len(classes))]
    fig = Figure(figsize=(12, 5.5), constrained_layout=True)
    ax_wave, ax_prob = fig.subplots(2, 1, sharex=True)
    step, lows, highs = scan.envelope_step, scan.envelope[:, 0], scan.envelope[:, 1]  # keeps peaks visible
    times = (np.arange(len(lows)) * step + step / 2) / scan.sample_rate
    ax_wave.fill_between(times, lows, highs, color="0.35", linewidth=0)
    peak = float(max(np.abs(scan.envelope).max(initial=0.0), 0.0)) or 1.0
    for d in scan.detections:
        color = colors[classes.index(d.label)]
        ax_wave.axvspan(d.start, d.end, color=color, alpha=0.25)
        ax_wave.text(d.time, peak * 1.02, f"{d.label} {d.confidence:.2f}", ha="center", va="bottom",
                     color=color, fontsize=9, fontweight="bold")
    ax_wave.set_ylim(-peak * 1.05, peak * 1.25)
    ax_wave.set_ylabel("amplitude")
    ax_wave.set_title(f"{scan.path}: {len(scan.detections)} detection(s)")

    centres = scan.starts_s + scan.window_s / 2
    if scan.window_active is not None:
        ax_prob.fill_between(centres, 0, 1.02, where=~scan.window_active, step="mid", color="0.9",
                             label="gated: no sound event")
    for i, name in enumerate(classes):
        ax_prob.plot(centres, scan.probs[:, i], color=colors[i], linewidth=0.7, alpha=0.45, linestyle="--")
        ax_prob.plot(centres, scan.smoothed[:, i], color=colors[i], linewidth=1.8, label=f"{name} (smoothed)")
    ax_prob.axhline(scan.threshold, color="black", linestyle=":", linewidth=1, label="threshold")
    ax_prob.set_ylim(0, 1.02)
    ax_prob.set_xlim(0, max(scan.duration_s, centres[-1]))
    ax_prob.set_xlabel("time (s), confidence drawn at the centre of each window (dashed: raw)")
    ax_prob.set_ylabel("confidence")
    ax_prob.legend(loc="upper right", fontsize=8, ncol=len(classes) + 2)
    with atomic_writer(out) as handle:
        fig.savefig(handle, format="png", dpi=110)


def plot_paths(out: Path, scans: list[Scan]) -> list[Path]:
    """One scan -> `out`; several -> `out` with each recording's name added (timeline_long1.png ...)."""
    if len(scans) == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{Path(s.path).stem}{out.suffix}") for s in scans]


# ---------------------------------------------------------------- benchmark

def bench(predictor: Predictor, folder: Path, batch_size: int) -> dict:
    """Latency wav path -> label for single clips, and batched throughput over the whole folder (1 thread)."""
    torch.set_num_threads(1)
    clips = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS
                   and not any(p.startswith(("_", ".")) for p in f.relative_to(folder).parent.parts))
    if not clips:
        raise InputError(f"{folder}: no audio clips to benchmark (folders starting with '_' are skipped)")
    sample = clips[::max(1, len(clips) // BENCH_MAX_CLIPS)][:BENCH_MAX_CLIPS]  # spread over all classes
    stages, cpu = [], []
    for i, path in enumerate(list(sample[:BENCH_WARMUP]) + list(sample)):
        c0, t0 = time.thread_time(), time.perf_counter()
        wave = load_audio(path, predictor.settings)
        t1 = time.perf_counter()
        tensor = predictor.audio_tensor(wave)
        t2 = time.perf_counter()
        label = predictor.classes[int(predictor.logits(tensor[None])[0].argmax())]
        t3, c1 = time.perf_counter(), time.thread_time()
        if i >= BENCH_WARMUP and label:
            stages.append((t1 - t0, t2 - t1, t3 - t2))
            cpu.append(c1 - c0)  # CPU time of this thread: what the clip costs on an idle core
    ms = np.array(stages) * 1000.0
    total = ms.sum(axis=1)

    args = build_parser().parse_args(["--model", "-", "--batch-size", str(batch_size)])  # CLI defaults
    errors: list[str] = []
    start = time.perf_counter()
    answered, failed, _ = predict_files(predictor, clips, args, lambda _: None, errors.append)
    wall = time.perf_counter() - start
    return {"median_ms": round(float(np.median(total)), 3),
            "p95_ms": round(float(np.percentile(total, 95)), 3),
            "clips_per_s": round(answered / wall, 1),
            "latency_clips": len(sample), "folder_clips": len(clips), "failed": failed,
            "decode_ms": round(float(np.median(ms[:, 0])), 3),
            "render_ms": round(float(np.median(ms[:, 1])), 3),
            "model_ms": round(float(np.median(ms[:, 2])), 3),
            "cpu_median_ms": round(float(np.median(cpu)) * 1000.0, 3), "batch_size": batch_size, "threads": 1,
            "arch": predictor.ckpt["arch"], "device": "cpu"}


# ---------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.predict",
        description="Classify audio clips, spectrogram PNGs or folders of them with a model trained by "
                    "`python -m train`. Audio is rendered with the render settings stored in the model, "
                    "exactly as `python -m preprocess` renders training images. Recordings longer than "
                    "the model's clip duration by more than one --hop are scanned for words: a window "
                    "every --hop, posteriors averaged over --smooth, a detection when a label reaches "
                    "--threshold in a window that holds a sound event (energy gate), one per word "
                    "(--refractory). Shorter clips are fitted to the duration as preprocess does.",
        epilog="Output: one line per file `path  label  confidence` (a long recording: one line per "
               "detected word with its start-end time). Exit status 0 when every file was answered, "
               "1 when some input failed (each named on stderr), 2 when the model cannot be used.")
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="audio file (.wav .flac .ogg .mp3), PNG made by preprocess, or a folder "
                             "(recursive)")
    parser.add_argument("--model", required=True, help="models/NAME/model.pt written by `python -m train`")
    parser.add_argument("--top-k", type=int, default=1,
                        help="also list the K most likely classes (default 1)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per file: path, label, confidence, top_k, logits "
                             "(long recordings: detections with start/end/time)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="clips: below this confidence the label is `unknown` (default: never); long "
                             f"recordings: smoothed confidence needed for a detection "
                             f"(default {detect.DEFAULT_THRESHOLD})")
    parser.add_argument("--hop", type=float, default=detect.DEFAULT_HOP_S,
                        help="long recordings: seconds between windows (default %(default)s)")
    parser.add_argument("--smooth", type=float, default=detect.DEFAULT_SMOOTH_S,
                        help="long recordings: seconds of posterior averaging (default %(default)s)")
    parser.add_argument("--refractory", type=float, default=detect.DEFAULT_REFRACTORY_S,
                        help="long recordings: detections closer than this are one word "
                             "(default %(default)s)")
    parser.add_argument("--gate-db", type=float, default=None,
                        help="long recordings: a window may only fire if it has sound this many dB above "
                             f"the local noise floor; 0 turns the gate off (default: "
                             f"{detect.ACTIVITY_MARGIN_DB:g} for models without a 'silence' class, "
                             f"{detect.GATE_WITH_SILENCE_DB:g} for models with one)")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="long recordings: draw waveform, detections and confidence over time to this "
                             "file")
    cli.add_max_seconds_flag(parser, MAX_AUDIO_SECONDS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help=f"images per forward pass (default %(default)s; at most {SCAN_BATCH_SIZE} in a "
                             f"long-recording scan, to bound its memory)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--bench", type=Path, metavar="DIR",
                        help="benchmark on the clips under DIR: latency wav -> label (median, p95 over up to "
                             f"{BENCH_MAX_CLIPS} clips, CPU, 1 thread) and batched throughput; last line "
                             f"JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.paths and args.bench is None:
        parser.error("give at least one PATH (or --bench DIR)")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be between 0 and 1")
    if args.top_k < 1 or args.batch_size < 1 or args.hop <= 0 or args.smooth < 0 or args.refractory < 0:
        parser.error("--top-k and --batch-size must be >= 1, --hop > 0, --smooth and --refractory >= 0")
    try:
        predictor = Predictor(args.model, "cpu" if args.bench else args.device)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.hop > predictor.settings.duration:
        parser.error(f"--hop {args.hop} is longer than the model's window ({predictor.settings.duration} s)")

    if args.bench is not None:
        try:
            result = bench(predictor, args.bench, args.batch_size)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_INPUT_FAILED
        print(f"latency wav -> label, {result['latency_clips']} clips, 1 thread: "
              f"median {result['median_ms']:.2f} ms, p95 {result['p95_ms']:.2f} ms "
              f"(decode {result['decode_ms']:.2f} + render {result['render_ms']:.2f} "
              f"+ model {result['model_ms']:.2f} ms; CPU time {result['cpu_median_ms']:.2f} ms)")
        print(f"throughput, {result['folder_clips']} clips in batches of {args.batch_size}: "
              f"{result['clips_per_s']:.1f} clips/s")
        print(json.dumps(result))
        return EXIT_OK if result["failed"] == 0 else EXIT_INPUT_FAILED

    def emit(answer):
        if args.json:
            tqdm.write(json.dumps(answer.to_dict()), file=sys.stdout)
        else:
            for line in [answer.to_line()] if isinstance(answer, Prediction) else answer.to_lines():
                tqdm.write(line, file=sys.stdout)

    def report_error(message: str):
        tqdm.write(f"error: {message}", file=sys.stderr)

    files, errors = expand_inputs(args.paths)
    for message in errors:
        report_error(message)
    answered, failed, scans = predict_files(predictor, files, args, emit, report_error)
    failed += len(errors)
    if args.plot is not None:
        if not scans:
            report_error(f"{args.plot}: no timeline drawn: no input was longer than the model's "
                         f"{predictor.settings.duration} s window")
            failed += 1
        for scan, out in zip(scans, plot_paths(args.plot, scans)):
            plot_timeline(scan, predictor.classes, out)
            print(f"timeline: {out}", file=sys.stderr)
    if failed or answered != 1:
        print(f"predict: {answered} answered, {failed} failed", file=sys.stderr)
    return EXIT_INPUT_FAILED if failed or not answered else EXIT_OK


if __name__ == "__main__":
    cli.run(main)
