"""Noise schedules x_t = alpha(t) x0 + sigma(t) eps.

Each schedule owns alpha, sigma, their time derivatives, the half log-SNR
lambda(t) = log(alpha / sigma) (strictly decreasing) and its exact inverse.
"""

from __future__ import annotations

import math

import numpy as np


class Schedule:
    """Base class: subclasses define alpha, sigma, their derivatives and t_of_lambda."""

    name = "schedule"

    def __init__(self, t_min: float, t_max: float, t_lo: float, t_hi: float):
        # [t_lo, t_hi] is where the schedule is defined with finite lambda;
        # [t_min, t_max] is its default sampling interval inside that.
        t_min, t_max = float(t_min), float(t_max)
        if not (math.isfinite(t_min) and math.isfinite(t_max)):
            raise ValueError("t_min and t_max must be finite")
        if not t_lo <= t_min < t_max <= t_hi:
            raise ValueError(
                f"{self.name}: need {t_lo} <= t_min < t_max <= {t_hi}, got t_min={t_min}, t_max={t_max}"
            )
        self.t_min, self.t_max = t_min, t_max
        self.t_lo, self.t_hi = t_lo, t_hi

    def alpha(self, t):
        raise NotImplementedError

    def sigma(self, t):
        raise NotImplementedError

    def d_alpha(self, t):
        """d alpha / dt."""
        raise NotImplementedError

    def d_sigma(self, t):
        """d sigma / dt."""
        raise NotImplementedError

    def lambda_(self, t):
        """Half log-SNR log(alpha / sigma)."""
        return np.log(self.alpha(t)) - np.log(self.sigma(t))

    def t_of_lambda(self, lam):
        raise NotImplementedError

    def params(self) -> dict:
        return {"t_min": self.t_min, "t_max": self.t_max}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"schedules.get({self.name!r}, {args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.params() == other.params()

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params().items()))))


_SCALARS = (float, int, np.float64)  # what VPLinear takes as one time without numpy's scalar arithmetic


class VPLinear(Schedule):
    """Variance preserving, beta(t) = beta_min + t (beta_max - beta_min) (DDPM / score SDE)."""

    name = "vp-linear"

    def __init__(self, beta_min=0.1, beta_max=20.0, t_min=1e-3, t_max=1.0):
        super().__init__(t_min, t_max, 0.0, 1.0)
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def params(self):
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, **super().params()}

    def _log_alpha(self, t):
        if type(t) in _SCALARS:  # one time (a solver's step): the same IEEE operations on a Python float, about
            t = float(t)          # 5x cheaper than on numpy scalars; called several times a step
            return np.float64(-0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min)
        t = np.asarray(t, dtype=np.float64)
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t):
        return np.exp(self._log_alpha(t))

    def sigma(self, t):
        return np.sqrt(-np.expm1(2.0 * self._log_alpha(t)))

    def lambda_(self, t):
        la = self._log_alpha(t)
        return la - 0.5 * np.log(-np.expm1(2.0 * la))

    def _beta(self, t):
        if type(t) in _SCALARS:
            return np.float64(self.beta_min + float(t) * (self.beta_max - self.beta_min))
        return self.beta_min + np.asarray(t, dtype=np.float64) * (self.beta_max - self.beta_min)

    def d_alpha(self, t):
        return -0.5 * self._beta(t) * self.alpha(t)

    def d_sigma(self, t):
        a = self.alpha(t)
        return 0.5 * self._beta(t) * a * a / self.sigma(t)

    def t_of_lambda(self, lam):
        # alpha^2 = 1 / (1 + e^{-2 lambda}); solve the quadratic in t for log alpha.
        L = np.logaddexp(0.0, -2.0 * np.asarray(lam, dtype=np.float64))
        d = self.beta_max - self.beta_min
        return 2.0 * L / (self.beta_min + np.sqrt(self.beta_min**2 + 2.0 * d * L))


