"""One static HTML page about a trained model: data, settings, curves, errors you can look at and hear.

    python -m train.report models/demo --out report/      # then open report/index.html

Reads models/NAME/model.pt and metrics.json, the images dir named in metrics.json (its render.json
and manifest.csv) and the source clips under render.json's audio root. Writes OUT/index.html plus
the files it links to (style.css, PNGs, audio clips, curves.png), all by relative paths: no server, no
external URL, no absolute path of this machine, so the folder can be zipped and shared. OUT is built
in a temp folder and renamed into place, so a crash never leaves half a report. The page is
preprocess/templates/report.html (Jinja2, autoescaped): the dataset audit's base page, cards and
stylesheet, so both look like one product; this module only gathers the numbers and files.
"""
from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import json
import random
import re
import shutil
import urllib.parse
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from preprocess import assets, cli, openworld
from preprocess.atomic import replace_folder
from preprocess.cli import SpecVisionError
from preprocess.images import ImageError, decode, open_png
from preprocess.pages import copy_stylesheet, environment
from preprocess.layout import RENDER_JSON, SPLITS, SettingsError, read_render_record
from preprocess.render import RenderSettings
from train.checkpoint import CheckpointError, load_checkpoint
from train.metrics import f1_score, plot_curves

DEFAULT_OUT = "report"
MAX_ERRORS = 300          # misclassified test images shown, most confident first; the rest are counted
CORRECT_PER_CLASS = 12    # seeded sample of correctly classified test images per class
PAGE_SIZE = 40            # cards per gallery page (pagination by a few lines of JS in the template)
MAX_FAILED_LISTED = 50    # failed clips listed from manifest.csv
THUMB_MAX_PX = 256        # PNGs larger than this on a side get a downscaled thumbnail
GENERATOR = "specvision-report"  # marks an OUT folder this command may replace


class ReportError(SpecVisionError):
    """Inputs that cannot make a report; the message names the file and the reason."""


# ---------------------------------------------------------------- inputs

@dataclasses.dataclass
class Inputs:
    name: str
    ckpt: dict
    metrics: dict
    images: Path
    render_json: dict | None          # images/render.json, if present
    manifest: list[dict] | None       # images/manifest.csv rows, if present
    audio_root: Path | None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: not found") from None
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: not readable JSON ({err})") from None


def find_images_dir(model_dir: Path, metrics: dict, override: str | None) -> Path:
    """--images, else metrics.json's "images" (relative to the working dir, then to the project)."""
    given = override or metrics.get("images")
    if not given:
        raise ReportError(f"{model_dir / 'metrics.json'}: no \"images\" entry; pass --images DIR")
    candidates = [Path(given)]
    if not override and not Path(given).is_absolute():
        candidates.append(model_dir.parent.parent / given)  # models/NAME -> project root
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ReportError(f"images dir {given!r} (from {'--images' if override else 'metrics.json'}) not found; "
                      f"pass --images DIR")


def load_inputs(model_dir: Path, images: str | None = None) -> Inputs:
    if not model_dir.is_dir():
        raise ReportError(f"{model_dir}: not a model directory (expected models/NAME)")
    try:
        ckpt = load_checkpoint(model_dir / "model.pt")
    except CheckpointError as err:
        raise ReportError(str(err)) from None
    metrics = _read_json(model_dir / "metrics.json")
    images_dir = find_images_dir(model_dir, metrics, images)
    try:
        render_json = read_render_record(images_dir) if (images_dir / RENDER_JSON).is_file() else None
    except SettingsError as err:
        raise ReportError(str(err)) from None
    manifest = None
    if (images_dir / "manifest.csv").is_file():
        with open(images_dir / "manifest.csv", newline="", encoding="utf-8") as handle:
            manifest = list(csv.DictReader(handle))
    root = (render_json or {}).get("source", {}).get("root")
    return Inputs(model_dir.resolve().name, ckpt, metrics, images_dir, render_json, manifest,
                  Path(root) if root else None)


# ---------------------------------------------------------------- numbers

