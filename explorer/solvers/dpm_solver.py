"""Singlestep DPM-Solver with noise prediction (DPM-Solver-2 and -3).

With the exact solution of the probability-flow ODE in lambda,
x_t = (alpha_t / alpha_s) x_s - alpha_t int e^{-lambda} eps_hat dlambda, each step of order k
evaluates eps_hat at k - 1 intermediate times s = t_lambda(lambda_i + r h) inside the step
and combines them as the paper's Algorithms 1 and 2 (r1 = 1/2; r1 = 1/3, r2 = 2/3).
"""

from __future__ import annotations

import math

from .common import grid
from .registry import solver

DPM_SOLVER = "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps"


class _Stage:
    """alpha, sigma at an intermediate time t_lambda(lambda), and eps_hat there."""

    def __init__(self, model, lam: float):
        s = model.schedule
        self.t = float(s.t_of_lambda(lam))
        self.alpha, self.sigma = float(s.alpha(self.t)), float(s.sigma(self.t))

    def eps(self, model, u):
        return (u - self.alpha * model.denoise(u, self.t)) / self.sigma


@solver(
    "dpm-solver-2", order=2, nfe_per_step=2, reference=DPM_SOLVER,
    summary="DPM-Solver-2: second-order singlestep on eps_hat, intermediate point at r1 = 1/2 in lambda.",
)
def dpm_solver_2(model, x, ts, rng, record):
    g, r1 = grid(model.schedule, ts), 0.5
    for i in range(len(ts) - 1):
        a, sg, a1, s1 = g.alpha[i], g.sigma[i], g.alpha[i + 1], g.sigma[i + 1]
        d = model.denoise(x, ts[i])
        eps = (x - a * d) / sg
        h = g.lam[i + 1] - g.lam[i]
        # u_i = (alpha_s / alpha_i) x_i - sigma_s (e^{r1 h} - 1) eps_i at s_i = t_lambda(lambda_i + r1 h).
        st = _Stage(model, g.lam[i] + r1 * h)
        u = (st.alpha / a) * x - st.sigma * math.expm1(r1 * h) * eps
        eps_s = st.eps(model, u)
        # x_{i+1} = (alpha_{i+1} / alpha_i) x_i - sigma_{i+1} (e^h - 1) [eps_i + (eps_s - eps_i) / (2 r1)].
        x = (a1 / a) * x - s1 * math.expm1(h) * eps - (s1 / (2.0 * r1)) * math.expm1(h) * (eps_s - eps)
        x = record(i, x, d)


@solver(
    "dpm-solver-3", order=3, nfe_per_step=3, reference=DPM_SOLVER,
    summary="DPM-Solver-3: third-order singlestep on eps_hat, intermediate points at r1 = 1/3, r2 = 2/3 in lambda.",
)
def dpm_solver_3(model, x, ts, rng, record):
    g, r1, r2 = grid(model.schedule, ts), 1.0 / 3.0, 2.0 / 3.0
    for i in range(len(ts) - 1):
        a, sg, a1, s1 = g.alpha[i], g.sigma[i], g.alpha[i + 1], g.sigma[i + 1]
        d = model.denoise(x, ts[i])
        eps = (x - a * d) / sg
        h = g.lam[i + 1] - g.lam[i]
        # u_{2i-1}: a first-order step to s_{2i-1} = t_lambda(lambda_i + r1 h).
        st1 = _Stage(model, g.lam[i] + r1 * h)
        u1 = (st1.alpha / a) * x - st1.sigma * math.expm1(r1 * h) * eps
        D1 = st1.eps(model, u1) - eps
        # u_{2i}: to s_{2i} = t_lambda(lambda_i + r2 h), corrected with D_{2i-1}.
        st2 = _Stage(model, g.lam[i] + r2 * h)
        u2 = (
            (st2.alpha / a) * x - st2.sigma * math.expm1(r2 * h) * eps
            - st2.sigma * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1.0) * D1
        )
        D2 = st2.eps(model, u2) - eps
        # x_{i+1} with D_{2i}.
        x = (a1 / a) * x - s1 * math.expm1(h) * eps - (s1 / r2) * (math.expm1(h) / h - 1.0) * D2
        x = record(i, x, d)
