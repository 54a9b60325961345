"""Image denoisers on (N, C, H, W) arrays: the exact empirical-optimal denoiser of a finite
training set, and the learned U-Nets shipped in data/ (digits, shapes).

Torch is imported only where a torch tensor or a learned model is involved, so `import explorer`
stays light.
"""

from __future__ import annotations

import math

import numpy as np

from ..foundations.analytic import DenoiserModel
from ..foundations.data_files import DATA_DIR
from ..foundations.random import as_generator
from ..foundations.schedules import Discrete, Schedule


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Discrete:
    """The cosine table of "Improved Denoising Diffusion Probabilistic Models" (Nichol & Dhariwal):
    abar(u) = f(u) / f(0), f(u) = cos^2((u/T + s) / (1 + s) pi/2); beta_i = min(1 - abar(i+1)/abar(i),
    max_beta), i = 0..T-1; the model's time t is the timestep index (Discrete)."""
    T = int(T)
    if T < 2:
        raise ValueError(f"T must be an integer >= 2, got {T!r}")
    u = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = np.minimum(1.0 - f[1:] / f[:-1], max_beta)
    return Discrete.from_betas(betas)


def schedule_from_config(cfg: dict) -> Discrete:
    """Rebuild a model's schedule from its recorded config {"kind": "cosine", T, s, max_beta}."""
    if cfg.get("kind") != "cosine":
        raise ValueError(f"unknown schedule kind {cfg.get('kind')!r} in the model's config")
    return cosine_schedule(cfg["T"], cfg["s"], cfg["max_beta"])


def prior_noise(n: int, image_shape, rng, sigma: float = 1.0, dtype=None):
    """sigma * N(0, I) of shape (n, *image_shape) as a float32 torch tensor, drawn from a numpy
    Generator (seed or Generator) or a torch.Generator."""
    import torch

    if isinstance(n, bool) or not float(n).is_integer() or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    shape = (int(n), *tuple(int(v) for v in image_shape))
    if isinstance(rng, torch.Generator):
        z = torch.randn(shape, generator=rng, dtype=torch.float32)
    else:
        z = torch.from_numpy(as_generator(rng).standard_normal(shape).astype(np.float32))
    return (sigma * z).to(dtype or torch.float32)


