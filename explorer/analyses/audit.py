"""The scheduler audit: every diffusers scheduler, in its common configurations, measured on an
exact target against the exact probability-flow ODE.

`diffusers(target, nfes)` enumerates the `*Scheduler` classes of the installed
`diffusers.schedulers` (a new version's schedulers show up by themselves), builds each one's common
configurations from its own constructor (timestep spacings, Karras / exponential / beta sigmas,
solver orders and types, lower_order_final, final_sigmas_type, prediction types, clipping, ...),
runs each through `ex.adapters.run_diffusers` at every number of inference steps in `nfes`, under
the scheduler's own noise table (`schedule_of`), and returns one flat row per scheduler x
configuration x mode. A class the adapter does not drive, a configuration the scheduler rejects and
a run that raises are rows with their message, never an exception.

What is measured, and against what:
- The exact path. Every run starts on one exact solution of the probability-flow ODE: n particles
  of pure noise eps ~ N(0, I), carried by the ODE in variance-preserving angle coordinates,
  x = cos(theta) x0 + sin(theta) eps, from theta = pi/2 (pure noise) to the data (theta -> 0), where
  dx/dtheta = (cos(theta) x - D(x, theta)) / sin(theta) is regular at both ends (one DOP853 solve
  at rtol 1e-11, read anywhere through its dense output). Under any schedule the same path is
  x(t) = r(t) x_vp(theta(t)), r = sqrt(alpha^2 + sigma^2), theta = atan2(sigma, alpha): the
  probability-flow ODE does not depend on the clock or the scale. So each run starts from the exact
  state at its own first noise level (no prior mismatch) and is compared with the exact state where
  it stops; every scheduler and configuration sees the same path.
- error_<n>: RMS over particles of the distance between the scheduler's final state and the exact
  path at the scheduler's own final noise level (its last sigma; the data where that is 0).
  error0_<n>: the same for what a pipeline would output (the final sample, in the scheduler's
  coordinates) against the exact path's end at sigma = 0. The two differ where a configuration stops
  short of sigma = 0 (final_sigmas_type "sigma_min", DDIM/PNDM without set_alpha_to_one): that gap is
  the design's, not the solver's. nfe_<n> the model calls really spent. order, order0: the fitted
  convergence order (ex.experiments.fitted_order, error ~ NFE^-p over the three largest NFE spent).
- Stochastic schedulers (those whose run draws noise: DDPM, EulerAncestral, KDPM2Ancestral,
  DPMSolverSDE, SA-Solver, DPM-Solver's sde-* algorithms, ...): the same start and the same seed for
  every n; error_<n> and error0_<n> are sliced W2 distances (ex.experiments.SlicedW2) to fresh draws
  of the exact noised marginal at the final level and of the target, and floor / floor0 the same
  distance for the exact path's own particles: the finite-sample floor. Their order is fitted only
  over distances above twice the floor (NaN when fewer than two are).
- The default target, gmm-1d-3modes with std 0.3 (three modes at 1, 2, 3, still three bumps):
  orders are measurable there. The flow near the data varies on the scale of the modes' width, and
  with std 0.3 that is far above the tables' smallest sigma (0.01-0.03), so 10-40 steps are in the
  asymptotic range: Euler 1.0, Heun 2.0, DPM-Solver++(2M) with Karras sigmas 2.0, PNDM 3.9. With the
  preset's std 0.05 every scheduler is still switching particles between modes at 40 steps (errors
  0.03-0.1; Euler 0.4-0.6, DPM++(2M) with Karras sigmas 0.4-1.3): the fitted orders say little. One dimension keeps the
  exact solve cheap and makes the sliced W2 the exact W2.
- Modes. "normal": the model sees the timestep the scheduler passes (a rounded timestep means the
  table's noise level there); oracle=True: the model is fed the update's own noise level. The
  difference separates timestep rounding from the solver's own error.

Flags (row["flags"], short names; row["details"] says where and how much):
  duplicate-timesteps   two steps start at the same (rounded) timestep (count: n_duplicate_timesteps)
  zero-size-steps       two consecutive states at the same noise level (n_zero_steps)
  final-sigma-nonzero   the last state keeps noise: sigma > 0 (final_sigma, VE sigma/alpha)
  model-update-mismatch the noise level the model sees differs from the one the update uses by more
                        than 1e-4 relative (mismatch: the largest, over calls and n)
  landing-mismatch      a step lands at one noise level and the next step treats the sample as being
                        at another (landing_mismatch: largest relative gap in sigma)
  init-noise-sigma      init_noise_sigma is more than 1% off the standard deviation of the first
                        sample for data of unit variance, in the scheduler's coordinates (read from
                        scale_model_input; init_noise_sigma, init_noise_expected)
  clipping              clip_sample / thresholding is on and changes the output: clip_effect is the
                        RMS distance to the same run with both off (flagged above 1e-6)
  nonfinite             a run produced NaN or inf (nonfinite: "n=<n>: step <i>")
  not-converging        the error at the largest n is not below the error at the smallest

Rows are flat dicts (see COLUMNS); `to_csv(rows, path)` writes them; `rerun(row, n)` runs one row's
configuration again and returns its Trajectory and the exact path at the same noise levels.
"""

