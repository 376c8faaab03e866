"""train.export: ONNX (checked with onnxruntime) and TorchScript match PyTorch within 1e-4."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import first_clips
from train import export, predict
from train.checkpoint import atomic_torch_save, load_checkpoint

torch.set_num_threads(1)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model_path(speech_model) -> Path:
    """The session's real (small) model trained on synthetic speech (conftest)."""
    return speech_model / "model.pt"


@pytest.fixture(scope="module")
def speech_batch(model_path, speech) -> torch.Tensor:
    """Spectrograms of six clips, rendered exactly as train.predict renders them."""
    predictor = predict.Predictor(model_path)
    clips = first_clips(speech, "yes", 3) + first_clips(speech, "no", 3)
    return torch.stack([predictor.load(clip, 0.25)[0] for clip in clips])


def pytorch_logits(model_path: Path, batch: torch.Tensor) -> np.ndarray:
    predictor = predict.Predictor(model_path, engine="torch")
    return predictor.logits(batch).numpy()


def check_sidecar(json_path: Path, model_path: Path, fmt: str) -> None:
    info = json.loads(json_path.read_text())
    ckpt = load_checkpoint(model_path)
    assert info["model_format"] == fmt and info["classes"] == ckpt["classes"]
    assert info["input_size"] == ckpt["input_size"] and info["render"] == ckpt["render"]
    assert info["input"]["name"] == "image" and info["output"]["name"] == "logits"
    assert 0 <= info["max_abs_diff_vs_pytorch"] <= TOLERANCE


def test_onnx_export_matches_pytorch(model_path, speech_batch, tmp_path, capsys):
    import onnx
    import onnxruntime

    out = tmp_path / "exported" / "net.onnx"
    assert export.main(["--model", str(model_path), "--format", "onnx", "--out", str(out)]) == 0
    assert "max |logit difference|" in capsys.readouterr().out
    check_sidecar(tmp_path / "exported" / "net.onnx.json", model_path, "onnx")
    assert sorted(p.name for p in out.parent.iterdir()) == ["net.onnx", "net.onnx.json"]  # no temp files

    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["specvision"])["classes"] == load_checkpoint(model_path)["classes"]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    expected = pytorch_logits(model_path, speech_batch)
    got = session.run(["logits"], {"image": speech_batch.numpy()})[0]
    assert got.shape == expected.shape == (6, 2)
    assert np.abs(got - expected).max() <= TOLERANCE
    single = session.run(["logits"], {"image": speech_batch[:1].numpy()})[0]  # dynamic batch axis
    assert np.abs(single - expected[:1]).max() <= TOLERANCE


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_matches_pytorch(model_path, speech_batch, tmp_path, capsys):
    assert export.main(["--model", str(model_path), "--format", "torchscript",
                        "--out", str(tmp_path / "net.pt")]) == 0
    check_sidecar(tmp_path / "net.pt.json", model_path, "torchscript")
    extra = {"specvision.json": ""}
    loaded = torch.jit.load(str(tmp_path / "net.pt"), _extra_files=extra)
    assert json.loads(extra["specvision.json"])["render"] == load_checkpoint(model_path)["render"]
    with torch.inference_mode():
        got = loaded(speech_batch).numpy()
    assert np.abs(got - pytorch_logits(model_path, speech_batch)).max() <= TOLERANCE


def test_default_output_is_beside_the_model(model_path, tmp_path):
    local = tmp_path / "models" / "demo" / "model.pt"
    local.parent.mkdir(parents=True)
    local.write_bytes(model_path.read_bytes())
    assert export.main(["--model", str(local), "--format", "torchscript"]) == 0
    assert (local.parent / "model.torchscript.pt").is_file()
    assert (local.parent / "model.torchscript.pt.json").is_file()


