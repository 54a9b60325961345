"""Any k-diffusion sampler as an explorer solver: `from_kdiffusion(sampler)` registers it, and
`ex.sample` then runs it on any explorer model (any schedule, numpy or torch states) and grid.

Conventions, and how each is converted (exactly, not approximately):

- Coordinates. k-diffusion samples the variance-exploding process x_ve = x0 + sigma_ve eps, with
  sigma_ve = sigma(t) / alpha(t) = e^{-lambda(t)}; ours is x = alpha(t) x0 + sigma(t) eps. So
  x_ve = x / alpha(t), and every state the sampler reports is mapped back as x = alpha(t) x_ve.
  Its model is a denoiser D(x_ve, sigma_ve) -> x0, which is ours at the matching time:
  D(x_ve, sigma_ve) = model.denoise(alpha(t) x_ve, t). The x0-prediction needs no conversion.
- Grid. The sampler gets exactly the grid's sigmas, sigma_i = sigma(t_i) / alpha(t_i)
  (= ex.sigmas_of(s, ts); divided rather than exp(-lambda), so under alpha = 1 it is t itself),
  and no appended 0: a grid that ends at sigma > 0 ends there, as with every explorer solver (the
  sample is traj.x[-1]; model.denoise(traj.x[-1], ts[-1]) is k-diffusion's extra last step). A
  grid whose last time has sigma(t) = 0 (e.g. ts ending at 0 under edm or rectified-flow) passes
  that 0, and k-diffusion takes its own final step onto the data.
- Times. The sampler's sigma maps back to t through the schedule's exact inverse,
  t = t_of_lambda(-log sigma); a sigma equal to a grid sigma (to a few ulps of its dtype) is that
  grid time exactly, so the model sees the same times a native solver does. A sampler that
  evaluates between grid points (dpm_2's midpoint, dpmpp_sde's intermediate point) gets the exact
  time there; one that leaves [sigma_n, sigma_0] (s_churn at the first step) is refused, as
  ex.sample refuses any solver that evaluates outside the grid.
- Record. k-diffusion's callback({'x', 'i', 'sigma', 'sigma_hat', 'denoised'}) fires once per
  step with the state the step *starts* from and its x0-prediction. So step i is recorded when
  the next callback brings the state it produced (or, for the last step, when the sampler returns
  it): record(i, alpha(t_{i+1}) x_{i+1}, denoised_i). traj.x are the sampler's own states,
  traj.denoised[i] = model.denoise(traj.x[i], t_i). Karras's churn (s_churn > 0: the callback's
  x has noise added up to sigma_hat > sigma_i) has no state at the grid time to record, and is
  refused; so are ex.sample's corrector steps (the sampler keeps its own state).
- Arrays. k-diffusion needs torch tensors: numpy states go in as float64 tensors and come back as
  float64 arrays (so comparisons hold to round-off); torch states stay torch, in their dtype and
  device (the sigmas take the states' dtype, as k-diffusion's do).
- Noise. Where the sampler takes a `noise_sampler` (every stochastic k-diffusion sampler does, and
  then draws nowhere else), the adapter passes a BrownianNoise that draws from ex.sample's rng
  (numpy or torch Generator): exact increments of one Brownian motion in sigma, the law of
  k-diffusion's BrownianTreeNoiseSampler default, which for samplers asking once per step is
  simply the i-th standard normal draw of rng (what our own SDE solvers draw). Any draw a sampler
  makes itself (torch.randn_like) comes from torch's generator, seeded inside
  torch.random.fork_rng (the caller's torch state is left as it was): from one integer drawn from
  rng when the sampler takes no noise_sampler, else from a digest of rng's state (no draw
  consumed). The same seed gives bit-identical runs. A sampler declared deterministic gets seed 0.
- Declaration. stochastic=None detects noise from the signature and the fixed options (an `eta`
  that is not 0, or a noise_sampler parameter without an eta). order=None is k-diffusion's
  paper order for its own samplers (the ODE order; 1 when noise is injected, as our dpmpp-2m-sde
  declares), a sampler's own `order` parameter (sample_lms) when it has one, and otherwise an
  error asking for it. An `order` passed for a sampler that has that parameter goes to the
  sampler as well, so the two agree.
"""

