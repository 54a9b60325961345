"""Where the shipped data files (pretrained weights, classifiers) are found, from any working
directory: `data/` beside the package in a source checkout or an editable install, `explorer/data/`
inside an installed wheel (the build copies it there); the environment variable EXPLORER_DATA_DIR
overrides both. `matches_shipped` checks a part of a run taken afresh against such a file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

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


def matches_shipped(fresh, shipped, rtol: float = 1e-5, floor: float = 0.0) -> bool:
    """Whether a part of a run taken afresh is the one a shipped file holds: the same keys, lengths, shapes,
    strings and integers, and floats equal to `rtol` of the largest finite magnitude of each array (NaN
    matches NaN). Not to the last bit: the same float32 network or LAPACK call gives results a few ulps
    apart on another CPU, while a change to a model, a solver, a grid or a seed moves them by far more
    than 1e-5. Numbers that are rounding themselves (a relative gap between two float32 values one rounding
    apart: 6e-8 to 1.2e-7 on one CPU, other bits on another) have no relative precision: those below `floor`
    in magnitude in both files match."""
    if isinstance(shipped, dict):
        return (isinstance(fresh, dict) and fresh.keys() == shipped.keys()
                and all(matches_shipped(fresh[k], shipped[k], rtol, floor) for k in shipped))
    if isinstance(shipped, (list, tuple)) and not isinstance(fresh, np.ndarray):
        return (isinstance(fresh, (list, tuple)) and len(fresh) == len(shipped)
                and all(matches_shipped(a, b, rtol, floor) for a, b in zip(fresh, shipped)))
    if isinstance(shipped, (str, bytes, bool, type(None))) or isinstance(fresh, (str, bytes, bool, type(None))):
        return type(fresh) is type(shipped) and fresh == shipped
    a, b = np.asarray(fresh), np.asarray(shipped)
    if a.shape != b.shape:
        return False
    kinds = {a.dtype.kind, b.dtype.kind}
    if kinds <= set("biu") or not kinds <= set("biuf"):  # integers, or not numbers: exactly
        return bool(np.array_equal(a, b))
    finite = np.abs(b[np.isfinite(b)])
    scale = float(finite.max()) if finite.size else 0.0
    close = np.isclose(a, b, rtol=rtol, atol=rtol * scale, equal_nan=True)
    return bool(np.all(close | ((np.abs(a) < floor) & (np.abs(b) < floor))))
