"""int8 activation types for the QDQ model of `train.export --int8`: int8 (S8S8, onnxruntime's default
for QDQ) against uint8 (U8S8) activations, with int8 per-channel weights and MinMax calibration, beside
the fp32 ONNX model: test accuracy, file size and batch-1 forward time (1 thread, interleaved runs).

    python -m bench.int8_variants --model models/real/model.pt --images images_real [--runs 2000]

Needs the fp32 export beside the model (`python -m train.export --model M --format onnx`). Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train import quantize as q  # noqa: E402
from train.checkpoint import load_checkpoint  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.int8_variants", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--images", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args(argv)
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static
    torch.set_num_threads(1)
    fp32 = args.model.with_name(args.model.stem + ".onnx")
    ckpt = load_checkpoint(args.model)
    calibration = q.load_split(ckpt, args.images / "train", q.CALIBRATION_IMAGES, q.CALIBRATION_BATCH)
    test = q.load_split(ckpt, args.images / "test")
    models = {"fp32": fp32.read_bytes()}
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        for name, activations in (("int8_s8s8", QuantType.QInt8), ("int8_u8s8", QuantType.QUInt8)):
            out = Path(work) / f"{name}.onnx"
            quantize_static(str(prepared), str(out), q.PngCalibrationReader(calibration.images, "image"),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=activations,
                            weight_type=QuantType.QInt8)
            models[name] = out.read_bytes()
    sessions = {name: q.session(model, 1) for name, model in models.items()}
    feed = {"image": test.images[:1]}
    times = {name: [] for name in sessions}
    for _ in range(args.runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(["logits"], feed)
            times[name].append(time.perf_counter() - start)
    result = {}
    for name, model in models.items():
        ms = float(np.median(times[name][len(times[name]) // 10:])) * 1000
        acc = q.accuracy(q.run_logits(model, test.images), test.labels)
        result[name] = {"test_acc": round(acc, 4), "bytes": len(model), "forward_ms": round(ms, 3)}
        print(f"{name:>10}: test acc {acc:.4f}, {len(model):,} bytes, batch-1 forward {ms:.3f} ms (1 thread)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