class EmpiricalModel(DenoiserModel):
    """The exact denoiser of the empirical distribution (1/N) sum_i delta(x0 - y_i) of a finite
    training set: E[x0 | x_t] = sum_i w_i y_i, w = softmax_i(-|x_t - alpha y_i|^2 / (2 sigma^2)).
    The optimum of the training loss on that set: it reproduces training images only ("perfect
    score, zero generalisation"). Works on numpy arrays and torch tensors (N, C, H, W) or (N, D);
    computed in float64 with a log-sum-exp, returned in the input's dtype (and device)."""

    def __init__(self, images, schedule: Schedule, name: str = "empirical", dataset: str | None = None):
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        y = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
        if y.ndim < 2 or len(y) < 1:
            raise ValueError(f"images must have shape (N, C, H, W) or (N, D) with N >= 1, got {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("images contain NaN or inf")
        self._images = np.array(y, dtype=np.float64)
        self._flat = self._images.reshape(len(y), -1)
        self._sq = np.einsum("nd,nd->n", self._flat, self._flat)
        self._torch = None
        self.schedule = schedule
        self.name = name
        self.dataset = dataset
        self.image_shape = tuple(y.shape[1:])
        self.config = {"kind": "empirical", "n_train": len(y), "dataset": dataset}
        self.history = []

    def __repr__(self) -> str:
        return f"EmpiricalModel(N={len(self._flat)}, image_shape={self.image_shape}, {self.schedule!r})"

    def train_images(self) -> np.ndarray:
        """The training set (N, *image_shape) as float32 numpy."""
        return self._images.astype(np.float32)

    def _alpha_sigma(self, t, n: int):
        a = np.broadcast_to(np.asarray(self.schedule.alpha(t), dtype=np.float64), (n,))
        s = np.broadcast_to(np.asarray(self.schedule.sigma(t), dtype=np.float64), (n,))
        return a, s

    def _check_x(self, x):
        if tuple(x.shape[1:]) != self.image_shape and tuple(x.shape[1:]) != (self._flat.shape[1],):
            raise ValueError(f"x must have shape (N, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")

    def log_weights(self, x, t):
        """log w_i(x_t): the log posterior probability that x_t came from training image i, (N_x, N_train)."""
        self._check_x(x)
        if isinstance(x, np.ndarray):
            return self._log_weights_np(np.asarray(x, np.float64).reshape(len(x), -1), t)
        import torch

        xf = x.detach().to("cpu", torch.float64).reshape(x.shape[0], -1)
        return torch.as_tensor(self._log_weights_np(xf.numpy(), t)).to(device=x.device, dtype=x.dtype)

    def _log_weights_np(self, xf, t):
        a, s = self._alpha_sigma(t, len(xf))
        # -|x - a y|^2 / (2 s^2) up to a per-row constant: (a x.y - a^2 |y|^2 / 2) / s^2.
        d2 = (a[:, None] * (xf @ self._flat.T) - 0.5 * (a * a)[:, None] * self._sq[None, :])
        zero = s == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            logits = d2 / (s * s)[:, None]
        if zero.any():  # sigma = 0: the posterior is the nearest training image (to x / alpha)
            best = np.argmax(d2[zero], axis=1)
            logits[zero] = -np.inf
            logits[np.flatnonzero(zero), best] = 0.0
        return logits - _logsumexp(logits)[:, None]

    def denoise(self, x, t):
        """E[x0 | x_t = x] = sum_i softmax_i(-|x - alpha y_i|^2 / (2 sigma^2)) y_i, exact."""
        self._check_x(x)
        if isinstance(x, np.ndarray):
            xf = np.asarray(x, np.float64).reshape(len(x), -1)
            out = np.exp(self._log_weights_np(xf, t)) @ self._flat
            return out.reshape(x.shape).astype(np.result_type(x.dtype, np.float32), copy=False)
        import torch

        xf = x.detach().to("cpu", torch.float64).reshape(x.shape[0], -1).numpy()
        out = np.exp(self._log_weights_np(xf, t)) @ self._flat
        return torch.from_numpy(out).reshape(x.shape).to(device=x.device, dtype=x.dtype)

    def nearest(self, x):
        """Index of the training image nearest (Euclidean) to each x and the distance, (N,), (N,)."""
        self._check_x(x)
        xf = (x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, np.float64))
        xf = xf.reshape(len(xf), -1)
        d2 = np.einsum("nd,nd->n", xf, xf)[:, None] - 2 * xf @ self._flat.T + self._sq[None, :]
        idx = np.argmin(d2, axis=1)
        return idx, np.sqrt(np.maximum(d2[np.arange(len(xf)), idx], 0.0))

    def prior_sample(self, n: int, rng, t=None):
        """Starting points sigma(t) N(0, I) at t (default t_max), a float32 torch tensor (n, C, H, W)."""
        t = self.schedule.t_max if t is None else float(t)
        return prior_noise(n, self.image_shape, rng, float(self.schedule.sigma(t)))


def _logsumexp(z):
    m = np.max(z, axis=1)
    m = np.where(np.isfinite(m), m, 0.0)
    return m + np.log(np.sum(np.exp(z - m[:, None]), axis=1))


# Learned U-Nets (explorer/learned/unet.py, trained by explorer/learned/image_training.py, shipped in data/).

PRETRAINED = ("digits", "shapes")


def training_set(data: dict) -> np.ndarray:
    """The training images a model's config names: {"dataset": "digits"} or {"dataset": "shapes", "n", "seed", "panel"}."""
    from . import datasets

    kind = data.get("dataset")
    if kind == "digits":
        return datasets.digits()[0]
    if kind == "shapes":
        return datasets.shapes(data["n"], seed=data["seed"], panel=data["panel"])[0]
    raise ValueError(f"dataset must be 'digits' or 'shapes', got {kind!r}")


