"""DEIS: the exponential integrator with eps_hat extrapolated by a polynomial in t (tAB-DEIS).

The probability-flow ODE is semilinear: with rho = sigma / alpha,
x_{i+1} = (alpha_{i+1} / alpha_i) x_i + alpha_{i+1} int_{t_i}^{t_{i+1}} rho'(tau) eps_hat(tau) dtau.
tAB-DEIS of order k replaces eps_hat by the Lagrange polynomial in t through the last k
evaluations, x_{i+1} = (alpha_{i+1} / alpha_i) x_i + sum_j C_ij eps_{i-j}, with the weights
C_ij = alpha_{i+1} int rho'(tau) l_j(tau) dtau computed at each step by quadrature.

Quadrature: Gauss-Legendre in lambda, where rho' dtau = -e^{-lambda} dlambda and the
integrand -e^{-lambda} l_j(t(lambda)) is analytic in a strip around the real axis (|Im| < pi/2
for the VP schedules, entire for EDM/VE), so 32 nodes converge to round-off on any step;
in t, rho' ~ 1/sqrt(t) for VP has a branch point at t = 0 next to long final steps.
(Discrete schedules have kinks at integer t, where the rule is accurate but not exact.)
"""

from __future__ import annotations

import numpy as np

from .basic import _ddim_step
from .common import grid
from .registry import Option, solver

DEIS = "Fast Sampling of Diffusion Models with Exponential Integrator"
GAUSS_NODES = 32


def tab_weights(schedule, t_poly, lam_from: float, lam_to: float, n_nodes: int = GAUSS_NODES) -> np.ndarray:
    """int_{t(lam_from)}^{t(lam_to)} rho'(tau) l_j(tau) dtau for each j: the DEIS weights C_ij / alpha_{i+1}.

    l_j is the Lagrange basis polynomial in t through the times t_poly (newest first). The
    weights sum to e^{-lam_to} - e^{-lam_from}, the increment of rho = sigma / alpha.
    """
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    mid, half = 0.5 * (lam_from + lam_to), 0.5 * (lam_to - lam_from)
    lam = mid + half * x
    tau = np.asarray(schedule.t_of_lambda(lam), dtype=np.float64)
    dens = -np.exp(-lam) * (half * w)  # rho'(tau) dtau = -e^{-lambda} dlambda
    t_poly = np.asarray(t_poly, dtype=np.float64)
    out = np.empty(len(t_poly))
    for j, t_j in enumerate(t_poly):
        basis = np.ones_like(tau)
        for m, t_m in enumerate(t_poly):
            if m != j:
                basis *= (tau - t_m) / (t_j - t_m)
        out[j] = np.sum(dens * basis)
    return out


@solver(
    "deis", order=lambda o: o["order"], multistep=True, reference=DEIS,
    summary="tAB-DEIS: exponential integrator with eps_hat extrapolated by a polynomial in t through the "
    "last `order` evaluations (warm-up with lower orders); order 1 is DDIM.",
    options=[Option("order", "int", 3, "degree + 1 of the polynomial in t that extrapolates eps_hat", 1, 3)],
)
def deis(model, x, ts, rng, record, order=3):
    g = grid(model.schedule, ts)
    eps_hist = []  # eps_hat at t_{i-1}, t_{i-2}, ... (newest first)
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        eps = (x - g.alpha[i] * d) / g.sigma[i]
        k = min(order, i + 1)  # warm-up: lower orders while the history is short
        # With sum_j C_ij = alpha_{i+1} (rho_{i+1} - rho_i), the update is the DDIM step from
        # eps_i plus sum_{j >= 1} C_ij (eps_{i-j} - eps_i); for k = 1 it is DDIM exactly.
        x_next = _ddim_step(g, i, x, d, 0.0, rng)
        if k > 1:
            C = tab_weights(model.schedule, g.t[i - k + 1 : i + 1][::-1], g.lam[i], g.lam[i + 1])
            for j in range(1, k):
                x_next = x_next + (g.alpha[i + 1] * float(C[j])) * (eps_hist[j - 1] - eps)
        x = record(i, x_next, d)
        eps_hist = [eps] + eps_hist[: order - 1]
