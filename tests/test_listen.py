"""train.listen and train.stream: live keyword spotting on stdin PCM, files and a microphone.

The words are test_predict's long recording (six real test-split words from six unseen speakers in
15 s of silence and four kinds of background noise, each word's time known), and the model the one
that finds them all in that file (conftest `real_model`; the session's synthetic model, two epochs,
is too weak to be sure of a word seen through shifted windows). The stream must find them where
they are, print each one before the stream has ended, and agree with the file scanner
(detect.scan_file) on the same audio: the same words, times within one hop. The tests that need
no model (bounded history, the microphone's failures, usage) run everywhere.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from preprocess import cli
from preprocess.render import RenderSettings
from test_predict import NOISE_DB, _background, build_recording
from train import detect, listen, stream
from train.predict import Predictor

RATE = 16000


def pcm16(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


def noise_bed(seconds: float, rng, db: float = -55.0) -> np.ndarray:
    return (rng.standard_normal(int(seconds * RATE)) * 10 ** (db / 20)).astype(np.float32)


@pytest.fixture(scope="module")
def model_path(real_model) -> Path:
    return real_model / "model.pt"


@pytest.fixture(scope="module")
def predictor(model_path) -> Predictor:
    return Predictor(model_path)


@pytest.fixture(scope="module")
def recording(predictor, real_images, real_data, tmp_path_factory):
    """-> (path, float32 wave as 16-bit PCM gives it, [(label, centre s)]): test_predict's recording."""
    path = tmp_path_factory.mktemp("listen") / "long.wav"
    truth = build_recording(predictor, real_images, real_data, path)
    wave, rate = sf.read(path, dtype="float32")
    assert rate == RATE
    wave = np.frombuffer(pcm16(wave), "<i2").astype(np.float32) / 32768  # what stdin carries
    sf.write(path, wave, RATE, subtype="FLOAT")
    return path, wave, truth


def listen_command(model: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "train.listen", "--model", str(model), *args]


def listen_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def default_sigint() -> None:
    """In the child before exec: Ctrl-C as a terminal gives it. A shell's background job starts with
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the tests' Ctrl-C would
    be lost wherever the suite itself was started in the background."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_listen(model: Path, *args: str, stdin: bytes = b"", timeout: float = 300):
    return subprocess.run(listen_command(model, *args), input=stdin, capture_output=True, cwd=REPO,
                          env=listen_env(), timeout=timeout)


def check_found(found: list[dict], truth: list[tuple[str, float]], tolerance: float = 0.25) -> None:
    """test_predict's check of the file scan: each word once, with its label, near its centre."""
    assert [d["label"] for d in found] == [label for label, _ in truth], (found, truth)
    for d, (label, centre) in zip(found, truth):
        assert abs(d["time"] - centre) <= tolerance, (d, centre)
        assert d["start"] <= centre <= d["end"] and d["end"] - d["start"] <= 1.0


# ---------------------------------------------------------------- stdin: the output contract

@pytest.mark.slow
def test_stdin_pcm_words_at_their_times_json_exit_0(model_path, recording):
    _, wave, truth = recording
    done = run_listen(model_path, "-", "--rate", str(RATE), "--json", stdin=pcm16(wave))
    assert done.returncode == 0, done.stderr.decode()
    found = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert all({"label", "confidence", "start", "end", "time"} <= set(d) for d in found)
    check_found(found, truth)
    assert "end of stream" in done.stderr.decode() and "Traceback" not in done.stderr.decode()


@pytest.mark.slow
def test_stdin_noise_alone_gives_no_detection(model_path, real_data):
    """The recording's noises without its words: silence, white noise, a running tap, dishes, an
    exercise bike, over a pink-noise bed."""
    pieces = [np.zeros(RATE, np.float32)]
    for name in ("white_noise.wav", "running_tap.wav", "doing_the_dishes.wav", "exercise_bike.wav"):
        pieces += [_background(real_data, name, 3.0, NOISE_DB, offset_s=20.0), np.zeros(RATE, np.float32)]
    wave = np.concatenate(pieces)
    wave += _background(real_data, "pink_noise.wav", len(wave) / RATE, NOISE_DB - 10, offset_s=30.0)
    done = run_listen(model_path, "-", "--json", stdin=pcm16(wave))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == ""
    assert "0 detection(s)" in done.stderr.decode()


