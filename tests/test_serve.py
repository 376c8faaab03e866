"""train.serve: the live page, its websocket and uploads, and the page in headless Chromium with a
fake microphone that plays test_predict's recording of six real words.

The protocol tests use the session's synthetic model (conftest `speech_model`); the browser test the
real one that finds those words (`real_model`, as tests/test_listen.py). The server runs as a
subprocess on 127.0.0.1, on a free port it picks (--port 0) and prints.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import REPO, first_clips
from preprocess.render import load_audio, render_image
from train.predict import Predictor
from train.serve import MAX_MESSAGE_BYTES

RATE = 16000


class Served:
    """`python -m train.serve` in a subprocess; .url once it has printed where it listens."""

    def __init__(self, model: Path, *args: str):
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "train.serve", "--model", str(model), "--port", "0",
                                         *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=REPO,
                                        env=env, text=True)
        line = self.process.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found, line + self.process.stderr.read()
        self.port = int(found.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        self.process.send_signal(2)  # Ctrl-C
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err


@pytest.fixture
def served(speech_model):
    server = Served(speech_model / "model.pt", "--max-upload-mb", "0.5")
    yield server
    err = server.stop()
    assert server.process.returncode == 0, err
    assert "Traceback" not in err, err


def decode_image(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def pcm16(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


# ---------------------------------------------------------------- the page and the protocol

@pytest.mark.slow
def test_page_is_served_on_127_0_0_1(served):
    import urllib.request
    with urllib.request.urlopen(served.url + "/", timeout=30) as reply:
        assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
        page = reply.read().decode()
    assert "<title>SpecVision: live listening</title>" in page and "getUserMedia" in page
    with urllib.request.urlopen(served.url + "/info", timeout=30) as reply:
        info = json.loads(reply.read())
    assert info["classes"] == ["no", "yes"] and info["image"] == {"width": 81, "height": 201}
    with urllib.request.urlopen(served.url + "/worklet.js", timeout=30) as reply:
        assert b"registerProcessor" in reply.read()


async def _client_session():
    import aiohttp
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))


async def _expect_error(session, url: str, *messages, contains: str) -> int:
    """Send `messages` (str: text, bytes: binary); -> the close code after the server's error."""
    import aiohttp
    async with session.ws_connect(url + "/ws", max_msg_size=0) as ws:
        for message in messages:
            if ws.closed:
                break
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
        errors = []
        async for reply in ws:
            if reply.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(reply.data)
                if data["type"] == "error":
                    errors.append(data["message"])
        assert any(contains in e for e in errors) or contains == "", (errors, contains)
        return ws.close_code


