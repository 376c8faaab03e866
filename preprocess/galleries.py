"""The audit page's tiles (one per rendered clip: its flags, and the label check's verdict) and
galleries (per split, class and flag; suspicious first)."""
from __future__ import annotations

import collections
import dataclasses
import math
from pathlib import Path

from preprocess import flags, openworld
from preprocess.audit_data import Dataset, duplicate_audio, duplicate_images

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
