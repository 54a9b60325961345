"""Searched and compensated samplers, scored exactly, and what they buy on data they never saw.

Three papers improve a sampler by searching or fitting it and score the search with FID on a
trained model. On an exact model the objective is exact: the RMS distance of the solver's samples
to the probability-flow ODE's own endpoint from the same starts (grid_search.particles: rk45 at
tight tolerance). Here:

- Solver schedules (USF / S^3, thu-nics/USF `utils/search_utils.py`, `search.py`): the `usf`
  solver runs one decision per step; `search_schedule` is the paper's evolutionary search over
  schedules and their time grid. Parents are drawn from the best `rank_bar` (15) evaluated
  candidates; with probability 0.3 two parents cross over (per decision group, and with
  probability 0.5 step by step), then each step mutates with the official configuration's
  probabilities (time point x (1 + N(0, 0.08)) w.p. 0.3; order from {1: .2, 2: .4, 3: .3, 4: .1}
  capped by the history, w.p. 0.3; prediction type w.p. 0.3; the first derivative's linear
  relaxation coefficient + N(0, 0.03); its number of points from {1, 2}; corrector from
  {none, pseudo}; never a corrector on the last step). The initial population is the native
  solvers the schedules reproduce (DDIM, DPM-Solver(++) multistep 2/3, UniPC 1-3 with bh1/bh2, with
  and without UniC, data and noise prediction) on every standard spacing. The official loop
  evaluates one child at a time on several workers sharing one population; here each generation
  evaluates a batch of children (one sweep), which is that loop with the workers in lockstep.
  Left out: steps added or removed (the official search moves between NFE budgets; ours searches
  one), the DPM-Solver-v3 prediction, the analytic first step and U-Net skip coefficients.
- Time steps (AutoDiffusion, lilijiangg/AutoDiffusion `search_ea.py`): `search_grid` picks the
  n - 1 interior times of an n-step grid from a fine candidate set (1000 points uniform in lambda;
  the official code uses the 1000 training timesteps or a 1000-step solver grid); population 50,
  top 10 kept over all epochs, 25 mutants (each time replaced by an unused candidate w.p. 0.1), 25
  crossovers (elementwise from two sorted parents), the rest random; visited and degenerate
  candidates (a repeated time) are skipped; the initial population is the standard grid, its
  mutants and random grids (`use_ddim_init_x`). The two ends stay fixed: our objective is the
  endpoint at t_end from x_T at t_start (the official DPM-Solver variant moves them too).
  `brute_force_grid` scores every grid on the same candidates for 2-3 steps.
- DC-Solver (wl-zhao/DC-Solver): `fit_dc` fits rho per step, greedily along the solver's own
  path, to the exact path at the grid times on a few trajectories (the paper's 10 datapoints and
  a 200-step DDIM reference; ours is exact), bounded to (0.5, 1.5) as the diffusers scheduler's
  tanh bound, by a bounded scalar search instead of 40 AdamW steps; `cascade_fit` is the cascade
  polynomial regression of rho on the step fraction i / NFE, NFE / 50 and (optionally) the
  guidance scale / 12, each a quadratic feeding the next's coefficients, cubic in i / NFE (36
  coefficients with guidance, 12 without), fitted by linear least squares (the model is linear in
  its coefficients; the paper does not say how it fitted them). It also asks the question the
  paper leaves open: the rho that makes the buffer match the denoiser at the corrected state
  (the misalignment itself) against the rho that minimises the trajectory error.

Every searched or fitted sampler is scored on held-out particles (another seed) and on other
targets and schedules (`transfer`, the grid carried over at equal relative position in lambda);
the gain is the error of the best fixed solver at equal NFE (chosen on the held-out particles
themselves: the strongest baseline, so the gains are lower bounds) over the searched one's.
Searches are sweeps: each batch of candidates is one explorer.analyses.sweeps.run call.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import solvers as _solvers
from ..foundations import schedules as _schedules
from ..foundations import targets as _targets
from ..foundations.analytic import AnalyticModel
from ..foundations.data_files import data_dir
from ..foundations.random import as_generator
from ..foundations.timesteps import SPACINGS, check_grid, sigmas_of, timesteps
from ..solvers import usf as _usf
from ..solvers.dc_solver import lagrange_weights
from ..solvers.sampling import reference as _rk45
from ..solvers.sampling import sample
from . import grid_search
from .experiments import steps_for
from .grid_search import progress_reporter
from .metrics import endpoint_error
from .sweeps import run as _sweep

# ---------------------------------------------------------------- settings and scoring


@dataclass(frozen=True)
class Setting:
    """A named target under a named schedule: where a sampler is fitted or scored."""

    target: str = "gmm-1d-3modes"
    schedule: str = "vp-linear"

    def model(self) -> AnalyticModel:
        return AnalyticModel(_targets.get(self.target), _schedules.get(self.schedule))

    @property
    def label(self) -> str:
        return f"{self.target} / {self.schedule}"


def as_setting(value) -> Setting:
    """A Setting from a Setting, a (target, schedule) pair or a 'target / schedule' label."""
    if isinstance(value, Setting):
        setting = value
    elif isinstance(value, str) and "/" in value:
        setting = Setting(*(part.strip() for part in value.split("/", 1)))
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        setting = Setting(str(value[0]), str(value[1]))
    else:
        raise ValueError(f"a setting is a Setting, a (target, schedule) pair or 'target / schedule', got {value!r}")
    if setting.target not in _targets.names():
        raise ValueError(f"setting target {setting.target!r} is not a preset; choose from {_targets.names()}")
    if setting.schedule not in _schedules.names():
        raise ValueError(f"setting schedule {setting.schedule!r} is not a named schedule; choose from {_schedules.names()}")
    return setting


@dataclass
class Problem:
    """A model with fit and held-out particles and their exact endpoints (see grid_search.particles)."""

    model: object
    fit: grid_search.Particles
    holdout: grid_search.Particles
    label: str = ""

    @property
    def schedule(self):
        return self.model.schedule

    @property
    def ends(self) -> tuple[float, float]:
        return self.fit.t_start, self.fit.t_end


def problem(setting, n_fit: int = 256, n_holdout: int = 1000, seed: int = 0) -> Problem:
    """The setting's exact model with n_fit particles of `seed` to fit on and n_holdout of seed + 1
    to score on, each with its exact ODE endpoint. setting: a Setting (or pair, or label), or a model."""
    for name, n in (("n_fit", n_fit), ("n_holdout", n_holdout)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if hasattr(setting, "denoise"):
        model, label = setting, repr(setting)
    else:
        setting = as_setting(setting)
        model, label = setting.model(), setting.label
    fit = grid_search.particles(model, int(n_fit), int(seed))
    holdout = grid_search.particles(model, int(n_holdout), int(seed) + 1)
    return Problem(model, fit, holdout, label)


def _error(model, x_T, x_ref, cell) -> float:
    """One cell (solver, options as sorted items, grid as a tuple): the RMS endpoint error, inf if the run diverges."""
    solver, options, ts = cell
    traj = sample(model, x_T, np.asarray(ts, dtype=np.float64), solver, **dict(options))
    return float("inf") if traj.diverged else endpoint_error(np.asarray(traj.sample), x_ref)


def cell(solver: str, options: dict, ts) -> tuple:
    """A sweep cell: plain, picklable and hashable."""
    return solver, tuple(sorted(options.items())), tuple(float(t) for t in ts)


def errors(model, particles: grid_search.Particles, cells, executor=None, progress=None) -> list[float]:
    """The endpoint error of every cell on these particles: one sweep (explorer.analyses.sweeps.run)."""
    fn = functools.partial(_error, model, particles.x_T, particles.x_ref)
    return _sweep(list(cells), fn, executor=executor, progress=progress)


# ---------------------------------------------------------------- the fixed solvers


def _unipc_options():
    return [dict(order=o, variant=v, corrector=c) for o in (1, 2, 3) for v in ("bh1", "bh2") for c in (True, False)]


FIXED = (
    [("euler", {}), ("heun", {}), ("ddim", {}), ("dpmpp-2s", {}), ("dpm-solver-2", {}), ("dpm-solver-3", {}),
     ("dpmpp-2m", {}), ("dpmpp-3m", {}), ("deis", {"order": 2}), ("deis", {"order": 3}),
     ("plms", {"order": 2}), ("plms", {"order": 3}), ("plms", {"order": 4})]
    + [("unipc", o) for o in _unipc_options()]
)


def label(solver: str, options: dict) -> str:
    """'unipc(order=2, variant=bh2)': the options that differ from the defaults."""
    declared = _solvers.info(solver)["options"]
    changed = {k: v for k, v in options.items() if k in declared and v != declared[k]["default"]}
    return solver if not changed else f"{solver}({', '.join(f'{k}={v}' for k, v in changed.items())})"


def baselines(prob: Problem, nfe: int, fixed=FIXED, spacings=SPACINGS, executor=None, progress=None) -> list[dict]:
    """Every fixed solver that spends exactly nfe evaluations, on every spacing, scored on the fit and
    held-out particles: records {label, solver, options, spacing, ts, fit_error, holdout_error}."""
    t0, t1 = prob.ends
    rows = []
    for solver, options in fixed:
        steps = steps_for(solver, nfe)
        if steps is None:
            continue
        for spacing in spacings:
            try:
                ts = timesteps(prob.schedule, steps, spacing, t0, t1)
            except ValueError:
                continue
            rows.append(dict(label=label(solver, options), solver=solver, options=dict(options), spacing=spacing, ts=ts))
    cells = [cell(r["solver"], r["options"], r["ts"]) for r in rows]
    for key, particles in (("fit_error", prob.fit), ("holdout_error", prob.holdout)):
        for r, e in zip(rows, errors(prob.model, particles, cells, executor, progress)):
            r[key] = e
    return rows


def best(rows: list[dict], by: str = "holdout_error") -> dict:
    """The record with the smallest `by` (ties: the first)."""
    finite = [r for r in rows if np.isfinite(r[by])]
    if not finite:
        raise ValueError(f"no record has a finite {by}")
    return min(finite, key=lambda r: r[by])


# ---------------------------------------------------------------- a searched sampler


@dataclass
class Searched:
    """A searched or fitted sampler on its grid, with its errors on the fit and held-out particles and
    the best fixed solver's at equal NFE. method: 'schedule' (USF), 'grid-ea' (AutoDiffusion),
    'grid-nm' (Nelder-Mead, grid_search.optimise), 'brute-force', 'dc' (DC-Solver), 'dc-cpr'."""

    method: str
    solver: str
    options: dict
    ts: np.ndarray
    schedule: object
    nfe: int
    fit_error: float
    holdout_error: float
    best_fixed: dict
    history: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_evals: int = 0
    wall_time: float = 0.0
    setting: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """Held-out error of the best fixed solver at equal NFE over this one's (> 1: better)."""
        return self.best_fixed["holdout_error"] / self.holdout_error

    @property
    def positions(self) -> np.ndarray:
        """The grid as relative positions in lambda, 0 at t_start and 1 at t_end: what transfers."""
        return relative_positions(self.schedule, self.ts)

    @property
    def sigmas(self) -> np.ndarray:
        """The grid in k-diffusion's convention sigma / alpha = e^{-lambda} (diffusers' sigmas)."""
        return sigmas_of(self.schedule, self.ts)

    def runnable(self) -> dict:
        """The sampler as data: ex.sample(model, x_T, timesteps, solver, **options) runs it."""
        return {"solver": self.solver, "options": _jsonable(self.options), "timesteps": [float(t) for t in self.ts],
                "sigmas": [float(s) for s in self.sigmas]}

    def code(self) -> str:
        """Python that runs the sampler here, and its grid for k-diffusion and diffusers."""
        opts = "".join(f", {k}={v!r}" for k, v in _jsonable(self.options).items())
        ts = ", ".join(f"{t:.10g}" for t in self.ts)
        sig = ", ".join(f"{s:.10g}" for s in self.sigmas)
        return (f"# {self.method} search at NFE {self.nfe} on {self.setting}: held-out error {self.holdout_error:.4g}\n"
                f"# (best fixed solver {self.best_fixed['label']} on a {self.best_fixed['spacing']} grid: "
                f"{self.best_fixed['holdout_error']:.4g})\n"
                f"timesteps = [{ts}]\n"
                f"traj = ex.sample(model, x_T, timesteps, {self.solver!r}{opts})\n"
                f"# k-diffusion / diffusers sigmas (sigma / alpha; append 0.0 for k-diffusion's final step):\n"
                f"sigmas = [{sig}]")

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("method", "solver", "options", "nfe", "fit_error", "holdout_error",
                                             "best_fixed", "n_evals", "wall_time", "setting", "extra")}
        out["ts"] = self.ts
        out["history"] = compact_history(self.history)
        out["schedule_name"] = getattr(self.schedule, "name", None)
        out["best_fixed"] = {k: v for k, v in self.best_fixed.items()}
        return _jsonable(out)

    @classmethod
    def from_dict(cls, d: dict) -> "Searched":
        d = dict(d)
        name = d.pop("schedule_name")
        return cls(schedule=_schedules.get(name), ts=np.asarray(d.pop("ts"), dtype=np.float64),
                   history=expand_history(d.pop("history")), **d)


