"""python -m preprocess.audit: look at every image by eye and listen to it, the suspicious ones first.

    python -m preprocess.audit images/ --out audit/                       # then open audit/index.html
    python -m train.suspects images/ --model models/NAME/model.pt --out judgments.json   # the label check
    python -m preprocess.audit images/ --out audit/ --judgments judgments.json
    python -m preprocess.audit images/ --out audit/ --model models/NAME/model.pt   # both in one command

Reads what `python -m preprocess` wrote (render.json, manifest.csv, the PNGs) and the source clips
under render.json's audio root. Writes a static folder: index.html (a summary table of flags per
split and class, each count a link), pages/ (paged galleries per split, class and flag: each tile
the PNG, its name, label, split, flags and an audio player), flags.csv (one row per flagged clip),
with a label check suspects.csv (every clip the model contradicts, the most suspicious first) and style.css. Images and clips are relative symbolic links into the images folder and the audio
root (`--copy`: copies), every URL relative: no server, no absolute path of this machine.

Flags: silent, clipped, cut_off and short come from manifest.csv (computed by preprocess while it
had the audio decoded, see preprocess/flags.py); duplicate_audio (the same SHA-256 in two classes or
splits), duplicate_image (a near-identical image in another split) and, with a label check, suspect_label
(the model is confident in another class) are found here.
"""
from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import functools
import io

import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import jinja2
from tqdm import tqdm

from preprocess import assets, cli, judgments
from preprocess.atomic import replace_folder
from preprocess.pages import copy_stylesheet, environment
from preprocess.audit_data import AuditError, Dataset, fill_missing_records
from preprocess.galleries import FLAG_HELP, FLAG_NAMES, Tile, build_tiles, make_galleries
from preprocess.audit_data import clip_path, load_dataset
from preprocess.sources import SPLITS

DEFAULT_OUT = "audit"
PAGE_SIZE = 48               # tiles per gallery page
RANKED_ON_INDEX = 12         # top label contradictions shown on the summary page
SUSPECT_CONFIDENCE = 0.8     # model confidence in another class that makes a clip suspect_label
FOLDS = 5                    # out-of-fold quick training over the train split (--folds); its epochs:
                             # train.suspects.quick_epochs unless --fold-epochs
GENERATOR = "specvision-audit"  # marks an OUT folder this command may replace

RANK_ORDER = ("Ranked by the judging model's confidence in another class plus the speaker evidence: how much "
              "more the clip sounds like the same speaker's takes of that class than like their takes of its "
              "label.")
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
        if os.path.lexists(dest):  # two manifest rows naming one clip: one file serves both
            pass
        elif self.copy:
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
        png = assets.contained_file(self.data.images, tile.png, links_inside=True)
        if png is not None:
            tile.img = self._place(png, Path("img") / tile.png)
        else:
            self.missing_images += 1
        clip = clip_path(self.data, tile.source)
        if clip is not None:
            tile.audio = self._place(clip, Path("audio") / tile.source)
            tile.audio_type = assets.audio_type(clip)
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
    judgments: Path | None = None  # the label check's file (preprocess/judgments.py)
    threshold: float = SUSPECT_CONFIDENCE
    page_size: int = PAGE_SIZE
    copy: bool = False
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
    if options.judgments is not None:
        suspects, model_info = judgments.read(options.judgments, data)
        notes += model_info.pop("notes", [])
        model_info["threshold"] = options.threshold  # flagged here: this command's --confidence
        for row in model_info["splits"]:
            row["suspects"] = sum(1 for i, s in suspects.items()
                                  if data.rows[i]["split"] == row["split"] and s["confidence"] >= options.threshold)
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
                    "duplicate_image, and with a label check suspect_label) per split and class, paged "
                    "galleries, OUT/flags.csv.",
        epilog="Open OUT/index.html in any browser. The label check (which clips a model contradicts) is "
               "python -m train.suspects, which writes the file --judgments reads; --model runs it first. "
               "Exit status: 0 written, 1 written but some PNGs or clips were missing, 2 could not start "
               "(bad images folder, model, label-check file or options).")
    parser.add_argument("images", type=Path, help="folder written by `python -m preprocess` (render.json, "
                        "manifest.csv, <split>/<class>/*.png)")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                        help=f"output folder, replaced as a whole (default: {DEFAULT_OUT}/)")
    parser.add_argument("--judgments", type=Path, metavar="FILE",
                        help="the label check's file (python -m train.suspects IMAGES --model M --out FILE): "
                             "flag clips whose label the model contradicts with confidence (suspect_label), ranked")
    parser.add_argument("--model", type=Path, metavar="MODEL_PT",
                        help="run the label check with this model first (python -m train.suspects, in its own "
                             "process; its file is kept as OUT/judgments.json)")
    parser.add_argument("--folds", type=int, default=FOLDS, metavar="K",
                        help="with --model: judge the train split out of fold, by K quick models of the "
                             "model's architecture, each trained on the test split and the train split "
                             "without one fold of speakers; 0: by the model itself, which has seen those "
                             "clips (default: %(default)s). val and test are judged by the model.")
    parser.add_argument("--fold-epochs", type=int, default=None, metavar="N",
                        help="with --model: epochs of each out-of-fold model (default: at least 12, and enough "
                             "for 500 optimizer steps on a small set, at most python -m train's 60)")
    parser.add_argument("--confidence", type=float, default=SUSPECT_CONFIDENCE, metavar="P",
                        help="model confidence in another class that flags suspect_label "
                             "(default: %(default)s)")
    parser.add_argument("--audio-root", type=Path, metavar="DIR",
                        help="where the source clips are (default: the root recorded in render.json)")
    parser.add_argument("--copy", action="store_true",
                        help="copy PNGs and clips into OUT (self-contained, can be moved) instead of "
                             "relative links into the images folder and audio root")
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE, help="tiles per page (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="with --model: seed of the out-of-fold training")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser

