"""int8 ONNX models: static QDQ quantization with onnxruntime.quantization, calibrated on the model's own
training images, kept only if it stays within INT8_MAX_LOSS of fp32 accuracy on the test split.

    python -m train.export --model models/demo/model.pt --format onnx --int8 [--images images]

1. The fp32 ONNX file (train.export, checked against PyTorch) is pre-processed for quantization
   (`quant_pre_process`: shape inference, BatchNorm folded into the convolutions).
2. Calibration reads up to CALIBRATION_IMAGES training PNGs, spread over the classes, through the
   same preprocessing as inference (train.predict.Predictor.png_tensor: ToTensor() of the PNG).
3. One int8 model per calibration method (MinMax, Entropy, Percentile): QDQ format, int8 weights per
   output channel, uint8 activations (U8S8). Measured on this project's CPU (AVX-512 VNNI), U8S8 runs
   the forward pass in half the time of S8S8 (onnxruntime's default for QDQ), which was hardly
   faster than fp32, at the same accuracy (docs/benchmarks.md; `python -m bench.int8_variants`).
4. The method is chosen on the *validation* split, never the test split: highest accuracy, ties
   broken by the smallest mean |logit - fp32 logit| (fidelity to the fp32 model).
5. The chosen model is scored on the test split beside fp32; more than INT8_MAX_LOSS accuracy lost is
   an ExportMismatch (exit 1) and the int8 file is not written.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from preprocess.cli import SpecVisionError
from preprocess.images import ImageError, decode, open_png
from preprocess.render import RenderSettings, image_to_tensor
from train.checkpoint import load_checkpoint

INT8_MAX_LOSS = 0.005          # accuracy (fraction) the int8 model may lose against fp32 on the test split
CALIBRATION_IMAGES = 512       # training images read for calibration (spread over the classes)
CALIBRATION_BATCH = 32
METHODS = ("MinMax", "Entropy", "Percentile")
TIMING_RUNS = 300              # batch-1 forward passes timed per model (1 thread), after a warm-up
SEED = 0


class QuantizeError(SpecVisionError):
    """int8 quantization cannot be done (no images to calibrate on, a missing package): exit 2."""


@dataclass
class Split:
    """A split's images as one float32 batch [N, C, H, W] (ToTensor() of each PNG) and their labels."""
    images: np.ndarray
    labels: np.ndarray
    paths: list[Path]


def find_images(model_path: Path, ckpt: dict, images: Path | None) -> Path:
    """The images folder the model was trained on: --images, else the one its checkpoint records
    (relative to the working directory or to the model's folder), which must have train/val/test."""
    candidates = [Path(images)] if images is not None else []
    recorded = (ckpt.get("metrics") or {}).get("images")
    if images is None and recorded:
        candidates += [Path(recorded), model_path.parent / recorded]
    for folder in candidates:
        if all((folder / split).is_dir() for split in ("train", "val", "test")):
            return folder
    if images is not None:
        raise QuantizeError(f"--images {images}: needs train/, val/ and test/ folders of PNGs made by "
                            f"`python -m preprocess` (the model's own images)")
    raise QuantizeError(f"{model_path}: the images it was trained on ({recorded or 'not recorded'}) are not "
                        f"found; give them with --images DIR (train/ for calibration, test/ for accuracy)")


def load_split(ckpt: dict, folder: Path, limit: int | None = None, multiple_of: int = 1) -> Split:
    """PNGs of folder/<class>/ for the checkpoint's classes, as the model's input (ToTensor() of the PNG,
    what train.predict feeds it; size and mode checked); with `limit`, a seeded sample of that many spread
    over the classes (rounded down to a multiple of `multiple_of` where there are that many)."""
    settings = RenderSettings.from_dict(ckpt["render"])
    channels = settings.channels
    height, width = settings.image_size
    files = [(path, index) for index, name in enumerate(ckpt["classes"])
             for path in sorted((folder / name).glob("*.png"))]
    if not files:
        raise QuantizeError(f"{folder}: no PNGs of the model's classes ({', '.join(ckpt['classes'])})")
    limit = len(files) if limit is None else min(limit, len(files))
    limit = limit // multiple_of * multiple_of or limit
    if len(files) > limit:
        order = np.random.default_rng(SEED).permutation(len(files))[:limit]
        files = [files[i] for i in sorted(order)]
    tensors = []
    for path, _ in files:
        try:
            with open_png(path, (width, height), ("P", "RGB") if channels == 3 else ("L",)) as image:
                tensors.append(image_to_tensor(decode(image, path), channels))
        except ImageError as err:
            raise QuantizeError(f"{err} (the model's images are {width}x{height} pixels)") from None
    return Split(torch.stack(tensors).numpy(), np.array([i for _, i in files]), [p for p, _ in files])


