"""What the audit reads and the checks it makes over the whole dataset.

    data = load_dataset(images, audio_root)   # render.json + manifest.csv (rendered rows only)
    fill_missing_records(data)                # per-clip flags an older preprocess did not store
    duplicate_audio(rows), duplicate_images(rows)   # leaks and label conflicts between splits/classes

The manifest is data, never trusted as a path: a PNG or clip path that leaves its folder is ignored.
"""
from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from preprocess import assets, flags
from preprocess.cli import SpecVisionError
from preprocess.render import AudioError, RenderSettings, load_audio
from preprocess.sources import SPLITS

DUPLICATE_COSINE = 0.995     # image sketches this similar are near-duplicates (distinct real clips: < 0.992)
SKETCH_CHUNK = 2048          # rows per block of the cross-split similarity product (bounds memory)


class AuditError(SpecVisionError):
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
    ok = [r for r in rows if r["status"] == "ok" and assets.inside(r["png"])]
    if not ok:
        raise AuditError(f"{images / 'manifest.csv'}: no rendered images listed")
    if audio_root is None:
        root = (render.get("source") or {}).get("root")
        audio_root = Path(root) if root else None
    return Dataset(images, settings, render, ok, len(rows) - len(ok), audio_root)


def clip_path(data: Dataset, source: str) -> Path | None:
    """A manifest source's audio file (preprocess/assets.py: never outside its root)."""
    return assets.source_clip(source, data.render, data.images, data.audio_root)


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
