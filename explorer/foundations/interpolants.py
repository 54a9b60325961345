"""Stochastic interpolants: general schedules, the SDE family's coefficients (its sampler is the
solver 'interpolant-sde', explorer/solvers/interpolant_sde.py), and lazy schedules (Albergo,
Boffi & Vanden-Eijnden, "Stochastic Interpolants: A Unifying Framework for Flows and
Diffusions"; Damsholt, Frellsen & Ditlevsen, "Fast Sampling for Flows and Diffusions with Lazy
and Point Mass Stochastic Interpolants").

Our time runs the other way from the papers'. They write I_u = a_u Z + b_u X with the base Z
at u = 0 and the data X at u = 1; we write x_t = alpha(t) x0 + sigma(t) eps with t growing
toward the noise, so alpha = b, sigma = a and u = t_hi - t. Their forward SDE

    dX = [b_u(X) + eps_u s(X)] du + sqrt(2 eps_u) dW_u        (b_u = dx/du, the flow velocity)

becomes, with du = -dt and v = dx/dt = -b_u our probability-flow velocity,

    dX = [v(X, t) - eps(t) s(X, t)] dt + sqrt(2 eps(t)) dW_bar,   integrated from t_max down,

i.e. a step of size dt < 0 is x + (v - eps s) dt + sqrt(2 eps |dt|) xi (checked against
the score SDE's reverse-time Euler-Maruyama, whose g^2 / 2 is eps below).
eps = 0 is the probability-flow ODE. The statistically optimal coefficient of the lazy paper,
eps*_u = a_u^2 b'_u / b_u - a_u a'_u, reads in our time

    eps*(t) = sigma sigma' - sigma^2 alpha' / alpha = -sigma^2 lambda'(t) = g(t)^2 / 2,

the very coefficient of the diffusion model's own reverse SDE (g^2 = d sigma^2/dt - 2 f sigma^2).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .schedules import PointMass, Schedule, Trigonometric  # the two named lazy schedules live with the others

_BISECTIONS = 200  # enough to reach adjacent floats on any finite [t_lo, t_hi]


def _f64(t):
    return np.asarray(t, dtype=np.float64)


def _complex_step(fn: Callable, t):
    """d fn / dt by the complex step Im fn(t + i h) / h, exact to round-off for analytic fn."""
    h = 1e-30
    t = _f64(t)
    return np.imag(fn(t + 1j * h)) / h


def _bisect_decreasing(fn: Callable, target, lo: float, hi: float):
    """The t in [lo, hi] with fn(t) = target, for fn strictly decreasing (vectorised bisection)."""
    target = _f64(target)
    a = np.full(target.shape, float(lo))
    b = np.full(target.shape, float(hi))
    for _ in range(_BISECTIONS):
        mid = 0.5 * (a + b)
        if np.all((mid == a) | (mid == b)):
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            above = fn(mid) > target  # lambda still too large: the answer lies later
        a = np.where(above, mid, a)
        b = np.where(above, b, mid)
    with np.errstate(divide="ignore", invalid="ignore"):
        fa, fb = np.abs(fn(a) - target), np.abs(fn(b) - target)
    out = np.where(fb < fa, b, a)
    out = np.where(target == np.inf, lo, np.where(target == -np.inf, hi, out))
    return out if out.ndim else float(out)


def _check_lambda_decreases(schedule: Schedule, label: str):
    t = np.linspace(schedule.t_min, schedule.t_max, 4001)
    with np.errstate(divide="ignore", invalid="ignore"):
        a, s, lam = schedule.alpha(t), schedule.sigma(t), schedule.lambda_(t)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(s))):
        raise ValueError(f"{label}: alpha and sigma must be finite on [t_min, t_max]")
    if np.any(a < 0) or np.any(s < 0):
        raise ValueError(f"{label}: alpha and sigma must be non-negative")
    if not np.all(np.isfinite(lam[1:-1])) or not np.all(np.diff(lam) < 0):
        raise ValueError(
            f"{label}: lambda = log(alpha / sigma) must decrease strictly on [t_min, t_max] "
            "(the signal-to-noise ratio must fall as t grows toward the noise)"
        )


class Interpolant(Schedule):
    """A schedule given by formulas: x_t = alpha(t) x0 + beta(t) x1 + gamma(t) z.

    With a Gaussian base x1 the noise is one Gaussian of std sigma = sqrt(beta^2 + gamma^2)
    (the stochastic interpolant's gamma z adds to the base's beta x1); give either sigma or
    beta and/or gamma. alpha, sigma, beta, gamma are callables of a numpy array t; their
    derivatives, when not given, come from the complex step (exact to round-off, for formulas
    written with numpy ufuncs). t_of_lambda is a bisection of the monotone lambda to round-off.
    """

    name = "interpolant"

    def __init__(self, alpha, sigma=None, d_alpha=None, d_sigma=None, *, beta=None, gamma=None,
                 d_beta=None, d_gamma=None, t_min=1e-3, t_max=0.999, t_lo=0.0, t_hi=1.0, name=None):
        if name is not None:
            self.name = str(name)
        if not callable(alpha):
            raise ValueError("alpha must be a callable of t")
        if sigma is None and beta is None and gamma is None:
            raise ValueError("give sigma, or the parts beta and/or gamma of the noise")
        if sigma is not None and (beta is not None or gamma is not None):
            raise ValueError("give sigma or its parts beta/gamma, not both")
        for label, fn in (("sigma", sigma), ("beta", beta), ("gamma", gamma), ("d_alpha", d_alpha),
                          ("d_sigma", d_sigma), ("d_beta", d_beta), ("d_gamma", d_gamma)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{label} must be a callable of t")
        if not (math.isfinite(t_lo) and math.isfinite(t_hi)):
            raise ValueError("an Interpolant needs a finite [t_lo, t_hi] (for the inverse of lambda)")
        super().__init__(t_min, t_max, t_lo, t_hi)
        zero = lambda t: np.zeros_like(_f64(t))  # noqa: E731
        self._alpha, self._d_alpha = alpha, d_alpha
        if sigma is not None:
            self._sigma, self._d_sigma, self._beta, self._gamma = sigma, d_sigma, None, None
        else:
            self._beta, self._gamma = beta or zero, gamma or zero
            self._d_beta = d_beta or (zero if beta is None else (lambda t: _complex_step(beta, t)))
            self._d_gamma = d_gamma or (zero if gamma is None else (lambda t: _complex_step(gamma, t)))
            self._sigma = lambda t: np.hypot(self._beta(t), self._gamma(t))
            self._d_sigma = lambda t: (self._beta(t) * self._d_beta(t) + self._gamma(t) * self._d_gamma(t)) / (
                self._sigma(t))
        _check_lambda_decreases(self, self.name)

    def params(self):
        parts = {"alpha": self._alpha, "sigma": self._sigma if self._beta is None else None,
                 "beta": self._beta, "gamma": self._gamma}
        return {**{k: v for k, v in parts.items() if v is not None}, **super().params()}

    def alpha(self, t):
        return _f64(self._alpha(_f64(t))) + 0.0 * _f64(t)

    def sigma(self, t):
        return _f64(self._sigma(_f64(t))) + 0.0 * _f64(t)

    def __repr__(self) -> str:
        return f"interpolants.Interpolant(name={self.name!r}, t_min={self.t_min!r}, t_max={self.t_max!r})"

    def beta(self, t):
        """The base's part of the noise (sigma itself when no split was given)."""
        return self.sigma(t) if self._beta is None else _f64(self._beta(_f64(t))) + 0.0 * _f64(t)

    def gamma(self, t):
        """The latent noise's part gamma(t) (zero when no split was given)."""
        return 0.0 * _f64(t) if self._gamma is None else _f64(self._gamma(_f64(t))) + 0.0 * _f64(t)

    def d_alpha(self, t):
        return _f64(self._d_alpha(_f64(t)) if self._d_alpha else _complex_step(self._alpha, t)) + 0.0 * _f64(t)

    def d_sigma(self, t):
        return _f64(self._d_sigma(_f64(t)) if self._d_sigma else _complex_step(self._sigma, t)) + 0.0 * _f64(t)

    def t_of_lambda(self, lam):
        return _bisect_decreasing(self.lambda_, lam, self.t_lo, self.t_hi)


