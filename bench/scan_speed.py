"""How fast the long-recording scanner runs, per engine, on one core.

    python -m bench.scan_speed --model models/real/model.pt --clips ../shared/data/speech_commands_real [--minutes 60]

Makes a recording of `--minutes` (real clips one after another, each followed by a second of quiet
noise, repeated to the length; 16 kHz 16-bit WAV in a temporary folder), then scans it with
`train.predict.predict` (the command's path: streamed decode, every window rendered by the project's
render function, the energy gate, smoothing, detections) once per engine, 1 thread, engines
alternating over `--reps`. Prints seconds, x real time (recording seconds / wall seconds) and CPU
seconds per engine; the last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preprocess.render import load_audio  # noqa: E402
from train import engines, predict  # noqa: E402


def make_recording(clips: Path, settings, minutes: float, out: Path, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    files = sorted(p for p in clips.rglob("*.wav") if not any(part.startswith("_") for part in p.relative_to(clips).parts))
    waves = [load_audio(f, settings) for f in files[:: max(1, len(files) // 200)]]
    total = int(minutes * 60 * settings.sample_rate)
    with sf.SoundFile(out, "w", settings.sample_rate, 1, subtype="PCM_16") as handle:
        written, i = 0, 0
        while written < total:
            gap = (10 ** (-50 / 20) * rng.standard_normal(settings.sample_rate)).astype(np.float32)
            part = np.concatenate([waves[i % len(waves)], gap])[: total - written]
            handle.write(part)
            written += len(part)
            i += 1
    return total / settings.sample_rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scan_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--clips", required=True, type=Path, help="folder of short clips (class folders)")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--hop", type=float, default=None,
                        help="seconds between windows (default: the model's own, as predict uses)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = ["torch"] + (["onnx"] if engines.onnxruntime_available() else [])
    predictors = {name: predict.Predictor(args.model, engine=name, threads=1) for name in names}
    settings = predictors["torch"].settings
    runs = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="scan-speed-") as work:
        recording = Path(work) / "long.wav"
        seconds = make_recording(args.clips, settings, args.minutes, recording)
        detections = {}
        for rep in range(args.reps):
            for name in names if rep % 2 == 0 else names[::-1]:
                cpu, start = time.process_time(), time.perf_counter()
                results = predict.predict([recording], predictors[name], predict.Options(hop_s=args.hop))
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                assert not results.failures, results.failures
                scan = results.answers[0]
                detections[name] = [(d.label, round(d.time, 2)) for d in scan.detections]
                runs[name].append((wall, cpu, len(scan.starts_s)))
                print(f"{name:>5}: {seconds:.0f} s of audio, {len(scan.starts_s)} windows in {wall:.1f} s "
                      f"({seconds / wall:.0f}x real time; CPU {cpu:.1f} s), {len(scan.detections)} detections",
                      flush=True)
    result = {"recording_s": seconds, "threads": 1, "hop_s": args.hop or predictors["torch"].default_hop_s()}
    for name in names:
        wall = float(np.median([r[0] for r in runs[name]]))
        cpu = float(np.median([r[1] for r in runs[name]]))
        result[name] = {"seconds": round(wall, 2), "x_real_time": round(seconds / wall, 1),
                        "x_real_time_cpu": round(seconds / cpu, 1), "windows": runs[name][0][2]}
    if len(names) == 2:
        result["same_detections"] = detections["torch"] == detections["onnx"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
