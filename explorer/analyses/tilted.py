"""Classifier-free guidance against the distribution it is said to sample.

CFG with scale w (ex.guidance.CFGModel: D_w = (1 + w) D(x | c) - w D(x), w = 0 the conditional model)
follows the score (1 + w) grad log p_t(x | c) - w grad log p_t(x). At t = 0 that is the score of

    p_w(x)  proportional to  p(x | c)^(1 + w) p(x)^(-w) = p(x | c) r(x)^w,    r(x) = p(x | c) / p(x) = p(c | x) / p(c),

the class-conditional density sharpened toward p(c | x)^w (in the notation p(x | c)^g p(x)^(1 - g) of the
guidance literature, g = 1 + w). p_w is not a mixture, but in 1D and 2D it is normalised on a grid,
and it is sampled exactly by rejection: draw from p(x | c), keep with probability p(c | x)^w.

What CFG really samples is another distribution: at t > 0 its score is that of the product of the
noised densities p_t(x | c)^(1 + w) p_t(x)^(-w), not of the noised p_w. The noised p_w's own score,
(alpha E_w[x0 | x_t] - x_t) / sigma^2, is estimated here by importance sampling: draws from the exact
conditional posterior p(x0 | x_t, c) (a Gaussian mixture), weighted by r(x0)^w, with the
delta-method standard error of the self-normalised estimate.
"""

from __future__ import annotations

import numpy as np

from ..foundations.analytic import AnalyticModel
from ..foundations.mixture import GaussianMixture
from ..foundations.random import as_generator
from ..foundations.timesteps import timesteps
from ..solvers.sampling import reference as _reference
from ..solvers.sampling import sample as _sample
from . import posterior
from .guidance import CFGModel, ConditionalModel, conditional_target
from .metrics import mode_coverage, sliced_wasserstein

# Guidance scales above this are refused: p(c | x)^w then keeps only a sliver of p(x | c) (the
# rejection sampler's acceptance collapses) and solvers need thousands of steps.
W_MAX = 50.0


