"""Look at clips the way the model does: waveform, spectrograms, MFCC and the exact PNG, side by side.

    python -m preprocess.show yes/a.wav no/b.wav --out compare.png
    python -m preprocess.show clip.wav --images images/ --out clip.png   # settings of images/render.json

One column per clip. Rows: the waveform the renderer sees (already padded/trimmed to the clip
length), the linear spectrogram, the mel spectrogram, the MFCC, and the PNG that `python -m
preprocess` writes for that clip. Every matrix comes from `preprocess.render.feature_matrix`, and
the colour scale of each row is the fixed dB range the renderer maps to pixels, so the row of the
rendered feature looks exactly like the PNG under it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import librosa.display  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from preprocess import cli
from preprocess.atomic import atomic_writer  # noqa: E402
from preprocess.layout import render_settings  # noqa: E402
from preprocess.render import (FEATURES, AudioError, RenderSettings, feature_matrix,  # noqa: E402
                               load_clip, open_audio, render_image)

COLUMN_WIDTH_IN = 4.6   # inches per clip column
ROW_HEIGHT_IN = 2.5     # inches per plot row
COLORBAR_WIDTH = 0.06   # relative to a clip column
DPI = 100
ROWS = ("waveform", "spectrogram", "mel", "mfcc", "png")


def feature_settings(settings: RenderSettings, feature: str) -> RenderSettings:
    """`settings` with another feature; a custom dB range only applies to the feature it was set for."""
    if feature == settings.feature:
        return settings
    return dataclasses.replace(settings, feature=feature, db_min=None, db_max=None)


@dataclasses.dataclass
class ClipView:
    """Everything drawn for one clip."""
    path: Path
    raw_seconds: float
    waveform: np.ndarray                 # fitted to settings.num_samples, as rendered
    matrices: dict[str, np.ndarray]      # feature -> dB matrix (rows low -> high)
    png: np.ndarray                      # the rendered image as RGB/L pixels


def analyse(path: str | os.PathLike, settings: RenderSettings) -> ClipView:
    """Decode and compute every view of one clip with the renderer's own functions."""
    path = Path(path)
    with open_audio(path) as handle:  # raises AudioError naming the file; header checks
        seconds = handle.frames / handle.samplerate
    wave = load_clip(path, settings)  # a long recording is decoded in blocks (bounded memory)
    matrices = {f: feature_matrix(wave, feature_settings(settings, f)) for f in FEATURES}
    image = render_image(wave, settings)
    pixels = np.asarray(image.convert("RGB" if settings.channels == 3 else "L"))
    return ClipView(path, seconds, wave, matrices, pixels)


def _clip_title(view: ClipView, settings: RenderSettings) -> str:
    peak = float(np.abs(view.waveform).max())
    rms = float(np.sqrt(np.mean(view.waveform.astype(np.float64) ** 2)))
    rms_db = 20 * np.log10(max(rms, 1e-10))
    fitted = ""
    if view.raw_seconds < settings.duration - 1e-6:
        fitted = f", padded from {view.raw_seconds:.2f} s"
    elif view.raw_seconds > settings.duration + 1e-6:
        fitted = f", loudest {settings.duration:g} s of {view.raw_seconds:.2f} s"
    return (f"{view.path.parent.name}/{view.path.name}\n"
            f"waveform (peak {peak:.2f}, RMS {rms_db:.0f} dBFS{fitted})")