@pytest.mark.slow
def test_stdin_at_48_khz_is_resampled(model_path, recording):
    import soxr
    _, wave, truth = recording
    done = run_listen(model_path, "-", "--rate", "48000", "--json",
                      stdin=pcm16(soxr.resample(wave, RATE, 48000)))
    assert done.returncode == 0, done.stderr.decode()
    check_found([json.loads(line) for line in done.stdout.decode().splitlines()], truth)


@pytest.mark.slow
def test_each_word_is_printed_before_the_stream_ends_and_ctrl_c_summarises(model_path, recording):
    """The first word, then nothing more while stdin stays open: the word is printed all the same;
    Ctrl-C then stops with a summary (130: a stdin stream cut short)."""
    _, wave, truth = recording
    first = wave[:int((truth[0][1] + 1.5) * RATE)]
    process = subprocess.Popen(listen_command(model_path, "-", "--json"), stdin=subprocess.PIPE,
                               preexec_fn=default_sigint,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=listen_env(),
                               bufsize=0)
    try:
        process.stdin.write(pcm16(first))
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "no detection printed while the stream was still open"
        check_found([json.loads(process.stdout.readline())], truth[:1])
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == cli.EXIT_INTERRUPTED, err.decode()
    assert "listen: stopped after" in err.decode() and f"1 detection(s) ({truth[0][0]} 1)" in err.decode()
    assert "Traceback" not in err.decode()


# ---------------------------------------------------------------- stream vs file

@pytest.mark.slow
def test_stream_equals_the_file_scan_whatever_the_block_sizes(predictor, model_path, recording):
    path, wave, truth = recording
    file_scan = detect.scan_file(predictor, path)
    hop_s = predictor.default_hop_s()
    results = []
    for seed in (0, 1):
        scanner = stream.StreamScanner(predictor)
        rng, found, at = np.random.default_rng(seed), [], 0
        while at < len(wave):
            size = int(rng.integers(1, 6000))
            found += scanner.push(wave[at:at + size])
            at += size
        results.append(found + scanner.finish())
    assert results[0] == results[1]  # how the stream is cut into blocks changes nothing
    found = results[0]
    assert [d.label for d in found] == [d.label for d in file_scan.detections] == [label for label, _ in truth]
    for live, offline in zip(found, file_scan.detections):
        assert abs(live.time - offline.time) <= hop_s, (live, offline)
    # the file through the command, as fast as it decodes: the same detections
    done = run_listen(model_path, str(path), "--json")
    assert done.returncode == 0, done.stderr.decode()
    assert [json.loads(line) for line in done.stdout.decode().splitlines()] == [d.to_dict() for d in found]


# ---------------------------------------------------------------- bounded memory (no model needed)

class FakePredictor:
    """What StreamScanner uses of a Predictor, with a 'model' that says yes for loud windows."""

    def __init__(self):
        self.settings = RenderSettings()
        self.classes, self.targets, self.channels = ["no", "yes"], ["no", "yes"], self.settings.channels

    def logits(self, batch):
        import torch
        loud = batch.mean(dim=(1, 2, 3)) > 0.3
        return torch.stack([torch.where(loud, -2.0, 2.0), torch.where(loud, 2.0, -2.0)], dim=1)

    def audio_tensor(self, wave):
        from preprocess.render import image_to_tensor, render_image
        return image_to_tensor(render_image(wave, self.settings), self.channels)

    def window_tensors(self, windows, hop):
        import torch
        return torch.stack([self.audio_tensor(w) for w in windows])

    def default_hop_s(self):
        return detect.DEFAULT_HOP_S

    def default_gate_db(self):
        return detect.ACTIVITY_MARGIN_DB


