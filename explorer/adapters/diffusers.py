"""A configured diffusers scheduler driving an explorer model: `run_diffusers(scheduler, model,
n_steps, x_T)`, and the scheduler's own noise table as an explorer schedule: `schedule_of(scheduler)`.

The scheduler runs as a pipeline runs it (set_timesteps, then per call scale_model_input, the
model, step), with the explorer model standing in for the network. Conventions, and how each is
converted:

- Schedule (`schedule_of`). VP tables (DDIM, DDPM, PNDM, Euler, Heun, LMS, KDPM2, DPM-Solver,
  UniPC, DEIS, SA-Solver, ...): the scheduler's `alphas_cumprod` (float32, taken exactly) as
  `ex.schedules.from_alphas_cumprod`, whose time t is the table index (the timestep), exact at
  integers. Flow matching (FlowMatchEuler/Heun, and DPM-Solver/UniPC with use_flow_sigmas):
  x = (1 - sigma) x0 + sigma eps, i.e. "rectified-flow" with t = sigma over the scheduler's sigma
  range. EDM (EDMEuler, EDMDPMSolverMultistep): x = x0 + sigma eps, "edm" with t = sigma over
  [sigma_min, sigma_max] (sigma_data enters only the network's preconditioning, below).
- Noise levels. A scheduler with a sigma table updates with sigmas[step_index] (VP: sigma/alpha =
  e^{-lambda}; flow and EDM: sigma), mapped to explorer time exactly: t = t_of_lambda(lambda) (VP),
  t = sigma (flow, EDM); a float32 sigma a few ulps beyond the table's ends gets its time as far
  outside [0, T - 1] (not clipped). The second call of a two-call step is where scale_model_input
  puts it: KDPM2's interpolated sigma, KDPM2Ancestral's (between sigma_i and its sigma_down, which
  is sigma_i+1), DPMSolverSDE's midpoint. DDIM, DDPM and PNDM have no sigma table: a state is at
  alphas_cumprod[timestep] (t = the timestep) and a step lands where the scheduler's own
  prev_timestep says (DDIM/PNDM: timestep - T // n; DDPM: the next timestep; below 0:
  final_alpha_cumprod, or 1). So DDIM with "trailing" spacing and T/n not an integer lands a step
  at 857 and evaluates it as 856: traj.t has the first, extras["t_update"] the second.
- States (`traj.x`, `traj.t`). The scheduler's sample is the explorer state where
  init_noise_sigma is 1 (DDIM, DDPM, PNDM, DPM-Solver, UniPC, DEIS, SA-Solver, flow matching) and
  its variance-exploding form x / alpha(t) where it is not (Euler, EulerAncestral, Heun, LMS,
  KDPM2, DPMSolverSDE; EDM, where alpha = 1): x_T is converted in, every state back. traj.t are
  the states' times from the noise levels above. A state the scheduler puts at sigma = 0 (final
  sigma "zero", DDIM/DDPM's alpha = 1) is its noise-free output; it is recorded as it is (x = x0
  there) and labelled with the schedule's cleanest time t_lo (0 under all three families; exact for
  flow and EDM, where sigma(0) = 0; for a VP table t = 0 has sigma = sqrt(1 - alphas_cumprod[0]),
  so the label is nominal and extras["sigma"][-1] = 0 says where the state is; the state before
  may also be at t = 0, as may DDIM/PNDM's last two states, whose last step has length 0).
  Intermediate stages of a multi-call step (Heun's and KDPM2's first call, DPMSolverSDE's, PNDM's
  Runge-Kutta stages and its first PLMS predictor) are not states: each step records the state it
  ends on (a final first-order call, as Heun's last, ends a step). UniPC and
  SA-Solver correct a state at the start of the next call (`last_sample`): the corrected one is
  recorded, as the native solvers record it.
- Model call. The model sees what a network would: the scaled input (scale_model_input) at the
  timestep the scheduler passes. Its time: an integer timestep is the table index itself (a
  rounded timestep sees the table's noise level there, not the update's); a fractional one
  (Euler/Heun/LMS/KDPM2 interpolate their table in sigma or log sigma) is the scheduler's own
  sigma for it; flow: t = timestep / num_train_timesteps; EDM: t = exp(4 timestep) (c_noise =
  log(sigma) / 4); Euler's timestep_type "continuous": sigma = exp(4 timestep). DPM-Solver with
  Karras (exponential, lu) sigmas rounds its timesteps: measured at N = 80, 3 duplicate timesteps
  and an 11.8% gap between the model's and the update's sigma on Stable Diffusion's betas (1 and
  14.5% on DDPM's linear betas); Euler keeps its fractional timesteps (gap: float32). With oracle=True
  the model is evaluated at the update's own noise level instead, which removes the rounding
  error and leaves the scheduler's discretisation error. The output is in the scheduler's
  prediction_type, from the model's x0-prediction D and eps = (x - alpha D) / sigma at the time the
  model believes: "epsilon" eps, "sample" D, "v_prediction" alpha eps - sigma D, "flow_prediction"
  eps - D; for EDM, the preconditioned network F with D = c_skip x + c_out F (the scheduler's
  precondition_outputs) on the input c_in x. With no rounding the three give the same states; with
  rounding they do not (the scheduler converts the model's eps with its own sigma).
- Records. traj.denoised[i] is D at the call that starts step i; traj.nfe the model calls; traj.extras
  holds, per call: "timestep", "t_model" and "t_update" (explorer times the model was evaluated at
  and the update assumed), "sigma_model" and "sigma_update" (the same in the scheduler's own sigma:
  sigma/alpha for VP tables), "step" (the step each call belongs to); per state: "sigma"; and
  "casts_to_float32" (whether step() rounds the sample to float32, read from its source: Euler,
  EulerAncestral, DPM-Solver multistep, FlowMatch Euler/Heun and EDM Euler do, as an upcast meant
  for float16; the other supported ones keep float64), "table_dtype" (the sigma or alphas_cumprod table
  as stepped: float32 unless float64=True), "sample_dtype", "coordinates" ("vp" or "ve": the
  scheduler's sample is x or x / alpha), "oracle".
  traj.schedule = schedule_of(scheduler); traj.solver "diffusers:<class name>".
- State. The scheduler is deep-copied and set_timesteps(n_steps) is called on the copy for every
  run: its hidden step state (step_index, model_outputs, lower_order_nums, ets, ...) starts fresh
  and the caller's object is untouched.
- Noise. step() gets a torch.Generator made from rng (an integer seed as it is; a numpy Generator
  gives one integer), DPMSolverSDE's Brownian tree a seed from it, and any draw from torch's global
  generator runs inside torch.random.fork_rng seeded from it: the same seed gives bit-identical
  runs, and the caller's torch state is left alone. Without rng, a scheduler that draws noise is
  stopped with a ValueError at the first draw.
- Failures. An exception inside the scheduler (set_timesteps, scale_model_input, step) becomes a
  ValueError naming the scheduler class, the call and the original error. A step whose result is
  NaN or inf stops the run with traj.diverged_at set, as ex.sample does; the trajectory then ends
  with that step's (non-finite) state, since the later times are the scheduler's to decide.
- float64=True upcasts the copy's float tables to float64 after set_timesteps (their values are
  unchanged), so the schedulers that keep the sample's dtype compute in float64 throughout (with
  oracle=True, UniPC then equals our unipc to 1e-10, a point-mass flow is exact to 1e-9); the
  others still cast inside step (3e-6).
"""