def compact_history(history) -> dict:
    """A best-so-far history as its change points: {"at": evaluation indices (from 1), "best": values, "n": length}."""
    h = np.asarray(history, dtype=np.float64)
    if len(h) == 0:
        return {"at": [], "best": [], "n": 0}
    change = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
    return {"at": (change + 1).tolist(), "best": h[change].tolist(), "n": int(len(h))}


def expand_history(compact) -> np.ndarray:
    """The full best-so-far history from compact_history's change points."""
    at, best_, n = list(compact["at"]), list(compact["best"]), int(compact["n"])
    out = np.empty(n)
    for k, (a, v) in enumerate(zip(at, best_)):
        end = at[k + 1] - 1 if k + 1 < len(at) else n
        out[a - 1:end] = v
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def relative_positions(schedule, ts) -> np.ndarray:
    """(lambda(t_i) - lambda(t_0)) / (lambda(t_n) - lambda(t_0)): 0 at the start, 1 at the end."""
    lam = np.asarray(schedule.lambda_(np.asarray(ts, dtype=np.float64)), dtype=np.float64)
    return (lam - lam[0]) / (lam[-1] - lam[0])


def grid_at(schedule, positions, t_start: float, t_end: float) -> np.ndarray:
    """The grid at these relative positions in lambda between t_start and t_end of `schedule`."""
    l0, l1 = float(schedule.lambda_(t_start)), float(schedule.lambda_(t_end))
    ts = np.asarray(schedule.t_of_lambda(l0 + np.asarray(positions, dtype=np.float64) * (l1 - l0)), dtype=np.float64)
    ts[0], ts[-1] = t_start, t_end
    return check_grid(schedule, ts, name="transferred grid")


