"""Serve: a local web page that listens through the browser's microphone and shows what the model sees.

    python -m train.serve --model models/demo/model.pt           # then open http://127.0.0.1:8000/

The page (train/web/listen.html) captures the microphone (getUserMedia + an AudioWorklet), sends
16-bit PCM over a websocket, and shows live: the scrolling spectrogram and the current window, both
rendered here by the one render function (preprocess.render.render_image, the pixels the model is
given), the posteriors of the newest window, and the detections as a list. The scanner is
train.stream.StreamScanner, the one `python -m train.listen` runs. A wav/flac dropped on the page is
classified (a clip) or scanned (a longer recording), with its image.

Served by aiohttp, on 127.0.0.1 unless --host says otherwise. What a client may send is bounded: one
websocket message at most MAX_MESSAGE_BYTES, no more audio than real time (plus AHEAD_S), at most
--max-clients live streams, uploads at most --max-upload-mb and --max-upload-seconds. Nothing a
client sends names a file here: an upload is decoded from its bytes. A client that breaks a rule
gets one error message and is closed; the others are served on.

Websocket /ws, client -> server: first a text message {"type": "start", "rate": R} (R: the
capture's sample rate, 8000-192000), then binary messages of little-endian int16 mono PCM at R.
Server -> client, text JSON: {"type": "ready", ...the model's classes, hop, window...},
{"type": "window", "index", "start", "level_db", "posteriors": [...], "image": "data:image/png..."}
per window, {"type": "detection", "label", "confidence", "start", "end", "time"} per word,
{"type": "error", "message"} before a close.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from preprocess import cli
from preprocess.cli import SpecVisionError
from preprocess.render import (AudioError, encode_png, feature_matrix, load_audio, render_image, to_image,
                               to_levels)
from train import detect
from train.checkpoint import CheckpointError
from train.stream import Resampler, StreamScanner, pcm16_to_float

WEB = Path(__file__).with_name("web")
MAX_MESSAGE_BYTES = 1 << 16      # one websocket message: ~0.7 s of 16-bit PCM at 48 kHz
AHEAD_S = 5.0                    # a client may send this much more audio than the time it has been connected
MIN_RATE, MAX_RATE = 8000, 192000
MAX_UPLOAD_MB = 20.0
MAX_UPLOAD_SECONDS = 600.0       # an upload longer than this (by its header) is refused before decoding
IMAGE_SECONDS = 60.0             # an upload's image: the whole recording rendered, up to this long


class ClientError(Exception):
    """What a client did wrong: sent to it as {"type": "error"} and the connection closed."""


def data_url(image) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


class Server:
    """The model, the scanner options and the limits, shared by every client; model work runs on one
    thread (one window at a time, whoever sent it), the event loop only moves bytes."""

    def __init__(self, predictor, scan_options: dict, max_clients: int = 4,
                 max_upload_bytes: int = int(MAX_UPLOAD_MB * 1e6), max_upload_seconds: float = MAX_UPLOAD_SECONDS):
        self.predictor, self.scan_options = predictor, scan_options
        self.max_clients, self.max_upload_bytes = max_clients, max_upload_bytes
        self.max_upload_seconds = max_upload_seconds
        self.clients = 0
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        probe = StreamScanner(predictor, **scan_options)
        settings = predictor.settings
        self.info = {"classes": predictor.classes, "targets": predictor.targets,
                     "rate": settings.sample_rate, "window_s": settings.duration, "hop_s": probe.hop_s,
                     "threshold": probe.threshold, "gate_db": probe.gate_db,
                     "image": {"width": predictor.width, "height": predictor.height},
                     "columns_per_hop": probe.hop / settings.hop_length,
                     "max_upload_bytes": max_upload_bytes, "max_upload_seconds": max_upload_seconds}

    def app(self):
        from aiohttp import web
        app = web.Application(client_max_size=self.max_upload_bytes)
        app.router.add_get("/", self.page)
        app.router.add_get("/worklet.js", self.worklet)
        app.router.add_get("/info", self.get_info)
        app.router.add_get("/ws", self.websocket)
        app.router.add_post("/scan", self.scan)
        return app

    # ------------------------------------------------------------ static

    async def page(self, request):
        from aiohttp import web
        return web.Response(text=(WEB / "listen.html").read_text(encoding="utf-8"), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def worklet(self, request):
        from aiohttp import web
        return web.Response(text=(WEB / "worklet.js").read_text(encoding="utf-8"),
                            content_type="application/javascript")

    async def get_info(self, request):
        from aiohttp import web
        return web.json_response(self.info)

    # ------------------------------------------------------------ live audio

    async def websocket(self, request):
        from aiohttp import WSMsgType, web
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=30)
        await ws.prepare(request)
        if self.clients >= self.max_clients:
            await self._refuse(ws, f"the server is busy: {self.max_clients} live streams already "
                                   f"(--max-clients)", code=1013)
            return ws
        self.clients += 1
        loop = asyncio.get_running_loop()
        outbox: list[dict] = []
        session = None
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    if session is not None:
                        raise ClientError("only audio (binary messages) may follow the start message")
                    session = self._start(message.data, outbox)
                    await ws.send_json({"type": "ready", **self.info})
                elif message.type == WSMsgType.BINARY:
                    if session is None:
                        raise ClientError('send {"type": "start", "rate": R} before any audio')
                    samples = session.check(message.data)
                    found = await loop.run_in_executor(self.model_thread, session.push, samples)
                    for item in outbox + [{"type": "detection", **d.to_dict()} for d in found]:
                        await ws.send_json(item)
                    outbox.clear()
                elif message.type == WSMsgType.ERROR:
                    break  # too large (aiohttp closes with 1009) or a broken connection
        except ClientError as err:
            await self._refuse(ws, str(err), code=1008)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.clients -= 1
        return ws

    def _start(self, text: str, outbox: list) -> "Session":
        try:
            start = json.loads(text)
        except (ValueError, RecursionError):
            raise ClientError("the start message is not JSON") from None
        if not isinstance(start, dict) or start.get("type") != "start":
            raise ClientError('the first message must be {"type": "start", "rate": R}')
        rate = start.get("rate")
        if isinstance(rate, float) and rate.is_integer():
            rate = int(rate)
        if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
            raise ClientError(f"rate must be a whole number of Hz between {MIN_RATE} and {MAX_RATE}")
        return Session(self, rate, outbox)

    @staticmethod
    async def _refuse(ws, message: str, code: int) -> None:
        try:
            await ws.send_json({"type": "error", "message": message})
            await ws.close(code=code, message=message[:120].encode())
        except ConnectionError:
            pass

    # ------------------------------------------------------------ a dropped file

    async def scan(self, request):
        from aiohttp import web
        if request.content_length is not None and request.content_length > self.max_upload_bytes:
            return self._error(413, f"the file is larger than the limit of {self.max_upload_bytes / 1e6:g} MB")
        try:
            data = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._error(413, f"the file is larger than the limit of {self.max_upload_bytes / 1e6:g} MB")
        name = request.query.get("name", "upload")[:200]  # shown to the user, never opened
        try:
            answer = await asyncio.get_running_loop().run_in_executor(self.model_thread, self._answer, data, name)
        except AudioError as err:
            return self._error(400, str(err).replace("upload: ", "", 1))
        return web.json_response(answer)

    @staticmethod
    def _error(status: int, message: str):
        from aiohttp import web
        return web.json_response({"error": message}, status=status)

    def _answer(self, data: bytes, name: str) -> dict:
        predictor = self.predictor
        if not data:
            raise AudioError("upload: empty file (0 bytes)")
        wave = load_audio(Path("upload"), predictor.settings, data=data, max_seconds=self.max_upload_seconds)
        scanner_hop = self.info["hop_s"]
        if not predictor.is_long(wave, scanner_hop):
            image = render_image(wave, predictor.settings)
            tensor = predictor.audio_tensor(wave)
            answer = predictor.prediction(name, predictor.logits(tensor[None])[0], 0.0, len(predictor.classes))
            return {"name": name, "kind": "clip", "duration_s": round(len(wave) / predictor.settings.sample_rate, 3),
                    "label": answer.label, "confidence": round(answer.confidence, 6),
                    "posteriors": {label: round(p, 6) for label, p in answer.top_k},
                    "image": data_url(image)}
        scan = detect.scan(predictor, name, wave, batch_size=detect.SCAN_BATCH_SIZE, **self.scan_options)
        shown = wave[:int(IMAGE_SECONDS * predictor.settings.sample_rate)]
        image = to_image(to_levels(feature_matrix(shown, predictor.settings), predictor.settings), predictor.settings)
        return {"name": name, "kind": "recording", "duration_s": round(scan.duration_s, 3),
                "detections": [d.to_dict() for d in scan.detections], "image": data_url(image),
                "image_seconds": round(len(shown) / predictor.settings.sample_rate, 3)}


class Session:
    """One client's live stream: its rate, resampler, scanner and real-time budget."""

    def __init__(self, server: Server, rate: int, outbox: list):
        self.rate, self.outbox = rate, outbox
        self.resample = Resampler(rate, server.predictor.settings.sample_rate)
        self.scanner = StreamScanner(server.predictor, keep_images=True, on_window=self._window,
                                     **server.scan_options)
        self.classes = server.predictor.classes
        self.started = time.monotonic()
        self.received = 0

    def check(self, data: bytes) -> np.ndarray:
        """A binary message -> samples, or ClientError for odd bytes or more audio than real time."""
        if len(data) % 2:
            raise ClientError("audio must be 16-bit PCM: a binary message had an odd number of bytes")
        self.received += len(data) // 2
        allowed = (time.monotonic() - self.started + AHEAD_S) * self.rate
        if self.received > allowed:
            raise ClientError(f"too much audio: {self.received / self.rate:.1f} s sent in "
                              f"{time.monotonic() - self.started:.1f} s (more than real time)")
        return pcm16_to_float(data)

    def push(self, samples: np.ndarray) -> list[detect.Detection]:
        return self.scanner.push(self.resample(samples))

    def _window(self, update) -> None:
        self.outbox.append({"type": "window", "index": update.index, "start": round(update.start_s, 3),
                            "level_db": round(update.level_db, 1),
                            "posteriors": [round(float(p), 4) for p in update.posteriors],
                            "image": data_url(update.image)})


