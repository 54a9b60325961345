"""Any network as an explorer model: a torch module (or any callable) net(x, c(t)) that predicts
eps, x0, v or the probability-flow velocity under a schedule, seen through the four model methods
(the role of dpm-solver's `model_wrapper`).

With x_t = alpha x0 + sigma eps and primes d/dt in the schedule's own time t, each prediction gives
the x0-prediction exactly:

    "eps"       out = eps                        x0 = (x - sigma out) / alpha
    "x0"        out = x0                         x0 = out
    "v"         out = alpha eps - sigma x0       x0 = (alpha x - sigma out) / (alpha^2 + sigma^2)
    "velocity"  out = alpha' x0 + sigma' eps     x0 = (sigma out - sigma' x) / (sigma alpha' - alpha sigma')

(v as in Salimans & Ho, any schedule, not only alpha^2 + sigma^2 = 1; the last denominator is
alpha sigma lambda'(t), negative wherever alpha, sigma > 0 since lambda decreases.) A flow-matching
model's velocity is dx/dt of its interpolation, which is this one when the schedule is its own
(rectified-flow: alpha = 1 - t, sigma = t, velocity = eps - x0).

Torch is imported here, so `explorer.models` imports this module lazily (models.wrap, load_weights).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch

from ..foundations.analytic import DenoiserModel
from ..foundations.mixture import GaussianMixture
from ..foundations.schedules import Discrete, Schedule

PREDICTIONS = ("eps", "x0", "v", "velocity")


# What the network is fed as its time input c(t), for the schedule's time t (a float64 array, one
# time per row of x). A callable c(t) -> array of the same shape is accepted as well.
TIME_INPUTS = {
    "t": lambda s, t: t,  # the schedule's own time (flow matching, score SDEs on [0, 1])
    "index": lambda s, t: t,  # a table's timestep index (DDPM): on a Discrete schedule t is the index
    "sigma": lambda s, t: s.sigma(t),  # (k-diffusion's denoisers are called with sigma)
    "log-sigma": lambda s, t: np.log(s.sigma(t)),
    "c-noise": lambda s, t: 0.25 * np.log(s.sigma(t)),  # EDM's c_noise = ln(sigma) / 4 (Karras et al., Table 1)
    "lambda": lambda s, t: s.lambda_(t),  # half log-SNR log(alpha / sigma)
}
TIME_INPUT_HELP = {
    "t": "the schedule's own time t",
    "index": "the timestep index of a table schedule (ex.schedules.from_alphas_cumprod: t is the index, continuous "
             "between integers)",
    "sigma": "sigma(t)",
    "log-sigma": "log sigma(t)",
    "c-noise": "EDM's c_noise = log(sigma(t)) / 4",
    "lambda": "the half log-SNR lambda(t) = log(alpha(t) / sigma(t))",
}


class WrappedModel(DenoiserModel):
    """A network net(x, c(t)) predicting `prediction` under `schedule`, seen through denoise, eps,
    score and velocity (conversions in the module docstring), made by wrap().

    NumPy in gives float64 NumPy out (the network runs on a copy in its own dtype and device); torch in
    gives torch out, in x's dtype and on x's device. The network is fed x unchanged and its time input
    as a 1-D tensor with one entry per row of x. An output whose shape is not x's, or that holds NaN or
    inf for a finite input, is a ValueError naming the model and the time; for an input already beyond
    sqrt(max) of the network's dtype (a diverging run: its square overflows) the NaN goes back to the
    solver, and ex.sample marks the step, as for any model."""

    def __init__(self, net, schedule: Schedule, prediction: str, time_input, name: str, target=None, dim=None,
                 image_shape=None, dataset=None, dtype=None, device=None):
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.time_input = time_input
        self.name = name
        self.target = target
        self._dim = dim
        self.image_shape = image_shape
        self.dataset = dataset
        self.dtype, self.device = dtype, device

    @property
    def dim(self):
        """D for a model of vectors (N, D); None for an image model."""
        return self._dim

    def __repr__(self) -> str:
        shape = f"image_shape={self.image_shape}" if self.image_shape else f"dim={self.dim}"
        time_input = self.time_input if isinstance(self.time_input, str) else "<callable>"
        return (f"WrappedModel(name={self.name!r}, prediction={self.prediction!r}, time_input={time_input!r}, "
                f"{shape}, {self.schedule!r})")

    # The network's raw output.

    def _time_input(self, t, n: int) -> np.ndarray:
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), (n,))
        fn = TIME_INPUTS.get(self.time_input) if isinstance(self.time_input, str) else None
        c = fn(self.schedule, t) if fn is not None else self.time_input(t.copy())
        c = np.array(c.detach().cpu().numpy() if isinstance(c, torch.Tensor) else c, dtype=np.float64)
        if c.shape != (n,):
            raise ValueError(f"model {self.name!r}: time_input returned shape {c.shape} for {n} times, expected ({n},)")
        return c

    def _where(self, t) -> str:
        t = np.asarray(t, dtype=np.float64)
        if t.ndim == 0 or np.ptp(t) == 0:
            return f"t = {float(t.flat[0]):.6g}"
        return f"t in [{float(t.min()):.6g}, {float(t.max()):.6g}]"

    def _net(self, x, t):
        """The network's output on x (numpy or torch) at t (one time, or one per row), checked, in x's kind."""
        n = x.shape[0]
        c = self._time_input(t, n)
        as_numpy = isinstance(x, np.ndarray)
        dtype = self.dtype or (torch.float64 if as_numpy else x.dtype)
        device = self.device or ("cpu" if as_numpy else x.device)
        tt = torch.as_tensor(c, dtype=dtype, device=device)
        if as_numpy:
            xin = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).to(device=device, dtype=dtype)
            grad = False
        else:
            grad = torch.is_grad_enabled() and x.requires_grad
            xin = x.to(device=device, dtype=dtype)
            xin = xin if grad else xin.detach()
        with torch.set_grad_enabled(grad):
            out = self.net(xin, tt)
        out = self._checked(out, xin, tuple(x.shape), t)
        if as_numpy:
            return out.detach().cpu().numpy().astype(np.float64)
        return out.to(device=x.device, dtype=x.dtype)

    def _checked(self, out, xin, shape: tuple, t):
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(out)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"model {self.name!r} at {self._where(t)}: the network returned a {type(out).__name__}, "
                             f"expected a tensor of shape {shape} (its {self.prediction} prediction)")
        if tuple(out.shape) != shape:
            raise ValueError(f"model {self.name!r} at {self._where(t)}: the network returned shape {tuple(out.shape)} "
                             f"for an input of shape {shape}; its {self.prediction} prediction must have the input's shape")
        finite = torch.isfinite(out)
        if not bool(finite.all()) and _in_range(xin):
            # From a tame input this is the network's fault. From a state beyond sqrt(max) of the network's
            # dtype (whose square, in a norm or a variance, overflows) it is a diverging run: the NaN goes
            # back to the solver and ex.sample reports the step.
            bad = int((~finite).sum())
            raise ValueError(f"model {self.name!r} at {self._where(t)}: the network returned NaN or inf in {bad} of "
                             f"{out.numel()} values for a finite input (max |x| = {float(xin.abs().max()):.3g})")
        return out

    # The four model methods.

    def denoise(self, x, t):
        """x0_hat from the network's prediction (the table in the module docstring)."""
        out = self._net(x, t)
        if self.prediction == "x0":
            return out
        if self.prediction == "eps":
            a, sg = self._coeffs(t, x)
            return (x - sg * out) / a
        if self.prediction == "v":
            a, sg = self._coeffs(t, x)
            return (a * x - sg * out) / (a * a + sg * sg)
        a, sg, da, ds = self._coeffs(t, x, derivatives=True)
        return (sg * out - ds * x) / (sg * da - a * ds)

    def eps(self, x, t):
        """eps_hat: out (eps); (x - alpha out) / sigma (x0); (sigma x + alpha out) / (alpha^2 + sigma^2) (v);
        (alpha out - alpha' x) / (alpha sigma' - sigma alpha') (velocity)."""
        out = self._net(x, t)
        if self.prediction == "eps":
            return out
        if self.prediction == "x0":
            a, sg = self._coeffs(t, x)
            return (x - a * out) / sg
        if self.prediction == "v":
            a, sg = self._coeffs(t, x)
            return (sg * x + a * out) / (a * a + sg * sg)
        a, sg, da, ds = self._coeffs(t, x, derivatives=True)
        return (a * out - da * x) / (a * ds - sg * da)

    def score(self, x, t):
        """grad log p_t(x) ~ -eps_hat / sigma."""
        _, sg = self._coeffs(t, x)
        return -self.eps(x, t) / sg

    def velocity(self, x, t):
        """dx/dt = alpha' x0_hat + sigma' eps_hat, both from one evaluation (the network's output itself
        for a velocity model)."""
        out = self._net(x, t)
        if self.prediction == "velocity":
            return out
        a, sg, da, ds = self._coeffs(t, x, derivatives=True)
        if self.prediction == "eps":
            return da * (x - sg * out) / a + ds * out
        if self.prediction == "x0":
            return da * out + ds * (x - a * out) / sg
        norm = a * a + sg * sg
        return da * (a * x - sg * out) / norm + ds * (sg * x + a * out) / norm

    def prior_sample(self, n: int, rng, t=None):
        """Starting points sigma(t) N(0, I) at t (default t_max): float64 numpy (n, D) for a model of
        vectors, a float32 torch tensor (n, C, H, W) for an image model."""
        from ..foundations.random import as_generator

        t = self.schedule.t_max if t is None else float(t)
        sigma = float(self.schedule.sigma(t))
        if self.image_shape is not None:
            from .image_models import prior_noise

            return prior_noise(n, self.image_shape, rng, sigma)
        if self.dim is None:
            raise ValueError(f"model {self.name!r} has no shape: pass dim=, target= or image_shape= to wrap()")
        return sigma * as_generator(rng).standard_normal((int(n), self.dim))