def test_bad_checkpoint_and_missing_onnxruntime_are_clear_errors(model_path, tmp_path, capsys, monkeypatch):
    future = tmp_path / "future.pt"
    atomic_torch_save({**load_checkpoint(model_path), "format_version": 99}, future)
    assert export.main(["--model", str(future), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert str(future) in err and "format version 99" in err
    assert not (tmp_path / "future.onnx").exists()

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the optional package were not installed
    out = tmp_path / "net.onnx"
    assert export.main(["--model", str(model_path), "--format", "onnx", "--out", str(out)]) == 2
    assert "pip install" in capsys.readouterr().err
    assert list(tmp_path.glob("net.onnx*")) == [] and list(tmp_path.glob(".net.onnx*")) == []


# ---------------------------------------------------------------- int8

def run_int8(capsys, *argv) -> tuple[int, dict, str, str]:
    capsys.readouterr()
    code = export.main(["--format", "onnx", "--int8", *[str(a) for a in argv]])
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.out, captured.err


def test_int8_export_is_calibrated_compared_and_written(model_path, speech_images, tmp_path, capsys, monkeypatch):
    from train import quantize
    monkeypatch.setattr(quantize, "INT8_MAX_LOSS", 1.0)  # this test is about the files, not the tiny model's accuracy
    out = tmp_path / "net.onnx"
    code, report, text, err = run_int8(capsys, "--model", model_path, "--out", out)  # images: from the checkpoint
    assert code == 0, err
    assert {"fp32_acc", "int8_acc", "fp32_bytes", "int8_bytes"} <= set(report)
    assert report["method"] in quantize.METHODS and set(report["methods"]) == set(quantize.METHODS)
    assert "calibration" in text and report["method"] in text and "test accuracy" in text
    int8 = tmp_path / "net.int8.onnx"
    assert report["int8_path"] == str(int8) and int8.stat().st_size == report["int8_bytes"]
    assert out.stat().st_size == report["fp32_bytes"] and report["fp32_bytes"] >= 3 * report["int8_bytes"]
    info = json.loads((tmp_path / "net.int8.onnx.json").read_text())
    assert info["model_format"] == "onnx-int8" and info["quantization"]["method"] == report["method"]

    import onnx
    import onnxruntime
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    images = quantize.load_split(load_checkpoint(model_path), speech_images / "test")
    session = onnxruntime.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"image": images.images})[0]
    assert abs(quantize.accuracy(logits, images.labels) - report["int8_acc"]) < 1e-4
    assert report["test_images"] == len(images.labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.int8.onnx", "net.int8.onnx.json", "net.onnx",
                                                         "net.onnx.json"]


def test_int8_export_that_loses_too_much_is_reported_and_not_written(model_path, speech_images, tmp_path, capsys,
                                                                     monkeypatch):
    from train import quantize
    monkeypatch.setattr(quantize, "INT8_MAX_LOSS", -1.0)  # no int8 model can pass: the refusal path
    out = tmp_path / "net.onnx"
    code, report, _, err = run_int8(capsys, "--model", model_path, "--out", out, "--images", speech_images)
    assert code == 1
    assert "error:" in err and "not written" in err and "net.int8.onnx" in err
    assert report["ok"] is False and report["int8_path"] is None
    assert not (tmp_path / "net.int8.onnx").exists() and not (tmp_path / "net.int8.onnx.json").exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_int8_needs_onnx_and_the_models_images(model_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        export.main(["--model", str(model_path), "--format", "torchscript", "--int8"])
    assert info.value.code == 2
    capsys.readouterr()
    code = export.main(["--model", str(model_path), "--format", "onnx", "--int8", "--images", str(tmp_path),
                        "--out", str(tmp_path / "net.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --images") and "train/" in err[0]
    assert not (tmp_path / "net.int8.onnx").exists()


def test_int8_keeps_the_real_models_answers(real_model, real_images, tmp_path, capsys):
    code, report, _, err = run_int8(capsys, "--model", real_model / "model.pt", "--out", tmp_path / "net.onnx",
                                    "--images", real_images)
    assert code == (0 if report["ok"] else 1), err
    assert report["same_labels"] >= 0.95 and report["fp32_bytes"] >= 3 * report["int8_bytes"]
    assert report["int8_acc"] >= report["fp32_acc"] - 0.03