# ---------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.serve",
        description="A local web page that listens through the browser's microphone: the scrolling "
                    "spectrogram exactly as the model's render makes it, the posteriors and the "
                    "detected words live (the scanner of `python -m train.listen`); a wav/flac dropped "
                    "on the page is classified or scanned.",
        epilog="Open the printed address in a browser (a microphone needs http://127.0.0.1 or https). "
               "Exit status 0 on Ctrl-C, 2 when the model cannot be used or the port cannot be bound.")
    parser.add_argument("--model", required=True, help="models/NAME/model.pt written by `python -m train`")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0: any free one)")
    parser.add_argument("--threshold", type=float, default=detect.DEFAULT_THRESHOLD,
                        help="smoothed confidence a word needs (default %(default)s)")
    parser.add_argument("--hop", type=float, default=None, help="seconds between windows (default: the "
                                                                "model's, as in train.predict)")
    parser.add_argument("--gate-db", type=float, default=None,
                        help="energy gate in dB; 0: off (default: the model's, as in train.predict)")
    parser.add_argument("--max-clients", type=int, default=4, help="live streams at once (default %(default)s)")
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB,
                        help="largest file that may be dropped on the page (default %(default)g MB)")
    parser.add_argument("--max-upload-seconds", type=float, default=MAX_UPLOAD_SECONDS,
                        help="longest recording that may be dropped on the page (default %(default)g s)")
    return parser


