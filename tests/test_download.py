"""Speech Commands download path against a local HTTP server on 127.0.0.1 (no network)."""
from __future__ import annotations

import csv
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from preprocess import download, prepare

SR = 16000


def wav_bytes(freq: float) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(SR // 2) / SR
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, format="WAV")
    return buffer.getvalue()


def build_tarball(path: Path, extra: list[tarfile.TarInfo] | None = None) -> Path:
    """A miniature speech_commands_v0.02.tar.gz: same layout (no top folder), a few clips per word."""
    files = {f"{word}/spk{i}_nohash_0.wav": wav_bytes(300 + 200 * w + 20 * i)
             for w, word in enumerate(("yes", "no", "left")) for i in range(4)}
    files["_background_noise_/noise.wav"] = wav_bytes(50)
    files["validation_list.txt"] = b"yes/spk1_nohash_0.wav\nno/spk1_nohash_0.wav\n"
    files["testing_list.txt"] = b"yes/spk2_nohash_0.wav\nleft/spk2_nohash_0.wav\n"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


class Server:
    """Serves one file; honours Range (or not), can cut the first response short to break a download."""

    def __init__(self, payload: bytes, ranges=True, cut_after: int | None = None):
        self.payload, self.ranges, self.cut_after, self.requests = payload, ranges, cut_after, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.headers.get("Range"))
                start = 0
                header = self.headers.get("Range")
                if server.ranges and header and header.startswith("bytes="):
                    start = int(header[6:].split("-")[0])
                    if start >= len(server.payload):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    size = len(server.payload)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                body = server.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:  # promise everything, send a part, hang up
                    body, server.cut_after = body[:server.cut_after], None
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/speech_commands_v0.02.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def tarball(tmp_path) -> tuple[bytes, str]:
    data = build_tarball(tmp_path / "source.tar.gz").read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def test_download_extract_and_preprocess(tmp_path, tarball):
    data, sha = tarball
    out, data_dir = tmp_path / "images", tmp_path / "data"
    with Server(data) as server:
        code = prepare.main(["--source", "speechcommands", "--data-dir", str(data_dir), "--url", server.url,
                             "--sha256", sha, "--words", "yes", "no", "--out", str(out),
                             "--workers", "1", "--quiet"])
    assert code == 0
    assert sorted(p.name for p in data_dir.iterdir()) == ["speech_commands_v0.02",
                                                          "speech_commands_v0.02.tar.gz"]
    with open(out / "manifest.csv", newline="") as handle:
        splits = {r["source"]: r["split"] for r in csv.DictReader(handle)}
    assert len(splits) == 8  # yes + no only, never _background_noise_
    assert splits["yes/spk1_nohash_0.wav"] == "val" and splits["no/spk1_nohash_0.wav"] == "val"
    assert splits["yes/spk2_nohash_0.wav"] == "test" and splits["no/spk2_nohash_0.wav"] == "train"
    assert sum(s == "train" for s in splits.values()) == 5
    # second run: the extracted copy is reused, nothing is fetched
    assert prepare.main(["--source", "speechcommands", "--data-dir", str(data_dir),
                         "--url", "http://127.0.0.1:9/none", "--out", str(out), "--workers", "1",
                         "--quiet"]) == 0


def test_wrong_checksum_fails_cleanly(tmp_path, tarball, capsys):
    data, _ = tarball
    data_dir = tmp_path / "data"
    with Server(data) as server:
        code = prepare.main(["--source", "speechcommands", "--data-dir", str(data_dir), "--url", server.url,
                             "--sha256", "0" * 64, "--out", str(tmp_path / "images"), "--quiet"])
    assert code == 2
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert list(data_dir.iterdir()) == []  # no tarball, no .part, nothing extracted
    assert not (tmp_path / "images").exists()


def test_interrupted_download_resumes(tmp_path, tarball):
    data, sha = tarball
    dest = tmp_path / "sc.tar.gz"
    with Server(data, cut_after=len(data) // 3) as server:
        with pytest.raises(download.DownloadError, match="run again to resume"):
            download.download(server.url, dest, sha, progress=False)
        part = dest.with_name(dest.name + ".part")
        assert part.stat().st_size == len(data) // 3 and not dest.exists()
        download.download(server.url, dest, sha, progress=False)
        assert server.requests == [None, f"bytes={len(data) // 3}-"]
    assert dest.read_bytes() == data and not part.exists()


def test_server_without_ranges_restarts_cleanly(tmp_path, tarball):
    data, sha = tarball
    dest = tmp_path / "sc.tar.gz"
    dest.with_name(dest.name + ".part").write_bytes(b"stale half download")
    with Server(data, ranges=False) as server:
        download.download(server.url, dest, sha, progress=False)
    assert dest.read_bytes() == data


@pytest.fixture(params=["stdlib filter", "no stdlib filter"])
def extraction(request, monkeypatch):
    """Both extraction paths: Python >= 3.11.4 (tarfile's "data" filter) and older ones without it."""
    if request.param == "no stdlib filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


def test_extraction_keeps_the_files_and_takes_no_special_mode_from_the_archive(tmp_path, extraction):
    setuid = tarfile.TarInfo("yes/setuid_nohash_0.wav")
    setuid.size, setuid.mode = 3, 0o4777
    archive = build_tarball(tmp_path / "sc.tar.gz", extra=[setuid])
    target = download.safe_extract(archive, tmp_path / "data" / "speech_commands_v0.02")
    assert (target / "yes" / "spk0_nohash_0.wav").read_bytes()[:4] == b"RIFF"
    assert (target / "testing_list.txt").read_bytes().startswith(b"yes/spk2")
    mode = (target / "yes" / "setuid_nohash_0.wav").stat().st_mode
    assert not mode & 0o4000 and not mode & 0o002, oct(mode)


@pytest.mark.parametrize("name,kind", [
    ("../escape.txt", tarfile.REGTYPE), ("yes/../../escape.txt", tarfile.REGTYPE),
    ("/tmp/absolute.txt", tarfile.REGTYPE), ("yes/link", tarfile.SYMTYPE)])
def test_unsafe_members_are_refused(tmp_path, name, kind, extraction):
    member = tarfile.TarInfo(name)
    member.type = kind
    if kind == tarfile.SYMTYPE:
        member.linkname = "../../../etc/passwd"
    else:
        member.size = 3
    archive = build_tarball(tmp_path / "evil.tar.gz", extra=[member])
    target = tmp_path / "data" / "speech_commands_v0.02"
    with pytest.raises(download.DownloadError, match="refusing member"):
        download.safe_extract(archive, target)
    assert not target.exists() and list(target.parent.iterdir()) == []  # nothing half-extracted
    assert not (tmp_path / "escape.txt").exists()