from __future__ import annotations

import copy
import csv
import functools
import importlib
import inspect
import json
import logging
import math
import time
import warnings

import numpy as np

from ..foundations.mixture import GaussianMixture
from ..foundations.random import as_generator
from ..foundations.trajectory import Trajectory
from .experiments import SlicedW2, fitted_order
from .metrics import endpoint_error

DEFAULT_TARGET = ("gmm-1d-3modes", {"std": 0.3})
THETA_END = 1e-7  # the exact path's end: |x(theta) - x(0)| = O(theta^2), far below round-off
MISMATCH_TOL = 1e-4  # relative; float32 tables and timesteps agree to about 1e-7
INIT_TOL = 0.01
CLIP_TOL = 1e-6

# Candidate values for the configuration options a scheduler may offer; each is tried against the
# class's own constructor, and kept when it accepts it and it changes the effective configuration.
CANDIDATES = {
    "timestep_spacing": ("leading", "linspace", "trailing"),
    "use_karras_sigmas": (True,), "use_exponential_sigmas": (True,), "use_beta_sigmas": (True,),
    "use_lu_lambdas": (True,), "sigma_schedule": ("karras", "exponential"),
    "solver_order": (1, 2, 3), "predictor_order": (1, 2, 3), "corrector_order": (1, 2, 3),
    "algorithm_type": ("dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver"),
    "solver_type": ("midpoint", "heun", "bh1", "bh2"),
    "lower_order_final": (True, False), "euler_at_final": (True,),
    "final_sigmas_type": ("zero", "sigma_min"),
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    "clip_sample": (True, False), "thresholding": (True,), "set_alpha_to_one": (True, False),
    "skip_prk_steps": (True, False), "interpolation_type": ("linear", "log_linear"),
    "beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"), "rescale_betas_zero_snr": (True,),
    "steps_offset": (1,), "shift": (3.0,), "stochastic_sampling": (True,),
}

FLAGS = {  # name -> what it means (the module docstring has the thresholds and the columns behind each)
    "duplicate-timesteps": "two steps start at the same (rounded) timestep",
    "zero-size-steps": "two consecutive states at the same noise level",
    "final-sigma-nonzero": "the last state keeps noise (sigma > 0)",
    "model-update-mismatch": "the model is told one noise level and the update uses another",
    "landing-mismatch": "a step lands at one noise level and the next step starts from another",
    "init-noise-sigma": "init_noise_sigma is not the first sample's standard deviation",
    "clipping": "clip_sample / thresholding changes the output",
    "nonfinite": "NaN or inf",
    "not-converging": "the error does not fall from the smallest to the largest number of steps",
}


def columns(nfes) -> list[str]:
    """The keys of every row, in order, for these nfes."""
    return (["scheduler", "config", "overrides", "oracle", "status", "message", "stochastic", "metric"]
            + [f"error_{n}" for n in nfes] + [f"error0_{n}" for n in nfes] + [f"nfe_{n}" for n in nfes]
            + ["order", "order0", "floor", "floor0", "final_sigma", "n_duplicate_timesteps", "n_zero_steps",
               "mismatch", "landing_mismatch", "init_noise_sigma", "init_noise_expected", "clip_effect",
               "nonfinite", "flags", "details", "warnings", "target", "n_particles", "seed", "float64", "nfes",
               "seconds"])


# ---------------------------------------------------------------- the exact path


