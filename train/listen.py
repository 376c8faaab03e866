"""Listen: keyword spotting on live audio, printing each word as it is spoken.

    python -m train.listen --model models/demo/model.pt                  # the default microphone
    python -m train.listen --model models/demo/model.pt --device 3       # another input (--list-devices)
    arecord -f S16_LE -r 16000 -c 1 | python -m train.listen --model M - --rate 16000 --json
    python -m train.listen --model M recording.wav --realtime            # a file, played at real time

The scanner is train.predict's (train.stream.StreamScanner: the same windows, render, smoothing,
gate and threshold), run on a bounded history of the stream. Output: one line per detection on
stdout as it happens (`--json`: one object per line with label, confidence, start, end and time in
seconds of stream time); on a terminal, a level meter and the last label on stderr. Ctrl-C stops
with a summary (exit 0 for a microphone, whose end it is; 130 for a file or stdin cut short).
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from preprocess import cli
from preprocess.cli import SpecVisionError
from preprocess.render import MAX_AUDIO_SECONDS, AudioError, audio_blocks, open_audio
from train import detect
from train.checkpoint import CheckpointError
from train.stream import Resampler, StreamScanner, pcm16_to_float

READ_BYTES = 1 << 14          # stdin: read what has arrived, up to this much, at a time
REALTIME_BLOCK_S = 0.02       # a file at real time is fed in blocks of this length (a sound card's)
FILE_BLOCK_S = 1.0            # ... and as fast as it decodes in blocks of this length
MIC_BLOCK_S = 0.02
MIC_STALL_S = 5.0             # a microphone that delivers nothing for this long has stopped
METER_INTERVAL_S = 0.1


class SourceError(SpecVisionError):
    """The audio source cannot be opened (exit 2) or stopped delivering (exit 1)."""


# ---------------------------------------------------------------- sources: blocks at their own rate

def stdin_blocks(rate: int) -> Iterator[np.ndarray]:
    """Raw 16-bit little-endian mono PCM on stdin, yielded as it arrives (until end of stream)."""
    fd = sys.stdin.buffer.fileno()
    left = b""
    while True:
        chunk = os.read(fd, READ_BYTES)
        if not chunk:
            break
        data = left + chunk
        usable = len(data) - len(data) % 2
        left = data[usable:]
        if usable:
            yield pcm16_to_float(data[:usable])


def file_blocks(path: Path, settings, realtime: bool, max_seconds: float) -> Iterator[np.ndarray]:
    """A file's blocks at the model's rate, decoded and resampled as train.predict's scan_file does
    (preprocess.render.audio_blocks); with `realtime`, paced to the wall clock."""
    handle = open_audio(path, None, max_seconds)  # header checks here, before anything is printed
    rate = settings.sample_rate

    def blocks():
        start, fed = time.perf_counter(), 0
        with handle:
            for block in audio_blocks(handle, path, settings, REALTIME_BLOCK_S if realtime else FILE_BLOCK_S):
                if realtime:
                    delay = start + (fed + len(block)) / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                fed += len(block)
                yield block

    return blocks()


def import_sounddevice():
    """sounddevice, or a SourceError saying what to install (the module, or PortAudio under it)."""
    try:
        import sounddevice
    except ImportError:
        raise SourceError("the microphone needs the Python package sounddevice (pip install sounddevice)") from None
    except OSError as err:  # sounddevice is there but the PortAudio library is not
        raise SourceError(f"the microphone needs the PortAudio library ({err}); install it "
                          f"(Debian/Ubuntu: apt-get install libportaudio2)") from None
    return sounddevice


def parse_device(text: str | None):
    return int(text) if text is not None and text.strip().lstrip("-").isdigit() else text


def microphone_blocks(device, rate: int | None) -> tuple[int, Iterator[np.ndarray], str]:
    """(rate, blocks, name) of an input device through PortAudio, opened here (errors: exit 2)."""
    sd = import_sounddevice()
    try:
        info = sd.query_devices(device, kind="input")
        rate = int(rate or info["default_samplerate"])
        audio: queue.Queue = queue.Queue(maxsize=int(60 / MIC_BLOCK_S))  # a minute; older blocks dropped
        dropped = [0]

        def callback(data, frames, when, status):
            try:
                audio.put_nowait(data[:, 0].copy())
            except queue.Full:
                dropped[0] += 1

        stream = sd.InputStream(device=device, channels=1, samplerate=rate, dtype="float32",
                                blocksize=int(rate * MIC_BLOCK_S), callback=callback)
        stream.start()
    except (sd.PortAudioError, ValueError, TypeError) as err:
        what = "the default microphone" if device is None else f"--device {device}"
        raise SourceError(f"cannot open {what}: {err}; see `python -m train.listen --list-devices`") from None

    def blocks():
        with stream:
            while True:
                try:
                    block = audio.get(timeout=MIC_STALL_S)
                except queue.Empty:
                    raise SourceError(f"{info['name']}: no audio for {MIC_STALL_S:g} s; the device stopped "
                                      f"delivering", exit_code=cli.EXIT_INPUT_FAILED) from None
                yield block

    return rate, blocks(), info["name"]


def list_devices() -> str:
    sd = import_sounddevice()
    try:
        return str(sd.query_devices())
    except sd.PortAudioError as err:
        raise SourceError(f"cannot list audio devices: {err}") from None


# ---------------------------------------------------------------- output

class Display:
    """Detections on stdout; a level meter and the last label on stderr when it is a terminal."""

    def __init__(self, as_json: bool, meter: bool):
        self.as_json, self.meter = as_json, meter
        self.last_meter = 0.0
        self.last_label = ""
        self.shown = False

    def detection(self, found: detect.Detection) -> None:
        self._clear()
        if self.as_json:
            line = json.dumps(found.to_dict())
        else:
            line = (f"{found.time:9.2f} s  {found.label}  {found.confidence:.3f}  "
                    f"({found.start:.2f}-{found.end:.2f} s)")
        print(line, flush=True)
        self.last_label = f"{found.label} {found.confidence:.2f} at {found.time:.1f} s"

    def level(self, scanner: StreamScanner) -> None:
        now = time.monotonic()
        if not self.meter or scanner.last is None or now - self.last_meter < METER_INTERVAL_S:
            return
        self.last_meter = now
        db = scanner.last.level_db
        bar = "#" * int(np.clip((db + 60) / 60 * 30, 0, 30))
        sys.stderr.write(f"\r{scanner.seconds:8.1f} s  {bar:<30} {db:6.1f} dBFS  last: {self.last_label or '-'}\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def _clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False

    def summary(self, scanner: StreamScanner, how: str) -> None:
        self._clear()
        counts = ", ".join(f"{label} {n}" for label, n in sorted(scanner.counts.items())) or "none"
        print(f"listen: {how} after {scanner.seconds:.1f} s of audio: {sum(scanner.counts.values())} "
              f"detection(s) ({counts})", file=sys.stderr)


# ---------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.listen",
        description="Spot words in live audio with a model trained by `python -m train`: the default "
                    "microphone, another input device, raw PCM on stdin or a file. The same scanner as "
                    "`python -m train.predict` on a long recording (windows every --hop, posteriors "
                    "averaged over --smooth, --threshold, --refractory, energy gate), each word printed "
                    "as soon as its averaged posterior crosses the threshold.",
        epilog="Output: one line per detection on stdout (`time s  label  confidence  (start-end s)`, "
               "or one JSON object with --json); a level meter on stderr when it is a terminal; a summary "
               "on stderr at the end. Exit status 0 at the end of the stream (or Ctrl-C on a "
               "microphone), 1 when the source failed midway, 2 when the model or the source cannot be "
               "used, 130 for Ctrl-C on a file or stdin.")
    parser.add_argument("source", nargs="?", metavar="SOURCE",
                        help="absent: the microphone (--device); '-': raw 16-bit little-endian mono PCM on "
                             "stdin at --rate; else an audio file (.wav .flac .ogg .mp3)")
    parser.add_argument("--model", help="models/NAME/model.pt written by `python -m train`")
    parser.add_argument("--device", metavar="N",
                        help="input device number or name for the microphone (see --list-devices; "
                             "default: the system's default input)")
    parser.add_argument("--list-devices", action="store_true", help="list the audio devices and exit")
    parser.add_argument("--rate", type=int, default=None,
                        help="sample rate of stdin PCM (default: the model's), or of the microphone "
                             "(default: the device's); resampled to the model's rate")
    parser.add_argument("--realtime", action="store_true",
                        help="a file: feed it at real time (like a microphone) instead of as fast as "
                             "it decodes")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per detection: label, confidence, start, end, time "
                             "(seconds of stream time)")
    parser.add_argument("--threshold", type=float, default=detect.DEFAULT_THRESHOLD,
                        help="smoothed confidence a word needs (default %(default)s)")
    parser.add_argument("--hop", type=float, default=None,
                        help=f"seconds between windows (default: {detect.HOP_WITH_SILENCE_S} for a model "
                             f"with a 'silence' class, else {detect.DEFAULT_HOP_S})")
    parser.add_argument("--smooth", type=float, default=detect.DEFAULT_SMOOTH_S,
                        help="seconds of posterior averaging (default %(default)s)")
    parser.add_argument("--refractory", type=float, default=detect.DEFAULT_REFRACTORY_S,
                        help="detections closer than this are one word (default %(default)s)")
    parser.add_argument("--gate-db", type=float, default=None,
                        help="energy gate in dB above the local noise floor; 0: off (default: the "
                             "model's, as in train.predict)")
    cli.add_max_seconds_flag(parser, MAX_AUDIO_SECONDS)
    parser.add_argument("--no-meter", action="store_true", help="no level meter even on a terminal")
    return parser


def check_options(parser: argparse.ArgumentParser, args) -> None:
    if args.list_devices:
        return
    if not args.model:
        parser.error("--model is required")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be between 0 and 1")
    if (args.hop is not None and args.hop <= 0) or args.smooth < 0 or args.refractory < 0:
        parser.error("--hop must be > 0, --smooth and --refractory >= 0")
    if args.rate is not None and not 1000 <= args.rate <= 384000:
        parser.error("--rate must be between 1000 and 384000 Hz")
    if args.source is not None and args.source != "-" and args.device is not None:
        parser.error("--device is for the microphone; give no SOURCE with it")
    if args.realtime and (args.source is None or args.source == "-"):
        parser.error("--realtime is for a file SOURCE (a microphone and stdin are real time already)")


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_options(parser, args)
    if args.list_devices:
        print(list_devices())
        return cli.EXIT_OK
    from train.predict import Predictor
    import torch
    torch.set_num_threads(1)  # one window at a time: a second thread buys nothing and costs CPU
    try:
        predictor = Predictor(args.model, "cpu")
    except CheckpointError as err:
        raise SpecVisionError(str(err)) from None
    if args.hop is not None and args.hop > predictor.settings.duration:
        parser.error(f"--hop {args.hop} is longer than the model's window ({predictor.settings.duration} s)")
    model_rate = predictor.settings.sample_rate

    microphone = args.source is None
    if args.source == "-":
        rate, blocks, name = args.rate or model_rate, stdin_blocks(args.rate or model_rate), "stdin"
    elif microphone:
        rate, blocks, name = microphone_blocks(parse_device(args.device), args.rate)
    else:
        path = Path(args.source)
        if not path.is_file():
            raise SpecVisionError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
        if args.rate is not None:
            parser.error("--rate is for stdin or the microphone; a file's header gives its rate")
        try:
            rate, blocks = model_rate, file_blocks(path, predictor.settings, args.realtime, args.max_seconds)
        except AudioError as err:
            raise SpecVisionError(str(err)) from None
        name = str(path)

    scanner = StreamScanner(predictor, hop_s=args.hop, smooth_s=args.smooth, threshold=args.threshold,
                            refractory_s=args.refractory, gate_db=args.gate_db)
    resample = Resampler(rate, model_rate)
    display = Display(args.json, sys.stderr.isatty() and not args.no_meter)
    print(f"listen: {name} at {rate} Hz -> {predictor.classes} (model rate {model_rate} Hz, hop "
          f"{scanner.hop_s:g} s); Ctrl-C to stop", file=sys.stderr)
    try:
        for block in blocks:
            for found in scanner.push(resample(block)):
                display.detection(found)
            display.level(scanner)
        for found in scanner.push(resample(np.zeros(0, np.float32), last=True)) + scanner.finish():
            display.detection(found)
    except KeyboardInterrupt:
        display.summary(scanner, "stopped")
        return cli.EXIT_OK if microphone else cli.EXIT_INTERRUPTED
    except AudioError as err:  # a file found corrupt midway
        display.summary(scanner, "failed")
        raise SpecVisionError(str(err), exit_code=cli.EXIT_INPUT_FAILED) from None
    except SourceError:
        display.summary(scanner, "failed")
        raise
    display.summary(scanner, "end of stream")
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
