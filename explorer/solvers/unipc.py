"""UniPC: a multistep exponential integrator in lambda with data prediction (UniP), and the
corrector UniC that raises its order by one with no extra model call.

Over a step h = lambda_{i+1} - lambda_i the probability-flow ODE is exactly
x_{i+1} = (sigma_{i+1}/sigma_i) x_i + alpha_{i+1} sum_{k>=0} h^{k+1} phi_{k+1}(-h) x0^(k)(lambda_i)
(x0^(k) the k-th lambda-derivative of x0_hat). UniP keeps the k = 0 term exactly (the DDIM step)
and replaces the rest by -alpha_{i+1} B(h) sum_m rho_m D_m with divided differences
D_m = (x0_m - x0_i) / r_m of earlier points at lambda_i + r_m h; matching the Taylor terms
gives the moment conditions sum_m rho_m r_m^{k-1} = k! (-h) phi_{k+1}(-h) / B(h), k = 1..p-1.
UniC redoes the step with the evaluation at the predicted point as one more node (r = 1).

Recorded: x at t_{i+1} is the corrected state (the one the next step starts from), the last one
uncorrected; the x0-prediction of step i was evaluated at the predicted state x~_i, as in the paper.
"""

from __future__ import annotations

import math

import numpy as np

from .common import combine, grid
from .registry import Option, solver

UNIPC = "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models"


def phi(j: int, z: float) -> float:
    """phi_j(z) = int_0^1 e^{(1-u) z} u^{j-1} / (j-1)! du; phi_1(z) = (e^z - 1)/z,
    phi_{j+1}(z) = (phi_j(z) - 1/j!) / z (a Taylor series for small |z|, where that recursion cancels)."""
    if abs(z) < 1.0:  # sum_m z^m / (m + j)!, converged to round-off by m = 25
        term = total = 1.0 / math.factorial(j)
        for m in range(1, 25):
            term *= z / (m + j)
            total += term
        return total
    value = math.expm1(z) / z
    for k in range(1, j):
        value = (value - 1.0 / math.factorial(k)) / z
    return value


def moment_weights(nodes, targets) -> list[float]:
    """The weights w with sum_m w_m nodes_m^k = targets_k, k = 0..K-1 (K = len(nodes))."""
    nodes = np.asarray(nodes, dtype=np.float64)
    powers = nodes[None, :] ** np.arange(len(nodes))[:, None]
    return np.linalg.solve(powers, np.asarray(targets, dtype=np.float64)).tolist()


def unip(g, i: int, x, lams: list, d_hist: list, variant: str):
    """UniP-p's step i from the buffer (lambda and x0_hat at the last p grid points, newest first):
    returns the predicted state and unic(d_next), UniC-p's corrected state given the evaluation
    d_next at the predicted point (which joins as the node r = 1)."""
    d, p = d_hist[0], len(d_hist)
    h = g.lam[i + 1] - g.lam[i]
    hh = -h  # data prediction integrates e^{-(lambda_{i+1} - lambda)}
    B = hh if variant == "bh1" else math.expm1(hh)
    r = [(lam - g.lam[i]) / h for lam in lams[1:]]
    D = [(d_m - d) / r_m for d_m, r_m in zip(d_hist[1:], r)]
    b = [math.factorial(k) * hh * phi(k + 1, hh) / B for k in range(1, p + 1)]
    # First-order (DDIM) part, exact for constant x0_hat.
    x_ddim = (g.sigma[i + 1] / g.sigma[i]) * x - g.alpha[i + 1] * math.expm1(hh) * d

    # UniP-p predictor: p - 1 earlier points (rho = 1/2 at p = 2, the paper's simplification).
    x_pred = x_ddim
    if p >= 2:
        rho = [0.5] if p == 2 else moment_weights(r, b[: p - 1])
        x_pred = x_ddim - g.alpha[i + 1] * B * combine(rho, D)

    def unic(d_next):
        # UniC-p corrector.
        rho_c = [0.5] if p == 1 else moment_weights(r + [1.0], b)
        return x_ddim - g.alpha[i + 1] * B * combine(rho_c, D + [d_next - d])

    return x_pred, unic


@solver(
    "unipc", order=lambda o: o["order"] + int(o["corrector"]), multistep=True, reference=UNIPC,
    summary=(
        "UniPC-p: the multistep predictor UniP of order p in lambda (data prediction), each step "
        "but the last corrected by UniC with the next step's own evaluation, which raises the "
        "order to p + 1 at no extra cost (order 4 with the defaults; p without the corrector)."
    ),
    options=[
        Option("order", "int", 3, "order p of the predictor UniP (warm-up with lower orders)", 1, 3),
        Option(
            "variant", "choice", "bh1",
            "B(h) in the update: bh1 = h (the paper's choice for unconditional sampling), "
            "bh2 = e^h - 1 (for guided sampling)",
            choices=("bh1", "bh2"),
        ),
        Option("corrector", "bool", True, "apply UniC after every step but the last (free: reuses the next evaluation)"),
    ],
)
def unipc(model, x, ts, rng, record, order=3, variant="bh1", corrector=True):
    g = grid(model.schedule, ts)
    n = len(ts) - 1
    lams, d_hist = [], []  # the last `order` grid points' lambda and x0_hat, newest first
    d = None
    for i in range(n):
        if d is None:
            d = model.denoise(x, ts[i])
        lams.insert(0, g.lam[i])
        d_hist.insert(0, d)
        del lams[order:], d_hist[order:]  # this step's order: lower while the history is short
        x_pred, unic = unip(g, i, x, lams, d_hist, variant)

        if not corrector or i == n - 1:  # the last step is not corrected: it would cost an evaluation
            x = record(i, x_pred, d)
            d = None
            continue

        # UniC-p corrector: the evaluation at the predicted point joins as the node r = 1.
        d_next = model.denoise(x_pred, ts[i + 1])
        x_corr = unic(d_next)
        x = record(i, x_corr, d)
        # The next predictor reuses the evaluation at the predicted point (UniPC's free
        # correction), unless a corrector moved the state: then it evaluates afresh.
        d = d_next if x is x_corr else None
