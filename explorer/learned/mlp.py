"""Learned denoisers: a small time-conditioned MLP trained with DDPM's eps-loss on draws
from a Gaussian mixture (the toy set-up of "Understanding Hallucinations in Diffusion
Models through Mode Interpolation"), so the learned and the exact denoiser can be compared.

Torch is imported here, so `explorer` imports this module lazily (models.train/save/load).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..foundations.analytic import DenoiserModel
from ..foundations.data_files import DATA_DIR
from ..foundations.mixture import GaussianMixture
from ..foundations.schedules import Discrete

# DDPM's linear betas (Ho et al.): beta_1 = 1e-4 ... beta_T = 0.02, T = 1000.
DDPM_BETAS = {"beta_start": 1e-4, "beta_end": 0.02, "T": 1000}
# The mode-interpolation paper's toy runs (its official script's defaults): linspace(1e-3, 0.2, 1000),
# 10x DDPM's: abar falls to 1e-6 by t = 363, so sampling spends its last ~40 steps on the modes.
PAPER_BETAS = {"beta_start": 1e-3, "beta_end": 0.2, "T": 1000}


def ddpm_schedule(beta_start=1e-4, beta_end=0.02, T=1000) -> Discrete:
    """The Discrete schedule of betas = linspace(beta_start, beta_end, T): t = timestep index."""
    return Discrete.from_betas(np.linspace(beta_start, beta_end, int(T)))


def timestep_embedding(t, dim: int):
    """DDPM's sinusoidal embedding of (continuous) t: [sin(t w_k), cos(t w_k)], w_k = 10000^(-k/(dim/2-1))."""
    half = dim // 2
    w = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
    arg = t.to(torch.float32)[:, None] * w[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class ResidualBlock(nn.Module):
    """Pre-norm residual MLP block with the time embedding added after the first layer."""

    def __init__(self, width: int):
        super().__init__()
        self.norm1, self.fc1 = nn.LayerNorm(width), nn.Linear(width, width, bias=False)
        self.norm2, self.fc2 = nn.LayerNorm(width), nn.Linear(width, width, bias=False)
        self.time = nn.Linear(width, width)
        self.act = nn.LeakyReLU(0.02)

    def forward(self, h, temb):
        out = self.fc1(self.act(self.norm1(h))) + self.time(temb)
        return h + self.fc2(self.act(self.norm2(out)))


class EpsMLP(nn.Module):
    """eps_theta(x, t): input layer, n_blocks residual blocks of `width`, output layer (the paper's toy MLP)."""

    def __init__(self, dim: int, width: int = 128, n_blocks: int = 3):
        super().__init__()
        self.width = width
        self.inp = nn.Linear(dim, width, bias=False)
        self.time = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.02))
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(n_blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))

    def forward(self, x, t):
        # Rows at one time (every sampling step) share one embedding: it and each block's projection of it are
        # computed on one row and broadcast, so 4 of the 10 matrix products are done once (1.6x faster on 1,000 rows).
        shared = t.ndim == 1 and len(t) > 1 and bool((t == t[0]).all())
        temb = self.time(timestep_embedding(t[:1] if shared else t, self.width))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)


