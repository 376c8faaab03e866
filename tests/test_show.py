"""preprocess.show (per-clip figure) and preprocess.sheet (contact sheet) on synthetic speech and the
PNGs preprocess renders from it."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import first_clips
from preprocess import sheet, show
from preprocess.layout import SettingsError, render_settings
from preprocess.render import RenderSettings, feature_matrix, render_file, to_levels
from preprocess.sources import SPLITS, group_id, which_set

CLIPS_PER_CLASS = 6


def _looks_like_a_figure(path: Path, min_size: tuple[int, int]) -> np.ndarray:
    """Open a written PNG with Pillow: right size, not blank (spread of values, many colours)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1], image.size
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 20, "figure is (nearly) blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200, "figure has too few colours"
    return pixels


@pytest.fixture(scope="module")
def clips(speech) -> list[Path]:
    return first_clips(speech, "yes", 1) + first_clips(speech, "no", 1)


def clips_in_every_split(root: Path, label: str, per_split: int) -> list[Path]:
    """The first `per_split` clips of root/label that the speaker-hash split (30/30) puts in each split."""
    chosen = {split: [] for split in SPLITS}
    for clip in first_clips(root, label):
        split = which_set(group_id(clip.name), 30, 30)
        if len(chosen[split]) < per_split:
            chosen[split].append(clip)
    return [clip for clips in chosen.values() for clip in clips]