def _check_nfe(nfe, low: int = 1) -> int:
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or nfe < low:
        raise ValueError(f"nfe must be an integer >= {low}, got {nfe!r}")
    return int(nfe)


# ---------------------------------------------------------------- USF: solver-schedule search

USF_CONFIG = {
    "rank_bar": 15, "crossover": 0.3, "deep_crossover": 0.5,
    "t_prob": 0.3, "t_sigma": 0.08,
    "order_prob": 0.3, "orders": {1: 0.2, 2: 0.4, 3: 0.3, 4: 0.1},
    "prediction_prob": 0.3, "predictions": {"d": 0.5, "n": 0.5},
    "relax_prob": 0.3, "relax_sigma": 0.03,
    "points_prob": 0.3, "points": {1: 0.5, 2: 0.5},
    "corrector_prob": 0.3, "correctors": {"none": 0.5, "pseudo": 0.5},
}


def initial_schedules(n: int) -> list[tuple]:
    """The native solvers as schedules of n steps (deduplicated): DDIM and DPM-Solver(++) multistep of
    orders 2-3, UniPC 1-3 with bh1/bh2 with and without UniC, each in data and noise prediction."""
    out = {}
    for pred in ("d", "n"):
        for order in (1, 2, 3):
            s = _usf.dpmpp(n, order, pred)
            out.setdefault(_usf.to_text(s), s)
        for order in (1, 2, 3):
            for variant in ("bh1", "bh2"):
                for corrector in (True, False):
                    s = _usf.unipc(n, order, variant, corrector, pred)
                    out.setdefault(_usf.to_text(s), s)
    return list(out.values())


def _draw(rng, table: dict):
    keys = list(table)
    return keys[int(rng.choice(len(keys), p=np.asarray(list(table.values()), dtype=np.float64)))]


def _key(steps, ts) -> tuple:
    return _usf.to_text(steps), tuple(np.round(np.asarray(ts, dtype=np.float64), 12))


def mutate_schedule(steps, ts, rng, config=USF_CONFIG, search_grid: bool = True):
    """One child of (steps, ts) by the official mutation (see the module docstring)."""
    steps, ts = list(steps), np.array(ts, dtype=np.float64)
    n = len(steps)
    t0, t1 = ts[0], ts[-1]
    for i in range(n):
        if search_grid and i < n - 1 and rng.random() < config["t_prob"]:
            new = ts[i + 1] * (1.0 + rng.normal(0.0, config["t_sigma"]))
            if t1 < new < t0:
                ts[i + 1] = new
        st = steps[i]
        if rng.random() < config["order_prob"]:
            order = min(int(_draw(rng, config["orders"])), i + 1)
            if order != st.order:  # a new order starts from plain difference estimates, as the official code
                st = replace(st, order=order, points=None, relax="taylor", coef=0.0, corrector_relax="taylor")
        if rng.random() < config["prediction_prob"]:
            st = replace(st, prediction=_draw(rng, config["predictions"]))
        if st.order > 1:
            if rng.random() < config["relax_prob"]:
                coef = st.coef if st.relax == "linear" else 0.0
                if rng.random() < config["relax_prob"]:
                    coef += float(rng.normal(0.0, config["relax_sigma"]))
                st = replace(st, relax="linear", coef=coef)
            if rng.random() < config["points_prob"]:
                st = replace(st, points=min(int(_draw(rng, config["points"])), st.order - 1))
        if rng.random() < config["corrector_prob"]:
            corrector = _draw(rng, config["correctors"])
            if corrector != st.corrector:
                st = replace(st, corrector=corrector, corrector_relax="taylor")
        steps[i] = st
    steps[-1] = replace(steps[-1], corrector="none", corrector_relax="taylor")  # the official final_type_list
    ts[1:-1] = np.sort(ts[1:-1])[::-1]
    if not np.all(np.diff(ts) < 0):
        return None
    return tuple(_usf.check_step(s) for s in steps), ts


def crossover_schedule(a, b, rng, config=USF_CONFIG):
    """A child of parents a, b = (steps, ts): each decision group (grid, order with its derivative
    estimate, prediction, corrector) from one parent, both parents contributing; with probability
    deep_crossover, prediction and order step by step from either."""
    groups = ["grid", "order", "prediction", "corrector"]
    pick = {g: int(rng.integers(2)) for g in groups}
    if len(set(pick.values())) == 1:
        pick[groups[int(rng.integers(len(groups)))]] = 1 - pick[groups[0]]
        if len(set(pick.values())) == 1:
            pick["grid"] = 1 - pick["order"]
    parents = (a, b)
    n = len(a[0])
    steps = []
    deep = rng.random() < config["deep_crossover"]
    for i in range(n):
        src_order = parents[pick["order"]][0][i]
        src_pred = parents[pick["prediction"]][0][i]
        if deep:
            src_order = src_pred = parents[int(rng.integers(2))][0][i]
        src_corr = parents[pick["corrector"]][0][i]
        same = src_corr.order == src_order.order
        steps.append(replace(src_order, prediction=src_pred.prediction, corrector=src_corr.corrector,
                             corrector_relax=src_corr.corrector_relax if same else "taylor"))
    steps[-1] = replace(steps[-1], corrector="none", corrector_relax="taylor")
    return tuple(_usf.check_step(s) for s in steps), np.array(parents[pick["grid"]][1], dtype=np.float64)


