"""One clip's render task (read once, hash, decode, render, write the PNG atomically) and the pool that
runs them (preprocess/workers.py: dead and stuck workers are named and replaced)."""
from __future__ import annotations

import hashlib
import os
import signal
import stat
from pathlib import Path

from tqdm import tqdm

from preprocess import cli, flags
from preprocess import workers as workers_pool
from preprocess.render import (MAX_AUDIO_SECONDS, AudioError, RenderSettings, decode_clip, open_audio,
                               render_image, save_png)

STAGING = ".staging"                    # OUT/.staging/<pid>/: each worker's temp files (see render_task)
READ_ONCE_BYTES = 32 << 20              # files up to this size are read once (hashed + decoded from memory)
CLIP_TIMEOUT = 600.0                    # seconds one clip may take before its worker is killed


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
