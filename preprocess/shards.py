"""Rendering one dataset from several processes or machines into one output tree on shared storage.

    python -m preprocess ... --out OUT --shard K/N     (K = 1..N; one per process or machine, any order)
    python -m preprocess --merge-shards N --out OUT    (once, after all N shards finished)

Shard K renders the clips whose stable hash (SHA-256 of the clip's path below the audio root) falls
in slot K of N: a deterministic slice of about 1/N of the clips that does not move when clips are
added or removed. PNG paths are computed from the whole clip list first (name collisions are
resolved the same way as in a one-process run), so every PNG lands where a one-process run puts it.

How the shards stay out of each other's way:
- the folder lock OUT/.preprocess.lock is taken *shared* by shards and *exclusive* by one-process
  runs and by the merge: shards run together, but never beside a one-process run or a merge;
- each shard also holds OUT/.shards/K-of-N.lock, so a shard cannot run twice at the same time;
- render.json is the same for every shard (written atomically, checked like any run's);
- each shard stages its temp files in OUT/.staging/shard-K-of-N/ and writes only its manifest part,
  OUT/.shards/manifest-K-of-N.csv, then OUT/.shards/manifest-K-of-N.json (its completion record:
  counts, settings hash, and a digest of the whole clip list);
- no shard deletes anything outside its slice: stale PNGs are removed by the merge, which knows
  every clip. The merge checks that all N parts exist and were made from the same clip list and
  settings, writes manifest.csv with the rows in the one-process order (by source) and deletes the
  parts: the result is the same manifest and the same PNGs, byte for byte, as one process makes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

from preprocess.cli import SpecVisionError
from preprocess.atomic import atomic_write_text

PARTS_DIR = ".shards"
SHARD_SALT = b"specvision-shard-v1:"   # changing it moves every clip to another shard


class ShardError(SpecVisionError):
    """A shard spec or the set of parts is unusable; the message says why."""


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int   # 1..count
    count: int

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"


def parse_shard(text: str) -> Shard:
    """'K/N' with 1 <= K <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ShardError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 1/4")
    return Shard(int(match[1]), int(match[2]))


def shard_of(source: str, count: int) -> int:
    """The shard (1..count) that renders the clip with this source path."""
    digest = hashlib.sha256(SHARD_SALT + source.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def select(shard: Shard, clips: list, names: list[str]) -> tuple[list, list[str]]:
    """This shard's clips and their PNG names (computed on the whole list before)."""
    picked = [(clip, name) for clip, name in zip(clips, names) if shard_of(clip.source, shard.count) == shard.index]
    return [clip for clip, _ in picked], [name for _, name in picked]


def clip_list_digest(clips: list) -> str:
    """What every shard must agree on: the whole clip list with labels and splits."""
    digest = hashlib.sha256()
    for clip in clips:
        digest.update(f"{clip.source}\t{clip.label}\t{clip.split}\n".encode("utf-8"))
    return digest.hexdigest()


def parts_dir(out: Path) -> Path:
    return out / PARTS_DIR


def part_csv(out: Path, shard: Shard) -> Path:
    return parts_dir(out) / f"manifest-{shard.name}.csv"


def part_record(out: Path, shard: Shard) -> Path:
    return parts_dir(out) / f"manifest-{shard.name}.json"


def lock_path(out: Path, shard: Shard) -> Path:
    return parts_dir(out) / f"{shard.name}.lock"


def write_record(out: Path, shard: Shard, record: dict) -> None:
    """The part's completion record, written after its CSV: a part without it is unfinished."""
    atomic_write_text(part_record(out, shard), json.dumps({"shard": shard.index, "of": shard.count,
                                                           **record}, indent=1) + "\n")


def finished_parts(out: Path, count: int, settings_hash: str) -> list[tuple[Shard, dict]]:
    """Every part of an N-way run, checked to be complete and consistent, or ShardError naming the problem."""
    parts, missing = [], []
    for index in range(1, count + 1):
        shard = Shard(index, count)
        if not part_record(out, shard).is_file() or not part_csv(out, shard).is_file():
            missing.append(shard.name)
            continue
        try:
            parts.append((shard, json.loads(part_record(out, shard).read_text())))
        except (OSError, ValueError) as err:
            raise ShardError(f"{part_record(out, shard)}: unreadable ({err})") from None
    if missing:
        others = sorted(p.name for p in parts_dir(out).glob("manifest-*.json")) if parts_dir(out).is_dir() else []
        raise ShardError(f"{out}: shards {', '.join(missing)} have not finished (no part in "
                         f"{parts_dir(out)}; found: {', '.join(others) or 'none'}); run them with "
                         f"--shard K/{count}, then merge")
    digests = {record.get("clip_list") for _, record in parts}
    if len(digests) > 1:
        raise ShardError(f"{out}: the shards saw different clip lists (the audio changed between them, "
                         "or other options); run all shards again, then merge")
    wrong = [shard.name for shard, record in parts if record.get("settings_hash") != settings_hash]
    if wrong:
        raise ShardError(f"{out}: shards {', '.join(wrong)} used other render settings than render.json")
    return parts
