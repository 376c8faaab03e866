"""python -m preprocess: render every labelled clip once to a spectrogram PNG in class folders.

    OUT/render.json                      the render settings (re-runs must use the same ones)
    OUT/manifest.csv                     one row per clip: source, sha256, split, label, png, status,
                                         reason, size, mtime_ns (the clip's file when it was rendered)
    OUT/<train|val|test>/<class>/<name>.png

Re-runs are incremental: a clip whose audio bytes (SHA-256) and settings match its existing PNG is
skipped, a changed clip is rendered again, PNGs whose clip is gone are deleted. A clip whose file
size and mtime still match its manifest row is skipped without being read at all (decided before
any work is handed out), so a re-run with nothing to do reads no audio; any other clip is read and
its hash decides. The state is read from the manifest and, for PNGs newer than it (a killed run),
from the PNGs' own metadata, so a run killed at any point and started again ends with a complete,
correct OUT.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import shutil
import sys
import time
from pathlib import Path

from preprocess import cli, download, openworld, setups, shards, sources
from preprocess.layout import (MANIFEST, RENDER_JSON, SPLITS, SettingsError, read_manifest, read_render_record,
                               write_manifest, write_render_record)
from preprocess.plan import (PrepareError, check_out_dir, check_out_path, existing_images, open_lock, plan_tasks,
                             png_paths, remove_stale)
from preprocess.render_tasks import CLIP_TIMEOUT, STAGING, run_tasks
from preprocess.render import MAX_AUDIO_SECONDS, RenderSettings

DEFAULT_OUT = "images"
DEFAULT_WORDS = ["yes", "no"]          # speechcommands default; the folder source takes all classes
DEFAULT_DATA_DIR = "data"              # where a downloaded Speech Commands copy is kept
LOCK_FILE = ".preprocess.lock"




# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    defaults = RenderSettings()
    parser = argparse.ArgumentParser(
        prog="python -m preprocess",
        description="Render labelled audio clips once to spectrogram PNGs in "
                    "OUT/<train|val|test>/<class>/, for training with torchvision ImageFolder.",
        epilog="Re-runs are incremental (unchanged clips are skipped). Exit status: 0 when every clip "
               "was rendered, 1 when some clips failed (the rest are still rendered; see the summary "
               "and manifest.csv), 2 when the run could not start.")
    src = parser.add_argument_group("source")
    src.add_argument("--source", choices=("speechcommands", "folder"), default="speechcommands",
                     help="speechcommands: Google Speech Commands (official split lists); folder: "
                          "ROOT/<class>/*.{wav,flac,ogg,mp3}, or ROOT/<train|val|test>/<class>/* "
                          "(default: %(default)s)")
    src.add_argument("--root", type=Path, metavar="DIR",
                     help="audio root. folder: required. speechcommands: an extracted copy (works offline); "
                          "without it the official tarball is downloaded into --data-dir")
    src.add_argument("--words", nargs="+", metavar="WORD",
                     help="classes to use (speechcommands default: yes no; folder default: every class "
                          "folder; folders starting with '_' are never classes)")
    setups.add_argument(src)
    src.add_argument("--val-pct", type=float, default=10.0, metavar="PCT",
                     help="folder source without train/val/test folders: percent of speakers for val "
                          "(default: %(default)s)")
    src.add_argument("--test-pct", type=float, default=10.0, metavar="PCT",
                     help="likewise for test (default: %(default)s). The split is a hash of the speaker "
                          "(file name before '_nohash_', else the stem): stable, speaker-disjoint")
    src.add_argument("--version", choices=sorted(download.SPEECH_COMMANDS), default="v0.02",
                     help="Speech Commands version: what to download, which words exist "
                          "(default: %(default)s)")
    src.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR), metavar="DIR",
                     help="speechcommands download folder (default: %(default)s)")
    src.add_argument("--url", help="download from this mirror instead of the official URL")
    src.add_argument("--sha256", metavar="HEX",
                     help="expected SHA-256 of the tarball (default: the official one)")
    src.add_argument("--lists", type=Path, metavar="DIR",
                     help="folder holding validation_list.txt and testing_list.txt (default: the root)")

    rnd = parser.add_argument_group("rendering (stored in OUT/render.json)")
    rnd.add_argument("--sample-rate", type=int, default=defaults.sample_rate,
                     help="Hz; clips are resampled to it (default: %(default)s)")
    rnd.add_argument("--duration", type=float, default=defaults.duration,
                     help="seconds; shorter clips are centred in silence, longer ones cut to their loudest "
                          "window (default: %(default)s)")
    rnd.add_argument("--feature", choices=("spectrogram", "mel", "mfcc"), default=defaults.feature,
                     help="default: %(default)s")
    rnd.add_argument("--n-fft", type=int, default=defaults.n_fft, help="default: %(default)s")
    rnd.add_argument("--hop-length", type=int, default=defaults.hop_length, help="default: %(default)s")
    rnd.add_argument("--n-mels", type=int, default=defaults.n_mels,
                     help="mel and mfcc (default: %(default)s)")
    rnd.add_argument("--n-mfcc", type=int, default=defaults.n_mfcc, help="mfcc (default: %(default)s)")
    rnd.add_argument("--db-min", type=float, help="level mapped to pixel 0 (default: per feature, fixed)")
    rnd.add_argument("--db-max", type=float, help="level mapped to pixel 255 (default: per feature, fixed)")
    rnd.add_argument("--colormap", choices=("viridis", "gray"), default=defaults.colormap,
                     help="viridis: palette PNG read as RGB; gray: 1-channel PNG (default: %(default)s)")

    openworld.add_arguments(parser)

    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), metavar="DIR",
                     help="output folder (default: %(default)s)")
    cli.add_workers_flag(run)
    run.add_argument("--force", action="store_true",
                     help="delete OUT's images and rebuild, even if OUT was rendered with other settings")
    cli.add_max_seconds_flag(run, MAX_AUDIO_SECONDS)
    run.add_argument("--clip-timeout", type=float, default=CLIP_TIMEOUT, metavar="S",
                     help="with --workers > 1: a clip that takes longer is stopped and recorded as failed "
                          "(default: %(default)g)")
    run.add_argument("--shard", metavar="K/N",
                     help="render only slice K of N (1 <= K <= N; a stable hash of each clip's path) into "
                          "OUT, e.g. one per machine on shared storage; shards run side by side and each "
                          "writes a manifest part; then run --merge-shards N")
    run.add_argument("--merge-shards", type=int, metavar="N",
                     help="after all N shards finished: check their parts, write OUT/manifest.csv (the "
                          "same as a one-process run's) and remove stale PNGs; needs only --out")
    cli.add_quiet_flag(run)
    return parser


def settings_from_args(args: argparse.Namespace) -> RenderSettings:
    return RenderSettings(sample_rate=args.sample_rate, duration=args.duration, feature=args.feature,
                          n_fft=args.n_fft, hop_length=args.hop_length, n_mels=args.n_mels,
                          n_mfcc=args.n_mfcc, db_min=args.db_min, db_max=args.db_max,
                          colormap=args.colormap)


def collect_clips(args: argparse.Namespace) -> tuple[list[sources.Clip], dict]:
    """The clips to render and the render.json 'source' record."""
    if args.source == "folder":
        if args.root is None:
            raise PrepareError("--source folder needs --root DIR")
        clips = sources.folder_clips(args.root, args.words, args.val_pct, args.test_pct)
        return clips, {"kind": "folder", "root": str(args.root.resolve())}
    root = args.root
    if root is None:
        root = download.fetch_speech_commands(args.version, args.data_dir, url=args.url,
                                              sha256=args.sha256, progress=not args.quiet)
    setups.check_root(args, root)
    clips = sources.speechcommands_clips(root, args.words or DEFAULT_WORDS, args.version, args.lists)
    return clips, setups.record(args, {"kind": "speechcommands", "root": str(Path(root).resolve())})


# ---------------------------------------------------------------- summary

def summary(out: Path, rows: list[dict], counts: collections.Counter, removed: int, notes: list[str],
            seconds: float) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    labels = sorted({r["label"] for r in rows})
    table = collections.Counter((r["split"], r["label"]) for r in ok)
    width = max([5] + [len(label) for label in labels])
    lines = [f"preprocess: {len(rows)} clips -> {out}: rendered {counts['rendered']}, "
             f"up to date {counts['skipped']}, failed {counts['failed']}, stale PNGs removed {removed} "
             f"({seconds:.1f} s)",
             "  " + "split".ljust(6) + "".join(label.rjust(width + 1) for label in labels) + "total".rjust(7)]
    for split in SPLITS:
        cells = [table[(split, label)] for label in labels]
        lines.append("  " + split.ljust(6) + "".join(str(c).rjust(width + 1) for c in cells)
                     + str(sum(cells)).rjust(7))
    lines += [f"  note: {note}" for note in notes]
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines.append(f"FAILED ({len(failed)}; listed in {out / MANIFEST}):")
        lines += [f"  {r['source']}: {r['reason']}" for r in failed]
    return "\n".join(lines)


# ---------------------------------------------------------------- main

@contextlib.contextmanager
def folder_lock(path: Path, shared: bool, busy: str):
    """Hold a POSIX lock on `path` (shared or exclusive), or PrepareError(busy) if it is taken.

    lockf, not flock: a POSIX lock is not inherited by the forked workers, so a killed run never
    leaves the folder locked behind it (and it works on NFS).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_lock(path) as handle:  # readable and writable: a shared lock needs read access
        try:
            fcntl.lockf(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            raise PrepareError(busy) from None
        yield


@contextlib.contextmanager
def out_dir_lock(out: Path, shard: shards.Shard | None):
    """One-process runs and merges own OUT alone; shards share it, each holding its own shard lock."""
    with folder_lock(out / LOCK_FILE, shard is not None,
                     f"{out}: another `python -m preprocess` is writing there"
                     + (" (a one-process run or a merge)" if shard else "")):
        if shard is None:
            yield
            return
        with folder_lock(shards.lock_path(out, shard), False, f"{out}: shard {shard.name} is already running"):
            yield


def prepare(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        settings = settings_from_args(args)
    except ValueError as err:
        raise PrepareError(f"render settings: {err}") from None
    setups.apply(args)  # --setup: fills in --words and the extra classes' shares
    openworld.check_options(args)
    clips, source = collect_clips(args)
    out: Path = args.out
    check_out_path(out, Path(source["root"]))
    shard: shards.Shard | None = args.shard
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PrepareError(f"--out {out}: cannot make the folder ({err.strerror or err})") from None
    with out_dir_lock(out, shard):
        clips, source, extra_notes = openworld.extend(args, clips, source, out)  # unknown/silence
        manifest_trusted = check_out_dir(out, settings, source, args.force)
        write_render_record(out, settings, source)

        names, notes = png_paths(clips)  # on the whole list: a shard names its PNGs as one run would
        notes += extra_notes
        all_clips = clips
        if shard:
            clips, names = shards.select(shard, clips, names)
        existing = existing_images(out, settings.digest(), manifest_trusted,
                                   (shards.part_csv(out, shard),) if shard else (),
                                   set(names) if shard else None)
        # an up-to-date PNG is skipped only when its flags record is known too; PNGs written before
        # flags existed (or before the rules last changed: flags.VERSION) are rendered again, once
        existing = {png: known for png, known in existing.items() if known.record is not None}
        plan = plan_tasks(clips, names, existing, out, settings)
        rows: list[dict] = [{}] * len(clips)
        counts: collections.Counter = collections.Counter()

        def record(index: int, sha: str, status: str, reason: str, clip_record: dict) -> None:
            clip, ok = clips[index], status != "failed"
            counts[status] += 1
            size, mtime_ns = plan.stats[index] if ok else ("", "")
            if status == "skipped":  # not rendered now: its record is the one kept with its PNG
                clip_record = existing[names[index]].record
            rows[index] = {"source": clip.source, "sha256": sha, "split": clip.split, "label": clip.label,
                           "png": names[index] if ok else "", "status": "ok" if ok else "failed",
                           "reason": reason, "size": size, "mtime_ns": mtime_ns, **clip_record}

        for index, sha in plan.up_to_date.items():
            record(index, sha, "skipped", "", {})
        staging = out / STAGING / f"shard-{shard.name}" if shard else out / STAGING
        shutil.rmtree(staging, ignore_errors=True)  # temp files of a killed run
        try:
            for index, sha, status, reason, clip_record in run_tasks(
                    plan.tasks, settings, staging, args.workers, args.quiet, args.max_seconds,
                    args.clip_timeout):
                if status == "fatal":  # a full disk: every later clip would fail the same way
                    raise PrepareError(reason)
                record(index, sha, status, reason, clip_record)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for index, row in enumerate(rows):  # a task the pool never answered is a named failure, not a hole
            if not row:
                record(index, "", "failed", "no result came back from the render workers; run again", {})
        if shard:  # stale PNGs may be another shard's clips: the merge removes them
            removed = 0
            write_manifest(shards.part_csv(out, shard), rows)
            shards.write_record(out, shard, {"clips": len(rows), "clips_total": len(all_clips),
                                             "clip_list": shards.clip_list_digest(all_clips),
                                             "settings_hash": settings.digest(), "counts": dict(counts)})
        else:
            removed = remove_stale(out, {r["png"] for r in rows if r["status"] == "ok"}, notes)
            write_manifest(out / MANIFEST, rows)
    print(summary(out, rows, counts, removed, notes, time.perf_counter() - start))
    if shard:
        print(f"shard {shard.index}/{shard.count}: {len(rows)} of {len(all_clips)} clips; part "
              f"{shards.part_csv(out, shard)}. When all {shard.count} shards have finished: "
              f"python -m preprocess --merge-shards {shard.count} --out {out}")
    return 1 if counts["failed"] else 0


def merge_shards(out: Path, count: int) -> int:
    """Merge the manifest parts of an N-shard run into OUT/manifest.csv, as one process would write it."""
    start = time.perf_counter()
    try:
        settings_hash = read_render_record(out)["settings_hash"]
    except (SettingsError, KeyError) as err:
        raise PrepareError(f"{out / RENDER_JSON}: no usable render record ({err}); were the shards run "
                           f"with --out {out}?") from None
    with out_dir_lock(out, None):
        parts = shards.finished_parts(out, count, settings_hash)
        rows = sorted((row for shard, _ in parts for row in read_manifest(shards.part_csv(out, shard))),
                      key=lambda row: row["source"])  # the clip order of a one-process run
        counts: collections.Counter = collections.Counter()
        for _, record in parts:
            counts.update(record.get("counts", {}))
        notes: list[str] = []
        removed = remove_stale(out, {r["png"] for r in rows if r["status"] == "ok"}, notes)
        write_manifest(out / MANIFEST, rows)
        shutil.rmtree(out / STAGING, ignore_errors=True)
        shutil.rmtree(shards.parts_dir(out))  # merged: the manifest now answers for every clip
    print(summary(out, rows, counts, removed, notes, time.perf_counter() - start)
          .replace("preprocess:", f"preprocess --merge-shards {count}:", 1))
    return 1 if any(r["status"] == "failed" for r in rows) else 0


@cli.command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cli.check_workers(args.workers)
        if args.merge_shards is not None:
            if args.shard or args.merge_shards < 1:
                raise PrepareError("--merge-shards N needs N >= 1 and no --shard")
            return merge_shards(args.out, args.merge_shards)
        if args.shard is not None:
            args.shard = shards.parse_shard(args.shard)
            if args.force:
                raise PrepareError("--force cannot be used with --shard (it would delete the other "
                                   "shards' images); use --force in a one-process run")
        return prepare(args)
    except KeyboardInterrupt:
        print("interrupted: run again to finish (finished images are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    cli.run(main)
