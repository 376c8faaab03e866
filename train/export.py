"""Export a trained model for use outside Python: ONNX or TorchScript, plus a JSON of what it expects.

    python -m train.export --model models/demo/model.pt --format onnx         # -> model.onnx
    python -m train.export --model models/demo/model.pt --format torchscript  # -> model.torchscript.pt

The exported network takes what train.predict feeds the model: a float32 batch [N, C, H, W] of
rendered spectrogram images scaled to [0, 1] (ToTensor() of the PNG; normalisation is inside the
network), and returns logits [N, classes]. `<out>.json` beside it lists the classes, the input size
and the render settings, which are all another program needs to render audio the same way
(preprocess/render.py is the reference). Every export is checked against PyTorch on the same
inputs (ONNX with onnxruntime) before it is moved into place; nothing half-written is left.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from preprocess import cli
from preprocess.cli import SpecVisionError
from preprocess.atomic import atomic_path, atomic_write_text
from preprocess.render import image_to_tensor, render_image
from train import quantize
from train.checkpoint import CheckpointError, load_model
from train.quantize import INT8_MAX_LOSS

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
ONNX_OPSET = 17
TOLERANCE = 1e-4          # max |exported - PyTorch| logit difference accepted
RANDOM_CHECK_IMAGES = 4   # random [0, 1] images checked besides the rendered test signals
SEED = 0
INPUT_NAME, OUTPUT_NAME = "image", "logits"
EXIT_OK, EXIT_MISMATCH, EXIT_UNUSABLE = 0, 1, 2


class ExportError(SpecVisionError):
    """An export that cannot be made (missing optional package, exporter failure); says why."""


class ExportMismatch(ExportError):
    """The exported network's outputs differ from PyTorch's on the same inputs."""

    exit_code = EXIT_MISMATCH


# ---------------------------------------------------------------- check inputs

def check_inputs(settings, channels: int) -> torch.Tensor:
    """Images to compare exported and PyTorch outputs on: real renders of test signals (silence, a
    tone, noise, a chirp) through the model's own render settings, plus random images."""
    rate, n = settings.sample_rate, settings.num_samples
    t = np.arange(n) / rate
    rng = np.random.default_rng(SEED)
    signals = [np.zeros(n), 0.3 * np.sin(2 * np.pi * 440 * t), 0.05 * rng.standard_normal(n),
               0.3 * np.sin(2 * np.pi * (100 + 3000 * t / t[-1]) * t)]
    rendered = [image_to_tensor(render_image(s.astype(np.float32), settings), channels) for s in signals]
    generator = torch.Generator().manual_seed(SEED)
    random = torch.rand((RANDOM_CHECK_IMAGES, *rendered[0].shape), generator=generator)
    return torch.cat([torch.stack(rendered), random])


def sidecar(ckpt: dict, settings, fmt: str, model_path: Path, max_diff: float) -> dict:
    channels, height, width = ckpt["input_size"]
    return {"format": "specvision-export", "model_format": fmt, "arch": ckpt["arch"],
            "classes": list(ckpt["classes"]), "input_size": [channels, height, width],
            "input": {"name": INPUT_NAME, "shape": ["N", channels, height, width], "dtype": "float32",
                      "range": [0.0, 1.0], "meaning": "ToTensor() of the rendered spectrogram PNG "
                      "(rows = frequency, low at the bottom; columns = time)"},
            "output": {"name": OUTPUT_NAME, "shape": ["N", len(ckpt["classes"])],
                       "meaning": "logits; softmax for confidences"},
            "render": settings.to_dict(), "settings_hash": settings.digest(),
            "source_checkpoint": str(model_path), "max_abs_diff_vs_pytorch": max_diff}


# ---------------------------------------------------------------- exporters

def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, metadata: dict) -> None:
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the `onnx` package: pip install 'specvision[export]' "
                          "(or pip install onnx onnxruntime)") from None
    with warnings.catch_warnings():
        # dynamo=False: the TorchScript-based exporter needs no extra package (the dynamo one needs
        # onnxscript) and handles these plain CNNs fully; torch >= 2.9 warns that it is legacy.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks: the input size is fixed
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    onnx.helper.set_model_props(proto, {"specvision": json.dumps(metadata, sort_keys=True)})
    onnx.save(proto, str(path))


def run_onnx(path: Path, batch: torch.Tensor) -> np.ndarray:
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("checking the ONNX file needs `onnxruntime`: pip install 'specvision[export]' "
                          "(or pip install onnxruntime)") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path, metadata: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9 marks torch.jit as deprecated
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks: the input size is fixed
        traced = torch.jit.trace(model, example, check_trace=True)
        extra = {"specvision.json": json.dumps(metadata, sort_keys=True)}  # readable with torch.jit.load
        torch.jit.save(traced, str(path), _extra_files=extra)


def run_torchscript(path: Path, batch: torch.Tensor) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return loaded(batch).numpy()


EXPORTERS = {"onnx": (export_onnx, run_onnx), "torchscript": (export_torchscript, run_torchscript)}


