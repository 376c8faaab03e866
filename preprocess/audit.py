"""python -m preprocess.audit: look at every image by eye and listen to it, the suspicious ones first.

    python -m preprocess.audit images/ --out audit/                       # then open audit/index.html
    python -m preprocess.audit images/ --out audit/ --model models/NAME/model.pt

Reads what `python -m preprocess` wrote (render.json, manifest.csv, the PNGs) and the source clips
under render.json's audio root. Writes a static folder: index.html (a summary table of flags per
split and class, each count a link), pages/ (paged galleries per split, class and flag: each tile
the PNG, its name, label, split, flags and an audio player), flags.csv (one row per flagged clip),
with --model suspects.csv (every clip the model contradicts, the most suspicious first) and style.css. Images and clips are relative symbolic links into the images folder and the audio
root (`--copy`: copies), every URL relative: no server, no absolute path of this machine.

Flags: silent, clipped, cut_off and short come from manifest.csv (computed by preprocess while it
had the audio decoded, see preprocess/flags.py); duplicate_audio (the same SHA-256 in two classes or
splits), duplicate_image (a near-identical image in another split) and, with --model, suspect_label
(the model is confident in another class) are found here.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import dataclasses
import functools
import io
import json
import math
import os
import shutil
import sys
import time
import urllib.parse
from pathlib import Path

import jinja2
import numpy as np
from PIL import Image
from tqdm import tqdm

from preprocess import flags, openworld
from preprocess.atomic import replace_folder
from preprocess.pages import copy_stylesheet, environment
from preprocess.render import AudioError, RenderSettings, load_audio
from preprocess.sources import SPLITS

DEFAULT_OUT = "audit"
PAGE_SIZE = 48               # tiles per gallery page
RANKED_ON_INDEX = 12         # top label contradictions shown on the summary page
SUSPECT_CONFIDENCE = 0.8     # model confidence in another class that makes a clip suspect_label
DUPLICATE_COSINE = 0.995     # image sketches this similar are near-duplicates (distinct real clips: < 0.992)
SKETCH_CHUNK = 2048          # rows per block of the cross-split similarity product (bounds memory)
FOLDS = 5                    # out-of-fold quick training over the train split (--folds); its epochs:
                             # train.suspects.quick_epochs unless --fold-epochs
GENERATOR = "specvision-audit"  # marks an OUT folder this command may replace
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}

RANK_ORDER = ("Ranked by the judging model's confidence in another class plus the speaker evidence: how much "
              "more the clip sounds like the same speaker's takes of that class than like their takes of its "
              "label.")
FLAG_NAMES = flags.CLIP_FLAGS + ("duplicate_audio", "duplicate_image", "suspect_label")
FLAG_HELP = {
    "silent": f"near-silent: the loudest 20 ms are below {flags.SILENT_DB:g} dBFS",
    "clipped": "clipped: the waveform sits flat on its peak value (the recorder ran out of range)",
    "cut_off": "the word touches the start or end of the window: probably cut off",
    "short": f"the source is shorter than {flags.SHORT_FRACTION:.0%} of the window (padded with silence)",
    "duplicate_audio": "the same audio (SHA-256) is also in another class or split: label conflict or leakage",
    "duplicate_image": "a near-identical image is in another split (leakage between train and evaluation)",
    "suspect_label": "the model is confident this clip belongs to another class: likely mislabelled",
}


class AuditError(Exception):
    """The images folder cannot be audited; the message names the file and the reason."""


# ---------------------------------------------------------------- inputs

@dataclasses.dataclass
class Dataset:
    images: Path
    settings: RenderSettings
    render: dict                 # render.json
    rows: list[dict]             # manifest rows of rendered clips (status ok), in manifest order
    failed: int                  # clips preprocess could not render
    audio_root: Path | None


def load_dataset(images: Path, audio_root: Path | None) -> Dataset:
    for name in ("render.json", "manifest.csv"):
        if not (images / name).is_file():
            raise AuditError(f"{images / name}: not found (is {images} a folder written by `python -m preprocess`?)")
    try:
        render = json.loads((images / "render.json").read_text(encoding="utf-8"))
        settings = RenderSettings.from_dict(render["settings"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AuditError(f"{images / 'render.json'}: unreadable ({err})") from None
    try:
        with open(images / "manifest.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise AuditError(f"{images / 'manifest.csv'}: unreadable ({err})") from None
    required = {"source", "sha256", "split", "label", "png", "status"}
    if rows and not required <= set(rows[0]):
        raise AuditError(f"{images / 'manifest.csv'}: missing columns {sorted(required - set(rows[0]))}")
    ok = [r for r in rows if r["status"] == "ok" and _inside(r["png"])]
    if not ok:
        raise AuditError(f"{images / 'manifest.csv'}: no rendered images listed")
    if audio_root is None:
        root = (render.get("source") or {}).get("root")
        audio_root = Path(root) if root else None
    return Dataset(images, settings, render, ok, len(rows) - len(ok), audio_root)


def _inside(rel: str) -> bool:
    """A relative path that stays inside its folder (the manifest is data, never trusted as a path)."""
    path = Path(rel or "")
    return bool(rel) and not path.is_absolute() and ".." not in path.parts


def clip_path(data: Dataset, source: str) -> Path | None:
    """A manifest source's audio file: under the audio root, or for the open-world classes under their
    own root (silence crops in IMAGES/.openworld, --unknown-root clips); never outside that root."""
    root, rel = openworld.audio_location(source, data.render, data.images) or (data.audio_root, source)
    return root / rel if root is not None and _inside(rel) else None


def fill_missing_records(data: Dataset, progress: bool) -> tuple[int, int]:
    """Rows of a manifest written before preprocess kept flags (or by older rules): decode them here.

    -> (rows filled, rows whose clip could not be decoded: only their image sketch is known)."""
    missing = [r for r in data.rows if not flags.is_current(r)]
    undecoded = 0
    for row in tqdm(missing, desc="flags (old manifest)", unit="clip", disable=not progress or not missing):
        levels = wave = None
        with contextlib.suppress(OSError):
            with Image.open(data.images / row["png"]) as image:
                levels = np.asarray(image)
        with contextlib.suppress(AudioError, OSError):
            clip = clip_path(data, row["source"])
            wave = load_audio(clip, data.settings) if clip is not None else None
        if wave is not None and levels is not None:
            row.update(flags.clip_record(wave, levels, data.settings))
        else:
            undecoded += 1
            row.update({key: "" for key in flags.MANIFEST_FIELDS},
                       image_blocks=flags.image_blocks(levels) if levels is not None else "")
    return len(missing), undecoded


# ---------------------------------------------------------------- dataset-wide flags

def duplicate_audio(rows: list[dict]) -> dict[int, list[int]]:
    """row -> the other rows with the same audio bytes, where the group spans two classes or splits."""
    by_sha: dict[str, list[int]] = collections.defaultdict(list)
    for i, row in enumerate(rows):
        if row.get("sha256"):
            by_sha[row["sha256"]].append(i)
    partners = {}
    for group in by_sha.values():
        if len(group) > 1 and (len({rows[i]["label"] for i in group}) > 1
                               or len({rows[i]["split"] for i in group}) > 1):
            for i in group:
                partners[i] = [j for j in group if j != i]
    return partners


def duplicate_images(rows: list[dict], threshold: float = DUPLICATE_COSINE,
                     progress: bool = False) -> dict[int, list[int]]:
    """row -> rows in *other* splits whose image sketch has cosine similarity >= threshold.

    Every pair of splits is compared in full (blocks of SKETCH_CHUNK rows: a float32 matrix product),
    so nothing is missed and the time is known in advance: ~2e9 pairs at 105k images.
    """
    vectors, usable = flags.sketch_vectors([r.get("image_blocks") or "" for r in rows])
    split_of = np.array([r["split"] for r in rows])
    members = {s: np.flatnonzero((split_of == s) & usable) for s in SPLITS}
    pairs = [(a, b) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:] if len(members[a]) and len(members[b])]
    steps = sum(-(-len(members[a]) // SKETCH_CHUNK) for a, _ in pairs)
    partners: dict[int, list[int]] = collections.defaultdict(list)
    with tqdm(total=steps, desc="near-duplicate images", unit="block", disable=not progress or steps < 4) as bar:
        for a, b in pairs:
            others = vectors[members[b]].T
            for start in range(0, len(members[a]), SKETCH_CHUNK):
                block = members[a][start:start + SKETCH_CHUNK]
                hit_a, hit_b = np.nonzero(vectors[block] @ others >= threshold)
                for i, j in zip(block[hit_a].tolist(), members[b][hit_b].tolist()):
                    partners[i].append(j)
                    partners[j].append(i)
                bar.update()
    return dict(partners)


# ---------------------------------------------------------------- tiles and galleries

@dataclasses.dataclass
class Tile:
    index: int
    name: str
    png: str
    source: str
    label: str
    split: str
    source_s: str
    level_db: str
    flags: list[str]
    notes: list[str]
    suspect: dict | None = None   # {"predicted", "confidence", "how", "rank"[, "speaker"]} when the model
                                  # contradicts the label (train.suspects)
    img: str | None = None        # URL relative to OUT
    audio: str | None = None
    audio_type: str = "audio/wav"
    width: int = 0
    height: int = 0

    def rank(self) -> tuple:
        """Suspicious first: more flags, then a higher-ranked contradiction, then by name."""
        rank = self.suspect["rank"] if self.suspect and "suspect_label" in self.flags else math.inf
        return (-len(self.flags), rank, self.png)


def build_tiles(data: Dataset, suspects: dict[int, dict], threshold: float, progress: bool) -> list[Tile]:
    audio_dups = duplicate_audio(data.rows)
    image_dups = duplicate_images(data.rows, progress=progress)
    height, width = data.settings.image_size
    tiles = []
    def among_silence(i: int, partners: list[int]) -> bool:
        return all(data.rows[j]["label"] == openworld.SILENCE for j in [i, *partners])

    for i, row in enumerate(data.rows):
        found = [f for f in (row.get("flags") or "").split(";") if f in flags.CLIP_FLAGS]
        if row["label"] == openworld.SILENCE:  # noise crops and digital silence, by design: not suspicious
            found = [f for f in found if f != "silent"]
            for dups in (audio_dups, image_dups):  # two crops of the same silence are no leak
                if i in dups and among_silence(i, dups[i]):
                    del dups[i]
        notes = []
        if i in audio_dups:
            found.append("duplicate_audio")
            notes.append("same audio as " + _some([data.rows[j]["png"] for j in audio_dups[i]]))
        if i in image_dups:
            found.append("duplicate_image")
            notes.append("near-identical image: " + _some([data.rows[j]["png"] for j in image_dups[i]]))
        suspect = suspects.get(i)
        if suspect and suspect["confidence"] >= threshold:
            found.append("suspect_label")
        tiles.append(Tile(i, Path(row["png"]).name, row["png"], row["source"], row["label"], row["split"],
                          row.get("source_s") or "", row.get("level_db") or "",
                          [f for f in FLAG_NAMES if f in found], notes, suspect, width=width, height=height))
    return tiles


def _some(names: list[str], most: int = 3) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(sorted(names)[:most]) + more


@dataclasses.dataclass
class Gallery:
    slug: str                    # file name stem under pages/
    scope: str                   # what it shows, in words
    split: str                   # a split or "all"
    label: str                   # a class or "all"
    filter: str                  # "all", "flagged" or a flag name
    tiles: list[Tile]

    def href(self, page: int = 1, root: str = "") -> str:
        return f"{root}pages/{self.slug}-{page}.html"


def make_galleries(tiles: list[Tile], classes: list[str]) -> dict[tuple[str, str, str], Gallery]:
    """(split, class, filter) -> gallery; per split and class every filter with images, and over the
    whole dataset every flag. The suspect_label gallery is in the label check's rank order."""
    groups: dict[tuple[str, str, str], list[Tile]] = collections.defaultdict(list)
    for tile in sorted(tiles, key=Tile.rank):
        groups[(tile.split, tile.label, "all")].append(tile)
        for name in (["flagged"] if tile.flags else []) + tile.flags:
            groups[(tile.split, tile.label, name)].append(tile)
            groups[("all", "all", name)].append(tile)
    galleries = {}
    for (split, label, name), members in groups.items():
        if name == "suspect_label":
            members = sorted(members, key=lambda t: (t.suspect["rank"], t.png))
        number = "all" if label == "all" else str(classes.index(label))
        scope = ("every split and class" if split == "all" else f"{split} / {label}")
        galleries[(split, label, name)] = Gallery(f"{split}-{number}-{name}", scope, split, label, name, members)
    return galleries


