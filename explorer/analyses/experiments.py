"""Comparing solvers: work-precision sweeps and two solvers side by side.

Pure functions (no caching, no UI). Solvers are compared at equal cost: a solver that spends
k model evaluations per step gets NFE / k steps (ex.solvers.info(name)["nfe_per_step"]), and
every run of a sweep starts from the same x_T and ends at the same time, where it is measured
against the rk45 solve from that start.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np

from .. import solvers as _solvers
from ..foundations.random import as_generator
from ..foundations.timesteps import timesteps
from ..solvers.reference import flow
from ..solvers.sampling import reference, sample
from .metrics import endpoint_error

# Errors below this are the rk45 reference's own (rtol = atol = 1e-10 on x / sigma): not fitted.
ERROR_FLOOR = 1e-8


def steps_for(solver: str, nfe: int) -> int | None:
    """Steps that spend nfe model evaluations: nfe // nfe_per_step, None if not even one step fits
    or nfe is not a multiple (a solver with a varying count gets nfe steps)."""
    per_step = _solvers.info(solver)["nfe_per_step"] or 1
    nfe = int(nfe)
    if nfe < per_step or nfe % per_step:
        return None
    return nfe // per_step


def _spec(value) -> tuple[str, dict]:
    """A solver given as "name" or (name, options)."""
    if isinstance(value, str):
        return value, {}
    name, options = value
    return name, dict(options or {})


def work_precision(model, x_T, solvers: dict, nfes, spacing: str = "uniform-lambda", t_start=None, t_end=None,
                   target=None, seed: int = 0, n_ref: int | None = None, progress=None,
                   reference_sample=None, executor=None) -> list[dict]:
    """Every solver at every NFE from the same start x_T, measured at the final time.

    solvers: label -> name or (name, options). One record per run that fits its NFE budget:
    label, solver, options, nfe (asked), n_steps, nfe_spent (counted), error (RMS distance of the
    final samples to the rk45 solve from x_T at the final time), distance (sliced W2 to fresh
    target draws, when a target is given or the model has one), diverged_at, reason, wall_time.
    Stochastic solvers draw from np.random.default_rng([seed, 1]) on every run.
    progress(done, total, label, nfe), if given, is called after every run. reference_sample: the
    rk45 final state from x_T, if already known (else solved here; None if that solve diverges).
    executor: where the runs go (ex.sweeps.run: None in-process, "local-cluster", a Dask Client or
    address); the same records on any.
    """
    from . import sweeps

    ref_final = reference_sample
    if ref_final is None:
        ref_final = reference_final(model, x_T, spacing, t_start, t_end)
    target = getattr(model, "target", None) if target is None else target
    distance = None
    if target is not None:
        n_ref = int(np.clip(4 * len(x_T), 5000, 20000)) if n_ref is None else int(n_ref)
        distance = SlicedW2(target.sample(n_ref, as_generator(seed)))
    specs = {label: _spec(v) for label, v in solvers.items()}
    cells = [(label, name, options, nfe) for label, (name, options) in specs.items() for nfe in nfes]
    run = functools.partial(_work_precision_run, model, x_T, spacing, t_start, t_end, seed, ref_final, distance)

    def report(done, total, cell, record):
        if progress is not None:
            progress(done, total, cell[0], cell[3])

    return [r for r in sweeps.run(cells, run, executor, report) if r is not None]


def _work_precision_run(model, x_T, spacing, t_start, t_end, seed, ref_final, distance, cell) -> dict | None:
    """One cell of work_precision: one solver at one NFE (None when the NFE fits no whole step)."""
    label, name, options, nfe = cell
    steps = steps_for(name, nfe)
    if steps is None:
        return None
    ts = timesteps(model.schedule, steps, spacing, t_start, t_end)
    traj = sample(model, x_T, ts, name, rng=np.random.default_rng([seed, 1]), **options)
    rec = dict(label=label, solver=name, options=options, nfe=int(nfe), n_steps=steps, nfe_spent=traj.nfe,
               error=np.nan, distance=np.nan, diverged_at=traj.diverged_at, reason=traj.diverged_reason,
               wall_time=traj.wall_time)
    if not traj.diverged:
        x = np.asarray(traj.sample)
        if ref_final is not None:
            rec["error"] = endpoint_error(x, ref_final)
        if distance is not None:
            rec["distance"] = distance(x)
    return rec


def reference_final(model, x_T, spacing: str = "uniform-lambda", t_start=None, t_end=None):
    """The rk45 solve of the probability-flow ODE from x_T at the final time (None if it diverged):
    what work_precision measures errors against and reference_distance measures, for passing to both
    as reference_sample (one solve instead of two). Every grid between the same end times gives it."""
    ref = reference(model, x_T, timesteps(model.schedule, 1, spacing, t_start, t_end))
    return None if ref.diverged else np.asarray(ref.sample)


def reference_distance(model, x_T, spacing: str = "uniform-lambda", t_start=None, t_end=None, target=None,
                       seed: int = 0, n_ref: int | None = None, reference_sample=None) -> float:
    """Sliced W2 of the exact ODE's samples from x_T (rk45) to the same target draws work_precision
    uses: the floor a deterministic solver's distance approaches (NaN if that solve diverged).
    reference_sample: that solve's final state (reference_final), if already known."""
    target = getattr(model, "target", None) if target is None else target
    final = reference_final(model, x_T, spacing, t_start, t_end) if reference_sample is None else reference_sample
    if final is None:
        return float("nan")
    n_ref = int(np.clip(4 * len(x_T), 5000, 20000)) if n_ref is None else int(n_ref)
    return SlicedW2(target.sample(n_ref, as_generator(seed)))(np.asarray(final))


