"""Time-grid search: the grid on which a solver's samples land closest to the exact ones.

After AutoDiffusion (Li et al., "Training-Free Optimization of Time Steps and Architectures"),
which searches the time steps themselves instead of fixing a spacing, with one change: its
objective is a sample-quality score (FID), ours is exact. On an analytic model the probability-flow
ODE's own endpoint from each start x_T is known (rk45 at tight tolerance, or the closed-form flow
of a single Gaussian), so the objective is the RMS distance of the solver's samples to it.

The grid is parametrised so that every candidate is a grid: its n steps in lambda are
h_i = (lambda_end - lambda_start) softmax(0, z_1, ..., z_{n-1})_i, positive and summing to the
fixed span, so the times t_i = t_of_lambda(lambda_i) decrease strictly between fixed ends (a
candidate whose steps fall below float64's resolution scores inf). The
search (scipy Nelder-Mead, derivative-free, deterministic) starts from the best standard spacings,
fits on one seed of particles and reports the error on a held-out seed it never saw.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np

from .. import solvers as _solvers
from ..foundations.analytic import AnalyticModel
from ..foundations.random import as_generator
from ..foundations.schedules import Schedule
from ..foundations.timesteps import SPACINGS, check_grid, sigmas_of, timesteps
from ..solvers.sampling import reference as _rk45, sample
from .experiments import steps_for
from . import sweeps
from .metrics import endpoint_error

DEFAULT_SPACING = "uniform-lambda"


@dataclass
class Particles:
    """A particle set and its exact endpoint: x_T at t_start, x_ref = Phi(x_T) at t_end, where
    Phi is the probability-flow ODE's flow map (computed once: every grid is scored against it)."""

    x_T: np.ndarray
    x_ref: np.ndarray
    t_start: float
    t_end: float
    seed: int | None
    reference: str  # "exact" (closed-form Gaussian flow) or "rk45"

    def __len__(self) -> int:
        return len(self.x_T)


def gaussian_flow(mean, cov, s: Schedule, x, t_from: float, t_to: float) -> np.ndarray:
    """The probability-flow ODE's exact flow for data N(mean, cov): p_t = N(alpha mean, S_t) with
    S_t = alpha^2 cov + sigma^2 I, and x_to = alpha' mean + S_to^{1/2} S_from^{-1/2} (x - alpha mean)."""
    c, v = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    a0, s0, a1, s1 = (float(f(t)) for t in (t_from, t_to) for f in (s.alpha, s.sigma))
    scale = np.sqrt((a1 * a1 * c + s1 * s1) / (a0 * a0 * c + s0 * s0))
    mean = np.asarray(mean, dtype=np.float64)
    return a1 * mean + ((np.asarray(x) - a0 * mean) @ v) * scale @ v.T


def _has_exact_flow(model) -> bool:
    return isinstance(model, AnalyticModel) and model.target.n_components == 1


def particles(model, x_T=1000, seed: int | None = 0, t_start=None, t_end=None, reference: str = "auto") -> Particles:
    """A Particles set: x_T given as an (N, D) array at t_start, or as a count n drawn by
    model.prior_sample(n, seed, t_start). reference: "exact" (single-Gaussian analytic model),
    "rk45", or "auto" (exact where available, else rk45)."""
    s = model.schedule
    ends = timesteps(s, 1, t_start=t_start, t_end=t_end)
    t0, t1 = float(ends[0]), float(ends[-1])
    if isinstance(x_T, (int, np.integer)) and not isinstance(x_T, bool):
        if x_T < 1:
            raise ValueError(f"the number of particles must be positive, got {x_T}")
        if seed is None:
            raise ValueError("seed is required to draw particles (every random draw takes an explicit seed)")
        if not callable(getattr(model, "prior_sample", None)):
            raise ValueError("this model has no prior_sample: pass x_T as an (N, D) array")
        x = np.asarray(model.prior_sample(int(x_T), as_generator(seed), t=t0), dtype=np.float64)
    else:
        x = np.array(x_T, dtype=np.float64)
        if x.ndim != 2 or not np.all(np.isfinite(x)) or len(x) == 0:
            raise ValueError(f"x_T must be a finite (N, D) array or a particle count, got shape {x.shape}")
        dim = getattr(model, "dim", None)
        if dim is not None and x.shape[1] != dim:
            raise ValueError(f"x_T must have shape (N, {dim}) for this model, got {x.shape}")
    if reference == "auto":
        reference = "exact" if _has_exact_flow(model) else "rk45"
    if reference == "exact":
        if not _has_exact_flow(model):
            raise ValueError("reference='exact' needs an AnalyticModel of a single Gaussian; use 'rk45'")
        gm = model.target
        x_ref = gaussian_flow(gm.means[0], gm.covs[0], s, x, t0, t1)
    elif reference == "rk45":
        ref = _rk45(model, x, ends)
        if ref.diverged:
            raise ValueError(f"the rk45 reference diverged: {ref.diverged_reason}")
        x_ref = np.asarray(ref.sample)
    else:
        raise ValueError(f"reference must be 'auto', 'exact' or 'rk45', got {reference!r}")
    return Particles(x, x_ref, t0, t1, seed, reference)