class Tabulated(Schedule):
    """A schedule tabulated at times t_j: alpha and sigma interpolated by monotone cubics
    (PCHIP), derivatives exact for the interpolant, lambda inverted by bisection."""

    name = "tabulated"

    def __init__(self, t, alpha, sigma, t_min=None, t_max=None):
        from scipy.interpolate import PchipInterpolator

        t, a, s = (_f64(v) for v in (t, alpha, sigma))
        if t.ndim != 1 or len(t) < 2 or a.shape != t.shape or s.shape != t.shape:
            raise ValueError(f"t, alpha and sigma must be 1-D arrays of one length >= 2, got {t.shape}, "
                             f"{a.shape}, {s.shape}")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(a)) and np.all(np.isfinite(s))):
            raise ValueError("t, alpha and sigma must be finite")
        if not np.all(np.diff(t) > 0):
            raise ValueError("t must increase strictly")
        with np.errstate(divide="ignore", invalid="ignore"):
            finite = np.flatnonzero(np.isfinite(np.log(a) - np.log(s)))  # default interval: finite lambda
        if len(finite) < 2:
            raise ValueError("the table needs at least two entries with alpha > 0 and sigma > 0")
        t_min = t[finite[0]] if t_min is None else t_min
        t_max = t[finite[-1]] if t_max is None else t_max
        super().__init__(t_min, t_max, t[0], t[-1])
        self.table = (t, a, s)
        self._a, self._s = PchipInterpolator(t, a), PchipInterpolator(t, s)
        self._da, self._ds = self._a.derivative(), self._s.derivative()
        _check_lambda_decreases(self, "tabulated schedule")

    def params(self):
        t, a, s = self.table
        return {"n": len(t), "t": tuple(t), "alpha": tuple(a), "sigma": tuple(s), **super().params()}

    def __repr__(self) -> str:
        return f"interpolants.tabulated(<{len(self.table[0])} rows>, t_min={self.t_min!r}, t_max={self.t_max!r})"

    def alpha(self, t):
        return self._a(_f64(t))

    def sigma(self, t):
        return self._s(_f64(t))

    def d_alpha(self, t):
        return self._da(_f64(t))

    def d_sigma(self, t):
        return self._ds(_f64(t))

    def t_of_lambda(self, lam):
        return _bisect_decreasing(self.lambda_, lam, self.t_lo, self.t_hi)