def dataset_counts(inputs: Inputs) -> tuple[dict[str, collections.Counter], list[dict]]:
    """-> ({class: Counter(split -> images)}, failed manifest rows). Folders when there is no manifest."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failed = []
    if inputs.manifest is not None:
        for row in inputs.manifest:
            if row.get("status") == "ok":
                counts[row["label"]][row["split"]] += 1
            else:
                failed.append(row)
    else:
        for split in SPLITS:
            for class_dir in sorted((inputs.images / split).glob("*/")):
                counts[class_dir.name][split] += sum(1 for _ in class_dir.glob("*.png"))
    return dict(sorted(counts.items())), failed


def split_predictions(predictions: list[dict], classes: list[str], max_errors: int, per_class: int,
                      seed: int) -> tuple[list[dict], list[dict], dict[str, list[dict]]]:
    """-> (all errors, errors shown, {class: sample of correct}) — deterministic for a seed."""
    errors = sorted((p for p in predictions if p["predicted"] != p["label"]),
                    key=lambda p: (-float(p["confidence"]), p["png"]))
    rng = random.Random(seed)
    correct = {}
    for cls in classes:
        right = sorted((p for p in predictions if p["label"] == cls and p["predicted"] == cls),
                       key=lambda p: p["png"])
        correct[cls] = sorted(rng.sample(right, min(per_class, len(right))), key=lambda p: p["png"])
    return errors, errors[:max_errors], correct


# ---------------------------------------------------------------- files copied into the report

_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"()<>]+[/\\])+")


def scrub(text: str, root: Path | None) -> str:
    """Drop this machine's directories from a message (e.g. a manifest reason): keep names only."""
    if root is not None:
        text = text.replace(str(root).rstrip("/") + "/", "")
    return _ABSOLUTE_PATH.sub("", text)


def url(path: str) -> str:
    """A relative link for href/src: percent-encoded (names with %, #, ? or spaces); the template escapes it."""
    return urllib.parse.quote(path, safe="/")


class Assets:
    """Copies PNGs and source clips into the report folder; hands back their relative URLs."""

    def __init__(self, out: Path, inputs: Inputs):
        self.out, self.inputs = out, inputs
        self.by_png = {r["png"]: r for r in inputs.manifest or [] if r.get("png")}
        self.missing_audio = 0
        self.missing_images = 0

    def image(self, png: str) -> tuple[str | None, str | None, tuple[int, int]]:
        """-> (thumbnail URL, full-size URL, thumbnail (w, h)); (None, None, (0, 0)) if the PNG is gone."""
        full = Path("img") / png
        try:
            source = assets.contained_file(self.inputs.images, png)
            if source is None:
                raise OSError(f"{png}: not a file inside the images dir")
            with open_png(source) as image:  # header checks: a decompression bomb is never decoded
                shown = image.size
                thumb = full
                if max(image.size) > THUMB_MAX_PX:  # big renders: a small preview linking to the exact PNG
                    preview = decode(image, source, "RGB")
                    preview.thumbnail((THUMB_MAX_PX, THUMB_MAX_PX))
                    thumb, shown = Path("thumb") / png, preview.size
                    (self.out / thumb).parent.mkdir(parents=True, exist_ok=True)
                    preview.save(self.out / thumb)
            (self.out / full).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, self.out / full)
        except (OSError, ImageError):
            self.missing_images += 1
            return None, None, (0, 0)
        return thumb.as_posix(), full.as_posix(), shown

    def audio(self, png: str) -> tuple[str, str] | None:
        """-> (URL, MIME type) of the source clip copied beside its PNG, or None if it cannot be found."""
        row = self.by_png.get(png)
        source = None
        if row is not None:  # the audio root, or an open-world clip's own root (noise crops, --unknown-root)
            source = assets.source_clip(row.get("source", ""), self.inputs.render_json, self.inputs.images,
                                        self.inputs.audio_root)
        if source is None or not assets.is_audio(source):
            self.missing_audio += 1  # only audio files, inside the audio root, are ever copied
            return None
        target = Path("audio") / Path(png).with_suffix(source.suffix.lower())
        (self.out / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.out / target)
        return target.as_posix(), assets.audio_type(source)


# ---------------------------------------------------------------- the page (preprocess/templates/report.html)

def pct(value) -> str:
    return "–" if value is None else f"{100.0 * float(value):.1f}%"


def tile(pred: dict, assets: Assets, error: bool) -> dict:
    """One test image for the card template: its files copied in, what it is and what the model said."""
    thumb, full, (width, height) = assets.image(pred["png"])
    clip = assets.audio(pred["png"])
    return {"name": Path(pred["png"]).name, "img": thumb and url(thumb), "full": full and url(full),
            "width": width, "height": height, "audio": clip and url(clip[0]), "audio_type": clip and clip[1],
            "label": pred["label"], "predicted": pred["predicted"], "error": error,
            "confidence": pct(pred["confidence"])}