async def serve(server: Server, host: str, port: int) -> None:
    from aiohttp import web
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise SpecVisionError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    bound = runner.addresses[0][1] if runner.addresses else port  # --port 0: the one the system gave
    shown = f"[{host}]" if ":" in host else host
    print(f"serve: http://{shown}:{bound}/ (model {server.info['classes']}); Ctrl-C to stop", file=sys.stderr,
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        server.model_thread.shutdown(wait=False, cancel_futures=True)
    print("serve: stopped", file=sys.stderr)


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be between 0 and 1")
    if args.max_clients < 1 or args.max_upload_mb <= 0 or args.max_upload_seconds <= 0:
        parser.error("--max-clients must be >= 1, --max-upload-mb and --max-upload-seconds > 0")
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise SpecVisionError("train.serve needs the Python package aiohttp (pip install aiohttp)") from None
    import torch
    torch.set_num_threads(1)
    from train.predict import Predictor
    try:
        predictor = Predictor(args.model, "cpu")
    except CheckpointError as err:
        raise SpecVisionError(str(err)) from None
    if args.hop is not None and not 0 < args.hop <= predictor.settings.duration:
        parser.error(f"--hop must be > 0 and at most the model's window ({predictor.settings.duration} s)")
    options = {"threshold": args.threshold, "hop_s": args.hop, "gate_db": args.gate_db}
    server = Server(predictor, options, args.max_clients, int(args.max_upload_mb * 1e6), args.max_upload_seconds)
    asyncio.run(serve(server, args.host, args.port))
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
