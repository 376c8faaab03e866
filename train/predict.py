"""Classify clips, spectrogram PNGs, folders and long recordings with a trained model.

    python -m train.predict --model models/demo/model.pt clip.wav images/test/yes/a.png folder/ long.wav

    from train.predict import predict, Options                   # the same from Python
    results = predict(["clip.wav", "folder/"], "models/demo/model.pt", Options(top_k=2))
    results.answers   # Prediction (a clip or PNG) or detect.Scan (a long recording), in input order
    results.failures  # Failure(path, message) for each input that could not be answered

A wav is rendered in memory by `preprocess.render` with the settings stored in the checkpoint, so it
gets exactly the pixels `python -m preprocess` would have written; a PNG is read as ImageFolder reads
it. The network input is ToTensor() of that image (any normalisation lives inside the model).
A clip longer than the model's duration by more than one hop is scanned with sliding windows
(train.detect.scan_file) and reported as word detections with times.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from preprocess import cli
from preprocess.render import AUDIO_EXTENSIONS, MAX_AUDIO_SECONDS, AudioError, load_audio
from train import detect, engines
from train.metrics import plot_timeline
from train.predictor import PNG_EXTENSIONS, InputError, Prediction, Predictor

BATCH_SIZE = 64
BENCH_MAX_CLIPS = 200
BENCH_WARMUP = 5


@dataclass
class Failure:
    """One input that could not be answered: the message names the file and the reason."""
    path: str
    message: str


@dataclass
class Results:
    """What predict() gives back, each list in input order."""
    answers: list[Prediction | detect.Scan]
    failures: list[Failure]

    @property
    def scans(self) -> list[detect.Scan]:
        return [a for a in self.answers if isinstance(a, detect.Scan)]


@dataclass(frozen=True)
class Options:
    """How inputs are answered; the defaults are the command line's."""
    top_k: int = 1                  # also list the K most likely classes
    threshold: float | None = None  # clips: below it the label is `unknown` (None: never); long
                                    # recordings: smoothed confidence of a detection (None: detect's default)
    hop_s: float | None = None      # long recordings: seconds between windows (None: the model's default_hop_s())
    smooth_s: float = detect.DEFAULT_SMOOTH_S    # ... seconds of posterior averaging
    refractory_s: float = detect.DEFAULT_REFRACTORY_S  # ... detections closer than this are one word
    gate_db: float | None = None    # ... energy gate (0: off; None: the model's default_gate_db())
    max_seconds: float = MAX_AUDIO_SECONDS  # audio whose header declares more is refused
    batch_size: int = BATCH_SIZE    # images per forward pass (at most detect.SCAN_BATCH_SIZE in a scan)

    def check(self, predictor: Predictor | None = None) -> None:
        """ValueError for values no run can use (named by their command-line flags); with a predictor,
        also a hop longer than its window."""
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError("--threshold must be between 0 and 1")
        if (self.top_k < 1 or self.batch_size < 1 or (self.hop_s is not None and self.hop_s <= 0)
                or self.smooth_s < 0 or self.refractory_s < 0):
            raise ValueError("--top-k and --batch-size must be >= 1, --hop > 0, --smooth and --refractory >= 0")
        if predictor is not None and (hop := self.hop(predictor)) > predictor.settings.duration:
            raise ValueError(f"--hop {hop} is longer than the model's window "
                             f"({predictor.settings.duration} s)")

    def hop(self, predictor: Predictor) -> float:
        return predictor.default_hop_s() if self.hop_s is None else self.hop_s


# ---------------------------------------------------------------- the library call