from __future__ import annotations

import hashlib
import inspect
import math

import numpy as np

from ..foundations.random import as_generator, standard_normal_like
from ..solvers import registry

EDM = "Elucidating the Design Space of Diffusion-Based Generative Models"
DDPM = "Denoising Diffusion Probabilistic Models"
DPMPP = "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models"
K_DIFFUSION = "k-diffusion (Katherine Crowson), https://github.com/crowsonkb/k-diffusion"

# k-diffusion's own samplers (k_diffusion.sampling): ODE order, model calls per step, multistep, paper.
KNOWN = {
    "sample_euler": (1, 1, False, EDM),
    "sample_euler_ancestral": (1, 1, False, DDPM),  # eta = 1 is DDPM's ancestral step (see the tests)
    "sample_heun": (2, 2, False, EDM),
    "sample_dpm_2": (2, 2, False, EDM),
    "sample_dpm_2_ancestral": (2, 2, False, EDM),
    "sample_lms": (None, 1, True, K_DIFFUSION),  # its own `order` parameter
    "sample_dpmpp_2s_ancestral": (2, 2, False, DPMPP),
    "sample_dpmpp_sde": (2, 2, False, DPMPP),
    "sample_dpmpp_2m": (2, 1, True, DPMPP),
    "sample_dpmpp_2m_sde": (2, 1, True, DPMPP),
    "sample_dpmpp_3m_sde": (3, 1, True, DPMPP),
}

# Parameters the adapter fills in itself: they cannot be fixed.
_SUPPLIED = ("model", "x", "sigmas", "extra_args", "callback", "disable", "noise_sampler")


class KDiffusionError(RuntimeError):
    """A k-diffusion sampler run through the adapter failed or broke the adapter's contract."""


class BrownianNoise:
    """k-diffusion's noise_sampler(sigma, sigma_next) = (W(sigma_next) - W(sigma)) / sqrt|sigma_next - sigma|
    for one Brownian motion W indexed by sigma (the time k-diffusion's BrownianTreeNoiseSampler
    uses), sampled exactly and lazily: W at a new sigma beyond the points drawn so far is the
    nearest one plus an independent N(0, |gap|) increment; between two drawn points it comes from
    the Brownian bridge, mean interpolated, variance (u - a)(b - u) / (b - a). Each new point costs
    one N(0, I) draw of `like`'s shape from rng (numpy or torch Generator), in the order asked.
    Increments over disjoint intervals are independent, so a sampler that asks once per step for
    (sigma_i, sigma_{i+1}) receives rng's successive standard normal draws."""

    def __init__(self, like, rng):
        self._like, self._rng, self._w = like, rng, {}

    def _at(self, u: float):
        if u in self._w:
            return self._w[u]
        if not self._w:
            w = self._like.new_zeros(self._like.shape)  # only increments are ever used: W = 0 here
        else:
            below = [k for k in self._w if k < u]
            above = [k for k in self._w if k > u]
            z = standard_normal_like(self._like, self._rng)
            if not below or not above:
                near = max(below) if below else min(above)
                w = self._w[near] + math.sqrt(abs(u - near)) * z
            else:
                a, b = max(below), min(above)
                f = (u - a) / (b - a)
                w = self._w[a] + f * (self._w[b] - self._w[a]) + math.sqrt((u - a) * (b - u) / (b - a)) * z
        self._w[u] = w
        return w

    def __call__(self, sigma, sigma_next):
        a, b = float(sigma), float(sigma_next)
        if a == b:  # an empty interval: no increment (the samplers scale it by 0 there)
            return self._like.new_zeros(self._like.shape)
        w_a = self._at(a)
        return (self._at(b) - w_a) / math.sqrt(abs(b - a))


def _parameters(sampler):
    try:
        return inspect.signature(sampler).parameters
    except (TypeError, ValueError):
        raise ValueError(f"sampler must be a function with an inspectable signature, got {sampler!r}") from None


def _accepts(params, name: str) -> bool:
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _effective(params, fixed: dict) -> dict:
    """The sampler's keyword values in a run: its defaults, overridden by the fixed options."""
    out = {k: p.default for k, p in params.items() if p.default is not p.empty}
    return {**out, **fixed}


