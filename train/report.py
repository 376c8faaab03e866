"""One static HTML page about a trained model: data, settings, curves, errors you can look at and hear.

    python -m train.report models/demo --out report/      # then open report/index.html

Reads models/NAME/model.pt and metrics.json, the images dir named in metrics.json (its render.json
and manifest.csv) and the source clips under render.json's audio root. Writes OUT/index.html plus
the files it links to (PNGs, audio clips, curves.png), all by relative paths: no server, no external
URL, no absolute path of this machine, so the folder can be zipped and shared. OUT is built in a
temp folder and renamed into place, so a crash never leaves half a report.
"""
from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import html
import json
import random
import re
import shutil
import sys
import urllib.parse
from pathlib import Path

import soundfile as sf
from PIL import Image
from tqdm import tqdm

from preprocess import cli, openworld
from preprocess.atomic import replace_folder
from preprocess.cli import SpecVisionError
from preprocess.images import ImageError, decode, open_png
from preprocess.layout import RENDER_JSON, SPLITS, SettingsError, read_render_record
from preprocess.render import RenderSettings
from train.checkpoint import CheckpointError, load_checkpoint
from train.metrics import plot_curves

DEFAULT_OUT = "report"
MAX_ERRORS = 300          # misclassified test images shown, most confident first; the rest are counted
CORRECT_PER_CLASS = 12    # seeded sample of correctly classified test images per class
PAGE_SIZE = 40            # cards per gallery page (pagination by a few lines of inline JS)
MAX_FAILED_LISTED = 50    # failed clips listed from manifest.csv
THUMB_MAX_PX = 256        # PNGs larger than this on a side get a downscaled thumbnail
GENERATOR = "specvision-report"  # marks an OUT folder this command may replace
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}


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


def _inside(rel: str) -> bool:
    """A relative path that stays inside its folder (metrics.json and manifest.csv are only data)."""
    path = Path(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts


def contained_file(folder: Path, rel: str) -> Path | None:
    """folder/rel if `rel` is a relative path that stays inside `folder` and names a regular file.

    The names come from files a crafted model folder controls (manifest.csv, render.json), so they are
    checked before anything is read; the callers then copy only what parses as a PNG or as audio
    (a link planted in the folder is followed: audio roots made of links to a dataset are common, and
    what it leads to must still be a real image or clip to be copied).
    """
    if not _inside(rel):
        return None
    try:
        base = folder.resolve(strict=True)
        path = base / rel
        if base not in path.parents or not path.is_file():
            return None
    except (OSError, RuntimeError):
        return None
    return path


def url(path: str) -> str:
    """A relative link for href/src: percent-encoded (names with %, #, ? or spaces), then HTML-escaped."""
    return esc(urllib.parse.quote(path, safe="/"))


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
            source = contained_file(self.inputs.images, png)
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
            name = row.get("source", "")
            root, rel = (openworld.audio_location(name, self.inputs.render_json, self.inputs.images)
                         or (self.inputs.audio_root, name))
            source = contained_file(root, rel) if root is not None else None
        if source is None or source.suffix.lower() not in AUDIO_TYPES or not _is_audio(source):
            self.missing_audio += 1  # only audio files, inside the audio root, are ever copied
            return None
        target = Path("audio") / Path(png).with_suffix(source.suffix.lower())
        (self.out / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.out / target)
        return target.as_posix(), AUDIO_TYPES.get(source.suffix.lower(), "audio/wav")


def _is_audio(path: Path) -> bool:
    try:
        sf.info(str(path))
        return True
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError):
        return False


# ---------------------------------------------------------------- HTML

CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 1rem 3rem;color:#222}
h1{margin:1rem 0 .2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
nav.toc a{margin-right:1rem}
table{border-collapse:collapse;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}
.stat{border:1px solid #ddd;border-radius:6px;padding:.4rem .8rem}.stat b{display:block;font-size:1.4rem}
figure.card{margin:0;border:1px solid #ddd;border-radius:6px;padding:.4rem;width:190px;background:#fafafa}
figure.card img{display:block;margin:0 auto;image-rendering:pixelated;background:#000}
figure.card figcaption{font-size:12px;word-break:break-all}
figure.card audio{width:100%;height:32px;margin-top:.3rem}
.wrong{color:#b00020;font-weight:600}.ok{color:#1b7f3b;font-weight:600}
.pager{margin:.6rem 0}.pager button{margin:0 .3rem}
.row{display:flex;flex-wrap:wrap;gap:0 2.5rem;align-items:flex-start}
img.figure{max-width:100%;height:auto}
.note{color:#666}.warn{background:#fff4e0;border:1px solid #f0c36d;padding:.4rem .8rem;border-radius:6px}
"""

# Gallery pagination: without JS every card shows; with it, one page at a time (hidden cards'
# lazy images are never fetched, so a page of thousands stays fast).
JS = """
document.querySelectorAll("[data-page-size]").forEach(function (gallery) {
  var size = +gallery.dataset.pageSize, cards = Array.prototype.slice.call(gallery.children);
  var pages = Math.ceil(cards.length / size);
  if (pages < 2) return;
  var pager = document.createElement("div"), prev = document.createElement("button"),
      next = document.createElement("button"), label = document.createElement("span"), page = 0;
  pager.className = "pager"; prev.type = next.type = "button";
  prev.textContent = "\\u2190 previous"; next.textContent = "next \\u2192";
  pager.append(prev, label, next);
  gallery.parentNode.insertBefore(pager, gallery);
  function show(p) {
    page = Math.max(0, Math.min(pages - 1, p));
    cards.forEach(function (card, i) { card.hidden = Math.floor(i / size) !== page; });
    label.textContent = "page " + (page + 1) + " of " + pages;
    prev.disabled = page === 0; next.disabled = page === pages - 1;
  }
  prev.addEventListener("click", function () { show(page - 1); });
  next.addEventListener("click", function () { show(page + 1); });
  show(0);
});
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def pct(value) -> str:
    return "–" if value is None else f"{100.0 * float(value):.1f}%"


LEFT = ' class="l"'


def table(header: list[str], rows: list[list], left: int = 1) -> str:
    """A plain table; the first `left` columns are left-aligned labels. Cells are escaped."""
    def cells(values, tag):
        return "".join(f'<{tag}{LEFT if i < left else ""}>{esc(v)}</{tag}>' for i, v in enumerate(values))
    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table><thead><tr>{cells(header, 'th')}</tr></thead><tbody>{body}</tbody></table>"


def card(pred: dict, assets: Assets, error: bool) -> str:
    thumb, full, (w, h) = assets.image(pred["png"])
    name = Path(pred["png"]).name
    if thumb is None:
        picture = '<p class="note">image missing</p>'
    else:
        picture = (f'<a href="{url(full)}"><img src="{url(thumb)}" width="{w}" height="{h}" loading="lazy" '
                   f'alt="spectrogram of {esc(name)}"></a>')
    clip = assets.audio(pred["png"])
    player = (f'<audio controls preload="none"><source src="{url(clip[0])}" type="{clip[1]}"></audio>'
              if clip else '<p class="note">audio not found</p>')
    predicted = esc(pred["predicted"])
    verdict = (f'true <b>{esc(pred["label"])}</b>, predicted <span class="wrong">{predicted}</span>'
               if error else f'<span class="ok">{predicted}</span>')
    return (f'<figure class="card">{picture}<figcaption>{esc(name)}<br>{verdict} '
            f'(confidence {pct(pred["confidence"])})</figcaption>{player}</figure>')


def confusion_table(classes: list[str], confusion: list[list[int]]) -> str:
    """Counts with cells shaded by the share of their row (true class)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in classes)
    rows = []
    for cls, row in zip(classes, confusion):
        total = sum(row) or 1
        cells = []
        for j, count in enumerate(row):
            share = count / total
            colour = "#fff" if share > 0.6 else "#222"
            rgb = "27,127,59" if classes[j] == cls else "176,0,32"
            cells.append(f'<td style="background:rgba({rgb},{share:.2f});color:{colour}" '
                         f'title="{count} of {sum(row)}">{count}</td>')
        rows.append(f'<tr><th class="l">{esc(cls)}</th>{"".join(cells)}</tr>')
    return (f'<table><thead><tr><th class="l">true \\ predicted</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def side_by_side(*blocks: str) -> str:
    return '<div class="row">' + "".join(f"<div>{b}</div>" for b in blocks if b) + "</div>"


def summary_section(inputs: Inputs, classes: list[str], predictions: list[dict], errors: list[dict]) -> str:
    metrics, ckpt = inputs.metrics, inputs.ckpt
    stats = [("test accuracy", pct((metrics.get("test") or {}).get("accuracy"))),
             ("test images", len(predictions)), ("misclassified", len(errors)), ("classes", len(classes)),
             ("architecture", ckpt["arch"]), ("best epoch", metrics.get("best_epoch", "–")),
             ("best val accuracy", pct(metrics.get("best_val_acc")))]
    html_ = '<div class="cards">' + "".join(f'<div class="stat">{esc(k)}<b>{esc(v)}</b></div>'
                                             for k, v in stats) + "</div>"
    if inputs.render_json and inputs.render_json.get("settings") != ckpt["render"]:
        html_ += ('<p class="warn">The images dir was rendered with other settings than this model was '
                  'trained on (render.json differs from model.pt): re-run preprocess or retrain.</p>')
    return html_


def dataset_section(inputs: Inputs) -> str:
    counts, failed = dataset_counts(inputs)
    totals = collections.Counter()
    rows = []
    for cls, by_split in counts.items():
        rows.append([cls] + [by_split[s] for s in SPLITS] + [sum(by_split.values())])
        totals.update(by_split)
    rows.append(["all"] + [totals[s] for s in SPLITS] + [sum(totals.values())])
    source = (inputs.render_json or {}).get("source", {})
    images_name = Path(str(inputs.metrics.get("images", inputs.images))).name  # never the full path
    parts = ['<h2 id="data">Dataset</h2>', table(["class"] + list(SPLITS) + ["total"], rows),
             f'<p>Images: <code>{esc(images_name)}</code> ('
             f'{"counts from manifest.csv" if inputs.manifest is not None else "counted from the folders"}); '
             f'audio: <code>{esc(inputs.audio_root.name if inputs.audio_root else "unknown")}</code> '
             f'({esc(source.get("kind", "unknown"))} source).</p>']
    if failed:
        listed = [[r.get("source", ""), scrub(r.get("reason", ""), inputs.audio_root)]
                  for r in failed[:MAX_FAILED_LISTED]]
        more = f" (first {MAX_FAILED_LISTED} listed)" if len(failed) > MAX_FAILED_LISTED else ""
        parts += [f"<p>{len(failed)} clip(s) could not be rendered{more}:</p>",
                  table(["source clip", "reason"], listed, left=2)]
    return "".join(parts)


def settings_section(render: dict) -> str:
    settings = RenderSettings.from_dict(render)
    height, width = settings.image_size
    lo, hi = settings.pixel_range
    rows = [[k, "default" if v is None else v] for k, v in render.items()]
    rows += [["image size", f"{height} x {width} px, {settings.channels} channel(s)"],
             ["pixel range", f"{lo:g} .. {hi:g} dB -> 0 .. 255"], ["settings hash", settings.digest()]]
    return '<h2 id="settings">Render settings</h2>' + table(["setting", "value"], rows, left=2)


def training_section(inputs: Inputs, out: Path) -> str:
    metrics, ckpt = inputs.metrics, inputs.ckpt
    epochs = metrics.get("epochs") or []
    figure = '<p class="note">metrics.json has no epochs.</p>'
    if epochs:
        plot_curves(epochs, out / "curves.png")  # the trainer's own plot, redrawn from metrics.json
        with Image.open(out / "curves.png") as fig:
            w, h = fig.size
        figure = (f'<img src="curves.png" width="{w}" height="{h}" class="figure" '
                  f'alt="training and validation loss and accuracy per epoch">')
    n_params = sum(t.numel() for t in ckpt["state_dict"].values())
    speed = metrics.get("train_images_per_s")
    facts = [["architecture", ckpt["arch"]], ["parameters", f"{n_params:,}"],
             ["input size (C x H x W)", " x ".join(map(str, ckpt["input_size"]))],
             ["epochs run", len(epochs)], ["best epoch (saved weights)", metrics.get("best_epoch", "–")],
             ["training speed", f"{speed:.0f} images/s" if speed else "–"]]
    details = ""
    if epochs:
        rows = [[e["epoch"], f'{e["train_loss"]:.4f}', pct(e["train_acc"]), f'{e["val_loss"]:.4f}',
                 pct(e["val_acc"]), f'{e.get("lr", 0):.2g}', f'{e.get("seconds", 0):.1f}'] for e in epochs]
        details = ("<details><summary>per-epoch numbers</summary>"
                   + table(["epoch", "train loss", "train acc", "val loss", "val acc", "lr", "seconds"], rows)
                   + "</details>")
    model = table(["model", ""], facts, left=2) + details
    return '<h2 id="training">Training</h2>' + side_by_side(figure, model)


def test_section(test: dict, classes: list[str], n_images: int) -> str:
    if not test:
        return '<h2 id="test">Test set</h2><p class="note">metrics.json has no test results.</p>'
    loss = f', loss {test["loss"]:.4f}' if test.get("loss") is not None else ""
    confusion = ""
    if test.get("confusion"):
        confusion = '<h3 id="confusion">Confusion matrix</h3>' + confusion_table(classes, test["confusion"])
    per = test.get("per_class") or {}
    rows = []
    for cls in classes:
        m = per.get(cls, {})
        p, r = m.get("precision"), m.get("recall")
        f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else None
        rows.append([cls, pct(p), pct(r), pct(f1), m.get("support", "–")])
    per_class = ('<h3 id="per-class">Per class</h3>'
                 + table(["class", "precision", "recall", "F1", "support"], rows))
    return (f'<h2 id="test">Test set</h2><p>Accuracy <b>{pct(test.get("accuracy"))}</b>{loss} on {n_images} '
            f'images.</p>' + side_by_side(confusion, per_class))


def gallery_sections(predictions: list[dict], errors: list[dict], shown: list[dict],
                     correct: dict[str, list[dict]], assets: Assets, page_size: int) -> str:
    parts = ['<h2 id="errors">Misclassified test images</h2>']
    if not predictions:
        parts.append('<p class="note">metrics.json has no test_predictions.</p>')
    elif not errors:
        parts.append("<p>None: every test image was classified correctly.</p>")
    else:
        capped = f", the {len(shown)} most confident shown" if len(shown) < len(errors) else ""
        parts.append(f"<p>{len(errors)} of {len(predictions)} test images{capped}, most confident mistakes "
                     f"first. Click a spectrogram for the full-size PNG.</p>")
        cards = [card(p, assets, error=True) for p in tqdm(shown, desc="errors", unit="img", leave=False,
                                                           disable=len(shown) < 200)]
        parts.append(f'<div class="cards" data-page-size="{page_size}">{"".join(cards)}</div>')
    parts.append('<h2 id="correct">Correctly classified samples</h2>')
    for cls, sample in correct.items():
        parts.append(f'<h3 id="correct-{esc(cls)}">{esc(cls)}</h3>')
        if sample:
            cards = "".join(card(p, assets, error=False) for p in sample)
            parts.append(f'<div class="cards">{cards}</div>')
        else:
            parts.append('<p class="note">no correctly classified test image of this class.</p>')
    return "\n".join(parts)


def _targets_note(ckpt: dict, classes: list[str]) -> str:
    """'(target words: ...)' when some classes are not words to spot (unknown, silence)."""
    targets = ckpt.get("targets") or openworld.target_classes(classes)
    return f" (target words: {esc(', '.join(targets))})" if len(targets) < len(classes) else ""


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
    body = "\n".join([
        summary_section(inputs, classes, predictions, errors),
        side_by_side(dataset_section(inputs), settings_section(ckpt["render"])),
        training_section(inputs, out),
        test_section(metrics.get("test") or {}, classes, len(predictions)),
        gallery_sections(predictions, errors, shown, correct, assets, page_size)])
    title = f"SpecVision report: {inputs.name}"
    toc = " ".join(f'<a href="#{anchor}">{text}</a>' for anchor, text in TOC)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="{GENERATOR}">\n<title>{esc(title)}</title>\n'
            f'<link rel="icon" href="data:,">\n<style>{CSS}</style>\n</head>\n<body>\n'
            f'<header><h1>{esc(title)}</h1><p class="note">classes: {esc(", ".join(classes))}'
            f'{_targets_note(ckpt, classes)}</p>'
            f'<nav class="toc">{toc}</nav></header>\n<main>\n{body}\n</main>\n<script>{JS}</script>\n'
            f'</body>\n</html>\n')
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

    try:
        inputs = load_inputs(args.model_dir, args.images)
        write_report(args.out, build)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"report for {inputs.name}: {summary['test_images']} test images, {summary['misclassified']} "
          f"misclassified ({summary['errors_shown']} shown)"
          + (f"; {summary['missing_audio']} clip(s) without audio" if summary["missing_audio"] else "")
          + (f"; {summary['missing_images']} missing PNG(s)" if summary["missing_images"] else ""))
    print(args.out / "index.html")
    return 0


if __name__ == "__main__":
    cli.run(main)