def draw(views: list[ClipView], settings: RenderSettings):
    """-> matplotlib Figure: one column per clip, one row per view, one colorbar per row."""
    sr, hop = settings.sample_rate, settings.hop_length
    cmap = "gray" if settings.colormap == "gray" else settings.colormap
    n = len(views)
    fig = plt.figure(figsize=(COLUMN_WIDTH_IN * n + 1.0, ROW_HEIGHT_IN * len(ROWS)), dpi=DPI,
                     layout="constrained")
    grid = fig.add_gridspec(len(ROWS), n + 1, width_ratios=[1.0] * n + [COLORBAR_WIDTH])
    # the waveforms first, while the figure is nearly empty: each waveshow call draws the whole figure
    # so far (twice, for its zoom callback), which took ~60 % of a 2-clip figure's time done last
    for col, view in enumerate(views):
        ax = fig.add_subplot(grid[0, col])
        librosa.display.waveshow(view.waveform, sr=sr, ax=ax, axis="time")
        ax.set(title=_clip_title(view, settings), xlabel="time (s)", ylabel="amplitude", ylim=(-1.05, 1.05))

    for col, view in enumerate(views):
        for row, feature in enumerate(("spectrogram", "mel", "mfcc"), start=1):
            fs = feature_settings(settings, feature)
            lo, hi = fs.pixel_range
            ax = fig.add_subplot(grid[row, col])
            common = dict(sr=sr, hop_length=hop, n_fft=fs.n_fft, x_axis="time", ax=ax,
                          cmap=cmap, vmin=lo, vmax=hi)
            if feature == "spectrogram":
                mesh = librosa.display.specshow(view.matrices[feature], y_axis="linear", **common)
                ax.set_title(f"linear spectrogram (n_fft {fs.n_fft}, hop {hop})")
            elif feature == "mel":
                # torchaudio's MelSpectrogram uses the HTK mel scale from 0 Hz to sr/2
                mesh = librosa.display.specshow(view.matrices[feature], y_axis="mel", htk=True,
                                                fmin=0.0, fmax=sr / 2, **common)
                ax.set_title(f"mel spectrogram ({fs.n_mels} mel bands)")
            else:
                mesh = librosa.display.specshow(view.matrices[feature], **common)
                ax.set(title=f"MFCC ({fs.n_mfcc} coefficients of the mel dB)", ylabel="coefficient")
                ax.set_yticks(np.arange(0, fs.n_mfcc, 10) + 0.5, [str(i) for i in range(0, fs.n_mfcc, 10)])
            ax.set_xlabel("time (s)")
            if feature != "mfcc":
                ax.set_ylabel("frequency (Hz)")
            if col == n - 1:
                bar = fig.colorbar(mesh, cax=fig.add_subplot(grid[row, n]))
                bar.set_label("MFCC (dB units)" if feature == "mfcc" else "power (dB)")

        ax = fig.add_subplot(grid[4, col])
        height, width = view.png.shape[:2]
        shown = ax.imshow(view.png, aspect="auto", interpolation="nearest",
                          cmap=None if view.png.ndim == 3 else "gray", vmin=0, vmax=255)
        ax.set(title=f"the PNG: {settings.feature}, {width}x{height} px",
               xlabel="pixel column (frame)", ylabel="pixel row")
        if col == n - 1:
            # the palette PNG has no scalar data: draw the level scale with the same colormap
            scale = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 255))
            bar = fig.colorbar(scale if view.png.ndim == 3 else shown, cax=fig.add_subplot(grid[4, n]))
            lo, hi = settings.pixel_range
            bar.set_label(f"pixel 0..255 = {lo:g}..{hi:g} dB")
    fig.suptitle(f"SpecVision render settings {settings.digest()}: {settings.sample_rate} Hz, "
                 f"{settings.duration:g} s, image feature '{settings.feature}', colormap {settings.colormap}")
    return fig


def save_figure(fig, out: str | os.PathLike) -> None:
    """savefig to a temp file beside `out`, then rename: never a half-written figure."""
    try:
        with atomic_writer(out) as handle:
            fig.savefig(handle, format="png", dpi=DPI, metadata={"Software": None})
    finally:
        plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.show", description=__doc__.split("\n\n")[0],
        epilog="Rows: waveform (s, amplitude), linear spectrogram (Hz), mel spectrogram (Hz, mel scale), "
               "MFCC, and the PNG that `python -m preprocess` writes for the clip. Colour scales are "
               "the renderer's fixed dB ranges, so the plots agree with the PNGs pixel for pixel.")
    parser.add_argument("clips", nargs="+", metavar="CLIP", help="audio files (wav, flac, ogg, mp3)")
    parser.add_argument("--out", required=True, help="figure to write (PNG)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--images", metavar="DIR", help="use the render settings of DIR/render.json")
    where.add_argument("--model", metavar="MODEL_PT", help="use the render settings stored in a model.pt")
    return parser


@cli.command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    where = args.images or args.model
    settings = render_settings(where) if where else RenderSettings()
    views, failed = [], []
    for clip in args.clips:
        try:
            views.append(analyse(clip, settings))
        except AudioError as err:  # the message names the file and the reason
            failed.append(str(err))
            print(f"error: {err}", file=sys.stderr)
    if not views:
        print("error: no readable clip, no figure written", file=sys.stderr)
        return 1
    save_figure(draw(views, settings), args.out)
    print(f"wrote {args.out}: {len(views)} clip(s), settings {settings.digest()} "
          f"({settings.feature}, {settings.colormap})" + (f"; {len(failed)} unreadable" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
