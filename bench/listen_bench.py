"""Live listening, measured (docs/benchmarks.md, "Live listening"):

    .venv/bin/python bench/listen_bench.py --model models/demo/model.pt [--minutes 10] [--realtime-minutes 3]

1. Parity: a recording of `--minutes` with a word every WORD_EVERY_S seconds (the demo's synthetic
   yes / no / other words, laid into quiet noise with louder noise bursts between them), scanned
   by detect.scan_file and by the stream (train.stream.StreamScanner, fed in 20 ms blocks like a
   sound card). Each file detection is paired with a stream detection of the same word within one
   hop; the unpaired ones on either side are counted.
2. Latency and CPU: the first `--realtime-minutes` of it played to `python -m train.listen --model M
   FILE --realtime --json` (a subprocess, as a user runs it). Latency: wall time a detection line is
   read minus the wall time the word's end was fed (the audio time of the end of the word's last
   frame above its peak - 30 dB, from the moment feeding began). CPU: the process's user + system
   time between the start of feeding and its exit, over the wall time (share of one core).

Words are taken from the demo's synthetic clips (data/demo_synth, made by `make demo`) or any folder
of class folders (--words-dir). The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from train import detect  # noqa: E402
from train.predict import Predictor  # noqa: E402
from train.stream import StreamScanner  # noqa: E402

WORD_EVERY_S = 3.0
NOISE_DB = -55.0
BURST_DB = -35.0
END_BELOW_PEAK_DB = 30.0


def word_bounds(clip: np.ndarray, rate: int) -> tuple[float, float]:
    """Start and end (s) of the part of a clip within END_BELOW_PEAK_DB of its loudest frame."""
    levels = detect.frame_levels_db(clip, rate)
    loud = np.flatnonzero(levels >= levels.max() - END_BELOW_PEAK_DB)
    return loud[0] * detect.FRAME_HOP_S, loud[-1] * detect.FRAME_HOP_S + detect.FRAME_S


def build(words_dir: Path, predictor: Predictor, minutes: float, seed: int = 0):
    """-> (wave, truth [(label, start s, end s)]) with targets and other words in turn."""
    rate = predictor.settings.sample_rate
    rng = np.random.default_rng(seed)
    targets = [t for t in predictor.targets]
    pools = {label: sorted((words_dir / label).glob("*.wav")) for label in targets}
    others = sorted(p for d in words_dir.iterdir() if d.is_dir() and d.name not in targets
                    and not d.name.startswith("_") for p in d.glob("*.wav"))
    if not all(pools.values()):
        raise SystemExit(f"{words_dir}: needs a folder of clips for each of {targets}")
    wave = (rng.standard_normal(int(minutes * 60 * rate)) * 10 ** (NOISE_DB / 20)).astype(np.float32)
    truth, t, k = [], 1.5, 0
    while t + 2.0 < minutes * 60:
        if k % 4 == 3 and others:  # every fourth slot: another word (must not fire) or a noise burst
            if k % 8 == 3:
                path = others[int(rng.integers(len(others)))]
                clip, _ = sf.read(path, dtype="float32")
            else:
                clip = (rng.standard_normal(int(0.6 * rate)) * 10 ** (BURST_DB / 20)).astype(np.float32)
            label = None
        else:
            label = targets[k % len(targets)] if k % 4 != 3 else targets[0]
            path = pools[label][int(rng.integers(len(pools[label])))]
            clip, clip_rate = sf.read(path, dtype="float32")
            assert clip_rate == rate and clip.ndim == 1, path
        at = int(t * rate)
        clip = clip[:len(wave) - at]
        wave[at:at + len(clip)] += clip
        if label is not None:
            start, end = word_bounds(clip, rate)
            truth.append((label, t + start, t + end))
        t += WORD_EVERY_S + float(rng.uniform(-0.5, 0.5))
        k += 1
    return wave, truth


def pair(a: list, b: list, tolerance: float) -> tuple[int, list, list]:
    """Greedy in time: -> (pairs of the same label within tolerance, unpaired of a, unpaired of b)."""
    left, right, paired = list(a), list(b), 0
    for x in a:
        match = next((y for y in right if y.label == x.label and abs(y.time - x.time) <= tolerance), None)
        if match is not None:
            right.remove(match)
            left.remove(x)
            paired += 1
    return paired, left, right


def hits(found: list, truth: list, tolerance: float = 0.25) -> list[tuple[object, tuple]]:
    """(detection, word) for each detection on a word of its label (time within the word +- tolerance)."""
    out, free = [], list(truth)
    for d in found:
        word = next((w for w in free if w[0] == d.label and w[1] - tolerance <= d.time <= w[2] + tolerance), None)
        if word is not None:
            free.remove(word)
            out.append((d, word))
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parity(predictor: Predictor, path: Path, wave: np.ndarray, truth: list, result: dict, minutes: float) -> None:
    rate = predictor.settings.sample_rate
    started = time.process_time()
    offline = detect.scan_file(predictor, path).detections
    file_cpu = time.process_time() - started
    scanner, live, block = StreamScanner(predictor), [], int(0.02 * rate)
    started = time.process_time()
    heard_at = {}  # detection -> stream time when push() returned it (the audio it needed)
    for at in range(0, len(wave), block):
        for d in scanner.push(wave[at:at + block]):
            heard_at[id(d)] = scanner.seconds
            live.append(d)
    live += scanner.finish()
    stream_cpu = time.process_time() - started
    lags = [heard_at[id(d)] - word[2] for d, word in hits(live, truth) if id(d) in heard_at]
    result.update({"audio_lag_median_ms": round(1000 * float(np.median(lags)), 1),
                   "audio_lag_p90_ms": round(1000 * float(np.percentile(lags, 90)), 1),
                   "stream_cpu_ms_per_window": round(1000 * stream_cpu / max(1, scanner.windows), 2)})
    hop = scanner.hop_s
    paired, file_only, stream_only = pair(offline, live, hop)
    result.update({"hop_s": hop, "file_detections": len(offline), "stream_detections": len(live),
                   "paired_within_one_hop": paired, "file_only": [d.to_dict() for d in file_only],
                   "stream_only": [d.to_dict() for d in stream_only],
                   "file_recall": round(len(hits(offline, truth)) / len(truth), 3),
                   "stream_recall": round(len(hits(live, truth)) / len(truth), 3),
                   "file_cpu_s": round(file_cpu, 1), "stream_cpu_s": round(stream_cpu, 1)})
    print(f"parity over {minutes:g} min, {len(truth)} words: file {len(offline)} detections, stream "
          f"{len(live)}, paired (same word, within one hop = {hop} s) {paired}; file only {len(file_only)}, "
          f"stream only {len(stream_only)}; recall file {result['file_recall']}, stream "
          f"{result['stream_recall']}", flush=True)
    print(f"audio a word's detection needs after the word's end (in 20 ms blocks): median "
          f"{result['audio_lag_median_ms']} ms, p90 {result['audio_lag_p90_ms']} ms; stream CPU "
          f"{result['stream_cpu_ms_per_window']} ms per window (file scan {1000 * file_cpu / max(1, scanner.windows):.2f})",
          flush=True)



def realtime_run(model: Path, path: Path, seconds: float, truth: list) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "train.listen", "--model", str(model), str(path),
                                "--realtime", "--json", "--no-meter"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=REPO, env=env, text=True, bufsize=1)
    banner = process.stderr.readline()  # printed just before the first block is read
    fed_from, cpu_from = time.perf_counter(), cpu_seconds(process.pid)
    lines, cpu_to, wall_to = [], cpu_from, fed_from
    for line in process.stdout:
        lines.append((time.perf_counter(), json.loads(line)))
        cpu_to, wall_to = cpu_seconds(process.pid), time.perf_counter()
    while process.poll() is None:  # the end: its last samples before it exits
        try:
            cpu_to, wall_to = cpu_seconds(process.pid), time.perf_counter()
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.05)
    err = process.stderr.read()
    assert process.returncode == 0, banner + err

    class Found:
        def __init__(self, d):
            self.label, self.time, self.confidence = d["label"], d["time"], d["confidence"]

    found = [(wall, Found(d)) for wall, d in lines]
    matched = hits([f for _, f in found], [w for w in truth if w[2] < seconds])
    wall_of = {id(f): wall for wall, f in found}
    latencies = [wall_of[id(d)] - fed_from - word[2] for d, word in matched]
    return {"banner": banner.strip(), "detections": len(found), "words": int(sum(w[2] < seconds for w in truth)),
            "found_words": len(matched),
            "latency_median_ms": round(1000 * float(np.median(latencies)), 1) if latencies else None,
            "latency_p90_ms": round(1000 * float(np.percentile(latencies, 90)), 1) if latencies else None,
            "latency_max_ms": round(1000 * float(np.max(latencies)), 1) if latencies else None,
            "cpu_share": round(float(cpu_to - cpu_from) / max(wall_to - fed_from, 1e-9), 4),
            "wall_s": round(wall_to - fed_from, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models/demo/model.pt")
    parser.add_argument("--words-dir", type=Path, default=REPO / "data/demo_synth")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--realtime-minutes", type=float, default=3.0)
    parser.add_argument("--skip-parity", action="store_true", help="only the real-time run")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)
    predictor = Predictor(args.model)
    rate = predictor.settings.sample_rate
    wave, truth = build(args.words_dir, predictor, args.minutes)
    result = {"model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model),
              "classes": predictor.classes, "minutes": args.minutes, "words": len(truth),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
                         f"{os.getloadavg()[0]:.2f}"}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "words.wav"
        sf.write(path, wave, rate, subtype="PCM_16")
        wave = sf.read(path, dtype="float32")[0]  # what the file holds

        if not args.skip_parity:
            parity(predictor, path, wave, truth, result, args.minutes)
        seconds = args.realtime_minutes * 60
        if seconds <= 0:
            print(json.dumps(result))
            return 0
        short = Path(folder) / "short.wav"
        sf.write(short, wave[:int(seconds * rate)], rate, subtype="PCM_16")
        live_run = realtime_run(args.model, short, seconds, truth)
        result["realtime"] = live_run
        print(f"real time, {args.realtime_minutes:g} min: {live_run['found_words']}/{live_run['words']} words "
              f"printed; latency end of word -> printed detection: median {live_run['latency_median_ms']} ms, "
              f"p90 {live_run['latency_p90_ms']} ms, max {live_run['latency_max_ms']} ms; CPU "
              f"{100 * live_run['cpu_share']:.1f} % of one core", flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