def summary_context(inputs: Inputs, classes: list[str], predictions: list[dict], errors: list[dict]) -> dict:
    metrics, ckpt = inputs.metrics, inputs.ckpt
    stats = [("test accuracy", pct((metrics.get("test") or {}).get("accuracy"))),
             ("test images", len(predictions)), ("misclassified", len(errors)), ("classes", len(classes)),
             ("architecture", ckpt["arch"]), ("best epoch", metrics.get("best_epoch", "–")),
             ("best val accuracy", pct(metrics.get("best_val_acc")))]
    targets = list(ckpt.get("targets") or openworld.target_classes(classes))
    return {"stats": stats, "targets": targets if len(targets) < len(classes) else [],
            "settings_differ": bool(inputs.render_json and inputs.render_json.get("settings") != ckpt["render"])}


def dataset_context(inputs: Inputs) -> dict:
    counts, failed = dataset_counts(inputs)
    totals = collections.Counter()
    rows = []
    for cls, by_split in counts.items():
        rows.append([cls] + [by_split[s] for s in SPLITS] + [sum(by_split.values())])
        totals.update(by_split)
    rows.append(["all"] + [totals[s] for s in SPLITS] + [sum(totals.values())])
    source = (inputs.render_json or {}).get("source", {})
    return {"rows": rows,
            "images_name": Path(str(inputs.metrics.get("images", inputs.images))).name,  # never the full path
            "counted": "counts from manifest.csv" if inputs.manifest is not None else "counted from the folders",
            "audio_name": inputs.audio_root.name if inputs.audio_root else "unknown",
            "source_kind": source.get("kind", "unknown"), "failed": len(failed),
            "failed_rows": [[r.get("source", ""), scrub(r.get("reason", ""), inputs.audio_root)]
                            for r in failed[:MAX_FAILED_LISTED]]}


def settings_rows(render: dict) -> list[list]:
    settings = RenderSettings.from_dict(render)
    height, width = settings.image_size
    lo, hi = settings.pixel_range
    rows = [[k, "default" if v is None else v] for k, v in render.items()]
    return rows + [["image size", f"{height} x {width} px, {settings.channels} channel(s)"],
                   ["pixel range", f"{lo:g} .. {hi:g} dB -> 0 .. 255"], ["settings hash", settings.digest()]]


def training_context(inputs: Inputs, out: Path) -> dict:
    metrics, ckpt = inputs.metrics, inputs.ckpt
    epochs = metrics.get("epochs") or []
    curves = None
    if epochs:
        plot_curves(epochs, out / "curves.png")  # the trainer's own plot, redrawn from metrics.json
        with Image.open(out / "curves.png") as figure:
            curves = {"width": figure.size[0], "height": figure.size[1]}
    speed = metrics.get("train_images_per_s")
    n_params = sum(t.numel() for t in ckpt["state_dict"].values())
    facts = [["architecture", ckpt["arch"]], ["parameters", f"{n_params:,}"],
             ["input size (C x H x W)", " x ".join(map(str, ckpt["input_size"]))],
             ["epochs run", len(epochs)], ["best epoch (saved weights)", metrics.get("best_epoch", "–")],
             ["training speed", f"{speed:.0f} images/s" if speed else "–"]]
    rows = [[e["epoch"], f'{e["train_loss"]:.4f}', pct(e["train_acc"]), f'{e["val_loss"]:.4f}',
             pct(e["val_acc"]), f'{e.get("lr", 0):.2g}', f'{e.get("seconds", 0):.1f}'] for e in epochs]
    return {"curves": curves, "model_facts": facts, "epochs": rows}


def test_context(test: dict, classes: list[str]) -> dict | None:
    if not test:
        return None
    confusion = []
    for cls, row in zip(classes, test.get("confusion") or []):
        total = sum(row)
        confusion.append({"label": cls, "total": total, "cells": [
            {"count": count, "share": count / (total or 1), "rgb": "27,127,59" if other == cls else "176,0,32"}
            for other, count in zip(classes, row)]})  # shaded by the share of the true class's row
    per_class = []
    for cls in classes:
        m = (test.get("per_class") or {}).get(cls, {})
        p, r = m.get("precision"), m.get("recall")
        per_class.append([cls, pct(p), pct(r), pct(f1_score(p, r)), m.get("support", "–")])
    return {"accuracy": pct(test.get("accuracy")), "confusion": confusion, "per_class": per_class,
            "loss": f'{test["loss"]:.4f}' if test.get("loss") is not None else None}