def export(model_path: Path, fmt: str, out: Path | None = None) -> tuple[Path, Path, float]:
    """Export, check against PyTorch, then move into place. -> (model file, JSON file, max |diff|)."""
    model, ckpt, settings = load_model(model_path, "cpu")
    out = Path(out) if out is not None else model_path.with_name(model_path.stem + FORMATS[fmt])
    if out.is_dir():
        raise ExportError(f"--out {out}: is a folder; give the file to write (e.g. {out / ('model' + FORMATS[fmt])})")
    json_path = out.with_name(out.name + ".json")
    channels = int(ckpt["input_size"][0])
    batch = check_inputs(settings, channels)
    if list(batch.shape[1:]) != [int(x) for x in ckpt["input_size"]]:
        raise CheckpointError(f"{model_path}: input_size {ckpt['input_size']} does not match its render "
                              f"settings ({list(batch.shape[1:])})")
    with torch.inference_mode():
        expected = model(batch).numpy()
    exporter, runner = EXPORTERS[fmt]
    metadata = sidecar(ckpt, settings, fmt, model_path, max_diff=float("nan"))
    with atomic_path(out) as tmp:
        exporter(model, batch[:1], tmp, metadata)
        got = np.concatenate([runner(tmp, batch), runner(tmp, batch[:1])])  # also a batch of 1
        want = np.concatenate([expected, expected[:1]])
        max_diff = float(np.abs(got - want).max())
        if not max_diff <= TOLERANCE:  # also catches NaN
            raise ExportMismatch(f"{out}: exported {fmt} logits differ from PyTorch by {max_diff:.2e} "
                                 f"(> {TOLERANCE:.0e}); not written")
        metadata["max_abs_diff_vs_pytorch"] = max_diff
        atomic_write_text(json_path, json.dumps(metadata, indent=2) + "\n")
    return out, json_path, max_diff


# ---------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.export",
        description="Export a model trained by `python -m train` to ONNX or TorchScript. Input: float32 "
                    "[N, C, H, W] rendered spectrogram images in [0, 1]; output: logits [N, classes]. "
                    "Writes OUT and OUT.json (classes, input size, render settings) after checking the "
                    f"export against PyTorch on the same inputs (max difference {TOLERANCE:g}).",
        epilog="Exit status: 0 exported and checked, 1 the export does not match PyTorch, 2 the model or "
               "an optional package (onnx, onnxruntime) is missing or unusable.")
    parser.add_argument("--model", required=True, type=Path, help="models/NAME/model.pt")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="onnx or torchscript")
    parser.add_argument("--out", type=Path, help="output file (default: beside the model, model.onnx or "
                                                 "model.torchscript.pt)")
    parser.add_argument("--int8", action="store_true",
                        help="also write an int8 model beside it (OUT stem + .int8.onnx): static QDQ "
                             "quantization (onnxruntime.quantization, per-channel), calibrated on the "
                             "model's training images with the method (MinMax, Entropy, Percentile) that "
                             "scores best on its validation images; its test accuracy is printed beside "
                             "fp32, and it is not written if it loses more than "
                             f"{INT8_MAX_LOSS * 100:g} points (exit 1). Last line: JSON")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="--int8: the model's images folder (train/ calibrates, val/ picks the method, "
                             "test/ is scored; default: the folder its checkpoint records)")
    return parser


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.int8 and args.format != "onnx":
        parser.error("--int8 is for --format onnx")
    if args.images is not None and not args.int8:
        parser.error("--images is for --int8 (its calibration and test images)")
    out, json_path, max_diff = export(args.model, args.format, args.out)  # errors carry their exit codes
    print(f"exported {args.model} -> {out} ({args.format}) and {json_path}")
    print(f"checked against PyTorch on {RANDOM_CHECK_IMAGES + 4} images (+ a batch of 1): "
          f"max |logit difference| {max_diff:.2e} <= {TOLERANCE:g}")
    if args.int8:
        return export_int8(args.model, out, json_path, args.images)
    return EXIT_OK


def int8_path(out: Path) -> Path:
    """model.onnx -> model.int8.onnx"""
    return out.with_name(out.stem + ".int8" + out.suffix)


def export_int8(model_path: Path, out: Path, json_path: Path, images: Path | None) -> int:
    """--int8 after the fp32 export: quantize, compare, write only what is within the limit."""
    report = quantize.int8_export(model_path, out, images, log=print)
    target = int8_path(out)
    model = report.pop("model")
    loss = (report["fp32_acc"] - report["int8_acc"]) * 100
    print(f"int8 ({report['method']} calibration: {report['why']})")
    print(f"test accuracy on {report['test_images']} images: fp32 {report['fp32_acc']:.4f}, int8 "
          f"{report['int8_acc']:.4f} ({-loss:+.1f} points; limit -{INT8_MAX_LOSS * 100:g}); same label as fp32 "
          f"for {report['same_labels'] * 100:.1f} %")
    print(f"file size: fp32 {report['fp32_bytes']:,} bytes, int8 {report['int8_bytes']:,} bytes "
          f"({report['fp32_bytes'] / report['int8_bytes']:.2f}x smaller); batch-1 forward, 1 thread: fp32 "
          f"{report['fp32_forward_ms']:.3f} ms, int8 {report['int8_forward_ms']:.3f} ms")
    report["int8_path"] = str(target) if report["ok"] else None
    if report["ok"]:
        metadata = json.loads(json_path.read_text())
        metadata.update({"model_format": "onnx-int8", "quantization": {
            k: report[k] for k in ("method", "why", "fp32_acc", "int8_acc", "test_images", "calibration_images")},
            "max_abs_diff_vs_pytorch": None})
        with atomic_path(target) as tmp:
            tmp.write_bytes(model)
            atomic_write_text(target.with_name(target.name + ".json"), json.dumps(metadata, indent=2) + "\n")
        print(f"wrote {target} and {target.name}.json")
    else:
        print(f"error: {target}: the int8 model loses {loss:.1f} points of test accuracy against fp32 "
              f"({report['int8_acc']:.4f} vs {report['fp32_acc']:.4f}; limit {INT8_MAX_LOSS * 100:g}); not "
              f"written", file=sys.stderr)
    print(json.dumps(report))
    return EXIT_OK if report["ok"] else EXIT_MISMATCH


if __name__ == "__main__":
    cli.run(main)
