"""Rectified flow and reflow (Liu, Gong and Liu, "Flow Straight and Fast"), exactly in 1D, and the
transport cost of a coupling against the optimal one (computed by POT, a kept optimal-transport library).

Coordinates are the explorer's rectified-flow schedule: x_t = (1 - t) x0 + t z, z ~ N(0, I) at t = 1, data at 0.
1-rectified flow is that schedule's probability-flow ODE, whose velocity E[z - x0 | x_t] is the exact
mixture's (ex.AnalyticModel). Its flow map T1: z -> x0 couples noise and data; reflow trains the next flow
on the straight lines between the coupled pairs, with velocity E[z - T1(z) | x_t] on x_t = (1 - t) T1(z) + t z.

In 1D every ODE flow map is increasing, so T1 is the monotone rearrangement F_0^{-1}(Phi(z)) (F_0 the target's
CDF), which is also the optimal W2 map, and no two lines (z, T1(z)) cross: x_t determines its line, and
the 2-rectified flow's velocity is T1's displacement exactly, constant along each line. Its Euler steps
land on T1(z) at any number of steps, one included, to round-off. Reflow1D finds the line through x_t by
bisection on x0, with z = S(x0) = Phi^{-1}(F_0(x0)) in closed form, so nothing is tabulated.
"""

from __future__ import annotations

import math

import numpy as np

from ..foundations.analytic import DenoiserModel
from ..foundations.mixture import GaussianMixture
from ..foundations.schedules import get as get_schedule


def _ndtr(z):
    """The standard normal CDF (scipy.special, imported on first use: 0.2 s off `import explorer`)."""
    from scipy.special import ndtr

    return ndtr(z)


def _ndtri(p):
    """Its inverse."""
    from scipy.special import ndtri

    return ndtri(p)


def mixture_cdf(target: GaussianMixture, x) -> np.ndarray:
    """F_0(x) = sum_k w_k Phi((x - mu_k) / s_k) of a 1D mixture, for x of any shape."""
    if target.dim != 1:
        raise ValueError(f"target must be one-dimensional, got dim {target.dim}")
    x = np.asarray(x, dtype=np.float64)
    mu, sd = target.means[:, 0], np.sqrt(target.covs[:, 0, 0])
    return np.sum(target.weights * _ndtr((x[..., None] - mu) / sd), axis=-1)


def noise_of(target: GaussianMixture, x0) -> np.ndarray:
    """S(x0) = Phi^{-1}(F_0(x0)), the noise the monotone coupling pairs with x0 (upper tail through the
    survival function, so that it keeps its precision there)."""
    x0 = np.asarray(x0, dtype=np.float64)
    mu, sd = target.means[:, 0], np.sqrt(target.covs[:, 0, 0])
    lower = np.sum(target.weights * _ndtr((x0[..., None] - mu) / sd), axis=-1)
    upper = np.sum(target.weights * _ndtr((mu - x0[..., None]) / sd), axis=-1)
    with np.errstate(divide="ignore"):
        return np.where(lower < 0.5, _ndtri(lower), -_ndtri(upper))


def line_end(target: GaussianMixture, x, t: float, iters: int = 200) -> np.ndarray:
    """The x0 whose line x_t = (1 - t) x0 + t S(x0) passes through x at time t (t = 1: x0 = T(z) for z = x).

    (1 - t) x0 + t S(x0) increases in x0, so bisection finds it; it stops when the bracket no longer shrinks
    in float64."""
    if target.dim != 1:
        raise ValueError(f"target must be one-dimensional, got dim {target.dim}")
    x = np.asarray(x, dtype=np.float64)
    t = float(t)
    if t == 0.0:  # the line's end is x itself (and 0 * S(x0) would be NaN where S is infinite)
        return x.copy()
    mu, sd = target.means[:, 0], np.sqrt(target.covs[:, 0, 0])
    span = float(np.max(np.abs(x))) if x.size else 0.0
    lo = np.full(x.shape, float(np.min(mu - 40 * sd)) - span)
    hi = np.full(x.shape, float(np.max(mu + 40 * sd)) + span)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if np.all((mid == lo) | (mid == hi)):
            break
        with np.errstate(invalid="ignore"):
            below = (1.0 - t) * mid + t * noise_of(target, mid) < x
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def monotone_map(target: GaussianMixture, z) -> np.ndarray:
    """T(z) = F_0^{-1}(Phi(z)), the increasing (and W2-optimal) map from N(0, 1) to the 1D target."""
    return line_end(target, z, 1.0)


