"""preprocess.atomic: whole files or nothing, normal permissions, missing folders made."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

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


def test_temp_dir_keeps_temp_files_out_of_the_target_folder(tmp_path):
    staging, target = tmp_path / "staging" / "123", tmp_path / "out" / "cls" / "x.png"
    atomic_write_bytes(target, b"png bytes", staging)  # both folders are made on demand
    assert target.read_bytes() == b"png bytes"
    assert list(staging.iterdir()) == [] and sorted(p.name for p in target.parent.iterdir()) == ["x.png"]


def test_temp_dir_on_another_filesystem_falls_back_to_beside_the_target(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem (/dev/shm)")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        atomic_write_bytes(tmp_path / "x.bin", b"across", other)
        assert (tmp_path / "x.bin").read_bytes() == b"across"
        assert os.listdir(other) == [] and leftovers(tmp_path) == []


def _write_many(args):
    out, staging, worker = args
    for i in range(40):  # every file goes to a folder that another process may be making right now
        atomic_write_bytes(out / f"split{i % 8}" / f"class{i % 5}" / f"w{worker}_{i}.bin", b"x" * 100,
                           staging / str(worker))
    return worker


def test_processes_making_the_same_missing_folders_all_succeed(tmp_path):
    """preprocess's workers race to create class folders; none may lose the race and fail."""
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(4) as pool:
        for attempt in range(5):
            out, staging = tmp_path / f"out{attempt}", tmp_path / f"staging{attempt}"
            assert sorted(pool.map(_write_many, [(out, staging, w) for w in range(4)])) == [0, 1, 2, 3]
            assert len(list(out.rglob("*.bin"))) == 160
