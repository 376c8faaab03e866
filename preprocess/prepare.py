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
import csv
import dataclasses
import errno
import fcntl
import hashlib
import io
import os
import shutil
import signal
import stat
import sys
import time
from pathlib import Path

from tqdm import tqdm

from preprocess import cli, download, flags, openworld, setups, shards, sources
from preprocess.cli import SpecVisionError
from preprocess import workers as workers_pool
from preprocess.atomic import atomic_write_text
from preprocess.layout import RENDER_JSON, SPLITS, SettingsError, read_render_record, write_render_record
from preprocess.render import (MAX_AUDIO_SECONDS, AudioError, RenderSettings, decode_clip, open_audio,
                               read_png_metadata, render_image, save_png)

DEFAULT_OUT = "images"
DEFAULT_WORDS = ["yes", "no"]          # speechcommands default; the folder source takes all classes
DEFAULT_DATA_DIR = "data"              # where a downloaded Speech Commands copy is kept
MANIFEST = "manifest.csv"
# size, mtime_ns: the clip file's stat (a re-run skips a clip whose stat is unchanged without reading it);
# flags.MANIFEST_FIELDS: what the audit needs to know of each clip (flags, length, level, image sketch)
MANIFEST_FIELDS = ("source", "sha256", "split", "label", "png", "status", "reason", "size", "mtime_ns") \
    + flags.MANIFEST_FIELDS
LOCK_FILE = ".preprocess.lock"
STAGING = ".staging"                    # OUT/.staging/<pid>/: each worker's temp files (see render_task)
READ_ONCE_BYTES = 32 << 20              # files up to this size are read once (hashed + decoded from memory)
CLIP_TIMEOUT = 600.0                    # seconds one clip may take before its worker is killed
# A clip modified less than this before its stat was taken is not trusted by its stat next time
# (hashed instead): file times are coarse (a clock tick; 2 s on FAT), so a write right after our
# read could leave the same size and mtime behind. git's "racy clean" entries, the same idea.
RACY_WINDOW_NS = 2_000_000_000


class PrepareError(SpecVisionError):
    """The run cannot start (bad options, output dir in use or rendered with other settings)."""


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


# ---------------------------------------------------------------- output folder state

def check_out_path(out: Path, root: Path) -> None:
    """OUT must be a folder (or not exist yet) outside the audio root: inside it, the images would be
    read as a class (or split) folder of audio by the next run."""
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out}: is a file, not a folder")
    resolved = out.resolve()
    if resolved == root or root in resolved.parents:
        raise PrepareError(f"--out {out} is inside the audio root {root}: the next run would read the "
                           f"images as audio folders; choose an --out outside it")


