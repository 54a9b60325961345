"""Exponential integrators in lambda with data prediction (DPM-Solver++).

With y = x / sigma, the probability-flow ODE is exactly dy/dlambda = e^lambda x0_hat,
so x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h} - 1) D for a step h in lambda,
where D approximates x0_hat over the step.
"""

from __future__ import annotations

import math

from ..foundations.random import standard_normal_like
from .common import grid
from .registry import Option, solver

DPMPP = "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models"


def dpmpp_2m_combination(d, old_d, h: float, h_last):
    """DPM-Solver++(2M)'s x0 estimate over a step h in lambda: d itself on the first step, then
    (1 + 1/(2r)) d - 1/(2r) d_old with r = h_last / h."""
    if old_d is None:
        return d  # warm-up: first-order (DDIM) step
    r = h_last / h
    return (1.0 + 0.5 / r) * d - (0.5 / r) * old_d


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
        D = dpmpp_2m_combination(d, old_d, h, h_last)
        x = (g.sigma[i + 1] / g.sigma[i]) * x - g.alpha[i + 1] * math.expm1(-h) * D
        x = record(i, x, d)
        old_d, h_last = d, h


@solver(
    "dpmpp-2s", order=2, nfe_per_step=2, reference=DPMPP,
    summary="DPM-Solver++(2S): second-order singlestep, x0_hat taken at the midpoint in lambda (r = 1/2).",
)
def dpmpp_2s(model, x, ts, rng, record):
    s, g, r = model.schedule, grid(model.schedule, ts), 0.5
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        h = g.lam[i + 1] - g.lam[i]
        # Intermediate time s_i = t_lambda(lambda_i + r h_i), reached by a first-order step.
        s_i = float(s.t_of_lambda(g.lam[i] + r * h))
        a_s, sg_s = float(s.alpha(s_i)), float(s.sigma(s_i))
        u = (sg_s / g.sigma[i]) * x - a_s * math.expm1(-r * h) * d
        d_s = model.denoise(u, s_i)
        # D_i = (1 - 1/(2r)) x0(x_i) + 1/(2r) x0(u_i), then the full step.
        D = (1.0 - 0.5 / r) * d + (0.5 / r) * d_s
        x = (g.sigma[i + 1] / g.sigma[i]) * x - g.alpha[i + 1] * math.expm1(-h) * D
        x = record(i, x, d)


def phi(k: int, z: float) -> float:
    """phi_k(z) for k = 1, 2, 3: phi_1(z) = (e^z - 1) / z, phi_{k+1}(z) = (phi_k(z) - 1/k!) / z,
    so that h^k phi_k(-h) = int_0^h e^{-(h - tau)} tau^{k-1} / (k-1)! dtau."""
    out = math.expm1(z) / z
    if k >= 2:
        out = (out - 1.0) / z
    if k >= 3:
        out = (out - 0.5) / z
    return out


def dpmpp_multistep_update(g, i, x, d, history, form="taylor"):
    """x_{i+1} from x_i by DPM-Solver++ multistep of the highest order the history allows (<= 3).

    history: [(x0_hat, lambda) of step i-1, of step i-2] (as many as exist). With
    D1 ~ h x0', D2 ~ h^2 x0''/2 the divided differences in lambda, the Taylor expansion of
    x_{i+1} = (sigma_{i+1}/sigma_i) x_i + alpha_{i+1} int_0^h e^{-(h-tau)} x0_hat dtau gives
    alpha_{i+1} [h phi_1 x0_hat + h phi_2 D1 + 2 h phi_3 D2] (phi_k at -h). form="dpm-solver-code"
    uses h phi_3 D2 instead, the coefficient in the DPM-Solver code (and diffusers, k-diffusion).
    """
    h = g.lam[i + 1] - g.lam[i]
    a1 = g.alpha[i + 1]
    out = (g.sigma[i + 1] / g.sigma[i]) * x - a1 * math.expm1(-h) * d  # first order: DDIM
    if not history:
        return out
    d_1, lam_1 = history[0]
    r0 = (g.lam[i] - lam_1) / h
    D1_0 = (1.0 / r0) * (d - d_1)
    if len(history) == 1:
        # Second order: DPM-Solver++(2M), the midpoint form of dpmpp-2m.
        return out - 0.5 * a1 * math.expm1(-h) * D1_0
    d_2, lam_2 = history[1]
    r1 = (lam_1 - lam_2) / h
    D1_1 = (1.0 / r1) * (d_1 - d_2)
    D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
    D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1)
    c2 = (2.0 if form == "taylor" else 1.0) * h * phi(3, -h)
    return out + a1 * (h * phi(2, -h)) * D1 + a1 * c2 * D2


@solver(
    "dpmpp-3m", order=lambda o: 3 if o["form"] == "taylor" else 2, multistep=True, reference=DPMPP,
    summary="DPM-Solver++(3M): third-order multistep, x0_hat extrapolated in lambda from the last three "
    "steps (warm-up: DDIM, then 2M).",
    options=[
        Option(
            "form", "choice", "taylor",
            "second-difference term: 'taylor' (2 h phi_3 D2, third order) or 'dpm-solver-code' "
            "(h phi_3 D2 as in the DPM-Solver code, diffusers and k-diffusion: globally second order)",
            choices=("taylor", "dpm-solver-code"),
        )
    ],
)
def dpmpp_3m(model, x, ts, rng, record, form="taylor"):
    g = grid(model.schedule, ts)
    history = []  # (x0_hat, lambda) of the last two steps, newest first
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        x = dpmpp_multistep_update(g, i, x, d, history, form)
        x = record(i, x, d)
        history = [(d, g.lam[i])] + history[:1]


@solver(
    "dpmpp-2m-sde", order=lambda o: 2 if o["eta"] == 0 else 1, multistep=True, reference=DPMPP, stochastic=lambda o: o["eta"] > 0,
    summary="DPM-Solver++(2M) SDE: the 2M update on the reverse SDE with fresh noise each step "
    "(eta = 1 the paper's SDE solver, eta = 0 the ODE solver dpmpp-2m).",
    options=[
        Option("eta", "float", 1.0, "stochasticity: 1 the reverse SDE, 0 the probability-flow ODE (= dpmpp-2m)",
               0.0, 1.0),
        Option(
            "solver_type", "choice", "midpoint", "second-order term: midpoint (as in 2M) or heun (the phi_2 form)",
            choices=("midpoint", "heun"),
        ),
    ],
)
def dpmpp_2m_sde(model, x, ts, rng, record, eta=1.0, solver_type="midpoint"):
    g = grid(model.schedule, ts)
    old_d, h_last = None, None
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        h = g.lam[i + 1] - g.lam[i]
        H = (1.0 + eta) * h  # the SDE contracts x by a further e^{-eta h}
        c = -g.alpha[i + 1] * math.expm1(-H)  # alpha_{i+1} (1 - e^{-(1 + eta) h})
        x = (g.sigma[i + 1] / g.sigma[i]) * math.exp(-eta * h) * x + c * d
        if old_d is not None:
            # Second-order term from the previous x0_hat.
            D1 = (h / h_last) * (d - old_d)
            if solver_type == "midpoint":
                x = x + 0.5 * c * D1
            else:
                x = x + g.alpha[i + 1] * (H * phi(2, -H)) * D1
        if eta > 0:
            # Fresh noise: sigma_{i+1} sqrt(1 - e^{-2 eta h}) z.
            x = x + g.sigma[i + 1] * math.sqrt(-math.expm1(-2.0 * eta * h)) * standard_normal_like(x, rng)
        x = record(i, x, d)
        old_d, h_last = d, h