def grid_of(s: Schedule, z, t_start: float, t_end: float) -> np.ndarray:
    """The grid of the search parameters z (n - 1 of them for n steps): lambda steps in the
    proportions softmax(0, z), between fixed ends."""
    l0, l1 = float(s.lambda_(t_start)), float(s.lambda_(t_end))
    logits = np.concatenate([[0.0], np.asarray(z, dtype=np.float64)])
    w = np.exp(logits - logits.max())
    lam = l0 + (l1 - l0) * np.concatenate([[0.0], np.cumsum(w / w.sum())])
    ts = np.asarray(s.t_of_lambda(lam), dtype=np.float64)
    ts[0], ts[-1] = t_start, t_end
    return ts


def params_of(s: Schedule, ts) -> np.ndarray:
    """The search parameters of a grid (inverse of grid_of): z_i = log(h_i / h_0)."""
    h = np.diff(np.asarray(s.lambda_(np.asarray(ts, dtype=np.float64)), dtype=np.float64))
    return np.log(h[1:] / h[0])


@dataclass
class GridResult:
    """An optimised grid, its errors on the fit and held-out particles, and the standard spacings'.

    ts: the grid (n_steps + 1 strictly decreasing times); sigmas: the same grid in k-diffusion's
    convention sigma/alpha = e^{-lambda} (no trailing 0: see to_list). baseline: spacing ->
    {"ts", "error", "holdout_error"} for every standard spacing; start: the spacing whose search found
    ts; history: the fit error at every objective evaluation, in order (the runs one after another).
    """

    schedule: Schedule
    solver: str
    options: dict
    nfe: int
    ts: np.ndarray
    error: float
    holdout_error: float
    baseline: dict
    start: str
    history: np.ndarray
    n_fit: int
    n_holdout: int
    fit_seed: int | None
    holdout_seed: int | None
    reference: str
    wall_time: float
    converged: bool = False
    message: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return len(self.ts) - 1

    @property
    def sigmas(self) -> np.ndarray:
        """k-diffusion's sigma grid e^{-lambda(t_i)}, same length as ts (no trailing 0). k-diffusion's
        state is x / alpha: for alpha != 1 drive it with denoiser(x_k, sigma) = D(alpha x_k, t(sigma))."""
        return sigmas_of(self.schedule, self.ts)

    @property
    def best_history(self) -> np.ndarray:
        """The best fit error found after each evaluation."""
        return np.minimum.accumulate(self.history)

    @property
    def default(self) -> dict:
        """The default spacing's (uniform-lambda) record in baseline."""
        return self.baseline[DEFAULT_SPACING]

    @property
    def improvement(self) -> float:
        """Held-out error of the default spacing divided by the optimised grid's."""
        return self.default["holdout_error"] / self.holdout_error

    def to_list(self, kind: str = "t", trailing_zero: bool = False) -> list[float]:
        """The grid as plain floats: kind="t" our times, kind="sigma" k-diffusion's sigmas.
        trailing_zero=True (sigmas only) appends k-diffusion's final 0, which adds its last step
        onto the data, x0_hat(x, sigma_n): one more evaluation than our grid takes."""
        if kind == "t":
            if trailing_zero:
                raise ValueError("trailing_zero applies to kind='sigma' only")
            return [float(t) for t in self.ts]
        if kind == "sigma":
            return [float(v) for v in sigmas_of(self.schedule, self.ts, trailing_zero=trailing_zero)]
        raise ValueError(f"kind must be 't' or 'sigma', got {kind!r}")