def search_schedule(prob: Problem, nfe: int = 5, *, budget: int = 800, batch: int = 32, seed: int = 0,
                    search_grid: bool = True, config=USF_CONFIG, fixed_rows=None, executor=None,
                    progress=None) -> Searched:
    """The USF / S^3 evolutionary search for the schedule (and grid) of nfe evaluations that minimises
    the endpoint error on the fit particles; scored on the held-out ones. budget: candidates evaluated
    (the initial population included); batch: children per generation (one sweep each); seed: the
    search's random draws. fixed_rows: baselines(prob, nfe), if already computed. executor: the
    sweeps' (explorer.analyses.sweeps.run); a dask Client from ex.sweeps.local_cluster() serves every
    generation, where "local-cluster" would start a cluster per generation. progress: callable
    progress(done, total, best fit error) or True (tqdm)."""
    began = time.perf_counter()
    n = _check_nfe(nfe, 2)
    for name, v, low in (("budget", budget, 1), ("batch", batch, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    rng = as_generator(seed)
    s = prob.schedule
    t0, t1 = prob.ends
    report, close = progress_reporter(progress, int(budget), "schedule search")

    population, seen, history = [], set(), []  # population: (fit error, steps, ts), kept sorted

    def evaluate(cands):
        cands = [c for c in cands if _key(*c) not in seen][: max(0, int(budget) - len(history))]
        for c in cands:
            seen.add(_key(*c))
        if not cands:
            return
        errs = errors(prob.model, prob.fit, [cell("usf", {"schedule": _usf.to_text(c[0])}, c[1]) for c in cands],
                      executor)
        for (steps, ts), e in zip(cands, errs):
            population.append((e, steps, ts))
            history.append(min(e, history[-1]) if history else e)
        population.sort(key=lambda r: r[0])
        report(len(history), int(budget), history[-1])

    try:
        grids = []
        for spacing in SPACINGS:
            try:
                grids.append(timesteps(s, n, spacing, t0, t1))
            except ValueError:
                continue
        evaluate([(steps, ts) for ts in grids for steps in initial_schedules(n)])
        stalls = 0
        while len(history) < budget and stalls < 20:
            children = []
            for _ in range(int(batch)):
                top = population[: config["rank_bar"]]
                if len(top) > 1 and rng.random() < config["crossover"]:
                    i, j = rng.choice(len(top), 2, replace=False)
                    parent = crossover_schedule(top[i][1:], top[j][1:], rng, config)
                else:
                    parent = top[int(rng.integers(len(top)))][1:]
                child = mutate_schedule(*parent, rng, config, search_grid)
                if child is not None:
                    children.append(child)
            before = len(history)
            evaluate(children)
            stalls = stalls + 1 if len(history) == before else 0
    finally:
        close()

    err, steps, ts = population[0]
    text = _usf.to_text(steps)
    holdout = errors(prob.model, prob.holdout, [cell("usf", {"schedule": text}, ts)])[0]
    rows = baselines(prob, n, executor=executor) if fixed_rows is None else fixed_rows
    initial = len(grids) * len(initial_schedules(n))
    return Searched(
        method="schedule", solver="usf", options={"schedule": text}, ts=np.asarray(ts), schedule=s, nfe=n,
        fit_error=float(err), holdout_error=float(holdout), best_fixed=_public(best(rows)),
        history=np.asarray(history), n_evals=len(history), wall_time=time.perf_counter() - began, setting=prob.label,
        extra={"best_initial_fit_error": float(min(history[:initial])), "search_grid": bool(search_grid),
               "seed": int(seed), "budget": int(budget), "batch": int(batch),
               "best_fixed_on_fit": _public(best(rows, "fit_error"))},
    )


def _public(row: dict) -> dict:
    """A baseline record without its grid array, as JSON-able data."""
    return {k: (v if k != "options" else dict(v)) for k, v in row.items() if k != "ts"}


# ---------------------------------------------------------------- AutoDiffusion: time-step search

EA_CONFIG = {"population": 50, "select": 10, "mutation": 25, "crossover": 25, "m_prob": 0.1, "epochs": 10,
             "init_m_prob": 0.1}


def mutate_grid(parent, interior, m_prob: float, rng) -> list:
    """AutoDiffusion's mutation: each time index of parent replaced, with probability m_prob, by a
    candidate not in the grid (drawn without replacement, so the times stay distinct)."""
    unused = [c for c in interior if c not in parent]
    out = list(parent)
    for k in range(len(out)):
        if rng.random() < m_prob and unused:
            out[k] = unused.pop(int(rng.integers(len(unused))))
    return out


def crossover_grid(a, b, rng) -> list:
    """AutoDiffusion's crossover: element k of the (sorted) child from a or b with probability 1/2 each
    (it may repeat a time: the search skips such a child)."""
    return [a[k] if rng.random() < 0.5 else b[k] for k in range(len(a))]


def candidate_times(schedule, t_start: float, t_end: float, count: int = 1000, spacing: str = "uniform-lambda"):
    """The fine grid whose points a searched grid is made of: count + 1 times from t_start to t_end."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 2:
        raise ValueError(f"candidates must be an integer >= 2, got {count!r}")
    return timesteps(schedule, int(count), spacing, t_start, t_end)


def search_grid(prob: Problem, solver: str = "dpmpp-2m", nfe: int = 5, *, candidates: int = 1000,
                spacing: str = "uniform-lambda", seed: int = 0, config=EA_CONFIG, fixed_rows=None, executor=None,
                progress=None, **options) -> Searched:
    """AutoDiffusion's evolutionary search for the grid of nfe evaluations of `solver` (interior times
    drawn from `candidates` fine-grid points, ends fixed) minimising the fit error; scored on held-out."""
    began = time.perf_counter()
    spec = _solvers.spec(solver)
    opts = spec.resolve(options)
    if spec.draws_noise(opts) or solver == "rk45":
        raise ValueError(f"solver {solver!r}: the grid search scores deterministic solvers on a fixed grid")
    nfe = _check_nfe(nfe)
    n = steps_for(solver, nfe)
    if n is None or n < 2:
        raise ValueError(f"nfe = {nfe} gives {solver!r} fewer than 2 steps: no interior time to search")
    t0, t1 = prob.ends
    fine = candidate_times(prob.schedule, t0, t1, candidates, spacing)
    interior = np.arange(1, len(fine) - 1)
    if len(interior) < n - 1:
        raise ValueError(f"candidates = {candidates} has {len(interior)} interior times: fewer than the {n - 1} a grid needs")
    rng = as_generator(seed)
    total = config["population"] * config["epochs"]
    report, close = progress_reporter(progress, total, "grid search (EA)")
    scores, history = {}, []

    def grid_of(cand) -> np.ndarray:
        return np.concatenate([[fine[0]], fine[list(cand)], [fine[-1]]])

    def legal(cand) -> tuple | None:
        cand = tuple(sorted(int(c) for c in cand))
        if len(set(cand)) != len(cand) or cand in scores:  # a repeated time, or visited
            return None
        return cand

    def evaluate(cands):
        cands = list(dict.fromkeys(c for c in cands if c is not None and c not in scores))
        if not cands:
            return
        errs = errors(prob.model, prob.fit, [cell(solver, opts, grid_of(c)) for c in cands], executor)
        for c, e in zip(cands, errs):
            scores[c] = e
            history.append(min(e, history[-1]) if history else e)
        report(len(history), total, history[-1])

    def random_cand():
        return legal(rng.choice(interior, n - 1, replace=False))

    def mutant(parent, m_prob):
        return legal(mutate_grid(parent, interior, m_prob, rng))

    def fill(make, count, tries):
        got = []
        for _ in range(tries):
            if len(got) >= count:
                break
            c = make()
            if c is not None and c not in got:
                got.append(c)
        return got

    try:
        # Initial population: the standard grid (use_ddim_init_x), half random, the rest its mutants.
        start = timesteps(prob.schedule, n, spacing, t0, t1)
        init = tuple(sorted({int(np.argmin(np.abs(fine - t))) for t in start[1:-1]}))
        if len(init) != n - 1 or init[0] < 1 or init[-1] > len(fine) - 2:
            init = tuple(sorted(rng.choice(interior, n - 1, replace=False).tolist()))
        pop = [init]
        pop += fill(random_cand, config["population"] // 2, 10 * config["population"])
        pop += fill(lambda: mutant(init, config["init_m_prob"]), config["population"] - len(pop), 10 * config["population"])
        evaluate(pop)
        top = []
        for _epoch in range(config["epochs"] - 1):
            top = sorted(set(top) | set(c for c in pop if c in scores), key=lambda c: scores[c])[: config["select"]]
            pop = fill(lambda: mutant(top[int(rng.integers(len(top)))], config["m_prob"]), config["mutation"],
                       10 * config["mutation"])

            def cross():
                return legal(crossover_grid(top[int(rng.integers(len(top)))], top[int(rng.integers(len(top)))], rng))

            pop += [c for c in fill(cross, config["crossover"], 10 * config["crossover"]) if c not in pop]
            pop += fill(random_cand, config["population"] - len(pop), 10 * config["population"])
            evaluate(pop)
    finally:
        close()

    best_cand = min(scores, key=lambda c: scores[c])
    ts = grid_of(best_cand)
    holdout = errors(prob.model, prob.holdout, [cell(solver, opts, ts)])[0]
    rows = baselines(prob, nfe, executor=executor) if fixed_rows is None else fixed_rows
    own = [r for r in rows if r["solver"] == solver and r["options"] == opts]
    return Searched(
        method="grid-ea", solver=solver, options=opts, ts=ts, schedule=prob.schedule, nfe=nfe,
        fit_error=float(scores[best_cand]), holdout_error=float(holdout), best_fixed=_public(best(rows)),
        history=np.asarray(history), n_evals=len(history), wall_time=time.perf_counter() - began, setting=prob.label,
        extra={"candidates": int(candidates), "indices": list(best_cand), "seed": int(seed),
               "own_best_spacing": _public(best(own)) if own else None},
    )


def brute_force_grid(prob: Problem, solver: str = "dpmpp-2m", nfe: int = 3, *, candidates: int = 60,
                     spacing: str = "uniform-lambda", executor=None, progress=None, **options) -> dict:
    """Every grid of nfe evaluations (2 or 3 steps) whose interior times are among the candidates,
    scored on the fit particles: {"ts", "error", "indices", "n_grids"}, the optimum the EA should find."""
    opts = _solvers.spec(solver).resolve(options)
    nfe = _check_nfe(nfe)
    n = steps_for(solver, nfe)
    if n not in (2, 3):
        raise ValueError(f"brute force covers 2 or 3 steps; nfe = {nfe} gives {solver!r} {n} steps")
    t0, t1 = prob.ends
    fine = candidate_times(prob.schedule, t0, t1, candidates, spacing)
    idx = range(1, len(fine) - 1)
    cands = [(i,) for i in idx] if n == 2 else [(i, j) for i in idx for j in idx if i < j]
    grids = [np.concatenate([[fine[0]], fine[list(c)], [fine[-1]]]) for c in cands]
    report, close = progress_reporter(progress, len(cands), "brute force")
    lowest = [math.inf]

    def tick(done, total, _cell, result):
        lowest[0] = min(lowest[0], result)
        report(done, total, lowest[0])

    try:
        errs = errors(prob.model, prob.fit, [cell(solver, opts, g) for g in grids], executor, progress=tick)
    finally:
        close()
    k = int(np.argmin(errs))
    return {"ts": grids[k], "error": float(errs[k]), "indices": list(cands[k]), "n_grids": len(cands),
            "errors": np.asarray(errs)}


def nelder_mead_grid(prob: Problem, solver: str = "dpmpp-2m", nfe: int = 5, *, fixed_rows=None, max_evals=None,
                     **options) -> Searched:
    """The existing Nelder-Mead grid optimiser (grid_search.optimise) on the same particles, as a Searched."""
    began = time.perf_counter()
    r = grid_search.optimise(prob.model, solver, nfe, fit=prob.fit, holdout=prob.holdout, max_evals=max_evals,
                             **options)
    rows = baselines(prob, nfe) if fixed_rows is None else fixed_rows
    return Searched(
        method="grid-nm", solver=solver, options=r.options, ts=r.ts, schedule=prob.schedule, nfe=int(nfe),
        fit_error=r.error, holdout_error=r.holdout_error, best_fixed=_public(best(rows)), history=r.best_history,
        n_evals=len(r.history), wall_time=time.perf_counter() - began, setting=prob.label,
    )


# ---------------------------------------------------------------- DC-Solver: fitting rho

RHO_BOUNDS = (0.5, 1.5)  # the diffusers scheduler's 1 + tanh(.) / 2


class _Recorder:
    """The model, with every (x, t, x0_hat) it is asked for kept in order."""

    def __init__(self, model):
        self.model, self.schedule, self.calls = model, model.schedule, []

    def denoise(self, x, t):
        d = self.model.denoise(x, t)
        self.calls.append((x, float(t), d))
        return d


def _dc_options(order: int, variant: str, dc_order: int) -> dict:
    return {"order": order, "variant": variant, "corrector": True, "dc_order": dc_order}


def compensated_buffer(raw, times, rhos, dc_order: int = 2) -> list:
    """The buffer DC-Solver steps with: raw[i] the output evaluated for t_i, compensated in turn
    (m_i <- sum_k w_k [m_i, m_{i-1}^dc, ...] at t* = t_{i-1} + rho_i (t_i - t_{i-1})), as dc_solver does."""
    out = []
    for i, m in enumerate(raw):
        if i >= dc_order and rhos[i] != 1.0:
            t_star = times[i - 1] + rhos[i] * (times[i] - times[i - 1])
            nodes = [times[i - k] for k in range(dc_order + 1)]
            vals = [m] + [out[i - k] for k in range(1, dc_order + 1)]
            m = sum(w * v for w, v in zip(lagrange_weights(nodes, t_star), vals))
        out.append(m)
    return out


def _argmin(loss, bounds) -> float:
    """The rho in bounds minimising loss (scipy's bounded Brent search, to 1e-7)."""
    from scipy.optimize import minimize_scalar  # 0.4 s to import: paid by the first fit, not by `import explorer`

    return float(minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-7}).x)