@pytest.mark.slow
def test_stream_windows_are_the_model_render_and_garbage_is_refused(served, speech_model, speech):
    """A client streams words; the windows it is sent are render_image of its audio, pixel for pixel.
    Meanwhile clients that send garbage, too much, or too large a message each get a clear error
    and are closed, and the first client is served on, as is a new one afterwards."""
    import aiohttp
    predictor = Predictor(speech_model / "model.pt")
    clips = [load_audio(p, predictor.settings) for p in first_clips(speech, "yes", 2)]
    wave = np.concatenate([np.zeros(RATE, np.float32), clips[0], np.zeros(RATE, np.float32), clips[1]])
    wave = np.frombuffer(pcm16(wave), "<i2").astype(np.float32) / 32768
    hop = int(round(predictor.default_hop_s() * RATE))

    async def main():
        async with await _client_session() as session:
            good = await session.ws_connect(served.url + "/ws")
            await good.send_str(json.dumps({"type": "start", "rate": RATE}))
            ready = await good.receive_json()
            assert ready["type"] == "ready" and ready["classes"] == predictor.classes
            windows = []

            async def send_and_collect(piece: np.ndarray, until: int):
                for at in range(0, len(piece), 4000):
                    await good.send_bytes(pcm16(piece[at:at + 4000]))
                while len(windows) < until:
                    message = await good.receive_json(timeout=60)
                    if message["type"] == "window":
                        windows.append(message)

            half = len(wave) // 2
            await send_and_collect(wave[:half], 3)
            codes = {
                "text": await _expect_error(session, served.url, "hello", contains="not JSON"),
                "audio first": await _expect_error(session, served.url, b"\x00\x01", contains="before any audio"),
                "bad rate": await _expect_error(session, served.url, '{"type": "start", "rate": "fast"}',
                                                contains="rate must be"),
                "odd bytes": await _expect_error(session, served.url, '{"type": "start", "rate": 16000}',
                                                 b"\x00\x01\x02", contains="odd number of bytes"),
                "too much": await _expect_error(session, served.url, '{"type": "start", "rate": 8000}',
                                                *[bytes(60000)] * 3, contains="too much audio"),
                "too large": await _expect_error(session, served.url, '{"type": "start", "rate": 16000}',
                                                 bytes(MAX_MESSAGE_BYTES + 2), contains=""),
            }
            assert codes == {"text": 1008, "audio first": 1008, "bad rate": 1008, "odd bytes": 1008,
                             "too much": 1008, "too large": 1009}, codes
            total = len(range(0, len(wave) - predictor.settings.num_samples + 1, hop))
            await send_and_collect(wave[half:], total)
            await good.close()

            # a new client after all that is served
            fresh = await session.ws_connect(served.url + "/ws")
            await fresh.send_str(json.dumps({"type": "start", "rate": 48000.0}))
            assert (await fresh.receive_json())["type"] == "ready"
            for _ in range(6):  # 1.5 s of silence at 48 kHz (a window, past the resampler's delay)
                await fresh.send_bytes(bytes(24000))
            message = await fresh.receive_json(timeout=60)
            assert message["type"] == "window" and message["index"] == 0
            await fresh.close()
            return windows

    windows = asyncio.run(main())
    assert [w["index"] for w in windows] == list(range(len(windows)))
    for w in windows[::5]:
        start = w["index"] * hop
        expected = render_image(wave[start:start + predictor.settings.num_samples], predictor.settings)
        image = decode_image(w["image"])
        assert image.size == (81, 201)
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(expected.convert("RGB")))
        assert abs(sum(w["posteriors"]) - 1) < 1e-3 and len(w["posteriors"]) == 2


@pytest.mark.slow
def test_busy_server_refuses_more_clients_than_max(speech_model):
    import aiohttp
    server = Served(speech_model / "model.pt", "--max-clients", "1")
    try:
        async def main():
            async with await _client_session() as session:
                first = await session.ws_connect(server.url + "/ws")
                code = await _expect_error(session, server.url, contains="server is busy")
                await first.send_str(json.dumps({"type": "start", "rate": RATE}))
                assert (await first.receive_json())["type"] == "ready"
                await first.close()
                return code

        assert asyncio.run(main()) == 1013
    finally:
        assert server.stop() and server.process.returncode == 0


@pytest.mark.slow
def test_dropped_files_are_classified_or_scanned_and_bounded(served, speech):
    import urllib.error
    import urllib.parse
    import urllib.request

    def post(data: bytes, name: str = "a.wav"):
        request = urllib.request.Request(f"{served.url}/scan?name={urllib.parse.quote(name)}", data=data,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    clip = first_clips(speech, "yes", 1)[0]
    status, answer = post(clip.read_bytes(), "my clip.wav")
    assert status == 200 and answer["kind"] == "clip" and answer["name"] == "my clip.wav"
    assert answer["label"] in ("yes", "no") and decode_image(answer["image"]).size == (81, 201)

    wave, rate = sf.read(clip, dtype="float32")
    long = io.BytesIO()
    sf.write(long, np.concatenate([np.zeros(rate), wave, np.zeros(rate), wave, np.zeros(rate)]), rate,
             format="FLAC")
    status, answer = post(long.getvalue(), "long.flac")
    assert status == 200 and answer["kind"] == "recording" and answer["duration_s"] == pytest.approx(5.0, abs=0.01)
    assert isinstance(answer["detections"], list) and decode_image(answer["image"]).size[1] == 201

    status, answer = post(b"RIFF garbage that is no audio")
    assert status == 400 and answer["error"].startswith("cannot decode audio")
    assert post(b"")[0] == 400
    status, answer = post(bytes(600_000))  # over --max-upload-mb 0.5
    assert status == 413 and "larger than the limit of 0.5 MB" in answer["error"]
    assert post(clip.read_bytes())[0] == 200  # and the server serves on


@pytest.mark.slow
def test_port_in_use_is_one_error_line_exit_2(speech_model):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "train.serve", "--model", str(speech_model / "model.pt"),
                               "--port", str(port)], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- the page in a browser