def tabulated(t, alpha, sigma, **kwargs) -> Tabulated:
    """The schedule through the table (t_j, alpha_j, sigma_j) (see Tabulated)."""
    return Tabulated(t, alpha, sigma, **kwargs)


# The diffusion coefficient eps(t) of the SDE family.

DIFFUSIONS = ("zero", "constant", "optimal")


def optimal_diffusion(schedule: Schedule, t):
    """The statistically optimal eps*(t) = sigma sigma' - sigma^2 alpha'/alpha = -sigma^2 lambda'(t)."""
    if hasattr(schedule, "optimal_diffusion"):
        return schedule.optimal_diffusion(t)
    t = _f64(t)
    s = schedule.sigma(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        return s * schedule.d_sigma(t) - s * s * schedule.d_alpha(t) / schedule.alpha(t)


def diffusion_coefficient(schedule: Schedule, t, diffusion="optimal", scale: float = 1.0):
    """eps(t): "zero" (the probability-flow ODE), "constant" (eps = scale), "optimal"
    (scale * eps*(t); eps* equals the schedule's own g^2/2, so this is also "proportional to the
    natural one"), or a callable eps(t) >= 0."""
    t = _f64(t)
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)) or not scale >= 0:
        raise ValueError(f"scale must be a non-negative number, got {scale!r}")
    if callable(diffusion):
        out = _f64(diffusion(t)) + 0.0 * t
    elif diffusion == "zero":
        out = np.zeros_like(t)
    elif diffusion == "constant":
        out = np.full_like(t, float(scale))
    elif diffusion == "optimal":
        out = float(scale) * optimal_diffusion(schedule, t)
    else:
        raise ValueError(f"diffusion must be one of {list(DIFFUSIONS)} or a callable eps(t), got {diffusion!r}")
    if np.any(out < 0):
        raise ValueError(f"the diffusion coefficient must be non-negative, got {out.min()} at some t")
    return out


