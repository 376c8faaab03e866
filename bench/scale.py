"""python -m bench.scale: every stage at several dataset sizes, timed, with peak memory.

    python -m bench.scale --sizes 1000 10000 105000 --work DIR

For each size it makes the Speech Commands stand-in (`python -m preprocess.synth --layout
speechcommands`, all 35 words, size / 35 clips per word) in DIR/<size>/speech_commands and runs, each
as its own process exactly as a user would type it:

    synth        the stand-in (clips already there from an earlier run are kept: then ~0 s)
    render       python -m preprocess --source speechcommands ... into a fresh DIR/<size>/images
    rerun        the same command again: nothing to do
    add          synth with --add more clips (35 x round(add / 35)), then render again:
                 add_rerendered must equal add_clips
    train        python -m train --epochs 1, without and with --cache
    evaluate     python -m train.evaluate on images/test
    predict      python -m train.predict on a folder of the test split's wavs
    report       python -m train.report

Per stage: wall seconds; peak RSS of the largest process (getrusage of the reaped child, which
includes its own children, e.g. render workers) and, sampled every SAMPLE_S, the peak of the summed
PSS of the whole process tree (PSS counts pages shared by forked workers once, so the sum is the
memory all processes together really hold). The last line is one JSON object keyed by size.

This driver imports nothing heavy (no torch): on Linux a child's peak RSS starts at its parent's
RSS when it was forked (the high-water mark survives exec), so a driver holding torch would add its
own ~600 MB to every stage's figure.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from preprocess import cli


DEFAULT_SIZES = [1000, 10000, 105000]
DEFAULT_ADD = 1000
SAMPLE_S = 0.25                  # memory sampling period of the process tree
LOG_TAIL = 2000                  # characters of a failed stage's log shown in the error


class ScaleError(Exception):
    """A stage failed; the message names it and shows the end of its log."""


# ---------------------------------------------------------------- measuring one process tree

def children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children[int(fields[1])].append(int(entry.name))
    return children


def memory_kb(pid: int) -> dict[str, int] | None:
    """{"rss", "pss", "uss"} of a live process in kB, from /proc/PID/smaps_rollup: resident pages, its
    share of shared ones (PSS), and its private ones (USS); None if it is gone or there is no rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            fields = {line.split(b":")[0]: int(line.split()[1]) for line in handle.readlines()[1:]}
    except (OSError, ValueError, IndexError):
        return None
    return {"rss": fields[b"Rss"], "pss": fields[b"Pss"],
            "uss": fields.get(b"Private_Clean", 0) + fields.get(b"Private_Dirty", 0)}


def _pss_kb(pid: int) -> int:
    """Proportional set size of a process in kB (its share of shared pages), 0 if it is gone."""
    memory = memory_kb(pid)
    if memory is not None:
        return memory["pss"]
    try:  # no smaps_rollup (old kernels): its resident size
        with open(f"/proc/{pid}/status", "rb") as handle:
            return next((int(line.split()[1]) for line in handle if line.startswith(b"VmRSS:")), 0)
    except OSError:
        return 0


def tree_pss_mb(root: int) -> float:
    children, total, stack = children_by_parent(), 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, ()))
        total += _pss_kb(pid)
    return total / 1024


