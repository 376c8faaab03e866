"""eSpeak NG speech engine: the C library via ctypes (synchronous mode), or an `espeak-ng` binary.

    engine = load_engine()                       # library from the espeakng-loader wheel, else binary
    wave = engine.synth("yes", Voice("en-us", "f3", pitch=60, pitch_range=40, rate=170))
    # float32 mono in [-1, 1] at engine.sample_rate (22050 Hz for eSpeak NG)
    engine.phonemes("no")                        # 'nˈoʊ': IPA, as eSpeak would say it
    phonemize(("yes", "know"))                   # ('jˈɛs', 'nˈo͡ʊ'): cached, one phoneme per tie group

The library keeps process-global state (one voice, one callback), so a process owns one engine:
make it once per worker process, after fork. Its samples depend only on the arguments of `synth`
(see LibraryEngine for how), so a data set comes out byte-identical whatever the worker count.
"""
from __future__ import annotations

import _ctypes
import ctypes
import ctypes.util
import dataclasses
import functools
import io
import os
import re
import shutil
import subprocess
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import numpy as np
import soundfile as sf

from preprocess.cli import SpecVisionError

LIBRARY_ENV = "SPECVISION_ESPEAK_LIBRARY"  # path to libespeak-ng; overrides the wheel's copy
DATA_ENV = "SPECVISION_ESPEAK_DATA"  # path to espeak-ng-data; overrides the wheel's copy
BINARY_NAME = "espeak-ng"
BINARY_TIMEOUT_S = 30

# From espeak-ng/speak_lib.h (API revision 12).
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000  # return an error code instead of calling exit() when data is missing
CHARS_UTF8 = 1
POS_CHARACTER = 1
EE_OK = 0
PHONEMES_IPA = 0x02  # espeak_TextToPhonemes phonememode: bit 1 = IPA (UTF-8) instead of eSpeak's ASCII names
PHONEMES_TIE = 0x80 | (0x361 << 8)  # bit 7: join the letters of one phoneme with bits 8-23 (U+0361 tie)
TIE = "\u0361"
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE = 1, 2, 3, 4
SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EngineError(SpecVisionError, RuntimeError):
    """No usable eSpeak NG, or an utterance it could not synthesize; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Voice:
    """One eSpeak voice setting: language (accent), variant (speaker type) and prosody parameters."""
    language: str = "en-us"
    variant: str | None = None  # a name in espeak-ng-data/voices/!v, e.g. "f3", "croak", "whisper"
    pitch: int = 50  # 0-99, base pitch (the variant sets the Hz it maps to)
    pitch_range: int = 50  # 0-99, intonation range: 0 is monotone
    rate: int = 175  # words per minute, 80-450

    @property
    def name(self) -> str:
        """The name eSpeak's -v option and espeak_SetVoiceByName take: language[+variant]."""
        return self.language + (f"+{self.variant}" if self.variant else "")


