"""What runs the network for train.predict (and everything built on its Predictor: the long-recording
scanner, live listening): PyTorch, or ONNX Runtime on the same checkpoint.

    engine = make_engine("auto", model, ckpt, "models/demo/model.pt")   # onnx when onnxruntime imports
    logits = engine(batch)       # float32 [N, C, H, W] in [0, 1] -> float32 CPU logits [N, classes]

`--engine auto|onnx|torch`: auto is ONNX Runtime when `onnxruntime` (the `export` extra) imports and the
model runs on the CPU, else PyTorch. The ONNX network is exported from the checkpoint's own weights
(train.export's exporter), checked against PyTorch on rendered test signals (the export's limit,
1e-4), and cached beside the checkpoint as `.<name>.<hash>.onnx`, keyed by the SHA-256 of the
checkpoint file (written atomically; a retrained model gets a new file and the stale one is removed).
Where the folder is not writable the export is kept in memory. A batch-1 forward pass of specresnet is
3-4x faster in ONNX Runtime than in PyTorch eager on this project's CPU (docs/benchmarks.md).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from preprocess.atomic import atomic_path
from preprocess.cli import SpecVisionError

ENGINES = ("auto", "onnx", "torch")
CACHE_VERSION = 1   # bump when the cached file's contents change for the same checkpoint (opset, exporter)
# ORT_ENABLE_ALL folds BatchNorm into the convolutions and fuses Conv+Add+ReLU; measured against
# ORT_ENABLE_EXTENDED / BASIC with `python -m bench.onnx_options` (docs/benchmarks.md).
GRAPH_OPTIMIZATION = "ORT_ENABLE_ALL"


class EngineError(SpecVisionError):
    """An engine that cannot be used here (onnxruntime missing, export failed): exit status 2."""


def onnxruntime_available() -> bool:
    """Both packages of the `export` extra: onnx makes the file, onnxruntime runs it."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(name: str, device: str | torch.device = "cpu") -> str:
    """'auto' | 'onnx' | 'torch' -> 'onnx' or 'torch'; EngineError for onnx that cannot run here."""
    if name not in ENGINES:
        raise EngineError(f"--engine {name!r}: expected one of {', '.join(ENGINES)}")
    on_cpu = torch.device(device).type == "cpu"
    if name == "auto":
        return "onnx" if on_cpu and onnxruntime_available() else "torch"
    if name == "onnx":
        if not on_cpu:
            raise EngineError(f"--engine onnx runs on the CPU; use --engine torch for --device {device}")
        if not onnxruntime_available():
            raise EngineError("--engine onnx needs onnxruntime and onnx, which are not installed: pip "
                              "install 'specvision[export]' (or pip install onnx onnxruntime), or use "
                              "--engine torch")
    return name


class TorchEngine:
    """The PyTorch model as it is (eval mode, inference mode)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu"):
        self.model, self.device = model, torch.device(device)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch.to(self.device)).float().cpu()


class OnnxEngine:
    """ONNX Runtime (CPU) on the checkpoint's network, exported once and cached beside it.

    `threads`: intra-op threads of the session (None: torch.get_num_threads() at creation, so a
    process that set torch to one thread gets one here too); inter-op parallelism is off (a chain of
    convolutions has nothing to run side by side).
    """

    name = "onnx"

    def __init__(self, model: torch.nn.Module, ckpt: dict, model_path: str | os.PathLike | None = None,
                 threads: int | None = None, cache: bool = True, optimization: str = GRAPH_OPTIMIZATION):
        try:
            import onnxruntime
        except ImportError:
            raise EngineError("the onnx engine needs onnxruntime: pip install 'specvision[export]'") from None
        self.threads = torch.get_num_threads() if threads is None else int(threads)
        self.model_bytes, self.cache_path = onnx_model(model, ckpt, model_path, cache)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, optimization)
        options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's
        self.session = onnxruntime.InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])
        from train.export import INPUT_NAME, OUTPUT_NAME
        self.input_name, self.output_name = INPUT_NAME, OUTPUT_NAME

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([self.output_name], {self.input_name: array})[0])


def checkpoint_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_path_for(model_path: str | os.PathLike, digest: str) -> Path:
    path = Path(model_path)
    return path.with_name(f".{path.name}.{digest[:16]}-v{CACHE_VERSION}.onnx")


def onnx_model(model: torch.nn.Module, ckpt: dict, model_path: str | os.PathLike | None,
               cache: bool = True) -> tuple[bytes, Path | None]:
    """-> (the ONNX file's bytes, the cache file they were read from or written to, or None).

    A cache file is only ever one that passed the parity check (it is renamed into place after it);
    an unreadable one is exported again."""
    cached = None
    if cache and model_path is not None and Path(model_path).is_file():
        cached = cache_path_for(model_path, checkpoint_digest(model_path))
        with contextlib.suppress(OSError):
            data = cached.read_bytes()
            if _loads(data):
                return data, cached
    if cached is not None:
        try:
            with atomic_path(cached) as tmp:
                _export_checked(model, ckpt, tmp)
                data = tmp.read_bytes()
            _remove_stale(Path(model_path), cached)
            return data, cached
        except PermissionError:
            pass  # a read-only model folder: export in memory below
        except OSError as err:
            if err.errno not in (13, 30):  # EACCES, EROFS
                raise
    with tempfile.TemporaryDirectory(prefix="specvision-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        _export_checked(model, ckpt, path)
        return path.read_bytes(), None


def _loads(data: bytes) -> bool:
    try:
        import onnx
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception:  # a torn or foreign file: export again
        return False
    return True


def _export_checked(model: torch.nn.Module, ckpt: dict, path: Path) -> None:
    """train.export's ONNX exporter and its parity check against PyTorch (limit 1e-4)."""
    from preprocess.render import RenderSettings
    from train import export
    settings = RenderSettings.from_dict(ckpt["render"])
    batch = export.check_inputs(settings, int(ckpt["input_size"][0]))
    model.eval()  # (a Predictor's model already is; the ONNX engine only runs CPU models)
    with torch.inference_mode():
        expected = model(batch).numpy()
    try:
        export.export_onnx(model, batch[:1], path, {"arch": ckpt["arch"], "classes": list(ckpt["classes"]),
                                                    "render": dict(ckpt["render"])})
        got = export.run_onnx(path, batch)
    except export.ExportError as err:
        raise EngineError(str(err)) from None
    diff = float(np.abs(got - expected).max())
    if not diff <= export.TOLERANCE:
        raise EngineError(f"the ONNX export of this model differs from PyTorch by {diff:.2e} "
                          f"(> {export.TOLERANCE:.0e}); use --engine torch")


def _remove_stale(model_path: Path, keep: Path) -> None:
    """Cached exports of earlier versions of this checkpoint (other hashes): no longer used."""
    pattern = re.compile(re.escape(f".{model_path.name}.") + r"[0-9a-f]{16}-v[0-9]+\.onnx")
    for other in model_path.parent.iterdir():
        if other != keep and pattern.fullmatch(other.name):
            with contextlib.suppress(OSError):
                other.unlink()


def make_engine(name: str, model: torch.nn.Module, ckpt: dict, model_path: str | os.PathLike | None = None,
                device: str | torch.device = "cpu", threads: int | None = None):
    """The engine `name` ('auto' | 'onnx' | 'torch') for a loaded model."""
    if resolve(name, device) == "onnx":
        return OnnxEngine(model, ckpt, model_path, threads)
    return TorchEngine(model, device)