def _buffer_rho(raw, comp, times, i, target, dc_order, bounds) -> float:
    """The rho at step i that brings the compensated newest output closest (RMS) to `target`."""
    nodes = [times[i - k] for k in range(dc_order + 1)]
    vals = [raw[i]] + [comp[i - k] for k in range(1, dc_order + 1)]

    def loss(rho):
        t_star = times[i - 1] + rho * (times[i] - times[i - 1])
        m = sum(w * v for w, v in zip(lagrange_weights(nodes, t_star), vals))
        return endpoint_error(m, target)

    return _argmin(loss, bounds)


@dataclass
class DCFit:
    """rho per step for one NFE: `rho` fitted to the trajectory, `rho_aligned` the rho that makes the
    buffer equal the denoiser at the corrected state (the misalignment fixed), `rho_exact` equal the
    denoiser on the exact path; errors on the fit particles along the way."""

    nfe: int
    ts: np.ndarray
    rho: np.ndarray
    rho_aligned: np.ndarray
    rho_exact: np.ndarray
    fit_error: float
    unipc_fit_error: float
    options: dict
    w: float | None = None
    n_evals: int = 0
    wall_time: float = 0.0


def fit_dc(model, nfe: int, fit: grid_search.Particles, *, spacing: str = "uniform-lambda", order: int = 3,
           variant: str = "bh1", dc_order: int = 2, bounds=RHO_BOUNDS, w: float | None = None) -> DCFit:
    """DC-Solver's search: for each compensated step i in turn (the earlier ratios fixed at their fitted
    values), the rho in `bounds` minimising the RMS distance of the state after step i to the exact
    path at t_{i+1} on the fit particles (few: the paper uses 10). Also the buffer-optimal ratios along
    the fitted path (DCFit). w: the guidance scale the model was built with, kept for the regression."""
    began = time.perf_counter()
    nfe = _check_nfe(nfe, 2)
    t0, t1 = fit.t_start, fit.t_end
    ts = timesteps(model.schedule, nfe, spacing, t0, t1)
    ref = _rk45(model, fit.x_T, ts)
    if ref.diverged:
        raise ValueError(f"the rk45 reference diverged: {ref.diverged_reason}")
    opts = _dc_options(order, variant, dc_order)
    rhos = [1.0] * nfe

    runs = [0]

    def state(rho_list, i):
        runs[0] += 1
        return sample(model, fit.x_T, ts, "dc-solver", rho=tuple(rho_list), **opts).x[i + 1]

    for i in range(dc_order, nfe):
        def loss(r, i=i):
            trial = rhos[:i] + [r] + [1.0] * (nfe - i - 1)
            x = state(trial, i)
            return endpoint_error(x, ref.x[i + 1]) if np.all(np.isfinite(x)) else 1e300

        rhos[i] = _argmin(loss, bounds)

    # The buffer along the fitted path: raw outputs (evaluated at the predicted states), the
    # compensated ones, and the denoiser at the corrected states and on the exact path.
    rec = _Recorder(model)
    traj = sample(rec, fit.x_T, ts, "dc-solver", rho=tuple(rhos), **opts)
    raw = [d for _, _, d in rec.calls][:nfe]
    comp = compensated_buffer(raw, list(ts), rhos, dc_order)
    aligned, exact = [1.0] * nfe, [1.0] * nfe
    for i in range(dc_order, nfe):
        aligned[i] = _buffer_rho(raw, comp, list(ts), i, model.denoise(traj.x[i], ts[i]), dc_order, bounds)
        exact[i] = _buffer_rho(raw, comp, list(ts), i, model.denoise(ref.x[i], ts[i]), dc_order, bounds)
    unipc = sample(model, fit.x_T, ts, "unipc", order=order, variant=variant)
    return DCFit(nfe=nfe, ts=ts, rho=np.asarray(rhos), rho_aligned=np.asarray(aligned), rho_exact=np.asarray(exact),
                 fit_error=endpoint_error(traj.x[-1], ref.x[-1]), unipc_fit_error=endpoint_error(unipc.x[-1], ref.x[-1]),
                 options=opts, w=w, n_evals=runs[0], wall_time=time.perf_counter() - began)


