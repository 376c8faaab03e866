"""A checkpoint ready to classify (`Predictor`): the model, its classes and render settings; a clip,
PNG or window -> the image tensor `python -m preprocess` would have made; logits by the chosen engine."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from preprocess.cli import SpecVisionError
from preprocess.images import ImageError, decode, open_png
from preprocess.openworld import SILENCE, UNKNOWN, target_classes
from preprocess.render import (AUDIO_EXTENSIONS, MAX_AUDIO_SECONDS, image_to_tensor, load_audio, open_audio,
                               prepare_waveform, read_plain_wav, render_tensor, render_tensors)
from train import detect, engines
from train.checkpoint import CheckpointError, load_model

PNG_EXTENSIONS = (".png",)


class InputError(SpecVisionError):
    """One input that cannot be classified; the message names the file and the reason."""

    exit_code = 1


@dataclass
class Prediction:
    """One clip or PNG: the label (or `unknown` below the threshold) and the raw numbers behind it."""
    path: str
    label: str
    confidence: float
    top_k: list[tuple[str, float]]
    logits: list[float]
    target: bool = True   # the label is a word to spot (not 'unknown', 'silence' or below threshold)

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "confidence": round(self.confidence, 6),
                "target": self.target,
                "top_k": [{"label": lab, "confidence": round(p, 6)} for lab, p in self.top_k],
                "logits": self.logits}

    def to_line(self) -> str:
        line = f"{self.path}  {self.label}  {self.confidence:.3f}"
        if len(self.top_k) > 1:
            line += "  (" + ", ".join(f"{lab} {p:.3f}" for lab, p in self.top_k) + ")"
        return line

    def to_lines(self) -> list[str]:
        return [self.to_line()]


class Predictor:
    """A checkpoint ready to classify: its model, classes and render settings.

    `engine`: what runs the network for `logits` (train.engines): "auto" (ONNX Runtime when it is
    installed and the device is the CPU, else PyTorch), "onnx" or "torch"; `threads`: the ONNX
    Runtime session's threads (None: torch.get_num_threads()). `model` is the PyTorch network either way."""

    def __init__(self, model_path: str | os.PathLike, device: str = "cpu", *, engine: str = "auto",
                 threads: int | None = None):
        self.model, self.ckpt, self.settings = load_model(model_path, device)
        self.device = torch.device(device)
        self.model_path = Path(model_path)
        self.classes = list(self.ckpt["classes"])
        # Which answers are words to spot; 'unknown' and 'silence' answer "none of them".
        self.targets = list(self.ckpt.get("targets") or target_classes(self.classes))
        expected = [self.settings.channels, *self.settings.image_size]
        if [int(x) for x in self.ckpt["input_size"]] != expected:
            raise CheckpointError(f"{model_path}: input_size {list(self.ckpt['input_size'])} does not match "
                                  f"the image its render settings make ({expected})")
        self.channels, self.height, self.width = expected
        self.engine = engines.make_engine(engine, self.model, self.ckpt, model_path, self.device, threads)

    # ------------------------------------------------------------ inputs -> tensors

    def png_tensor(self, path: Path) -> torch.Tensor:
        """A PNG made by preprocess -> the tensor ImageFolder + ToTensor would give; checked first."""
        try:
            with open_png(path) as image:  # header checks first: a decompression bomb is never decoded
                mode, (width, height) = image.mode, image.size
                # preprocess writes its text chunks before the pixels: they are in the header's info
                metadata = {k.split(":", 1)[1]: v for k, v in image.info.items()
                            if isinstance(k, str) and k.startswith("specvision:")}
                if (width, height) == (self.width, self.height):
                    tensor = image_to_tensor(decode(image, path), self.channels)
        except ImageError as err:
            raise InputError(str(err)) from None
        if (width, height) != (self.width, self.height):
            raise InputError(f"{path}: image is {width}x{height} pixels but the model expects "
                             f"{self.width}x{self.height} (width x height); render it with the model's "
                             f"settings")
        allowed = ("P", "RGB") if self.channels == 3 else ("L",)
        if mode not in allowed:
            raise InputError(f"{path}: image mode {mode!r} but the model expects {' or '.join(allowed)} "
                             f"({self.settings.colormap} colormap, {self.channels} channel(s))")
        digest = metadata.get("settings_hash")
        if digest is not None and digest != self.settings.digest():
            raise InputError(f"{path}: rendered with other settings (hash {digest}) than the model's "
                             f"({self.settings.digest()}); re-render it from the audio")
        return tensor

    def audio_tensor(self, wave: np.ndarray) -> torch.Tensor:
        """The tensor ToTensor() gives for the PNG preprocess writes of `wave` (render_tensor: the same
        render, without building the PIL image)."""
        return render_tensor(wave, self.settings)

    def window_tensors(self, windows: list[np.ndarray], hop: int) -> torch.Tensor:
        """torch.stack of audio_tensor(w) for consecutive windows of a recording `hop` samples apart
        (the scanner's), the same values computed once for the STFT frames they share (render_tensors)."""
        return render_tensors(windows, hop, self.settings)

    def is_long(self, wave: np.ndarray, hop_s: float) -> bool:
        """Scan only when a window can move at least one hop; a slightly long clip is fitted like
        preprocess does (its loudest window), so it gets the same image as its PNG."""
        return len(wave) > self.settings.num_samples + int(round(hop_s * self.settings.sample_rate))

    def load(self, path: Path, hop_s: float,
             max_seconds: float = MAX_AUDIO_SECONDS) -> tuple[torch.Tensor | None, Path | None]:
        """-> (image tensor, None) for a clip or PNG, (None, path) for a long recording (detect.scan_file).

        Only a clip whose header says it is short is decoded here; a long recording is streamed."""
        suffix = path.suffix.lower()
        if suffix in PNG_EXTENSIONS:
            return self.png_tensor(path), None
        if suffix in AUDIO_EXTENSIONS:
            wave = self.clip_wave(path, hop_s, max_seconds)
            return (None, path) if wave is None else (self.audio_tensor(wave), None)
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected audio "
                         f"({', '.join(AUDIO_EXTENSIONS)}) or a .png spectrogram")

    def clip_wave(self, path: Path, hop_s: float, max_seconds: float = MAX_AUDIO_SECONDS) -> np.ndarray | None:
        """A clip's waveform at the model's rate (not yet fitted), or None for a long recording (scan it).

        A small plain 16-bit WAV (Speech Commands', most recorders') is read whole by the standard
        library, the same samples as libsndfile's (preprocess.render.read_plain_wav); anything else is
        decoded by libsndfile after its header is checked, and only when the header says it is short."""
        plain = read_plain_wav(path, max_seconds)
        if plain is not None:
            samples, rate = plain
            if len(samples) / rate > self.settings.duration + hop_s + 1.0:
                return None
            wave = prepare_waveform(samples, rate, self.settings, fit=False)
        else:
            with open_audio(path, None, max_seconds) as handle:  # header checks, length cap
                seconds = handle.frames / handle.samplerate
            if seconds > self.settings.duration + hop_s + 1.0:
                return None
            wave = load_audio(path, self.settings, max_seconds=max_seconds)
        return None if self.is_long(wave, hop_s) else wave

    # ------------------------------------------------------------ tensors -> answers

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """float32 CPU logits [N, classes] of a batch of image tensors, by this predictor's engine."""
        return self.engine(batch)

    def prediction(self, path: str, logits: torch.Tensor, threshold: float, top_k: int) -> Prediction:
        probs = torch.softmax(logits.double(), dim=0)
        order = torch.argsort(probs, descending=True, stable=True).tolist()
        best = order[0]
        confidence = float(probs[best])
        label = self.classes[best] if confidence >= threshold else UNKNOWN
        return Prediction(path, label, confidence,
                          [(self.classes[i], float(probs[i])) for i in order[:max(1, top_k)]],
                          [float(x) for x in logits], label in self.targets)

    def default_gate_db(self) -> float:
        """The energy gate is for models that cannot say "silence"; with a silence class the gate is
        GATE_WITH_SILENCE_DB (measured: docs/benchmarks.md, open-world keyword spotting)."""
        return detect.GATE_WITH_SILENCE_DB if SILENCE in self.classes else detect.ACTIVITY_MARGIN_DB

    def default_hop_s(self) -> float:
        """Seconds between scan windows: finer for models with a silence class, whose false accepts
        the denser average cuts (detect.HOP_WITH_SILENCE_S); the gated yes/no scan keeps DEFAULT_HOP_S.
        Never longer than the model's window (a 0.2 s model is scanned every 0.2 s, not refused)."""
        hop = detect.HOP_WITH_SILENCE_S if SILENCE in self.classes else detect.DEFAULT_HOP_S
        return min(hop, self.settings.duration)