TOC = (("data", "dataset"), ("settings", "render settings"), ("training", "training"), ("test", "test set"),
       ("errors", "misclassified"), ("correct", "correct samples"))


def render_html(inputs: Inputs, out: Path, max_errors: int, per_class: int, page_size: int,
                seed: int) -> tuple[str, dict]:
    """Write the assets into `out`; -> (the page, summary numbers)."""
    metrics, ckpt = inputs.metrics, inputs.ckpt
    classes = list(metrics.get("classes") or ckpt["classes"])
    predictions = metrics.get("test_predictions") or []
    errors, shown, correct = split_predictions(predictions, classes, max_errors, per_class, seed)
    assets = Assets(out, inputs)
    copy_stylesheet(out)
    shown_tiles = [tile(p, assets, error=True) for p in tqdm(shown, desc="errors", unit="img", leave=False,
                                                             disable=len(shown) < 200)]
    page = environment(generator=GENERATOR).get_template("report.html").render(
        title=f"SpecVision report: {inputs.name}", root="", classes=classes, toc=TOC, splits=list(SPLITS),
        **summary_context(inputs, classes, predictions, errors), dataset=dataset_context(inputs),
        settings_rows=settings_rows(ckpt["render"]), **training_context(inputs, out),
        test=test_context(metrics.get("test") or {}, classes), test_images=len(predictions),
        errors=len(errors), shown=shown_tiles, page_size=page_size,
        correct=[(cls, [tile(p, assets, error=False) for p in sample]) for cls, sample in correct.items()])
    summary = {"test_images": len(predictions), "misclassified": len(errors), "errors_shown": len(shown),
               "missing_audio": assets.missing_audio, "missing_images": assets.missing_images}
    return page, summary


# ---------------------------------------------------------------- atomic output folder

def _is_report(folder: Path) -> bool:
    index = folder / "index.html"
    if not any(folder.iterdir()):
        return True
    return index.is_file() and GENERATOR in index.read_text(errors="replace")[:2000]


def write_report(out: Path, build) -> None:
    """Build into a temp folder beside `out`, then swap it in; an old report is removed only after."""
    try:
        replace_folder(out, build, _is_report)
    except FileExistsError:
        raise ReportError(f"{out}: exists and is not a SpecVision report; refusing to replace it") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.report", description=__doc__.split("\n\n")[0],
                                     epilog="Open OUT/index.html in any browser; zip OUT to share it.")
    parser.add_argument("model_dir", type=Path, help="models/NAME with model.pt and metrics.json")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                        help=f"report folder, replaced as a whole (default {DEFAULT_OUT}/)")
    parser.add_argument("--images", help="images dir (default: the one recorded in metrics.json)")
    parser.add_argument("--max-errors", type=int, default=MAX_ERRORS,
                        help=f"misclassified images shown, most confident first (default {MAX_ERRORS})")
    parser.add_argument("--per-class", type=int, default=CORRECT_PER_CLASS,
                        help=f"correctly classified samples per class (default {CORRECT_PER_CLASS})")
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE,
                        help=f"cards per gallery page (default {PAGE_SIZE})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the correct-sample choice (default 0)")
    return parser


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_errors < 0 or args.per_class < 0 or args.page_size < 1:
        parser.error("--max-errors and --per-class must be >= 0, --page-size >= 1")
    summary = {}

    def build(folder: Path) -> None:
        page, numbers = render_html(inputs, folder, args.max_errors, args.per_class, args.page_size,
                                    args.seed)
        (folder / "index.html").write_text(page, encoding="utf-8")
        summary.update(numbers)

    inputs = load_inputs(args.model_dir, args.images)
    write_report(args.out, build)
    print(f"report for {inputs.name}: {summary['test_images']} test images, {summary['misclassified']} "
          f"misclassified ({summary['errors_shown']} shown)"
          + (f"; {summary['missing_audio']} clip(s) without audio" if summary["missing_audio"] else "")
          + (f"; {summary['missing_images']} missing PNG(s)" if summary["missing_images"] else ""))
    print(args.out / "index.html")
    return 0


if __name__ == "__main__":
    cli.run(main)
