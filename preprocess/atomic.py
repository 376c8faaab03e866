"""Atomic file writes: a temp file beside the target, then os.replace. Readers (and a rerun after a
crash or kill) see either the old file or the whole new one, never a torn one.

Temp files are named `.<name>.<pid>-<n>.tmp` (preprocess's cleanup removes leftovers of killed runs).
They are created with O_EXCL and mode 0666, so the umask gives them normal permissions: no chmod,
no random-name retries. Writing thousands of small PNGs, that halves the cost of a write.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import tempfile
from pathlib import Path

_counter = itertools.count()


def _create_temp(path: str, temp_dir: str | None = None) -> tuple[int, str]:
    """Open a new temp file for `path` in `temp_dir` (default: beside it), making a missing folder."""
    folder = temp_dir if temp_dir is not None else os.path.dirname(path) or "."
    name, made_folder = os.path.basename(path), False
    while True:
        tmp = os.path.join(folder, f".{name}.{os.getpid()}-{next(_counter)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                           0o666), tmp
        except FileExistsError:  # a leftover of a killed process that had our pid: take the next name
            continue
        except FileNotFoundError:  # the folder is missing: made here, not checked before every write
            if made_folder:
                raise
            os.makedirs(folder, exist_ok=True)  # exist_ok: another process may be making it too
            made_folder = True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path to write; it is renamed to `path` only if the block succeeds."""
    fd, tmp = _create_temp(os.fspath(path))
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb", **open_kwargs):
    """``with atomic_writer(p) as fh: fh.write(...)``; the file appears at `p` only if the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as handle:
        yield handle


def atomic_write_bytes(path: str | os.PathLike, data: bytes,
                       temp_dir: str | os.PathLike | None = None) -> None:
    """Write `data` to `path` atomically with three system calls and a rename (the PNG hot path).

    `temp_dir`: where the temp file is made. Processes writing into one folder contend for its lock
    while each creates a file (ext4: twice the system time with two workers); with a temp folder per
    process only the short rename touches the shared folder. If `path` turns out to be on another
    filesystem (a linked folder), the file is written beside it instead.
    """
    path = os.fspath(path)
    fd, tmp = _create_temp(path, os.fspath(temp_dir) if temp_dir is not None else None)
    try:
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked (signals, odd filesystems)
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path)
        except FileNotFoundError:  # the target folder is missing (only possible with temp_dir)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)  # (or made by another process now)
            os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if temp_dir is not None and isinstance(err, OSError) and err.errno == errno.EXDEV:
            return atomic_write_bytes(path, data)  # rename cannot cross filesystems: temp beside it
        raise


def remove_stale_temps(path: str | os.PathLike) -> int:
    """Delete temp files of `path` left by killed processes (`.<name>.<pid>-<n>.tmp` whose pid is gone).

    Called before rewriting a big file (a checkpoint): a kill during its save would otherwise leave a
    hidden copy behind for ever. Temps of live processes (a concurrent writer) are left alone.
    """
    folder, name = os.path.dirname(os.fspath(path)) or ".", os.path.basename(os.fspath(path))
    removed = 0
    try:
        entries = os.listdir(folder)
    except OSError:
        return 0
    for entry in entries:
        if not (entry.startswith(f".{name}.") and entry.endswith(".tmp")):
            continue
        pid = entry[len(name) + 2:-4].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, entry))
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_folder(out: str | os.PathLike, build, is_ours) -> None:
    """Build a whole output folder with `build(temp_folder)` beside `out`, then swap it in.

    A crash leaves the previous folder as it was and no temp folder behind. `is_ours(folder)` must
    say whether an existing `out` may be replaced (never a folder this program did not write).
    """
    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or is_ours(out))):
        raise FileExistsError(f"{out}: exists and was not written by this command; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = None
    try:
        build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; these folders are meant to be shared
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "previous")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.replace(old / "previous", out)  # put the previous folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