from __future__ import annotations

import copy
import inspect
import math
import time

import numpy as np

from ..foundations.schedules import Discrete, EDM, RectifiedFlow, Schedule, VE, from_alphas_cumprod, get

# Scheduler families, by class name (a subclass belongs to its base's family).
SIGMA_TABLE = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
               "LMSDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
               "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "DPMSolverSDEScheduler",
               "UniPCMultistepScheduler", "DEISMultistepScheduler", "SASolverScheduler")
TIMESTEP_TABLE = ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler")
FLOW = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
EDM_FAMILY = ("EDMEulerScheduler", "EDMDPMSolverMultistepScheduler")
SUPPORTED = TIMESTEP_TABLE + SIGMA_TABLE + FLOW + EDM_FAMILY


def _base(scheduler) -> str:
    """The supported class scheduler is (or derives from), or a ValueError."""
    if not (callable(getattr(scheduler, "step", None)) and callable(getattr(scheduler, "set_timesteps", None))
            and getattr(scheduler, "config", None) is not None):
        raise ValueError(f"scheduler must be a diffusers scheduler (with config, set_timesteps and step), got "
                         f"{type(scheduler).__name__}")
    for cls in type(scheduler).__mro__:
        if cls.__name__ in SUPPORTED:
            return cls.__name__
    raise ValueError(f"scheduler {type(scheduler).__name__} is not supported by run_diffusers; supported: "
                     f"{', '.join(SUPPORTED)} (and their subclasses)")


