"""The shared render path: decode, fit, features, fixed-range pixels, PNG files. Real audio, no mocks."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from torchvision.datasets.folder import default_loader
from torchvision.transforms.functional import to_tensor

from preprocess.render import (AudioError, RenderSettings, colormap_lut, fit_length, image_to_tensor,
                               load_audio, read_plain_wav, read_png_metadata, render_file, render_image, save_png,
                               sha256_file)

torch.set_num_threads(1)
SR = 16000


def tone(freq=1000.0, seconds=1.0, sr=SR, amplitude=0.5):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def brightest_row(image, settings):
    levels = np.asarray(image)  # palette indices = 8-bit levels
    return int(np.argmax(levels.mean(axis=1)))


def row_of_hz(freq, settings):
    """Image row of a frequency: low frequencies are at the bottom (last row)."""
    height = settings.image_size[0]
    return height - 1 - int(round(freq / (settings.sample_rate / settings.n_fft)))


@pytest.mark.parametrize("kwargs", [
    {}, {"feature": "mel"}, {"feature": "mfcc"}, {"colormap": "gray"},
    {"duration": 0.5, "hop_length": 160, "n_fft": 512}, {"sample_rate": 8000, "feature": "mel", "n_mels": 32},
])
def test_image_size_is_a_function_of_the_settings(kwargs):
    settings = RenderSettings(**kwargs)
    for seconds in (0.2, 1.0, 2.7):  # any clip length gives the same size
        image = render_image(tone(seconds=seconds, sr=settings.sample_rate), settings)
        assert (image.height, image.width) == settings.image_size
        assert image.mode == ("P" if settings.colormap == "viridis" else "L")
        assert image_to_tensor(image, settings.channels).shape == (settings.channels, *settings.image_size)


def test_default_image_matches_the_learning_module_size():
    assert RenderSettings().image_size == (201, 81)


def test_low_frequencies_at_the_bottom():
    settings = RenderSettings()
    low = render_image(tone(500), settings)
    high = render_image(tone(4000), settings)
    assert brightest_row(low, settings) == row_of_hz(500, settings)
    assert brightest_row(high, settings) == row_of_hz(4000, settings)
    assert brightest_row(low, settings) > brightest_row(high, settings)


def test_fixed_db_range_keeps_loudness():
    """Not per-image min/max: a quieter tone gives darker pixels, by ~ its dB difference."""
    settings = RenderSettings()
    row = row_of_hz(1000, settings)
    loud = np.asarray(render_image(tone(amplitude=0.5), settings))[row].astype(float).mean()
    quiet = np.asarray(render_image(tone(amplitude=0.05), settings))[row].astype(float).mean()
    lo, hi = settings.pixel_range
    expected_step = 20.0 * 255.0 / (hi - lo)  # 20 dB quieter
    assert loud - quiet == pytest.approx(expected_step, abs=1.5)


def test_digital_silence_is_finite_and_dark():
    for feature in ("spectrogram", "mel", "mfcc"):
        settings = RenderSettings(feature=feature)
        image = render_image(np.zeros(SR, dtype=np.float32), settings)
        tensor = image_to_tensor(image, settings.channels)
        assert torch.isfinite(tensor).all()
    levels = np.asarray(render_image(np.zeros(SR, dtype=np.float32), RenderSettings()))
    assert levels.max() == 0  # below the fixed floor: the darkest colour everywhere


def test_fit_length_pads_centred_and_keeps_the_loudest_window():
    short = np.ones(100, dtype=np.float32)
    padded = fit_length(short, 300)
    assert len(padded) == 300 and padded[:100].sum() == 0 and padded[100:200].sum() == 100
    long = np.zeros(1000, dtype=np.float32)
    long[600:700] = 1.0
    window = fit_length(long, 200)
    assert len(window) == 200 and window.sum() == 100
    assert np.array_equal(fit_length(long, 200), window)  # deterministic


@pytest.mark.parametrize("subtype,sr,channels", [
    ("PCM_16", 16000, 1), ("PCM_16", 16000, 2), ("PCM_U8", 16000, 1), ("PCM_24", 16000, 1),
    ("FLOAT", 16000, 1), ("PCM_16", 8000, 1), ("PCM_16", 22050, 1), ("PCM_16", 44100, 2),
    ("PCM_16", 48000, 1),
])
def test_wav_formats_and_rates_decode_to_the_same_tone(tmp_path, subtype, sr, channels):
    settings = RenderSettings()
    wave = tone(1000, sr=sr)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path = tmp_path / f"x_{subtype}_{sr}.wav"
    sf.write(path, data, sr, subtype=subtype)
    decoded = load_audio(path, settings)
    assert decoded.dtype == np.float32 and abs(len(decoded) - SR) <= 1
    image = render_file(path, settings)
    row = row_of_hz(1000, settings)
    assert brightest_row(image, settings) == row
    reference = np.asarray(render_image(tone(1000), settings))[row].astype(float)
    # same tone level (8-bit WAV adds a -48 dB noise floor elsewhere, so compare the tone's row)
    assert np.asarray(image)[row].astype(float).mean() == pytest.approx(reference.mean(), abs=2)


@pytest.mark.parametrize("name,content,reason", [
    ("empty.wav", b"", "empty file"),
    ("text.wav", b"this is not audio, just text\n" * 20, "cannot decode"),
    ("garbage.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4, "cannot decode"),
])
def test_undecodable_files_name_the_file_and_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError) as info:
        render_file(path, RenderSettings())
    assert str(path) in str(info.value) and reason in str(info.value)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_24"), ("OGG", "VORBIS")])
def test_decoding_from_bytes_equals_decoding_from_the_path(tmp_path, fmt, subtype):
    """preprocess reads each file once (hash + decode from memory); predict decodes from the path."""
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, np.stack([tone(440, seconds=1.3), tone(900, seconds=1.3)], axis=1), 22050,
             format=fmt, subtype=subtype)
    settings = RenderSettings()
    from_path, from_bytes = load_audio(path, settings), load_audio(path, settings, path.read_bytes())
    assert from_path.shape == from_bytes.shape and np.array_equal(from_path, from_bytes)
    assert render_file(path, settings).tobytes() == render_file(path, settings, path.read_bytes()).tobytes()
    with pytest.raises(AudioError, match="empty file"):
        load_audio(path, settings, b"")
    with pytest.raises(AudioError, match="cannot decode") as info:
        load_audio(path, settings, path.read_bytes()[:30])  # a truncated header
    assert str(path) in str(info.value)
    bogus = tmp_path / "bogus.wav"  # right magic, impossible chunk size: the wave module raises RuntimeError
    bogus.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    assert read_plain_wav(bogus) is None  # left to libsndfile, which names the problem
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(bogus, settings)


def _wav_variants():
    """(name, bytes, plain): 16-bit PCM WAVs the fast reader takes, and WAVs it must leave to libsndfile."""
    import io
    stereo = np.stack([tone(440, seconds=1.3), tone(900, seconds=1.3) * 0.5], axis=1)
    made = {}
    for name, data, sr, kwargs in (("mono16k", tone(440), 16000, {}), ("stereo44k", stereo, 44100, {}),
                                   ("mono8bit", tone(440), 16000, {"subtype": "PCM_U8"}),
                                   ("extensible", stereo, 16000, {"subtype": "PCM_16", "format": "WAVEX"}),
                                   ("rf64", tone(440), 16000, {"subtype": "PCM_16", "format": "RF64"})):
        buffer = io.BytesIO()
        sf.write(buffer, data, sr, **({"format": "WAV", "subtype": "PCM_16"} | kwargs))
        made[name] = buffer.getvalue()
    # a LIST chunk between fmt and data (recorders write them): still plain
    body = made["mono16k"]
    listed = body[:36] + b"LIST\x0c\x00\x00\x00INFOISFT\x00\x00\x00\x00" + body[36:]
    listed = listed[:4] + (len(listed) - 8).to_bytes(4, "little") + listed[8:]
    return [("mono16k", made["mono16k"], True), ("stereo44k", made["stereo44k"], True), ("list_chunk", listed, True),
            ("truncated", made["mono16k"][:-1001], False), ("mono8bit", made["mono8bit"], False),
            ("extensible", made["extensible"], False), ("rf64", made["rf64"], False)]


def test_plain_pcm16_reader_gives_libsndfiles_samples_or_leaves_the_file_to_it(tmp_path):
    """preprocess decodes plain 16-bit WAVs with the standard library (6x faster): the same float32
    samples as libsndfile, bit for bit; anything else (or a header that does not match the data) is
    decoded by libsndfile as before."""
    from preprocess.audio import _plain_pcm16
    from preprocess.render import decode_clip

    settings = RenderSettings()
    variants = _wav_variants()
    for name, data, plain in variants:
        path = tmp_path / f"{name}.wav"
        path.write_bytes(data)
        assert (_plain_pcm16(data, 3600.0) is not None) == plain, name
        from_path, samples = decode_clip(path, settings)            # libsndfile, from the file
        from_bytes, samples_b = decode_clip(path, settings, data)   # what preprocess does
        assert samples == samples_b and np.array_equal(from_path, from_bytes), name
    assert _plain_pcm16(variants[0][1], 0.5) is None  # over the length cap: libsndfile refuses it


def test_viridis_table_is_matplotlibs_viridis():
    import matplotlib
    expected = (matplotlib.colormaps["viridis"](np.arange(256))[:, :3] * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(colormap_lut("viridis"), expected)
    assert colormap_lut("gray") is None
    image = render_image(tone(), RenderSettings())  # palette index = level, palette colour = viridis
    rgb = np.asarray(image.convert("RGB"))
    assert np.array_equal(rgb, expected[np.asarray(image)])


def test_nan_samples_are_refused(tmp_path):
    wave = tone()
    wave[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(path, RenderSettings())


def test_png_is_deterministic_and_carries_metadata(tmp_path):
    settings = RenderSettings()
    meta = {"source": "yes/a_nohash_0.wav", "label": "yes", "split": "train",
            "settings_hash": settings.digest()}
    for name in ("a.png", "b.png"):
        save_png(render_image(tone(), settings), tmp_path / name, meta)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert read_png_metadata(tmp_path / "a.png") == meta
    assert sha256_file(tmp_path / "a.png") == sha256_file(tmp_path / "b.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temp files left


@pytest.mark.parametrize("colormap", ["viridis", "gray"])
def test_image_to_tensor_equals_imagefolder_loading(tmp_path, colormap):
    """What prediction feeds the model == what training reads from the PNG."""
    settings = RenderSettings(colormap=colormap)
    image = render_image(tone(700) + tone(3000, amplitude=0.1), settings)
    save_png(image, tmp_path / "x.png")
    loaded = default_loader(str(tmp_path / "x.png"))  # ImageFolder's loader: RGB
    from_png = to_tensor(loaded if colormap == "viridis" else loaded.convert("L"))
    assert torch.equal(image_to_tensor(image, settings.channels), from_png)


def test_settings_validate_and_round_trip():
    settings = RenderSettings(feature="mel", n_mels=40, db_min=-70.0)
    assert RenderSettings.from_dict(settings.to_dict()) == settings
    assert settings.digest() != RenderSettings().digest()
    with pytest.raises(ValueError):
        RenderSettings(feature="wavelet")
    with pytest.raises(ValueError):
        RenderSettings(db_min=10.0, db_max=0.0)
    with pytest.raises(ValueError):
        RenderSettings.from_dict({**settings.to_dict(), "bogus": 1})


def reference_levels(wave: np.ndarray, settings: RenderSettings) -> np.ndarray:
    """The pixels by the plain definition: torchaudio's transform modules, out-of-place arithmetic.

    render.py computes the same numbers faster (torch.stft called directly, in-place dB and level
    maps); this pins that they stay the same numbers, pixel for pixel."""
    import torchaudio.functional as AF
    import torchaudio.transforms as T
    x = torch.from_numpy(wave)
    if settings.feature == "spectrogram":
        power = T.Spectrogram(n_fft=settings.n_fft, hop_length=settings.hop_length, power=2.0)(x)
    else:
        power = T.MelSpectrogram(sample_rate=settings.sample_rate, n_fft=settings.n_fft,
                                 hop_length=settings.hop_length, n_mels=settings.n_mels, power=2.0)(x)
    db = 10.0 * torch.log10(power.clamp_min(1e-10))
    if settings.feature == "mfcc":
        db = (db.transpose(-1, -2) @ AF.create_dct(settings.n_mfcc, settings.n_mels, norm="ortho")).transpose(-1, -2)
    lo, hi = settings.pixel_range
    scaled = np.clip((db.numpy() - lo) * (255.0 / (hi - lo)), 0.0, 255.0)
    return np.floor(scaled + 0.5).astype(np.uint8)[::-1]


@pytest.mark.parametrize("kwargs", [{}, {"feature": "mel"}, {"feature": "mfcc"},
                                    {"n_fft": 512, "hop_length": 160, "colormap": "gray"}])
def test_fast_render_path_gives_the_plain_definitions_pixels(kwargs):
    settings = RenderSettings(**kwargs)
    rng = np.random.default_rng(7)
    t = np.arange(settings.num_samples) / SR
    chirp = 0.3 * np.sin(2 * np.pi * (200 + 3000 * t) * t) + 0.01 * rng.standard_normal(len(t))
    waves = [chirp.astype(np.float32), np.zeros(settings.num_samples, np.float32),
             np.clip(tone(440, amplitude=2.0), -1, 1), (1e-4 * rng.standard_normal(len(t))).astype(np.float32)]
    for wave in waves:
        assert np.array_equal(np.asarray(render_image(wave, settings)), reference_levels(wave, settings))


@pytest.mark.parametrize("kwargs", [{}, {"colormap": "gray"}, {"feature": "mel"},
                                    {"feature": "mfcc", "colormap": "gray"}])
def test_render_tensor_is_totensor_of_the_rendered_image(kwargs):
    """predict feeds the network render_tensor (no PIL image): the same floats, bit for bit, as
    ToTensor() of the image preprocess writes, for every level and on real-looking signals."""
    from preprocess.render import _level_table, render_tensor

    settings = RenderSettings(**kwargs)
    rng = np.random.default_rng(0)
    waves = [tone(), np.zeros(SR, np.float32), (0.1 * rng.standard_normal(SR)).astype(np.float32),
             tone(300, seconds=0.4), tone(3000, seconds=1.7) + 0.01 * rng.standard_normal(27200).astype(np.float32)]
    for wave in waves:
        expected = image_to_tensor(render_image(wave, settings), settings.channels)
        got = render_tensor(wave, settings)
        assert got.dtype == expected.dtype == torch.float32 and got.shape == expected.shape
        assert torch.equal(got, expected)
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every level through both paths
    from preprocess.render import to_image
    assert np.array_equal(_level_table(settings.colormap)[:, levels],
                          image_to_tensor(to_image(levels, settings), settings.channels).numpy())


def test_read_plain_wav_gives_libsndfiles_samples_or_none(tmp_path):
    """predict reads small plain 16-bit WAVs with the standard library: libsndfile's samples, bit for
    bit; other formats, big files and non-files go to libsndfile (None)."""
    from preprocess.render import load_audio, read_plain_wav

    for name, data, plain in _wav_variants():
        path = tmp_path / f"{name}.wav"
        path.write_bytes(data)
        got = read_plain_wav(path)
        assert (got is not None) == plain, name
        if got is not None:
            settings = RenderSettings(sample_rate=got[1])
            assert np.array_equal(got[0], load_audio(path, settings)), name
    big = tmp_path / "mono16k.wav"
    assert read_plain_wav(big, max_bytes=100) is None and read_plain_wav(tmp_path / "missing.wav") is None
    flac = tmp_path / "a.flac"
    sf.write(flac, tone(), SR)
    assert read_plain_wav(flac) is None


@pytest.mark.parametrize("kwargs,hop", [({}, 4000), ({}, 2000), ({"colormap": "gray"}, 4000),
                                        ({"n_fft": 512, "hop_length": 160}, 1600), ({"feature": "mel"}, 4000),
                                        ({}, 4100), ({"duration": 0.5}, 8000)])
def test_scanner_windows_render_like_single_clips(kwargs, hop):
    """The scanner renders consecutive windows together, sharing their STFT frames: the same tensors,
    bit for bit, as render_tensor of each window (also where it falls back: mel, a hop that is not a
    whole number of STFT hops)."""
    from preprocess.render import render_tensor, render_tensors

    settings = RenderSettings(**kwargs)
    rng = np.random.default_rng(1)
    n = settings.num_samples
    seconds = 6
    wave = np.concatenate([tone(300 + 200 * k, seconds=0.5) * (0.5 ** k) for k in range(seconds)]
                          + [np.zeros(SR // 3, np.float32)])
    wave = wave + (0.003 * rng.standard_normal(len(wave))).astype(np.float32)
    wave[SR:SR + 2000] = 0.0  # digital silence inside a window
    starts = range(0, len(wave) - n + 1, hop)
    windows = [wave[s:s + n] for s in starts]
    assert len(windows) >= 4
    for batch in [b for b in (windows[:8], windows[8:11], windows[-2:]) if b]:
        expected = torch.stack([render_tensor(w, settings) for w in batch])
        got = render_tensors(batch, hop, settings)
        assert got.dtype == expected.dtype and got.shape == expected.shape and torch.equal(got, expected)
    single = render_tensors(windows[:1], hop, settings)
    assert torch.equal(single[0], render_tensor(windows[0], settings))