def sde_coefficients(schedule: Schedule, t: float, eps: float):
    """alpha, alpha' and k = (sigma sigma' + eps) / sigma^2 with drift = alpha' x0_hat + k (x - alpha x0_hat)."""
    a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
    da, ds = float(schedule.d_alpha(t)), float(schedule.d_sigma(t))
    k = (s * ds + eps) / (s * s) if s > 0 else math.nan
    return a, da, k


def drift(model, x, t: float, diffusion="optimal", scale: float = 1.0):
    """The SDE drift v - eps(t) s in the schedule's own time (dx = drift dt + sqrt(2 eps) dW_bar, dt < 0):
    alpha' x0_hat + (sigma sigma' + eps) / sigma^2 (x - alpha x0_hat). Its norm is the papers' |b + eps s|."""
    s = model.schedule
    eps = float(diffusion_coefficient(s, float(t), diffusion, scale))
    a, da, k = sde_coefficients(s, float(t), eps)
    d = model.denoise(x, float(t))
    if float(s.sigma(float(t))) == 0.0:  # at a point-mass base every particle sits at 0
        return da * d + 0.0 * x
    return da * d + k * (x - a * d)


# Lazy schedules.


def _mean_cov(target_or_mean_cov):
    from .mixture import GaussianMixture

    if isinstance(target_or_mean_cov, GaussianMixture):
        return target_or_mean_cov.mean(), target_or_mean_cov.covariance()
    try:
        mean, cov = target_or_mean_cov
    except (TypeError, ValueError):
        raise ValueError("target_or_mean_cov must be a GaussianMixture or a pair (mean, cov)") from None
    mean = np.atleast_1d(_f64(mean))
    cov = _f64(cov)
    if cov.ndim == 0:
        cov = float(cov) * np.eye(len(mean))
    elif cov.ndim == 1:
        cov = np.diag(cov)
    if mean.ndim != 1 or cov.shape != (len(mean), len(mean)) or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise ValueError(f"mean must be (D,) and cov (D, D) (or (D,) / scalar variances), finite; got {mean.shape}, {cov.shape}")
    if np.any(np.linalg.eigvalsh(0.5 * (cov + cov.T)) <= 0):
        raise ValueError("cov must be positive definite")
    return mean, cov


def lazy(target_or_mean_cov, stochastic: bool = False, **kwargs) -> Schedule:
    """The lazy schedule for data N(0, c I): the drift is identically zero.

    Deterministic (probability-flow ODE): alpha^2 c + sigma^2 = c, here Trigonometric(c).
    Stochastic (optimal eps*): sigma^2 = c alpha (1 - alpha) (from (sigma^2/alpha)' = -c alpha'),
    here PointMass(c). A scalar schedule can zero the drift only for mean 0 and C = c I; for any
    other Gaussian or a mixture, c is fitted to the second moment per dimension
    c = (|m|^2 + tr C) / D of the overall mean m and covariance C, so E|x_t|^2 stays constant."""
    mean, cov = _mean_cov(target_or_mean_cov)
    c = float((mean @ mean + np.trace(cov)) / len(mean))
    return PointMass(c, **kwargs) if stochastic else Trigonometric(c, **kwargs)