def expand_inputs(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Failure]]:
    """Files named or found (recursively, sorted) in folders; failures for missing paths and empty folders."""
    supported = set(AUDIO_EXTENSIONS) | set(PNG_EXTENSIONS)
    files, failures = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if not f.is_dir() and f.suffix.lower() in supported
                           and not any(part.startswith(".") for part in f.relative_to(path).parts))
            odd = [f for f in found if not f.is_file()]  # FIFOs, sockets, dangling links: named, not read
            failures += [Failure(str(f), f"{f}: not a regular file; not read") for f in odd]
            found = [f for f in found if f.is_file()]
            if not found:
                failures.append(Failure(str(path), f"{path}: folder has no audio "
                                                   f"({', '.join(AUDIO_EXTENSIONS)}) or .png files"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            failures.append(Failure(str(path), f"{path}: not a regular file (a FIFO, socket or device); not read"))
        else:
            failures.append(Failure(str(path), f"{path}: no such file or folder"))
    return files, failures


def iter_predictions(predictor: Predictor, paths: Iterable[str | os.PathLike], options: Options = Options(),
                     progress: bool = False) -> Iterator[Prediction | detect.Scan | Failure]:
    """Answer `paths` (files or folders) in input order, batching clips; a Failure per input that
    cannot be answered, never an exception. A generator, so a caller can show answers as they come."""
    files, failures = expand_inputs(paths)
    yield from failures
    pending: list[tuple[str, torch.Tensor]] = []
    threshold = 0.0 if options.threshold is None else options.threshold
    hop_s = options.hop(predictor)
    scan_options = {"hop_s": hop_s, "smooth_s": options.smooth_s, "refractory_s": options.refractory_s,
                    "threshold": detect.DEFAULT_THRESHOLD if options.threshold is None else options.threshold,
                    "gate_db": options.gate_db, "batch_size": min(options.batch_size, detect.SCAN_BATCH_SIZE)}

    def answer_pending() -> list[Prediction]:
        answers = []
        if pending:
            logits = predictor.logits(torch.stack([t for _, t in pending]))
            answers = [predictor.prediction(name, row, threshold, options.top_k)
                       for (name, _), row in zip(pending, logits)]
            pending.clear()
        return answers

    for path in tqdm(files, desc="predict", unit="file", disable=True if not progress or len(files) < 2 else None):
        try:
            tensor, long_path = predictor.load(path, hop_s, options.max_seconds)
        except (AudioError, InputError) as err:
            yield Failure(str(path), str(err))
            continue
        if tensor is not None:
            pending.append((str(path), tensor))
            if len(pending) >= options.batch_size:
                yield from answer_pending()
            continue
        yield from answer_pending()  # keep the answers in input order
        try:
            yield detect.scan_file(predictor, long_path, options.max_seconds, **scan_options)
        except AudioError as err:  # found while streaming (a corrupt block, NaN samples)
            yield Failure(str(path), str(err))
    yield from answer_pending()


def predict(paths: str | os.PathLike | Iterable[str | os.PathLike], model: str | os.PathLike | Predictor,
            options: Options = Options(), device: str = "cpu", progress: bool = False) -> Results:
    """Classify clips and PNGs and scan long recordings (files or folders) with `model` (a model.pt
    path or a loaded Predictor). Raises CheckpointError for an unusable model and ValueError for
    unusable options; a bad input is a Failure in the results, the others are still answered."""
    predictor = model if isinstance(model, Predictor) else Predictor(model, device)
    options.check(predictor)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    results = Results([], [])
    for item in iter_predictions(predictor, paths, options, progress):
        (results.failures if isinstance(item, Failure) else results.answers).append(item)
    return results


def plot_paths(out: Path, scans: list[detect.Scan]) -> list[Path]:
    """One scan -> `out`; several -> `out` with each recording's name added (timeline_long1.png ...)."""
    if len(scans) == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{Path(s.path).stem}{out.suffix}") for s in scans]


# ---------------------------------------------------------------- benchmark

def bench(predictor: Predictor, folder: Path, batch_size: int) -> dict:
    """Latency wav path -> label for single clips with each engine (PyTorch and, where onnxruntime is
    installed, ONNX Runtime: both on the same clips, alternating which goes first per clip), and
    batched throughput over the whole folder with each, all on 1 thread. Top-level median_ms, p95_ms
    and clips_per_s are the predictor's own engine's; "torch" and "onnx" hold each engine's figures
    ("onnx" is null without onnxruntime)."""
    torch.set_num_threads(1)
    clips = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS
                   and not any(p.startswith(("_", ".")) for p in f.relative_to(folder).parent.parts))
    if not clips:
        raise InputError(f"{folder}: no audio clips to benchmark (folders starting with '_' are skipped)")
    sample = clips[::max(1, len(clips) // BENCH_MAX_CLIPS)][:BENCH_MAX_CLIPS]  # spread over all classes
    runs = {"torch": engines.TorchEngine(predictor.model, "cpu")}
    if engines.onnxruntime_available():
        runs["onnx"] = engines.OnnxEngine(predictor.model, predictor.ckpt, predictor.model_path, threads=1)
    names = list(runs)
    stages = {name: [] for name in names}
    cpu = {name: [] for name in names}
    labels = {name: [] for name in names}
    for i, path in enumerate(list(sample[:BENCH_WARMUP]) + list(sample)):
        for name in names if i % 2 == 0 else names[::-1]:  # neither engine always runs on a warm cache
            c0, t0 = time.thread_time(), time.perf_counter()
            wave = predictor.clip_wave(path, predictor.default_hop_s())  # what predict does for a clip
            if wave is None:  # a long recording: its loudest window, as the benchmark always took
                wave = load_audio(path, predictor.settings)
            t1 = time.perf_counter()
            tensor = predictor.audio_tensor(wave)
            t2 = time.perf_counter()
            label = predictor.classes[int(runs[name](tensor[None])[0].argmax())]
            t3, c1 = time.perf_counter(), time.thread_time()
            if i >= BENCH_WARMUP:
                stages[name].append((t1 - t0, t2 - t1, t3 - t2))
                cpu[name].append(c1 - c0)  # CPU time of this thread: what the clip costs on an idle core
                labels[name].append(label)

    figures = {}
    for name in names:
        ms = np.array(stages[name]) * 1000.0
        total = ms.sum(axis=1)
        engine_predictor = copy.copy(predictor)
        engine_predictor.engine = runs[name]
        start = time.perf_counter()
        results = predict(clips, engine_predictor, Options(batch_size=batch_size), progress=True)
        wall = time.perf_counter() - start
        figures[name] = {"median_ms": round(float(np.median(total)), 3),
                         "p95_ms": round(float(np.percentile(total, 95)), 3),
                         "decode_ms": round(float(np.median(ms[:, 0])), 3),
                         "render_ms": round(float(np.median(ms[:, 1])), 3),
                         "model_ms": round(float(np.median(ms[:, 2])), 3),
                         "cpu_median_ms": round(float(np.median(cpu[name])) * 1000.0, 3),
                         "clips_per_s": round(len(results.answers) / wall, 1),
                         "failed": len(results.failures)}
    own = figures[predictor.engine.name if predictor.engine.name in figures else "torch"]
    result = {"engine": predictor.engine.name, "median_ms": own["median_ms"], "p95_ms": own["p95_ms"],
              "clips_per_s": own["clips_per_s"], "latency_clips": len(sample), "folder_clips": len(clips),
              "failed": own["failed"], "decode_ms": own["decode_ms"], "render_ms": own["render_ms"],
              "model_ms": own["model_ms"], "cpu_median_ms": own["cpu_median_ms"],
              "batch_size": batch_size, "threads": 1, "arch": predictor.ckpt["arch"], "device": "cpu",
              "torch": figures["torch"], "onnx": figures.get("onnx")}
    if "onnx" in figures:
        result["same_labels"] = labels["torch"] == labels["onnx"]
        result["onnx_speedup"] = round(figures["torch"]["median_ms"] / figures["onnx"]["median_ms"], 2)
    return result


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
    parser.add_argument("--hop", type=float, default=None,
                        help="long recordings: seconds between windows (default: "
                             f"{detect.HOP_WITH_SILENCE_S} for a model with a 'silence' class, else "
                             f"{detect.DEFAULT_HOP_S})")
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
                        help=f"images per forward pass (default %(default)s; at most "
                             f"{detect.SCAN_BATCH_SIZE} in a long-recording scan, to bound its memory)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--engine", choices=engines.ENGINES, default="auto",
                        help="what runs the network: onnx (ONNX Runtime, exported from the checkpoint once "
                             "and cached beside it; 3-4x faster on the CPU), torch (PyTorch), or auto: onnx "
                             "when onnxruntime is installed and the device is the CPU (default %(default)s)")
    parser.add_argument("--bench", type=Path, metavar="DIR",
                        help="benchmark on the clips under DIR: latency wav -> label (median, p95 over up to "
                             f"{BENCH_MAX_CLIPS} clips, CPU, 1 thread) and batched throughput; last line "
                             f"JSON")
    return parser


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.paths and args.bench is None:
        parser.error("give at least one PATH (or --bench DIR)")
    options = Options(top_k=args.top_k, threshold=args.threshold, hop_s=args.hop, smooth_s=args.smooth,
                      refractory_s=args.refractory, gate_db=args.gate_db, max_seconds=args.max_seconds,
                      batch_size=args.batch_size)
    try:
        options.check()
    except ValueError as err:
        parser.error(str(err))
    predictor = Predictor(args.model, "cpu" if args.bench else args.device, engine=args.engine)
    try:
        options.check(predictor)
    except ValueError as err:
        parser.error(str(err))

    if args.bench is not None:
        result = bench(predictor, args.bench, args.batch_size)  # an unusable folder: InputError, exit 1
        for name in ("torch", "onnx"):
            figures = result[name]
            if figures is None:
                print(f"{name}: not measured (onnxruntime is not installed)")
                continue
            print(f"{name:>5}: latency wav -> label, {result['latency_clips']} clips, 1 thread: "
                  f"median {figures['median_ms']:.2f} ms, p95 {figures['p95_ms']:.2f} ms "
                  f"(decode {figures['decode_ms']:.2f} + render {figures['render_ms']:.2f} "
                  f"+ model {figures['model_ms']:.2f} ms; CPU time {figures['cpu_median_ms']:.2f} ms); "
                  f"{result['folder_clips']} clips in batches of {args.batch_size}: "
                  f"{figures['clips_per_s']:.1f} clips/s")
        print(json.dumps(result))
        return cli.EXIT_OK if result["failed"] == 0 else cli.EXIT_INPUT_FAILED

    answered = failed = 0
    scans: list[detect.Scan] = []
    for item in iter_predictions(predictor, args.paths, options, progress=True):
        if isinstance(item, Failure):
            tqdm.write(f"error: {item.message}", file=sys.stderr)
            failed += 1
            continue
        answered += 1
        if isinstance(item, detect.Scan) and args.plot is not None:
            scans.append(item)
        for line in [json.dumps(item.to_dict())] if args.json else item.to_lines():
            tqdm.write(line, file=sys.stdout)
    if args.plot is not None:
        if not scans:
            tqdm.write(f"error: {args.plot}: no timeline drawn: no input was longer than the model's "
                       f"{predictor.settings.duration} s window", file=sys.stderr)
            failed += 1
        for scan, out in zip(scans, plot_paths(args.plot, scans)):
            plot_timeline(scan, predictor.classes, out)
            print(f"timeline: {out}", file=sys.stderr)
    if failed or answered != 1:
        print(f"predict: {answered} answered, {failed} failed", file=sys.stderr)
    return cli.EXIT_INPUT_FAILED if failed or not answered else cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