def _detect_stochastic(params, values: dict) -> bool:
    if "eta" in params:
        return values.get("eta") not in (0, 0.0, None, False)
    return "noise_sampler" in params


def _check_signature(sampler, params, fixed: dict, label: str):
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 3 and not any(p.kind is p.VAR_POSITIONAL for p in params.values()):
        raise ValueError(f"sampler {label} must take (model, x, sigmas, ...) like k-diffusion's samplers; "
                         f"its signature is {inspect.signature(sampler)}")
    if not _accepts(params, "callback"):
        raise ValueError(f"sampler {label} takes no `callback`: the adapter records the trajectory through "
                         "k-diffusion's callback({'x', 'i', 'sigma', 'sigma_hat', 'denoised'}), once per step")
    for key in fixed:
        if key in _SUPPLIED:
            raise ValueError(f"fixed option {key!r} of sampler {label}: the adapter supplies {key} itself")
        if not _accepts(params, key):
            raise ValueError(f"sampler {label} has no parameter {key!r} (fixed option); "
                             f"its signature is {inspect.signature(sampler)}")
    missing = [p.name for p in positional[3:] if p.default is p.empty and p.name not in fixed]
    missing += [p.name for p in params.values() if p.kind is p.KEYWORD_ONLY and p.default is p.empty
                and p.name not in fixed]
    if missing:
        raise ValueError(f"sampler {label} needs {', '.join(map(repr, missing))}: pass them as fixed options")
    if fixed.get("s_churn", 0) not in (0, 0.0):
        raise ValueError(f"fixed option 's_churn' of sampler {label}: churn adds noise before the model call, "
                         "so the state at the grid time is never seen and cannot be recorded; use s_churn=0")


def _default_name(sampler, fixed: dict) -> str:
    base = f"k-diffusion:{getattr(sampler, '__name__', type(sampler).__name__)}"
    if fixed:
        base += "(" + ", ".join(f"{k}={v!r}" for k, v in sorted(fixed.items())) + ")"
    return base


def _torch_seed(rng, consume: bool) -> int:
    """A seed for torch's own generator from rng: one integer drawn from it, or (consume=False)
    a digest of its current state, which leaves rng's stream untouched."""
    import torch

    if isinstance(rng, torch.Generator):
        if consume:
            return int(torch.randint(0, 2**62, (), generator=rng, device=rng.device))
        state = rng.get_state().numpy().tobytes()
    else:
        if consume:
            return int(rng.integers(0, 2**62))
        state = repr(rng.bit_generator.state).encode()
    return int.from_bytes(hashlib.sha256(state).digest()[:8], "little") & (2**62 - 1)