class VPCosine(Schedule):
    """Variance preserving, alpha(t) = cos((t + s) / (1 + s) pi/2) / cos(s / (1 + s) pi/2)."""

    name = "vp-cosine"

    def __init__(self, s=0.008, t_min=1e-3, t_max=0.9946):
        super().__init__(t_min, t_max, 0.0, 1.0 - 1e-9)
        self.s = float(s)
        self._c0 = math.cos(self.s / (1.0 + self.s) * math.pi / 2.0)

    def params(self):
        return {"s": self.s, **super().params()}

    def _angle(self, t):
        return (np.asarray(t, dtype=np.float64) + self.s) / (1.0 + self.s) * (math.pi / 2.0)

    def alpha(self, t):
        return np.cos(self._angle(t)) / self._c0

    def sigma(self, t):
        a = self.alpha(t)
        return np.sqrt(np.clip(1.0 - a * a, 0.0, None))

    def lambda_(self, t):
        a = self.alpha(t)
        return np.log(a) - 0.5 * np.log1p(-a * a)

    def d_alpha(self, t):
        return -np.sin(self._angle(t)) / self._c0 * (math.pi / 2.0) / (1.0 + self.s)

    def d_sigma(self, t):
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def t_of_lambda(self, lam):
        log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * np.asarray(lam, dtype=np.float64))
        return 2.0 * (1.0 + self.s) / math.pi * np.arccos(np.exp(log_alpha) * self._c0) - self.s


class SigmaIsTime(Schedule):
    """alpha = 1, sigma = t: variance exploding, in the EDM parameterisation."""

    def alpha(self, t):
        return np.ones_like(np.asarray(t, dtype=np.float64))

    def sigma(self, t):
        return np.asarray(t, dtype=np.float64)

    def d_alpha(self, t):
        return np.zeros_like(np.asarray(t, dtype=np.float64))

    def d_sigma(self, t):
        return np.ones_like(np.asarray(t, dtype=np.float64))

    def lambda_(self, t):
        return -np.log(np.asarray(t, dtype=np.float64))

    def t_of_lambda(self, lam):
        return np.exp(-np.asarray(lam, dtype=np.float64))


class VE(SigmaIsTime):
    """Variance exploding (score SDE): sigma in [0.01, 50] by default."""

    name = "ve"

    def __init__(self, t_min=0.01, t_max=50.0):
        super().__init__(t_min, t_max, 0.0, math.inf)


class EDM(SigmaIsTime):
    """Karras et al. (EDM): sigma = t in [0.002, 80]."""

    name = "edm"

    def __init__(self, t_min=0.002, t_max=80.0):
        super().__init__(t_min, t_max, 0.0, math.inf)


class RectifiedFlow(Schedule):
    """Linear interpolation: alpha = 1 - t, sigma = t."""

    name = "rectified-flow"

    def __init__(self, t_min=1e-3, t_max=0.999):
        super().__init__(t_min, t_max, 0.0, 1.0)

    def alpha(self, t):
        return 1.0 - np.asarray(t, dtype=np.float64)

    def sigma(self, t):
        return np.asarray(t, dtype=np.float64)

    def d_alpha(self, t):
        return -np.ones_like(np.asarray(t, dtype=np.float64))

    def d_sigma(self, t):
        return np.ones_like(np.asarray(t, dtype=np.float64))

    def lambda_(self, t):
        t = np.asarray(t, dtype=np.float64)
        return np.log1p(-t) - np.log(t)

    def t_of_lambda(self, lam):
        # t = 1 / (1 + e^lambda), written to stay exact for large |lambda|
        lam = np.asarray(lam, dtype=np.float64)
        return np.exp(-np.logaddexp(0.0, lam))