# ---------------------------------------------------------------- files in OUT

class Assets:
    """Puts each PNG and source clip into OUT (a relative link, or a copy) and hands back its URL."""

    def __init__(self, out: Path, final_out: Path, data: Dataset, copy: bool):
        self.out, self.final_out, self.data, self.copy = out, final_out, data, copy
        self.missing_images = self.missing_audio = 0
        self._folders: set[Path] = set()

    def _place(self, target: Path, rel: Path) -> str:
        dest = self.out / rel
        if dest.parent not in self._folders:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(dest.parent)
        if self.copy:
            shutil.copyfile(target, dest)
        else:
            os.symlink(os.path.join(self._relative(target.parent, rel.parent), target.name), dest)
        return urllib.parse.quote(rel.as_posix())

    @functools.lru_cache(maxsize=4096)
    def _relative(self, target_dir: Path, rel_dir: Path) -> str:
        """Link text from OUT/rel_dir to target_dir, computed where the link will live once OUT is in
        place (the temp folder it is built in has the same parent, so the same depth)."""
        return os.path.relpath(os.path.abspath(target_dir), os.path.abspath(self.final_out / rel_dir))

    def add(self, tile: Tile) -> None:
        png = self.data.images / tile.png
        if png.is_file():
            tile.img = self._place(png, Path("img") / tile.png)
        else:
            self.missing_images += 1
        clip = clip_path(self.data, tile.source)
        if clip is not None and clip.is_file():
            tile.audio = self._place(clip, Path("audio") / tile.source)
            tile.audio_type = AUDIO_TYPES.get(clip.suffix.lower(), "audio/wav")
        else:
            self.missing_audio += 1


