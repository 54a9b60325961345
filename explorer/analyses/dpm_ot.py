"""DPM-OT (Li et al., "DPM-OT: A New Diffusion Probabilistic Model Based on Optimal Transport", ICCV 2023; code
cognaclee/DPM-OT, ot_utils/optimal_transport.py), written here from the paper and that file.

A cache of M intermediate states y_i ~ p_{t_k} is made once by running the full sampler from noise down to t_k
(the cost of the cache: M x its steps evaluations). A semi-discrete optimal transport map sends fresh uniform noise
u in [0, 1]^D (the official source; the Gaussian alternative is commented out there) to the cache:

    T(u) = y_{i*},   i* = argmax_i <y_i, u> + h_i,

the Brenier potential's intercepts h fitted so that every cell {u : i* = i} holds mass 1/M. The fit is the
official one: the gradient of the (convex) energy in h is (cell masses by Monte Carlo) - 1/M, and h moves by an Adam
step on it (betas 0.9, 0.999), centred to mean 0. From T(u) at t_k a few solver steps reach the data: the cells
never straddle two modes' cached states' regions the way one ODE step from pure noise straddles them, so the
expressway avoids mode mixture, at the price of the cache and of only M distinct starting points.
"""

from __future__ import annotations

import numpy as np

from ..foundations.random import as_generator
from ..foundations.timesteps import timesteps
from ..solvers.sampling import sample


def make_cache(model, m: int, t_k: float, n_steps: int = 50, solver: str = "dpmpp-2m", seed=0):
    """(M, D) states at t_k by the full sampler from sigma_T N(0, I) (n_steps on t_max -> t_k), and the evaluations
    it spent (the cache's cost)."""
    s = model.schedule
    if not s.t_min < float(t_k) < s.t_max:
        raise ValueError(f"t_k must lie inside ({s.t_min}, {s.t_max}), got {t_k!r}")
    rng = as_generator(seed)
    x_T = float(s.sigma(s.t_max)) * rng.standard_normal((int(m), model.dim))
    traj = sample(model, x_T, timesteps(s, int(n_steps), t_end=float(t_k)), solver, rng=rng)
    return np.asarray(traj.x[-1]), int(traj.nfe) * int(m)


def assign(u, y, h, chunk: int = 4096) -> np.ndarray:
    """i*(u) = argmax_i <y_i, u> + h_i for every row of u (the semi-discrete OT map's cell)."""
    u = np.asarray(u, dtype=np.float64)
    out = np.empty(len(u), dtype=np.int64)
    for a in range(0, len(u), chunk):
        out[a:a + chunk] = np.argmax(u[a:a + chunk] @ y.T + h, axis=1)
    return out


def fit_map(y, iters: int = 2000, batch: int = 20000, lr: float = 1e-2, seed=0, progress=None) -> np.ndarray:
    """The intercepts h (M,) of the semi-discrete OT map from uniform [0, 1]^D to the uniform measure on the cache y,
    by the official Adam ascent on the cell masses (Monte Carlo with `batch` fresh uniforms per iteration)."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or len(y) < 2:
        raise ValueError(f"y must be an (M, D) cache of at least 2 states, got shape {y.shape}")
    rng = as_generator(seed)
    M = len(y)
    h = np.zeros(M)
    m1, m2 = np.zeros(M), np.zeros(M)
    for it in range(int(iters)):
        # Gradient of the energy: each cell's Monte Carlo mass minus its target 1/M.
        mass = np.bincount(assign(rng.random((int(batch), y.shape[1])), y, h), minlength=M) / int(batch)
        g = mass - 1.0 / M
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        h = h - lr * m1 / (np.sqrt(m2) + 1e-8)
        h -= h.mean()
        if progress is not None:
            progress(it + 1, int(iters), float(np.abs(g).max() * M))
    return h


def fit_map_exact(y, n: int = 20000, seed=0) -> np.ndarray:
    """The intercepts h (M,) from POT's exact discrete OT (ot.emd, squared Euclidean cost) between n uniforms on
    [0, 1]^D and the cache: its dual potential v on the cache gives argmin_i |u - y_i|^2 - v_i, i.e.
    h_i = (v_i - |y_i|^2) / 2. Not the official fit (which is fit_map): a check on it, and a quicker way to the
    same map where the Monte Carlo ascent converges slowly."""
    from .pot import pot

    ot = pot()

    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or len(y) < 2:
        raise ValueError(f"y must be an (M, D) cache of at least 2 states, got shape {y.shape}")
    u = as_generator(seed).random((int(n), y.shape[1]))
    _, log = ot.emd(np.full(len(u), 1.0 / len(u)), np.full(len(y), 1.0 / len(y)), ot.dist(u, y, metric="sqeuclidean"),
                    numItermax=10_000_000, log=True)
    h = 0.5 * (np.asarray(log["v"]) - np.sum(y * y, axis=1))
    return h - h.mean()


def cell_masses(y, h, n: int = 200000, seed=1) -> np.ndarray:
    """Monte Carlo masses of the cells under uniform [0, 1]^D (1/M each when the map is fitted)."""
    rng = as_generator(seed)
    return np.bincount(assign(rng.random((int(n), y.shape[1])), y, h), minlength=len(y)) / int(n)


def sample_dpm_ot(model, y, h, t_k: float, n: int, n_steps: int, solver: str = "dpmpp-2m", seed=0):
    """DPM-OT sampling: T(u) for n fresh uniforms (no model evaluation), then n_steps of the solver from t_k to
    t_min. Returns the Trajectory of the solver part (its nfe is the sampler's NFE)."""
    rng = as_generator(seed)
    start = y[assign(rng.random((int(n), y.shape[1])), y, h)]
    s = model.schedule
    return sample(model, start, timesteps(s, int(n_steps), t_start=float(t_k)), solver, rng=rng)