class Discrete(Schedule):
    """A tabulated variance-preserving schedule, as real checkpoints ship it: alphas_cumprod[i]
    is alpha^2 at integer time i (DDPM's abar_i). Between integers log alpha^2 is linear in t,
    so the table's values are exact at its own timesteps and lambda has an exact inverse."""

    name = "discrete"

    def __init__(self, alphas_cumprod, t_min=None, t_max=None):
        abar = np.asarray(alphas_cumprod, dtype=np.float64)
        if abar.ndim != 1 or len(abar) < 2:
            raise ValueError("alphas_cumprod must be a 1-D array of at least 2 values")
        if not np.all((abar > 0) & (abar < 1)) or not np.all(np.diff(abar) < 0):
            raise ValueError("alphas_cumprod must decrease strictly inside (0, 1)")
        n = len(abar) - 1
        super().__init__(0.0 if t_min is None else t_min, float(n) if t_max is None else t_max, 0.0, float(n))
        self.alphas_cumprod = abar
        self._log_abar = np.log(abar)
        self._slope = np.diff(self._log_abar)  # d log abar / dt on each unit interval

    @classmethod
    def from_betas(cls, betas, **kwargs):
        """The schedule of DDPM's betas: abar_i = prod_{j <= i} (1 - beta_j)."""
        return cls(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)), **kwargs)

    def params(self):
        return {"T": len(self.alphas_cumprod), "abar_0": float(self.alphas_cumprod[0]),
                "abar_T": float(self.alphas_cumprod[-1]), **super().params()}

    def __eq__(self, other):
        return type(self) is type(other) and np.array_equal(self.alphas_cumprod, other.alphas_cumprod) and (
            self.t_min, self.t_max) == (other.t_min, other.t_max)

    def __hash__(self):
        return hash((self.name, self.alphas_cumprod.tobytes(), self.t_min, self.t_max))

    def _segment(self, t):
        t = np.asarray(t, dtype=np.float64)
        i = np.clip(np.floor(t).astype(int), 0, len(self._slope) - 1)
        return t, i

    def _log_abar_at(self, t):
        t, i = self._segment(t)
        return self._log_abar[i] + (t - i) * self._slope[i]

    def alpha(self, t):
        return np.exp(0.5 * self._log_abar_at(t))

    def sigma(self, t):
        return np.sqrt(-np.expm1(self._log_abar_at(t)))

    def lambda_(self, t):
        la = self._log_abar_at(t)
        return 0.5 * la - 0.5 * np.log(-np.expm1(la))

    def d_alpha(self, t):
        _, i = self._segment(t)
        return 0.5 * self._slope[i] * self.alpha(t)

    def d_sigma(self, t):
        _, i = self._segment(t)
        a2 = np.exp(self._log_abar_at(t))
        return -0.5 * self._slope[i] * a2 / self.sigma(t)

    def t_of_lambda(self, lam):
        la = -np.logaddexp(0.0, -2.0 * np.asarray(lam, dtype=np.float64))  # log abar for that lambda
        # log abar decreases along the table: find the interval, then invert the linear piece
        j = np.clip(np.searchsorted(-self._log_abar, -la, side="right") - 1, 0, len(self._slope) - 1)
        return j + (la - self._log_abar[j]) / self._slope[j]


def from_alphas_cumprod(alphas_cumprod, **kwargs) -> Discrete:
    """The tabulated schedule of a discrete-time checkpoint (see Discrete)."""
    return Discrete(alphas_cumprod, **kwargs)


# The lazy schedules of the stochastic-interpolant papers (see explorer/foundations/interpolants.py).


def _positive_data_var(data_var) -> float:
    if not (math.isfinite(float(data_var)) and float(data_var) > 0):
        raise ValueError(f"data_var must be a positive number, got {data_var!r}")
    return float(data_var)