@dataclass
class Cascade:
    """The cascade polynomial regression: rho(i; NFE, w) = sum_k (i/NFE)^k c_k, each c_k a quadratic in
    w / 12 whose coefficients are quadratics in NFE / 50 (without guidance, c_k a quadratic in NFE / 50).
    coeffs: (degree + 1, 3, 3) with guidance (k, power of w, power of NFE), (degree + 1, 3) without."""

    coeffs: np.ndarray
    guidance: bool
    dc_order: int = 2
    residual: float = 0.0

    def predict(self, nfe: int, w: float | None = None) -> np.ndarray:
        """rho for every step of an nfe-step run (1 for the warm-up steps, which are not compensated)."""
        nfe = _check_nfe(nfe, 1)
        if self.guidance and w is None:
            raise ValueError("this regression was fitted with guidance: pass w (the guidance scale)")
        steps = np.arange(1, nfe + 1)  # 1-based, as the official code
        rho = _cascade_features(steps / nfe, np.full(nfe, nfe / 50.0),
                                None if not self.guidance else np.full(nfe, float(w) / 12.0)) @ self.coeffs.ravel()
        rho[: self.dc_order] = 1.0
        return rho

    def to_dict(self) -> dict:
        return {"coeffs": self.coeffs.tolist(), "guidance": self.guidance, "dc_order": self.dc_order,
                "residual": self.residual}


def _cascade_features(x, N, G=None) -> np.ndarray:
    """Rows of the cascade's monomials x^k N^b (G^a), ordered as Cascade.coeffs.ravel()."""
    cols = []
    for k in range(4):
        if G is None:
            cols += [x ** k * N ** (2 - b) for b in range(3)]
        else:
            cols += [x ** k * G ** (2 - a) * N ** (2 - b) for a in range(3) for b in range(3)]
    return np.stack(cols, axis=1)


def cascade_fit(fits, dc_order: int = 2) -> Cascade:
    """The cascade regression through the fitted ratios of several DCFits (different NFE, and guidance
    scales w if they were fitted with one): linear least squares in its 12 (or 36) coefficients."""
    fits = list(fits)
    if not fits:
        raise ValueError("fits is empty: fit DC-Solver at a few NFE values first (fit_dc)")
    guided = {f.w is not None for f in fits}
    if len(guided) != 1:
        raise ValueError("fits mix runs with and without a guidance scale w")
    guidance = guided.pop()
    x, N, G, y = [], [], [], []
    for f in fits:
        for i in range(dc_order, f.nfe):
            x.append((i + 1) / f.nfe)
            N.append(f.nfe / 50.0)
            G.append((f.w or 0.0) / 12.0)
            y.append(f.rho[i])
    A = _cascade_features(np.asarray(x), np.asarray(N), np.asarray(G) if guidance else None)
    if len(y) < A.shape[1]:
        raise ValueError(f"{len(y)} fitted ratios are too few for the regression's {A.shape[1]} coefficients: "
                         "fit more NFE values (or guidance scales)")
    coef, *_ = np.linalg.lstsq(A, np.asarray(y), rcond=None)
    shape = (4, 3, 3) if guidance else (4, 3)
    residual = float(np.sqrt(np.mean((A @ coef - np.asarray(y)) ** 2)))
    return Cascade(coef.reshape(shape), guidance, dc_order, residual)


def dc_searched(model, fitted: DCFit, prob: Problem, rhos, method: str = "dc", fixed_rows=None) -> Searched:
    """A DC-Solver with these ratios on fitted's grid, scored on prob's fit and held-out particles."""
    opts = dict(fitted.options, rho=tuple(float(r) for r in rhos))
    ts = fitted.ts
    fit_e, hold_e = (errors(model, p, [cell("dc-solver", opts, ts)])[0] for p in (prob.fit, prob.holdout))
    rows = baselines(prob, fitted.nfe) if fixed_rows is None else fixed_rows
    return Searched(method=method, solver="dc-solver", options=opts, ts=np.asarray(ts), schedule=model.schedule,
                    nfe=fitted.nfe, fit_error=fit_e, holdout_error=hold_e, best_fixed=_public(best(rows)),
                    n_evals=fitted.n_evals, wall_time=fitted.wall_time, setting=prob.label)


def dc_guidance(target: str = "gmm-2d-ring8", schedule: str = "vp-linear", label: int = 0, ws=(1.0, 3.0, 7.5),
                heldout_w: float = 5.0, fit_nfes=(5, 6, 8, 10), heldout_nfes=(7, 9), n_fit: int = 16,
                n_holdout: int = 1000, seed: int = 0) -> dict:
    """DC-Solver under classifier-free guidance (guidance.guided_model of the labelled preset, class
    `label`): rho fitted at every guidance scale of ws and NFE of fit_nfes on n_fit trajectories, the
    cascade regression over (NFE, w) through all of them, and the held-out error (n_holdout particles
    of seed + 1) of UniPC, of the fitted DC-Solver and of the regression's ratios at every (w, NFE),
    heldout_w and heldout_nfes included (never fitted). Returns {"rows", "cascade", ...}."""
    from . import guidance as _guidance

    gm = _guidance.labelled(target)
    s = _schedules.get(schedule)
    prior = AnalyticModel(gm, s)
    x_fit = prior.prior_sample(int(n_fit), as_generator(seed + 2))
    x_hold = prior.prior_sample(int(n_holdout), as_generator(seed + 1))
    fits = []
    for w in ws:
        m = _guidance.guided_model(gm, s, label, w)
        fit = grid_search.particles(m, x_fit)
        fits += [fit_dc(m, k, fit, w=float(w)) for k in fit_nfes]
    cpr = cascade_fit(fits)
    rows = []
    for w in list(ws) + [heldout_w]:
        m = _guidance.guided_model(gm, s, label, w)
        hold = grid_search.particles(m, x_hold)
        for k in sorted(set(fit_nfes) | set(heldout_nfes)):
            ts = timesteps(s, k, "uniform-lambda", hold.t_start, hold.t_end)
            opts = _dc_options(3, "bh1", 2)
            fitted = next((f for f in fits if f.w == w and f.nfe == k), None)
            cells = [cell("unipc", {}, ts), cell("dc-solver", dict(opts, rho=tuple(cpr.predict(k, w))), ts)]
            if fitted is not None:
                cells.append(cell("dc-solver", dict(opts, rho=tuple(fitted.rho)), ts))
            e = errors(m, hold, cells)
            rows.append({"w": float(w), "nfe": int(k), "heldout": fitted is None, "unipc": e[0], "dc_cpr": e[1],
                         "dc": e[2] if fitted is not None else None})
    return {"target": target, "schedule": schedule, "label": int(label), "ws": [float(w) for w in ws],
            "heldout_w": float(heldout_w), "rows": rows, "cascade": cpr.to_dict()}


