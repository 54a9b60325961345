"""Small image datasets made locally (nothing fetched at run time), as float32 (N, C, H, W) in [-1, 1].

- digits(): scikit-learn's bundled 8x8 handwritten digits.
- shapes(n, seed): Simple Shapes after "Understanding Hallucinations in Diffusion Models through
  Mode Interpolation" (official generator: locuslab/diffusion-model-hallucination,
  shapes/gen_simple_shapes_dataset.py): three panels side by side; panel 0 may hold only a
  triangle, panel 1 only a square, panel 2 only a pentagon, each present independently with
  probability 0.5 at a uniformly random position inside its panel; images with no shape at all
  are dropped, as there. Theirs are 64x64 (three 21x63 panels); ours are CPU-sized: three
  square panels of `panel` pixels (default 16, image 16x48), shapes scaled to the same fraction
  of the panel width (square side 3/8, triangle side 1/2, pentagon circumradius 1/4).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..foundations.random import as_generator

SHAPES = ("triangle", "square", "pentagon")  # panel j holds only SHAPES[j], left to right


def digits():
    """scikit-learn's 8x8 digits: images (1797, 1, 8, 8) float32 with grey levels 0..16 mapped
    linearly to [-1, 1], and labels (1797,) int64 (fresh copies on every call)."""
    images, labels = _digits()
    return images.copy(), labels.copy()


@lru_cache(maxsize=1)
def _digits():
    """The digits read as sklearn.datasets.load_digits reads them (np.loadtxt of the digits.csv.gz that
    scikit-learn ships, pixels then the label on each row), without importing scikit-learn (about 1 s):
    the same numbers (a test compares them)."""
    import gzip
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the digits dataset is scikit-learn's: install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    images = (data[:, :-1].reshape(-1, 8, 8).astype(np.float32) / 8.0 - 1.0)[:, None]
    return images, data[:, -1].astype(np.int64)


def _polygon_mask(vertices, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies inside the convex polygon (vertices in (x, y) pixel units, any order
    around the boundary)."""
    v = np.asarray(vertices, dtype=np.float64)
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    inside_pos = np.ones((height, width), bool)
    inside_neg = np.ones((height, width), bool)
    for k in range(len(v)):
        (x1, y1), (x2, y2) = v[k], v[(k + 1) % len(v)]
        cross = (x2 - x1) * (yy - y1) - (y2 - y1) * (xx - x1)
        inside_pos &= cross >= -1e-9
        inside_neg &= cross <= 1e-9
    return inside_pos | inside_neg


def _trim(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


@lru_cache(maxsize=None)
def _template(name: str, panel: int) -> np.ndarray:
    if name == "square":  # the paper's 8x8 filled square in a 21-wide panel
        s = round(0.375 * panel)
        return np.ones((s, s), bool)
    if name == "triangle":  # the paper's side-11 equilateral triangle, apex pointing down
        side = round(0.5 * panel)
        h = side * math.sqrt(3) / 2
        height = math.ceil(h - 1e-9)
        return _trim(_polygon_mask([(0, 0), (side, 0), (side / 2, h)], height, side))
    if name == "pentagon":  # the paper's regular pentagon of circumradius 5, one vertex pointing right
        r = 0.25 * panel
        size = math.ceil(2 * r) + 1
        c = size / 2
        verts = [(c + r * math.cos(math.radians(72 * k)), c - r * math.sin(math.radians(72 * k))) for k in range(5)]
        return _trim(_polygon_mask(verts, size, size))
    raise ValueError(f"shape must be one of {SHAPES}, got {name!r}")


def shape_template(name: str, panel: int = 16) -> np.ndarray:
    """The boolean pixel mask (height, width) every instance of shape `name` uses at this panel size."""
    _check_panel(panel)
    return _template(name, int(panel)).copy()


def _check_panel(panel):
    if isinstance(panel, bool) or not float(panel).is_integer() or not 8 <= panel <= 64:
        raise ValueError(f"panel must be an integer panel size in pixels between 8 and 64, got {panel!r}")


def shapes(n: int, seed=0, panel: int = 16, p: float = 0.5, drop_empty: bool = True, margin: int = 1):
    """n Simple Shapes images: (n, 1, panel, 3 panel) float32, background -1, shapes +1, and info.

    Panel j holds SHAPES[j] with probability p, its bounding box placed uniformly at integer
    offsets that keep it `margin` pixels inside the panel. With drop_empty (the paper's set)
    images with no shape are redrawn, so each shape's presence rate is p / (1 - (1-p)^3)
    (4/7 for p = 0.5). info: "present" (n, 3) bool, "top_left" (n, 3, 2) int (row, column in
    the image; -1 where absent), "size" (3, 2) (height, width of each template), "shapes",
    "panel" (the panel width). Same arguments, same images (numpy Generator from seed)."""
    if isinstance(n, bool) or not float(n).is_integer() or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    _check_panel(panel)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    n, panel = int(n), int(panel)
    templates = [_template(name, panel) for name in SHAPES]
    if isinstance(margin, bool) or not float(margin).is_integer() or margin < 0 or any(
            max(t.shape) + 2 * margin > panel for t in templates):
        raise ValueError(f"margin must be a non-negative integer that leaves room for the shapes, got {margin!r}")
    rng = as_generator(seed)
    present = np.zeros((0, 3), bool)
    while len(present) < n:  # draw presence in blocks; redraw empty images when drop_empty
        block = rng.random((max(n - len(present), 16), 3)) < p
        if drop_empty:
            block = block[block.any(1)]
        present = np.concatenate([present, block[: n - len(present)]])
    top_left = np.full((n, 3, 2), -1, np.int64)
    images = np.full((n, 1, panel, 3 * panel), -1.0, np.float32)
    for j, tpl in enumerate(templates):
        h, w = tpl.shape
        rows = rng.integers(margin, panel - margin - h + 1, size=n)
        cols = rng.integers(margin, panel - margin - w + 1, size=n) + j * panel
        for i in np.flatnonzero(present[:, j]):
            top_left[i, j] = rows[i], cols[i]
            images[i, 0, rows[i]:rows[i] + h, cols[i]:cols[i] + w][tpl] = 1.0
    info = {"present": present, "top_left": top_left, "size": np.array([t.shape for t in templates]),
            "shapes": SHAPES, "panel": panel}
    return images, info
