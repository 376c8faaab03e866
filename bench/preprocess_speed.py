"""python -m bench.preprocess_speed DIR: clips/s of this project's preprocess vs the learning module's method.

Both render the same clips (DIR/<class>/*) in one run, into throw-away folders:
- project: `python -m preprocess --source folder` end to end (listing, hashing, rendering, PNGs with
  metadata, manifest) with all cores (--workers), timed from the call to its return;
- baseline: the module's notebook loop in one process, per clip: decode,
  `torchaudio.transforms.Spectrogram()`, `plt.figure()`, `plt.imsave(spec.log2()[0].numpy(), cmap="viridis")`.
  Decoding uses soundfile, as the project does (torchaudio.load needs FFmpeg), and torch runs on 1
  thread, the fastest setting for it.
The last line printed is one JSON object:
{"clips", "project_clips_per_s", "baseline_clips_per_s", "speedup"}.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path

from preprocess import cli
from preprocess import prepare, sources


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool workers): load-independent context."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_project(root: Path, out: Path, workers: int) -> float:
    start = time.perf_counter()
    code = prepare.main(["--source", "folder", "--root", str(root), "--out", str(out),
                         "--workers", str(workers), "--quiet"])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"preprocess failed (exit {code})")
    return seconds


def run_baseline(clips: list[sources.Clip], out: Path) -> float:
    """The learning module's loop, one clip after another in this process."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf
    import torch
    import torchaudio

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # its best setting for tiny FFTs (more threads only wait on a busy machine)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log2(0) = -inf in silent bins, as in the notebook
        for clip in clips:
            data, _ = sf.read(str(clip.path), dtype="float32", always_2d=True)
            waveform = torch.from_numpy(data.T.copy())  # channels x samples, as torchaudio.load gives
            spectrogram = torchaudio.transforms.Spectrogram()(waveform)
            target = out / clip.label / f"{Path(clip.source).stem}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            figure = plt.figure()  # the notebook opens a figure per clip (it never closes them; we do)
            plt.imsave(target, spectrogram.log2()[0].numpy(), cmap="viridis")
            plt.close(figure)
    seconds = time.perf_counter() - start
    torch.set_num_threads(threads)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preprocess_speed", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("root", type=Path,
                        help="audio root with class folders (e.g. ../shared/data/speech_commands_real)")
    cli.add_workers_flag(parser, "processes for the project run")
    args = parser.parse_args(argv)

    clips = sources.folder_clips(args.root)
    for clip in clips:  # both runs then read the audio from the page cache
        clip.path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="specvision-bench-") as tmp:
        # Project first: its worker pool forks before this process has run any torch code.
        # Each run starts with the disk's write-back done (os.sync): pending write-back makes file
        # creation dearer (on ext4 without a journal, inodes deleted in the last 300 s instead of 60 s
        # are skipped, one by one, on every create; see docs/benchmarks.md).
        os.sync()
        cpu = cpu_seconds()
        project_s = run_project(args.root, Path(tmp) / "project", args.workers)
        project_cpu = cpu_seconds() - cpu
        os.sync()
        baseline_s = run_baseline(clips, Path(tmp) / "baseline")
        baseline_cpu = cpu_seconds() - cpu - project_cpu
    n = len(clips)
    result = {"clips": n, "project_clips_per_s": round(n / project_s, 1),
              "baseline_clips_per_s": round(n / baseline_s, 1), "speedup": round(baseline_s / project_s, 2)}
    print(f"project ({args.workers} workers): {n} clips in {project_s:.2f} s = {n / project_s:.1f} clips/s "
          f"({1000 * project_cpu / n:.2f} ms CPU per clip)")
    print(f"baseline (1 process, matplotlib imsave): {n} clips in {baseline_s:.2f} s = "
          f"{n / baseline_s:.1f} clips/s ({1000 * baseline_cpu / n:.2f} ms CPU per clip)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {cli.available_cores()} cores")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    cli.run(main)