def _in_range(x) -> bool:
    """Every entry finite and its square representable in x's dtype (|x| <= 1.8e19 in float32)."""
    if not x.is_floating_point():
        return True
    limit = float(torch.finfo(x.dtype).max) ** 0.5
    return bool(torch.isfinite(x).all()) and (x.numel() == 0 or float(x.abs().max()) <= limit)


def _net_dtype_device(net):
    """The dtype and device of a module's first floating parameter or buffer (None, None without any)."""
    tensors = []
    if isinstance(net, torch.nn.Module):
        tensors = [p for p in net.parameters()] + [b for b in net.buffers()]
    for p in tensors:
        if p.is_floating_point():
            return p.dtype, p.device
    return None, None


def wrap(net, schedule, prediction: str, *, time_input="t", name: str | None = None, target=None, dim=None,
         image_shape=None, dataset=None, weights=None, dtype=None, device=None) -> WrappedModel:
    """`net(x, c)` as an explorer model: denoise, eps, score, velocity, prior_sample, .schedule.

    net: a torch module or any callable taking x (a tensor of x's shape) and its time input c (a 1-D
    tensor, one entry per row) and returning its prediction, a tensor of x's shape.
    schedule: a Schedule, or a name for ex.schedules.get; a checkpoint's table as
    ex.schedules.from_alphas_cumprod(abar) or ex.interpolants.tabulated(t, alpha, sigma).
    prediction: "eps", "x0", "v" (= alpha eps - sigma x0) or "velocity" (= dx/dt = alpha' x0 + sigma' eps
    in the schedule's time t); the conversions are in this module's docstring.
    time_input: what the network is fed for the schedule's time t: "t" (t itself), "index" (a table's
    timestep index: t on a from_alphas_cumprod schedule), "sigma", "log-sigma", "c-noise" (EDM's
    log(sigma) / 4), "lambda" (log(alpha / sigma)), or a callable c(t) on a float64 array of times
    returning one value each (e.g. lambda t: 999 * t for a score-SDE network trained on 999 t).
    A network whose time runs the other way (t = 0 at the noise, as in Lipman et al.'s flow matching)
    wraps as lambda x, c: -net(x, c) with time_input=lambda t: 1 - t under the schedule in explorer's
    orientation.
    name: how messages and the app name the model (default: the network's class name).
    target: the GaussianMixture it models, if there is one (then it also sets dim, and the app measures
    the model's samples against the exact answer). dim: D for vectors (N, D); image_shape: (C, H, W)
    for images (N, C, H, W); dataset: the data an image model was trained on ("digits", "shapes"), for
    the Images page's measures. weights: a path to load into net first (load_weights).
    dtype, device: what the network runs in (default: those of its first floating parameter; without
    one, float64 for NumPy input and x's own for torch input, on x's device)."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {list(PREDICTIONS)}, got {prediction!r}")
    if not callable(net):
        raise ValueError(f"net must be a torch module or a callable net(x, t_input), got {type(net).__name__}")
    schedule = _as_schedule(schedule)
    if isinstance(time_input, str):
        if time_input not in TIME_INPUTS:
            raise ValueError(f"time_input must be one of {list(TIME_INPUTS)} or a callable c(t), got {time_input!r}")
        if time_input == "index" and not isinstance(schedule, Discrete):
            raise ValueError("time_input='index' needs a table schedule (ex.schedules.from_alphas_cumprod), whose "
                             f"time t is the timestep index; got {schedule!r}: for a continuous schedule pass a "
                             "callable, e.g. time_input=lambda t: 999 * t")
    elif not callable(time_input):
        raise ValueError(f"time_input must be one of {list(TIME_INPUTS)} or a callable c(t), got {time_input!r}")
    if target is not None and not isinstance(target, GaussianMixture):
        raise ValueError(f"target must be a GaussianMixture or None, got {type(target).__name__}")
    if image_shape is not None:
        if target is not None or dim is not None:
            raise ValueError("image_shape is for image models: pass it without target= or dim=")
        shape = tuple(image_shape) if np.ndim(image_shape) == 1 else ()
        if len(shape) != 3 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in shape):
            raise ValueError(f"image_shape must be (C, H, W), three positive integers, got {image_shape!r}")
        image_shape = tuple(int(v) for v in shape)
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1):
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if target is not None:
        if dim is not None and int(dim) != target.dim:
            raise ValueError(f"dim = {dim} disagrees with the target's dimension {target.dim}")
        dim = target.dim
    if dataset is not None and image_shape is None:
        raise ValueError("dataset names the training data of an image model: pass image_shape= as well")
    if name is None:
        name = getattr(net, "__name__", None) or type(net).__name__
    if weights is not None:
        load_weights(net, weights)
    if isinstance(net, torch.nn.Module):
        net.eval()
    own_dtype, own_device = _net_dtype_device(net)
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype or None, got {dtype!r}")
    return WrappedModel(net, schedule, prediction, time_input, str(name), target, None if dim is None else int(dim),
                        image_shape, dataset, dtype or own_dtype, torch.device(device) if device else own_device)


def _as_schedule(schedule) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str):
        from ..foundations import schedules

        return schedules.get(schedule)
    raise ValueError(f"schedule must be a Schedule or a schedule name, got {type(schedule).__name__}")


def load_weights(net, path, strict: bool = True):
    """Load a state dict from `path` into the module `net` (in place; returns net in eval mode) with
    torch.load(path, weights_only=True): tensors and plain containers only, never pickled code. The
    file holds a state dict, or a dict with one under "state_dict" (the files explorer writes).
    Floating tensors are cast to the parameters' dtype. ValueError naming the file when it is missing,
    holds Python objects, is no torch file, or does not fit the network."""
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"net must be a torch.nn.Module to load weights into, got {type(net).__name__}")
    path = Path(path)
    label = f"weights file {str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{label}: no such file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise ValueError(f"{label} holds a pickled Python object ({found.group(1)}), not only tensors: it is "
                             "refused, since loading it would run code (torch.load with weights_only=True). Save "
                             "the network's state_dict instead: torch.save(net.state_dict(), path)") from err
        raise ValueError(f"{label} is not a torch weights file torch.load can read with weights_only=True "
                         f"({str(err).strip().splitlines()[-1][:200]})") from err
    except Exception as err:  # a truncated zip, a directory of the wrong kind, ...
        raise ValueError(f"{label} could not be read by torch.load: {type(err).__name__}: {err}") from err
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{label} holds no state dict (a dict of name -> tensor, or one under 'state_dict'); "
                         f"found {type(state).__name__}")
    try:
        net.load_state_dict(state, strict=strict)
    except RuntimeError as err:  # missing or unexpected keys, wrong shapes
        raise ValueError(f"{label} does not fit {type(net).__name__}: {err}") from err
    return net.eval()