def _family(scheduler) -> str:
    base = _base(scheduler)
    if base in FLOW or scheduler.config.get("use_flow_sigmas", False):
        return "flow"
    if base in EDM_FAMILY:
        return "edm"
    return "vp"


def schedule_of(scheduler) -> Schedule:
    """The scheduler's own noise table as an explorer schedule (x = alpha(t) x0 + sigma(t) eps):
    VP tables -> from_alphas_cumprod(alphas_cumprod) (t = timestep), flow matching ->
    rectified-flow (t = sigma), EDM -> edm (t = sigma); see the module docstring."""
    family, config = _family(scheduler), scheduler.config
    if family == "vp":
        abar = scheduler.alphas_cumprod
        abar = abar.double().cpu().numpy() if hasattr(abar, "double") else np.asarray(abar, dtype=np.float64)
        return from_alphas_cumprod(abar)
    if family == "edm":
        return get("edm", t_min=float(config.sigma_min), t_max=float(config.sigma_max))
    lo, hi = getattr(scheduler, "sigma_min", None), getattr(scheduler, "sigma_max", None)
    if lo is None or hi is None:  # DPM-Solver/UniPC with use_flow_sigmas: the shifted ends of its table
        n, shift = config.num_train_timesteps, float(config.get("flow_shift", 1.0))
        lo, hi = (shift * s / (1.0 + (shift - 1.0) * s) for s in (1.0 / n, 1.0 - 1.0 / n))
    return get("rectified-flow", t_min=float(lo), t_max=float(hi))


def _same_coordinates(a: Schedule, b: Schedule) -> bool:
    """Whether two schedules have the same alpha(t) and sigma(t) (t_min/t_max aside)."""
    if isinstance(a, Discrete) and isinstance(b, Discrete):
        return np.array_equal(a.alphas_cumprod, b.alphas_cumprod)
    if type(a) is type(b) and isinstance(a, (EDM, VE, RectifiedFlow)):
        return True
    return a == b


# Noise levels: each is (t, sigma) with sigma in the scheduler's convention (VP: sigma/alpha);
# sigma = 0 is the noise-free state, labelled t = schedule.t_lo.


