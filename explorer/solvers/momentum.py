"""Heavy Ball (HB) and Generalized Heavy Ball (GHVB) momentum for diffusion ODE solvers.

Both damp the oscillations that make high-order multistep methods diverge at low step
counts (their stability regions are small) by averaging over past steps:
- HB keeps a velocity v <- (1 - beta) v + beta * (the base method's combined slope) and
  moves x by v. It is first order for any beta < 1 (the velocity lags the slope by O(h)).
- GHVB averages eps_hat itself, v_n = (1 - beta) v_{n-1} + beta eps_n, and then applies an
  Adams-Bashforth-like extrapolation to the v's whose coefficients undo that lag: order k.
beta = 1 is the base method exactly. Steps are in the DDIM variable s = sigma / alpha
(PLMS bases, GHVB) or in r = alpha / sigma = e^lambda (DPM-Solver++(2M) base), where
the ODE reads dy/ds = eps_hat (y = x / alpha) or dy/dr = x0_hat (y = x / sigma).

Choices made here where the paper's code leaves room: the velocity starts as the first
step's slope (so the first step is the base's DDIM step, also for a dpmpp-2m base, where
the official code starts it at the first second-order step); coefficients are for variable
steps (GHVB: the integral form below), equal to the paper's on uniform steps in s.
"""

from __future__ import annotations

import math

from .common import grid
from .exponential import dpmpp_2m_combination
from .plms import adams_slope, adams_weights, ddim_variable
from .registry import Option, solver

MOMENTUM = "Diffusion Sampling with Momentum for Mitigating Divergence Artifacts"

BETA = Option("beta", "float", 0.8, "momentum damping: 1 is the base method, smaller averages over more past steps", 0.01, 1.0)


@solver(
    "heavy-ball", order=1, multistep=True, reference=MOMENTUM,
    summary="Heavy Ball momentum on a base multistep solver (PLMS order 1-4 or DPM-Solver++(2M)): "
    "the velocity averages the base method's slopes; first order for beta < 1, the base method at beta = 1.",
    options=[
        Option("base", "choice", "plms", "base solver whose combined slope gets momentum", choices=("plms", "dpmpp-2m")),
        Option("base_order", "int", 4, "Adams-Bashforth order of a plms base (ignored for dpmpp-2m)", 1, 4),
        BETA,
    ],
)
def heavy_ball(model, x, ts, rng, record, base="plms", base_order=4, beta=0.8):
    g = grid(model.schedule, ts)
    if base == "plms":
        s = ddim_variable(g)
        history, v = [], None
        for i in range(len(ts) - 1):
            d = model.denoise(x, ts[i])
            history = (history + [(x - g.alpha[i] * d) / g.sigma[i]])[-base_order:]
            slope = adams_slope(s, i, history)  # PLMS's eps combination: dy/ds over the step
            # Heavy Ball: the velocity follows the base slope (the first step starts it).
            v = slope if v is None else (1.0 - beta) * v + beta * slope
            x = record(i, g.alpha[i + 1] * (x / g.alpha[i] + (s[i + 1] - s[i]) * v), d)
        return
    old_d, h_last, v = None, None, None
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        h = g.lam[i + 1] - g.lam[i]
        D = dpmpp_2m_combination(d, old_d, h, h_last)
        # Heavy Ball on DPM-Solver++(2M)'s x0 combination (the first step starts the velocity).
        v = D if v is None else (1.0 - beta) * v + beta * D
        x = (g.sigma[i + 1] / g.sigma[i]) * x - g.alpha[i + 1] * math.expm1(-h) * v
        x = record(i, x, d)
        old_d, h_last = d, h


def ghvb_weights(s, i: int, k: int, beta: float) -> list[float]:
    """c_j with y_{i+1} = y_i + (s_{i+1} - s_i) sum_j c_j v_{i-k+1+j} (oldest first): GHVB of order k.

    Model: eps_n = (V(s_n) - (1 - beta) V(s_{n-1})) / beta for a smooth V through the
    velocities, so the mean of eps over the step is (1 / beta) [mean of P over [s_i, s_{i+1}]
    - (1 - beta) mean of P over [s_{i-1}, s_i]], P the polynomial through the last k
    velocities. On uniform steps these are the paper's coefficients, e.g. order 2:
    ((2 + beta) v_i - (2 - beta) v_{i-1}) / (2 beta); beta = 1 gives Adams-Bashforth."""
    nodes = s[i - k + 1 : i + 1]
    ahead = adams_weights(nodes, s[i], s[i + 1])
    if k == 1 or beta == 1.0:
        behind = [0.0] * (k - 1) + [1.0]  # P constant (or unused): its mean is v_i
    else:
        behind = adams_weights(nodes, s[i - 1], s[i])
    return [(a - (1.0 - beta) * b) / beta for a, b in zip(ahead, behind)]


@solver(
    "ghvb", order=lambda o: o["order"], multistep=True, reference=MOMENTUM,
    summary="Generalized Heavy Ball: momentum on eps_hat, then an Adams-Bashforth-like extrapolation of the "
    "velocities that keeps the order (1-4); beta = 1 is PLMS of that order.",
    options=[Option("order", "int", 4, "order of the extrapolation (number of past velocities)", 1, 4), BETA],
)
def ghvb(model, x, ts, rng, record, order=4, beta=0.8):
    g = grid(model.schedule, ts)
    s = ddim_variable(g)
    velocities, v = [], None
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        eps = (x - g.alpha[i] * d) / g.sigma[i]
        # Momentum on eps_hat (the first step starts the velocity at eps_hat).
        v = eps if v is None else (1.0 - beta) * v + beta * eps
        velocities = (velocities + [v])[-order:]
        # Generalized Adams-Bashforth step on the velocities, in y = x / alpha.
        c = ghvb_weights(s, i, len(velocities), beta)
        slope = c[-1] * velocities[-1]
        for cj, vj in zip(c[:-1], velocities[:-1]):
            slope = slope + cj * vj
        x = record(i, g.alpha[i + 1] * (x / g.alpha[i] + (s[i + 1] - s[i]) * slope), d)
