"""Files a static page links or copies: the audit's and the report's one helper.

Paths come from data (manifest.csv, render.json, metrics.json) that a crafted images or model folder
controls, so a path is used only when it is relative, stays inside its folder once links are resolved,
and names a regular file; a clip only when its suffix is an audio type.
"""
from __future__ import annotations

from pathlib import Path

import soundfile as sf

from preprocess import openworld

AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}


def inside(rel: str) -> bool:
    """A relative path that stays inside its folder (checked on the text, before the disk is asked)."""
    path = Path(rel or "")
    return bool(rel) and not path.is_absolute() and ".." not in path.parts


def contained_file(folder: Path, rel: str, links_inside: bool = False) -> Path | None:
    """folder/rel if `rel` is a relative path that stays inside `folder` and names a regular file.

    A link in the folder is followed (audio roots made of links to a dataset are common), but what it
    leads to must still be a file, and with `links_inside` a file inside `folder` (an images folder that
    preprocess wrote holds no links); callers that copy also check what the file is."""
    if not inside(rel):
        return None
    try:
        base = Path(folder).resolve(strict=True)
        path = base / rel
        if base not in path.parents or not path.is_file():
            return None
        if links_inside and base not in path.resolve().parents:
            return None
    except (OSError, RuntimeError):
        return None
    return path


def source_clip(source: str, render_record: dict | None, images: Path, audio_root: Path | None) -> Path | None:
    """The audio file of a manifest row's `source`: under the audio root, or for the open-world classes
    under their own root (silence crops in IMAGES/.openworld, --unknown-root clips); None when it is
    not a file of an audio type inside that root."""
    root, rel = openworld.audio_location(source, render_record, images) or (audio_root, source)
    if root is None or Path(rel).suffix.lower() not in AUDIO_TYPES:
        return None
    return contained_file(root, rel)


def audio_type(path: Path) -> str:
    return AUDIO_TYPES.get(path.suffix.lower(), "audio/wav")


def is_audio(path: Path) -> bool:
    """libsndfile can read the header: what is copied into a page is audio, not any file."""
    try:
        sf.info(str(path))
        return True
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError):
        return False
