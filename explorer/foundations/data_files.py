"""Where the shipped data files (pretrained weights, classifiers) are found, from any working
directory: `data/` beside the package in a source checkout or an editable install, `explorer/data/`
inside an installed wheel (the build copies it there); the environment variable EXPLORER_DATA_DIR
overrides both."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # explorer/ (this file is explorer/foundations/data_files.py)


def data_dir() -> Path:
    """The folder that holds the shipped `.pt` files: $EXPLORER_DATA_DIR, else the first of
    explorer/data (installed wheel) and ../data (source tree) that exists."""
    override = os.environ.get("EXPLORER_DATA_DIR")
    if override:
        return Path(override).expanduser().resolve()
    for candidate in (_PACKAGE / "data", _PACKAGE.parent / "data"):
        if candidate.is_dir():
            return candidate
    return _PACKAGE.parent / "data"  # a source tree whose data/ is missing: errors name this path


DATA_DIR = data_dir()
