"""Contact sheet: many spectrogram PNGs per class on one image, each captioned with its file name.

    python -m preprocess.sheet images/ --out sheet.png                     # first 50 per class, all splits
    python -m preprocess.sheet images/ --split test --per-class 200 --sample --out test.png

Scanning hundreds of tiles at once is the quickest way to find broken clips: a silent clip is a
dark tile, a clipped one a bright smear, a truncated word a tile with sound at one edge. Tiles are
the PNGs' own pixels (nearest-neighbour upscaled), so what you see is what the network gets.
"""
from __future__ import annotations

import argparse
import collections
import random

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid
from tqdm import tqdm

from preprocess import cli
from preprocess.images import ImageError, decode, open_png
from preprocess.cli import SpecVisionError
from preprocess.layout import SPLITS, SettingsError, render_settings
from preprocess.render import save_png

DEFAULT_PER_CLASS = 50
DEFAULT_COLUMNS = 10
DEFAULT_SCALE = 2          # upscale factor: makes tiles and their captions readable
CAPTION_PX = 16            # caption strip under each tile
HEADING_PX = 30            # class heading above each grid
PADDING = 4                # between tiles
BACKGROUND = (255, 255, 255)
CAPTION_BG, CAPTION_FG, WARN_FG = (32, 32, 32), (235, 235, 235), (255, 80, 80)
BROKEN_TILE = (160, 0, 0)

class SheetError(SpecVisionError):
    """No images to show, or an images dir that is not laid out as <split>/<class>/*.png."""

def find_images(images: Path, split: str | None = None) -> dict[str, list[str]]:
    """class -> sorted PNG paths relative to `images`, from <split>/<class>/ (or <class>/ directly)."""
    if not images.is_dir():
        raise SheetError(f"{images}: not a directory")
    present = [s for s in SPLITS if (images / s).is_dir()]
    if split is not None:
        if split not in present:
            raise SheetError(f"{images}: no '{split}' split folder (found: {present or 'none'})")
        split_dirs = [images / split]
    else:
        split_dirs = [images / s for s in present] or [images]  # a single split dir given directly
    by_class: dict[str, list[str]] = collections.defaultdict(list)
    for folder in split_dirs:
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            pngs = [p for p in class_dir.glob("*.png") if not p.name.startswith(".")]
            by_class[class_dir.name] += sorted(p.relative_to(images).as_posix() for p in pngs)
    # split order (train, val, test), then file name: a stable order that "first N" can rely on
    by_class = {c: paths for c, paths in sorted(by_class.items()) if paths}
    if not by_class:
        raise SheetError(f"{images}: no PNG images under {[d.name for d in split_dirs]}")
    return by_class

def select(paths: list[str], per_class: int, sample: bool, seed: int) -> list[str]:
    """Deterministic choice: the first N in sorted order, or a seeded random sample (shown sorted)."""
    if len(paths) <= per_class:
        return list(paths)
    if sample:
        return sorted(random.Random(seed).sample(paths, per_class))
    return paths[:per_class]

def expected_size(images: Path, paths: list[Path]) -> tuple[int, int]:
    """(width, height) every tile should have: from render.json, else the most common PNG size."""
    for folder in (images, images.parent):  # images/ or one of its splits
        try:
            height, width = render_settings(folder).image_size
            return width, height
        except SettingsError:
            continue
    sizes = collections.Counter()
    for path in paths[:50]:
        try:
            with open_png(path) as image:
                sizes[image.size] += 1
        except ImageError:
            pass
    return sizes.most_common(1)[0][0] if sizes else (81, 201)

def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)

