"""How good is a sample: against the reference path, and against the target."""

from __future__ import annotations

import numpy as np

from ..foundations.mixture import GaussianMixture
from ..foundations.random import as_generator


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def endpoint_error(x, x_ref) -> float:
    """Root-mean-square over particles of the distance ||x_i - x_ref_i||."""
    x, x_ref = _np(x), _np(x_ref)
    if x.shape != x_ref.shape:
        raise ValueError(f"x and x_ref must have the same shape, got {x.shape} and {x_ref.shape}")
    diff = (x - x_ref).reshape(len(x), -1)
    return float(np.sqrt(np.mean(np.sum(diff * diff, axis=1))))


def path_error(traj, ref) -> np.ndarray:
    """RMS distance to the reference at every grid time, (n_steps + 1,); both on the same grid."""
    if not np.allclose(traj.t, ref.t, rtol=1e-12, atol=0):
        raise ValueError("path_error needs both trajectories on the same time grid")
    return np.array([endpoint_error(a, b) for a, b in zip(traj.x, ref.x)])


def sliced_wasserstein(x, y, n_projections: int = 128, rng=0) -> float:
    """Sliced 2-Wasserstein distance: W2 between 1-D projections, averaged over random
    directions (exact W2 in one dimension). Unequal sample sizes are matched by quantiles."""
    x, y = _np(x).reshape(len(x), -1), _np(y).reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    d = x.shape[1]
    if d == 1:
        dirs = np.ones((1, 1))
    else:
        dirs = as_generator(rng).standard_normal((n_projections, d))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    # (projections, points) rows: sorting contiguous rows is several times faster than columns
    px, py = np.sort(dirs @ x.T, axis=1), np.sort(dirs @ y.T, axis=1)
    q = (np.arange(max(len(x), len(y))) + 0.5) / max(len(x), len(y))
    qx = _quantiles(px, q)
    qy = _quantiles(py, q)
    return float(np.sqrt(np.mean((qx - qy) ** 2)))


def _quantiles(sorted_rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    n = sorted_rows.shape[1]
    if n == len(q):
        return sorted_rows
    idx = np.minimum((q * n).astype(int), n - 1)
    return sorted_rows[:, idx]


def energy_distance(x, y, max_n: int = 2000, rng=0) -> float:
    """Energy distance sqrt(2 E|X - Y| - E|X - X'| - E|Y - Y'|), on at most max_n points of each."""
    rng = as_generator(rng)
    x, y = _np(x).reshape(len(x), -1), _np(y).reshape(len(y), -1)
    if len(x) > max_n:
        x = x[rng.choice(len(x), max_n, replace=False)]
    if len(y) > max_n:
        y = y[rng.choice(len(y), max_n, replace=False)]

    def mean_dist(a, b):
        sq = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2 * a @ b.T
        return np.sqrt(np.clip(sq, 0, None)).mean()

    value = 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
    return float(np.sqrt(max(value, 0.0)))


def nll(x, target: GaussianMixture) -> float:
    """Mean negative log-likelihood of the samples under the exact target density."""
    return float(-np.mean(target.log_prob(_np(x))))


def mode_coverage(x, target: GaussianMixture) -> np.ndarray:
    """Fraction of samples assigned to each component (by largest posterior probability), (K,)."""
    x = _np(x)
    if len(x) == 0:
        return np.zeros(target.n_components)
    comp = np.argmax(target.responsibilities(x), axis=1)
    return np.bincount(comp, minlength=target.n_components) / len(x)


def coverage_error(x, target: GaussianMixture) -> float:
    """Total-variation distance between the per-mode mass of the samples and the weights."""
    return float(0.5 * np.abs(mode_coverage(x, target) - target.weights).sum())


def distance_to_target(x, target: GaussianMixture, n_ref: int | None = None, n_projections: int = 64, rng=0) -> float:
    """Sliced W2 between the samples and n_ref fresh draws from the target
    (default: four times as many as the samples, between 5,000 and 20,000)."""
    rng = as_generator(rng)
    if n_ref is None:
        n_ref = int(np.clip(4 * len(x), 5000, 20000))
    ref = target.sample(n_ref, rng)
    return sliced_wasserstein(x, ref, n_projections=n_projections, rng=rng)


def summary(traj, target: GaussianMixture, ref=None, rng=0) -> dict:
    """The numbers a metrics panel shows for one run."""
    x = _np(traj.x[-1])
    out = {"nfe": traj.nfe, "wall_time": traj.wall_time, "diverged_at": traj.diverged_at}
    if traj.diverged:
        return out
    out["sliced_w2"] = distance_to_target(x, target, rng=rng)
    out["nll"] = nll(x, target)
    out["coverage_tv"] = coverage_error(x, target)
    if ref is not None:
        out["error_vs_reference"] = endpoint_error(x, ref.x[-1])
    return out