class LearnedModel(DenoiserModel):
    """A trained eps-network seen through the four model methods. NumPy float64 in gives float64
    out; torch in gives torch out (same dtype and device). The network runs in float32 and takes
    continuous t in [0, T-1]; x0_hat = (x - sigma eps_hat) / alpha is formed in the input's precision."""

    def __init__(self, net: EpsMLP, schedule: Discrete, target: GaussianMixture, name: str = "learned",
                 history=None, config=None):
        self.net = net.eval()
        self.schedule = schedule
        self.target = target
        self.name = name
        self.history = list(history or [])
        self.config = dict(config or {})

    @property
    def dim(self) -> int:
        return self.target.dim

    def __repr__(self) -> str:
        return f"LearnedModel(name={self.name!r}, dim={self.dim}, steps={len(self.history)})"

    CHUNK = 4096  # rows per forward: activations stay in cache (25% faster at 20,000 rows, the same numbers)

    @staticmethod
    def _times(t, n: int):
        """One time per particle, as the network was trained (and as ex.models.wrap calls a network)."""
        return torch.as_tensor(np.broadcast_to(np.asarray(t, dtype=np.float32), (n,)).copy())

    def _net_eps(self, x, t):
        """Run the network on x (numpy or torch) at t (scalar or per particle)."""
        if isinstance(x, np.ndarray):
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            tt = self._times(t, len(x))
            with torch.no_grad():
                out = [self.net(xt[i:i + self.CHUNK], tt[i:i + self.CHUNK])
                       for i in range(0, max(len(xt), 1), self.CHUNK)]
            return (torch.cat(out) if len(out) > 1 else out[0]).numpy().astype(np.float64)
        tt = self._times(t, x.shape[0])
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            out = self.net(x.detach().to("cpu", torch.float32) if not x.requires_grad else x.to("cpu", torch.float32), tt)
        return out.to(device=x.device, dtype=x.dtype)

    def eps(self, x, t):
        """eps_theta(x_t, t), the network's output."""
        return self._net_eps(x, t)

    def denoise(self, x, t):
        """x0_hat = (x - sigma eps_theta) / alpha."""
        a, sg = self._coeffs(t, x)
        return (x - sg * self._net_eps(x, t)) / a

    def score(self, x, t):
        """grad log p_t(x) ~ -eps_theta / sigma."""
        _, sg = self._coeffs(t, x)
        return -self._net_eps(x, t) / sg

    def velocity(self, x, t):
        """Probability-flow drift alpha'(t) x0_hat + sigma'(t) eps_hat."""
        a, sg, da, ds = self._coeffs(t, x, derivatives=True)
        e = self._net_eps(x, t)
        return da * (x - sg * e) / a + ds * e

    def prior_sample(self, n: int, rng, t=None):
        """Starting points sigma(t) N(0, I) at t (default t_max)."""
        from ..foundations.random import as_generator

        t = self.schedule.t_max if t is None else float(t)
        return float(self.schedule.sigma(t)) * as_generator(rng).standard_normal((int(n), self.dim))


class TrainingProgress:
    """What a training loop reports after each step: a tqdm bar showing the mean loss of the last
    `window` steps (progress=True), nothing (False), or a call progress(step, loss)."""

    def __init__(self, progress, total: int, desc: str, initial: int = 0, window: int = 50):
        self.callback = progress if callable(progress) else None
        self.total, self.window, self.bar = int(total), int(window), None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=initial, desc=desc, unit="step")

    def __call__(self, step: int, history: list) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if step % 50 == 0 or step == self.total - 1:
                self.bar.set_postfix(loss=f"{np.mean(history[-self.window:]):.4f}")
        elif self.callback is not None:
            self.callback(step, history[-1])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _target_config(target: GaussianMixture) -> dict:
    return {"means": target.means.tolist(), "covs": target.covs.tolist(), "weights": target.weights.tolist()}