def check_scale(value, name: str = "w", low: float = 0.0, high: float = W_MAX, low_open: bool = False) -> float:
    """value as a float in [low, high] (or (low, high] with low_open); otherwise a ValueError naming it."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if value > high:
        raise ValueError(f"{name} must be at most {high:g}, got {value:g}")
    return value


# Quadrature on a box.


class Grid:
    """A regular grid of n points per axis on a (D, 2) box, D = 1 or 2: cell-centred points for
    quadrature (sum f(x_i) * cell volume), and (bi)linear interpolation of values given on them."""

    def __init__(self, box, n: int):
        box = np.asarray(box, dtype=np.float64)
        if box.ndim != 2 or box.shape[1] != 2 or box.shape[0] not in (1, 2):
            raise ValueError(f"box must have shape (D, 2) with D = 1 or 2, got {box.shape}")
        self.box, self.n = box, int(n)
        self.step = (box[:, 1] - box[:, 0]) / self.n
        self.axes = [lo + (np.arange(self.n) + 0.5) * h for (lo, _), h in zip(box, self.step)]
        mesh = np.meshgrid(*self.axes, indexing="ij")
        self.points = np.stack([m.ravel() for m in mesh], axis=1)  # (n^D, D)
        self.cell = float(np.prod(self.step))

    @property
    def dim(self) -> int:
        return self.box.shape[0]

    @property
    def shape(self) -> tuple:
        return (self.n,) * self.dim

    def cell_index(self, x) -> np.ndarray:
        """(N,) the flat index of the grid cell holding each x (N, D), clamped to the edge cells."""
        idx = np.clip(((np.asarray(x, dtype=np.float64) - self.box[:, 0]) / self.step).astype(np.int64), 0, self.n - 1)
        return idx[:, 0] if self.dim == 1 else idx[:, 0] * self.n + idx[:, 1]

    def interpolate(self, values, x) -> np.ndarray:
        """(N,) the grid values (n^D,) at x (N, D), (bi)linearly interpolated, clamped at the edges."""
        v = np.asarray(values, dtype=np.float64).reshape(self.shape)
        x = np.asarray(x, dtype=np.float64)
        pos = (x - self.box[:, 0]) / self.step - 0.5  # fractional index
        pos = np.clip(pos, 0.0, self.n - 1.0)
        i0 = np.minimum(np.floor(pos).astype(int), self.n - 2)
        f = pos - i0
        if self.dim == 1:
            return v[i0[:, 0]] * (1 - f[:, 0]) + v[i0[:, 0] + 1] * f[:, 0]
        a, b = i0[:, 0], i0[:, 1]
        fa, fb = f[:, 0], f[:, 1]
        return ((v[a, b] * (1 - fb) + v[a, b + 1] * fb) * (1 - fa)
                + (v[a + 1, b] * (1 - fb) + v[a + 1, b + 1] * fb) * fa)


def grid_for(target: GaussianMixture, n: int | None = None, reach: float = 6.0) -> Grid:
    """A grid holding every component's mean +- `reach` standard deviations (4001 points in 1D,
    301 x 301 in 2D by default)."""
    if target.dim not in (1, 2):
        raise ValueError(f"grids are for 1D and 2D targets, got D = {target.dim}")
    lo = np.min(target.means - reach * target.stds()[:, None], axis=0)
    hi = np.max(target.means + reach * target.stds()[:, None], axis=0)
    return Grid(np.stack([lo, hi], axis=1), n or (4001 if target.dim == 1 else 301))


def _logsumexp(v) -> float:
    top = np.max(v)
    return float(top + np.log(np.sum(np.exp(v - top))))


# The tilted target.


class TiltedTarget:
    """p_w(x) = p(x | c) r(x)^w / Z_w, r = p(x | c) / p(x): the distribution CFG with scale w is said to
    sample. w = 0 is p(x | c) itself. Z_w = E_{p(x | c)}[r^w] by grid quadrature (1D, 2D)."""

    def __init__(self, target: GaussianMixture, label: int, w: float, n_grid: int | None = None):
        self.w = check_scale(w, "w")
        self.target, self.label = target, int(label)
        self.cond = conditional_target(target, self.label)
        self.grid = grid_for(target, n_grid)
        logq = self.log_unnormalised(self.grid.points)
        self.log_Z = _logsumexp(logq) + np.log(self.grid.cell)
        self.values = np.exp(logq - self.log_Z)  # p_w on the grid

    @property
    def dim(self) -> int:
        return self.target.dim

    def __repr__(self) -> str:
        return f"TiltedTarget(label={self.label}, w={self.w:g}, {self.target!r})"

    def log_ratio(self, x) -> np.ndarray:
        """log r(x) = log p(x | c) - log p(x) = log p(c | x) - log p(c)."""
        return self.cond.log_prob(x) - self.target.log_prob(x)

    def log_unnormalised(self, x) -> np.ndarray:
        """log p(x | c) + w log r(x)."""
        lc = self.cond.log_prob(x)
        return lc if self.w == 0 else lc + self.w * (lc - self.target.log_prob(x))

    def log_prob(self, x) -> np.ndarray:
        return self.log_unnormalised(np.asarray(x, dtype=np.float64)) - self.log_Z

    def sample(self, n: int, rng, max_draws: int = 50_000_000) -> np.ndarray:
        """n exact draws: x ~ p(x | c), kept with probability p(c | x)^w = (r(x) p(c))^w <= 1."""
        rng = as_generator(rng)
        n = int(n)
        if self.w == 0:
            return self.cond.sample(n, rng)
        log_pc = np.log(self.target.weights[self.target.labels == self.label].sum())
        out, count, drawn = [], 0, 0
        batch = max(1000, 2 * n)
        while count < n:
            if drawn > max_draws:
                raise ValueError(f"w = {self.w:g} keeps too few draws of p(x | c) to sample p_w (acceptance "
                                 f"{count / drawn:.1e}): choose a smaller w")
            x = self.cond.sample(batch, rng)
            drawn += batch
            keep = np.log(rng.random(batch)) < self.w * (self.log_ratio(x) + log_pc)
            out.append(x[keep])
            count += int(keep.sum())
            batch = int(min(max(batch, (n - count) * drawn / max(count, 1) * 1.2), 5_000_000))
        return np.concatenate(out)[:n]

    def mode_masses(self) -> np.ndarray:
        """(K,) p_w's mass on each component's region (samples are assigned to the component of
        largest responsibility, as metrics.mode_coverage does), by grid quadrature."""
        comp = np.argmax(self.target.responsibilities(self.grid.points), axis=1)
        return np.bincount(comp, weights=self.values * self.grid.cell, minlength=self.target.n_components)

    def denoise(self, x, t: float, schedule, m: int = 256, rng=0):
        """E_w[x0 | x_t = x] under the noised p_w, by importance sampling: m draws x_j from the exact
        conditional posterior p(x0 | x_t, c), self-normalised weights v_j proportional to r(x_j)^w, and
        the conditional posterior mean E_c (exact) as control variate:

            E_w ~ E_c + sum_j v_j x_j - mean_j x_j,

        whose error vanishes where r^w is flat over the posterior (low noise), unlike the plain estimate
        sum_j v_j x_j, whose spread sigma / alpha is amplified by alpha / sigma^2 in the score. Returns
        (estimate (N, D), delta-method standard error (N, D), effective sample size (N,)); exact at w = 0."""
        x = np.asarray(x, dtype=np.float64)
        a, sg = float(schedule.alpha(t)), float(schedule.sigma(t))
        exact = self.cond.noised(x, a, sg, need=("x0",))["x0"]
        if self.w == 0:
            return exact, np.zeros_like(exact), np.full(len(x), float(m))
        draws, _ = posterior.sample(self.cond, x, a, sg, m, rng)  # (N, m, D)
        logw = self.w * self.log_ratio(draws.reshape(-1, self.dim)).reshape(len(x), -1)
        logw -= logw.max(axis=1, keepdims=True)
        v = np.exp(logw)
        v /= v.sum(axis=1, keepdims=True)
        weighted = np.einsum("nm,nmd->nd", v, draws)
        plain = draws.mean(axis=1)
        # the fluctuation of sum v_j x_j - mean x_j, linearised (delta method) around its two means
        dev = v[:, :, None] * (draws - weighted[:, None]) - (draws - plain[:, None]) / draws.shape[1]
        se = np.sqrt(np.sum(dev * dev, axis=1))
        return exact + weighted - plain, se, 1.0 / np.sum(v * v, axis=1)

    def score(self, x, t: float, schedule, m: int = 256, rng=0):
        """grad log of the noised p_w at x and its standard error: (alpha E_w[x0 | x] - x) / sigma^2."""
        a, sg = float(schedule.alpha(t)), float(schedule.sigma(t))
        mean, se, _ = self.denoise(x, t, schedule, m, rng)
        return (a * mean - x) / (sg * sg), a * se / (sg * sg)


def cfg_model(target: GaussianMixture, schedule, label: int, w: float) -> CFGModel:
    """CFG of the exact conditional and unconditional models (w checked like p_w's)."""
    w = check_scale(w, "w")
    return CFGModel(ConditionalModel(target, schedule, label), AnalyticModel(target, schedule), w)


# CFG's samples against p_w.

SDE_STEPS = 200  # DDPM ancestral steps for CFG's SDE samples (its own discretisation error is below the floor)


def cfg_samples(target: GaussianMixture, schedule, label: int, w: float, n: int = 2000, seed: int = 0,
                kind: str = "ode", steps: int = SDE_STEPS):
    """n samples of CFG with scale w from the prior: kind "ode" solves the guided probability-flow ODE
    with rk45 (the ODE's own answer, not a solver's), "sde" runs DDPM ancestral sampling on the guided
    denoiser with `steps` steps. Returns the Trajectory."""
    if kind not in ("ode", "sde"):
        raise ValueError(f"kind must be 'ode' or 'sde', got {kind!r}")
    model = cfg_model(target, schedule, label, w)
    rng = np.random.default_rng([seed, 0])
    x_T = AnalyticModel(target, schedule).prior_sample(int(n), rng)
    if kind == "ode":
        return _reference(model, x_T, timesteps(schedule, 1, "uniform-lambda"), rtol=1e-6, atol=1e-6)
    return _sample(model, x_T, timesteps(schedule, int(steps), "uniform-lambda"), "ddpm",
                   rng=np.random.default_rng([seed, 1]))


def distance(x, reference_draws, rng=0) -> float:
    """Sliced W2 between samples and draws of the reference (exact W2 between the two sets in 1D)."""
    return sliced_wasserstein(np.asarray(x), reference_draws, n_projections=64, rng=rng)


FLOOR_REPEATS = 8


def floor(sample, reference_draws, n: int, rng, repeats: int = FLOOR_REPEATS) -> float:
    """What a perfect sampler scores: the mean distance of `repeats` independent sets of n exact draws
    (sample(n, rng)) to the reference draws. One set is not enough: on modes far apart, the distance
    of n exact draws varies by a factor of two or more with the binomial spread of their mode masses."""
    rng = as_generator(rng)
    return float(np.mean([distance(sample(int(n), rng), reference_draws) for _ in range(int(repeats))]))


def compare(target: GaussianMixture, schedule, label: int, ws=(0.0, 1.0, 2.0, 4.0, 8.0), n: int = 2000,
            seed: int = 0, kinds=("ode", "sde"), progress=None) -> list[dict]:
    """CFG's samples against p_w at each scale w. One record per (w, kind): w, kind, distance (sliced
    W2 to max(4n, 5000) exact draws of p_w), floor (the same distance for sets of n independent exact
    draws, averaged: what a perfect sampler scores; see floor()), distance_to_conditional (to p(x | c)), masses (K,) the
    samples' mode masses, target_masses (K,) p_w's, conditional_masses (K,) p(x | c)'s, diverged.
    progress(done, total, text), if given, is called after each run."""
    ws = [check_scale(w, "w") for w in ws]
    out, total, done = [], len(ws) * len(kinds), 0
    cond_draws = conditional_target(target, label).sample(max(4 * n, 5000), np.random.default_rng([seed, 2]))
    cond_masses = TiltedTarget(target, label, 0.0).mode_masses()
    for w in ws:
        tilted = TiltedTarget(target, label, w)
        draws = tilted.sample(max(4 * n, 5000), np.random.default_rng([seed, 3]))
        floor_ = floor(tilted.sample, draws, n, np.random.default_rng([seed, 4]))
        masses = tilted.mode_masses()
        for kind in kinds:
            traj = cfg_samples(target, schedule, label, w, n, seed, kind)
            rec = dict(w=w, kind=kind, distance=np.nan, floor=floor_, distance_to_conditional=np.nan,
                       masses=np.full(target.n_components, np.nan), target_masses=masses,
                       conditional_masses=cond_masses, diverged=traj.diverged, samples=None)
            if not traj.diverged:
                x = np.asarray(traj.sample)
                rec.update(distance=distance(x, draws), distance_to_conditional=distance(x, cond_draws),
                           masses=mode_coverage(x, target), samples=x)
            out.append(rec)
            done += 1
            if progress is not None:
                progress(done, total, f"CFG {kind.upper()} at w = {w:g}")
    return out


def score_error(target: GaussianMixture, schedule, label: int, w: float, ts=None, n: int = 200, m: int = 512,
                seed: int = 0) -> list[dict]:
    """CFG's score against the true score of the noised p_w at each time t (default: 12 times uniform in
    log-SNR), at n points x_t drawn exactly from the noised p_w (x0 ~ p_w, then noised).

    One record per t: t, lambda, error (RMS over points of |s_cfg - s_w|, s_w estimated by importance
    sampling with m draws), error_se (RMS of the estimate's standard error: the error bar), scale (RMS
    of |s_w|, to read error / scale as a relative error), ess (median effective sample size)."""
    w = check_scale(w, "w")
    tilted = TiltedTarget(target, label, w)
    cfg = cfg_model(target, schedule, label, w)
    if ts is None:
        ts = timesteps(schedule, 11, "uniform-lambda")[::-1]
    rng = np.random.default_rng([seed, 5])
    out = []
    for t in ts:
        t = float(t)
        a, sg = float(schedule.alpha(t)), float(schedule.sigma(t))
        x = a * tilted.sample(n, rng) + sg * rng.standard_normal((n, target.dim))
        mean, se, ess = tilted.denoise(x, t, schedule, m, rng)
        true = (a * mean - x) / (sg * sg)
        diff = cfg.score(x, t) - true
        out.append(dict(
            t=t, lambda_=float(schedule.lambda_(t)), sigma=sg / a,
            error=float(np.sqrt(np.mean(np.sum(diff * diff, axis=1)))),
            error_se=float(np.sqrt(np.mean(np.sum((a * se / (sg * sg)) ** 2, axis=1)))),
            scale=float(np.sqrt(np.mean(np.sum(true * true, axis=1)))),
            ess=float(np.median(ess)),
        ))
    return out
