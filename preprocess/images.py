"""Reading PNGs safely: every check that can be made from the header is made before decoding.

    with open_png(path, size=(w, h), modes=("P", "RGB")) as image:   # header only; ImageError if bad
        tensor = image_to_tensor(decode(image, path), 3)

Pillow refuses only images above 2 x 89 M pixels (DecompressionBombError, uncaught in a loop over
files) and decodes anything smaller: a 13000x13000 PNG of 389 KB costs 3.8 GB. Here any image above
MAX_IMAGE_PIXELS (far above any spectrogram) is one clear per-file error, raised before a pixel is
decoded, and so are a wrong size or mode when the caller knows what to expect.
"""
from __future__ import annotations

import os

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from preprocess.cli import SpecVisionError

MAX_IMAGE_PIXELS = 4096 * 4096  # 16 M pixels (48 MB as RGB): a 201x81 spectrogram is 16 k
READ_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError,
               Image.DecompressionBombError)


class ImageError(SpecVisionError):
    """One image that cannot be used; the message names the file and the reason."""

    exit_code = 1


def open_png(path: str | os.PathLike, size: tuple[int, int] | None = None,
             modes: tuple[str, ...] | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open `path` lazily (header only) and check format, pixel count, (width, height) and mode."""
    try:
        # the PNG plugin itself, not Image.open: it parses the header without Pillow's own bomb check,
        # whose error would not say how large the image is (the size is checked just below)
        image = PngImagePlugin.PngImageFile(os.fspath(path))
    except READ_ERRORS as err:
        raise ImageError(f"{path}: cannot read PNG ({_reason(err)})") from None
    try:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"{path}: image is {width}x{height} pixels, more than the limit of "
                             f"{max_pixels} (a decompression bomb or not a spectrogram); not decoded")
        if size is not None and (width, height) != tuple(size):
            raise ImageError(f"{path}: image is {width}x{height} pixels (width x height), expected "
                             f"{size[0]}x{size[1]}")
        if modes is not None and image.mode not in modes:
            raise ImageError(f"{path}: image mode {image.mode!r}, expected {' or '.join(modes)}")
    except ImageError:
        image.close()
        raise
    return image


def decode(image: Image.Image, path: str | os.PathLike, mode: str | None = None) -> Image.Image:
    """Decode an image opened by open_png (converted to `mode` if given); a corrupt or truncated file
    is an ImageError naming it."""
    try:
        image.load()
        return image.convert(mode) if mode is not None and image.mode != mode else image
    except READ_ERRORS as err:
        raise ImageError(f"{path}: cannot decode PNG ({_reason(err)})") from None


def check_png(path: str | os.PathLike, size: tuple[int, int] | None = None,
              modes: tuple[str, ...] | None = None) -> None:
    """The fast check of a whole folder before training: header checks plus Pillow's verify() (chunk
    checksums, truncation) without decompressing. ImageError if the file is unusable."""
    with open_png(path, size, modes) as image:
        try:
            image.verify()
        except READ_ERRORS as err:
            raise ImageError(f"{path}: corrupt PNG ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    if isinstance(err, Image.DecompressionBombError):
        return "image too large to decode safely"
    return str(err) or type(err).__name__