def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shorten the middle of `text` with '~' until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 4:
        keep -= 1
        short = text[:keep // 2] + "~" + text[len(text) - (keep - keep // 2):]
        if draw.textlength(short, font=font) <= width:
            return short
    return text[:4]

def make_tile(path: Path, caption: str, size: tuple[int, int], scale: int) -> torch.Tensor:
    """One captioned tile as a 3xHxW uint8 tensor. Unreadable, wrong-sized or flat PNGs are flagged."""
    width, height = size[0] * scale, size[1] * scale
    warn = None
    try:
        with open_png(path) as image:  # header checked before decoding: a bomb is one red tile
            pixels = decode(image, path, "RGB")
        if pixels.size != size:
            warn = f"{pixels.size[0]}x{pixels.size[1]}!"
        if np.asarray(pixels).std() < 1.0:
            warn = "flat image!"  # one colour: digital silence or a broken render
        picture = pixels.resize((width, height), Image.Resampling.NEAREST)
    except ImageError as err:
        warn = "too large!" if "more than the limit" in str(err) else "unreadable!"
        picture = Image.new("RGB", (width, height), BROKEN_TILE)
    tile = Image.new("RGB", (width, height + CAPTION_PX), CAPTION_BG)
    tile.paste(picture, (0, 0))
    draw = ImageDraw.Draw(tile)
    font = _font(11)
    text = _fit_text(draw, f"{warn} {caption}" if warn else caption, font, width - 2)
    draw.text((1, height + 2), text, fill=WARN_FG if warn else CAPTION_FG, font=font)
    return torch.from_numpy(np.asarray(tile).transpose(2, 0, 1).copy())

def heading(text: str, width: int) -> Image.Image:
    strip = Image.new("RGB", (width, HEADING_PX), BACKGROUND)
    draw = ImageDraw.Draw(strip)
    draw.text((PADDING, 5), _fit_text(draw, text, _font(18), width - PADDING), fill=(0, 0, 0), font=_font(18))
    return strip

def build_sheet(images: Path, split: str | None = None, per_class: int = DEFAULT_PER_CLASS,
                columns: int = DEFAULT_COLUMNS, scale: int = DEFAULT_SCALE, sample: bool = False,
                seed: int = 0) -> tuple[Image.Image, dict[str, tuple[int, int]]]:
    """-> (sheet image, {class: (tiles shown, images found)})."""
    by_class = find_images(images, split)
    chosen = {c: select(paths, per_class, sample, seed) for c, paths in by_class.items()}
    size = expected_size(images, [images / p for paths in chosen.values() for p in paths])
    several_splits = len({p.split("/")[0] for paths in chosen.values() for p in paths}) > 1
    sections = []
    total = sum(len(p) for p in chosen.values())
    with tqdm(total=total, desc="tiles", unit="img", leave=False, disable=total < 500) as bar:
        for cls, paths in chosen.items():
            tiles = []
            for rel in paths:
                stem = Path(rel).stem
                caption = f"{rel.split('/')[0]}/{stem}" if several_splits else stem
                tiles.append(make_tile(images / rel, caption, size, scale))
                bar.update()
            grid = make_grid(tiles, nrow=min(columns, len(tiles)), padding=PADDING, pad_value=255)
            sections.append((cls, Image.fromarray(grid.permute(1, 2, 0).numpy())))
    width = max(max(g.width for _, g in sections), 400)
    where = split or ("+".join(s for s in SPLITS if (images / s).is_dir()) or images.name)
    sheet = Image.new("RGB", (width, sum(HEADING_PX + g.height for _, g in sections)), BACKGROUND)
    top = 0
    for cls, grid in sections:
        shown, found = len(chosen[cls]), len(by_class[cls])
        sheet.paste(heading(f"{cls}: {shown} of {found} images ({where})", width), (0, top))
        sheet.paste(grid, (0, top + HEADING_PX))
        top += HEADING_PX + grid.height
    return sheet, {c: (len(chosen[c]), len(by_class[c])) for c in by_class}

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m preprocess.sheet", description=__doc__.split("\n\n")[0],
                                     epilog="Tiles flagged in red: unreadable PNG, wrong size, or a flat "
                                            "(single-colour) image.")
    parser.add_argument("images", type=Path, help="images dir written by `python -m preprocess` "
                        "(<split>/<class>/*.png), or one split folder of it")
    parser.add_argument("--out", type=Path, required=True, help="sheet to write (PNG)")
    parser.add_argument("--per-class", type=int, default=DEFAULT_PER_CLASS, metavar="N",
                        help=f"tiles per class (default {DEFAULT_PER_CLASS})")
    parser.add_argument("--split", choices=SPLITS, help="only this split (default: all splits)")
    parser.add_argument("--sample", action="store_true",
                        help="a seeded random sample per class instead of the first N in file-name order")
    parser.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    parser.add_argument("--columns", type=int, default=DEFAULT_COLUMNS, help="tiles per row")
    parser.add_argument("--scale", type=int, default=DEFAULT_SCALE, help="integer upscale of each tile")
    return parser

@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.columns < 1 or args.scale < 1:
        parser.error("--per-class, --columns and --scale must be at least 1")
    sheet, counts = build_sheet(args.images, args.split, args.per_class, args.columns, args.scale,
                                args.sample, args.seed)
    save_png(sheet, args.out)
    listing = ", ".join(f"{c} {shown}/{found}" for c, (shown, found) in counts.items())
    print(f"wrote {args.out}: {sheet.width}x{sheet.height} px, {len(counts)} classes ({listing})")
    return 0

if __name__ == "__main__":
    cli.run(main)