def train(target: GaussianMixture, steps: int = 5000, batch_size: int = 2000, lr: float = 1e-3, seed: int = 0,
          n_train: int | None = 20_000, width: int = 128, n_blocks: int = 3, progress=True, name: str | None = None,
          beta_start: float = 1e-4, beta_end: float = 0.02, T: int = 1000, lr_final: float | None = None) -> LearnedModel:
    """DDPM training (Ho et al., Algorithm 1): x0 from the data, t ~ U{0..T-1}, eps ~ N(0, I),
    minimise || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2 with Adam.

    n_train: size of a fixed training set drawn once from the target (the paper trains on a fixed
    set: 20,000 points for the 1D mixture, 100,000 for the 2D grid); None draws a fresh batch
    from the target every step. progress: True for a tqdm bar, False for none, or a callable
    progress(step, loss). beta_start, beta_end, T: the linear betas (DDPM_BETAS by default; the
    shipped models use PAPER_BETAS), recorded in config["schedule"] so load() rebuilds the schedule.
    lr_final: None keeps the learning rate constant (the paper's); a number decays it from lr to
    lr_final along a half cosine over the steps (the last step takes lr_final).
    Same seed, same thread count: bit-identical weights."""
    if not isinstance(target, GaussianMixture):
        raise ValueError(f"target must be a GaussianMixture, got {type(target).__name__}")
    steps, batch_size = int(steps), int(batch_size)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
    if lr_final is not None and not 0 <= lr_final <= lr:
        raise ValueError(f"lr_final must be in [0, lr = {lr}], got {lr_final}")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):  # initialise from the seed without touching global torch state
        torch.manual_seed(int(seed))
        net = EpsMLP(target.dim, width, n_blocks)
    schedule = ddpm_schedule(beta_start, beta_end, T)
    abar = torch.as_tensor(schedule.alphas_cumprod, dtype=torch.float32)
    data = None if n_train is None else torch.as_tensor(target.sample(int(n_train), rng), dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history = []
    report = TrainingProgress(progress, steps, f"training {name or 'model'}", window=50)
    started = time.perf_counter()
    net.train()
    for step in range(steps):
        # Algorithm 1: draw x0, t and eps.
        if data is None:
            x0 = torch.as_tensor(target.sample(batch_size, rng), dtype=torch.float32)
        else:
            x0 = data[torch.randint(len(data), (batch_size,), generator=gen)]
        t = torch.randint(int(T), (batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = abar[t].sqrt()[:, None]
        x_t = a * x0 + (1 - abar[t]).sqrt()[:, None] * eps
        # Gradient step on || eps - eps_theta(x_t, t) ||^2.
        loss = ((net(x_t, t.to(torch.float32)) - eps) ** 2).mean()
        if lr_final is not None:
            opt.param_groups[0]["lr"] = cosine_lr(step, steps, lr, lr_final)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(loss.item())
        report(step, history)
    report.close()
    net.eval()
    seconds = time.perf_counter() - started
    final = float(np.mean(history[-min(100, len(history)):]))
    config = {
        "name": name or "learned",
        "architecture": {"kind": "EpsMLP", "dim": target.dim, "width": width, "n_blocks": n_blocks},
        "target": _target_config(target),
        "schedule": {"beta_start": beta_start, "beta_end": beta_end, "T": int(T)},
        "training": {"steps": steps, "batch_size": batch_size, "lr": lr, "lr_final": lr_final, "seed": int(seed), "n_train": n_train,
                     "threads": torch.get_num_threads(), "seconds": round(seconds, 1)},
        "final_loss": final,
    }
    return LearnedModel(net, schedule, target, config["name"], history, config)


@contextmanager
def torch_threads(n: int):
    """Run the block with torch on n intra-op threads, then restore the count. Small nets on a busy
    machine, or called from a fresh thread per request as Streamlit does, run far faster on one
    (measured: 64 digits at 20 NFE, 2 s on 1 thread against 70 s on 2 while other jobs held both
    cores; 1,000 mixture samples over 364 DDPM steps in the app, 8.1 s on 2 threads against 4.2 s on 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cosine_lr(step: int, steps: int, lr: float, lr_final: float) -> float:
    """The learning rate at `step` of `steps` on a half cosine from lr (step 0) to lr_final (the last step)."""
    frac = step / max(1, steps - 1)
    return lr_final + 0.5 * (lr - lr_final) * (1 + math.cos(math.pi * frac))


def save(model, path, dtype=torch.float16) -> Path:
    """Write a learned model (the mixture MLPs here, the image U-Nets of explorer.learned.image_training) as
    {"state_dict", "config", "history"}: tensors and plain Python only, so it loads with
    weights_only=True. Weights are stored in `dtype` (float16 halves the file; the network still
    runs in float32 after loading, on the rounded weights)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.net.state_dict().items()}
    config = {**model.config, "stored_dtype": str(dtype).replace("torch.", "")}
    torch.save({"state_dict": state, "config": config,
                "history": torch.tensor(model.history, dtype=torch.float32)}, path)
    return path


def available() -> list[str]:
    """Names of the pretrained models shipped in data/."""
    return sorted(p.stem for p in DATA_DIR.glob("*.pt"))


def load(name_or_path) -> LearnedModel:
    """A pretrained model by name (data/<name>.pt) or from a path written by save()."""
    path = Path(str(name_or_path))
    if not (path.suffix == ".pt" and path.exists()):
        names = available()
        if str(name_or_path) not in names:
            raise ValueError(f"no pretrained model {name_or_path!r}; available: {names}")
        path = DATA_DIR / f"{name_or_path}.pt"
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cfg = blob["config"]
    arch = cfg["architecture"]
    net = EpsMLP(arch["dim"], arch["width"], arch["n_blocks"])
    net.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                         for k, v in blob["state_dict"].items()})
    tc = cfg["target"]
    target = GaussianMixture(tc["means"], tc["covs"], tc["weights"])
    sc = cfg["schedule"]
    history = blob.get("history")
    history = [] if history is None else history.tolist()
    return LearnedModel(net, ddpm_schedule(sc["beta_start"], sc["beta_end"], sc["T"]), target, cfg["name"],
                        history, cfg)
