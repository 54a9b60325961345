"""Exponential integrators in lambda with data prediction (DPM-Solver++).

With y = x / sigma, the probability-flow ODE is exactly dy/dlambda = e^lambda x0_hat,
so x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h} - 1) D for a step h in lambda,
where D approximates x0_hat over the step.
"""

from __future__ import annotations

import math

from .common import grid
from .registry import solver

DPMPP = "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models"


@solver(
    "dpmpp-2m", order=2, multistep=True, reference=DPMPP,
    summary="DPM-Solver++(2M): second-order multistep, x0_hat extrapolated from the last two steps.",
)
def dpmpp_2m(model, x, ts, rng, record):
    g = grid(model.schedule, ts)
    old_d, h_last = None, None
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        h = g.lam[i + 1] - g.lam[i]
        if old_d is None:
            D = d  # warm-up: first-order (DDIM) step
        else:
            r = h_last / h
            D = (1.0 + 0.5 / r) * d - (0.5 / r) * old_d
        x = (g.sigma[i + 1] / g.sigma[i]) * x - g.alpha[i + 1] * math.expm1(-h) * D
        x = record(i, x, d)
        old_d, h_last = d, h
