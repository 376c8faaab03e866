"""preprocess.atomic: whole files or nothing, normal permissions, missing folders made."""
from __future__ import annotations

import os
import stat

import pytest

from preprocess.atomic import atomic_path, atomic_write_bytes, atomic_write_text, atomic_writer


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_bytes_creates_folders_replaces_and_uses_the_umask(tmp_path):
    target = tmp_path / "a" / "b" / "x.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, memoryview(b"second, longer"))
    assert target.read_bytes() == b"second, longer"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    assert leftovers(target.parent) == []


def test_write_text_is_utf8_without_newline_translation(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "é\r\nz\n")
    assert (tmp_path / "t.txt").read_bytes() == "é\r\nz\n".encode()


def test_a_failed_block_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "keep.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_writer(target, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("killed mid-write")
    with pytest.raises(ZeroDivisionError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            1 / 0
    with pytest.raises(TypeError):
        atomic_write_bytes(target, 12345)  # not bytes: fails after the temp file was made
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_a_stale_temp_name_is_skipped(tmp_path):
    """A killed process with our pid may have left `.name.<pid>-<n>.tmp`: the next name is used."""
    from preprocess import atomic
    target = tmp_path / "x.txt"
    n = next(atomic._counter) + 1
    stale = tmp_path / f".x.txt.{os.getpid()}-{n}.tmp"
    stale.write_text("leftover")
    atomic_write_text(target, "fresh")
    assert target.read_text() == "fresh" and stale.read_text() == "leftover"


def test_a_file_where_the_folder_should_be_is_an_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "file" / "x.bin", b"data")