@pytest.fixture(scope="module")
def small_images(speech, tmp_path_factory):
    """`python -m preprocess` on 6 yes + 6 no synthetic clips, once viridis spectrogram and once gray mel."""
    from preprocess.prepare import main

    audio = tmp_path_factory.mktemp("show_audio") / "clips"
    for cls in ("yes", "no"):
        (audio / cls).mkdir(parents=True)
        for clip in clips_in_every_split(speech, cls, CLIPS_PER_CLASS // 3):
            (audio / cls / clip.name).symlink_to(clip)
    made = {}
    for name, extra in (("viridis", []), ("gray", ["--feature", "mel", "--colormap", "gray"])):
        out = audio.parent / name
        assert main(["--source", "folder", "--root", str(audio), "--out", str(out), "--val-pct", "30",
                     "--test-pct", "30", "--workers", "1", "--quiet", *extra]) == 0
        made[name] = out
    return made


# ---------------------------------------------------------------- show

@pytest.mark.slow  # draws a matplotlib figure
def test_show_draws_two_clips_side_by_side(clips, tmp_path, capsys):
    out = tmp_path / "figs" / "compare.png"
    assert show.main([str(c) for c in clips] + ["--out", str(out)]) == 0
    assert "2 clip(s)" in capsys.readouterr().out
    pixels = _looks_like_a_figure(out, (2 * 400, 5 * 200))
    # two columns: the left and right halves both hold plots (not one column and white space)
    half = pixels.shape[1] // 2
    assert pixels[:, :half].std() > 20 and pixels[:, half:].std() > 20
    assert [p.name for p in out.parent.iterdir()] == ["compare.png"]  # no temp file left


def test_show_uses_the_renderers_pixels(clips):
    """The PNG panel is render_file's image, and the plotted matrix of the rendered feature maps to
    exactly its pixels: the plots and the PNG cannot disagree."""
    settings = RenderSettings()
    view = show.analyse(clips[0], settings)
    assert np.array_equal(view.png, np.asarray(render_file(clips[0], settings).convert("RGB")))
    levels = to_levels(view.matrices[settings.feature], settings)
    assert np.array_equal(np.asarray(render_file(clips[0], settings)), levels)
    assert view.waveform.shape == (settings.num_samples,)
    mel = show.feature_settings(settings, "mel")
    assert np.array_equal(view.matrices["mel"], feature_matrix(view.waveform, mel))
    assert view.matrices["mel"].shape[0] == settings.n_mels
    assert view.matrices["mfcc"].shape[0] == settings.n_mfcc


@pytest.mark.slow  # draws a matplotlib figure
def test_show_with_images_dir_shows_the_png_preprocess_wrote(small_images, speech, tmp_path):
    """--images DIR: the settings of DIR/render.json (here gray mel), so the panel equals the file."""
    images = small_images["gray"]
    settings = render_settings(images)
    assert settings.feature == "mel" and settings.colormap == "gray"
    png = next(images.rglob("*.png"))
    source = speech / png.parent.name / (png.stem + ".wav")
    view = show.analyse(source, settings)
    with Image.open(png) as written:
        assert written.mode == "L"
        assert np.array_equal(view.png, np.asarray(written))
    out = tmp_path / "gray.png"
    assert show.main([str(source), "--images", str(images), "--out", str(out)]) == 0
    _looks_like_a_figure(out, (400, 5 * 200))


@pytest.mark.slow  # draws a matplotlib figure
def test_show_with_model_uses_the_checkpoint_settings(clips, tmp_path):
    import torch
    from train.checkpoint import atomic_torch_save, make_checkpoint
    from train.models import CNNet

    settings = RenderSettings(feature="mfcc", n_mfcc=20, colormap="gray")
    model = CNNet(2, (settings.channels, *settings.image_size))
    torch.manual_seed(0)
    atomic_torch_save(make_checkpoint(model, "cnnet", ["no", "yes"], (1, *settings.image_size),
                                      settings.to_dict()), tmp_path / "model.pt")
    assert render_settings(tmp_path / "model.pt") == settings
    out = tmp_path / "m.png"
    assert show.main([str(clips[0]), "--model", str(tmp_path / "model.pt"), "--out", str(out)]) == 0
    _looks_like_a_figure(out, (400, 5 * 200))


@pytest.mark.slow  # draws a matplotlib figure
def test_show_names_an_unreadable_clip_and_draws_the_rest(clips, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    out = tmp_path / "fig.png"
    assert show.main([str(broken), str(clips[0]), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "broken.wav" in captured.err and "cannot decode audio" in captured.err
    assert "1 unreadable" in captured.out
    _looks_like_a_figure(out, (400, 5 * 200))
    # nothing readable: no figure at all
    assert show.main([str(broken), "--out", str(tmp_path / "none.png")]) == 1
    assert not (tmp_path / "none.png").exists()
    assert show.main([str(clips[0]), "--images", str(tmp_path), "--out", str(out)]) == 2
    assert "render.json" in capsys.readouterr().err


def test_show_help_explains():
    with pytest.raises(SystemExit) as exit_info:
        show.main(["--help"])
    assert exit_info.value.code == 0


# ---------------------------------------------------------------- sheet

def test_sheet_one_section_per_class_with_first_n(small_images, tmp_path, capsys):
    images = small_images["viridis"]
    out = tmp_path / "sheet.png"
    assert sheet.main([str(images), "--out", str(out), "--per-class", "4", "--columns", "4"]) == 0
    assert "no 4/6, yes 4/6" in capsys.readouterr().out
    height, width = RenderSettings().image_size
    tile_w = width * sheet.DEFAULT_SCALE + sheet.PADDING
    tile_h = height * sheet.DEFAULT_SCALE + sheet.CAPTION_PX + sheet.PADDING
    pixels = _looks_like_a_figure(out, (0, 0))
    assert pixels.shape[1] == 4 * tile_w + sheet.PADDING
    assert pixels.shape[0] == 2 * (sheet.HEADING_PX + tile_h + sheet.PADDING)  # 2 classes x 1 row of 4
    # the first tile holds the first PNG of 'no' (split order train, val, test; then name), upscaled 2x
    first = sheet.find_images(images)["no"][0]
    with Image.open(images / first) as png:
        expected = np.asarray(png.convert("RGB"))
    top = sheet.HEADING_PX + sheet.PADDING
    tile = pixels[top:top + height * 2:2, sheet.PADDING:sheet.PADDING + width * 2:2]
    assert np.array_equal(tile, expected)


def test_sheet_selection_is_deterministic_and_split_aware(small_images, tmp_path):
    images = small_images["viridis"]
    found = sheet.find_images(images, "test")
    assert all(p.startswith("test/") for paths in found.values() for p in paths)
    everything = sheet.find_images(images)["yes"]
    assert sheet.select(everything, 3, sample=False, seed=0) == everything[:3]
    sampled = sheet.select(everything, 3, sample=True, seed=1)
    assert sampled == sheet.select(everything, 3, sample=True, seed=1) and sampled == sorted(sampled)
    runs = []
    for name in ("a.png", "b.png"):
        assert sheet.main([str(images), "--out", str(tmp_path / name), "--sample", "--per-class", "3"]) == 0
        runs.append((tmp_path / name).read_bytes())
    assert runs[0] == runs[1]
    assert sheet.main([str(images / "test"), "--out", str(tmp_path / "one_split.png")]) == 0  # a split dir
    assert sheet.main([str(images), "--split", "val", "--out", str(tmp_path / "val.png")]) == 0


def test_sheet_of_gray_mel_images(small_images, tmp_path):
    out = tmp_path / "gray.png"
    assert sheet.main([str(small_images["gray"]), "--out", str(out), "--per-class", "6"]) == 0
    pixels = _looks_like_a_figure(out, (0, 0))
    assert pixels.shape[0] > 2 * 64 * sheet.DEFAULT_SCALE  # 64 mel rows, upscaled, two classes


def test_sheet_flags_broken_pngs(small_images, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(small_images["viridis"], images)
    victim = images / sheet.find_images(images)["yes"][0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated PNG
    silent = images / sheet.find_images(images)["yes"][1]
    Image.new("L", Image.open(silent).size, 0).save(silent)  # a flat image
    tile = sheet.make_tile(victim, "x", (81, 201), 2)
    assert tuple(tile[:, 10, 10].tolist()) == sheet.BROKEN_TILE
    flat = sheet.make_tile(silent, "x", (81, 201), 2).numpy()
    caption = flat[:, 201 * 2:, :]
    assert (caption[0] > 200).sum() > 10 and (caption[0] > caption[1] + 100).sum() > 10  # red warning text
    assert sheet.main([str(images), "--out", str(tmp_path / "sheet.png")]) == 0
    with Image.open(tmp_path / "sheet.png") as out:
        assert (np.asarray(out.convert("RGB")) == sheet.BROKEN_TILE).all(axis=2).sum() > 100 * 100


def test_sheet_errors(tmp_path, capsys):
    assert sheet.main([str(tmp_path / "missing"), "--out", str(tmp_path / "s.png")]) == 2
    assert "missing: not a directory" in capsys.readouterr().err
    (tmp_path / "empty" / "train" / "yes").mkdir(parents=True)
    assert sheet.main([str(tmp_path / "empty"), "--out", str(tmp_path / "s.png")]) == 2
    assert "no PNG images" in capsys.readouterr().err
    assert sheet.main([str(tmp_path / "empty"), "--split", "test", "--out", str(tmp_path / "s.png")]) == 2
    assert "no 'test' split" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_settings_for_other_features_drop_a_custom_range():
    custom = RenderSettings(db_min=-60.0, db_max=20.0)
    assert show.feature_settings(custom, "spectrogram") is custom
    mel = show.feature_settings(custom, "mel")
    assert mel.feature == "mel" and mel.pixel_range == RenderSettings(feature="mel").pixel_range
    assert dataclasses.replace(mel, feature="spectrogram", db_min=-60.0, db_max=20.0) == custom


def test_render_settings_name_the_file_they_cannot_read(tmp_path):
    with pytest.raises(SettingsError, match="none: no such images folder or model file"):
        render_settings(tmp_path / "none")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SettingsError, match="garbage.pt: no render settings readable"):
        render_settings(tmp_path / "garbage.pt")
    (tmp_path / "render.json").write_text('{"settings": {"feature": "wavelets"}}')
    with pytest.raises(SettingsError, match="render.json: not a valid render.json"):
        render_settings(tmp_path)
