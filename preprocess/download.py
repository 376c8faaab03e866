"""Fetch Google Speech Commands: resumable download, SHA-256 check, safe extraction.

    data/speech_commands_v0.02.tar.gz.part   while downloading (an interrupted run resumes from it)
    data/speech_commands_v0.02.tar.gz        only once its SHA-256 matched
    data/speech_commands_v0.02/              only once every member was extracted (staged, then renamed)
"""
from __future__ import annotations

import http.client
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from preprocess.cli import SpecVisionError
from preprocess.render import sha256_file

# Official tarballs and their SHA-256 (the same values torchaudio's SPEECHCOMMANDS dataset checks).
SPEECH_COMMANDS = {
    "v0.01": ("http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
              "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d"),
    "v0.02": ("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
              "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"),
}
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60


class DownloadError(SpecVisionError):
    """Download, checksum or extraction failed; the message says what and what to do."""


def download(url: str, dest: Path, sha256: str, progress: bool = True) -> Path:
    """Download `url` to `dest`, resuming from `dest.part`; `dest` exists only with the right SHA-256."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if sha256_file(dest) == sha256:
            return dest
        dest.unlink()  # not what we expect (replaced by hand?): fetch it again
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            resumed = offset > 0 and response.status == 206 and \
                response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")
            if not resumed:
                offset = 0  # server sent the whole file: start over
            length = response.headers.get("Content-Length")
            expected = int(length) + offset if length else None
            with open(part, "ab" if resumed else "wb") as handle, \
                    tqdm(total=expected, initial=offset, unit="B", unit_scale=True, desc=dest.name,
                         disable=not progress) as bar:
                for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                    handle.write(block)
                    bar.update(len(block))
            if expected is not None and part.stat().st_size < expected:  # read() just stops when cut off
                raise DownloadError(f"{url}: download interrupted after {part.stat().st_size} of {expected} "
                                    f"bytes; run again to resume from {part}")
    except urllib.error.HTTPError as err:
        if err.code != 416:  # 416: range past the end, i.e. the .part is already complete
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", None) or repr(err)
        if part.is_file() and part.stat().st_size:
            raise DownloadError(f"{url}: download interrupted ({reason}); run again to resume from "
                                f"{part}") from None
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: cannot download ({reason}); check the network, or pass an "
                            f"extracted copy with --root DIR") from None
    actual = sha256_file(part)
    if actual != sha256:
        part.unlink()
        raise DownloadError(f"{url}: SHA-256 mismatch (expected {sha256}, got {actual}); "
                            f"the download was deleted, nothing was extracted")
    part.replace(dest)
    return dest


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Only plain files and folders inside the target; no absolute paths, '..', links or devices."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or member.name.startswith(("/", "\\")) or "\\" in member.name:
        raise DownloadError(f"{archive}: refusing member {member.name!r}: it would be written outside "
                            f"the target folder")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive}: refusing member {member.name!r}: not a plain file or folder")


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract a tar(.gz) into `target`, all or nothing: staged in a temp folder, renamed at the end."""
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise DownloadError(f"{target}: already exists; remove it to extract {archive} again")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:  # one streaming pass: members are checked as they come
                _check_member(member, archive)
                if hasattr(tarfile, "data_filter"):  # the stdlib's own guard as a second line
                    tar.extract(member, staging, filter="data")
                else:  # Python < 3.11.4 / 3.10.12 has no extraction filters: take no owner or mode from it
                    tar.extract(member, staging, set_attrs=False)
        staging.replace(target)
    except (tarfile.TarError, OSError) as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(f"{archive}: cannot extract ({err}); nothing was extracted") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def fetch_speech_commands(version: str, data_dir: Path, url: str | None = None, sha256: str | None = None,
                          progress: bool = True) -> Path:
    """The extracted dataset folder `data_dir/speech_commands_<version>`, downloading it if needed."""
    if version not in SPEECH_COMMANDS:
        raise DownloadError(f"unknown Speech Commands version {version!r}; "
                            f"use one of {sorted(SPEECH_COMMANDS)}")
    official_url, official_sha = SPEECH_COMMANDS[version]
    data_dir = Path(data_dir)
    target = data_dir / f"speech_commands_{version}"
    if target.is_dir():
        return target
    for leftover in data_dir.glob(f".{target.name}.*.partial"):  # staging of a killed extraction
        shutil.rmtree(leftover, ignore_errors=True)
    archive = download(url or official_url, data_dir / f"{target.name}.tar.gz",
                       (sha256 or official_sha).lower(), progress)
    safe_extract(archive, target)
    return target