class SlicedW2:
    """x -> ex.metrics.sliced_wasserstein(x, draws, n_projections, rng=0), the same number, with the
    draws' projections sorted once (a sweep measures many sample sets against one set of draws)."""

    def __init__(self, draws, n_projections: int = 64):
        draws = np.asarray(draws, dtype=np.float64).reshape(len(draws), -1)
        d = draws.shape[1]
        if d == 1:
            self.dirs = np.ones((1, 1))
        else:
            self.dirs = as_generator(0).standard_normal((n_projections, d))
            self.dirs /= np.linalg.norm(self.dirs, axis=1, keepdims=True)
        self.sorted = np.sort(self.dirs @ draws.T, axis=1)

    def __call__(self, x) -> float:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        px, py = np.sort(self.dirs @ x.T, axis=1), self.sorted
        n = max(px.shape[1], py.shape[1])
        q = (np.arange(n) + 0.5) / n
        if px.shape[1] != n:
            px = px[:, np.minimum((q * px.shape[1]).astype(int), px.shape[1] - 1)]
        if py.shape[1] != n:
            py = py[:, np.minimum((q * py.shape[1]).astype(int), py.shape[1] - 1)]
        return float(np.sqrt(np.mean((px - py) ** 2)))


def fitted_order(nfes, errors, tail: int = 3) -> float:
    """The convergence order p in error ~ C NFE^-p: minus the least-squares slope of log error
    against log NFE over the `tail` largest NFEs whose error is finite and above ERROR_FLOOR
    (the asymptotic part). NaN with fewer than two such points."""
    nfes, errors = np.asarray(nfes, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    ok = np.isfinite(errors) & (errors > ERROR_FLOOR) & (nfes > 0)
    nfes, errors = nfes[ok], errors[ok]
    order = np.argsort(nfes)[-tail:]
    if len(order) < 2 or np.ptp(nfes[order]) == 0:
        return float("nan")
    return float(-np.polyfit(np.log(nfes[order]), np.log(errors[order]), 1)[0])


def orders(records: list[dict], tail: int = 3) -> dict:
    """label -> fitted_order over that label's records."""
    out = {}
    for label in dict.fromkeys(r["label"] for r in records):
        rows = [r for r in records if r["label"] == label]
        out[label] = fitted_order([r["nfe_spent"] for r in rows], [r["error"] for r in rows], tail)
    return out


def local_errors(model, traj, rtol: float = 1e-10, atol: float = 1e-10) -> np.ndarray:
    """(n_steps,) the error each step commits: RMS over particles of ||x_{i+1} - Phi_i(x_i)||, where
    Phi_i is the exact flow (rk45) from the solver's own state x_i at t_i to t_{i+1}. NaN from the
    step that diverged on.

    All the steps' one-step problems are one solve (reference.flow, a row per particle and step): the
    same numbers as one reference run per step, with the per-step set-up paid once."""
    out = np.full(traj.n_steps, np.nan)
    x = np.asarray(traj.x)
    steps = 0  # the steps from and to a finite state
    while steps < traj.n_steps and np.all(np.isfinite(x[steps])) and np.all(np.isfinite(x[steps + 1])):
        steps += 1
    if steps == 0:
        return out
    t = np.asarray(traj.t, dtype=np.float64)
    n = x.shape[1]
    try:
        exact = flow(model, x[:steps].reshape((steps * n,) + x.shape[2:]), np.repeat(t[:steps], n),
                     np.repeat(t[1 : steps + 1], n), rtol, atol).reshape(x[1 : steps + 1].shape)
    except FloatingPointError:  # some step's exact flow blows up: the steps one by one, up to that one
        exact = []
        for i in range(steps):
            try:
                exact.append(flow(model, x[i], t[i], t[i + 1], rtol, atol))
            except FloatingPointError:
                break
    for i, e in enumerate(exact):
        out[i] = endpoint_error(x[i + 1], e)
    return out


def compare_two(model, x_T, a, b, nfe: int, spacing: str = "uniform-lambda", t_start=None, t_end=None,
                seed: int = 0, local_particles: int = 400) -> dict:
    """Two solvers from the same x_T at the same NFE (each on its own grid of NFE / k steps).

    a, b: name or (name, options). Returns {"a": side, "b": side}, each side a dict with
    label, traj, ref (rk45 from x_T on that solver's grid), global_error (n_steps + 1,) RMS distance
    to ref at every grid time, x0_error (n_steps,) RMS distance of the x0-predictions to the
    model's prediction on the reference path, local_error (n_steps,) the error each step commits
    (local_errors, on the first local_particles particles).

    Both refs are read off one rk45 run on the union of the two grids (from the same x_T between the
    same end times its steps do not depend on the grid it reports on: the same numbers as a run per
    grid); each side's seconds count its own run and local errors.
    """
    sides = {}
    for key, value in (("a", a), ("b", b)):
        name, options = _spec(value)
        steps = steps_for(name, nfe)
        if steps is None:
            per = _solvers.info(name)["nfe_per_step"]
            raise ValueError(f"{name} spends {per} evaluations per step: NFE must be a multiple of {per}, got {nfe}")
        sides[key] = (name, options, timesteps(model.schedule, steps, spacing, t_start, t_end))
    grids = [ts for _, _, ts in sides.values()]
    shared = all(ts[0] == grids[0][0] and ts[-1] == grids[0][-1] for ts in grids)  # (timesteps keeps both ends)
    ref_all = reference(model, x_T, np.unique(np.concatenate(grids))[::-1]) if shared else None
    out = {}
    for key, (name, options, ts) in sides.items():
        start = time.perf_counter()
        traj = sample(model, x_T, ts, name, rng=np.random.default_rng([seed, 1]), **options)
        ref = _on_grid(ref_all, ts) if shared else reference(model, x_T, ts)
        x_ref, d_ref = np.asarray(ref.x), np.asarray(ref.denoised)
        x, d = np.asarray(traj.x), np.asarray(traj.denoised)
        global_error = np.array([_rms(x[i], x_ref[i]) for i in range(len(ts))])
        x0_error = np.array([_rms(d[i], d_ref[i]) for i in range(len(ts) - 1)])
        sub = _Subset(traj, local_particles)
        local = local_errors(model, sub)
        out[key] = dict(label=_label(name, options), solver=name, options=options, traj=traj, ref=ref,
                        global_error=global_error, x0_error=x0_error, local_error=local,
                        seconds=time.perf_counter() - start)
    return out


def _on_grid(traj, ts):
    """traj (a reference run on a finer grid holding every time of ts) as the run on ts would be."""
    at = np.searchsorted(-np.asarray(traj.t), -np.asarray(ts))  # traj.t decreases
    if not np.array_equal(np.asarray(traj.t)[at], ts):
        raise AssertionError("the grid is not a subset of the reference run's grid")
    diverged_at = None if traj.diverged_at is None else int(np.searchsorted(at, traj.diverged_at, side="right")) - 1
    return dataclasses.replace(traj, t=np.asarray(ts), x=traj.x[at], denoised=traj.denoised[at[:-1]],
                               diverged_at=diverged_at, extras=dict(traj.extras))


def _label(name: str, options: dict) -> str:
    declared = _solvers.info(name)["options"]
    changed = {k: v for k, v in options.items() if k in declared and v != declared[k]["default"]}
    return name if not changed else f"{name} ({', '.join(f'{k}={v}' for k, v in changed.items())})"


def _rms(x, y) -> float:
    diff = (np.asarray(x) - np.asarray(y)).reshape(len(x), -1)
    with np.errstate(all="ignore"):
        return float(np.sqrt(np.mean(np.sum(diff * diff, axis=1))))


class _Subset:
    """The first n particles of a trajectory (states and grid only)."""

    def __init__(self, traj, n: int):
        self.t = traj.t
        self.x = np.asarray(traj.x)[:, :n]
        self.n_steps = traj.n_steps