class _Levels:
    def __init__(self, family: str, schedule: Schedule):
        self.family, self.s = family, schedule

    def from_sigma(self, sigma: float) -> tuple[float, float]:
        sigma = float(sigma)
        if sigma == 0.0:
            return float(self.s.t_lo), 0.0
        if self.family == "vp":  # not clipped: a float32 sigma a few ulps beyond the table's ends has its
            # time as far outside [0, T - 1], on the table's log-linear end pieces (exact, not rounded)
            return float(self.s.t_of_lambda(-math.log(sigma))), sigma
        return sigma, sigma

    def from_index(self, k: float) -> tuple[float, float]:
        """VP: the table's level at timestep k."""
        k = float(k)
        return k, float(self.s.sigma(k) / self.s.alpha(k))

    def from_abar(self, abar: float) -> tuple[float, float]:
        abar = float(abar)
        hit = np.flatnonzero(self.s.alphas_cumprod == abar)  # final_alpha_cumprod is usually alphas_cumprod[0]
        if len(hit):
            return self.from_index(float(hit[0]))
        return self.from_sigma(0.0 if abar >= 1.0 else math.sqrt((1.0 - abar) / abar))

    def sigma_of_t(self, t: float) -> float:
        return float(self.s.sigma(t) / self.s.alpha(t)) if self.family == "vp" else float(t)


def _item(v) -> float:
    return float(v.item() if hasattr(v, "item") else v)


def _input_level(sched, base: str, call: int, timestep, levels: _Levels):
    """The noise level the scheduler assumes for the sample it hands the model at this call."""
    if base in TIMESTEP_TABLE:
        return levels.from_index(_item(timestep))
    idx = sched.step_index if getattr(sched, "step_index", None) is not None else call
    first = getattr(sched, "state_in_first_order", True)
    if base == "KDPM2DiscreteScheduler" and not first:
        sigma = sched.sigmas_interpol[idx]
    elif base == "KDPM2AncestralDiscreteScheduler" and not first:
        sigma = sched.sigmas_interpol[idx - 1]
    elif base == "DPMSolverSDEScheduler" and not first:
        sigma = sched.mid_point_sigma
    else:
        sigma = sched.sigmas[idx]
    return levels.from_sigma(_item(sigma))