def from_kdiffusion(sampler, name=None, order=None, *, stochastic=None, replace=False, **fixed_options) -> str:
    """Register a k-diffusion-signature sampler(model, x, sigmas, extra_args=None, callback=None,
    disable=None, **kw) as an explorer solver and return its name (default
    "k-diffusion:<function name>", with the fixed options appended when there are any).

    The solver runs the sampler in k-diffusion's coordinates x_ve = x / alpha(t) on the grid's
    sigmas sigma(t) / alpha(t), with the model as the denoiser D(x_ve, sigma) =
    model.denoise(alpha(t) x_ve, t), t = t_of_lambda(-log sigma), and records the sampler's own
    states, mapped back to x = alpha x_ve, at the grid times (see the module docstring for every
    convention). fixed_options become the sampler's keyword arguments (eta=0.0, order=3 for
    sample_lms). order: the global order to declare (None: k-diffusion's paper order for its own
    samplers, the sampler's `order` parameter, else ValueError). stochastic: whether it draws noise
    (None: detected from `eta` / `noise_sampler`). replace: overwrite another solver of that name.
    Registering the same sampler with the same options again returns the name unchanged.
    """
    if not callable(sampler):
        raise ValueError(f"sampler must be callable, got {sampler!r}")
    params = _parameters(sampler)
    fn_name = getattr(sampler, "__name__", type(sampler).__name__)
    module = getattr(sampler, "__module__", None) or "?"
    label = f"{module}.{getattr(sampler, '__qualname__', fn_name)}"
    if order is not None and "order" in params:
        fixed_options = {**fixed_options, "order": order}  # the sampler's own order parameter (sample_lms)
    _check_signature(sampler, params, fixed_options, label)
    values = _effective(params, fixed_options)
    if stochastic is None:
        stochastic = _detect_stochastic(params, values)
    elif not isinstance(stochastic, bool):
        raise ValueError(f"stochastic must be True, False or None (detect), got {stochastic!r}")

    known = KNOWN.get(fn_name) if module.split(".")[-1] == "sampling" and "k_diffusion" in module else None
    if order is None:
        if known is not None and known[0] is not None:
            order = 1 if stochastic else known[0]
        elif isinstance(values.get("order"), int) and not isinstance(values.get("order"), bool):
            order = values["order"]
        else:
            raise ValueError(f"order is not known for sampler {label}: pass order=<its global order of accuracy>")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive integer, got {order!r}")
    nfe_per_step, multistep, reference = (known[1], known[2], known[3]) if known else (None, False, label)

    if name is None:
        name = _default_name(sampler, fixed_options)
    declaration = (sampler, tuple(sorted(fixed_options.items(), key=lambda kv: kv[0])), stochastic, order)
    if name in registry.names() and not replace:
        existing = registry.spec(name).fn
        try:
            same = getattr(existing, "_kdiffusion", None) == declaration
        except Exception:  # options that do not compare (arrays): a different declaration
            same = False
        if same:
            return name

    def solver(model, x, ts, rng, record):
        return _run(sampler, label, fixed_options, stochastic, params, model, x, ts, rng, record)

    solver.__qualname__ = solver.__name__ = fn_name
    solver._kdiffusion = declaration
    doc = (inspect.getdoc(sampler) or "").strip().splitlines()
    what = doc[0].rstrip(".") if doc else fn_name
    opts = f"; fixed options {', '.join(f'{k}={v!r}' for k, v in sorted(fixed_options.items()))}" if fixed_options else ""
    summary = f"{what} (k-diffusion's {label}, through explorer.adapters.from_kdiffusion{opts})."
    return registry.register(name, solver, order=order, reference=reference, summary=summary,
                             stochastic=stochastic, multistep=multistep, nfe_per_step=nfe_per_step,
                             replace=replace)


