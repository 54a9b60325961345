"""First- and second-order solvers: Euler and Heun in the schedule's own time,
DDIM / DDPM as exponential-integrator steps, Euler-Maruyama on the reverse SDE."""

from __future__ import annotations

import math

from ..foundations.random import standard_normal_like
from .common import grid, pf_drift
from .registry import Option, solver

EDM = "Elucidating the Design Space of Diffusion-Based Generative Models"
SCORE_SDE = "Score-Based Generative Modeling through Stochastic Differential Equations"


@solver("euler", order=1, reference=EDM, summary="Euler steps on the probability-flow ODE in t.")
def euler(model, x, ts, rng, record):
    s = model.schedule
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        # Euler step.
        x = x + (ts[i + 1] - ts[i]) * pf_drift(s, x, d, ts[i])
        x = record(i, x, d)


@solver(
    "heun", order=2, nfe_per_step=2, reference=EDM,
    summary="Heun's method (EDM Algorithm 1): an Euler step, then the trapezoidal correction.",
)
def heun(model, x, ts, rng, record):
    s = model.schedule
    for i in range(len(ts) - 1):
        h = ts[i + 1] - ts[i]
        d = model.denoise(x, ts[i])
        v = pf_drift(s, x, d, ts[i])
        # Euler step.
        x_next = x + h * v
        # Apply 2nd order correction.
        d_next = model.denoise(x_next, ts[i + 1])
        x = x + h * 0.5 * (v + pf_drift(s, x_next, d_next, ts[i + 1]))
        x = record(i, x, d)


def _ddim_step(g, i, x, d, eta, rng, noise_scale=None):
    """x_{i+1} = alpha' x0_hat + sqrt(sigma'^2 - c^2) eps_hat + c' z, the DDIM update in any schedule.

    c = eta sigma' sqrt(1 - e^{-2h}) (h the lambda step) is DDIM's sigma_eta; eta = 1 is
    DDPM's posterior q(x_{i+1} | x_i, x0_hat). c' = noise_scale, if given, else c.
    """
    a, sg, a1, s1 = g.alpha[i], g.sigma[i], g.alpha[i + 1], g.sigma[i + 1]
    eps = (x - a * d) / sg
    c = eta * s1 * math.sqrt(-math.expm1(-2.0 * (g.lam[i + 1] - g.lam[i])))
    out = a1 * d + math.sqrt(max(s1 * s1 - c * c, 0.0)) * eps
    c_noise = c if noise_scale is None else noise_scale
    if c_noise > 0:
        out = out + c_noise * standard_normal_like(x, rng)
    return out


@solver(
    "ddim", order=1, reference="Denoising Diffusion Implicit Models", stochastic=lambda o: o["eta"] > 0,
    summary="DDIM: first-order exponential integrator (eta = 0), ancestral noise for eta > 0.",
    options=[Option("eta", "float", 0.0, "fresh noise: 0 deterministic, 1 the DDPM posterior", 0.0, 1.0)],
)
def ddim(model, x, ts, rng, record, eta=0.0):
    g = grid(model.schedule, ts)
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        x = _ddim_step(g, i, x, d, eta, rng)
        x = record(i, x, d)



@solver(
    "ddpm", order=1, stochastic=True, reference="Denoising Diffusion Probabilistic Models",
    summary="DDPM ancestral sampling: a draw from the posterior q(x_s | x_t, x0_hat) at every step.",
    options=[
        Option(
            "variance", "choice", "posterior",
            "noise variance: the posterior's beta-tilde, or the larger beta (DDPM's two choices)",
            choices=("posterior", "beta"),
        )
    ],
)
def ddpm(model, x, ts, rng, record, variance="posterior"):
    g = grid(model.schedule, ts)
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        noise = None
        if variance == "beta":  # beta_t = sigma_t^2 (1 - e^{-2h}) in any schedule
            noise = g.sigma[i] * math.sqrt(-math.expm1(-2.0 * (g.lam[i + 1] - g.lam[i])))
        x = _ddim_step(g, i, x, d, 1.0, rng, noise_scale=noise)
        x = record(i, x, d)


@solver(
    "euler-maruyama", order=1, stochastic=True, reference=SCORE_SDE,
    summary="Euler-Maruyama on the reverse-time SDE dx = [f x - g^2 score] dt + g dw.",
)
def euler_maruyama(model, x, ts, rng, record):
    s = model.schedule
    for i in range(len(ts) - 1):
        t, dt = ts[i], ts[i + 1] - ts[i]
        a, sg = float(s.alpha(t)), float(s.sigma(t))
        f = float(s.d_alpha(t)) / a
        g2 = 2.0 * sg * float(s.d_sigma(t)) - 2.0 * f * sg * sg  # g(t)^2 = d sigma^2/dt - 2 f sigma^2
        d = model.denoise(x, t)
        score = (a * d - x) / (sg * sg)
        x = x + (f * x - g2 * score) * dt + math.sqrt(g2 * -dt) * standard_normal_like(x, rng)
        x = record(i, x, d)
