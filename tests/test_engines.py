"""train.engines: ONNX Runtime and PyTorch give the same answers (labels; logits within 1e-4) on
synthetic and real clips and in the long-recording scanner; the ONNX export is cached beside the
checkpoint by its hash; `--engine onnx` without onnxruntime is a clear error (exit 2)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import first_clips
from train import detect, engines, predict
from train.checkpoint import atomic_torch_save, load_checkpoint

torch.set_num_threads(1)
TOLERANCE = 1e-4  # fp32 logits, ONNX Runtime vs PyTorch


def cached_files(model_path: Path) -> list[str]:
    return sorted(p.name for p in model_path.parent.iterdir() if p.name.endswith(".onnx"))


def assert_same_answers(model_path: Path, clips: list[Path]) -> np.ndarray:
    torch_predictor = predict.Predictor(model_path, engine="torch")
    onnx_predictor = predict.Predictor(model_path, engine="onnx")
    assert torch_predictor.engine.name == "torch" and onnx_predictor.engine.name == "onnx"
    batch = torch.stack([torch_predictor.load(clip, detect.DEFAULT_HOP_S)[0] for clip in clips])
    expected = torch_predictor.logits(batch).numpy()
    for got in (onnx_predictor.logits(batch).numpy(),                                   # one batch
                np.concatenate([onnx_predictor.logits(row[None]).numpy() for row in batch])):  # batch of 1
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.abs(got - expected).max() <= TOLERANCE
        assert np.array_equal(got.argmax(1), expected.argmax(1))
    return expected


def test_onnx_and_torch_agree_on_synthetic_clips(speech_model, speech):
    clips = first_clips(speech, "yes", 12) + first_clips(speech, "no", 12)
    assert_same_answers(speech_model / "model.pt", clips)


def test_onnx_and_torch_agree_on_real_clips(real_model, real_data):
    clips = first_clips(real_data, "yes", 40) + first_clips(real_data, "no", 40)
    logits = assert_same_answers(real_model / "model.pt", clips)
    assert len(set(logits.argmax(1).tolist())) == 2  # a real model, both answers given


def test_scanner_gives_the_same_detections_with_both_engines(speech_model, speech):
    from preprocess.render import RenderSettings, load_audio
    model_path = speech_model / "model.pt"
    settings = RenderSettings.from_dict(load_checkpoint(model_path)["render"])
    rng = np.random.default_rng(0)
    parts = []
    for clip in first_clips(speech, "yes", 2) + first_clips(speech, "no", 2):
        parts += [load_audio(clip, settings), (1e-3 * rng.standard_normal(settings.sample_rate)).astype(np.float32)]
    wave = np.concatenate(parts)
    scans = [detect.scan(predict.Predictor(model_path, engine=name), "long.wav", wave)
             for name in ("torch", "onnx")]
    assert np.abs(scans[0].probs - scans[1].probs).max() <= TOLERANCE
    assert [d.label for d in scans[0].detections] == [d.label for d in scans[1].detections]
    assert np.allclose([d.time for d in scans[0].detections], [d.time for d in scans[1].detections])


def test_auto_is_onnx_on_the_cpu_and_predict_answers_alike(speech_model, speech, capsys):
    model_path = speech_model / "model.pt"
    assert predict.Predictor(model_path).engine.name == "onnx"  # auto, onnxruntime installed
    clips = [str(c) for c in first_clips(speech, "yes", 2) + first_clips(speech, "no", 2)]
    answers = {}
    for name in ("torch", "onnx"):
        capsys.readouterr()
        assert predict.main(["--model", str(model_path), "--engine", name, "--json", *clips]) == 0
        answers[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["label"] for a in answers["torch"]] == [a["label"] for a in answers["onnx"]]
    for a, b in zip(answers["torch"], answers["onnx"]):
        assert np.abs(np.array(a["logits"]) - np.array(b["logits"])).max() <= TOLERANCE


def test_the_export_is_cached_beside_the_checkpoint_by_its_hash(speech_model, tmp_path):
    model_path = tmp_path / "m" / "model.pt"
    model_path.parent.mkdir()
    model_path.write_bytes((speech_model / "model.pt").read_bytes())
    first = predict.Predictor(model_path, engine="onnx")
    digest = engines.checkpoint_digest(model_path)
    assert first.engine.cache_path == model_path.parent / f".model.pt.{digest[:16]}-v{engines.CACHE_VERSION}.onnx"
    assert cached_files(model_path) == [first.engine.cache_path.name]
    assert not list(model_path.parent.glob("*.tmp")) and not list(model_path.parent.glob(".*.tmp"))
    stamp = first.engine.cache_path.stat().st_mtime_ns
    second = predict.Predictor(model_path, engine="onnx")  # read back, not exported again
    assert second.engine.cache_path.stat().st_mtime_ns == stamp

    first.engine.cache_path.write_bytes(b"torn")  # a broken cache file is exported again
    third = predict.Predictor(model_path, engine="onnx")
    assert third.engine.cache_path.read_bytes() == first.engine.model_bytes

    ckpt = load_checkpoint(model_path)  # a retrained model: new hash, new file, the stale one gone
    ckpt["state_dict"] = {k: (v * 1.01 if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    atomic_torch_save(ckpt, model_path)
    changed = predict.Predictor(model_path, engine="onnx")
    assert changed.engine.cache_path != first.engine.cache_path
    assert cached_files(model_path) == [changed.engine.cache_path.name]
    x = torch.rand(2, *[int(v) for v in ckpt["input_size"]])
    assert np.abs(changed.logits(x).numpy() - predict.Predictor(model_path, engine="torch").logits(x).numpy()).max() \
        <= TOLERANCE


def test_an_unwritable_model_folder_keeps_the_export_in_memory(speech_model, tmp_path, monkeypatch):
    model_path = tmp_path / "model.pt"
    model_path.write_bytes((speech_model / "model.pt").read_bytes())

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(engines, "atomic_path", refuse)
    predictor = predict.Predictor(model_path, engine="onnx")
    assert predictor.engine.cache_path is None and cached_files(model_path) == []
    x = torch.rand(1, *predictor.ckpt["input_size"])
    assert np.abs(predictor.logits(x).numpy() - predict.Predictor(model_path, engine="torch").logits(x).numpy()).max() \
        <= TOLERANCE


def test_engine_onnx_without_onnxruntime_is_a_clear_error(speech_model, speech, monkeypatch, capsys):
    model_path = speech_model / "model.pt"
    clip = str(first_clips(speech, "yes", 1)[0])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the optional package were not installed
    capsys.readouterr()
    assert predict.main(["--model", str(model_path), "--engine", "onnx", clip]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --engine onnx needs onnxruntime") and "pip install" in err[0]
    with pytest.raises(engines.EngineError):
        predict.Predictor(model_path, engine="onnx")
    assert predict.Predictor(model_path).engine.name == "torch"  # auto falls back to PyTorch
    assert predict.main(["--model", str(model_path), clip]) == 0


def test_onnx_engine_runs_on_the_threads_asked(speech_model):
    predictor = predict.Predictor(speech_model / "model.pt", engine="onnx", threads=1)
    assert predictor.engine.threads == 1
    assert predictor.engine.session.get_session_options().intra_op_num_threads == 1
    assert engines.resolve("auto", "cuda") == "torch"
    with pytest.raises(engines.EngineError, match="CPU"):
        engines.resolve("onnx", "cuda")
    assert os.environ.get("OMP_NUM_THREADS") == "1"  # conftest: the suite stays on its cores


def test_scanner_windows_are_the_clip_render_on_real_speech(real_data):
    """On real words in real noise: the scanner's shared-frame render gives each window exactly the
    tensor a clip of those samples gets (render_tensor), so the scan sees the training images' pixels."""
    from preprocess.render import RenderSettings, load_audio, render_tensor, render_tensors
    settings = RenderSettings()
    clips = first_clips(real_data, "yes", 6) + first_clips(real_data, "no", 6)
    noise = sorted((real_data / "_background_noise_").glob("*.wav"))
    parts = [load_audio(c, settings) for c in clips]
    if noise:
        parts.insert(3, load_audio(noise[0], settings)[:3 * settings.sample_rate] * 0.3)
    wave = np.concatenate(parts)
    hop = int(detect.DEFAULT_HOP_S * settings.sample_rate)
    windows = [wave[s:s + settings.num_samples] for s in range(0, len(wave) - settings.num_samples, hop)]
    for start in range(0, len(windows), detect.SCAN_BATCH_SIZE):
        batch = windows[start:start + detect.SCAN_BATCH_SIZE]
        assert torch.equal(render_tensors(batch, hop, settings), torch.stack([render_tensor(w, settings) for w in batch]))