def run_label_check(args, into: Path) -> Path:
    """--model: `python -m train.suspects` in its own process (model code is train's, and audio -> image
    code never imports it); -> the file it wrote."""
    into.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "train.suspects", str(args.images), "--model", str(args.model), "--out",
            str(into), "--folds", str(args.folds), "--confidence", str(args.confidence), "--seed", str(args.seed)]
    argv += (["--fold-epochs", str(args.fold_epochs)] if args.fold_epochs else []) + (["--quiet"] if args.quiet else [])
    if args.audio_root is not None:
        argv += ["--audio-root", str(args.audio_root)]
    code = subprocess.run(argv).returncode
    if code:
        raise AuditError(f"the label check (python -m train.suspects) failed with exit status {code}",
                         exit_code=code if code in (cli.EXIT_UNUSABLE, cli.EXIT_INTERRUPTED) else cli.EXIT_UNUSABLE)
    return into

@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.page_size < 1 or args.folds < 0 or args.folds == 1 or (args.fold_epochs is not None and args.fold_epochs < 1) \
            or not 0.0 < args.confidence <= 1.0:
        parser.error("--page-size and --fold-epochs must be >= 1, --folds 0 or >= 2, 0 < --confidence <= 1")
    if args.model is not None and args.judgments is not None:
        parser.error("give --model (run the label check) or --judgments (read one), not both")
    if args.model is not None and not args.model.is_file():
        raise AuditError(f"{args.model}: no such model file")
    start = time.perf_counter()
    data = load_dataset(args.images, args.audio_root)
    made = None
    if args.model is not None:
        made = run_label_check(args, args.out.parent / f".{args.out.name}.judgments.json")
        args.judgments = made
    options = Options(args.out, args.judgments, args.confidence, args.page_size, args.copy, not args.quiet)
    try:
        numbers = audit(data, options)
    except FileExistsError as err:
        raise AuditError(str(err)) from None
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    finally:
        if made is not None and made.exists():  # kept beside the page it made, else not left behind
            if _is_audit(args.out):
                os.replace(made, args.out / "judgments.json")
            else:
                made.unlink()
    counts = ", ".join(f"{name} {count}" for name, count in numbers["flags"].items()
                       if count or name != "suspect_label")
    print(f"audit of {args.images}: {numbers['images']} images, {numbers['flagged']} flagged ({counts}); "
          f"{numbers['pages']} gallery pages ({time.perf_counter() - start:.1f} s)")
    if numbers["missing_images"] or numbers["missing_audio"]:
        print(f"  missing: {numbers['missing_images']} PNG(s), {numbers['missing_audio']} clip(s)")
    print(args.out / "index.html")
    return 1 if numbers["missing_images"] or numbers["missing_audio"] else 0

if __name__ == "__main__":
    cli.run(main)