# ---------------------------------------------------------------- transfer: fitted on A, scored on B


def score_on(found: Searched, prob: Problem, rows=None) -> dict:
    """found carried to prob's model (its grid at the same relative positions in lambda), scored on
    prob's held-out particles against the best fixed solver there: {error, best_fixed, gain}."""
    t0, t1 = prob.ends
    ts = grid_at(prob.schedule, found.positions, t0, t1)
    e = errors(prob.model, prob.holdout, [cell(found.solver, found.options, ts)])[0]
    rows = baselines(prob, found.nfe) if rows is None else rows
    b = best(rows)
    return {"error": float(e), "best_fixed": b["holdout_error"], "best_fixed_label": f"{b['label']} / {b['spacing']}",
            "gain": float(b["holdout_error"] / e) if e > 0 else float("inf")}


def transfer(found: dict, problems: dict) -> dict:
    """The transfer matrix: found {row label: Searched} (each fitted in its own setting) scored on every
    problem {column label: Problem}. Returns {"rows", "cols", "error", "gain"} with error[r][c] the
    held-out error of row r's sampler in setting c and gain = best fixed there / that error."""
    rows_by_col = {c: baselines(p, next(iter(found.values())).nfe) for c, p in problems.items()}
    err, gain, bestf = [], [], []
    for r, f in found.items():
        out = [score_on(f, p, rows_by_col[c]) for c, p in problems.items()]
        err.append([o["error"] for o in out])
        gain.append([o["gain"] for o in out])
        bestf = [o["best_fixed_label"] for o in out]
    return {"rows": list(found), "cols": list(problems), "error": err, "gain": gain, "best_fixed": bestf}


# ---------------------------------------------------------------- the whole report (the page's defaults)

DEFAULTS = {
    "setting": ["gmm-1d-3modes", "vp-linear"],
    "heldout_setting": ["gmm-1d-asym", "vp-linear"],
    "transfer_fit": [["gmm-1d-3modes", "vp-linear"], ["gmm-2d-ring8", "vp-linear"], ["gmm-1d-3modes", "edm"]],
    "transfer_score": [["gmm-1d-3modes", "vp-linear"], ["gmm-2d-ring8", "vp-linear"], ["gmm-1d-3modes", "edm"],
                       ["gmm-1d-asym", "vp-linear"]],
    "nfe": 5,
    "nfes": [4, 5, 6, 7, 8, 10],
    "n_fit": 256,
    "n_holdout": 1000,
    "seed": 0,
    "budget": 800,
    "batch": 32,
    "grid_solver": "dpmpp-2m",
    "brute_nfe": 3,
    "brute_candidates": 60,
    "dc_n_fit": 16,
    "dc_fit_nfes": [5, 6, 8, 10],
    "dc_heldout_nfes": [7, 9],
    "guided_target": "gmm-2d-ring8",
    "guided_ws": [1.0, 3.0, 7.5],
    "guided_heldout_w": 5.0,
}
DEFAULTS_FILE = "solver_search.json"


def defaults_path() -> Path:
    return data_dir() / DEFAULTS_FILE