class Reflow1D(DenoiserModel):
    """The 2-rectified flow of a 1D mixture as a model on the rectified-flow schedule.

    denoise(x, t) is the x0 on the one straight line (T1(z), z) through x at time t: the coupling is
    deterministic, so E[x0 | x_t] is that x0, found by bisection (line_end); eps is its z = S(x0) and the
    velocity z - x0, constant along each line. Sampled with ex.sample from z at t = 1."""

    dim = 1

    def __init__(self, target: GaussianMixture):
        if not isinstance(target, GaussianMixture) or target.dim != 1:
            raise ValueError("target must be a one-dimensional GaussianMixture")
        self.target = target
        self.schedule = get_schedule("rectified-flow")

    def denoise(self, x, t):
        return line_end(self.target, x, float(t))

    def eps(self, x, t):
        return noise_of(self.target, self.denoise(x, t))

    def velocity(self, x, t):
        """dx/dt = z - T1(z) on the line through x: constant in t."""
        x0 = self.denoise(x, t)
        return noise_of(self.target, x0) - x0


def straightness(traj, velocity) -> float:
    """Liu et al.'s straightness S = E int_0^1 ||(X_1 - X_0) - v(X_t, t)||^2 dt on the trajectory's grid
    (v evaluated at the recorded states, trapezoid rule in t; 0 for straight paths)."""
    t = np.asarray(traj.t)
    x = np.asarray(traj.x)
    chord = (x[0] - x[-1]) / (t[0] - t[-1])
    vals = np.array([np.mean(np.sum((velocity(x[i], t[i]) - chord) ** 2, axis=-1)) for i in range(len(t))])
    return float(np.sum(0.5 * (vals[1:] + vals[:-1]) * np.abs(np.diff(t))) / abs(t[0] - t[-1]))


def coupling_cost(x, y) -> float:
    """E ||x_i - y_i||^2 of the paired samples."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must be paired (N, D) arrays, got {x.shape} and {y.shape}")
    return float(np.mean(np.sum((x - y) ** 2, axis=1)))


def optimal_cost(x, y) -> float:
    """The optimal W2^2 between the empirical measures of x and y (uniform weights), by POT's exact
    network-simplex solver (ot.emd2) on the squared Euclidean cost. In one dimension with as many points on
    each side the optimal plan pairs the sorted points (the monotone rearrangement, optimal for any convex cost),
    so that cost is taken directly: the same number to round-off (a test compares it with POT), without
    importing POT (about 1.5 s, with scikit-learn and pandas behind it)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (N, D) and (M, D) arrays, got {x.shape} and {y.shape}")
    if x.shape[1] == 1 and len(x) == len(y) and len(x):
        return float(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
    from .pot import pot

    ot = pot()
    a, b = np.full(len(x), 1.0 / len(x)), np.full(len(y), 1.0 / len(y))
    return float(ot.emd2(a, b, ot.dist(x, y, metric="sqeuclidean"), numItermax=10_000_000))


def transport_report(z, x) -> dict:
    """The coupling (z_i, x_i)'s cost, the optimal cost between the same two point sets, and their ratio
    (1 for an optimal coupling; the excess is what straighter, reflowed paths can still save)."""
    cost, best = coupling_cost(z, x), optimal_cost(z, x)
    return {"cost": cost, "optimal": best, "ratio": cost / best if best > 0 else math.nan}
