"""ex.sample: run any solver on any model and grid, and record the trajectory."""

from __future__ import annotations

import time

import numpy as np

from ..foundations.random import as_generator, standard_normal_like
from ..foundations.trajectory import Trajectory
from . import registry


class _Diverged(Exception):
    pass


class _CountedModel:
    """The model as a solver sees it: evaluations counted, times checked against the grid."""

    def __init__(self, model, t_lo: float, t_hi: float):
        self._model = model
        self.schedule = model.schedule
        self.nfe = 0
        self._lo = t_lo - 1e-12 * max(1.0, abs(t_lo))
        self._hi = t_hi + 1e-12 * max(1.0, abs(t_hi))
        # what the model declares about its field (explorer.foundations.analytic.DenoiserModel)
        self.smooth = bool(getattr(model, "smooth", False))
        self.times_per_particle = bool(getattr(model, "times_per_particle", False))

    def denoise(self, x, t):
        """One evaluation: at one time t, or (times_per_particle models) at an (N,) array of times."""
        if np.ndim(t) == 0:
            t = float(t)
            lo = hi = t
        else:
            t = np.asarray(t, dtype=np.float64)
            lo, hi = float(t.min()), float(t.max())
        if not (self._lo <= lo and hi <= self._hi):
            raise AssertionError(f"solver evaluated the model at t={lo if lo < self._lo else hi}, "
                                 f"outside the grid [{self._lo}, {self._hi}]")
        self.nfe += 1
        return self._model.denoise(x, t)


def _all_finite(x) -> bool:
    if isinstance(x, np.ndarray):
        return bool(np.isfinite(x).all())
    import torch

    return bool(torch.isfinite(x).all())


def _stack(items, like):
    if isinstance(like, np.ndarray):
        return np.stack(items)
    import torch

    return torch.stack(items)


def _nan_like(x):
    return x * float("nan")


def _check_inputs(model, x_T, ts):
    for method in ("denoise",):
        if not callable(getattr(model, method, None)) or getattr(model, "schedule", None) is None:
            raise ValueError("model must have a denoise(x, t) method and a .schedule")
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or len(ts) < 2:
        raise ValueError(f"ts must be a 1-D grid of at least 2 times, got shape {ts.shape}")
    if not np.all(np.isfinite(ts)):
        raise ValueError("ts contains NaN or inf")
    if not np.all(np.diff(ts) < 0):
        raise ValueError("ts must be strictly decreasing (sampling runs from noise toward data)")
    if isinstance(x_T, np.ndarray):
        if x_T.ndim < 2:
            raise ValueError(f"x_T must have shape (N, D) or (N, C, H, W), got {x_T.shape}")
        if not np.all(np.isfinite(x_T)):
            raise ValueError("x_T contains NaN or inf")
        x_T = x_T.astype(np.float64, copy=False)
        dim = getattr(model, "dim", None)
        if dim is not None and x_T.shape[1:] != (dim,):
            raise ValueError(f"x_T must have shape (N, {dim}) for this model, got {x_T.shape}")
    elif not hasattr(x_T, "shape"):
        raise ValueError(f"x_T must be a numpy array or torch tensor, got {type(x_T).__name__}")
    return x_T, ts


def langevin_correct(model, x, t: float, rng, n_steps: int, snr: float):
    """n_steps of Langevin MCMC at fixed t (the corrector of predictor-corrector sampling,
    Song et al. Algorithm 4-5): x <- x + e score + sqrt(2 e) z, with the step e set so that
    the signal-to-noise ratio ||e score|| / ||sqrt(2e) z|| is snr (norms averaged over particles)."""
    s = model.schedule
    a, sg = float(s.alpha(t)), float(s.sigma(t))
    for _ in range(n_steps):
        score = (a * model.denoise(x, t) - x) / (sg * sg)
        z = standard_normal_like(x, rng)
        grad_norm = _mean_norm(score)
        step = 2.0 * (snr * _mean_norm(z) / grad_norm) ** 2 if grad_norm > 0 else 0.0
        x = x + step * score + (2.0 * step) ** 0.5 * z
    return x