def config(**changes) -> dict:
    """DEFAULTS with these entries changed, checked (ValueError naming the entry)."""
    unknown = sorted(set(changes) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown report setting {', '.join(map(repr, unknown))}; known: {sorted(DEFAULTS)}")
    out = _jsonable({**DEFAULTS, **changes})
    for key in ("setting", "heldout_setting"):
        as_setting(tuple(out[key]))
    for key in ("transfer_fit", "transfer_score"):
        for s in out[key]:
            as_setting(tuple(s))
    for key in ("nfe", "n_fit", "n_holdout", "budget", "batch", "brute_candidates", "dc_n_fit"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise ValueError(f"report setting {key!r} must be a positive integer, got {out[key]!r}")
    if out["nfe"] < 2 or any(not isinstance(k, int) or k < 2 for k in out["nfes"]) or not out["nfes"]:
        raise ValueError(f"report settings 'nfe' and 'nfes' must be integers >= 2, got {out['nfe']!r} and {out['nfes']!r}")
    if out["nfe"] not in out["nfes"]:
        raise ValueError(f"report setting 'nfe' ({out['nfe']}) must be one of 'nfes' {out['nfes']}")
    if out["brute_nfe"] not in (2, 3):
        raise ValueError(f"report setting 'brute_nfe' must be 2 or 3, got {out['brute_nfe']!r}")
    if not out["dc_fit_nfes"] or any(not isinstance(k, int) or k < 3 for k in out["dc_fit_nfes"] + out["dc_heldout_nfes"]):
        raise ValueError("report settings 'dc_fit_nfes' and 'dc_heldout_nfes' must be integers >= 3 (a compensated step)")
    _solvers.spec(out["grid_solver"])
    if out["guided_target"] not in _targets.names():
        raise ValueError(f"report setting 'guided_target' must be a preset, got {out['guided_target']!r}")
    if len(out["guided_ws"]) < 3 or not all(isinstance(w, (int, float)) for w in out["guided_ws"] + [out["guided_heldout_w"]]):
        raise ValueError("report setting 'guided_ws' needs at least 3 guidance scales (the regression is quadratic in w)")
    return out


def report(cfg: dict | None = None, progress=None, executor=None) -> dict:
    """Everything the Solver search page shows, for one configuration (see DEFAULTS and config()): the
    schedule and grid searches at every NFE of cfg["nfes"] against the fixed solvers, the brute-force
    check, Nelder-Mead, DC-Solver's fits and cascade regression, the held-out target and the transfer
    matrices. progress(fraction, text) is called as it goes. About a minute on one core on the defaults."""
    cfg = config() if cfg is None else config(**cfg)
    say = progress or (lambda fraction, text: None)
    began = time.perf_counter()
    out = {"inputs": cfg}
    prob = problem(tuple(cfg["setting"]), cfg["n_fit"], cfg["n_holdout"], cfg["seed"])
    nfe = cfg["nfe"]
    dc_nfes = sorted(set(cfg["dc_fit_nfes"]) | set(cfg["dc_heldout_nfes"]))
    fit_rows = [s for s in cfg["transfer_fit"] if Setting(*s) != Setting(*cfg["setting"])]
    work = [("nfe", k) for k in cfg["nfes"]] + [("grids", None)] + [("dc", k) for k in dc_nfes] + [("guided", None)] \
        + [("held", None)] \
        + [("fit", tuple(s)) for s in fit_rows] + [("score", None)]
    step = iter(range(len(work)))

    def stage(text):
        say(next(step) / len(work), text)

    curve, searches = [], {}
    for k in cfg["nfes"]:
        stage(f"NFE {k}: the fixed solvers, the schedule search (USF) and the time-step search (AutoDiffusion)")
        rows = baselines(prob, k, executor=executor)
        found = search_schedule(prob, k, budget=cfg["budget"], batch=cfg["batch"], seed=cfg["seed"], fixed_rows=rows,
                                executor=executor)
        grid = search_grid(prob, cfg["grid_solver"], k, seed=cfg["seed"], fixed_rows=rows, executor=executor)
        searches[k] = found
        curve.append({"nfe": k, "best_fixed": _public(best(rows)), "schedule": found.to_dict(), "grid_ea": grid.to_dict()})
        if k == nfe:
            out["fixed"] = [_public(r) for r in sorted(rows, key=lambda r: r["holdout_error"])[:12]]
            out["grid_nm"] = nelder_mead_grid(prob, cfg["grid_solver"], nfe, fixed_rows=rows).to_dict()
    out["curve"] = curve

    stage(f"Time steps at {cfg['brute_nfe']} steps: every grid of {cfg['brute_candidates']} candidates, and the search")
    rows = baselines(prob, cfg["brute_nfe"], executor=executor)
    brute = brute_force_grid(prob, cfg["grid_solver"], cfg["brute_nfe"], candidates=cfg["brute_candidates"],
                             executor=executor)
    ea = search_grid(prob, cfg["grid_solver"], cfg["brute_nfe"], candidates=cfg["brute_candidates"], seed=cfg["seed"],
                     fixed_rows=rows, executor=executor)
    out["brute_force"] = {"nfe": cfg["brute_nfe"], "candidates": cfg["brute_candidates"], "ts": brute["ts"].tolist(),
                          "error": brute["error"], "indices": brute["indices"], "n_grids": brute["n_grids"],
                          "ea": ea.to_dict()}

    dc_particles = grid_search.particles(prob.model, cfg["dc_n_fit"], cfg["seed"] + 2)
    fits = {}
    for k in dc_nfes:
        stage(f"DC-Solver at NFE {k}: rho per step on {cfg['dc_n_fit']} trajectories")
        fits[k] = fit_dc(prob.model, k, dc_particles)
    cpr = cascade_fit([fits[k] for k in cfg["dc_fit_nfes"]])
    dc_rows, dc_found = [], None
    for k, f in fits.items():
        rows_k = baselines(prob, k, executor=executor)
        fitted = dc_searched(prob.model, f, prob, f.rho, fixed_rows=rows_k)
        predicted = dc_searched(prob.model, f, prob, cpr.predict(k), "dc-cpr", fixed_rows=rows_k)
        dc_found = fitted if k == nfe else dc_found
        dc_rows.append({"nfe": k, "heldout_nfe": k in cfg["dc_heldout_nfes"], "ts": f.ts.tolist(),
                        "rho": f.rho.tolist(), "rho_aligned": f.rho_aligned.tolist(), "rho_exact": f.rho_exact.tolist(),
                        "rho_cpr": cpr.predict(k).tolist(), "fit_error": f.fit_error, "unipc_fit_error": f.unipc_fit_error,
                        "unipc": errors(prob.model, prob.holdout, [cell("unipc", {}, f.ts)])[0],
                        "dc": fitted.holdout_error, "dc_cpr": predicted.holdout_error, "best_fixed": _public(best(rows_k))})
    out["dc"] = {"fits": dc_rows, "cascade": cpr.to_dict(), "n_fit": cfg["dc_n_fit"]}
    stage(f"DC-Solver under guidance: rho at w = {', '.join(f'{w:g}' for w in cfg['guided_ws'])}, the regression "
          f"over NFE and w, held out at w = {cfg['guided_heldout_w']:g}")
    out["dc_guided"] = dc_guidance(cfg["guided_target"], cfg["setting"][1], 0, cfg["guided_ws"], cfg["guided_heldout_w"],
                                   cfg["dc_fit_nfes"], cfg["dc_heldout_nfes"], cfg["dc_n_fit"], cfg["n_holdout"],
                                   cfg["seed"])

    stage("The held-out target")
    probs = {}
    for s in [cfg["setting"]] + cfg["transfer_score"] + [cfg["heldout_setting"]]:
        setting = Setting(*s)
        if setting.label not in probs:
            probs[setting.label] = prob if setting == Setting(*cfg["setting"]) else problem(
                setting, cfg["n_fit"], cfg["n_holdout"], cfg["seed"])
    held = probs[Setting(*cfg["heldout_setting"]).label]
    out["heldout_target"] = {"setting": held.label, **score_on(searches[nfe], held)}

    found = {"schedule": {prob.label: searches[nfe]},
             "grid-ea": {prob.label: Searched.from_dict(next(r["grid_ea"] for r in curve if r["nfe"] == nfe))},
             "dc": {prob.label: dc_found} if dc_found is not None else {}}
    for s in fit_rows:
        stage(f"Fitting on {Setting(*s).label} for the transfer matrix")
        p = probs.get(Setting(*s).label) or problem(Setting(*s), cfg["n_fit"], cfg["n_holdout"], cfg["seed"])
        rows = baselines(p, nfe, executor=executor)
        found["schedule"][p.label] = search_schedule(p, nfe, budget=cfg["budget"], batch=cfg["batch"], seed=cfg["seed"],
                                                     fixed_rows=rows, executor=executor)
        found["grid-ea"][p.label] = search_grid(p, cfg["grid_solver"], nfe, seed=cfg["seed"], fixed_rows=rows,
                                                executor=executor)
        if nfe >= 3:
            f = fit_dc(p.model, nfe, grid_search.particles(p.model, cfg["dc_n_fit"], cfg["seed"] + 2))
            found["dc"][p.label] = dc_searched(p.model, f, p, f.rho, fixed_rows=rows)
    stage("Scoring every fitted sampler in every setting")
    cols = {Setting(*s).label: probs[Setting(*s).label] for s in cfg["transfer_score"]}
    out["transfer"] = {m: transfer(f, cols) for m, f in found.items() if f}
    say(1.0, "done")
    out["wall_time"] = time.perf_counter() - began
    return _jsonable(out)


def load_defaults(path=None) -> dict:
    """The precomputed results the page shows (made by `python -m explorer.analyses.solver_search --write-defaults`)."""
    path = defaults_path() if path is None else Path(path)
    if not path.is_file():
        raise ValueError(f"no precomputed solver-search results at {path}: run "
                         "`python -m explorer.analyses.solver_search --write-defaults`")
    return json.loads(path.read_text())


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m explorer.analyses.solver_search",
                                     description="Precompute the Solver search page's default results.")
    parser.add_argument("--write-defaults", action="store_true", help=f"write data/{DEFAULTS_FILE}")
    parser.add_argument("--out", default=None, help="where to write (default: the data folder)")
    args = parser.parse_args(argv)
    if not args.write_defaults:
        parser.print_help()
        return 0
    result = report(progress=lambda fraction, text: print(f"{100 * fraction:3.0f}%  {text}", flush=True))
    path = Path(args.out) if args.out else defaults_path()
    path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) in {result['wall_time']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
