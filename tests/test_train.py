"""`python -m train`, train.evaluate, bench.cnnet: real PNGs rendered from synthetic speech (and from
the shared real clips where real speech is the point), real (tiny) trainings, real checkpoints, a real
2-process torchrun."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.optim.swa_utils import update_bn

from conftest import REPO, SPEECH_EPOCHS, first_clips
from preprocess.layout import SettingsError, read_render_record, write_render_record
from preprocess.render import (RenderSettings, image_to_tensor, read_png_metadata, render_file, render_image,
                               save_png)
from bench import cnnet as bench
from train import evaluate as evaluate_cli
from train.checkpoint import STATE_FILE, load_checkpoint, load_model
from train.augment import BackgroundMix, NoiseFloor, SpecAugment, SpeedPerturb
from train.data import DataError, SpectrogramFolder, build_datasets
from train.engine import exponential_average
from train.metrics import classification_report
from train.models import ARCHITECTURES, DEFAULT_ARCH, PretrainedError, build_model, load_pretrained
from train.train import Training, build_parser, main

torch.set_num_threads(1)
FAST = ["--no-progress", "--workers", "0", "--threads", "1"]


def subset(images: Path, dest: Path, per_class: dict[str, int]) -> Path:
    """The first N PNGs per class of each split of `images`, plus its render.json."""
    for split, count in per_class.items():
        for class_dir in sorted((images / split).iterdir()):
            for png in sorted(class_dir.glob("*.png"))[:count]:
                target = dest / split / class_dir.name / png.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(png, target)
    shutil.copyfile(images / "render.json", dest / "render.json")
    return dest


@pytest.fixture(scope="module")
def small_images(speech_images, tmp_path_factory) -> Path:
    """Tiny synthetic set for plumbing tests: 12/6/6 images per class."""
    return subset(speech_images, tmp_path_factory.mktemp("small") / "images",
                  {"train": 12, "val": 6, "test": 6})


@pytest.fixture(scope="module")
def trained(speech_model):
    """The shared synthetic model (conftest): the default arch trained on all synthetic train images."""
    return speech_model, json.loads((speech_model / "metrics.json").read_text())


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- data

def test_training_input_is_exactly_what_predict_renders(speech_images, speech):
    """A PNG as the trainer loads it (plain and cached) == image_to_tensor of the clip rendered afresh."""
    info = read_render_record(speech_images)
    settings = RenderSettings.from_dict(info["settings"])
    datasets = build_datasets(speech_images, settings, cache=True, splits=("test",), progress=False)
    plain = SpectrogramFolder(speech_images / "test", settings.channels, settings.image_size)
    for index in (0, len(plain) - 1):
        path = plain.samples[index][0]
        source = read_png_metadata(path)["source"]
        expected = image_to_tensor(render_file(speech / source, settings), settings.channels)
        assert expected.shape == (3, *settings.image_size)
        assert torch.equal(plain[index][0], expected)
        assert torch.equal(datasets["test"][index][0], expected)
        assert plain[index][1] == plain.class_to_idx[Path(path).parent.name]


CACHE_PEAK = """
import json, sys
from preprocess.layout import render_settings
from train.data import SpectrogramFolder
def status_kb(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key))
settings = render_settings(sys.argv[1])
SpectrogramFolder(sys.argv[1] + "/val", settings.channels, settings.image_size, progress=False)  # warm up
# the peak from here on: writing 5 to clear_refs resets VmHWM to the current RSS, so neither the
# imports' transient peak nor library pages the kernel dropped meanwhile count
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
before = status_kb("VmHWM:")
data = SpectrogramFolder(sys.argv[1] + "/train", settings.channels, settings.image_size, cache=True,
                         progress=False)
print(json.dumps({"cache_mb": data._cache.untyped_storage().nbytes() / 2**20, "count": len(data),
                  "dtype": str(data._cache.dtype), "added_peak_mb": (status_kb("VmHWM:") - before) / 1024}))