def test_an_hour_of_stream_holds_a_bounded_history():
    scanner = stream.StreamScanner(FakePredictor())
    rng = np.random.default_rng(0)
    block = noise_bed(1.0, rng, -50)
    sizes = []
    for second in range(240):  # four minutes: the history is trimmed many times over
        scanner.push(block)
        sizes.append((len(scanner.probs), len(scanner.levels), len(scanner.feeder.buffer),
                      len(scanner.recent)))
    scanner.finish()
    windows, levels, buffer, recent = np.array(sizes).max(axis=0)
    assert windows <= stream.HISTORY_S / detect.DEFAULT_HOP_S + 2
    assert levels <= stream.HISTORY_S / detect.FRAME_HOP_S + 10
    assert buffer <= 2 * scanner.window and recent <= 10
    assert scanner.seconds == 240 and scanner.windows == len(detect.window_starts(240 * RATE, scanner.window,
                                                                                   scanner.hop))


def test_history_trims_at_offsets_where_the_scan_is_unchanged():
    """Words every 3 s for a minute: the stream (history trimmed ~10 times) finds what the whole
    recording's scan finds, at the same times."""
    predictor = FakePredictor()
    rng = np.random.default_rng(3)
    t = np.arange(int(0.4 * RATE)) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * np.hanning(len(t))).astype(np.float32)
    pieces = []
    for _ in range(20):
        pieces += [noise_bed(2.6, rng, -50), tone + noise_bed(0.4, rng, -50)]
    wave = np.concatenate(pieces)
    offline = detect.scan(predictor, "x", wave)
    scanner = stream.StreamScanner(predictor)
    found = scanner.push(wave) + scanner.finish()
    assert scanner.origin > 0 and len(offline.detections) == 20
    assert [d.label for d in found] == [d.label for d in offline.detections]
    assert max(abs(a.time - b.time) for a, b in zip(found, offline.detections)) < 1e-6


# ---------------------------------------------------------------- the microphone and its failures

def run_main(argv) -> int:
    with pytest.raises(SystemExit) as exit_info:
        cli.run(listen.main, argv)
    return exit_info.value.code


def test_no_sounddevice_is_one_error_line_exit_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import sounddevice -> ImportError
    assert run_main(["--list-devices"]) == cli.EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pip install sounddevice" in err and "Traceback" not in err


class FakeDevices:
    """A sounddevice stand-in: one input device that delivers `blocks` blocks, then nothing."""

    class PortAudioError(Exception):
        pass

    def __init__(self, blocks: int, fail_open: bool = False):
        self.blocks, self.fail_open = blocks, fail_open

    def query_devices(self, device=None, kind=None):
        if device not in (None, 0):
            raise ValueError(f"No input device matching {device!r}")
        return {"name": "fake mic", "default_samplerate": 48000.0}

    def InputStream(self, device, channels, samplerate, dtype, blocksize, callback):
        if self.fail_open:
            raise self.PortAudioError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
        outer = self

        class Stream:
            def start(self):
                for _ in range(outer.blocks):
                    callback(np.zeros((blocksize, 1), np.float32), blocksize, None, None)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        return Stream()


def test_microphone_errors_are_clear(monkeypatch, tmp_path, capsys):
    model = tmp_path / "model.pt"
    monkeypatch.setattr(listen, "MIC_STALL_S", 0.2)
    monkeypatch.setattr("train.predict.Predictor", lambda path, device="cpu": FakePredictor())

    monkeypatch.setitem(sys.modules, "sounddevice", FakeDevices(0, fail_open=True))
    assert run_main(["--model", str(model)]) == cli.EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open the default microphone: ") and "Device unavailable" in err

    assert run_main(["--model", str(model), "--device", "7"]) == cli.EXIT_UNUSABLE
    assert "cannot open --device 7: No input device matching 7" in capsys.readouterr().err

    # a device that delivers a second of audio, then stops: a clear message, no hang, exit 1
    monkeypatch.setitem(sys.modules, "sounddevice", FakeDevices(50))
    started = time.monotonic()
    assert run_main(["--model", str(model)]) == cli.EXIT_INPUT_FAILED
    err = capsys.readouterr().err
    assert "fake mic at 48000 Hz" in err and "listen: failed after 1.0 s of audio" in err
    assert "error: fake mic: no audio for 0.2 s; the device stopped delivering" in err
    assert time.monotonic() - started < 30

    # Ctrl-C is how a microphone ends: a summary, exit 0
    def interrupt(self, scanner):
        raise KeyboardInterrupt
    monkeypatch.setattr(listen.Display, "level", interrupt)
    assert run_main(["--model", str(model)]) == cli.EXIT_OK
    err = capsys.readouterr().err
    assert "listen: stopped after" in err and "0 detection(s) (none)" in err and "Traceback" not in err


