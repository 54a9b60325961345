"""Error against NFE for one model and solver under its own schedule, under converted schedules and on
optimised grids: where a change of schedule or of grid buys fewer steps.

A converted run samples the same model under schedule B without retraining (conversion.ConvertedModel;
for an analytic model, the exact model under B, the same function): it starts from the converted
x_T' = alpha_B(t'_0) / alpha_A(t_0) x_T at lambda_B(t'_0) = lambda_A(t_0), steps on B's own grid between
the converted ends, and its path is converted back (ex.convert_path) to be measured where the original
run is: against the exact ODE endpoint of the same held-out starts. Exponential integrators in lambda
(ddim, dpmpp-*) on a uniform-lambda grid are the same under every schedule; a schedule changes Euler
or Heun in t, and any grid spaced in t.
"""

from __future__ import annotations

import time

import numpy as np

from .. import solvers as _solvers
from ..foundations.analytic import AnalyticModel
from ..foundations.conversion import ConvertedModel, convert_path, convert_time, state_scale
from ..foundations.interpolants import drift
from ..foundations.schedules import Schedule, get
from ..foundations.timesteps import timesteps
from ..solvers.sampling import sample
from . import grid_search as gs
from .experiments import steps_for
from .metrics import endpoint_error

KINDS = ("original", "converted", "optimised", "converted-optimised")


def as_schedule(model, spec) -> Schedule:
    """A schedule given as a Schedule, a name for ex.schedules.get, or "lazy" / "lazy-stochastic":
    ex.interpolants.lazy fitted to the model's target (its overall mean and covariance)."""
    if isinstance(spec, Schedule):
        return spec
    if spec in ("lazy", "lazy-stochastic"):
        from ..foundations.interpolants import lazy

        target = getattr(model, "target", None)
        if target is None:
            raise ValueError(f"schedules: {spec!r} is fitted to the model's target, and this model has none")
        return lazy(target, stochastic=spec == "lazy-stochastic")
    try:
        return get(spec)
    except ValueError as err:
        raise ValueError(f"schedules: {err}") from None


def under(model, schedule: Schedule):
    """The model seen under another schedule: the exact AnalyticModel under it, else ConvertedModel."""
    if schedule == model.schedule:
        return model
    if isinstance(model, AnalyticModel):
        return AnalyticModel(model.target, schedule)
    return ConvertedModel(model, schedule)


def converted_particles(p: gs.Particles, a: Schedule, b: Schedule) -> tuple[gs.Particles, float]:
    """p's starts and exact endpoints in schedule b's time and scale, and the end scale
    alpha_B(t'_end) / alpha_A(t_end) (an error under b divided by it is the error under a)."""
    t0, t1 = (float(t) for t in convert_time(a, b, np.array([p.t_start, p.t_end])))
    c0, c1 = float(state_scale(a, b, p.t_start, t0)), float(state_scale(a, b, p.t_end, t1))
    return gs.Particles(c0 * p.x_T, c1 * p.x_ref, t0, t1, p.seed, p.reference), c1


def _label(kind: str, name: str, spacing: str) -> str:
    return {"original": f"{name}, {spacing}", "converted": f"as {name}, {spacing}",
            "optimised": f"{name}, optimised grid", "converted-optimised": f"as {name}, optimised grid"}[kind]


def error_vs_nfe(model, solver: str = "euler", nfes=(4, 6, 8, 10, 12), schedules=("trigonometric", "rectified-flow", "lazy"),
                 spacing: str = "uniform-t", fit=(1000, 0), holdout=None, t_start=None, t_end=None, *,
                 optimise: bool = True, optimise_converted: bool = False, max_evals: int | None = None,
                 reference: str = "auto", progress=None, **options) -> list[dict]:
    """One record per (kind, schedule, NFE): the held-out RMS error of the solver's samples against the
    exact ODE endpoint Phi(x_T) in the model's own schedule, for

    original: the model's schedule, `spacing` grid; converted: each of `schedules` (see as_schedule),
    `spacing` in that schedule's own time, path converted back; optimised: the grid search
    (grid_search.optimise) under the model's schedule, fitted on `fit`, measured on `holdout`;
    converted-optimised (optimise_converted=True): the grid search under each converted schedule.

    Record: kind, label, schedule (name), solver, nfe, n_steps, error (held-out), fit_error, ts (the grid
    in its schedule's time), ts_original (the same grid in the model's time, at equal lambda),
    diverged, wall_time. NFEs the solver cannot spend in whole steps are skipped. progress(done, total,
    label, nfe), if given, after every record.
    """
    solver_spec = _solvers.spec(solver)
    if solver_spec.draws_noise(solver_spec.resolve(options)):
        raise ValueError(f"solver {solver!r} draws noise: errors are measured against the exact ODE endpoint")
    try:
        nfes = [int(n) for n in nfes]
    except (TypeError, ValueError):
        raise ValueError(f"nfes must be a sequence of positive integers, got {nfes!r}") from None
    if not nfes or min(nfes) < 1:
        raise ValueError(f"nfes must be a non-empty sequence of positive integers, got {nfes!r}")
    a = model.schedule
    others = [as_schedule(model, spec) for spec in schedules]
    names = {id(a): a.name, **{id(b): spec if isinstance(spec, str) else b.name for spec, b in zip(schedules, others)}}
    ends = timesteps(a, 1, t_start=t_start, t_end=t_end)
    t0, t1 = float(ends[0]), float(ends[-1])
    fit_p = gs.as_particles(model, fit, t0, t1, reference, "fit")
    if holdout is None:
        if fit_p.seed is None:
            raise ValueError("holdout is required when fit particles were given as an array")
        holdout = (len(fit_p), fit_p.seed + 1)
    hold_p = gs.as_particles(model, holdout, t0, t1, reference, "holdout")
    if fit_p.seed is not None and fit_p.seed == hold_p.seed:
        raise ValueError(f"holdout must be drawn from another seed than fit (both {fit_p.seed})")
    # Every converted schedule must reach the original's signal-to-noise range; checked before any run.
    moved = {id(b): (converted_particles(fit_p, a, b), converted_particles(hold_p, a, b)) for b in others}

    runs = [(n, k, b) for n in nfes if steps_for(solver, n) is not None
            for k, b in [("original", a)] + [("converted", b) for b in others]
            + ([("optimised", a)] if optimise else []) + [("converted-optimised", b) for b in others if optimise_converted]]
    records = []
    for done, (nfe, kind, b) in enumerate(runs, 1):
        start = time.perf_counter()
        n_steps = steps_for(solver, nfe)
        if kind in ("original", "converted"):
            rec = _run(model, solver, nfe, n_steps, b, spacing, fit_p, hold_p, moved.get(id(b)), options)
        else:
            rec = _optimised(model, solver, nfe, b, fit_p, hold_p, moved.get(id(b)), max_evals, options)
        rec.update(kind=kind, label=_label(kind, names[id(b)], spacing), schedule=names[id(b)], solver=solver,
                   nfe=nfe, n_steps=n_steps, wall_time=time.perf_counter() - start)
        records.append(rec)
        if progress is not None:
            progress(done, len(runs), rec["label"], nfe)
    return records


