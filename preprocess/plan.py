"""What `python -m preprocess` has to do: the output folder's state (which PNGs exist, from which
clip bytes, made by this command) and the plan of render tasks that brings it up to date."""
from __future__ import annotations

import collections
import dataclasses
import errno
import os
import shutil
import stat
import time
from pathlib import Path

from preprocess import flags, openworld, sources
from preprocess.cli import SpecVisionError
from preprocess.layout import MANIFEST, RENDER_JSON, SPLITS, SettingsError, read_manifest, read_render_record
from preprocess.render import RenderSettings, read_png_metadata

# A clip modified less than this before its stat was taken is not trusted by its stat next time
# (hashed instead): file times are coarse (a clock tick; 2 s on FAT), so a write right after our
# read could leave the same size and mtime behind. git's "racy clean" entries, the same idea.
RACY_WINDOW_NS = 2_000_000_000


class PrepareError(SpecVisionError):
    """The run cannot start (bad options, output dir in use or rendered with other settings)."""


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
