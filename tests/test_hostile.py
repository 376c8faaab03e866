"""Hostile and huge inputs (issue 11): no hang, bounded memory, one clear error per bad file.

Every case is built here from generated signals. Memory cases are scaled down (minutes, not hours)
and compared side by side with the same command on a 1 s clip, in fresh processes that read their own
peak RSS (bench.hostile.peak_rss_mb, resource.getrusage). Every subprocess has a timeout: a
hang fails the test instead of stalling the suite.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from preprocess import assets, cli, prepare, render_tasks
from preprocess.atomic import remove_stale_temps
from preprocess.render import RenderSettings, render_file, resample, save_png
from bench.scale import children_by_parent
from train import evaluate as evaluate_cli, report
from bench.hostile import peak_rss_mb, write_clip, write_long_wav, write_model

PYTHON = sys.executable
TIMEOUT = 300  # seconds; generous for a loaded 2-core machine, finite so nothing can hang the suite


# ---------------------------------------------------------------- builders

def sparse_wav(path: Path, seconds: float, rate: int, channels: int = 1) -> Path:
    """A valid 16-bit WAV header declaring `seconds` of audio; the data is a hole (no disk used)."""
    size = int(seconds * rate) * channels * 2
    with open(path, "wb") as handle:
        handle.write(b"RIFF" + struct.pack("<I", min(36 + size, 2**32 - 1)) + b"WAVEfmt "
                     + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
                     + b"data" + struct.pack("<I", min(size, 2**32 - 1)))
        handle.truncate(44 + size)
    return path


def png_bomb(path: Path, side: int) -> Path:
    """A valid gray PNG of side x side zero pixels (20000: 400 M pixels in a few hundred KB), built from
    one compressed block of 500 rows repeated: a full flush ends the block at a byte boundary with no
    reference to earlier data, so copies of it decode one after the other (the zlib header and the
    Adler-32 of all rows around them). Never 400 MB in memory, nor compressed (that took seconds)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"\x00" * ((side + 1) * 500)  # filter byte + pixels, 500 rows
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the zlib framing is written here
    block = packer.compress(rows) + packer.flush(zlib.Z_FULL_FLUSH)
    size = len(rows) * (side // 500)
    checksum = (size % 65521) << 16 | 1  # Adler-32 of `size` zero bytes: sum 1, sum of sums `size`
    data = (b"\x78\xda" + block * (side // 500) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
            + struct.pack(">I", checksum))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def clips(folder: Path, count: int = 6, rate: int = 16000) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"s{i}_nohash_0.wav" for i in range(count)]
    for i, path in enumerate(paths):
        write_clip(path, rate, seed=i)
    return paths


def run(args: list[str], timeout: float = TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def manifest(out: Path) -> dict[str, dict]:
    with open(out / "manifest.csv", newline="") as handle:
        return {row["source"]: row for row in csv.DictReader(handle)}


def lock_is_free(out: Path) -> bool:
    with open(out / prepare.LOCK_FILE, "r+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    write_model(path)
    return path


@pytest.fixture(scope="module")
def slow_root(tmp_path_factory) -> Path:
    """Good clips plus one that takes seconds to render: a sparse 50-minute 44101 Hz recording."""
    root = tmp_path_factory.mktemp("slow")
    clips(root / "yes")
    clips(root / "no")
    sparse_wav(root / "yes" / "slow_nohash_0.wav", 3000, 44101)
    return root


# ---------------------------------------------------------------- 1. worker death

@pytest.mark.slow  # fresh processes that import torch
def test_stuck_worker_is_killed_named_and_the_rest_rendered(slow_root, tmp_path):
    out = tmp_path / "images"
    result = run(["-m", "preprocess", "--source", "folder", "--root", str(slow_root), "--out", str(out),
                  "--workers", "2", "--clip-timeout", "1", "--quiet"])
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    rows = manifest(out)
    assert rows["yes/slow_nohash_0.wav"]["status"] == "failed"
    assert "longer than 1 s" in rows["yes/slow_nohash_0.wav"]["reason"]
    assert "yes/slow_nohash_0.wav: rendering took longer" in result.stdout  # the summary names it
    assert sum(r["status"] == "ok" for r in rows.values()) == 12  # every good clip, once
    assert len(list(out.glob("*/*/*.png"))) == 12
    assert lock_is_free(out)


def _forked_children(pid: int) -> list[int]:
    """The children of `pid` running its own executable: its forked workers. Not the short-lived helpers
    started while it imports (ctypes.util.find_library runs `ldconfig -p`): catching one of those in
    the poll below, then killing nothing, made this test flaky."""
    found = []
    with contextlib.suppress(OSError):
        executable = os.readlink(f"/proc/{pid}/exe")
        for child in children_by_parent().get(pid, []):
            with contextlib.suppress(OSError):  # the child ended meanwhile
                if os.readlink(f"/proc/{child}/exe") == executable:
                    found.append(child)
    return found


@pytest.mark.slow  # several fresh processes that import torch
def test_worker_killed_with_sigkill_does_not_hang_the_run(slow_root, tmp_path):
    out = tmp_path / "images"
    process = subprocess.Popen([PYTHON, "-m", "preprocess", "--source", "folder", "--root", str(slow_root),
                                "--out", str(out), "--workers", "2", "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        victims: list[int] = []
        while not victims and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            victims = _forked_children(process.pid)
        assert victims, f"no worker process appeared (exit {process.poll()})"
        time.sleep(0.5)
        os.kill(victims[0], signal.SIGKILL)  # the OOM killer's signal, at an arbitrary moment
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 0, stderr  # the killed worker's clips are rendered again
    assert "Traceback" not in stderr
    assert all(row["status"] == "ok" for row in manifest(out).values())
    assert len(list(out.glob("*/*/*.png"))) == 13
    assert lock_is_free(out)


# ---------------------------------------------------------------- 2. awkward sample rates

@pytest.mark.parametrize("rate", [1000, 4001, 8001, 44101, 96001, 192000])
def test_awkward_rates_resample_in_bounded_time(rate):
    wave = np.random.default_rng(0).standard_normal(rate).astype(np.float32)
    start = time.perf_counter()
    out = resample(wave, rate, 16000)
    assert time.perf_counter() - start < 5.0  # torchaudio's kernel for 96001 Hz alone would be 12 GB
    assert out.dtype == np.float32 and abs(len(out) - 16000) <= 1 and np.isfinite(out).all()


@pytest.mark.slow  # several fresh processes that import torch
def test_awkward_rates_cost_no_more_memory_than_16_khz(model, tmp_path):
    awkward = [tmp_path / f"clip_{rate}.wav" for rate in (4001, 8001, 44101, 96001)]
    for path, rate in zip(awkward, (4001, 8001, 44101, 96001)):
        write_clip(path, rate)
    write_clip(tmp_path / "clip_16000.wav", 16000)
    code, base, _, _ = peak_rss_mb("train.predict", ["--model", str(model), str(tmp_path / "clip_16000.wav")],
                                   TIMEOUT)
    assert code == 0
    code, peak, _, err = peak_rss_mb("train.predict", ["--model", str(model), *map(str, awkward)], TIMEOUT)
    assert code == 0, err
    assert peak <= 1.1 * base, f"{peak:.0f} MB for the awkward rates vs {base:.0f} MB at 16 kHz"


# ---------------------------------------------------------------- 3. long and lying files

@pytest.fixture(scope="module")
def long_root(tmp_path_factory) -> Path:
    """A 5-minute 48 kHz stereo recording (55 MB) in a class folder, and a 1 s clip for the baseline."""
    root = tmp_path_factory.mktemp("long")
    (root / "long" / "yes").mkdir(parents=True)
    write_long_wav(root / "long" / "yes" / "recording.wav", 5.0)
    clips(root / "short" / "yes", 1)
    return root


@pytest.mark.slow  # several fresh processes that import torch
def test_long_recording_preprocess_worker_memory_is_bounded(long_root, tmp_path):
    flags = ["--source", "folder", "--workers", "1", "--quiet", "--val-pct", "0", "--test-pct", "0"]
    code, base, _, _ = peak_rss_mb("preprocess", [*flags, "--root", str(long_root / "short"),
                                                  "--out", str(tmp_path / "a")], TIMEOUT)
    assert code == 0
    code, peak, _, err = peak_rss_mb("preprocess", [*flags, "--root", str(long_root / "long"),
                                                    "--out", str(tmp_path / "b")], TIMEOUT)
    assert code == 0, err
    # read whole and decoded whole it cost ~+300 MB (bytes, float32 stereo, mono, resampled)
    assert peak - base < 60, f"{peak:.0f} MB vs {base:.0f} MB for a 1 s clip"


@pytest.mark.slow  # several fresh processes that import torch
def test_long_recording_predict_scan_memory_is_bounded(model, long_root):
    code, base, _, _ = peak_rss_mb("train.predict", ["--model", str(model),
                                                     str(long_root / "short" / "yes" / "s0_nohash_0.wav")], TIMEOUT)
    assert code == 0
    code, peak, _, err = peak_rss_mb("train.predict", ["--model", str(model),
                                                       str(long_root / "long" / "yes" / "recording.wav")], TIMEOUT)
    assert code in (0, 1), err  # an untrained model may detect nothing; the scan itself must finish
    assert "Traceback" not in err
    assert peak - base < 60, f"{peak:.0f} MB vs {base:.0f} MB for a 1 s clip"


@pytest.mark.slow  # fresh processes that import torch
def test_lying_and_huge_files_are_refused_before_decoding(model, tmp_path):
    root = tmp_path / "audio"
    clips(root / "yes")
    clips(root / "no")
    sparse_wav(root / "yes" / "forged_nohash_0.wav", 50_000, 16000)  # header: 1.6 GB, 13.9 hours
    with open(root / "no" / "hole_nohash_0.wav", "wb") as handle:   # 1.5 GB of nothing named .wav
        handle.truncate(1500 * 2**20)
    out = tmp_path / "images"
    code, peak, _, err = peak_rss_mb("preprocess", ["--source", "folder", "--root", str(root), "--out", str(out),
                                                    "--workers", "1", "--quiet"], TIMEOUT)
    assert code == 1, err
    rows = manifest(out)
    assert "header declares 50000 s of audio, more than the limit" in rows["yes/forged_nohash_0.wav"]["reason"]
    assert "cannot decode audio" in rows["no/hole_nohash_0.wav"]["reason"]
    assert sum(r["status"] == "ok" for r in rows.values()) == 12
    assert peak < 1500, f"{peak:.0f} MB"  # the 1.5 GB file was never read into memory
    result = run(["-m", "train.predict", "--model", str(model), "--max-seconds", "60",
                  str(root / "yes" / "forged_nohash_0.wav"), str(root / "yes" / "s0_nohash_0.wav")])
    assert result.returncode == 1
    assert "forged_nohash_0.wav: header declares 50000 s of audio" in result.stderr
    assert "s0_nohash_0.wav  " in result.stdout


# ---------------------------------------------------------------- 4. image bombs

@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return png_bomb(folder / "huge.png", 20000), png_bomb(folder / "big.png", 13000)


def good_png(path: Path, seed: int = 0) -> Path:
    clip = path.with_suffix(".wav")
    write_clip(clip, 16000, seed=seed)
    settings = RenderSettings()
    save_png(render_file(clip, settings), path, {"settings_hash": settings.digest()})
    return path


@pytest.mark.slow  # fresh processes that import torch
def test_image_bombs_are_named_and_the_other_inputs_answered(model, bombs, tmp_path):
    good = good_png(tmp_path / "good.png")
    code, peak, _, err = peak_rss_mb("train.predict", ["--model", str(model), str(bombs[0]), str(good),
                                                       str(bombs[1])], TIMEOUT)
    assert code == 1
    assert f"{bombs[0]}: image is 20000x20000 pixels, more than the limit" in err
    assert f"{bombs[1]}: image is 13000x13000 pixels, more than the limit" in err
    assert "Traceback" not in err
    assert peak < 1200, f"{peak:.0f} MB"  # decoding the 13000x13000 one alone took 3.8 GB


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "audio"
    for label in ("yes", "no"):
        clips(root / label, 12)
    out = tmp_path / "images"
    assert prepare.main(["--source", "folder", "--root", str(root), "--out", str(out), "--workers", "1",
                         "--quiet", "--val-pct", "25", "--test-pct", "25"]) == 0
    return out


def test_train_and_evaluate_name_a_bad_png_before_starting(images, model, bombs, tmp_path, capsys):
    from train.train import main as train_main
    victim = sorted((images / "train" / "yes").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:3000])  # truncated mid-pixels
    fast = ["--no-progress", "--workers", "0", "--threads", "1", "--epochs", "1", "--batch-size", "8"]
    assert train_main(["--images", str(images), "--out", str(tmp_path / "m"), *fast]) == 2
    err = capsys.readouterr().err
    assert f"{victim}: corrupt PNG" in err and "--skip-bad-images" in err
    assert not (tmp_path / "m" / "model.pt").exists()

    bomb = images / "val" / "no" / "bomb.png"
    bomb.write_bytes(bombs[0].read_bytes())
    assert evaluate_cli.main(["--model", str(model), "--images", str(images / "val")]) == 2
    assert f"{bomb}: image is 20000x20000 pixels" in capsys.readouterr().err
    assert evaluate_cli.main(["--model", str(model), "--images", str(images / "val"), "--skip-bad-images"]) == 1
    captured = capsys.readouterr()
    assert f"skipped: {bomb}" in captured.err and "accuracy" in captured.out


@pytest.mark.slow  # fresh processes that import torch
def test_sheet_draws_a_bomb_as_a_flagged_tile(images, bombs, tmp_path):
    (images / "test" / "yes" / "bomb.png").write_bytes(bombs[0].read_bytes())
    result = run(["-m", "preprocess.sheet", str(images), "--out", str(tmp_path / "sheet.png")])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sheet.png").is_file()


# ---------------------------------------------------------------- 5. the report's paths

def test_pages_read_only_audio_files_inside_their_folders(tmp_path):
    images, secret = tmp_path / "images", tmp_path / "secret.txt"
    (images / "test" / "yes").mkdir(parents=True)
    secret.write_text("password")
    (images / "test" / "yes" / "link.png").symlink_to(secret)
    assert assets.contained_file(images, "../secret.txt") is None
    assert assets.contained_file(images, str(secret)) is None
    good = good_png(images / "test" / "yes" / "a%b#c?d.png")
    assert assets.contained_file(images, "test/yes/a%b#c?d.png") == good.resolve()
    assert report.url("img/test/yes/a%b#c?d.png") == "img/test/yes/a%25b%23c%3Fd.png"

    inputs = report.Inputs("m", {}, {}, images, None, [{"png": "test/yes/x.png", "source": "secret.txt"}],
                           tmp_path)  # a crafted render.json root and manifest row
    copier = report.Assets(tmp_path / "out", inputs)
    assert copier.audio("test/yes/x.png") is None and copier.missing_audio == 1  # not audio: never copied
    assert copier.image("test/yes/link.png")[0] is None  # a planted link to a non-PNG: never copied
    assert copier.image("../secret.txt")[0] is None and copier.missing_images == 2
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 6. smaller items

def test_lock_file_symlink_does_not_clobber_its_target(tmp_path, capsys):
    root = tmp_path / "audio"
    clips(root / "yes")
    clips(root / "no")
    out, precious = tmp_path / "images", tmp_path / "precious.txt"
    out.mkdir()
    precious.write_text("keep me")
    (out / prepare.LOCK_FILE).symlink_to(precious)
    assert prepare.main(["--source", "folder", "--root", str(root), "--out", str(out), "--quiet"]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert precious.read_text() == "keep me"


def run_command(main, argv: list[str], capsys) -> tuple[int, str]:
    """`python -m ...` in this process: the same `cli.run(main)` its __main__ runs -> (exit status,
    stderr). An exception that would print a traceback there propagates here and fails the test."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, argv)
    return exit_info.value.code, capsys.readouterr().err


def test_bad_out_folders_are_one_line_errors(tmp_path, model, capsys):
    from train import export

    root = tmp_path / "audio"
    clips(root / "yes")
    clips(root / "no")
    (tmp_path / "file").write_text("x")
    for out, message in ((tmp_path / "file", "is a file, not a folder"), (root, "is inside the audio root"),
                         (root / "images", "is inside the audio root")):
        code, err = run_command(prepare.main, ["--source", "folder", "--root", str(root), "--out", str(out),
                                               "--quiet"], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    code, err = run_command(export.main, ["--model", str(model), "--format", "torchscript", "--out", str(tmp_path)],
                            capsys)
    assert code == 2 and "is a folder" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow  # fresh processes that import torch
def test_fifos_folders_and_garbage_named_like_clips_are_failed_not_skipped(tmp_path):
    root = tmp_path / "audio"
    clips(root / "yes")
    clips(root / "no")
    os.mkfifo(root / "yes" / "pipe_nohash_0.wav")        # opening it for reading would block for ever
    (root / "no" / "folder_nohash_0.wav").mkdir()
    (root / "no" / "text_nohash_0.wav").write_text("not audio")
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        result = run(["-m", "preprocess", "--source", "folder", "--root", str(root), "--out", str(out),
                      "--workers", "1", "--quiet"], timeout=120)
        assert result.returncode == 1, result.stderr
    rows = manifest(first)
    assert "not a regular file (a FIFO)" in rows["yes/pipe_nohash_0.wav"]["reason"]
    assert "not a regular file (a folder)" in rows["no/folder_nohash_0.wav"]["reason"]
    assert "0x" not in rows["no/text_nohash_0.wav"]["reason"]  # no object address: runs are comparable
    # the same rows, reasons included; size/mtime_ns are left out: a clip written under 2 s before a
    # run is not trusted by its stat (plan.RACY_WINDOW_NS), so the first run may leave them empty
    def comparable(out):
        return [{k: v for k, v in row.items() if k not in ("size", "mtime_ns")} for row in manifest(out).values()]
    assert comparable(first) == comparable(second)


def test_full_disk_is_exit_2_with_one_line(tmp_path, monkeypatch, capsys):
    root = tmp_path / "audio"
    clips(root / "yes")
    clips(root / "no")

    def full(image, path, metadata=None, temp_dir=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(render_tasks, "save_png", full)
    assert prepare.main(["--source", "folder", "--root", str(root), "--out", str(tmp_path / "i"),
                         "--workers", "1", "--quiet"]) == 2
    assert "no space left on the device" in capsys.readouterr().err

    def main(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "x.png")
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main)
    assert exit_info.value.code == 2


def test_stale_temp_of_a_killed_save_is_removed(tmp_path):
    target = tmp_path / "model.pt"
    dead = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.pt.{dead.stdout.strip()}-0.tmp"
    live = tmp_path / f".model.pt.{os.getppid()}-0.tmp"
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"a concurrent save")
    assert remove_stale_temps(target) == 1
    assert not stale.exists() and live.exists()


@pytest.mark.slow  # fresh processes that import torch
def test_closed_pipe_is_quiet(model, tmp_path):
    pngs = [str(good_png(tmp_path / f"p{i}.png", i)) for i in range(3)] * 200
    command = [PYTHON, "-m", "train.predict", "--model", str(model), *pngs]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        process.stdout.readline()
        process.stdout.close()  # `| head -1`
        err = process.stderr.read().decode()
        process.wait(timeout=TIMEOUT)
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert process.returncode in (0, cli.EXIT_BROKEN_PIPE)
