"""An images folder as `python -m preprocess` leaves it, and the one reader of its render settings.

    images/<split>/<class>/<stem>.png   split in SPLITS; class: a word, or UNKNOWN / SILENCE
    images/render.json                  {"settings", "settings_hash", "source"}: how the PNGs were made
    images/manifest.csv                 one row per clip (MANIFEST_FIELDS): where it came from, its split,
                                        label, PNG, status, and the per-clip flags the audit shows

Every stage that needs the render settings gets them from `render_settings` (an images folder or a
model file; train.checkpoint copies render.json's settings into model.pt as "render") or, when it
also needs the source record, from `read_render_record`.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from preprocess import flags
from preprocess.atomic import atomic_write_text
from preprocess.cli import SpecVisionError
from preprocess.render import RenderSettings

SPLITS = ("train", "val", "test")
UNKNOWN = "unknown"              # class folder names of the two open-world classes (preprocess/openworld.py)
SILENCE = "silence"
EXTRA_CLASSES = (UNKNOWN, SILENCE)
RENDER_JSON = "render.json"
MANIFEST = "manifest.csv"
# size, mtime_ns: the clip file's stat (a re-run skips a clip whose stat is unchanged without reading it);
# flags.MANIFEST_FIELDS: what the audit needs to know of each clip (flags, length, level, image sketch)
MANIFEST_FIELDS = ("source", "sha256", "split", "label", "png", "status", "reason", "size", "mtime_ns") \
    + flags.MANIFEST_FIELDS


class SettingsError(SpecVisionError, ValueError):
    """Render settings that cannot be read; the message names the file and the reason."""


def read_render_record(images_dir: str | os.PathLike) -> dict:
    """images/render.json -> its dict, with "settings" checked by RenderSettings."""
    path = Path(images_dir) / RENDER_JSON
    if not path.is_file():
        raise SettingsError(f"{path}: missing; it records how the PNGs were rendered so a new clip can be "
                            f"rendered identically at prediction time (`python -m preprocess` makes it)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        RenderSettings.from_dict(record["settings"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SettingsError(f"{path}: not a valid render.json ({err!r})") from None
    return record


def write_render_record(images_dir: str | os.PathLike, settings: RenderSettings, source: dict) -> None:
    atomic_write_text(Path(images_dir) / RENDER_JSON, json.dumps(
        {"settings": settings.to_dict(), "settings_hash": settings.digest(), "source": source},
        indent=2) + "\n")


def render_settings(path: str | os.PathLike) -> RenderSettings:
    """The render settings of an images folder (its render.json) or of a model file (model.pt)."""
    path = Path(path)
    if path.is_dir():
        return RenderSettings.from_dict(read_render_record(path)["settings"])
    if not path.is_file():
        raise SettingsError(f"{path}: no such images folder or model file")
    import torch  # only for model files: reading images folders stays light

    try:
        render = torch.load(path, map_location="cpu", weights_only=True)["render"]
        return RenderSettings.from_dict(render)
    except Exception as err:  # unpickling and zip errors come in many types
        raise SettingsError(f"{path}: no render settings readable from this model file ({err})") from None


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_manifest(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # rows as lists: twice as fast as DictWriter
    writer.writerow(MANIFEST_FIELDS)
    writer.writerows([row.get(field, "") for field in MANIFEST_FIELDS] for row in rows)
    atomic_write_text(path, buffer.getvalue())