class LibraryEngine:
    """libespeak-ng through ctypes, AUDIO_OUTPUT_SYNCHRONOUS: samples arrive in a Python callback.

    eSpeak keeps synthesis state (glottal phase, pitch smoothing, echo buffer...) in static variables
    that espeak_Terminate/espeak_Initialize do not reset, so the same call after a different history
    gives different samples. `synth` therefore unloads and reloads the library (dlclose + dlopen,
    about 5 ms) before each utterance after the first: every utterance starts from a pristine library,
    and its samples depend only on its arguments. Close the engine (or use it in a `with`) before
    forking, so that workers load their own copy.
    """

    kind = "library"

    def __init__(self, library_path: str, data_path: str):
        self.library_path, self.data_path = library_path, data_path
        if not Path(data_path, "phontab").is_file():
            raise EngineError(f"eSpeak NG voice data not found: {data_path} has no phontab")
        self._chunks: list[np.ndarray] = []
        self._callback = SynthCallback(self._collect)  # keep a reference: C holds only the pointer
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        self._srand = libc.srand
        self._srand.argtypes = [ctypes.c_uint]
        self._lib = None
        self._dirty = False
        self._open()
        self.version = self._lib.espeak_Info(None).decode()

    def _open(self) -> None:
        try:
            lib = ctypes.CDLL(self.library_path)
        except OSError as err:
            raise EngineError(f"cannot load the eSpeak NG library {self.library_path}: {err}") from None
        for name, argtypes, restype in (
                ("espeak_Initialize", [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int],
                 ctypes.c_int),
                ("espeak_SetSynthCallback", [SynthCallback], None),
                ("espeak_SetVoiceByName", [ctypes.c_char_p], ctypes.c_int),
                ("espeak_SetParameter", [ctypes.c_int, ctypes.c_int, ctypes.c_int], ctypes.c_int),
                ("espeak_Synth", [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                  ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p],
                 ctypes.c_int),
                ("espeak_Info", [ctypes.c_void_p], ctypes.c_char_p),
                ("espeak_TextToPhonemes", [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int],
                 ctypes.c_char_p),
                ("espeak_Terminate", [], ctypes.c_int)):
            function = getattr(lib, name, None)
            if function is None:
                raise EngineError(f"{self.library_path} is not eSpeak NG: it has no {name}")
            function.argtypes, function.restype = argtypes, restype
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, os.fsencode(self.data_path),
                                     INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EngineError(f"espeak_Initialize failed (returned {rate}) with data {self.data_path}")
        lib.espeak_SetSynthCallback(self._callback)
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)  # eSpeak NG >= 1.52
        if self._set_seed is not None:
            self._set_seed.argtypes, self._set_seed.restype = [ctypes.c_long], ctypes.c_int
        self._lib, self.sample_rate, self._dirty = lib, rate, False

    def close(self) -> None:
        """Terminate eSpeak and unload the library (the next `synth` loads it again)."""
        if self._lib is not None:
            self._lib.espeak_Terminate()
            _ctypes.dlclose(self._lib._handle)
            self._lib = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _collect(self, samples, count, _events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0 = go on synthesizing

    def synth(self, text: str, voice: Voice) -> np.ndarray:
        if self._dirty or self._lib is None:
            self.close()
            self._open()
        lib, self._dirty = self._lib, True
        if lib.espeak_SetVoiceByName(voice.name.encode()) != EE_OK:
            raise EngineError(f"eSpeak NG has no voice {voice.name!r}")
        for param, value in ((PARAM_RATE, voice.rate), (PARAM_PITCH, voice.pitch),
                             (PARAM_RANGE, voice.pitch_range), (PARAM_VOLUME, 100)):
            lib.espeak_SetParameter(param, int(value), 0)
        # eSpeak NG seeds its noise generator (breath, whisper) from the clock at initialisation,
        # and Klatt voices use the C library's rand(): fix both so the noise is the same every run.
        if self._set_seed is not None:
            self._set_seed(1)
        self._srand(1)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        code = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if code != EE_OK:
            raise EngineError(f"espeak_Synth failed (code {code}) for {text!r} with voice {voice.name}")
        return _to_float(np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16))

    def phonemes(self, text: str, voice_language: str = "en-us", ties: bool = False) -> str:
        """The IPA eSpeak would say `text` with (clauses joined by a space), e.g. 'nˈoʊ' for "no".

        ties=True joins the letters of one phoneme with U+0361 ('nˈo͡ʊ', 't͡ʃ'): eSpeak's own phoneme
        boundaries. Transcribing touches the translator's state, so the engine counts as used: the
        next `synth` reloads the library first and its samples stay those of a fresh engine.
        """
        if self._lib is None:
            self._open()
        lib, self._dirty = self._lib, True
        if lib.espeak_SetVoiceByName(voice_language.encode()) != EE_OK:
            raise EngineError(f"eSpeak NG has no voice {voice_language!r}")
        data = ctypes.create_string_buffer(text.encode("utf-8") + b"\0")
        pointer = ctypes.c_void_p(ctypes.addressof(data))  # advanced clause by clause, NULL at the end
        mode = PHONEMES_IPA | (PHONEMES_TIE if ties else 0)
        clauses = []
        while pointer.value:
            clause = lib.espeak_TextToPhonemes(ctypes.byref(pointer), CHARS_UTF8, mode)
            if clause is None:
                break
            clauses.append(clause.decode("utf-8", errors="replace").strip())
        return " ".join(c for c in clauses if c)