def _search_run(setting, cell, on_eval=None) -> dict:
    """One Nelder-Mead run of optimise from the grid cell = (origin spacing, its ts): every fit error
    in order (history), the first grid reaching the lowest (best_error, best_ts), success, message."""
    from scipy.optimize import minimize

    model, solver, opts, fit, s, t0, t1, max_evals, xatol = setting
    origin, ts0 = cell
    z0 = params_of(s, ts0)
    n_params = len(z0)
    history, best = [], [np.inf, None]

    def objective(z):
        ts = grid_of(s, z, t0, t1)
        err = grid_error(model, solver, ts, fit, **opts) if np.all(np.diff(ts) < 0) else np.inf
        history.append(err)
        if err < best[0]:
            best[:] = [err, ts]
        if on_eval is not None:
            on_eval(err)
        return np.log(err) if np.isfinite(err) and err > 0 else 1e3

    # An initial simplex of unit steps in the log step ratios: each vertex multiplies one
    # step by e relative to the first, wide enough to leave a local dip.
    simplex = np.vstack([z0, z0 + np.eye(n_params)])
    out = minimize(objective, z0, method="Nelder-Mead",
                   options=dict(maxfev=max_evals, initial_simplex=simplex, xatol=xatol, fatol=1e-4,
                                adaptive=n_params > 4))
    return dict(origin=origin, history=history, best_error=best[0], best_ts=best[1], success=bool(out.success),
                message=str(out.message))


def grid_error(model, solver: str, ts, p: Particles, **options) -> float:
    """RMS distance of the solver's samples on grid ts from p.x_T to p's exact endpoint (inf if it diverges)."""
    traj = sample(model, p.x_T, ts, solver, **options)
    if traj.diverged:
        return float("inf")
    return endpoint_error(np.asarray(traj.sample), p.x_ref)


def as_particles(model, value, t_start, t_end, reference, name) -> Particles:
    """value as Particles on [t_end, t_start]: Particles (checked), (n, seed), or an (N, D) array of starts."""
    if isinstance(value, Particles):
        if value.t_start != t_start or value.t_end != t_end:
            raise ValueError(f"{name} were made for [{value.t_end}, {value.t_start}], not [{t_end}, {t_start}]")
        return value
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{name} must be Particles, an (N, D) array or (n, seed), got a tuple of {len(value)}")
        n, seed = value
        return particles(model, n, seed, t_start, t_end, reference)
    return particles(model, value, None, t_start, t_end, reference)