def _prev_level(sched, base: str, timestep, levels: _Levels):
    """For DDIM, DDPM, PNDM: where this call's step lands (their prev_timestep; read before step)."""
    tau = int(_item(timestep))
    ratio = sched.config.num_train_timesteps // sched.num_inference_steps
    if base == "DDPMScheduler":
        prev = int(_item(sched.previous_timestep(timestep)))
        return levels.from_index(prev) if prev >= 0 else levels.from_sigma(0.0)
    if base == "PNDMScheduler":
        counter = sched.counter
        if counter < len(sched.prk_timesteps):  # Runge-Kutta stages: half steps, then full ones
            prev = tau - (0 if counter % 2 else ratio // 2)
        else:
            prev = tau if counter == 1 else tau - ratio  # PLMS's first step is redone at the next call
    else:
        prev = tau - ratio
    return levels.from_index(prev) if prev >= 0 else levels.from_abar(_item(sched.final_alpha_cumprod))


def _output_level(sched, base: str, call: int, levels: _Levels):
    """For a sigma-table scheduler: the level of the sample step() just returned."""
    idx = sched.step_index if getattr(sched, "step_index", None) is not None else call + 1
    return levels.from_sigma(_item(sched.sigmas[idx]))


def _mid_step(sched, base: str) -> bool:
    """Whether the sample step() just returned is an intermediate stage of a multi-call step."""
    if hasattr(sched, "state_in_first_order"):
        return not sched.state_in_first_order
    if base == "PNDMScheduler":
        if sched.counter <= len(sched.prk_timesteps):
            return sched.counter % 4 != 0
        return sched.config.skip_prk_steps and sched.counter == 1
    return False


def _model_time(sched, family: str, timestep, t_update: float, levels: _Levels) -> float:
    """The explorer time the model believes the timestep means (see the module docstring)."""
    tau = _item(timestep)
    config = sched.config
    if family == "flow":
        return tau / config.num_train_timesteps
    if family == "edm":
        return math.exp(4.0 * tau)
    if config.get("timestep_type", "discrete") == "continuous":
        return levels.from_sigma(math.exp(4.0 * tau))[0]
    return tau if float(tau).is_integer() else t_update


def _prediction(sched, family: str):
    pred = sched.config.get("prediction_type", None)
    if pred is None:
        return "flow_prediction" if family == "flow" else "epsilon"
    return pred


def _network_output(sched, family, pred, schedule, model, x_in, t_m, torch, who):
    """(output in the scheduler's prediction_type, the model's x0-prediction D) for input x_in at
    the believed time t_m."""
    if family == "edm":
        c_in = 1.0 / math.sqrt(t_m**2 + sched.config.sigma_data**2)
        x = x_in / c_in
    else:
        x = x_in
    d = model.denoise(x, t_m)
    if family == "edm":
        d_t = torch.as_tensor(d) if not torch.is_tensor(d) else d
        x_t = torch.as_tensor(x) if not torch.is_tensor(x) else x
        skip = _call(f"{who}.precondition_outputs", sched.precondition_outputs, x_t, torch.zeros_like(x_t), t_m)
        c_out = _call(f"{who}.precondition_outputs", sched.precondition_outputs, torch.zeros_like(x_t),
                      torch.ones_like(x_t), t_m)
        return (d_t - skip) / c_out, d
    a, s = float(schedule.alpha(t_m)), float(schedule.sigma(t_m))
    eps = (x - a * d) / s
    if pred == "epsilon":
        out = eps
    elif pred == "sample":
        out = d
    elif pred == "v_prediction":
        out = a * eps - s * d
    elif pred == "flow_prediction":
        out = eps - d
    else:
        raise ValueError(f"{type(sched).__name__}: prediction_type {pred!r} is not one run_diffusers can produce "
                         "(epsilon, sample, v_prediction, flow_prediction)")
    return out, d


class _Draws:
    """Seeds every source of noise a scheduler may use from rng; without rng, refuses any draw."""

    def __init__(self, rng, torch):
        self.torch, self.given = torch, rng is not None
        if isinstance(rng, torch.Generator):  # used as it is; the global draws are seeded from its seed
            self.seed, self.generator = int(rng.initial_seed()), rng
            return
        if rng is None:
            self.seed = 0  # only to detect a draw, which is then refused
        elif isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
            self.seed = int(rng)
        else:
            from ..foundations.random import as_generator

            self.seed = int(as_generator(rng).integers(2**62))
        self.generator = torch.Generator().manual_seed(self.seed)

    def snapshot(self):
        return self.generator.get_state(), self.torch.random.get_rng_state()

    def check(self, before, who: str):
        if self.given:
            return
        after = self.snapshot()
        if not (self.torch.equal(before[0], after[0]) and self.torch.equal(before[1], after[1])):
            raise ValueError(f"{who} draws noise: pass rng (a seed, numpy Generator or torch.Generator)")


def _as_model_of(model, schedule: Schedule):
    if not callable(getattr(model, "denoise", None)) or getattr(model, "schedule", None) is None:
        raise ValueError("model must have a denoise(x, t) method and a .schedule")
    if _same_coordinates(model.schedule, schedule):
        return model
    from ..foundations.conversion import ConvertedModel  # the same model seen under the scheduler's schedule

    return ConvertedModel(model, schedule)


def _check_x(x_T, torch):
    if isinstance(x_T, np.ndarray):
        if x_T.ndim < 2:
            raise ValueError(f"x_T must have shape (N, D) or (N, C, H, W), got {x_T.shape}")
        if not np.all(np.isfinite(x_T)):
            raise ValueError("x_T contains NaN or inf")
        return torch.from_numpy(np.array(x_T, dtype=np.float64)), True
    if torch.is_tensor(x_T):
        if x_T.ndim < 2 or not x_T.is_floating_point():
            raise ValueError(f"x_T must be a floating tensor of shape (N, D) or (N, C, H, W), got {tuple(x_T.shape)}")
        if not bool(torch.isfinite(x_T).all()):
            raise ValueError("x_T contains NaN or inf")
        return x_T.clone(), False
    raise ValueError(f"x_T must be a numpy array or torch tensor, got {type(x_T).__name__}")


def _call(who: str, fn, *args, **kwargs):
    """fn(...) inside the scheduler; whatever it raises becomes a ValueError that names it."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{who} failed: {type(err).__name__}: {err}") from err


def run_diffusers(scheduler, model, n_steps: int, x_T, rng=None, *, oracle: bool = False, float64: bool = False,
                  set_timesteps: dict | None = None, **step_options):
    """Sample with a configured diffusers scheduler driving model -> Trajectory.

    x_T is the explorer state (x = alpha x0 + sigma eps) at the scheduler's first noise level
    (traj.t[0]); traj.x are explorer states at traj.t, under traj.schedule = schedule_of(scheduler)
    (a model under another schedule is seen through ex.conversion.ConvertedModel). n_steps goes to
    a fresh set_timesteps on a copy of the scheduler (set_timesteps: further keyword arguments for
    it, e.g. {"mu": 0.5}); step_options go to every step() (eta, s_churn, ...). rng seeds stochastic
    schedulers. oracle=True evaluates the model at the update's own noise level instead of the
    timestep's. float64=True upcasts the scheduler's tables. See the module docstring.
    """
    import torch

    from ..foundations.trajectory import Trajectory, _jsonable

    base, family = _base(scheduler), _family(scheduler)
    name = type(scheduler).__name__
    schedule = schedule_of(scheduler)
    model = _as_model_of(model, schedule)
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    sample, numpy_model = _check_x(x_T, torch)
    if set_timesteps is not None and not isinstance(set_timesteps, dict):
        raise ValueError(f"set_timesteps must be a dict of keyword arguments, got {type(set_timesteps).__name__}")
    levels = _Levels(family, schedule)
    pred = _prediction(scheduler, family)
    draws = _Draws(rng, torch)

    sched = copy.deepcopy(scheduler)
    if hasattr(sched, "noise_sampler_seed") and rng is not None:  # DPMSolverSDE's Brownian tree
        sched.noise_sampler_seed = draws.seed
    _call(f"{name}.set_timesteps({n_steps})", sched.set_timesteps, int(n_steps), **(set_timesteps or {}))
    if float64:
        for key, value in list(vars(sched).items()):
            if torch.is_tensor(value) and value.is_floating_point():
                setattr(sched, key, value.double())
    ve = float(getattr(sched, "init_noise_sigma", 1.0)) != 1.0 and family == "vp"
    if "generator" in inspect.signature(sched.step).parameters:
        step_options = {"generator": draws.generator, **step_options}
    timesteps = list(sched.timesteps)

    def to_sample(x, t, sigma):
        if not ve or sigma == 0.0:
            return x
        return x / float(schedule.alpha(t))

    def to_state(smp, t, sigma):
        x = smp if not ve or sigma == 0.0 else smp * float(schedule.alpha(t))
        return x.double().numpy() if numpy_model else x

    def as_model_array(v):
        return v.double().numpy() if numpy_model else v

    def as_output(v):
        return torch.from_numpy(np.asarray(v, dtype=np.float64)) if isinstance(v, np.ndarray) else v

    rec = {k: [] for k in ("timestep", "t_model", "t_update", "sigma_model", "sigma_update", "step")}
    xs, ts, sigmas, ds = [], [], [], []
    diverged_at = reason = None
    dtypes, was_stage = set(), False
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draws.seed)
        for call, tau in enumerate(timesteps):
            if call == 0:
                t0, s0 = _input_level(sched, base, 0, tau, levels)
                sample = to_sample(sample, t0, s0)
                xs.append(to_state(sample, t0, s0))
                ts.append(t0)
                sigmas.append(s0)
            step = len(xs) - 1  # the step this call belongs to
            who = f"{name} (call {call}, timestep {_item(tau):.6g})"
            if hasattr(sched, "scale_model_input"):
                model_in = _call(f"{who}.scale_model_input", sched.scale_model_input, sample, tau)
            else:
                model_in = sample
            t_u, s_u = _input_level(sched, base, call, tau, levels)
            t_m = t_u if oracle else _model_time(sched, family, tau, t_u, levels)
            landing = _prev_level(sched, base, tau, levels) if base in TIMESTEP_TABLE else None
            with np.errstate(all="ignore"):
                out, d = _network_output(sched, family, pred, schedule, model, as_model_array(model_in), t_m, torch,
                                         who)
            for key, value in (("timestep", _item(tau)), ("t_model", t_m), ("t_update", t_u),
                               ("sigma_model", levels.sigma_of_t(t_m)), ("sigma_update", s_u), ("step", step)):
                rec[key].append(value)
            if not was_stage:  # this call starts step `step`: its x0-prediction is the step's
                ds.append(d)
            before = draws.snapshot()
            result = _call(f"{who}.step", sched.step, as_output(out), tau, sample, **step_options)
            draws.check(before, f"{name} (call {call})")
            new = result.prev_sample if hasattr(result, "prev_sample") else result[0]
            dtypes.add(str(new.dtype).replace("torch.", ""))
            corrected = getattr(sched, "last_sample", None)
            if call > 0 and corrected is not None and not was_stage:
                xs[-1] = to_state(corrected, ts[-1], sigmas[-1])  # UniPC / SA-Solver corrected that state
            was_stage = _mid_step(sched, base) and call < len(timesteps) - 1  # a last first-order call ends the run
            sample = new
            if not was_stage:
                t_o, s_o = landing if landing is not None else _output_level(sched, base, call, levels)
                xs.append(to_state(new, t_o, s_o))
                ts.append(t_o)
                sigmas.append(s_o)
            if not bool(torch.isfinite(new).all()):  # the run stops with the step that diverged
                if was_stage:
                    xs.append(to_state(new * float("nan"), ts[-1], sigmas[-1]))
                    ts.append(float("nan"))
                    sigmas.append(float("nan"))
                diverged_at = len(xs) - 2
                bad = "the x0-prediction" if not _finite(d) else "the update"
                reason = f"step {diverged_at} (call {call}, timestep {_item(tau):.6g}) produced NaN or inf in {bad}"
                break
    wall = time.perf_counter() - start

    n = len(xs) - 1
    stack = np.stack if numpy_model else torch.stack
    extras = {key: np.asarray(value, dtype=np.int64 if key == "step" else np.float64) for key, value in rec.items()}
    table = getattr(sched, "sigmas", getattr(sched, "alphas_cumprod", None))
    extras.update({"sigma": np.asarray(sigmas, dtype=np.float64), "casts_to_float32": _casts_sample_to_float32(sched),
                   "table_dtype": str(table.dtype).replace("torch.", "") if table is not None else None,
                   "sample_dtype": ",".join(sorted(dtypes)), "coordinates": "ve" if ve else "vp",
                   "oracle": bool(oracle)})
    options = {"scheduler": name, "config": _jsonable(dict(scheduler.config)), "n_steps": int(n_steps),
               "oracle": bool(oracle), "float64": bool(float64), "prediction_type": pred,
               **{k: v for k, v in step_options.items() if k != "generator"}}
    return Trajectory(
        t=np.asarray(ts, dtype=np.float64), x=stack(xs), denoised=stack(ds[:n]), nfe=len(rec["timestep"]),
        solver=f"diffusers:{name}", options=options, diverged_at=diverged_at, diverged_reason=reason,
        wall_time=wall, schedule=schedule, extras=extras,
    )


def _casts_sample_to_float32(sched) -> bool | None:
    """Whether step() rounds the sample to float32 (`sample = sample.to(torch.float32)`, an upcast meant
    for float16 that rounds a float64 sample), read from its source; None where there is none."""
    try:
        return "sample.to(torch.float32)" in inspect.getsource(type(sched).step)
    except (OSError, TypeError):
        return None


def _finite(v) -> bool:
    return bool(np.isfinite(v).all()) if isinstance(v, np.ndarray) else bool(v.isfinite().all())