def open_lock(path: Path):
    """A lock file, opened without following a link and without truncating: a symlink planted there
    never lets a run clobber its target."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PrepareError(f"{path}: is a symbolic link, not this tool's lock file; remove it") from None
        raise PrepareError(f"{path}: cannot open the lock file ({err.strerror or err})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PrepareError(f"{path}: is not a regular file; remove it")
    return os.fdopen(fd, "r+")

def check_out_dir(out: Path, settings: RenderSettings, source: dict, force: bool) -> bool:
    """Refuse an OUT rendered with other settings or from another source (unless --force, which wipes it).

    Returns True when OUT's manifest belongs to these settings and may be trusted.
    """
    record_path = out / RENDER_JSON
    if force and record_path.exists():  # only a folder this tool made: never wipe a stranger's train/
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
        for name in (RENDER_JSON, MANIFEST):
            (out / name).unlink(missing_ok=True)
        return False
    if not record_path.exists():
        return False
    try:
        record = read_render_record(out)
        old, old_source = RenderSettings.from_dict(record["settings"]), record["source"]
    except (SettingsError, KeyError) as err:
        raise PrepareError(f"{record_path}: unreadable ({err}); use --force to rebuild {out}") from None
    if old.digest() != settings.digest():
        changed = ", ".join(f"{k} {v!r} -> {settings.to_dict()[k]!r}"
                            for k, v in old.to_dict().items() if settings.to_dict()[k] != v)
        raise PrepareError(f"{out} holds images rendered with other settings ({changed}); "
                           f"use another --out, or --force to delete them and rebuild")
    if old_source != source:
        differ = sorted(k for k in old_source.keys() | source.keys() if old_source.get(k) != source.get(k))
        raise PrepareError(f"{out} holds images of another source ({old_source['kind']} at "
                           f"{old_source['root']}; it differs in: {', '.join(differ)}); use another "
                           f"--out, or --force to rebuild")
    return True


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class Existing(collections.namedtuple("Existing", "source sha256 size mtime_ns record", defaults=(None,))):
    """What an existing PNG was rendered from; size and mtime_ns ('' if unknown) of the clip's file;
    record: its flags.MANIFEST_FIELDS, None if not known under the current flag rules."""


def flags_record(row: dict) -> dict | None:
    """The flags.MANIFEST_FIELDS of a manifest row or PNG metadata, if complete and current."""
    return {key: row[key] for key in flags.MANIFEST_FIELDS} if flags.is_current(row) else None


def existing_images(out: Path, settings_hash: str, manifest_trusted: bool,
                    manifests: tuple[Path, ...] = (), wanted: set[str] | None = None) -> dict[str, Existing]:
    """png (relative to OUT) -> Existing, for every PNG on disk rendered with these settings.

    The manifest (and any extra `manifests`, e.g. a shard's part) answers for PNGs not modified since
    it was written; newer PNGs (written by a run that was killed before its manifest) and a missing
    manifest fall back to the PNG metadata (which has no file stat: those clips are hashed again).
    `wanted`: only these PNGs (a shard's), not the ones other shards may be writing right now.
    """
    on_disk = png_files(out)
    if wanted is not None:
        on_disk = {rel: p for rel, p in on_disk.items() if rel in wanted}
    known: dict[str, Existing] = {}
    for manifest in ((out / MANIFEST,) if manifest_trusted else ()) + manifests:
        if not manifest.is_file():
            continue
        written = manifest.stat().st_mtime_ns
        for row in read_manifest(manifest):
            path = on_disk.get(row.get("png") or "")
            record = flags_record(row)  # None: a row of older flag rules; the PNG's metadata may have it
            if (row.get("status") == "ok" and record is not None and path is not None
                    and os.stat(path).st_mtime_ns <= written):
                known[row["png"]] = Existing(row["source"], row["sha256"], row.get("size") or "",
                                             row.get("mtime_ns") or "", record)
    for rel, path in on_disk.items():
        if rel in known:
            continue
        try:
            meta = read_png_metadata(path)
        except Exception:  # unreadable PNG: treated as absent, so it is rendered again or removed
            continue
        if meta.get("settings_hash") == settings_hash and "source" in meta and "sha256" in meta:
            known[rel] = Existing(meta["source"], meta["sha256"], "", "", flags_record(meta))
    return known


def png_files(out: Path) -> dict[str, str]:
    """OUT-relative '/'-separated path -> path, of every PNG under OUT/<split>/.

    Plain strings and os.walk rather than pathlib: at 100k images pathlib's per-path objects were
    most of a no-op re-run's time.
    """
    found: dict[str, str] = {}
    for split in sources.SPLITS:
        for dirpath, _, filenames in os.walk(os.path.join(out, split)):
            prefix = os.path.relpath(dirpath, out).replace(os.sep, "/") + "/"
            for name in filenames:
                if name.endswith(".png"):
                    found[prefix + name] = os.path.join(dirpath, name)
    return found


def png_paths(clips: list[sources.Clip]) -> tuple[list[str], list[str]]:
    """OUT-relative PNG path per clip: `<split>/<label>/<stem>.png`.

    Clips whose stems collide (a.wav and a.flac in one class) keep their extension instead
    (`a.wav.png`, `a.flac.png`) so that neither overwrites the other; the collisions are reported.
    """
    def plain(c):
        return f"{c.split}/{c.label}/{openworld.png_stem(c)}.png"
    counts = collections.Counter(plain(c) for c in clips)
    names, notes = [], []
    for clip in clips:
        name = plain(clip)
        if counts[name] > 1:
            notes.append(f"{clip.source}: name collision on {name}, written as {Path(clip.source).name}.png")
            name = f"{clip.split}/{clip.label}/{Path(clip.source).name}.png"
        names.append(name)
    doubles = [name for name, k in collections.Counter(names).items() if k > 1]
    if doubles:  # not possible with the layouts above; but never let one clip overwrite another
        raise PrepareError(f"clips map to the same PNG: {doubles[:5]}")
    return names, notes


def made_here(png: Path) -> bool:
    try:
        return "settings_hash" in read_png_metadata(png)
    except Exception:
        return False


def remove_stale(out: Path, keep: set[str], notes: list[str]) -> int:
    """Delete our PNGs that no clip maps to any more, temp files of killed runs and then-empty folders.

    PNGs without this tool's metadata are not ours: they are left alone and noted.
    """
    removed = 0
    for split in SPLITS:
        base = out / split
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base, topdown=False):
            folder = Path(dirpath)
            prefix = os.path.relpath(dirpath, out).replace(os.sep, "/") + "/"
            for name in filenames:
                rel = prefix + name
                if name.endswith(".tmp") and name.startswith("."):
                    (folder / name).unlink(missing_ok=True)
                elif name.endswith(".png") and rel not in keep:
                    if made_here(folder / name):
                        (folder / name).unlink()
                        removed += 1
                    else:
                        notes.append(f"{rel}: not made by preprocess, left alone")
            if not any(folder.iterdir()):
                folder.rmdir()  # ImageFolder refuses an empty class folder
    return removed


@dataclasses.dataclass
class Plan:
    tasks: list[tuple]              # render_task inputs: the clips that must be read
    up_to_date: dict[int, str]      # clip index -> sha256: same file stat as rendered, PNG there; not read
    stats: list[tuple[str, str]]    # per clip: (size, mtime_ns) for the manifest, ('', '') if not trusted


def file_stat(path: Path, now_ns: int) -> tuple[str, str]:
    """(size, mtime_ns) of a clip's file as manifest strings; ('', '') if it cannot be stat'ed or was
    modified within RACY_WINDOW_NS (then its next run hashes it rather than trust the stat)."""
    try:
        stat = os.stat(path)
    except OSError:  # missing or a dangling link: render_task reports it
        return "", ""
    if stat.st_mtime_ns > now_ns - RACY_WINDOW_NS:
        return "", ""
    return str(stat.st_size), str(stat.st_mtime_ns)


def plan_tasks(clips: list[sources.Clip], names: list[str], existing: dict[str, Existing],
               out: Path, settings: RenderSettings) -> Plan:
    """Which clips to read: a render_task per clip (carrying the SHA-256 its existing PNG was rendered
    from, or ''), except clips whose file has the size and mtime recorded when their PNG was made."""
    plan, settings_hash, now_ns = Plan([], {}, []), settings.digest(), time.time_ns()
    for index, (clip, name) in enumerate(zip(clips, names)):
        stat = file_stat(clip.path, now_ns)
        plan.stats.append(stat)
        old = existing.get(name)
        old_sha = old.sha256 if old is not None and old.source == clip.source else ""
        if old_sha and stat[0] and stat == (old.size, old.mtime_ns):
            plan.up_to_date[index] = old_sha
            continue
        metadata = {"source": clip.source, "label": clip.label, "split": clip.split,
                    "settings_hash": settings_hash}
        plan.tasks.append((index, str(clip.path), str(out / name), old_sha, metadata))
    return plan


# ---------------------------------------------------------------- workers

_settings: RenderSettings | None = None
_staging: str | None = None
_max_seconds: float = MAX_AUDIO_SECONDS


def _init_worker(settings: RenderSettings, staging: Path, in_pool: bool = False,
                 max_seconds: float = MAX_AUDIO_SECONDS) -> None:
    global _settings, _staging, _max_seconds
    _settings, _staging, _max_seconds = settings, os.path.join(staging, str(os.getpid())), max_seconds
    import torch
    torch.set_num_threads(1)  # one process per core already; tiny FFTs lose with more threads
    if in_pool:  # Ctrl-C is handled once, by the main process (it stops the pool)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def read_and_hash(path: str) -> tuple[bytes | None, str]:
    """(the file's bytes, their SHA-256); bytes only up to READ_ONCE_BYTES, else None (streamed).

    A FIFO, a folder or a device named like a clip is refused without blocking on it (O_NONBLOCK);
    a large file's header is checked before a byte of it is hashed or decoded.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise AudioError(f"{path}: cannot read file ({err.strerror or err})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise AudioError(f"{path}: not a regular file ({kind}); not an audio clip")
    with os.fdopen(fd, "rb") as handle:
        try:
            if os.fstat(fd).st_size <= READ_ONCE_BYTES:
                data = handle.read()
                return data, hashlib.sha256(data).hexdigest()
            open_audio(path, None, _max_seconds).close()
            digest = hashlib.sha256()
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            return None, digest.hexdigest()
        except OSError as err:
            raise AudioError(f"{path}: cannot read file ({err.strerror or err})") from None


def render_task(task: tuple[int, str, str, str, dict]) -> tuple[int, str, str, str, dict]:
    """(index, audio path, png path, previous sha256, metadata) -> (index, sha256, status, reason, record).

    status: 'rendered', 'skipped' (PNG up to date) or 'failed' (reason says why; no PNG is left).
    record: the clip's flags.MANIFEST_FIELDS when rendered, else {}.
    """
    index, path, png, previous_sha, metadata = task
    sha = ""
    try:
        data, sha = read_and_hash(path)  # small clips: read once, hashed here, decoded from memory below
        if sha == previous_sha and os.path.exists(png):
            return index, sha, "skipped", "", {}
        wave, source_samples = decode_clip(path, _settings, data, _max_seconds)
        image = render_image(wave, _settings)
        record = flags.clip_record(wave, image, _settings, source_samples)
        # the temp file goes to this worker's own folder, then is renamed into the class folder:
        # workers creating files in one shared folder would wait on its lock
        save_png(image, png, {**metadata, "sha256": sha, **record}, _staging)
        return index, sha, "rendered", "", record
    except AudioError as err:
        reason = str(err).removeprefix(f"{path}: ")
    except OSError as err:
        if err.errno in cli.DISK_FULL:
            return index, sha, "fatal", cli.disk_full_message(err), {}
        reason = f"cannot write {png} ({err.strerror or err})"
    except MemoryError:
        reason = "out of memory while rendering it"
    except Exception as err:  # a decoder or transform error we did not foresee: report it, go on
        reason = f"{type(err).__name__}: {err}"
    Path(png).unlink(missing_ok=True)  # an old image of this clip would no longer match its audio
    # the manifest names clips relative to the audio root, so that it reads the same on every machine
    return index, sha, "failed", reason.replace(path, metadata["source"]), {}


def run_tasks(tasks: list, settings: RenderSettings, staging: Path, workers: int, quiet: bool,
              max_seconds: float = MAX_AUDIO_SECONDS, clip_timeout: float = CLIP_TIMEOUT):
    """Yield render_task results; with workers > 1 from a fork pool (forked after imports: fast start)
    that survives dead and stuck workers (preprocess/workers.py)."""
    bar = dict(total=len(tasks), unit="clip", desc="render", disable=quiet or not tasks,
               mininterval=0.5, smoothing=0.1)
    if workers <= 1 or len(tasks) < 2:
        import torch
        threads = torch.get_num_threads()
        _init_worker(settings, staging, max_seconds=max_seconds)
        try:
            yield from tqdm(map(render_task, tasks), **bar)
        finally:
            torch.set_num_threads(threads)
        return

    def failed(task: tuple, reason: str) -> tuple:
        Path(task[2]).unlink(missing_ok=True)  # an old image of this clip would no longer match its audio
        return task[0], "", "failed", reason, {}

    with tqdm(**bar) as progress:
        for result in workers_pool.resilient_map(render_task, tasks, workers, _init_worker,
                                                 (settings, staging, True, max_seconds), clip_timeout, failed):
            progress.update(1)
            yield result


# ---------------------------------------------------------------- summary

def write_manifest(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # rows as lists: twice as fast as DictWriter
    writer.writerow(MANIFEST_FIELDS)
    writer.writerows([row.get(field, "") for field in MANIFEST_FIELDS] for row in rows)
    atomic_write_text(path, buffer.getvalue())


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
    except cli.SpecVisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: run again to finish (finished images are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    cli.run(main)