"""
CACHE_TEST_IMAGES = 2000


@pytest.mark.slow
def test_cache_is_one_uint8_tensor_and_costs_its_size_at_the_peak(tmp_path):
    """--cache holds each image once as uint8 (C x H x W bytes, the figure the docs give per image),
    and building it costs no more than that at the peak (it once held every image twice)."""
    settings = RenderSettings()
    height, width = settings.image_size
    noise = torch.Generator().manual_seed(0)
    for split, count in (("train", CACHE_TEST_IMAGES), ("val", 4)):
        for index in range(count):
            label = "ab"[index % 2]
            (tmp_path / split / label).mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=noise)
            Image.fromarray(pixels.numpy(), "RGB").save(tmp_path / split / label / f"{index}.png", compress_level=0)
    write_render_record(tmp_path, settings, {"kind": "folder", "root": str(tmp_path)})
    out = subprocess.run([sys.executable, "-c", CACHE_PEAK, str(tmp_path)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dtype"] == "torch.uint8" and result["count"] == CACHE_TEST_IMAGES
    assert result["cache_mb"] == pytest.approx(CACHE_TEST_IMAGES * 3 * height * width / 2**20)
    assert result["added_peak_mb"] < 1.3 * result["cache_mb"] + 20, result


def test_augmentations_keep_shape_and_never_flip():
    channels, height, width = 3, 20, 30
    # Every pixel is unique: value = (row * width + column) / (height * width), the same in each channel.
    index = torch.arange(height * width, dtype=torch.float32).view(1, height, width)
    image = (index / (height * width)).expand(channels, -1, -1).contiguous()
    original = image.clone()
    shift_only = SpecAugment(max_shift=0.2, time_masks=0, freq_masks=0)
    masks_only = SpecAugment(max_shift=0.0, time_masks=2, max_time_mask=0.2, freq_masks=2, max_freq_mask=0.2)
    full = SpecAugment(max_shift=0.2, time_masks=2, max_time_mask=0.2, freq_masks=2, max_freq_mask=0.2)
    shifts, masked_fraction = set(), []
    for seed in range(100):
        for augment in (shift_only, masks_only, full):
            out = augment(image, torch.Generator().manual_seed(seed))
            assert out.shape == image.shape and out.dtype == image.dtype
            assert torch.equal(out, augment(image, torch.Generator().manual_seed(seed)))  # seeded
        # Time shift: column j shows input column j - s (time runs forward, rows stay: no flip); the
        # |s| columns entering at an edge are copies of the quietest (here: leftmost) columns.
        out = shift_only(image, torch.Generator().manual_seed(seed))
        pixel = (out[0] * height * width).round().long()
        rows, columns = pixel // width, pixel % width
        assert torch.equal(rows, torch.arange(height)[:, None].expand(-1, width))
        assert (columns == columns[0]).all()  # a column moves as a whole
        shift = next(s for s in range(-6, 7) if all(columns[0, j] == j - s
                                                     for j in range(max(0, s), min(width, width + s))))
        entering = [j for j in range(width) if not 0 <= j - shift < width]
        assert len(entering) == abs(shift) and all(columns[0, j] < width // 4 for j in entering)
        shifts.add(shift)
        # Masks: whole-height time bands and whole-width frequency bands set to the image mean.
        out = masks_only(image, torch.Generator().manual_seed(seed))
        masked = (out != image).any(0)
        assert torch.equal(out[:, masked], image.mean(dim=(1, 2))[:, None].expand(-1, int(masked.sum())))
        full_columns, full_rows = masked.all(0), masked.all(1)
        assert torch.equal(masked, full_columns[None, :] | full_rows[:, None])
        masked_fraction.append(masked.float().mean().item())
    assert torch.equal(image, original)  # the input is never modified in place
    assert len(shifts) > 5 and max(masked_fraction) > 0.2 and min(masked_fraction) < max(masked_fraction)


def _tone_burst(hz: float, seconds: float, rate: int = 16000) -> np.ndarray:
    """A 1 s clip: a tone with two harmonics for `seconds`, centred, with 10 ms fades."""
    t = np.arange(rate) / rate
    on = np.abs(t - 0.5) <= seconds / 2
    fade = np.clip(np.minimum(t - (0.5 - seconds / 2), (0.5 + seconds / 2) - t) / 0.01, 0.0, 1.0)
    wave = sum(np.sin(2 * np.pi * k * hz * t) / k for k in (1, 2, 3))
    return (0.2 * wave * fade * on).astype(np.float32)


@pytest.mark.parametrize("feature", ["spectrogram", "mel"])
def test_speed_perturbation_matches_rendering_the_sped_up_audio(feature):
    """The image of a clip played s times as fast, made from the clip's image, against the image of
    audio that is s times as fast (a tone burst s times higher and 1/s as long): same rows, same frames."""
    settings = RenderSettings(feature=feature, colormap="gray")
    speed = SpeedPerturb(settings, 0.1)
    original = image_to_tensor(render_image(_tone_burst(700.0, 0.4), settings), 1)
    assert torch.equal(speed.apply(original, 1.0), original)
    for factor in (0.9, 0.95, 1.1):
        made = speed.apply(original, factor)[0]
        rendered = image_to_tensor(render_image(_tone_burst(700.0 * factor, 0.4 / factor), settings), 1)[0]
        fundamental = int(made[:, 40].argmax()), int(rendered[:, 40].argmax())
        assert abs(fundamental[0] - fundamental[1]) <= 1, (factor, fundamental)
        level = made.max() * 0.5
        made_frames, rendered_frames = (made.max(0).values > level).sum(), (rendered.max(0).values > level).sum()
        assert abs(int(made_frames) - int(rendered_frames)) <= 1, (factor, made_frames, rendered_frames)
        # the whole image: much closer to the sped-up clip's than the original image is
        error, before = (made - rendered).abs().mean(), (original[0] - rendered).abs().mean()
        assert error < 0.5 * before, (factor, float(error), float(before))


def test_speed_perturbation_keeps_colours_and_is_seeded():
    settings = RenderSettings()  # viridis: the background mix after it reads colours back to levels
    image = image_to_tensor(render_image(_tone_burst(500.0, 0.5), settings), 3)
    speed = SpeedPerturb(settings, 0.1)
    colours = set(map(tuple, image.flatten(1).t().tolist()))
    factors = set()
    for seed in range(20):
        out = speed(image, torch.Generator().manual_seed(seed))
        assert out.shape == image.shape and torch.equal(out, speed(image, torch.Generator().manual_seed(seed)))
        assert set(map(tuple, out.flatten(1).t().tolist())) <= colours
        factors.add(round(1.0 + 0.1 * (2 * float(torch.rand((), generator=torch.Generator().manual_seed(seed),
                                                                 dtype=torch.float64)) - 1), 3))
    assert min(factors) < 0.95 and max(factors) > 1.05
    mfcc = RenderSettings(feature="mfcc")  # rows are not frequencies: time only
    rows = torch.arange(40.0)[:, None].expand(40, 81)[None]
    assert torch.equal(SpeedPerturb(mfcc, 0.1).apply(rows, 1.1), rows)
    with pytest.raises(ValueError, match="speed change"):
        SpeedPerturb(settings, 0.0)


def test_speed_flag_reaches_the_augmentation_and_bad_values_are_usage_errors(small_images, tmp_path, capsys):
    def augment(*flags: str):
        return Training(build_parser().parse_args(["--images", str(small_images), "--out", str(tmp_path / "m"),
                                                   *FAST, *flags])).datasets["train"].augment
    assert augment().speed is None
    assert augment("--speed", "0.15").speed.change == 0.15
    for value in ("-0.1", "0.5"):
        assert main(["--images", str(small_images), "--out", str(tmp_path / "m"), "--speed", value, *FAST]) == 2
        assert "--speed is a fraction" in capsys.readouterr().err


def test_noise_floor_mixes_in_decibels_and_stays_a_rendered_image(small_images):
    settings = RenderSettings.from_dict(read_render_record(small_images)["settings"])
    noise = NoiseFloor(settings, probability=1.0, floor_db=(-40.0, -40.0), tilt_db=0.0)
    folder = SpectrogramFolder(small_images / "train", 3, settings.image_size)
    # the loudest clip: it has pixels both far below and far above the floor
    image = max((folder.load_tensor(i) for i in range(len(folder))),
                key=lambda tensor: int((noise.levels(tensor) > 200).sum()))
    levels = noise.levels(image)
    assert torch.equal(noise.image(levels), image)  # colours <-> levels is exact
    out = noise(image, torch.Generator().manual_seed(0))
    assert out.shape == image.shape
    mixed = noise.levels(out)  # raises if a colour is not one of the colormap's
    assert (mixed >= levels).all()  # adding power never makes a pixel quieter
    quiet, loud = levels < 40, levels > 200  # below / far above the -40 dB floor (level ~85)
    assert mixed[quiet].float().mean() > 70 and (mixed[loud] - levels[loud]).abs().max() <= 1
    assert torch.equal(NoiseFloor(settings, probability=0.0)(image, torch.Generator()), image)
    with pytest.raises(DataError, match="colours outside"):
        noise.levels(torch.full_like(image, 0.5))
    with pytest.raises(ValueError, match="mfcc"):
        NoiseFloor(RenderSettings(feature="mfcc"))
    gray = NoiseFloor(RenderSettings(colormap="gray"), probability=1.0)
    gray_image = levels[None].float() / 255
    assert (gray(gray_image, torch.Generator().manual_seed(0)) >= gray_image).all()


def test_background_mix_is_close_to_rendering_the_mixed_audio(tmp_path, small_images, capsys):
    """An image mixed with a 'silence' image ~ the spectrogram of the two recordings added as audio."""
    settings = RenderSettings()
    rate, n = settings.sample_rate, settings.num_samples
    rng = np.random.default_rng(0)
    t = np.arange(n) / rate
    envelope = np.exp(-0.5 * ((t - 0.5) / 0.12) ** 2)
    word = (0.3 * envelope * sum(np.sin(2 * np.pi * f * t * (1 + 0.2 * t)) / k
                                 for k, f in enumerate((180, 360, 540, 720, 900), 1))).astype(np.float32)
    noise = np.cumsum(rng.standard_normal(n)).astype(np.float32)  # brown noise: loud lows, quiet highs
    noise = 0.02 * (noise - noise.mean()) / noise.std()
    images = tmp_path / "images"
    for name, wave in (("word", word), ("silence", noise)):
        (images / "train" / name).mkdir(parents=True)
        save_png(render_image(wave, settings), images / "train" / name / "a.png")
    # generated non-speech in the silence class is never mixed in: it buries words (preprocess/nonspeech.py)
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    save_png(render_image(tone, settings), images / "train" / "silence" / "nonspeech-v1-tone_s0_train_00000.png")
    folder = SpectrogramFolder(images / "train", settings.channels, settings.image_size)
    mix = BackgroundMix(NoiseFloor(settings), probability=1.0, gain_db=(0.0, 0.0))
    assert mix.bind(folder, "silence") == 1
    assert Path(folder.samples[int(mix.indices[0])][0]).name == "a.png"
    clean = folder.load_tensor(folder.targets.index(folder.class_to_idx["word"]))
    mixed = mix(clean, torch.Generator().manual_seed(0))
    codec = mix.codec
    truth = codec.levels(image_to_tensor(render_image(word + noise, settings), settings.channels)).float()
    error = (codec.levels(mixed).float() - truth).abs().mean()
    # either input alone is far from the truth (51 and 6.5 levels here); the mix within a level (0.46)
    word_only = (codec.levels(clean).float() - truth).abs().mean()
    noise_only = (codec.levels(folder.load_tensor(mix.indices[0])).float() - truth).abs().mean()
    assert error < 1.0 and error < 0.25 * min(word_only, noise_only), (error, word_only, noise_only)
    assert torch.equal(mixed, mix(clean, torch.Generator().manual_seed(0)))  # seeded
    assert torch.equal(BackgroundMix(codec, 0.0).__call__(clean, torch.Generator()), clean)
    # without a silence class it draws nothing, and train says what is missing (exit 2)
    assert BackgroundMix(codec, 1.0).bind(SpectrogramFolder(small_images / "train", 3, settings.image_size),
                                          "silence") == 0
    assert main(["--images", str(small_images), "--out", str(tmp_path / "m"), "--background", "0.5",
                 *FAST]) == 2
    assert "no silence" not in (err := capsys.readouterr().err) and "'silence'" in err and "--background 0" in err
    for share in ("-0.1", "1.5"):
        assert main(["--images", str(small_images), "--out", str(tmp_path / "m"), "--background", share, *FAST]) == 2
        assert "--background is a share" in capsys.readouterr().err


def test_background_mix_is_on_by_default_only_where_there_is_a_silence_class(small_images, tmp_path):
    def background(images: Path, *flags: str):
        training = Training(build_parser().parse_args(["--images", str(images), "--out", str(tmp_path / "m"),
                                                       *FAST, *flags]))
        augment = training.datasets["train"].augment
        return None if augment is None else augment.background

    assert background(small_images) is None  # yes/no only: nothing to mix in, and no error
    opened = tmp_path / "open"
    shutil.copytree(small_images, opened)
    for split in ("train", "val", "test"):  # a 'silence' class: here some of the 'no' images
        shutil.copytree(opened / split / "no", opened / split / "silence")
    mix = background(opened)
    assert mix is not None and mix.probability == 0.8 and len(mix.indices) == 12
    assert background(opened, "--background", "0") is None
    assert background(opened, "--background", "0.3").probability == 0.3
    assert background(opened, "--no-augment", "--background", "0.3") is None  # no augmentation at all


def test_training_augmentation_is_seeded_by_epoch_and_index(small_images):
    settings = RenderSettings.from_dict(read_render_record(small_images)["settings"])
    train = build_datasets(small_images, settings, augment=SpecAugment(), progress=False)["train"]
    train.epoch = 1
    first = train[3][0]
    assert torch.equal(first, train[3][0])
    train.epoch = 2
    assert not torch.equal(first, train[3][0])
    assert first.shape == train.load_tensor(3).shape


def test_bad_image_folders_are_clear_errors(small_images, tmp_path, capsys):
    settings = RenderSettings.from_dict(read_render_record(small_images)["settings"])
    broken = tmp_path / "images"
    shutil.copytree(small_images, broken)
    shutil.rmtree(broken / "val" / "yes")
    with pytest.raises(DataError, match=r"val.*classes \['no'\] differ from train's \['no', 'yes'\]"):
        build_datasets(broken, settings, progress=False)
    assert main(["--images", str(broken), "--out", str(tmp_path / "m"), *FAST]) == 2
    assert "every split needs the same class folders" in capsys.readouterr().err

    (broken / "val" / "yes").mkdir()
    with pytest.raises(DataError, match="no PNG images"):
        build_datasets(broken, settings, progress=False)
    (broken / "val" / "yes").rmdir()
    shutil.rmtree(broken / "test")
    with pytest.raises(DataError, match="test: no such folder"):
        build_datasets(broken, settings, progress=False)

    other = RenderSettings(n_fft=256)
    with pytest.raises(DataError, match=r"\.png: image is 201x81 \(HxW\) but render.json settings give "
                                        r"129x81"):
        build_datasets(small_images, other, progress=False)
    (broken / "render.json").unlink()
    with pytest.raises(SettingsError, match="render.json: missing"):
        read_render_record(broken)


def test_gray_images_are_one_channel(speech, tmp_path):
    """colormap gray -> 'L' PNGs -> 1-channel tensors; both archs accept them."""
    settings = RenderSettings(colormap="gray")
    images = tmp_path / "images"
    for split in ("train", "val", "test"):
        for label in ("yes", "no"):
            for wav in first_clips(speech, label, 2):
                save_png(render_file(wav, settings), images / split / label / f"{wav.stem}.png")
    (images / "render.json").write_text(json.dumps({"settings": settings.to_dict()}))
    datasets = build_datasets(images, settings, progress=False)
    tensor, _ = datasets["train"][0]
    assert tensor.shape == (1, 201, 81)
    with Image.open(datasets["train"].samples[0][0]) as png:
        assert png.mode == "L"
    for arch in ARCHITECTURES:
        assert build_model(arch, 2, (1, 201, 81)).eval()(tensor[None]).shape == (1, 2)


# ---------------------------------------------------------------- models and metrics

def test_architectures_build_from_input_size():
    assert DEFAULT_ARCH == "specresnet"
    for size in ((3, 201, 81), (1, 64, 81), (3, 40, 32)):
        for arch in ARCHITECTURES:
            model = build_model(arch, 5, size).eval()
            assert model(torch.rand(2, *size)).shape == (2, 5), (arch, size)
    with pytest.raises(ValueError, match="at least 16x16"):
        build_model("cnnet", 2, (3, 12, 12))
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg", 2, (3, 201, 81))
    params = {arch: sum(p.numel() for p in build_model(arch, 2, (3, 201, 81)).parameters())
              for arch in ("cnnet", DEFAULT_ARCH)}
    assert params[DEFAULT_ARCH] < params["cnnet"] / 5


def test_pretrained_weights_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    imagenet_like = torchvision.models.resnet18(num_classes=1000).state_dict()
    torch.save(imagenet_like, tmp_path / "resnet18.pth")
    model = build_model("resnet18", 2, (3, 201, 81))
    loaded = load_pretrained(model, "resnet18", str(tmp_path / "resnet18.pth"))
    assert loaded == len(imagenet_like) - 2  # all but the 1000-class fc weight and bias
    assert torch.equal(model.net.conv1.weight, imagenet_like["conv1.weight"])
    assert model.net.fc.out_features == 2
    with pytest.raises(PretrainedError, match="no such weights file"):
        load_pretrained(model, "resnet18", str(tmp_path / "missing.pth"))
    with pytest.raises(PretrainedError, match="do not fit mobilenet_v3_small"):
        load_pretrained(build_model("mobilenet_v3_small", 2, (3, 201, 81)), "mobilenet_v3_small",
                        str(tmp_path / "resnet18.pth"))
    with pytest.raises(PretrainedError, match="torchvision archs"):
        load_pretrained(build_model("specresnet", 2, (3, 201, 81)), "specresnet", "imagenet")


def test_weight_average_and_batchnorm_recalibration():
    torch.manual_seed(0)
    model = build_model(DEFAULT_ARCH, 2, (3, 40, 32))
    ema = exponential_average(model, decay=0.75)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.stem[1].running_mean.add_(4.0)
    ema.update_parameters(model)  # then each update moves a quarter of the way
    for name, average in ema.module.named_parameters():
        assert torch.allclose(average, start[name] + 0.25), name
    assert torch.allclose(ema.module.stem[1].running_mean, start["stem.1.running_mean"] + 1.0)  # buffers too

    # Precise BN (torch's update_bn on the trainer's (images, labels) batches): the running mean of the
    # stem's BatchNorm becomes the exact average of its per-batch means (weights untouched).
    batches = [(torch.rand(4, 3, 40, 32), torch.zeros(4, dtype=torch.long)) for _ in range(3)]
    weights = {k: v.clone() for k, v in model.state_dict().items()
               if "running" not in k and "num_batches" not in k}
    model.eval()
    update_bn(batches, model)
    stem_conv, stem_bn = model.stem[0], model.stem[1]
    with torch.no_grad():
        expected = torch.stack([stem_conv(x).mean(dim=(0, 2, 3)) for x, _ in batches]).mean(0)
    assert torch.allclose(stem_bn.running_mean, expected, atol=1e-5)
    assert stem_bn.momentum == 0.1 and not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_classification_report_rows_are_true_classes():
    report = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 1], ["a", "b", "c"])
    assert report["confusion"] == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "support": 3}
    assert report["per_class"]["b"]["precision"] == pytest.approx(2 / 4)
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "support": 1}


# ---------------------------------------------------------------- training

@pytest.mark.slow
def test_training_learns_real_speech(real_model):
    """A few epochs on the real clips' train split already tell yes from no for unseen speakers."""
    metrics = json.loads((real_model / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert max(e["train_acc"] for e in epochs) > 0.7
    assert metrics["best_val_acc"] > 0.7 and metrics["test"]["accuracy"] > 0.7  # chance is ~0.5


@pytest.mark.slow
def test_training_writes_every_output(trained, speech_images):
    out, metrics = trained
    epochs = metrics["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, SPEECH_EPOCHS + 1))
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert metrics["arch"] == DEFAULT_ARCH and metrics["classes"] == ["no", "yes"]
    assert metrics["images"] == str(speech_images) and metrics["train_images_per_s"] > 0
    assert set(epochs[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    test = metrics["test"]
    assert set(test) == {"accuracy", "loss", "per_class", "confusion"}
    test_pngs = sorted(p.relative_to(speech_images).as_posix()
                       for p in (speech_images / "test").rglob("*.png"))
    assert sorted(p["png"] for p in metrics["test_predictions"]) == test_pngs
    assert sum(map(sum, test["confusion"])) == len(test_pngs)
    assert test["accuracy"] == pytest.approx(
        sum(p["label"] == p["predicted"] for p in metrics["test_predictions"]) / len(test_pngs))
    for name in ("curves.png", "confusion.png"):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and picture.width > 300
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_checkpoint_round_trip_and_evaluate_match_the_trainer(trained, speech_images, capsys):
    out, metrics = trained
    ckpt = load_checkpoint(out / "model.pt")
    render = json.loads((speech_images / "render.json").read_text())
    assert ckpt["arch"] == DEFAULT_ARCH and ckpt["classes"] == ["no", "yes"]
    assert ckpt["input_size"] == [3, 201, 81] and ckpt["render"] == render["settings"]
    assert ckpt["metrics"]["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert ckpt["metrics"]["best_epoch"] == metrics["best_epoch"]

    model, _, settings = load_model(out / "model.pt")
    predictions = {p["png"]: p for p in metrics["test_predictions"]}
    with torch.inference_mode():
        for png in sorted(predictions)[:8]:
            tensor = image_to_tensor(Image.open(speech_images / png), settings.channels)
            probabilities = model(tensor[None]).softmax(1)[0]
            assert ckpt["classes"][int(probabilities.argmax())] == predictions[png]["predicted"]
            assert float(probabilities.max()) == pytest.approx(predictions[png]["confidence"], abs=1e-5)

    assert evaluate_cli.main(["--model", str(out / "model.pt"), "--images", str(speech_images / "test"),
                              "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result == {"accuracy": metrics["test"]["accuracy"], "classes": metrics["classes"],
                      "per_class": metrics["test"]["per_class"], "confusion": metrics["test"]["confusion"]}
    assert evaluate_cli.main(["--model", str(out / "model.pt"), "--images", str(speech_images / "test")]) == 0
    text = capsys.readouterr().out
    assert f"accuracy {metrics['test']['accuracy']:.4f}" in text and "predicted" in text


def test_evaluate_errors(small_images, tmp_path, capsys):
    assert evaluate_cli.main(["--model", str(tmp_path / "none.pt"), "--images", str(small_images)]) == 2
    assert "no such model file" in capsys.readouterr().err
    model = build_model(DEFAULT_ARCH, 2, (3, 201, 81))
    from train.checkpoint import atomic_torch_save, make_checkpoint
    atomic_torch_save(make_checkpoint(model, DEFAULT_ARCH, ["no", "yes"], (3, 201, 81),
                                      RenderSettings().to_dict()), tmp_path / "model.pt")
    # images/ itself holds train/val/test folders, not classes
    assert evaluate_cli.main(["--model", str(tmp_path / "model.pt"), "--images", str(small_images)]) == 2
    assert "['test', 'train', 'val'] are not classes of this model" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_continues_to_the_same_result(small_images, tmp_path):
    flags = ["--images", str(small_images), "--epochs", "3", "--batch-size", "8", *FAST]
    assert main([*flags, "--out", str(tmp_path / "straight"), "--tensorboard"]) == 0
    assert list((tmp_path / "straight" / "tensorboard").glob("events.out.tfevents.*"))

    # Run 1 epoch of the same 3-epoch run, then "crash" (drop it without finishing).
    interrupted = Training(build_parser().parse_args([*flags, "--out", str(tmp_path / "resumed")]))
    interrupted.run_epoch()
    del interrupted
    assert (tmp_path / "resumed" / STATE_FILE).is_file()
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    # Resuming with a setting that changes the result is refused; with the same ones it finishes.
    assert main([*flags, "--out", str(tmp_path / "resumed"), "--resume", "--lr", "0.01"]) == 2
    assert main([*flags, "--out", str(tmp_path / "resumed"), "--resume", "--workers", "2"]) == 0

    straight = load_checkpoint(tmp_path / "straight" / "model.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "model.pt")
    assert state_dicts_equal(straight["state_dict"], resumed["state_dict"])
    a, b = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("straight", "resumed"))
    for record in a["epochs"] + b["epochs"]:
        record.pop("seconds")
    assert a["epochs"] == b["epochs"] and a["test"] == b["test"]
    assert a["test_predictions"] == b["test_predictions"]
    state = torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=True)
    assert len(state["progress"]["history"]) == 3


def test_resume_without_state_and_pretrained_misuse_are_errors(small_images, tmp_path, capsys):
    flags = ["--images", str(small_images), "--epochs", "1", *FAST]
    assert main([*flags, "--out", str(tmp_path / "a"), "--resume"]) == 2
    assert f"{STATE_FILE}: no saved training state" in capsys.readouterr().err
    assert main([*flags, "--out", str(tmp_path / "b"), "--arch", "resnet18", "--pretrained",
                 str(tmp_path / "resnet18.pth")]) == 2
    assert "resnet18.pth: no such weights file" in capsys.readouterr().err
    assert main([*flags, "--out", str(tmp_path / "c"), "--epochs", "0"]) == 2


@pytest.mark.slow
def test_torchrun_two_gloo_processes_write_one_checkpoint(small_images, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "train", "--images", str(small_images), "--out", str(out), "--epochs", "2",
         "--batch-size", "8", "--device", "cpu", "--workers", "0", "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.pt", "metrics.json", "curves.png", "confusion.png", STATE_FILE])
    assert result.stdout.count("test accuracy") == 1  # one summary: only rank 0 reports
    assert "x2" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2
    model, ckpt, _ = load_model(out / "model.pt")
    assert ckpt["metrics"]["test"]["accuracy"] == metrics["test"]["accuracy"]


@pytest.mark.slow
def test_bench_prints_one_json_line(small_images, capsys):
    assert bench.main(["--images", str(small_images), "--epochs", "1", "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["cnnet"]["arch"] == "cnnet" and result["default"]["arch"] == DEFAULT_ARCH
    for run in ("cnnet", "default"):
        assert result[run]["train_img_per_s"] > 0 and 0 <= result[run]["test_acc"] <= 1
        assert result[run]["test_images"] == 12
    assert result["speedup"] == pytest.approx(
        result["default"]["train_img_per_s"] / result["cnnet"]["train_img_per_s"], rel=0.02)


def test_help_explains_the_clis(capsys):
    from train import evaluate, train
    for cli in (train.main, evaluate.main, bench.main):
        with pytest.raises(SystemExit) as exit_info:
            cli(["--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "--images" in text and "usage: python -m " in text


def test_bf16_and_channels_last_training_is_reproducible_with_a_seed_and_has_a_float32_fallback(
        small_images, tmp_path, monkeypatch):
    """--bf16 --channels-last (bf16 autocast where the CPU has native bf16) gives the same weights for the
    same seed; the default trains float32 NCHW, reproducibly; on a CPU without native bf16 --bf16 falls
    back to float32 (the same weights as without it)."""
    from train import train as train_module
    from train.engine import cpu_bf16_supported

    flags = ["--images", str(small_images), "--epochs", "2", "--batch-size", "8", *FAST]

    def weights(name: str, *extra: str) -> tuple[dict, dict]:
        assert main([*flags, *extra, "--out", str(tmp_path / name)]) == 0
        return (load_checkpoint(tmp_path / name / "model.pt")["state_dict"],
                json.loads((tmp_path / name / "metrics.json").read_text()))

    fast = ("--bf16", "--channels-last")
    first, metrics = weights("a", *fast)
    second, _ = weights("b", *fast)
    assert state_dicts_equal(first, second)
    assert metrics["channels_last"] is True
    assert metrics["train_precision"] == ("bf16 autocast" if cpu_bf16_supported() else "fp32")

    plain, plain_metrics = weights("fp32")  # the defaults: float32 NCHW, the recipe's weights as before
    again, _ = weights("fp32_again", "--no-bf16", "--no-channels-last")
    assert state_dicts_equal(plain, again)
    assert plain_metrics["train_precision"] == "fp32" and plain_metrics["channels_last"] is False

    monkeypatch.setattr(train_module, "cpu_bf16_supported", lambda: False)  # a CPU without native bf16
    fallback, fallback_metrics = weights("fallback", *fast)
    assert fallback_metrics["train_precision"] == "fp32"
    assert 0.0 <= fallback_metrics["test"]["accuracy"] <= 1.0
    monkeypatch.undo()
    no_bf16, _ = weights("no_bf16", "--channels-last")
    assert state_dicts_equal(fallback, no_bf16)
