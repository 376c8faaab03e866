"""Peak memory of predict and preprocess on huge and awkward inputs (issue 11's targets).

    python -m bench.hostile [--minutes 30] [--work DIR]

Builds, in a temp folder: a MINUTES-long 48 kHz stereo 16-bit WAV (written in blocks), 1 s noise clips
at awkward and usual rates, and an untrained model (memory does not depend on the weights). Each
command runs in a fresh process whose peak RSS is read with resource.getrusage(RUSAGE_SELF) by
the process itself when the command ends (see peak_rss_mb). Targets: predict on the long recording <= 600 MB;
one preprocess worker (--workers 1: the worker's code in the main process) <= 300 MB; a 1 s clip at any
rate from 1 kHz to 192 kHz <= 1.1 x the peak of a 16 kHz clip. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from preprocess import cli
from bench.scale import children_by_parent, memory_kb

RATES = (1000, 4001, 8000, 8001, 11025, 22050, 44100, 44101, 48000, 96000, 96001, 192000)
BASELINE_RATE = 16000
TARGETS_MB = {"predict_long": 600, "preprocess_worker_long": 300}
RATE_RATIO_TARGET = 1.1

_MEASURE = """
import json, resource, runpy, sys
report, module = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
finally:
    # VmHWM: the peak of this program's own memory. ru_maxrss also keeps the peak of whatever ran in
    # this process before exec (a vfork-ed child inherits its parent's), so it reads high when the
    # caller is a large process such as a long pytest session
    try:
        with open("/proc/self/status") as status:
            peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(report, "w") as handle:
        json.dump({"self": peak,
                   "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, handle)
sys.exit(code)
"""


def peak_rss_mb(module: str, args: list[str], timeout: float = 600.0) -> tuple[int, float, float, str]:
    """Run `python -m module args` in a fresh process -> (exit status, its own peak RSS in MB, the peak
    RSS of the largest child it waited for (pool workers) in MB, stderr).

    The process reads its own peak (VmHWM, else getrusage(RUSAGE_SELF)) when the command ends (runpy), rather
    than a parent reading RUSAGE_CHILDREN: that would also count the `ldconfig -p` that ctypes starts
    at import time with vfork, which reports the whole parent's memory as its own (+130 MB).
    """
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        done = subprocess.run([sys.executable, "-c", _MEASURE, report.name, module, *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout)
        peaks = json.loads(Path(report.name).read_text())
    return done.returncode, peaks["self"] / 1024.0, peaks["children"] / 1024.0, done.stderr


def forked_worker_peaks_mb(module: str, args: list[str], timeout: float = 600.0,
                           interval: float = 0.05) -> tuple[int, dict[str, float]]:
    """Run `python -m module args` (a pool of forked workers) and sample its children's memory every
    `interval` s -> (exit status, the largest worker's peak {"rss", "pss", "uss"} in MB).

    A forked worker shares the parent's pages (torch's libraries and heap) copy-on-write, so its RSS
    counts memory that exists once for the whole pool; PSS charges each shared page in part and USS
    is what the worker alone holds: what one more worker costs."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peaks: dict[int, dict[str, int]] = {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            break
        for pid in children_by_parent().get(proc.pid, []):
            memory = memory_kb(pid)
            if memory:
                peak = peaks.setdefault(pid, dict.fromkeys(memory, 0))
                for key, value in memory.items():
                    peak[key] = max(peak[key], value)
        time.sleep(interval)
    worst = max(peaks.values(), key=lambda peak: peak["rss"], default={"rss": 0, "pss": 0, "uss": 0})
    return proc.returncode, {key: round(value / 1024.0, 1) for key, value in worst.items()}


def write_long_wav(path: Path, minutes: float, rate: int = 48000, channels: int = 2, seed: int = 0) -> None:
    """Quiet noise with a 0.4 s tone burst every 7 s, written 10 s at a time (bounded memory)."""
    rng = np.random.default_rng(seed)
    total, block = int(minutes * 60 * rate), 10 * rate
    with sf.SoundFile(path, "w", rate, channels, "PCM_16") as handle:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / rate
            burst = ((t % 7.0) < 0.4) * 0.3 * np.sin(2 * np.pi * 440 * t)
            mono = burst + 0.01 * rng.standard_normal(n)
            handle.write(np.repeat(mono[:, None], channels, axis=1).astype(np.float32))


def write_clip(path: Path, rate: int, seconds: float = 1.0, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(rate * seconds))).astype(np.float32), rate, subtype="PCM_16")


