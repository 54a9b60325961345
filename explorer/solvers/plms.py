"""PLMS: Adams-Bashforth on eps in the DDIM variable.

With y = x / alpha and s = sigma / alpha (= e^{-lambda}), the probability-flow ODE is
exactly dy/ds = eps_hat(x, t): DDIM is Euler's method in (s, y). PLMS (PNDM's pseudo
linear multistep method) replaces eps_hat over the step by the Adams-Bashforth
extrapolation of the last k values of eps_hat. The coefficients are the variable-step
ones (the integral over [s_i, s_{i+1}] of the polynomial through the last k points), so
the method keeps order k on any grid; on a grid uniform in s they are the classical
(55, -59, 37, -9) / 24 of PNDM.
"""

from __future__ import annotations

import numpy as np

from .common import grid
from .registry import Option, solver

PNDM = "Pseudo Numerical Methods for Diffusion Models on Manifolds"


def adams_weights(nodes, a: float, b: float) -> list[float]:
    """w_j such that sum_j w_j f_j = the mean over [a, b] of the polynomial through (nodes_j, f_j).

    The weights sum to 1 (one node: Euler). Multiplied by (b - a) they integrate: the
    Adams-Bashforth weights. Computed in u = (s - a) / (b - a) for conditioning."""
    u = [(s - a) / (b - a) for s in nodes]
    weights = []
    for j, uj in enumerate(u):
        others = [um for m, um in enumerate(u) if m != j]
        basis = np.poly1d(np.poly(others) if others else [1.0])  # prod_{m != j} (u - u_m)
        denom = float(np.prod([uj - um for um in others])) if others else 1.0
        antiderivative = np.polyint(basis)
        weights.append(float(antiderivative(1.0) - antiderivative(0.0)) / denom)
    return weights


def ddim_variable(g) -> list[float]:
    """s_i = sigma_i / alpha_i on the grid: the time variable in which DDIM is Euler."""
    return [sg / a for sg, a in zip(g.sigma, g.alpha)]


def adams_slope(s, i: int, history: list) -> object:
    """The mean over [s_i, s_{i+1}] of the Adams-Bashforth polynomial through history:
    the slope that PLMS steps with, y_{i+1} = y_i + (s_{i+1} - s_i) * slope.

    history holds eps_hat at s_{i-k+1}, ..., s_i (oldest first)."""
    k = len(history)
    w = adams_weights(s[i - k + 1 : i + 1], s[i], s[i + 1])
    slope = w[-1] * history[-1]
    for wj, ej in zip(w[:-1], history[:-1]):
        slope = slope + wj * ej
    return slope


@solver(
    "plms", order=lambda o: o["order"], multistep=True, reference=PNDM,
    summary="PLMS: Adams-Bashforth (orders 1-4, variable-step) on eps in the DDIM variable sigma/alpha; "
    "warms up with lower orders (PNDM warms up with Runge-Kutta steps instead). Order 1 is DDIM.",
    options=[Option("order", "int", 4, "Adams-Bashforth order: number of past eps values extrapolated", 1, 4)],
)
def plms(model, x, ts, rng, record, order=4):
    g = grid(model.schedule, ts)
    s = ddim_variable(g)
    history = []  # eps_hat at the last `order` grid times
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        history = (history + [(x - g.alpha[i] * d) / g.sigma[i]])[-order:]
        # Adams-Bashforth step in y = x / alpha (lower order while the history is short).
        y = x / g.alpha[i] + (s[i + 1] - s[i]) * adams_slope(s, i, history)
        x = record(i, g.alpha[i + 1] * y, d)
