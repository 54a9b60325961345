"""Models: the function a sampler sees, x_t -> prediction.

Every model offers denoise (E[x0 | x_t]), eps, score and velocity (the
probability-flow drift dx/dt), all consistent with one another through
x_t = alpha x0 + sigma eps and Tweedie's score = (alpha x0_hat - x) / sigma^2.

Here: that interface (DenoiserModel) and the exact model of a mixture (AnalyticModel).
Learned models and the registry plug-ins declare to: explorer/learned/registry.py.
"""

from __future__ import annotations

import numpy as np

from .mixture import GaussianMixture
from .schedules import Schedule


class DenoiserModel:
    """Derives eps, score and velocity from a subclass's denoise(x, t).

    What a model declares about its field, for the rk45 reference (explorer/solvers/reference.py) to
    choose how its particles share steps; a subclass that cannot vouch for one says False (the default):
    smooth: x0_hat(x, t) is infinitely differentiable in x and t (no clip, no ReLU, no table lookup).
    times_per_particle: denoise(x, t) also takes t as an (N,) array, one time per row of x."""

    schedule: Schedule
    smooth = False
    times_per_particle = False

    def denoise(self, x, t):
        raise NotImplementedError

    def _coeffs(self, t, x, derivatives: bool = False):
        """alpha(t), sigma(t) (and, with derivatives, alpha'(t), sigma'(t)): Python floats for one
        time; for one time per particle, columns that broadcast over x's trailing dimensions
        (torch tensors of x's dtype and device when x is a tensor)."""
        s = self.schedule
        fns = (s.alpha, s.sigma) + ((s.d_alpha, s.d_sigma) if derivatives else ())
        if np.ndim(t) == 0:
            return tuple(float(f(t)) for f in fns)
        shape = (-1,) + (1,) * (x.ndim - 1)
        out = tuple(np.reshape(f(t), shape) for f in fns)
        if not isinstance(x, np.ndarray):
            import torch

            out = tuple(torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in out)
        return out

    def eps(self, x, t):
        """Predicted noise (x - alpha x0_hat) / sigma."""
        a, sg = self._coeffs(t, x)
        return (x - a * self.denoise(x, t)) / sg

    def score(self, x, t):
        """grad log p_t(x) = (alpha x0_hat - x) / sigma^2."""
        a, sg = self._coeffs(t, x)
        return (a * self.denoise(x, t) - x) / (sg * sg)

    def velocity(self, x, t):
        """Probability-flow drift dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat."""
        a, sg, da, ds = self._coeffs(t, x, derivatives=True)
        x0 = self.denoise(x, t)
        return da * x0 + ds * (x - a * x0) / sg


class AnalyticModel(DenoiserModel):
    """The exact posterior mean of a Gaussian mixture noised by a schedule."""

    smooth = True  # a ratio of Gaussian sums, smooth in x and in (alpha, sigma)
    times_per_particle = True  # GaussianMixture.noised takes one noise level per particle

    def __init__(self, target: GaussianMixture, schedule: Schedule):
        if not isinstance(target, GaussianMixture):
            raise ValueError(f"target must be a GaussianMixture, got {type(target).__name__}")
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        self.target = target
        self.schedule = schedule

    @property
    def dim(self) -> int:
        return self.target.dim

    def __repr__(self) -> str:
        return f"AnalyticModel({self.target!r}, {self.schedule!r})"

    def denoise(self, x, t):
        """E[x0 | x_t = x], exact."""
        a = self.schedule.alpha(t)
        if np.ndim(a) == 0 and float(a) == 0.0:  # x_t holds nothing of x0 (e.g. a point-mass base): the prior mean
            return np.broadcast_to(self.target.mean(), np.shape(x)).copy()
        return self.target.noised(x, a, self.schedule.sigma(t), need=("x0",))["x0"]

    def log_prob(self, x, t):
        """log p_t(x), the exact noised marginal density."""
        return self.target.noised(x, self.schedule.alpha(t), self.schedule.sigma(t), need=("log_prob",))[
            "log_prob"
        ]

    def prior_sample(self, n: int, rng, t=None, exact: bool = False):
        """Starting points at time t (default t_max): sigma(t) * N(0, I), or, with
        exact=True, draws from the true noised marginal p_t (no prior mismatch)."""
        from .random import as_generator

        rng = as_generator(rng)
        t = self.schedule.t_max if t is None else float(t)
        a, sg = float(self.schedule.alpha(t)), float(self.schedule.sigma(t))
        if exact:
            x0 = self.target.sample(n, rng)
            return a * x0 + sg * rng.standard_normal(x0.shape)
        return sg * rng.standard_normal((int(n), self.dim))
