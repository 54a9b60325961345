"""Preset Gaussian-mixture targets, 1D and 2D.

Each preset is a function of a few keyword parameters (with defaults), so that
pages can offer them as controls: ex.targets.get("gmm-2d-ring8", radius=4).
"""

from __future__ import annotations

import inspect

import numpy as np

from .mixture import GaussianMixture


def _positive(name, value):
    value = float(value)
    if not value > 0 or not np.isfinite(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def _count(name, value, low=1):
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def gmm_1d_3modes(std: float = 0.05) -> GaussianMixture:
    """Three equal modes at 1, 2, 3 (the mode-interpolation paper's 1D set-up)."""
    return GaussianMixture([[1.0], [2.0], [3.0]], np.full(3, _positive("std", std) ** 2))


def gmm_1d_asym(separation: float = 3.0, weight: float = 0.75) -> GaussianMixture:
    """Two unequal modes: a narrow heavy one and a wide light one, `separation` apart."""
    separation = _positive("separation", separation)
    if not 0 < weight < 1:
        raise ValueError(f"weight must lie in (0, 1), got {weight!r}")
    return GaussianMixture(
        [[-separation / 3], [2 * separation / 3]], np.array([0.15, 0.6]) ** 2, [weight, 1 - weight]
    )


def gmm_2d_grid25(spacing: float = 2.0, std: float = 0.15) -> GaussianMixture:
    """A 5 x 5 grid of equal isotropic modes, `spacing` apart, centred at 0."""
    spacing = _positive("spacing", spacing)
    c = (np.arange(5) - 2) * spacing
    means = np.stack(np.meshgrid(c, c, indexing="ij"), axis=-1).reshape(-1, 2)
    return GaussianMixture(means, np.full(25, _positive("std", std) ** 2))


def gmm_2d_ring8(radius: float = 3.0, std: float = 0.2, n_modes: int = 8) -> GaussianMixture:
    """n_modes equal isotropic modes evenly placed on a circle."""
    n = _count("n_modes", n_modes)
    angle = 2 * np.pi * np.arange(n) / n
    means = _positive("radius", radius) * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return GaussianMixture(means, np.full(n, _positive("std", std) ** 2))


def gmm_2d_two_aniso(separation: float = 5.0, elongation: float = 8.0) -> GaussianMixture:
    """Two well-separated modes, each stretched along a diagonal (opposite diagonals)."""
    half = _positive("separation", separation) / 2
    long_std, short_std = 0.8, 0.8 / _positive("elongation", elongation)
    covs = []
    for angle in (np.pi / 4, -np.pi / 4):
        u = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        covs.append(u @ np.diag([long_std**2, short_std**2]) @ u.T)
    return GaussianMixture([[-half, 0.0], [half, 0.0]], np.array(covs), [0.5, 0.5])


def gmm_2d_checkerboard(cells: int = 4, cell_size: float = 1.5, std: float = 0.2) -> GaussianMixture:
    """The dark squares of a cells x cells board, each filled by a 2 x 2 patch of modes."""
    n, size = _count("cells", cells, 2), _positive("cell_size", cell_size)
    offsets = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]]) * size / 4
    means = []
    for i in range(n):
        for j in range(n):
            if (i + j) % 2 == 0:
                centre = (np.array([i, j]) - (n - 1) / 2) * size
                means.extend(centre + offsets)
    means = np.array(means)
    return GaussianMixture(means, np.full(len(means), _positive("std", std) ** 2))


_PRESETS = {
    "gmm-1d-3modes": gmm_1d_3modes,
    "gmm-1d-asym": gmm_1d_asym,
    "gmm-2d-grid25": gmm_2d_grid25,
    "gmm-2d-ring8": gmm_2d_ring8,
    "gmm-2d-two-aniso": gmm_2d_two_aniso,
    "gmm-2d-checkerboard": gmm_2d_checkerboard,
}


def names() -> list[str]:
    """Names of every preset target."""
    return list(_PRESETS)


def params(name: str) -> dict:
    """A preset's parameters and their defaults."""
    fn = _lookup(name)
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()}


def describe(name: str) -> str:
    return (_lookup(name).__doc__ or "").strip()


def get(name: str, **params) -> GaussianMixture:
    """The preset called name, with any of its parameters changed."""
    fn = _lookup(name)
    known = set(inspect.signature(fn).parameters)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"target {name!r} has no parameter {', '.join(unknown)}; its parameters: {sorted(known)}")
    return fn(**params)


def _lookup(name):
    try:
        return _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; choose from {names()}") from None


def from_text(text: str, dim: int) -> GaussianMixture:
    """A mixture from text, one mode a line: `x [y], std[, weight]`, e.g. "1.0, 0.05" in 1D
    or "0, 0, 0.2, 1" in 2D. Blank lines and lines starting with # are skipped."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        try:
            values = [float(v) for v in line.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"modes, line {number}: {line!r} is not a list of numbers") from None
        if len(values) not in (dim + 1, dim + 2):
            raise ValueError(
                f"modes, line {number}: expected {dim} coordinate(s), a std and an optional weight, got {line!r}"
            )
        rows.append(values if len(values) == dim + 2 else values + [1.0])
    if not rows:
        raise ValueError("modes: give at least one mode")
    rows = np.array(rows)
    if np.any(rows[:, dim] <= 0):
        raise ValueError("modes: every std must be positive")
    return GaussianMixture(rows[:, :dim], rows[:, dim] ** 2, rows[:, dim + 1])


def to_text(gm: GaussianMixture) -> str:
    """The text form read by from_text (isotropic part: the largest std of each mode)."""
    lines = []
    for mean, std, w in zip(gm.means, gm.stds(), gm.weights):
        lines.append(", ".join(f"{v:g}" for v in (*mean, std, w)))
    return "\n".join(lines)