def write_model(path: Path) -> None:
    """An untrained default-arch checkpoint with the default render settings (for memory, not accuracy)."""
    from preprocess.render import RenderSettings
    from train.checkpoint import atomic_torch_save, make_checkpoint
    from train.models import DEFAULT_ARCH, build_model
    settings = RenderSettings()
    size = (settings.channels, *settings.image_size)
    atomic_torch_save(make_checkpoint(build_model(DEFAULT_ARCH, 2, size), DEFAULT_ARCH, ["no", "yes"], size,
                                      settings.to_dict()), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the long recording")
    parser.add_argument("--work", type=Path, help="keep the inputs here (default: a temp folder)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per command")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="specvision-hostile-") as tmp:
        work = args.work or Path(tmp)
        (work / "long" / "yes").mkdir(parents=True, exist_ok=True)
        (work / "short" / "yes").mkdir(parents=True, exist_ok=True)
        model = work / "model.pt"
        write_model(model)
        long_wav = work / "long" / "yes" / "recording.wav"
        if not long_wav.exists():
            write_long_wav(long_wav, args.minutes)
        write_clip(work / "short" / "yes" / "clip.wav", BASELINE_RATE)
        results: dict = {"minutes": args.minutes, "long_wav_mb": round(long_wav.stat().st_size / 2**20, 1)}

        def measure(name, module, command, timeout=args.timeout):
            start = time.perf_counter()
            code, mb, _, _ = peak_rss_mb(module, command, timeout)
            results[name] = {"peak_mb": round(mb, 1), "exit": code, "seconds": round(time.perf_counter() - start, 1)}
            print(f"{name:28s} peak RSS {mb:7.1f} MB  exit {code}  ({results[name]['seconds']} s)", flush=True)
            return mb

        predict = ["--model", str(model)]
        measure("predict_clip_16k", "train.predict", [*predict, str(work / "short" / "yes" / "clip.wav")])
        measure("predict_long", "train.predict", [*predict, str(long_wav)])
        prep = ["--source", "folder", "--workers", "1", "--quiet", "--val-pct", "0", "--test-pct", "0"]
        for folder in ("img_short", "img_long"):  # a fresh output folder: a re-run would skip the clip
            shutil.rmtree(work / folder, ignore_errors=True)
        measure("preprocess_worker_clip", "preprocess",
                [*prep, "--root", str(work / "short"), "--out", str(work / "img_short")])
        measure("preprocess_worker_long", "preprocess",
                [*prep, "--root", str(work / "long"), "--out", str(work / "img_long")])

        # The same file rendered by a real pool (2 forked workers, a 1 s clip beside it): what a
        # worker holds of its own, sampled from /proc while it runs
        (work / "pool" / "yes").mkdir(parents=True, exist_ok=True)
        for name, source in (("recording.wav", long_wav), ("clip.wav", work / "short" / "yes" / "clip.wav")):
            if not (work / "pool" / "yes" / name).exists():
                os.symlink(source.resolve(), work / "pool" / "yes" / name)
        shutil.rmtree(work / "img_pool", ignore_errors=True)
        start = time.perf_counter()
        code, peaks = forked_worker_peaks_mb(
            "preprocess", [*prep[:2], "--workers", "2", *prep[4:], "--root", str(work / "pool"),
                           "--out", str(work / "img_pool")], args.timeout)
        results["preprocess_forked_worker_long"] = {**{f"{key}_mb": value for key, value in peaks.items()},
                                                    "exit": code, "seconds": round(time.perf_counter() - start, 1)}
        print(f"{'preprocess_forked_worker':28s} peak RSS {peaks['rss']:7.1f} MB, PSS {peaks['pss']:.1f} MB, "
              f"USS {peaks['uss']:.1f} MB  exit {code}", flush=True)

        rates = {}
        for rate in (BASELINE_RATE, *RATES):
            clip = work / f"rate_{rate}.wav"
            write_clip(clip, rate)
            code, mb, _, _ = peak_rss_mb("train.predict", [*predict, str(clip)])
            rates[rate] = round(mb, 1)
            print(f"predict 1 s clip at {rate:6d} Hz  peak RSS {mb:7.1f} MB  exit {code}", flush=True)
        worst = max(rates, key=rates.get)
        results["rates_peak_mb"] = rates
        results["worst_rate"] = worst
        results["worst_rate_ratio"] = round(rates[worst] / rates[BASELINE_RATE], 3)
    met = {"predict_long": results["predict_long"]["peak_mb"] <= TARGETS_MB["predict_long"],
           "preprocess_worker_long": results["preprocess_worker_long"]["peak_mb"]
           <= TARGETS_MB["preprocess_worker_long"],
           "any_rate": results["worst_rate_ratio"] <= RATE_RATIO_TARGET}
    results["targets_met"] = met
    results["load_average"] = round(os.getloadavg()[0], 2)
    print(f"worst rate {worst} Hz: {results['worst_rate_ratio']}x the 16 kHz clip (target <= {RATE_RATIO_TARGET}x); "
          f"targets met: {met}")
    print(json.dumps(results))
    return cli.EXIT_OK if all(met.values()) else cli.EXIT_INPUT_FAILED


if __name__ == "__main__":
    cli.run(main)
