"""What the HTML pages share (the dataset audit, the model report): one Jinja2 environment over
preprocess/templates (autoescaped, strict about missing values) and the stylesheet each page folder
gets, so the pages look like one product."""
from __future__ import annotations

import shutil
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).with_name("templates")
STYLESHEET = "style.css"


def environment(**globals_) -> jinja2.Environment:
    """The templates, with `globals_` (e.g. generator=...) visible in every one."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(globals_)
    return env


def copy_stylesheet(folder: Path) -> None:
    shutil.copyfile(TEMPLATES / STYLESHEET, folder / STYLESHEET)