def _run(model, solver, nfe, n_steps, b, spacing, fit_p, hold_p, moved, options) -> dict:
    """The solver on b's `spacing` grid from both particle sets, paths brought back to the model's schedule."""
    a = model.schedule
    if moved is None:
        fit_b, hold_b = fit_p, hold_p
    else:
        (fit_b, _), (hold_b, _) = moved
    ts = timesteps(b, n_steps, spacing, fit_b.t_start, fit_b.t_end)
    m = under(model, b)
    out = dict(ts=[float(t) for t in ts], diverged=False)
    for key, p_b, p_a in (("fit_error", fit_b, fit_p), ("error", hold_b, hold_p)):
        traj = sample(m, p_b.x_T, ts, solver, **options)
        if traj.diverged:
            out[key], out["diverged"] = float("nan"), True
            continue
        if b is not a:
            traj = convert_path(traj, a, from_schedule=b)
        out[key] = endpoint_error(np.asarray(traj.sample), p_a.x_ref)
        out["ts_original"] = [float(t) for t in traj.t]
    out.setdefault("ts_original", out["ts"] if b is a else [float(t) for t in convert_time(b, a, ts)])
    return out


def _optimised(model, solver, nfe, b, fit_p, hold_p, moved, max_evals, options) -> dict:
    """grid_search.optimise under schedule b (the model's own or a converted one), errors in the model's scale."""
    a = model.schedule
    if moved is None:
        fit_b, hold_b, scale = fit_p, hold_p, 1.0
    else:
        (fit_b, scale), (hold_b, _) = moved
    r = gs.optimise(under(model, b), solver, nfe, fit=fit_b, holdout=hold_b, t_start=fit_b.t_start,
                    t_end=fit_b.t_end, max_evals=max_evals, **options)
    ts_a = r.ts if b is a else np.asarray(convert_time(b, a, r.ts), dtype=np.float64)
    return dict(ts=r.to_list(), ts_original=[float(t) for t in ts_a], error=r.holdout_error / scale,
                fit_error=r.error / scale, diverged=not np.isfinite(r.holdout_error), start=r.start)


# What the Schedules page draws about one path under two schedules.


def shared_range(sa: Schedule, sb: Schedule) -> tuple:
    """A's sampling interval cut to the log-SNR range B reaches, so that every state of a path under A
    converts to B: (t_start, t_end) for ex.timesteps, None where A's own end is kept."""
    with np.errstate(divide="ignore"):
        lam_lo, lam_hi = float(sb.lambda_(sb.t_hi)), float(sb.lambda_(sb.t_lo))
    t_start = float(sa.t_of_lambda(lam_lo)) if float(sa.lambda_(sa.t_max)) < lam_lo else None
    t_end = float(sa.t_of_lambda(lam_hi)) if float(sa.lambda_(sa.t_min)) > lam_hi else None
    return t_start, t_end


def commutation_gap(path, model_b, solver: str) -> float:
    """max |x| between a path converted to schedule B and `solver` run under B on the converted grid from
    the converted start: 0 (to round-off) for a solver that commutes with the change of schedule."""
    direct = sample(model_b, path.x[0], path.t, solver)
    return float(np.max(np.abs(np.asarray(direct.x) - np.asarray(path.x))))


def drift_along(path, model, diffusion: str = "zero") -> dict:
    """The mean |drift| over particles at every time of a path (drift v - eps(t) s of the interpolant SDE
    family, "zero" being the probability-flow velocity): dict(t, lam, drift) for figures.schedules.drift_magnitude."""
    def mean_norm(v):
        v = np.asarray(v, dtype=np.float64)
        return float(np.mean(np.sqrt(np.sum(v * v, axis=-1))))

    values = [mean_norm(drift(model, path.x[i], float(t), diffusion)) for i, t in enumerate(path.t)]
    return dict(t=np.asarray(path.t), lam=np.asarray(model.schedule.lambda_(path.t)), drift=np.asarray(values))