class Trigonometric(Schedule):
    """alpha = cos(pi t / 2), sigma = sqrt(c) sin(pi t / 2) (c = data_var, 1 by default).

    For data N(0, c I) the variance alpha^2 c + sigma^2 = c never changes, so the
    probability-flow drift is identically zero: the deterministic lazy schedule."""

    name = "trigonometric"

    def __init__(self, data_var=1.0, t_min=1e-3, t_max=0.999):
        super().__init__(t_min, t_max, 0.0, 1.0)
        self.data_var = _positive_data_var(data_var)
        self._k = math.sqrt(self.data_var)

    def params(self):
        return {"data_var": self.data_var, **super().params()}

    def alpha(self, t):
        return np.cos(0.5 * math.pi * np.asarray(t, dtype=np.float64))

    def sigma(self, t):
        return self._k * np.sin(0.5 * math.pi * np.asarray(t, dtype=np.float64))

    def d_alpha(self, t):
        return -0.5 * math.pi * np.sin(0.5 * math.pi * np.asarray(t, dtype=np.float64))

    def d_sigma(self, t):
        return 0.5 * math.pi * self._k * np.cos(0.5 * math.pi * np.asarray(t, dtype=np.float64))

    def lambda_(self, t):
        return -np.log(np.tan(0.5 * math.pi * np.asarray(t, dtype=np.float64))) - math.log(self._k)

    def t_of_lambda(self, lam):
        # tan(pi t / 2) = e^{-lambda} / sqrt(c)
        return (2.0 / math.pi) * np.arctan(np.exp(-np.asarray(lam, dtype=np.float64) - math.log(self._k)))


class PointMass(Schedule):
    """alpha = 1 - t, sigma = sqrt(c t (1 - t)): at t = 1 both vanish and the base is the point 0.

    The Brownian bridge from 0 to x0 run backwards (a Foellmer process): its optimal diffusion
    coefficient is the constant c / 2, and for data N(0, c I) the SDE drift v - eps* s is
    identically zero: the stochastic lazy schedule. The default interval stops at t_max = 0.999
    (a Gaussian of std ~0.03 sqrt(c)); the point itself, t = t_hi = 1, is a valid start only for
    the stochastic sampler 'interpolant-sde' (a deterministic flow cannot leave a point)."""

    name = "point-mass"

    def __init__(self, data_var=1.0, t_min=1e-3, t_max=0.999):
        super().__init__(t_min, t_max, 0.0, 1.0)
        self.data_var = _positive_data_var(data_var)

    def params(self):
        return {"data_var": self.data_var, **super().params()}

    def alpha(self, t):
        return 1.0 - np.asarray(t, dtype=np.float64)

    def sigma(self, t):
        t = np.asarray(t, dtype=np.float64)
        return np.sqrt(self.data_var * t * (1.0 - t))

    def d_alpha(self, t):
        return -np.ones_like(np.asarray(t, dtype=np.float64))

    def d_sigma(self, t):
        t = np.asarray(t, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return 0.5 * self.data_var * (1.0 - 2.0 * t) / self.sigma(t)

    def lambda_(self, t):
        t = np.asarray(t, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return 0.5 * (np.log1p(-t) - np.log(t)) - 0.5 * math.log(self.data_var)

    def t_of_lambda(self, lam):
        # (1 - t) / t = c e^{2 lambda}
        return np.exp(-np.logaddexp(0.0, 2.0 * np.asarray(lam, dtype=np.float64) + math.log(self.data_var)))

    def optimal_diffusion(self, t):
        """eps*(t) = -sigma^2 lambda'(t) = c / 2, also at the point t = 1."""
        return np.full_like(np.asarray(t, dtype=np.float64), 0.5 * self.data_var)


_SCHEDULES = {cls.name: cls for cls in (VPLinear, VPCosine, VE, EDM, RectifiedFlow, Trigonometric, PointMass)}


def names() -> list[str]:
    return list(_SCHEDULES)


def get(name: str, **params) -> Schedule:
    """The schedule called name, with its parameters (t_min, t_max, ...) overridden."""
    if isinstance(name, Schedule):
        return name
    try:
        cls = _SCHEDULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown schedule {name!r}; choose from {names()}") from None
    try:
        return cls(**params)
    except TypeError as err:
        raise ValueError(f"schedule {name!r}: {err}") from None