def flags_csv(tiles: list[Tile]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "png", "split", "label", "flags"])
    for tile in tiles:
        if tile.flags:
            writer.writerow([tile.source, tile.png, tile.split, tile.label, ";".join(tile.flags)])
    return buffer.getvalue()


def suspects_csv(tiles: list[Tile]) -> str:
    """Every clip the judging model contradicts, in rank order (flagged or not); `speaker`: how much more
    it resembles the same speaker's takes of the predicted class than of its label (train.suspects)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "source", "png", "split", "label", "predicted", "confidence", "speaker", "how",
                     "flagged"])
    ranked = sorted((t for t in tiles if t.suspect), key=lambda t: (t.suspect["rank"], t.png))
    for tile in ranked:
        speaker = tile.suspect.get("speaker")
        writer.writerow([tile.suspect["rank"], tile.source, tile.png, tile.split, tile.label,
                         tile.suspect["predicted"], f"{tile.suspect['confidence']:.4f}",
                         "" if speaker is None else f"{speaker:.4f}", tile.suspect["how"],
                         int("suspect_label" in tile.flags)])
    return buffer.getvalue()


def template_env() -> jinja2.Environment:
    return environment(flag_help=FLAG_HELP, generator=GENERATOR)


def summary_table(galleries: dict, tiles: list[Tile], classes: list[str]) -> list[dict]:
    """Rows of the summary table: one per split and class, then the whole dataset."""
    def cell(key, count):
        return {"count": count, "href": galleries[key].href() if count and key in galleries else None}

    counts = collections.Counter()
    for tile in tiles:
        for name in ["all"] + (["flagged"] if tile.flags else []) + tile.flags:
            counts[(tile.split, tile.label, name)] += 1
            counts[("all", "all", name)] += 1
    rows = []
    for split in SPLITS:
        for label in classes:
            if counts[(split, label, "all")]:
                rows.append({"split": split, "label": label, "total": False,
                             "cells": [cell((split, label, name), counts[(split, label, name)])
                                       for name in ("all", "flagged") + FLAG_NAMES]})
    rows.append({"split": "all", "label": "all", "total": True,
                 "cells": [{"count": counts[("all", "all", "all")], "href": None}]
                 + [cell(("all", "all", name), counts[("all", "all", name)]) for name in ("flagged",) + FLAG_NAMES]})
    return rows


def write_pages(out: Path, env: jinja2.Environment, galleries: dict, classes: list[str],
                page_size: int, progress: bool) -> int:
    """Every gallery page; -> the number of pages."""
    template = env.get_template("audit_gallery.html")
    (out / "pages").mkdir()
    written = 0
    bar = tqdm(total=sum(-(-len(g.tiles) // page_size) for g in galleries.values()), desc="pages",
               unit="page", disable=not progress, leave=False)
    for (split, label, name), gallery in galleries.items():
        siblings = [(f, galleries[(split, label, f)]) for f in ("all", "flagged") + FLAG_NAMES
                    if (split, label, f) in galleries]
        filters = [{"name": f, "count": len(g.tiles), "href": g.href(root="../"), "current": f == name}
                   for f, g in siblings]
        order = (RANK_ORDER if name == "suspect_label"
                 else "The suspicious first: most flags, then the highest-ranked label contradiction, then by name.")
        pages = -(-len(gallery.tiles) // page_size)
        for page in range(1, pages + 1):
            html = template.render(
                title=f"{gallery.scope}: {name}", root="../", scope=gallery.scope, filters=filters,
                order=order, tiles=gallery.tiles[(page - 1) * page_size:page * page_size], page=page,
                pages=pages, count=len(gallery.tiles),
                prev=gallery.href(page - 1, "../") if page > 1 else None,
                next=gallery.href(page + 1, "../") if page < pages else None)
            (out / gallery.href(page)).write_text(html, encoding="utf-8")
            written += 1
            bar.update()
    bar.close()
    return written


# ---------------------------------------------------------------- main

@dataclasses.dataclass
class Options:
    out: Path
    model: Path | None = None
    folds: int = FOLDS
    fold_epochs: int | None = None
    threshold: float = SUSPECT_CONFIDENCE
    page_size: int = PAGE_SIZE
    copy: bool = False
    seed: int = 0
    progress: bool = True


def audit(data: Dataset, options: Options) -> dict:
    """Write the audit folder; -> summary numbers."""
    notes = []
    refilled, undecoded = fill_missing_records(data, options.progress)
    if refilled:
        notes.append(f"{refilled} clip(s) had no current flags in manifest.csv (an older preprocess); they "
                     f"were decoded here. Run `python -m preprocess` again to store them.")
    if undecoded:
        notes.append(f"{undecoded} of them could not be decoded (clip or PNG missing): no per-clip flags.")
    classes = sorted({r["label"] for r in data.rows})
    suspects, model_info = {}, None
    if options.model is not None:
        from train.suspects import label_check  # needs torch models: only with --model
        suspects, model_info = label_check(options.model, data, options.folds, options.fold_epochs,
                                           options.threshold, options.seed, options.progress)
        notes += model_info.pop("notes", [])
    tiles = build_tiles(data, suspects, options.threshold, options.progress)
    galleries = make_galleries(tiles, classes)
    env = template_env()
    numbers = {}

    def build(folder: Path) -> None:
        assets = Assets(folder, options.out, data, options.copy)
        for tile in tqdm(tiles, desc="link files" if not options.copy else "copy files", unit="clip",
                         disable=not options.progress or len(tiles) < 500, leave=False):
            assets.add(tile)
        if assets.missing_images:
            notes.append(f"{assets.missing_images} PNG(s) listed in manifest.csv are missing.")
        if assets.missing_audio:
            where = data.audio_root.name if data.audio_root else "unknown"
            notes.append(f"{assets.missing_audio} source clip(s) not found under the audio root ({where}): "
                         f"no player for them (pass --audio-root DIR).")
        copy_stylesheet(folder)
        (folder / "flags.csv").write_text(flags_csv(tiles), encoding="utf-8")
        if model_info:
            (folder / "suspects.csv").write_text(suspects_csv(tiles), encoding="utf-8")
        pages = write_pages(folder, env, galleries, classes, options.page_size, options.progress)
        flagged = sum(1 for t in tiles if t.flags)
        ranked = galleries.get(("all", "all", "suspect_label"))
        if data.failed:
            notes.append(f"{data.failed} clip(s) could not be rendered by preprocess (see manifest.csv).")
        stats = [("images", len(tiles)), ("flagged", f"{flagged} ({100 * flagged / len(tiles):.1f} %)")]
        stats += [(name, sum(name in t.flags for t in tiles)) for name in FLAG_NAMES
                  if name != "suspect_label" or model_info]
        html = env.get_template("audit_index.html").render(
            title=f"SpecVision dataset audit: {data.images.resolve().name}", root="",
            images_name=data.images.resolve().name, total=len(tiles), classes=classes,
            settings_hash=data.settings.digest(), stats=stats, flag_names=FLAG_NAMES,
            table=summary_table(galleries, tiles, classes), model=model_info,
            ranked=ranked.tiles[:RANKED_ON_INDEX] if ranked else [], ranked_total=len(ranked.tiles) if ranked else 0,
            ranked_href=ranked.href() if ranked else "", rank_order=RANK_ORDER, notes=notes)
        (folder / "index.html").write_text(html, encoding="utf-8")
        numbers.update(images=len(tiles), flagged=flagged, pages=pages, missing_images=assets.missing_images,
                       missing_audio=assets.missing_audio,
                       flags={name: sum(name in t.flags for t in tiles) for name in FLAG_NAMES})

    replace_folder(options.out, build, _is_audit)
    return numbers


def _is_audit(folder: Path) -> bool:
    index = folder / "index.html"
    return index.is_file() and GENERATOR in index.read_text(errors="replace")[:2000]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.audit",
        description="Write a static page to look at every spectrogram PNG and listen to its clip, the "
                    "suspicious first: flags (silent, clipped, cut_off, short, duplicate_audio, "
                    "duplicate_image, and with --model suspect_label) per split and class, paged "
                    "galleries, OUT/flags.csv.",
        epilog="Open OUT/index.html in any browser. Exit status: 0 written, 1 written but some PNGs or "
               "clips were missing, 2 could not start (bad images folder, model or options).")
    parser.add_argument("images", type=Path, help="folder written by `python -m preprocess` (render.json, "
                        "manifest.csv, <split>/<class>/*.png)")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                        help=f"output folder, replaced as a whole (default: {DEFAULT_OUT}/)")
    parser.add_argument("--model", type=Path, metavar="MODEL_PT",
                        help="models/NAME/model.pt: flag clips whose label it contradicts with confidence "
                             "(suspect_label), ranked")
    parser.add_argument("--folds", type=int, default=FOLDS, metavar="K",
                        help="with --model: judge the train split out of fold, by K quick models of the "
                             "model's architecture, each trained on the test split and the train split "
                             "without one fold of speakers; 0: by the model itself, which has seen those "
                             "clips (default: %(default)s). val and test are judged by the model.")
    parser.add_argument("--fold-epochs", type=int, default=None, metavar="N",
                        help="epochs of each out-of-fold model (default: at least 12, and enough for 500 "
                             "optimizer steps on a small set, at most python -m train's 60)")
    parser.add_argument("--confidence", type=float, default=SUSPECT_CONFIDENCE, metavar="P",
                        help="model confidence in another class that flags suspect_label "
                             "(default: %(default)s)")
    parser.add_argument("--audio-root", type=Path, metavar="DIR",
                        help="where the source clips are (default: the root recorded in render.json)")
    parser.add_argument("--copy", action="store_true",
                        help="copy PNGs and clips into OUT (self-contained, can be moved) instead of "
                             "relative links into the images folder and audio root")
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE, help="tiles per page (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the out-of-fold training (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.page_size < 1 or args.folds < 0 or args.folds == 1 or (args.fold_epochs is not None and args.fold_epochs < 1) \
            or not 0.0 < args.confidence <= 1.0:
        parser.error("--page-size and --fold-epochs must be >= 1, --folds 0 or >= 2, 0 < --confidence <= 1")
    if args.model is not None and not args.model.is_file():
        print(f"error: {args.model}: no such model file", file=sys.stderr)
        return 2
    start = time.perf_counter()
    options = Options(args.out, args.model, args.folds, args.fold_epochs, args.confidence, args.page_size,
                      args.copy, args.seed, not args.quiet)
    try:
        data = load_dataset(args.images, args.audio_root)
        numbers = audit(data, options)
    except (AuditError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    counts = ", ".join(f"{name} {count}" for name, count in numbers["flags"].items()
                       if count or name != "suspect_label")
    print(f"audit of {args.images}: {numbers['images']} images, {numbers['flagged']} flagged ({counts}); "
          f"{numbers['pages']} gallery pages ({time.perf_counter() - start:.1f} s)")
    if numbers["missing_images"] or numbers["missing_audio"]:
        print(f"  missing: {numbers['missing_images']} PNG(s), {numbers['missing_audio']} clip(s)")
    print(args.out / "index.html")
    return 1 if numbers["missing_images"] or numbers["missing_audio"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