def run_stage(name: str, argv: list[str], log_dir: Path) -> dict:
    """Run one command to the end: {"seconds", "cpu_s", "peak_rss_mb", "peak_pss_total_mb", "log"}.

    cpu_s (user + system time of the whole tree) is the figure to compare on a busy machine: wall
    time there mostly measures what the other programs take."""
    log = log_dir / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    peak_pss, done = [0.0], threading.Event()

    def sample():
        while not done.wait(SAMPLE_S):
            peak_pss[0] = max(peak_pss[0], tree_pss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # this child's usage, its reaped children included
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise ScaleError(f"stage {name} failed (exit {proc.returncode}): {' '.join(argv)}\n"
                         f"--- end of {log}:\n{text[-LOG_TAIL:]}")
    return {"seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "peak_pss_total_mb": peak_pss[0], "log": text}


# ---------------------------------------------------------------- the stages

def module(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", name, *map(str, args)]


def parse_counts(summary: str) -> dict:
    """'preprocess: N clips -> OUT: rendered R, up to date U, failed F, ... (S s)' -> counts and the
    run's own seconds (from after the imports to the summary)."""
    line = next(l for l in summary.splitlines() if l.startswith("preprocess:"))
    words = line.replace(",", "").split()
    return {"clips": int(words[1]), "rendered": int(words[words.index("rendered") + 1]),
            "up_to_date": int(words[words.index("date") + 1]), "failed": int(words[words.index("failed") + 1]),
            "seconds": float(line.rsplit("(", 1)[1].split()[0])}


def clip_files(audio: Path) -> set[Path]:
    """The stand-in's clips (not the noise recordings)."""
    if not audio.is_dir():
        return set()
    return {p for p in audio.glob("*/*.wav") if not p.parent.name.startswith("_")}


def standin_words() -> list[str]:
    """The 35 v0.02 words, asked of a child process (importing preprocess.standin loads torch)."""
    text = subprocess.run([sys.executable, "-c", "import json; from preprocess import standin; "
                           "print(json.dumps(standin.WORDS))"], capture_output=True, text=True, check=True)
    return json.loads(text.stdout)


def measure_size(size: int, args: argparse.Namespace, last_model: list[Path]) -> dict:
    """Every stage at one size. `last_model`: models trained so far in this run (appended to)."""
    words = args.words
    per_word = max(1, round(size / len(words)))
    add_per_word = max(1, round(args.add / len(words)))
    work = args.work / str(size)
    audio, images, logs = work / "speech_commands", work / "images", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # clips added by an earlier run's add stage would otherwise be rendered in the first render
    added_list = work / "added.txt"
    if added_list.is_file():
        for line in added_list.read_text().splitlines():
            (audio / line).unlink(missing_ok=True)
        added_list.unlink()
    for folder in (images, work / "model", work / "model_cache", work / "report", work / "test_wavs"):
        shutil.rmtree(folder, ignore_errors=True)

    result: dict = {"clips": per_word * len(words), "words": len(words), "load_avg_start": os.getloadavg()[0]}

    def stage(key: str, argv: list) -> dict:
        # after each stage: what is measured so far, so an interrupted run keeps its numbers
        (work / "result.json").write_text(json.dumps(result, indent=1))
        argv = [str(a) for a in argv]
        print(f"[{size}] {key}: {' '.join(argv[1:])}", flush=True)
        measured = run_stage(key, argv, logs)
        result[f"{key}_s"] = round(measured["seconds"], 2)
        result[f"{key}_cpu_s"] = round(measured["cpu_s"], 2)
        result[f"{key}_peak_rss_mb"] = round(measured["peak_rss_mb"], 1)
        result[f"{key}_peak_pss_total_mb"] = round(measured["peak_pss_total_mb"], 1)
        print(f"[{size}] {key}: {measured['seconds']:.1f} s ({measured['cpu_s']:.1f} s CPU), peak RSS {measured['peak_rss_mb']:.0f} MB "
              f"(largest process), {measured['peak_pss_total_mb']:.0f} MB PSS (all processes)", flush=True)
        return measured

    # eSpeak NG alone, as the figures in docs/benchmarks.md were made: this measures the stages' scaling
    synth_args = ["--layout", "speechcommands", "--words", *words, "--out", audio, "--seed", args.seed,
                  "--engine", "espeak", "--speaker-transform", "off",
                  "--quiet"] + (["--workers", args.workers] if args.workers else [])
    render = module("preprocess", "--source", "speechcommands", "--root", audio, "--words", *words,
                    "--out", images, "--quiet") + (["--workers", args.workers] if args.workers else [])

    # the fixed cost of every stage: a Python process importing what preprocess and train import
    stage("startup", [sys.executable, "-c", "import preprocess.prepare, train.train"])
    before = len(clip_files(audio))
    stage("synth", module("preprocess.synth", "--per-word", per_word, *synth_args))
    result["synth_clips_made"] = result["clips"] - before
    result["synth_clips_per_s"] = round(result["synth_clips_made"] / result["synth_s"], 1)

    counts = parse_counts(stage("render", render)["log"])
    if counts["clips"] != result["clips"]:
        raise ScaleError(f"render saw {counts['clips']} clips in {audio}, expected {result['clips']}")
    result["render_inner_s"] = counts["seconds"]  # without the interpreter's start and imports
    result["render_clips_per_s"] = round(counts["rendered"] / max(counts["seconds"], 0.05), 1)
    result["render_failed"] = counts["failed"]
    result["manifest_mb"] = round((images / "manifest.csv").stat().st_size / 2 ** 20, 2)

    counts = parse_counts(stage("rerun", render)["log"])
    result["rerun_rendered"] = counts["rendered"]
    result["rerun_inner_s"] = counts["seconds"]

    base = clip_files(audio)
    try:
        stage("synth_add", module("preprocess.synth", "--per-word", per_word + add_per_word, *synth_args))
    finally:  # what to take away again before the next run's first render
        added_list.write_text("".join(f"{p.relative_to(audio).as_posix()}\n"
                                      for p in sorted(clip_files(audio) - base)))
    result["add_clips"] = add_per_word * len(words)
    counts = parse_counts(stage("add", render)["log"])
    result["add_rerendered"] = counts["rendered"]
    result["add_inner_s"] = counts["seconds"]
    result["clips_after_add"] = counts["clips"]

    result["train_images"] = sum(1 for _ in (images / "train").rglob("*.png"))
    model_dir = work / "model"
    if args.train_sizes is None or size in args.train_sizes:
        train = module("train", "--images", images, "--epochs", 1, "--no-progress", "--seed", args.seed)
        for key, model, extra in (("train", model_dir, []), ("train_cache", work / "model_cache", ["--cache"])):
            stage(key, train + ["--out", model] + extra)
            metrics = json.loads((model / "metrics.json").read_text())
            result[f"{key}_img_per_s"] = round(metrics["train_images_per_s"], 1)
        last_model.append(model_dir)
    elif args.model is not None or last_model:  # inference stages with a model trained on another size
        model_dir = args.model.parent if args.model is not None else last_model[-1]
        result["model"] = str(model_dir / "model.pt")
    else:
        return result
    model_file = model_dir / "model.pt"
    evaluation = stage("evaluate", module("train.evaluate", "--model", model_file, "--images",
                                          images / "test", "--json"))
    scores = json.loads(evaluation["log"].strip().splitlines()[-1])
    result["evaluate_images"] = int(sum(sum(row) for row in scores["confusion"]))
    result["evaluate_accuracy"] = round(scores["accuracy"], 4)

    test_wavs = work / "test_wavs"  # hard links: a plain folder of the test split's clips
    for line in (audio / "testing_list.txt").read_text().splitlines():
        if line and (audio / line).is_file():
            (test_wavs / line).parent.mkdir(parents=True, exist_ok=True)
            os.link(audio / line, test_wavs / line)
    result["predict_clips"] = sum(1 for _ in test_wavs.rglob("*.wav"))
    stage("predict", module("train.predict", "--model", model_file, test_wavs))
    result["predict_clips_per_s"] = round(result["predict_clips"] / result["predict_s"], 1)

    stage("report", module("train.report", model_dir, "--out", work / "report", "--images", images))
    result["report_html_kb"] = round((work / "report" / "index.html").stat().st_size / 1024, 1)
    result["load_avg_end"] = os.getloadavg()[0]
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return result


# ---------------------------------------------------------------- the no-op re-run at any size, cheaply

def build_noop_probe(work: Path, size: int, words: list[str]) -> None:
    """A dataset whose no-op re-run can be timed at any size without synthesizing or rendering it:
    `size` EMPTY clip files in the Speech Commands layout (with lists), an empty PNG at each clip's
    image path and a manifest.csv and render.json saying they are all rendered. Empty files cannot
    be decoded, so the timed run also proves that a no-op re-run opens no clip: one read would fail.
    """
    import hashlib

    from preprocess import prepare, sources, standin
    from preprocess.render import RenderSettings

    audio, images = work / "speech_commands", work / "images"
    past = time.time_ns() - 3600 * 10 ** 9  # an hour old, as an extracted download's files are
    per_word = max(1, round(size / len(words)))
    relative = []
    for word in words:
        (audio / word).mkdir(parents=True, exist_ok=True)
        for index in range(per_word):
            speaker = hashlib.sha1(f"{word}:{index}".encode()).hexdigest()[:8]
            relative.append(f"{word}/{speaker}_nohash_0.wav")
            path = audio / relative[-1]
            path.touch()
            os.utime(path, ns=(past, past))
    standin.write_lists(audio, relative)
    clips = sources.speechcommands_clips(audio, words)
    names, _ = prepare.png_paths(clips)
    settings = RenderSettings()
    rows = []
    for clip, name in zip(clips, names):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (images / name).touch()
        stat = clip.path.stat()
        rows.append({"source": clip.source, "sha256": "0" * 64, "split": clip.split, "label": clip.label,
                     "png": name, "status": "ok", "reason": "", "size": str(stat.st_size),
                     "mtime_ns": str(stat.st_mtime_ns)})
    (images / prepare.RENDER_JSON).write_text(json.dumps(
        {"settings": settings.to_dict(), "settings_hash": settings.digest(),
         "source": {"kind": "speechcommands", "root": str(audio.resolve())}}, indent=2) + "\n")
    prepare.write_manifest(images / prepare.MANIFEST, rows)  # after the PNGs: newer than all of them


def measure_noop_probe(size: int, args: argparse.Namespace) -> dict:
    work = args.work / f"noop-{size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from bench.scale import "
                    "build_noop_probe; build_noop_probe(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])",
                    str(work), str(size), *args.words], check=True)
    result = {"clips": max(1, round(size / len(args.words))) * len(args.words),
              "build_s": round(time.perf_counter() - start, 1), "load_avg_start": os.getloadavg()[0]}
    argv = module("preprocess", "--source", "speechcommands", "--root", work / "speech_commands",
                  "--words", *args.words, "--out", work / "images", "--quiet")
    print(f"[noop-{size}] rerun: {' '.join(argv[1:6])} ...", flush=True)
    measured = run_stage("noop", argv, work)
    counts = parse_counts(measured["log"])
    if counts["rendered"] or counts["failed"] or counts["up_to_date"] != result["clips"]:
        raise ScaleError(f"the no-op probe was not a no-op: {counts}")
    result.update(rerun_s=round(measured["seconds"], 2), rerun_cpu_s=round(measured["cpu_s"], 2),
                  rerun_inner_s=counts["seconds"],
                  rerun_peak_rss_mb=round(measured["peak_rss_mb"], 1),
                  manifest_mb=round((work / "images" / "manifest.csv").stat().st_size / 2 ** 20, 2))
    print(f"[noop-{size}] {json.dumps(result)}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return result


# ---------------------------------------------------------------- output

TABLE = [("clips", "clips", "{:,}"), ("startup_s", "process start + imports s", "{:.1f}"),
         ("synth_s", "synth s", "{:.0f}"),
         ("render_s", "render s (wall)", "{:.1f}"), ("render_inner_s", "render s (after imports)", "{:.1f}"),
         ("render_clips_per_s", "render clips/s (after imports)", "{:.0f}"),
         ("render_peak_pss_total_mb", "render MB (all procs)", "{:.0f}"),
         ("rerun_s", "no-op re-run s (wall)", "{:.1f}"), ("rerun_inner_s", "no-op re-run s (after imports)", "{:.1f}"),
         ("add_clips", "clips added", "{}"), ("add_rerendered", "add: re-rendered", "{}"),
         ("add_s", "add s", "{:.1f}"), ("train_img_per_s", "train img/s", "{:.0f}"),
         ("train_peak_rss_mb", "train MB", "{:.0f}"), ("train_cache_img_per_s", "train --cache img/s", "{:.0f}"),
         ("train_cache_peak_rss_mb", "train --cache MB", "{:.0f}"), ("evaluate_s", "evaluate s", "{:.1f}"),
         ("predict_clips_per_s", "predict clips/s", "{:.0f}"), ("report_s", "report s", "{:.1f}")]


def table(results: dict[str, dict]) -> str:
    """A markdown table, one column per size."""
    sizes = [s for s in results if not s.startswith("noop-")]
    lines = ["| | " + " | ".join(sizes) + " |", "| --- |" + " ---: |" * len(sizes)]
    for key, title, fmt in TABLE:
        cells = [fmt.format(results[s][key]) if key in results[s] else "-" for s in sizes]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, dict], path: Path) -> None:
    """Seconds per stage against clips, log-log, with a linear-cost guide."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [results[s]["clips"] for s in results if "report_s" in results[s]]  # full runs only
    done = [results[s] for s in results if "report_s" in results[s]]
    if len(done) < 1:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in ("synth", "render", "rerun", "add", "train", "train_cache", "evaluate", "predict", "report"):
        points = [(n, r[f"{key}_s"]) for n, r in zip(sizes, done) if f"{key}_s" in r]
        if points:
            ax.plot(*zip(*points), marker="o", label=key)
    if len(sizes) > 1:
        ax.plot(sizes, [done[0]["render_s"] * n / sizes[0] for n in sizes], "k:", label="linear (from render)")
    ax.set(xscale="log", yscale="log", xlabel="clips", ylabel="seconds",
           title="SpecVision stages against dataset size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description="Make the Speech Commands stand-in at each size and time every stage (synth, render, "
                    "no-op re-run, adding clips, one training epoch with and without --cache, evaluate, "
                    "predict, report), with peak memory. Last line: one JSON object keyed by size.",
        epilog="Run it niced on a shared machine and say what else ran. Exit status: 0 all sizes measured, "
               "1 a stage failed (its log is shown; the other sizes still run), 2 bad options.")
    parser.add_argument("--sizes", type=int, nargs="*", default=DEFAULT_SIZES, metavar="N",
                        help="dataset sizes in clips; none: only --noop-probe (default: %(default)s)")
    parser.add_argument("--work", type=Path, required=True, metavar="DIR",
                        help="working folder: DIR/<size>/{speech_commands,images,model,report,logs}; the "
                             "stand-in is kept and reused by later runs")
    parser.add_argument("--add", type=int, default=DEFAULT_ADD, metavar="N",
                        help="clips added for the incremental re-run (default: %(default)s)")
    parser.add_argument("--words", nargs="+", metavar="WORD",
                        help="words of the stand-in (default: all 35 of v0.02)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="processes for synth and render (default: theirs, all cores)")
    parser.add_argument("--seed", type=int, default=0, help="stand-in and training seed (default: 0)")
    parser.add_argument("--train-sizes", type=int, nargs="*", metavar="N",
                        help="time training only at these sizes (default: every size); at the others "
                             "evaluate/predict/report use --model, else the model of the last size trained "
                             "in this run, else they are left out")
    parser.add_argument("--model", type=Path, metavar="MODEL_PT",
                        help="a model.pt trained on the same words and render settings, for the inference "
                             "stages at sizes not in --train-sizes (e.g. DIR/1000/model/model.pt)")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also draw seconds per stage against size")
    parser.add_argument("--noop-probe", type=int, nargs="+", default=[], metavar="N",
                        help="also time the no-op re-run at these sizes on empty placeholder files (no "
                             "synthesis or rendering needed; an opened clip would fail the run); reported "
                             "under 'noop-N'")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if any(n < 1 for n in args.sizes) or args.add < 1 or (args.workers is not None and args.workers < 1):
        print("error: --sizes, --add and --workers must be at least 1", file=sys.stderr)
        return 2
    words = standin_words()
    args.words = args.words or words
    unknown = [w for w in args.words if w not in words]
    if unknown:
        print(f"error: --words: not Speech Commands v0.02 words: {unknown}", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    failed, trained = False, []
    for size in args.sizes:
        try:
            results[str(size)] = measure_size(size, args, trained)
            print(f"[{size}] {json.dumps(results[str(size)])}", flush=True)
        except ScaleError as err:
            print(f"error: size {size}: {err}", file=sys.stderr)
            results[str(size)] = {"error": str(err).splitlines()[0]}
            failed = True
    for size in args.noop_probe:
        try:
            results[f"noop-{size}"] = measure_noop_probe(size, args)
        except (ScaleError, subprocess.CalledProcessError) as err:
            print(f"error: no-op probe {size}: {err}", file=sys.stderr)
            results[f"noop-{size}"] = {"error": str(err).splitlines()[0]}
            failed = True
    if args.plot:
        plot(results, args.plot)
    print(table(results))
    print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
