"""`--shard K/N` + `--merge-shards N`: N processes render side by side into one tree; the merge gives
the PNGs and the manifest of a one-process run, byte for byte."""
from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from preprocess import prepare, shards
from tests.conftest import REPO
from tests.test_standin import WORDS, backdate, make_standin, read_rows

SHARDS = 3


def pngs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def command(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "preprocess", "--source", "speechcommands", "--root", str(root),
            "--words", *WORDS, "--out", str(out), "--workers", "1", "--quiet", *extra]


def run_shards(root: Path, out: Path, count: int = SHARDS) -> list[subprocess.CompletedProcess]:
    """All shards at once, as separate processes (as separate machines would)."""
    procs = [subprocess.Popen(command(root, out, "--shard", f"{k}/{count}"), cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k in range(1, count + 1)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return results


def merge(out: Path, count: int = SHARDS) -> subprocess.CompletedProcess:
    """In this process (it holds no lock): `python -m preprocess --merge-shards N --out OUT`."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = prepare.main(["--merge-shards", str(count), "--out", str(out)])
    return subprocess.CompletedProcess("merge", code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards") / "speech_commands"
    assert make_standin(root, per_word=20) == 0
    backdate(root)  # old files, so both runs record the same file stats
    return root


def test_shard_slices_are_disjoint_stable_and_cover_everything():
    sources = [f"w/{i:08x}_nohash_0.wav" for i in range(3000)]
    slots = [shards.shard_of(s, 4) for s in sources]
    assert set(slots) == {1, 2, 3, 4} and all(600 < slots.count(k) < 900 for k in range(1, 5))
    assert [shards.shard_of(s, 4) for s in sources[:10]] == slots[:10]  # a function of the path alone
    assert shards.parse_shard("2/4") == shards.Shard(2, 4)
    for bad in ("0/4", "5/4", "4", "a/b", "1/0"):
        with pytest.raises(shards.ShardError, match="K/N"):
            shards.parse_shard(bad)


@pytest.mark.slow  # 6 shard processes that import torch
def test_sharded_render_equals_one_process_run(dataset, tmp_path):
    one = tmp_path / "one"
    assert prepare.main(command(dataset, one, "--workers", "2")[3:]) == 0

    out = tmp_path / "sharded"
    results = run_shards(dataset, out)
    assert [r.returncode for r in results] == [0] * SHARDS, [r.stderr for r in results]
    assert all(f"--merge-shards {SHARDS}" in r.stdout for r in results)
    assert not (out / prepare.MANIFEST).exists()
    done = merge(out)
    assert done.returncode == 0, done.stderr
    assert f"rendered {len(WORDS) * 20}, up to date 0, failed 0" in done.stdout
    assert pngs(out) == pngs(one)
    assert (out / prepare.MANIFEST).read_bytes() == (one / prepare.MANIFEST).read_bytes()
    assert not (out / shards.PARTS_DIR).exists() and not (out / prepare.STAGING).exists()

    # a sharded re-run has nothing to do; after a clip is deleted the merge removes its PNG
    gone = read_rows(one)[0]
    (dataset / gone["source"]).unlink()
    results = run_shards(dataset, out)
    assert sum(int(r.stdout.split("rendered ")[1].split(",")[0]) for r in results) == 0
    done = merge(out)
    assert done.returncode == 0 and "stale PNGs removed 1" in done.stdout
    assert not (out / gone["png"]).exists()
    assert [r["source"] for r in read_rows(out)] == [r["source"] for r in read_rows(one)][1:]


@pytest.mark.slow
def test_merge_refuses_missing_or_inconsistent_parts_and_runs_exclude_each_other(dataset, tmp_path):
    out = tmp_path / "images"
    assert prepare.main(command(dataset, out, "--shard", "1/2")[3:]) == 0  # in this process: no lock held after
    done = merge(out, 2)
    assert done.returncode == 2 and "shards 2-of-2 have not finished" in done.stderr
    assert not (out / prepare.MANIFEST).exists()

    # a part made from another clip list is refused
    extra = tmp_path / "extra"
    shutil.copytree(dataset, extra)
    (extra / "yes" / "00000000_nohash_0.wav").write_bytes((next((extra / "yes").glob("*.wav"))).read_bytes())
    alien = tmp_path / "alien"
    assert prepare.main(command(extra, alien, "--shard", "2/2")[3:]) == 0
    shutil.copy(shards.part_csv(alien, shards.Shard(2, 2)), shards.part_csv(out, shards.Shard(2, 2)))
    shutil.copy(shards.part_record(alien, shards.Shard(2, 2)), shards.part_record(out, shards.Shard(2, 2)))
    done = merge(out, 2)
    assert done.returncode == 2 and "different clip lists" in done.stderr

    # while a one-process run (or merge) holds OUT, no shard starts, and the other way round
    with prepare.out_dir_lock(out, None):
        busy = subprocess.run(command(dataset, out, "--shard", "1/2"), cwd=REPO, capture_output=True, text=True)
    assert busy.returncode == 2 and "a one-process run or a merge" in busy.stderr
    with prepare.out_dir_lock(out, shards.Shard(1, 2)):
        again = subprocess.run(command(dataset, out, "--shard", "1/2"), cwd=REPO, capture_output=True, text=True)
        whole = subprocess.run(command(dataset, out), cwd=REPO, capture_output=True, text=True)
        other = subprocess.run(command(dataset, out, "--shard", "2/2"), cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 2 and "shard 1-of-2 is already running" in again.stderr
    assert whole.returncode == 2 and "another `python -m preprocess` is writing there" in whole.stderr
    assert other.returncode == 0  # shards run side by side
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        forced = prepare.main(command(dataset, out, "--shard", "1/2", "--force")[3:])
    assert forced == 2 and "--force cannot be used with --shard" in stderr.getvalue()