class ExactPath:
    """n particles of pure noise carried by the exact probability-flow ODE of target to the data.

    In VP-angle coordinates x = cos(theta) x0 + sin(theta) eps the ODE is
    dx/dtheta = (cos(theta) x - D(x, theta)) / sin(theta), D = E[x0 | x] (exact for a mixture),
    solved from theta = pi/2 (x = eps) to THETA_END with DOP853 and dense output.
    `at(alpha, sigma)` is the path under any schedule: r x_vp(atan2(sigma, alpha)), r = hypot(alpha, sigma).
    """

    def __init__(self, target: GaussianMixture, n: int, seed: int = 0, rtol: float = 1e-11):
        from scipy.integrate import solve_ivp

        self.target, self.n, self.dim = target, int(n), target.dim
        self.eps = as_generator(seed).standard_normal((self.n, self.dim))
        shape = self.eps.shape

        def rhs(theta, x):
            c, s = math.cos(theta), math.sin(theta)
            d = target.noised(x.reshape(shape), c, s, need=("x0",))["x0"].ravel()
            return (c * x - d) / s

        sol = solve_ivp(rhs, (math.pi / 2, THETA_END), self.eps.ravel(), method="DOP853", rtol=rtol, atol=rtol,
                        dense_output=True)
        if not sol.success:
            raise ValueError(f"the exact path could not be solved: {sol.message}")
        self._sol = sol
        self.data = sol.y[:, -1].reshape(shape) / math.cos(THETA_END)

    def at(self, alpha: float, sigma: float) -> np.ndarray:
        """The exact state at the noise level (alpha, sigma): x = alpha x0 + sigma eps coordinates."""
        alpha, sigma = float(alpha), float(sigma)
        if sigma == 0.0:
            return alpha * self.data
        theta = math.atan2(sigma, alpha)
        if theta < THETA_END:
            return math.hypot(alpha, sigma) * self.data
        return math.hypot(alpha, sigma) * self._sol.sol(theta).reshape(self.n, self.dim)


def _target_of(target):
    """(GaussianMixture, a JSON-able spec that rebuilds it)."""
    from ..foundations import targets

    if target is None:
        target = DEFAULT_TARGET
    if isinstance(target, GaussianMixture):
        spec = {"means": target.means.tolist(), "covs": np.asarray(target.covs).tolist(),
                "weights": target.weights.tolist()}
        return target, spec
    if isinstance(target, str):
        target = (target, {})
    if isinstance(target, dict):
        if "means" in target:
            return GaussianMixture(target["means"], target["covs"], target.get("weights")), dict(target)
        target = (target["name"], target.get("params", {}))
    if isinstance(target, (tuple, list)) and len(target) == 2 and isinstance(target[0], str):
        name, params = target[0], dict(target[1] or {})
        return targets.get(name, **params), {"name": name, "params": params}
    raise ValueError(f"target must be a GaussianMixture, a preset name or (name, params), got {target!r}")


# ---------------------------------------------------------------- schedulers and configurations


def scheduler_classes() -> list[tuple[str, object]]:
    """(name, class) for every `*Scheduler` name diffusers.schedulers exports; where the class
    cannot be imported, (name, the error message)."""
    module = importlib.import_module("diffusers.schedulers")
    found = ((name, scheduler_class(name)) for name in sorted(n for n in dir(module) if n.endswith("Scheduler")))
    return [(name, cls) for name, cls in found if cls is not None]


def scheduler_class(name: str):
    """The class diffusers.schedulers exports as `name` (a `*Scheduler`), the error message if it cannot be
    imported, or None if there is no such class. Imports that class's module only (all 51 took 0.67 s, 2 cores)."""
    module = importlib.import_module("diffusers.schedulers")
    if not name.endswith("Scheduler") or name not in dir(module):
        return None
    try:
        cls = getattr(module, name)
    except Exception as err:  # noqa: BLE001  (a lazily imported class can fail to load)
        return f"could not be imported from diffusers.schedulers: {type(err).__name__}: {err}"
    return cls if inspect.isclass(cls) else None


def supported(cls) -> bool:
    """Whether ex.adapters.run_diffusers drives this class (or a class it derives from)."""
    from ..adapters.diffusers import SUPPORTED

    return any(c.__name__ in SUPPORTED for c in cls.__mro__)


def _quiet():
    """A context that keeps diffusers' notices out of the output and collects them for the row."""

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    class Quiet:
        def __enter__(self):
            self.handler = Collect()
            self.logger = logging.getLogger("diffusers")  # diffusers' library logger: its modules' propagate to it
            self.saved = (self.logger.level, list(self.logger.handlers))
            for h in self.saved[1]:
                self.logger.removeHandler(h)
            self.logger.addHandler(self.handler)
            self.logger.setLevel(logging.WARNING)
            self.warnings = warnings.catch_warnings(record=True)
            self.caught = self.warnings.__enter__()
            warnings.simplefilter("always")
            return self

        def messages(self) -> list[str]:
            seen = dict.fromkeys([*self.handler.messages, *(str(w.message) for w in self.caught)])
            return [m.strip().splitlines()[0][:200] for m in seen]

        def __exit__(self, *exc):
            self.warnings.__exit__(*exc)
            self.logger.removeHandler(self.handler)
            for h in self.saved[1]:
                self.logger.addHandler(h)
            self.logger.setLevel(self.saved[0])
            return False

    return Quiet()