def test_usage_errors_exit_2(tmp_path, capsys):
    for argv, message in ((["-"], "--model is required"),
                          (["--model", "m.pt", "-", "--realtime"], "--realtime is for a file"),
                          (["--model", "m.pt", "a.wav", "--device", "1"], "--device is for the microphone"),
                          (["--model", "m.pt", "--threshold", "2"], "--threshold must be between 0 and 1")):
        with pytest.raises(SystemExit) as exit_info:
            listen.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert run_main(["--model", str(tmp_path / "missing.pt"), "-"]) == cli.EXIT_UNUSABLE
    assert capsys.readouterr().err.startswith("error: ")


# ---------------------------------------------------------------- a real (virtual) microphone

def pulse_null_source() -> str | None:
    """The monitor of a PulseAudio null sink as the default source, when this machine can make one
    (pulseaudio, pactl, PortAudio's ALSA pulse plugin); else None."""
    if not (shutil.which("pulseaudio") and shutil.which("pactl") and shutil.which("paplay")):
        return None
    try:
        listen.import_sounddevice()
    except Exception:
        return None
    subprocess.run(["pulseaudio", "--start", "--exit-idle-time=-1"], capture_output=True, timeout=30)
    if subprocess.run(["pactl", "info"], capture_output=True, timeout=10).returncode != 0:
        return None
    subprocess.run(["pactl", "load-module", "module-null-sink", "sink_name=specvision_test"],
                   capture_output=True, timeout=10)
    if subprocess.run(["pactl", "set-default-source", "specvision_test.monitor"],
                      capture_output=True, timeout=10).returncode != 0:
        return None
    return "specvision_test"


@pytest.mark.slow
def test_microphone_through_a_virtual_device(model_path, recording, tmp_path):
    sink = pulse_null_source()
    if sink is None:
        pytest.skip("no PulseAudio null sink on this machine (needs pulseaudio, pulseaudio-utils and "
                    "libasound2-plugins; .ci/run installs them)")
    _, wave, truth = recording
    clip = tmp_path / "words.wav"
    sf.write(clip, wave, RATE, subtype="PCM_16")
    process = subprocess.Popen(listen_command(model_path, "--json"), stdout=subprocess.PIPE,  # unbuffered:
                               preexec_fn=default_sigint,
                               stderr=subprocess.PIPE, cwd=REPO, env=listen_env(), bufsize=0)  # select() sees every line
    lines = []
    try:
        time.sleep(3)
        assert process.poll() is None, process.communicate()[1].decode()
        subprocess.run(["paplay", f"--device={sink}", str(clip)], check=True, timeout=120)
        deadline = time.monotonic() + 120  # a loaded machine may be behind real time
        while len(lines) < len(truth) and time.monotonic() < deadline:
            if select.select([process.stdout], [], [], 1)[0]:
                lines.append(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()  # Ctrl-C is how a microphone ends
    found = [json.loads(line) for line in lines + out.decode().splitlines() if line.strip()]
    words = [label for label, _ in truth]  # the device may open after playback began: the first word
    assert [d["label"] for d in found] in (words, words[1:]), (found, err.decode())  # can be lost, no other
    assert "listen: stopped after" in err.decode()