def _mean_norm(v) -> float:
    flat = v.reshape(v.shape[0], -1)
    if isinstance(flat, np.ndarray):
        return float(np.mean(np.sqrt(np.sum(flat * flat, axis=1))))
    return float(flat.norm(dim=1).mean())


def sample(
    model, x_T, ts, solver: str = "dpmpp-2m", rng=None, corrector_steps: int = 0, corrector_snr: float = 0.16,
    **options,
) -> Trajectory:
    """Integrate from x_T at ts[0] down to ts[-1] with the named solver.

    Returns the Trajectory (states on the grid, x0-predictions, nfe). A step that
    yields NaN or inf stops the run and sets traj.diverged_at to that step.
    Stochastic solvers need rng (a seed or numpy Generator). corrector_steps > 0 follows
    every step but the last with that many Langevin corrector steps at the new time
    (predictor-corrector sampling; each costs one evaluation).
    """
    spec = registry.spec(solver)
    opts = spec.resolve(options)
    x_T, ts = _check_inputs(model, x_T, ts)
    if solver != "interpolant-sde" and float(model.schedule.sigma(ts[0])) == 0.0:
        raise ValueError(
            f"ts[0] = {ts[0]} is where sigma = 0 (a point-mass base): solver {solver!r} cannot start there; "
            "use solver='interpolant-sde' with a non-zero diffusion, or start at a t where sigma > 0"
        )
    if isinstance(corrector_steps, bool) or not float(corrector_steps).is_integer() or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be a non-negative integer, got {corrector_steps!r}")
    corrector_steps = int(corrector_steps)
    if corrector_steps and not corrector_snr > 0:
        raise ValueError(f"corrector_snr must be positive, got {corrector_snr!r}")
    if corrector_steps and solver == "rk45":
        raise ValueError("rk45 is an adaptive reference solve: it takes no corrector")
    if spec.draws_noise(opts) or corrector_steps:
        if rng is None:
            raise ValueError(f"solver {solver!r} draws noise: pass rng (a seed or numpy Generator)")
        if not type(rng).__module__.startswith("torch"):  # a torch.Generator is used as it is
            rng = as_generator(rng)  # a seed becomes one Generator for the whole run

    counted = _CountedModel(model, float(ts[-1]), float(ts[0]))
    n = len(ts) - 1
    xs, ds = [x_T], []
    diverged_at, reason = None, None

    def record(i, x_next, denoised):
        nonlocal diverged_at, reason
        if len(xs) != i + 1:
            raise AssertionError(f"solver {solver!r} recorded step {i} out of order")
        if corrector_steps and i < n - 1:
            x_next = langevin_correct(counted, x_next, float(ts[i + 1]), rng, corrector_steps, corrector_snr)
        xs.append(x_next)
        ds.append(denoised)
        if not _all_finite(x_next):
            bad = "the x0-prediction" if not _all_finite(denoised) else "the update"
            diverged_at = i
            reason = f"step {i} (t={ts[i]:.4g} -> {ts[i + 1]:.4g}) produced NaN or inf in {bad}"
            raise _Diverged
        return x_next

    start = time.perf_counter()
    with np.errstate(all="ignore"):
        try:
            spec.fn(counted, x_T, [float(t) for t in ts], rng, record, **opts)
        except _Diverged:
            pass
        except FloatingPointError as err:
            diverged_at = len(xs) - 1
            reason = f"step {diverged_at}: {err}"
    wall = time.perf_counter() - start

    if diverged_at is None and len(xs) != n + 1:
        raise AssertionError(f"solver {solver!r} recorded {len(xs) - 1} of {n} steps")
    while len(xs) < n + 1:
        xs.append(_nan_like(x_T))
    while len(ds) < n:
        ds.append(_nan_like(x_T))
    return Trajectory(
        t=ts, x=_stack(xs, x_T), denoised=_stack(ds, x_T), nfe=counted.nfe, solver=solver,
        options={**opts, **({"corrector_steps": corrector_steps, "corrector_snr": corrector_snr} if corrector_steps else {})},
        diverged_at=diverged_at, diverged_reason=reason, wall_time=wall, schedule=model.schedule,
    )


def reference(model, x_T, ts, **options) -> Trajectory:
    """The reference path on the grid ts: rk45 at tight tolerance from the same start."""
    return sample(model, x_T, ts, solver="rk45", **options)
