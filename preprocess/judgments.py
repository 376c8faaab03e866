"""The label check's file: which clips a model contradicts, for the audit page to show.

    python -m train.suspects images/ --model models/NAME/model.pt --out judgments.json   # writes it
    python -m preprocess.audit images/ --judgments judgments.json                        # reads it

The check trains and runs models, so it lives in train/; the audit only reads its answers, so audio ->
image code never imports model code. This module is the one owner of the format. The file names
each judged PNG (its manifest path), never a row number, and carries the render settings' digest: a
file made for other images is refused, and an entry naming no listed PNG is left out with a note.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from preprocess.atomic import atomic_write_text
from preprocess.audit_data import AuditError, Dataset

FORMAT = "specvision-label-check-v1"
MAX_BYTES = 1 << 30   # a file of 105k judged clips is ~20 MB: anything near this is not ours


def write(path: Path, data: Dataset, suspects: dict[int, dict], info: dict) -> None:
    payload = {"format": FORMAT, "settings": data.settings.digest(), "images": str(data.images),
               "model": info, "suspects": {data.rows[i]["png"]: entry for i, entry in suspects.items()}}
    atomic_write_text(Path(path), json.dumps(payload, indent=0))


def _entry(value) -> dict | None:
    """One judged clip as the audit uses it, or None if the entry is malformed."""
    if not isinstance(value, dict):
        return None
    predicted, confidence, how, rank = (value.get(k) for k in ("predicted", "confidence", "how", "rank"))
    speaker = value.get("speaker")
    if not (isinstance(predicted, str) and isinstance(how, str) and isinstance(rank, int)
            and isinstance(confidence, (int, float)) and 0.0 <= confidence <= 1.0
            and (speaker is None or (isinstance(speaker, (int, float)) and math.isfinite(speaker)))):
        return None
    entry = {"predicted": predicted, "confidence": float(confidence), "how": how, "rank": rank}
    if speaker is not None:
        entry["speaker"] = float(speaker)
    return entry


def _info(value) -> dict | None:
    """The model description the page shows (name, arch, threshold, how each split was judged)."""
    if not isinstance(value, dict):
        return None
    name, arch, threshold, splits = (value.get(k) for k in ("name", "arch", "threshold", "splits"))
    if not (isinstance(name, str) and isinstance(arch, str) and isinstance(threshold, (int, float))
            and isinstance(splits, list) and all(isinstance(s, dict) for s in splits)):
        return None
    rows = [{"split": str(s.get("split", "")), "how": str(s.get("how", "")), "judged": int(s.get("judged", 0)),
             "suspects": int(s.get("suspects", 0))} for s in splits
            if isinstance(s.get("judged", 0), int) and isinstance(s.get("suspects", 0), int)]
    notes = value.get("notes", [])
    return {"name": name, "arch": arch, "threshold": float(threshold), "splits": rows,
            "notes": [n for n in notes if isinstance(n, str)] if isinstance(notes, list) else []}


def read(path: Path, data: Dataset) -> tuple[dict[int, dict], dict]:
    """-> ({row index: {"predicted", "confidence", "how", "rank"[, "speaker"]}}, model info with "notes")."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise AuditError(f"{path}: {path.stat().st_size} bytes, not a label-check file")
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise AuditError(f"{path}: unreadable label-check file ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AuditError(f"{path}: not a label-check file (python -m train.suspects writes one)")
    if payload.get("settings") != data.settings.digest():
        raise AuditError(f"{path}: made for images rendered with other settings than "
                         f"{data.images / 'render.json'}; its judgments would mean nothing here")
    info, entries = _info(payload.get("model")), payload.get("suspects")
    if info is None or not isinstance(entries, dict):
        raise AuditError(f"{path}: malformed label-check file (model or suspects)")
    row_of = {row["png"]: i for i, row in enumerate(data.rows)}
    suspects, unknown, malformed = {}, 0, 0
    for png, value in entries.items():
        entry = _entry(value)
        if png not in row_of:
            unknown += 1
        elif entry is None:
            malformed += 1
        else:
            suspects[row_of[png]] = entry
    notes = info["notes"]
    if unknown:
        notes.append(f"{unknown} judged clip(s) in {path.name} are not in this manifest: left out.")
    if malformed:
        notes.append(f"{malformed} malformed entr(ies) in {path.name}: left out.")
    return suspects, {**info, "notes": notes}
