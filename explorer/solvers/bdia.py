"""BDIA-DDIM: time-symmetric DDIM updates that make sampling exactly invertible.

Bi-directional integration approximation: the integral over [t_{i+1}, t_i] is taken
partly from the last step actually made (x_{i-1} -> x_i) and partly from a backward DDIM
step from x_i, and the integral over [t_i, t_{i+1}] from the forward DDIM step:
    x_{i+1} = x_{i-1} - (1 - gamma)(x_{i-1} - x_i) - gamma Delta(t_i -> t_{i-1} | x_i) + Delta(t_i -> t_{i+1} | x_i)
            = DDIM(x_i; t_i -> t_{i+1}) + gamma (x_{i-1} - DDIM(x_i; t_i -> t_{i-1})),
with Delta(t_i -> t_j | x_i) = DDIM(x_i; t_i -> t_j) - x_i and the first step plain DDIM.
gamma = 0 is DDIM; gamma = 1 is the fully symmetric (leapfrog-like) update. For gamma > 0,
x_{i-1} = DDIM(x_i; t_i -> t_{i-1}) + (x_{i+1} - DDIM(x_i; t_i -> t_{i+1})) / gamma, so the
last two states determine every earlier one: `invert`. (The official README writes the
same update with gamma and 1 - gamma swapped; here gamma = 0 is DDIM and gamma = 1 the
symmetric update.)
"""

from __future__ import annotations

import numpy as np

from .basic import _ddim_step
from .common import grid
from .registry import Option, solver

BDIA = "Exact Diffusion Inversion via Bi-directional Integration Approximation"


def _ddim_to(g, i: int, j: int, x, d):
    """DDIM from t_i to the grid time t_j: alpha_j x0_hat + sigma_j eps_hat (forward: exactly `ddim`'s step)."""
    if j == i + 1:
        return _ddim_step(g, i, x, d, 0.0, None)
    return g.alpha[j] * d + g.sigma[j] * ((x - g.alpha[i] * d) / g.sigma[i])


@solver(
    "bdia", order=1, multistep=True, reference=BDIA,
    summary="BDIA-DDIM: each step adds a DDIM step forward to gamma times the mismatch of a DDIM step back; "
    "exactly invertible for gamma > 0 (ex.solvers.bdia.invert). gamma = 0 is DDIM; first order for "
    "gamma < 1, second order at gamma = 1, which is however unstable at low step counts (leapfrog's parasitic mode).",
    options=[Option("gamma", "float", 0.5, "weight of the backward (symmetric) part: 0 is DDIM, 1 fully time-symmetric", 0.0, 1.0)],
)
def bdia(model, x, ts, rng, record, gamma=0.5):
    g = grid(model.schedule, ts)
    x_prev = None
    for i in range(len(ts) - 1):
        d = model.denoise(x, ts[i])
        # Forward integration approximation: DDIM t_i -> t_{i+1}.
        x_next = _ddim_to(g, i, i + 1, x, d)
        if x_prev is not None:
            # Backward integration approximation: DDIM t_i -> t_{i-1}, compared with the state we came from.
            x_next = x_next + gamma * (x_prev - _ddim_to(g, i, i - 1, x, d))
        x_prev, x = x, record(i, x_next, d)


def invert(model, x_last, x_before_last, ts, gamma: float):
    """Every state of a `bdia` run on the grid ts, recovered from its last two states.

    x_last = traj.x[-1] and x_before_last = traj.x[-2] of `ex.sample(model, x_T, ts, "bdia",
    gamma=gamma)` (the same gamma: the default of the solver is 0.5); returns the states at ts[0], ..., ts[-1] stacked like traj.x, so that
    invert(...)[0] is x_T. Runs x_{i-1} = DDIM(x_i; t_i -> t_{i-1}) + (x_{i+1} - DDIM(x_i;
    t_i -> t_{i+1})) / gamma from the end, one model evaluation per step (at t_{n-1}, ..., t_1):
    exact up to round-off (no fixed-point iteration). Needs gamma > 0 and at least 2 steps
    (the first step is plain DDIM, whose start the second step's relation recovers).
    Round-off is amplified by up to (1 / gamma) per step: gamma = 1 inverts to machine
    precision over any number of steps, gamma = 0.5 only over a few (about 10).
    """
    gamma = float(gamma)
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must lie in (0, 1] to invert BDIA (gamma = 0 is DDIM), got {gamma!r}")
    ts = [float(t) for t in np.asarray(ts, dtype=np.float64)]
    n = len(ts) - 1
    if n < 2:
        raise ValueError(f"ts must have at least 3 times (2 steps) to invert BDIA, got {len(ts)}")
    g = grid(model.schedule, ts)
    states = [x_last, x_before_last]  # x_n, x_{n-1}, ... (latest first)
    for i in range(n - 1, 0, -1):
        x_i, x_after = states[-1], states[-2]
        d = model.denoise(x_i, ts[i])
        # Solve the BDIA step i (x_{i-1}, x_i -> x_{i+1}) for x_{i-1}.
        states.append(_ddim_to(g, i, i - 1, x_i, d) + (x_after - _ddim_to(g, i, i + 1, x_i, d)) / gamma)
    states.reverse()
    if isinstance(x_last, np.ndarray):
        return np.stack(states)
    import torch

    return torch.stack(states)