class BinaryEngine:
    """The `espeak-ng` command line program, one process per utterance, WAV on --stdout."""

    kind = "binary"

    def __init__(self, binary: str):
        self.binary = binary
        try:
            probe = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                   timeout=BINARY_TIMEOUT_S, check=True)
        except (OSError, subprocess.SubprocessError) as err:
            raise EngineError(f"cannot run {binary} --version: {err}") from None
        self.version = probe.stdout.strip()
        found = re.search(r"Data at:\s*(\S.*)$", self.version)
        self.data_path = found.group(1).strip() if found else None
        self.sample_rate = self.synth_with_rate("a", Voice())[1]

    def close(self) -> None:
        """Nothing to release: each utterance is its own process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def synth_with_rate(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        # The program has no pitch-range option: SSML's percentage of the default range (50) sets it.
        markup = f'<prosody range="{2 * voice.pitch_range}%">{xml_escape(text)}</prosody>'
        command = [self.binary, "--stdout", "-m", "-v", voice.name, "-s", str(voice.rate),
                   "-p", str(voice.pitch), "-a", "100", "--", markup]
        try:
            result = subprocess.run(command, capture_output=True, timeout=BINARY_TIMEOUT_S, check=True)
            data, rate = sf.read(io.BytesIO(result.stdout), dtype="int16")
        except subprocess.CalledProcessError as err:
            message = err.stderr.decode(errors="replace").strip()
            raise EngineError(f"{' '.join(command)} failed: {message}") from None
        except (OSError, subprocess.SubprocessError, sf.LibsndfileError) as err:
            raise EngineError(f"{' '.join(command)} failed: {err}") from None
        return _to_float(data.reshape(-1)), rate

    def synth(self, text: str, voice: Voice) -> np.ndarray:
        return self.synth_with_rate(text, voice)[0]

    def phonemes(self, text: str, voice_language: str = "en-us", ties: bool = False) -> str:
        """As LibraryEngine.phonemes, from `espeak-ng -q --ipa` (--ipa=1: with U+0361 ties)."""
        command = [self.binary, "-q", "--ipa=1" if ties else "--ipa", "-v", voice_language, "--", text]
        try:
            result = subprocess.run(command, capture_output=True, timeout=BINARY_TIMEOUT_S, check=True)
        except subprocess.CalledProcessError as err:
            message = err.stderr.decode(errors="replace").strip()
            raise EngineError(f"{' '.join(command)} failed: {message}") from None
        except (OSError, subprocess.SubprocessError) as err:
            raise EngineError(f"{' '.join(command)} failed: {err}") from None
        return " ".join(result.stdout.decode("utf-8", errors="replace").split())


def _to_float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32768.0


def default_library_paths() -> tuple[str | None, str | None]:
    """(library, data) from the environment overrides, else the espeakng-loader wheel, else None."""
    library, data = os.environ.get(LIBRARY_ENV), os.environ.get(DATA_ENV)
    if library is None or data is None:
        try:
            import espeakng_loader
            library = library or espeakng_loader.get_library_path()
            data = data or espeakng_loader.get_data_path()
        except (ImportError, RuntimeError):
            pass
    return library, data


def load_engine(library: str | None = None, data: str | None = None, binary_path: str | None = None,
                prefer: str = "library"):
    """The first engine that works: the ctypes library (prefer="library") or the binary on PATH.

    `binary_path` is the search path for `espeak-ng` (default: $PATH). Raises EngineError listing
    why each engine was unusable.
    """
    env_library, env_data = default_library_paths()
    library, data = library or env_library, data or env_data
    reasons = []

    def try_library():
        if not library or not data:
            reasons.append("library: espeakng-loader is not installed and no library path was given")
            return None
        try:
            return LibraryEngine(library, data)
        except EngineError as err:
            reasons.append(f"library: {err}")

    def try_binary():
        found = shutil.which(BINARY_NAME, path=binary_path)
        if not found:
            searched = binary_path if binary_path is not None else os.environ.get("PATH", "")
            reasons.append(f"binary: no {BINARY_NAME} on PATH ({searched!r})")
            return None
        try:
            return BinaryEngine(found)
        except EngineError as err:
            reasons.append(f"binary: {err}")

    order = (try_library, try_binary) if prefer == "library" else (try_binary, try_library)
    for attempt in order:
        engine = attempt()
        if engine is not None:
            return engine
    raise EngineError("no eSpeak NG engine available (pip install espeakng-loader, or install the "
                      "espeak-ng program):\n  " + "\n  ".join(reasons))


@functools.lru_cache(maxsize=64)
def phonemize(words: tuple[str, ...], language: str = "en-us", prefer: str = "library") -> tuple[str, ...]:
    """The tied IPA of each word (LibraryEngine.phonemes, ties=True), cached per tuple of words.

    Loads an engine for the call and closes it after (a few hundred words take a fraction of a
    second). A process holds one eSpeak library, so call this while no other engine is open in it
    (and, like any engine, before forking workers, never in them).
    """
    with load_engine(prefer=prefer) as engine:
        return tuple(engine.phonemes(word, language, ties=True) for word in words)


def list_variants(data_path: str | None) -> list[str]:
    """Voice variant names in an eSpeak data folder (espeak-ng-data/voices/!v); [] if unknown."""
    folder = Path(data_path or "", "voices", "!v")
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if data_path and folder.is_dir() else []