def _effective(scheduler) -> dict:
    return {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}


def configurations(cls) -> list[dict]:
    """The common configurations of a scheduler class, as overrides of its defaults: {} first, then
    one option changed at a time (CANDIDATES), each kept when the class's constructor accepts it and
    it changes the effective configuration (a value the constructor maps back to the default, as
    DEIS does with algorithm_type, is dropped)."""
    return [overrides for overrides, _ in _built_configurations(cls)]


@functools.lru_cache(maxsize=None)
def _built_configurations(cls) -> list[tuple[dict, object]]:
    """(overrides, the scheduler built with them, or the exception its constructor raised), built
    once per class and process (some constructors are slow: KDPM2's maps 1000 sigmas to timesteps one
    by one, 0.2 s). The schedulers are never stepped: every run works on its own deep copy."""
    params = inspect.signature(cls.__init__).parameters
    with _quiet():
        try:
            default = cls()
        except Exception as err:  # noqa: BLE001  (the row for {} reports it)
            return [({}, err)]
        base = _effective(default)
        seen, out = [base], [({}, default)]
        for key, values in CANDIDATES.items():
            if key not in params:
                continue
            for value in values:
                if base.get(key, params[key].default) == value:
                    continue
                try:
                    scheduler = cls(**{key: value})
                except Exception:  # noqa: BLE001  (a value this class does not offer)
                    continue
                effective = _effective(scheduler)
                if effective not in seen:
                    seen.append(effective)
                    out.append(({key: value}, scheduler))
    return out


def _build(cls, overrides: dict):
    """The scheduler cls(**overrides), or the exception its constructor raised."""
    with _quiet():
        try:
            return cls(**overrides)
        except Exception as err:  # noqa: BLE001
            return err


