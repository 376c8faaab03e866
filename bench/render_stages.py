"""python -m bench.render_stages ROOT [--clips N]: CPU milliseconds per clip of each stage of the
render path, in the order prepare.render_task runs them, on N clips spread over ROOT's word folders.

One process, one torch thread (as in a pool worker), thread CPU time (time.thread_time) per stage,
so the figures hold on a busy machine better than wall time; PNGs go to a temporary folder. The steps
are the functions render_task calls, taken apart only to time each: read and hash, decode (and
resample), fit, spectrogram + dB, levels, image, flags record, PNG encode, atomic write.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from preprocess import cli, flags, prepare
from preprocess import render as R


def clips_of(root: Path, count: int) -> list[str]:
    files = sorted(str(p) for p in root.glob("*/*.wav") if not p.parent.name.startswith("_"))
    return files[::max(1, len(files) // count)][:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.render_stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a folder of <word>/<clip>.wav (a Speech Commands layout)")
    parser.add_argument("--clips", type=int, default=1000, help="clips to time (default 1000)")
    args = parser.parse_args(argv)
    files = clips_of(args.root, args.clips)
    if not files:
        parser.error(f"no <word>/*.wav under {args.root}")
    settings = R.RenderSettings()
    with tempfile.TemporaryDirectory(prefix="render_stages.") as out:
        prepare._init_worker(settings, Path(out) / "staging")
        for path in files[:20]:  # warm-up: lazy initialisation is not a per-clip cost
            R.render_file(path, settings)
        totals: dict[str, float] = {}
        start = time.thread_time()
        for i, path in enumerate(files):
            clock = [time.thread_time()]

            def lap(name: str) -> None:
                now = time.thread_time()
                totals[name] = totals.get(name, 0.0) + now - clock[0]
                clock[0] = now
            data, sha = prepare.read_and_hash(path)
            lap("read + SHA-256")
            wave, _ = R.decode_clip(path, settings, data)
            lap("decode + resample")
            window = R.fit_length(wave, settings.num_samples)
            lap("fit_length")
            matrix = R.feature_matrix(window, settings)
            lap("spectrogram + dB")
            image = R.to_image(R.to_levels(matrix, settings), settings)
            lap("levels + PIL image")
            record = flags.clip_record(wave, image, settings, len(wave))
            lap("flags.clip_record")
            png = R.encode_png(image, {"source": path, "sha256": sha, **record})
            lap("PNG encode")
            R.atomic_write_bytes(os.path.join(out, f"{i}.png"), png, prepare._staging)
            lap("atomic write")
        total = time.thread_time() - start
    for name, seconds in totals.items():
        print(f"{name:26s} {1000 * seconds / len(files):6.3f} ms")
    print(f"{'total':26s} {1000 * total / len(files):6.3f} ms per clip over {len(files)} clips "
          f"(torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    cli.run(main)