def _run(sampler, label, fixed, stochastic, params, model, x, ts, rng, record):
    """One ex.sample run of the sampler: convert, call, record (see the module docstring)."""
    import torch

    s = model.schedule
    ts = np.asarray(ts, dtype=np.float64)
    n = len(ts) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.broadcast_to(np.asarray(s.alpha(ts), dtype=np.float64), ts.shape).copy()
        sig = np.broadcast_to(np.asarray(s.sigma(ts), dtype=np.float64), ts.shape) / alpha
    bad = np.flatnonzero(~(alpha > 0) | ~np.isfinite(sig))
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"ts[{i}] = {ts[i]}: k-diffusion's coordinates x / alpha(t) need alpha(t) > 0 "
                         f"(alpha = {alpha[i]:.4g} there)")

    numpy_states = isinstance(x, np.ndarray)
    if numpy_states:
        x_ve = torch.from_numpy(np.asarray(x, dtype=np.float64) / alpha[0])
        dtype = torch.float64
    else:
        x_ve = x / float(alpha[0])
        dtype = x.dtype
    sigmas = torch.tensor(sig, dtype=dtype, device=x_ve.device)
    tol = 8.0 * torch.finfo(dtype).eps  # a grid sigma, recomputed or cast
    slack = 1024.0 * torch.finfo(dtype).eps

    def state(x_k, a: float):
        """A k-diffusion state as ours, x = alpha x_ve (a new array or tensor)."""
        return a * (x_k.detach().cpu().numpy() if numpy_states else x_k)

    def prediction(d):
        return np.array(d.detach().cpu().numpy(), dtype=np.float64) if numpy_states else d.clone()

    def grid_index(value: float):
        hit = np.flatnonzero(np.abs(sig - value) <= tol * sig)
        return int(hit[0]) if len(hit) else None

    def time_of(value: float):
        """(t, alpha(t)) for k-diffusion's sigma: the grid time itself, or t_of_lambda(-log sigma)."""
        j = grid_index(value)
        if j is not None:
            return float(ts[j]), float(alpha[j])
        # Round-off slack at the ends: dpmpp_2s_ancestral's last midpoint is sigma_{n} up to a few ulps of log/exp.
        if not sig[-1] * (1 - slack) <= value <= sig[0] * (1 + slack) or value <= 0:
            raise KDiffusionError(
                f"k-diffusion sampler {label} evaluated the model at sigma = {value:.6g}, outside the grid's "
                f"[{sig[-1]:.6g}, {sig[0]:.6g}]: ex.sample evaluates models only inside the grid"
            )
        t = min(max(float(s.t_of_lambda(-math.log(value))), float(ts[-1])), float(ts[0]))
        return t, float(s.alpha(t))

    def denoiser(x_k, sigma, **extra):
        flat = torch.as_tensor(sigma).reshape(-1)
        if flat.numel() > 1 and not bool(torch.all(flat == flat[0])):
            raise KDiffusionError(f"k-diffusion sampler {label} evaluated the model at a different sigma per "
                                  "particle; explorer models take one time per call")
        t, a = time_of(float(flat[0]))
        if numpy_states:
            d = model.denoise(a * x_k.detach().cpu().numpy(), t)
            return torch.from_numpy(np.asarray(d, dtype=np.float64))
        return model.denoise(a * x_k, t)

    steps, pending, passed = [0], [None], []  # callbacks seen; step awaiting its end state; record's own raise

    def emit(i, x_next, d):
        try:
            out = record(i, x_next, d)
        except BaseException as err:  # divergence (ex.sample's signal) goes straight through
            passed.append(err)
            raise
        if out is not x_next:
            raise KDiffusionError(f"k-diffusion sampler {label} keeps its own state: it cannot take ex.sample's "
                                  "corrector steps (corrector_steps=0)")

    def callback(info):
        k = int(info["i"])
        if k != steps[0] or k >= n:
            raise KDiffusionError(f"k-diffusion sampler {label} called back for step {k}; expected step "
                                  f"{steps[0]} of {n}, once per step in order")
        value = float(info.get("sigma", sigmas[k]))
        if abs(value - sig[k]) > tol * sig[k]:
            raise KDiffusionError(f"k-diffusion sampler {label} reported sigma = {value:.6g} at step {k}, "
                                  f"but the grid's sigma there is {sig[k]:.6g}")
        if "sigma_hat" in info and float(info["sigma_hat"]) != float(info.get("sigma", sigmas[k])):
            raise KDiffusionError(f"k-diffusion sampler {label} churned at step {k} (sigma_hat = "
                                  f"{float(info['sigma_hat']):.6g} > sigma): the state at the grid time is never "
                                  "seen and cannot be recorded; use s_churn=0")
        if k > 0:
            emit(k - 1, state(info["x"], float(alpha[k])), pending[0])
        pending[0] = prediction(info["denoised"])
        steps[0] += 1

    if rng is None:
        rng = np.random.default_rng(0)  # declared deterministic: any draw it still makes is seeded
    elif not type(rng).__module__.startswith("torch"):
        rng = as_generator(rng)
    kwargs = dict(fixed)
    takes_noise = "noise_sampler" in params
    if takes_noise:
        kwargs["noise_sampler"] = BrownianNoise(x_ve, rng)
    seed = _torch_seed(rng, consume=not takes_noise)
    for key, value in (("extra_args", None), ("disable", True)):
        if _accepts(params, key):
            kwargs[key] = value
    devices = [x_ve.device.index or 0] if x_ve.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = sampler(denoiser, x_ve, sigmas, callback=callback, **kwargs)
    except Exception as err:
        if (passed and err is passed[-1]) or isinstance(err, (KDiffusionError, FloatingPointError)):
            raise
        raise KDiffusionError(f"k-diffusion sampler {label} raised {type(err).__name__}: {err}") from err
    if steps[0] != n:
        raise KDiffusionError(f"k-diffusion sampler {label} called back {steps[0]} times for {n} steps: "
                              "the adapter records each step through callback, once per step")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x_ve.shape):
        raise KDiffusionError(f"k-diffusion sampler {label} returned {type(out).__name__} "
                              f"{tuple(getattr(out, 'shape', ()))}; expected a tensor of shape {tuple(x_ve.shape)}")
    emit(n - 1, state(out, float(alpha[n])), pending[0])