def config_label(overrides: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "default"


# ---------------------------------------------------------------- one run


def _first_level(scheduler, n_steps: int, schedule):
    """(t0, the scheduler copy after set_timesteps): the explorer time of the first sample."""
    from ..adapters.diffusers import _base, _call, _family, _input_level, _Levels  # the adapter's own reading

    sched = copy.deepcopy(scheduler)
    _call(f"{type(scheduler).__name__}.set_timesteps({n_steps})", sched.set_timesteps, int(n_steps))
    t0, _ = _input_level(sched, _base(scheduler), 0, sched.timesteps[0], _Levels(_family(scheduler), schedule))
    return t0, sched


def _run(scheduler, path: ExactPath, n_steps: int, rng, oracle: bool, float64: bool):
    """The scheduler from the exact state at its first level -> (traj, t0, set-up copy)."""
    from ..adapters.diffusers import run_diffusers, schedule_of
    from ..foundations.analytic import AnalyticModel

    schedule = schedule_of(scheduler)
    t0, sched = _first_level(scheduler, n_steps, schedule)
    x_T = path.at(schedule.alpha(t0), schedule.sigma(t0))
    model = AnalyticModel(path.target, schedule)
    traj = run_diffusers(scheduler, model, n_steps, x_T, rng=rng, oracle=oracle, float64=float64)
    return traj, t0, sched


def _final(traj):
    """(explorer state at the last level, the pipeline's output (scheduler coordinates), its alpha, sigma)."""
    s, t_f, sigma_f = traj.schedule, float(traj.t[-1]), float(traj.extras["sigma"][-1])
    x = np.asarray(traj.x[-1], dtype=np.float64)
    if sigma_f == 0.0:
        return x, x, 1.0, 0.0
    alpha, sigma = float(s.alpha(t_f)), float(s.sigma(t_f))
    out = x / alpha if traj.extras["coordinates"] == "ve" else x
    return x, out, alpha, sigma


def _step_starts(traj) -> np.ndarray:
    """Index of the first model call of each step."""
    step = np.asarray(traj.extras["step"])
    return np.flatnonzero(np.r_[True, step[1:] != step[:-1]])


def _checks(traj) -> dict:
    """The per-run numbers behind the flags."""
    ex = traj.extras
    starts = _step_starts(traj)
    timesteps = np.asarray(ex["timestep"])[starts]
    sig = np.asarray(ex["sigma"])
    upd, mod = np.asarray(ex["sigma_update"]), np.asarray(ex["sigma_model"])
    ok = upd > 0
    with np.errstate(all="ignore"):
        mismatch = float(np.max(np.abs(mod[ok] / upd[ok] - 1.0))) if ok.any() else 0.0
        n_states = min(len(starts), len(sig) - 1)  # a state that starts a step, and the level that step assumes
        lev, assumed = sig[:n_states], upd[starts[:n_states]]
        both = (lev > 0) & (assumed > 0)
        landing = float(np.max(np.abs(assumed[both] / lev[both] - 1.0))) if both.any() else 0.0
    finite = np.isfinite(sig)
    zero = int(np.sum(sig[1:][finite[1:] & finite[:-1]] == sig[:-1][finite[1:] & finite[:-1]]))
    return {"duplicates": int(len(timesteps) - len(np.unique(timesteps))), "zero_steps": zero,
            "mismatch": mismatch, "landing": landing, "final_sigma": float(sig[-1])}


class _Distances:
    """Sliced W2 to fresh draws of the exact noised marginal at a level, cached per level."""

    def __init__(self, target, seed: int, n_ref: int = 20000):
        self.target, self.seed, self.n_ref, self._cache = target, seed, n_ref, {}

    def at(self, alpha: float, sigma: float) -> SlicedW2:
        key = (float(alpha), float(sigma))
        if key not in self._cache:
            rng = np.random.default_rng([self.seed, 2])
            x0 = self.target.sample(self.n_ref, rng)
            self._cache[key] = SlicedW2(alpha * x0 + sigma * rng.standard_normal(x0.shape))
        return self._cache[key]


def _fit(nfes, errors, floors=None) -> float:
    nfes, errors = np.asarray(nfes, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    if floors is not None:
        errors = np.where(errors > 2.0 * np.asarray(floors, dtype=np.float64), errors, np.nan)
    return fitted_order(nfes, errors)


def _audit_one(cls, name: str, overrides: dict, scheduler, nfes, path: ExactPath, distances: _Distances,
               seed: int, oracle: bool, float64: bool, row: dict) -> dict:
    """Fill row for one scheduler class x configuration x mode (scheduler: cls(**overrides), built)."""
    from ..adapters.diffusers import schedule_of

    if isinstance(scheduler, Exception):
        row.update(status="error", message=f"{name}({config_label(overrides)}) could not be built: "
                                           f"{type(scheduler).__name__}: {scheduler}")
        return row
    with _quiet() as quiet:
        try:
            schedule_of(scheduler)
        except Exception as err:  # noqa: BLE001
            row.update(status="error", message=f"the adapter cannot represent the noise table of "
                                               f"{name}({config_label(overrides)}): {err}")
            return row
        clipped = bool(scheduler.config.get("clip_sample", False) or scheduler.config.get("thresholding", False))
        if clipped:
            off = {k: False for k in ("clip_sample", "thresholding") if k in scheduler.config}
            unclipped = _build(cls, {**overrides, **off})
        stochastic, problems = None, []
        per = {n: {} for n in nfes}
        for n in nfes:
            try:  # a run without noise first: one that draws any is stopped at its first draw and run seeded
                try:
                    traj, t0, sched = _run(scheduler, path, n, None, oracle, float64)
                    draws = False
                except ValueError as err:
                    if "draws noise" not in str(err):
                        raise
                    draws = True
                    traj, t0, sched = _run(scheduler, path, n, seed, oracle, float64)
                stochastic = bool(stochastic) or draws
                per[n] = _measure(traj, t0, sched, path, distances, draws)
                if clipped:  # the same run with clip_sample and thresholding off
                    if isinstance(unclipped, Exception):
                        raise ValueError(f"{name} with clipping off could not be built: {unclipped}")
                    plain, _, _ = _run(unclipped, path, n, seed if draws else None, oracle, float64)
                    per[n]["clip_effect"] = endpoint_error(_final(traj)[1], _final(plain)[1])
            except Exception as err:  # noqa: BLE001
                problems.append(f"n={n}: {err}")
                per[n] = None
        row["warnings"] = quiet.messages()
    return _summarise(row, per, nfes, stochastic, clipped, problems)


def _measure(traj, t0, sched, path: ExactPath, distances: _Distances, stochastic: bool) -> dict:
    """The numbers of one run: errors (or distances), NFE, checks, init noise."""
    s = traj.schedule
    out = {"nfe": int(traj.nfe), **_checks(traj)}
    if traj.diverged:
        out["nonfinite"] = traj.diverged_at
        out["error"] = out["error0"] = float("nan")
    else:
        x, output, alpha, sigma = _final(traj)
        if stochastic:
            out["error"] = distances.at(alpha, sigma)(x)
            out["floor"] = distances.at(alpha, sigma)(path.at(alpha, sigma))
            out["error0"] = distances.at(1.0, 0.0)(output)
            out["floor0"] = distances.at(1.0, 0.0)(path.data)
        else:
            out["error"] = endpoint_error(x, path.at(alpha, sigma))
            out["error0"] = endpoint_error(output, path.data)
    out["init"] = float(getattr(sched, "init_noise_sigma", 1.0))
    out["init_expected"] = _first_sample_std(sched, s, t0)
    return out


def _first_sample_std(sched, schedule, t0: float) -> float:
    """The standard deviation of the first sample, in the scheduler's coordinates, for data of unit
    variance: hypot(alpha, sigma) at the first level, divided by the factor scale_model_input applies
    there for a VP table (1 where the sample is x, alpha where it is x / alpha), as it is for flow
    matching and EDM (whose scale_model_input is the network's preconditioning). Read from
    scale_model_input, not from init_noise_sigma, which is what it checks."""
    import torch

    from ..adapters.diffusers import _family

    a0, s0 = float(schedule.alpha(t0)), float(schedule.sigma(t0))
    std = math.hypot(a0, s0)
    if _family(sched) != "vp" or not hasattr(sched, "scale_model_input"):
        return std
    probe = copy.deepcopy(sched)  # scale_model_input may set the step index
    scale = float(probe.scale_model_input(torch.ones(1, 1, dtype=torch.float64), probe.timesteps[0]).flatten()[0])
    return std / scale


def _summarise(row: dict, per: dict, nfes, stochastic, clipped: bool, problems: list) -> dict:
    ran = [n for n in nfes if per[n]]
    row["stochastic"] = stochastic
    row["metric"] = None if stochastic is None else ("sliced_w2" if stochastic else "path")
    for n in ran:
        row[f"error_{n}"], row[f"error0_{n}"], row[f"nfe_{n}"] = per[n]["error"], per[n]["error0"], per[n]["nfe"]
    if problems:
        row["message"] = "; ".join(problems)
    if not ran:
        row["status"] = "error"
        return row
    row["status"] = "error" if problems else "ok"
    spent = [per[n]["nfe"] for n in ran]
    floors = [per[n].get("floor", 0.0) for n in ran] if stochastic else None
    floors0 = [per[n].get("floor0", 0.0) for n in ran] if stochastic else None
    row["order"] = _fit(spent, [per[n]["error"] for n in ran], floors)
    row["order0"] = _fit(spent, [per[n]["error0"] for n in ran], floors0)
    if stochastic:
        row["floor"] = float(np.nanmax(floors))
        row["floor0"] = float(np.nanmax(floors0))
    flags, details = [], []

    def worst(key):
        n = max(ran, key=lambda n: per[n][key])
        return per[n][key], n

    dup, n_dup = worst("duplicates")
    row["n_duplicate_timesteps"] = dup
    if dup:
        flags.append("duplicate-timesteps")
        details.append(f"{dup} duplicate timesteps at n={n_dup}")
    zero, n_zero = worst("zero_steps")
    row["n_zero_steps"] = zero
    if zero:
        flags.append("zero-size-steps")
        details.append(f"{zero} zero-size steps at n={n_zero}")
    final, n_final = worst("final_sigma")
    row["final_sigma"] = final
    if final > 0:
        flags.append("final-sigma-nonzero")
        details.append(f"final sigma {final:.4g} (n={n_final})")
    mis, n_mis = worst("mismatch")
    row["mismatch"] = mis
    if mis > MISMATCH_TOL:
        flags.append("model-update-mismatch")
        details.append(f"model sees a noise level {100 * mis:.3g}% off the update's (n={n_mis})")
    land, n_land = worst("landing")
    row["landing_mismatch"] = land
    if land > MISMATCH_TOL:
        flags.append("landing-mismatch")
        details.append(f"a step lands {100 * land:.3g}% (in sigma) away from where the next step starts (n={n_land})")
    init, expected = per[ran[-1]]["init"], per[ran[-1]]["init_expected"]
    dev = max(abs(per[n]["init"] / per[n]["init_expected"] - 1.0) for n in ran)
    row["init_noise_sigma"], row["init_noise_expected"] = init, expected
    if dev > INIT_TOL:
        flags.append("init-noise-sigma")
        details.append(f"init_noise_sigma {init:.4g} vs {expected:.4g} for unit-variance data ({100 * dev:.3g}% off)")
    if clipped:
        effect = max(per[n]["clip_effect"] for n in ran)
        row["clip_effect"] = effect
        if effect > CLIP_TOL:
            flags.append("clipping")
            details.append(f"clipping moves the output by {effect:.3g} RMS")
    bad = [f"n={n}: step {per[n]['nonfinite']}" for n in ran if per[n].get("nonfinite") is not None]
    if bad:
        row["nonfinite"] = "; ".join(bad)
        flags.append("nonfinite")
        details.append("NaN/inf at " + ", ".join(bad))
    first, last = per[ran[0]]["error0"], per[ran[-1]]["error0"]
    noise = 2.0 * row["floor0"] if stochastic else 0.0  # a distance at the sampling floor is not a trend
    if len(ran) > 1 and np.isfinite(first) and np.isfinite(last) and last >= first and last > noise:
        flags.append("not-converging")
        details.append(f"error at sigma 0 {first:.3g} (n={ran[0]}) -> {last:.3g} (n={ran[-1]})")
    row["flags"], row["details"] = flags, "; ".join(details)
    return row


# ---------------------------------------------------------------- the audit


def diffusers(target=None, nfes=(5, 10, 20, 40), *, schedulers=None, configs=None, oracle=False,
              n_particles: int = 1000, seed: int = 0, float64: bool = False, progress=None,
              executor=None) -> list[dict]:
    """One row per installed diffusers scheduler x configuration (x mode): errors against the exact
    ODE per number of inference steps, fitted orders, NFE spent, flags (see the module docstring).

    target: a GaussianMixture, a preset name or (name, params); default DEFAULT_TARGET.
    nfes: the num_inference_steps each scheduler is set to (what a pipeline asks for).
    schedulers: class names (or classes) to audit; default every *Scheduler in diffusers.schedulers.
    configs: overrides to run instead of configurations(cls): a list of dicts (for every scheduler)
    or {class name: list of dicts}. oracle: False, True or "both" (a row per mode).
    n_particles, seed: the exact path's particles and the seed of every noise draw.
    progress(done, total, label) is called after every row. executor: where the rows are computed
    (ex.sweeps.run: None in-process, "local-cluster", a Dask Client or address; the exact path is
    solved here once and sent along); the same rows on any.
    """
    from . import sweeps

    nfes = _check_nfes(nfes)
    modes = _modes(oracle)
    if isinstance(n_particles, bool) or not isinstance(n_particles, (int, np.integer)) or n_particles < 2:
        raise ValueError(f"n_particles must be an integer >= 2, got {n_particles!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    gm, spec = _target_of(target)
    plan = _plan(schedulers, configs, modes)
    path = ExactPath(gm, n_particles, seed)
    distances = _Distances(gm, seed)
    common = {"target": spec, "n_particles": int(n_particles), "seed": int(seed), "float64": bool(float64),
              "nfes": list(nfes)}

    def report(done, total, item, row):
        if progress is not None:
            progress(done, total, f"{item[0]} {row['config']}" + (" (oracle)" if item[4] else ""))

    run = functools.partial(_audit_row, nfes, path, distances, int(seed), bool(float64), common)
    return sweeps.run(plan, run, executor, report)


def planned(schedulers=None, configs=None, oracle=False) -> list[dict]:
    """The rows diffusers(schedulers=..., configs=..., oracle=...) makes, in its order, without running them: each
    a dict of scheduler (class name), config (its label), overrides and oracle, the keys naming a row
    (ex.figures.audit.label). Building the configurations is the only work (once per class and process)."""
    return [_naming(item) for item in _plan(schedulers, configs, _modes(oracle))]


def _modes(oracle) -> tuple:
    """The oracle modes of an audit's rows: oracle False, True or "both"."""
    if oracle not in (False, True, "both"):
        raise ValueError(f"oracle must be False, True or 'both', got {oracle!r}")
    return (False, True) if oracle == "both" else (bool(oracle),)


def _naming(item) -> dict:
    """The keys naming the row of a plan item (name, class, overrides, built scheduler, oracle)."""
    name, _, overrides, _, mode = item
    return dict(scheduler=name, config=config_label(overrides or {}), overrides=dict(overrides or {}), oracle=mode)


def _audit_row(nfes, path: ExactPath, distances: _Distances, seed: int, float64: bool, common: dict, item) -> dict:
    """The row of one plan item (name, class, overrides, built scheduler, oracle)."""
    name, cls, overrides, scheduler, mode = item
    start = time.perf_counter()
    row = dict.fromkeys(columns(nfes))
    row.update(**_naming(item), status="ok", message="", flags=[], details="", warnings=[], **common)
    if isinstance(cls, str):
        row.update(status="unsupported", message=cls)
    elif not supported(cls):
        row.update(status="unsupported", message=f"not supported by the adapter: {name} is none of the "
                   "scheduler families ex.adapters.run_diffusers drives (see explorer/adapters/diffusers.py)")
    else:
        _audit_one(cls, name, overrides, scheduler, nfes, path, distances, seed, mode, float64, row)
    row["seconds"] = time.perf_counter() - start
    return row


def _check_nfes(nfes) -> tuple:
    try:
        values = tuple(nfes)
    except TypeError:
        raise ValueError(f"nfes must be a sequence of positive integers, got {nfes!r}") from None
    if not values or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in values):
        raise ValueError(f"nfes must be a non-empty sequence of positive integers, got {nfes!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"nfes must not repeat a value, got {nfes!r}")
    return tuple(sorted(int(n) for n in values))


def _plan(schedulers, configs, modes) -> list[tuple]:
    """(name, class or error message, overrides, built scheduler, oracle) for every row, in order."""
    if schedulers is None:
        available = scheduler_classes()
    else:
        if isinstance(schedulers, str) or inspect.isclass(schedulers):
            schedulers = [schedulers]
        available = []
        for s in schedulers:
            found = s if inspect.isclass(s) else scheduler_class(s) if isinstance(s, str) else None
            if found is None:
                raise ValueError(f"schedulers: {s!r} is not a *Scheduler exported by diffusers.schedulers")
            available.append((s.__name__ if inspect.isclass(s) else s, found))
    if configs is not None and not isinstance(configs, (list, tuple, dict)):
        raise ValueError(f"configs must be a list of override dicts or {{class name: list}}, got {configs!r}")
    plan = []
    for name, cls in available:
        if isinstance(cls, str) or not supported(cls):
            plan.append((name, cls, {}, None, modes[0]))
            continue
        if configs is None or (isinstance(configs, dict) and name not in configs):
            chosen = _built_configurations(cls)
        else:
            chosen = configs[name] if isinstance(configs, dict) else configs
            for overrides in chosen:
                if not isinstance(overrides, dict):
                    raise ValueError(f"configs: each configuration must be a dict of overrides, got {overrides!r}")
            chosen = [(dict(overrides), _build(cls, overrides)) for overrides in chosen]
        for overrides, scheduler in chosen:
            for mode in modes:
                plan.append((name, cls, overrides, scheduler, mode))
    return plan


# ---------------------------------------------------------------- one row again, and the table


def rerun(row: dict, nfe: int, target=None):
    """Run one row's scheduler and configuration again at nfe inference steps -> (traj, ref):
    the Trajectory run_diffusers returns (same start, seed and mode as the audit) and the exact path
    at the same noise levels (ref.x[i] the exact state at traj.t[i]; the data where sigma = 0), so
    that ex.metrics.path_error(traj, ref) is the error at every step. target: the row's own by default
    (pass the GaussianMixture when the row was made from one)."""
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    if row.get("status") == "unsupported":
        raise ValueError(f"row {row.get('scheduler')}: {row.get('message')}")
    cls = scheduler_class(row["scheduler"])
    if cls is None or isinstance(cls, str):
        raise ValueError(f"row: scheduler {row['scheduler']!r} is not available in this diffusers")
    gm, _ = _target_of(row["target"] if target is None else target)
    path = ExactPath(gm, row["n_particles"], row["seed"])
    with _quiet():
        scheduler = cls(**row["overrides"])
        rng = row["seed"] if row.get("stochastic") else None
        traj, _, _ = _run(scheduler, path, int(nfe), rng, bool(row["oracle"]), bool(row["float64"]))
    s = traj.schedule
    sig = np.asarray(traj.extras["sigma"])
    xs = np.stack([path.data if (g == 0.0 or not np.isfinite(t)) else path.at(s.alpha(t), s.sigma(t))
                   for t, g in zip(traj.t, sig)])
    from ..foundations.analytic import AnalyticModel

    model = AnalyticModel(gm, s)
    ds = np.stack([model.denoise(xs[i], traj.t[i]) if sig[i] > 0 else xs[i] for i in range(traj.n_steps)])
    ref = Trajectory(t=np.asarray(traj.t, dtype=np.float64), x=xs, denoised=ds, nfe=0, solver="exact",
                     options={"source": "explorer.analyses.audit.ExactPath", "theta_end": THETA_END},
                     schedule=s, extras={"sigma": sig.copy()})
    return traj, ref


def to_csv(rows: list[dict], path) -> str:
    """Write rows to a CSV file (one column per key, in the order of the first row; lists joined by
    ';', dicts as JSON). Returns the path."""
    if not rows:
        raise ValueError("rows must not be empty")
    keys = list(dict.fromkeys(k for row in rows for k in row))

    def cell(v):
        if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
            return ";".join(v)
        if isinstance(v, (dict, list, tuple)):
            return json.dumps(v, default=str)
        return "" if v is None else v

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: cell(row.get(k)) for k in keys})
    return str(path)