class UNetModel(DenoiserModel):
    """A trained U-Net seen through the four model methods. It predicts v = alpha eps - sigma x0
    (or eps), so x0_hat = alpha x_t - sigma v_hat and eps_hat = sigma x_t + alpha v_hat (VP:
    alpha^2 + sigma^2 = 1). Torch in gives torch out (same dtype and device); numpy in gives
    float64 numpy out. The network runs in float32 on CPU, at continuous t (the table's index)."""

    def __init__(self, net, schedule: Discrete, config: dict, history=None):
        self.net = net.eval()
        self.schedule = schedule
        self.config = dict(config)
        self.history = list(history or [])
        self.name = self.config["name"]
        self.dataset = self.config["data"]["dataset"]
        self.image_shape = tuple(self.config["image_shape"])
        self.prediction = self.config["prediction"]
        self._train_images = None

    def __repr__(self) -> str:
        return (f"UNetModel(name={self.name!r}, image_shape={self.image_shape}, prediction={self.prediction!r}, "
                f"steps={len(self.history)})")

    def train_images(self) -> np.ndarray:
        """The training set (N, C, H, W) float32 in [-1, 1], rebuilt from the config."""
        if self._train_images is None:
            self._train_images = training_set(self.config["data"])
        return self._train_images.copy()

    def _check_x(self, x):
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must have shape (N, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")

    def _net_out(self, x, t):
        """The network's raw output (v or eps) on x (numpy or torch) at t (scalar or per particle)."""
        import torch

        self._check_x(x)
        n = x.shape[0]
        tt = torch.as_tensor(np.broadcast_to(np.asarray(t, dtype=np.float32), (n,)).copy())
        if isinstance(x, np.ndarray):
            with torch.no_grad():
                return self.net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), tt).numpy().astype(
                    np.result_type(x.dtype, np.float32))
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            xin = x.to("cpu", torch.float32)
            out = self.net(xin if x.requires_grad else xin.detach(), tt)
        return out.to(device=x.device, dtype=x.dtype)

    def denoise(self, x, t):
        """x0_hat = alpha x - sigma v_hat (v-prediction) or (x - sigma eps_hat) / alpha (eps-prediction)."""
        a, s = self._coeffs(t, x)
        out = self._net_out(x, t)
        return a * x - s * out if self.prediction == "v" else (x - s * out) / a

    def eps(self, x, t):
        """eps_hat = sigma x + alpha v_hat (v-prediction) or the network's output."""
        a, s = self._coeffs(t, x)
        out = self._net_out(x, t)
        return s * x + a * out if self.prediction == "v" else out

    def prior_sample(self, n: int, rng, t=None):
        """Starting points sigma(t) N(0, I) at t (default t_max), a float32 torch tensor (n, C, H, W)."""
        t = self.schedule.t_max if t is None else float(t)
        return prior_noise(n, self.image_shape, rng, float(self.schedule.sigma(t)))


def load(name_or_path) -> UNetModel:
    """A shipped image model by name ("digits", "shapes") or a .pt path written by
    explorer.learned.image_training.save (torch.load with weights_only=True)."""
    import torch
    from pathlib import Path

    from .unet import UNet

    path = Path(str(name_or_path))
    if str(name_or_path) in PRETRAINED:
        path = DATA_DIR / f"{name_or_path}.pt"
    if not path.exists():
        raise ValueError(f"no image model {name_or_path!r}: not one of {list(PRETRAINED)} nor an existing .pt path")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cfg = blob["config"]
    net = UNet(**cfg["architecture"])
    net.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                         for k, v in blob["state_dict"].items()})
    history = blob.get("history")
    return UNetModel(net, schedule_from_config(cfg["schedule"]), cfg, [] if history is None else history.tolist())