def progress_reporter(progress, total: int, desc: str = "grid search"):
    """(report(done, total, best_error), close) for a search's progress argument: None or False (silent),
    True (a tqdm bar named desc) or a callable(done, total, best_error)."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, leave=False)

        def report(done, total, best):
            bar.total = total
            bar.n = min(done, total)
            bar.set_postfix(error=f"{best:.3g}", refresh=False)
            bar.refresh()

        return report, bar.close
    if progress in (None, False):
        return (lambda *a: None), (lambda: None)
    if not callable(progress):
        raise ValueError(f"progress must be a callable progress(done, total, best_error), True or None, got {progress!r}")
    return progress, (lambda: None)


def optimise(model, solver: str = "dpmpp-2m", nfe: int = 10, fit=(1000, 0), holdout=None, t_start=None, t_end=None,
             *, reference: str = "auto", start: str | None = None, starts: int = 2, max_evals: int | None = None,
             xatol: float = 1e-3, progress=None, executor=None, **options) -> GridResult:
    """The grid of nfe evaluations minimising the solver's error against the exact ODE endpoint.

    min over grids t_0 = t_start > t_1 > ... > t_n = t_end of RMS_i ||x_i(grid) - Phi(x_T,i)|| on the
    fit particles (n = nfe / evaluations per step), searched by Nelder-Mead over the softmax-in-lambda
    parameters (grid_of), once from each of the `starts` standard spacings with the lowest fit error
    (or from `start` alone); the best grid visited wins. fit, holdout: Particles, an (N, D) array of
    starts, or (n, seed); holdout defaults to as many particles from seed fit_seed + 1. max_evals
    bounds each run's objective evaluations (default 100 per parameter, at least 150). progress: a
    callable progress(done, total, best_error), or True for a tqdm bar. Deterministic solvers only.
    executor: where the Nelder-Mead runs go (ex.sweeps.run: None in-process, "local-cluster", a Dask
    Client or address): with starts=2 the two runs at once; the same result on any.
    """
    began = time.perf_counter()
    spec = _solvers.spec(solver)
    opts = spec.resolve(options)
    if spec.draws_noise(opts):
        raise ValueError(f"solver {solver!r} draws noise: the grid search scores deterministic paths against the exact ODE")
    if solver == "rk45":
        raise ValueError("solver 'rk45' is the adaptive reference: it has no grid to search")
    if isinstance(nfe, bool) or not float(nfe).is_integer():
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    n_steps = steps_for(solver, int(nfe))
    if n_steps is None:
        per = _solvers.info(solver)["nfe_per_step"]
        raise ValueError(f"nfe = {nfe}: solver {solver!r} spends {per} evaluations per step, so nfe must be a positive multiple of {per}")
    if start is not None and start not in SPACINGS:
        raise ValueError(f"start must be one of {list(SPACINGS)} or None, got {start!r}")
    if isinstance(starts, bool) or not float(starts).is_integer() or not 1 <= starts <= len(SPACINGS):
        raise ValueError(f"starts must be an integer in [1, {len(SPACINGS)}], got {starts!r}")
    n_params = n_steps - 1
    max_evals = max(150, 100 * n_params) if max_evals is None else int(max_evals)
    if max_evals < 1:
        raise ValueError(f"max_evals must be positive, got {max_evals}")
    runs = 1 if start is not None or n_params == 0 else int(starts)
    if not (progress in (None, True, False) or callable(progress)):
        raise ValueError(f"progress must be a callable, True or None, got {progress!r}")
    s = model.schedule
    ends = timesteps(s, 1, t_start=t_start, t_end=t_end)
    t0, t1 = float(ends[0]), float(ends[-1])
    fit = as_particles(model, fit, t0, t1, reference, "fit")
    if holdout is None:
        if fit.seed is None:
            raise ValueError("holdout is required when fit particles were given as an array (no seed to step from)")
        holdout = (len(fit), fit.seed + 1)
    holdout_seed = holdout[1] if isinstance(holdout, tuple) and len(holdout) == 2 else getattr(holdout, "seed", None)
    if fit.seed is not None and fit.seed == holdout_seed:
        raise ValueError(f"holdout must be drawn from another seed than fit (both {fit.seed})")
    holdout = as_particles(model, holdout, t0, t1, reference, "holdout")
    total = len(SPACINGS) + runs * max_evals if n_params else len(SPACINGS)
    report, close = progress_reporter(progress, total)

    history = []
    try:
        baseline = {}
        for i, spacing in enumerate(SPACINGS):
            try:
                ts = timesteps(s, n_steps, spacing, t0, t1)
            except ValueError:
                continue  # too fine to be distinct in float64
            baseline[spacing] = dict(ts=ts, error=grid_error(model, solver, ts, fit, **opts),
                                     holdout_error=grid_error(model, solver, ts, holdout, **opts))
            report(i + 1, total, min(b["error"] for b in baseline.values()))
        ranked = sorted(baseline, key=lambda k: baseline[k]["error"])
        begins = [start] if start is not None else ranked[:runs]
        start = begins[0]
        best_ts, converged, message = baseline[start]["ts"], True, "a single step has no interior times"
        best = [baseline[start]["error"], best_ts, start]
        shown = [best[0]]  # the best fit error reported so far

        def evaluated(err):
            history.append(err)
            shown[0] = min(shown[0], err)
            report(len(SPACINGS) + len(history), total, shown[0])

        # The Nelder-Mead runs are independent cells of a sweep. In this process each evaluation is
        # reported as it happens; from a cluster, a run's evaluations when the run returns.
        setting = (model, solver, opts, fit, s, t0, t1, max_evals, xatol)
        cells = [(origin, baseline[origin]["ts"]) for origin in (begins if n_params else [])]
        if executor is None:
            runs_out = sweeps.run(cells, functools.partial(_search_run, setting, on_eval=evaluated))
        else:
            def arrived(done, total_runs, cell, out):
                for err in out["history"]:
                    evaluated(err)

            runs_out = sweeps.run(cells, functools.partial(_search_run, setting), executor, arrived)
            history[:] = [err for out in runs_out for err in out["history"]]  # the runs one after another
        for out in runs_out:  # as if run one after another: the first grid reaching the lowest error wins
            if out["best_error"] < best[0]:
                best[:] = [out["best_error"], out["best_ts"], out["origin"]]
            if best[2] == out["origin"]:
                converged, message = out["success"], out["message"]
        best_ts, start = best[1], best[2]
    finally:
        close()

    best_ts = check_grid(s, best_ts, name="optimised grid")
    return GridResult(
        schedule=s, solver=solver, options=opts, nfe=int(nfe), ts=best_ts,
        error=grid_error(model, solver, best_ts, fit, **opts),
        holdout_error=grid_error(model, solver, best_ts, holdout, **opts),
        baseline=baseline, start=start, history=np.asarray(history, dtype=np.float64), n_fit=len(fit),
        n_holdout=len(holdout), fit_seed=fit.seed, holdout_seed=holdout.seed, reference=fit.reference,
        wall_time=time.perf_counter() - began, converged=converged, message=message,
    )