@pytest.mark.slow
def test_page_in_headless_chromium_shows_the_words_of_a_fake_microphone(real_model, real_images, real_data,
                                                                        tmp_path):
    from test_predict import build_recording
    from test_report import CHROMIUM
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    predictor = Predictor(real_model / "model.pt")
    recording = tmp_path / "long.wav"
    truth = build_recording(predictor, real_images, real_data, recording)
    wave, rate = sf.read(recording, dtype="float32")
    microphone = tmp_path / "microphone.wav"  # Chromium's fake capture reads 16-bit PCM WAV, and loops it
    sf.write(microphone, wave, rate, subtype="PCM_16")
    server = Served(real_model / "model.pt")
    try:
        seen = listen_in_chromium(server.url, microphone, tmp_path / "profile", len(truth), timeout=300)
    finally:
        err = server.stop()
    assert server.process.returncode == 0 and "Traceback" not in err, err
    assert seen["errors"] == [], seen["errors"]
    # Chromium's fake microphone plays the file in a loop from when it is opened, a moment before the
    # page streams: the words heard are the recording's words in order, from wherever the stream began,
    # the same time apart as in the recording
    found, n, duration = seen["detections"][:len(truth)], len(truth), len(wave) / rate
    looped = [(label, t + lap * duration) for lap in range(3) for label, t in truth]

    def matches(k: int) -> bool:
        expected = looped[k:k + len(found)]
        return ([d["label"] for d in found] == [label for label, _ in expected]
                and all(abs((d["time"] - found[0]["time"]) - (t - expected[0][1])) <= 0.3
                        for d, (_, t) in zip(found, expected)))

    assert len(found) == n and any(matches(k) for k in range(n)), (found, truth, seen["status"])
    assert seen["windows"] > 50 and seen["current"] == [81, 201]
    with Image.open(io.BytesIO(seen["screenshot"])) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 20


PAGE_STATE_JS = """(() => ({
  detections: Array.from(document.querySelectorAll("#detections li")).reverse()
                   .map(li => ({label: li.dataset.label, time: Number(li.dataset.time)})),
  status: document.getElementById("status").textContent,
  current: [document.getElementById("current").naturalWidth, document.getElementById("current").naturalHeight],
  windows: Number(document.body.dataset.windows || 0),
}))()"""


def listen_in_chromium(url: str, microphone: Path, profile: Path, words: int, timeout: float,
                       screenshot_size=(1280, 800)) -> dict:
    """Open the page with a fake microphone playing `microphone`, press Start, wait for `words`
    detections (or `timeout` s); -> the detections in the page, console errors, a screenshot PNG."""
    from test_report import CHROMIUM, Chromium

    class WithMicrophone(Chromium):
        FLAGS = Chromium.FLAGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                  f"--use-file-for-fake-audio-capture={microphone}",
                                  "--autoplay-policy=no-user-gesture-required"]

    browser = WithMicrophone(CHROMIUM, profile)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Emulation.setDeviceMetricsOverride", {"width": screenshot_size[0], "height": screenshot_size[1],
                                                            "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.call("Page.navigate", {"url": url + "/"}, session=session)
        browser.wait_for("Page.loadEventFired")

        def evaluate(expression, **options):
            reply = browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, **options},
                                 session=session)
            return reply["result"].get("value")

        deadline = time.monotonic() + 120
        while not evaluate("document.body.dataset.ready === '1'") and time.monotonic() < deadline:
            time.sleep(0.2)
        evaluate("document.getElementById('start').click()", userGesture=True)
        deadline = time.monotonic() + timeout
        state = evaluate(PAGE_STATE_JS)
        while len(state["detections"]) < words and time.monotonic() < deadline:
            time.sleep(0.5)
            state = evaluate(PAGE_STATE_JS)
        time.sleep(0.3)
        state = evaluate(PAGE_STATE_JS)
        screenshot = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"},
                                                   session=session)["data"])
    finally:
        browser.close()
    return {**state, "errors": browser.console_errors(), "screenshot": screenshot}