class PngCalibrationReader:
    """onnxruntime.quantization's CalibrationDataReader over training images, CALIBRATION_BATCH at a time
    (duck-typed: the interface is get_next() -> feed dict or None)."""

    def __init__(self, images: np.ndarray, input_name: str):
        self.images, self.input_name, self.position = images, input_name, 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.images):
            return None
        batch = self.images[self.position:self.position + CALIBRATION_BATCH]
        self.position += CALIBRATION_BATCH
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.position = 0

    def __len__(self) -> int:
        return -(-len(self.images) // CALIBRATION_BATCH)


def session(model: bytes | Path, threads: int = 1):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_logits(model: bytes | Path, images: np.ndarray, batch: int = 64) -> np.ndarray:
    runner = session(model, threads=torch.get_num_threads())
    name = runner.get_inputs()[0].name
    return np.concatenate([runner.run(None, {name: images[i:i + batch]})[0] for i in range(0, len(images), batch)])


def forward_ms(model: bytes | Path, image: np.ndarray) -> float:
    """Median milliseconds of a batch-1 forward pass, 1 thread."""
    runner = session(model, threads=1)
    feed = {runner.get_inputs()[0].name: image[None]}
    for _ in range(20):
        runner.run(None, feed)
    times = []
    for _ in range(TIMING_RUNS):
        start = time.perf_counter()
        runner.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def quantize(fp32_path: Path, calibration: np.ndarray, method: str, work: Path) -> bytes:
    """The int8 QDQ model (bytes) of the fp32 ONNX file, calibrated on `calibration` with `method`."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)
    prepared = work / "prepared.onnx"
    if not prepared.exists():
        quant_pre_process(str(fp32_path), str(prepared))
    out = work / f"int8-{method}.onnx"
    extra = {"CalibMovingAverage": False}
    if method == "Percentile":
        extra["CalibPercentile"] = 99.999
    # calibration and quantization print progress and warnings of their own: kept off our output
    with contextlib.redirect_stdout(io.StringIO()):
        input_name = session(fp32_path).get_inputs()[0].name
        quantize_static(str(prepared), str(out), PngCalibrationReader(calibration, input_name),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method),
                        extra_options=extra, calibration_cache_path=None)
    return out.read_bytes()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def int8_export(model_path: Path, fp32_path: Path, images: Path | None, log=print) -> dict:
    """Quantize the checked fp32 ONNX file `fp32_path` of `model_path`; -> a report with "model" (the
    chosen int8 model's bytes, to be written by the caller when "ok") and the figures."""
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        raise QuantizeError("--int8 needs onnxruntime: pip install 'specvision[export]'") from None
    ckpt = load_checkpoint(model_path)
    folder = find_images(model_path, ckpt, images)
    # equal batches: the histogram calibrators (Entropy, Percentile) stack each tensor's batches
    calibration = load_split(ckpt, folder / "train", CALIBRATION_IMAGES, multiple_of=CALIBRATION_BATCH)
    val, test = load_split(ckpt, folder / "val"), load_split(ckpt, folder / "test")
    log(f"int8: calibrating on {len(calibration.labels)} training images of {folder}; method chosen on "
        f"{len(val.labels)} validation images, accuracy on {len(test.labels)} test images")
    fp32_val, fp32_test = run_logits(fp32_path, val.images), run_logits(fp32_path, test.images)
    candidates = {}
    with tempfile.TemporaryDirectory(prefix="specvision-int8-") as work:
        for method in METHODS:
            model = quantize(fp32_path, calibration.images, method, Path(work))
            logits = run_logits(model, val.images)
            test_acc = accuracy(run_logits(model, test.images), test.labels)  # reported, never used to choose
            candidates[method] = {"model": model, "val_acc": accuracy(logits, val.labels),
                                  "val_logit_diff": float(np.abs(logits - fp32_val).mean()), "test_acc": test_acc}
            log(f"  {method:<10} val acc {candidates[method]['val_acc']:.4f}  mean |logit - fp32| "
                f"{candidates[method]['val_logit_diff']:.4f}  (test acc {test_acc:.4f})")
    chosen = max(METHODS, key=lambda m: (candidates[m]["val_acc"], -candidates[m]["val_logit_diff"]))
    best = candidates[chosen]
    ties = [m for m in METHODS if candidates[m]["val_acc"] == best["val_acc"]]
    why = (f"highest validation accuracy ({best['val_acc']:.4f})" if len(ties) == 1 else
           f"validation accuracy tied ({best['val_acc']:.4f}, {', '.join(ties)}); closest to the fp32 "
           f"logits (mean |difference| {best['val_logit_diff']:.4f})")
    int8_test = run_logits(best["model"], test.images)
    fp32_acc, int8_acc = accuracy(fp32_test, test.labels), accuracy(int8_test, test.labels)
    image = test.images[0]
    fp32_ms, int8_ms = forward_ms(fp32_path, image), forward_ms(best["model"], image)
    return {"model": best["model"], "ok": int8_acc >= fp32_acc - INT8_MAX_LOSS - 1e-12,
            "fp32_acc": round(fp32_acc, 4), "int8_acc": round(int8_acc, 4),
            "fp32_bytes": fp32_path.stat().st_size, "int8_bytes": len(best["model"]),
            "method": chosen, "why": why, "max_loss": INT8_MAX_LOSS,
            "same_labels": round(float((int8_test.argmax(1) == fp32_test.argmax(1)).mean()), 4),
            "fp32_forward_ms": round(fp32_ms, 3), "int8_forward_ms": round(int8_ms, 3),
            "methods": {m: {"val_acc": round(c["val_acc"], 4), "val_logit_diff": round(c["val_logit_diff"], 5),
                            "test_acc": round(c["test_acc"], 4)} for m, c in candidates.items()},
            "calibration_images": len(calibration.labels), "val_images": len(val.labels),
            "test_images": len(test.labels), "images": str(folder)}
