"""python -m bench.render_ab --base OLD_TREE --root STANDIN --work DIR: render throughput of this
code beside another checkout's (e.g. `git archive <commit> | tar -x -C OLD_TREE`), same clips, same load.

Runs `python -m preprocess --source speechcommands` with each tree's code (cwd and PYTHONPATH set to
the tree: `python -m` puts the working directory first on sys.path), alternating `--reps` times,
each into a fresh output folder, and prints per run: clips/s after imports (the run's own clock),
CPU ms per clip (user + system of the whole process tree, less one no-op run's CPU: the interpreter
start, imports and listing), and the peak PSS of all processes together. Then it checks that the
two trees wrote the same PNG files byte for byte and the same manifest. The last line is one JSON
object: {"base": {...}, "this": {...}, "speedup_clips_per_s": .., "cpu_ratio": .., "identical": ..}.
"""
from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

from preprocess import cli
from bench.scale import ScaleError, module, parse_counts, run_stage

HERE = Path(__file__).resolve().parent.parent  # this tree's repository root


@contextlib.contextmanager
def code_of(tree: Path):
    """Children started inside run with `tree`'s preprocess package."""
    cwd, path = os.getcwd(), os.environ.get("PYTHONPATH")
    os.chdir(tree)
    os.environ["PYTHONPATH"] = str(tree)
    try:
        yield
    finally:
        os.chdir(cwd)
        if path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = path


def render(tree: Path, args: argparse.Namespace, out: Path, logs: Path, name: str) -> dict:
    argv = module("preprocess", "--source", "speechcommands", "--root", args.root.resolve(),
                  "--out", out, "--workers", args.workers, "--quiet",
                  *(["--words", *args.words] if args.words else []))
    with code_of(tree):
        measured = run_stage(name, argv, logs)
    counts = parse_counts(measured["log"])
    return {"clips": counts["clips"], "rendered": counts["rendered"], "seconds": counts["seconds"],
            "wall_s": measured["seconds"], "cpu_s": measured["cpu_s"],
            "peak_pss_total_mb": measured["peak_pss_total_mb"], "load_avg": os.getloadavg()[0]}


def same_output(a: Path, b: Path) -> bool:
    """Same PNG files, byte for byte, and the same manifest (the render record holds a time: left out)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*.png"))
    if files_a != files_b:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(p) for p in files_a] + ["manifest.csv"], shallow=False)
    return not mismatch and not errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.render_ab", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="the other checkout's repository root")
    parser.add_argument("--root", type=Path, required=True, help="a Speech Commands layout (stand-in)")
    parser.add_argument("--words", nargs="+", help="render only these words (default: preprocess's default)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (its outputs are replaced)")
    parser.add_argument("--workers", type=int, default=2, help="render processes per run (default 2)")
    parser.add_argument("--reps", type=int, default=2, help="runs per tree, alternating")
    args = parser.parse_args(argv)
    trees = {"base": args.base.resolve(), "this": HERE}
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {name: [] for name in trees}
    overhead: dict[str, float] = {}
    try:
        for rep in range(args.reps):
            for name, tree in trees.items():
                out = args.work / name
                shutil.rmtree(out, ignore_errors=True)
                run = render(tree, args, out, logs, f"{name}-{rep}")
                if name not in overhead:  # a no-op re-run: the CPU every run spends before and after rendering
                    overhead[name] = render(tree, args, out, logs, f"{name}-noop")["cpu_s"]
                run["cpu_ms_per_clip"] = 1000 * (run["cpu_s"] - overhead[name]) / max(run["rendered"], 1)
                run["clips_per_s"] = run["rendered"] / max(run["seconds"], 0.05)
                results[name].append(run)
                print(f"{name} run {rep}: {run['rendered']} clips, {run['clips_per_s']:.0f} clips/s after imports "
                      f"({run['seconds']:.1f} s; wall {run['wall_s']:.1f} s), {run['cpu_ms_per_clip']:.2f} ms CPU "
                      f"per clip, peak {run['peak_pss_total_mb']:.0f} MB PSS (all processes), "
                      f"load {run['load_avg']:.1f}", flush=True)
    except ScaleError as err:
        print(f"render_ab: {err}", file=sys.stderr)
        return 1
    identical = same_output(args.work / "base", args.work / "this")
    summary = {name: {key: round(statistics.median(r[key] for r in runs), 2)
                      for key in ("clips_per_s", "cpu_ms_per_clip", "peak_pss_total_mb", "seconds", "load_avg")}
               for name, runs in results.items()}
    summary["noop_cpu_s"] = {name: round(value, 2) for name, value in overhead.items()}
    summary["speedup_clips_per_s"] = round(summary["this"]["clips_per_s"] / summary["base"]["clips_per_s"], 2)
    summary["cpu_ratio"] = round(summary["this"]["cpu_ms_per_clip"] / summary["base"]["cpu_ms_per_clip"], 2)
    summary["identical"] = identical
    print("PNG files and manifest " + ("identical (byte for byte)" if identical else "DIFFER"))
    print(json.dumps(summary))
    return 0 if identical else 1


if __name__ == "__main__":
    cli.run(main)
