"""Reflow in 2D with a small network (Liu, Gong and Liu, "Flow Straight and Fast", Algorithm 1, one reflow).

The 1-rectified flow is exact here (the mixture's probability-flow ODE on the rectified-flow schedule); its
flow map T1 couples noise z with data x0 = T1(z) (ex.reference, rk45). The 2-rectified flow is a velocity
network v(x_t, t) fitted by least squares to the straight lines' velocity z - x0 at x_t = (1 - t) x0 + t z,
t ~ U(0, 1) (the paper's objective on the coupled pairs). In 2D lines cross, so the best v is the conditional
mean E[z - x0 | x_t] and the 2-rectified flow is only nearly straight; a network adds its own error. The model
is a DenoiserModel on the rectified-flow schedule: denoise(x, t) = x - t v(x, t), so ex.sample runs it.

Torch is imported only when a network is built or trained (a loaded one runs in numpy). The shipped weights (data/reflow-ring8.npz)
come from `OMP_NUM_THREADS=1 python -m explorer.analyses.reflow_mlp`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..foundations.analytic import AnalyticModel, DenoiserModel
from ..foundations.data_files import DATA_DIR
from ..foundations.random import as_generator
from ..foundations.schedules import get as get_schedule
from ..foundations.targets import get as get_target
from ..solvers.sampling import reference

WEIGHTS = "reflow-ring8.npz"
DISTILLED = "distilled-ring8.npz"  # the one-step distillation of the same coupling
TARGET = "gmm-2d-ring8"
WIDTH, DEPTH, N_FREQ = 128, 3, 8


def coupling(target, n: int, seed=0):
    """(z, T1(z)): n noise draws and the 1-rectified flow's exact ODE map of them (rk45, tolerance 1e-7)."""
    z = as_generator(seed).standard_normal((int(n), target.dim))
    traj = reference(AnalyticModel(target, get_schedule("rectified-flow")), z, np.array([1 - 1e-9, 1e-9]),
                     rtol=1e-7, atol=1e-7)
    return z, np.asarray(traj.x[-1])


def _features(x, t):
    import torch

    k = torch.arange(1, N_FREQ + 1, dtype=x.dtype)
    return torch.cat([x, torch.sin(math.pi * k * t[:, None]), torch.cos(math.pi * k * t[:, None])], dim=1)


def _network(dim: int):
    import torch
    from torch import nn

    layers, width_in = [], dim + 2 * N_FREQ
    for _ in range(DEPTH):
        layers += [nn.Linear(width_in, WIDTH), nn.SiLU()]
        width_in = WIDTH
    layers.append(nn.Linear(WIDTH, dim))
    return nn.Sequential(*layers).to(torch.float64)


def _velocity_numpy(layers, x, t: float) -> np.ndarray:
    """The network's forward pass in numpy (float64): what the torch network computes, to round-off."""
    k = np.arange(1, N_FREQ + 1, dtype=np.float64)
    arg = np.broadcast_to(math.pi * k * float(t), (len(x), N_FREQ))
    h = np.concatenate([x, np.sin(arg), np.cos(arg)], axis=1)
    with np.errstate(over="ignore"):
        for i, (w, b) in enumerate(layers):
            h = h @ w.T + b
            if i < len(layers) - 1:
                h = h / (1.0 + np.exp(-h))  # SiLU
    return h


class ReflowMLP(DenoiserModel):
    """A velocity network on the rectified-flow schedule: denoise(x, t) = x - t v(x, t).

    net: the torch network (as train makes it), or its layers [(weight, bias), ...] as float64 numpy arrays
    (as load reads them: sampling a shipped network then needs no torch)."""

    def __init__(self, net, dim: int):
        self.net, self.dim = net, int(dim)
        self.schedule = get_schedule("rectified-flow")

    def velocity(self, x, t):
        x = np.asarray(x, dtype=np.float64)
        if isinstance(self.net, list):
            return _velocity_numpy(self.net, x, t)
        import torch

        with torch.no_grad():
            xt = torch.from_numpy(x)
            return self.net(_features(xt, torch.full((len(x),), float(t), dtype=torch.float64))).numpy()

    def denoise(self, x, t):
        return np.asarray(x, dtype=np.float64) - float(t) * self.velocity(x, t)


def train(z, x0, steps: int = 3000, batch: int = 1024, lr: float = 2e-3, seed=0, progress=None,
          one_step: bool = False) -> ReflowMLP:
    """Fit v to the straight lines' velocity z - x0 at x_t = (1 - t) x0 + t z (Adam, cosine-decayed rate).

    one_step=True trains at t = 1 only: the network then maps z to x0 in one Euler step, z - v(z, 1), and the
    loss is the paper's one-step distillation objective E||x0 - f(z)||^2 (what a distilled one-step model or a
    consistency model learns of the flow map; its errors are what one step costs a network, not the flow).
    progress: a callable(step, steps, loss) or True for a tqdm bar."""
    import torch

    z, x0 = np.asarray(z, dtype=np.float64), np.asarray(x0, dtype=np.float64)
    if z.shape != x0.shape or z.ndim != 2:
        raise ValueError(f"z and x0 must be paired (N, D) arrays, got {z.shape} and {x0.shape}")
    rng = as_generator(seed)
    torch.manual_seed(int(rng.integers(2 ** 31)))
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    net = _network(z.shape[1])
    Z, X = torch.from_numpy(z), torch.from_numpy(x0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, int(steps), eta_min=0.02 * lr)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(steps), desc="one-step distillation" if one_step else "2-rectified flow")
    for step in range(int(steps)):
        idx = torch.randint(len(Z), (int(batch),), generator=gen)
        t = torch.ones(int(batch), dtype=torch.float64) if one_step else torch.rand(int(batch), generator=gen,
                                                                                           dtype=torch.float64)
        xt = (1 - t[:, None]) * X[idx] + t[:, None] * Z[idx]
        loss = ((net(_features(xt, t)) - (Z[idx] - X[idx])) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
        elif callable(progress):
            progress(step + 1, int(steps), float(loss.detach()))
    if bar is not None:
        bar.close()
    return ReflowMLP(net, z.shape[1])


def save(model: ReflowMLP, path) -> Path:
    """The network's weights as float32 arrays in an .npz (no pickle)."""
    params = ([a for layer in model.net for a in layer] if isinstance(model.net, list)
              else [p.detach().numpy() for p in model.net.parameters()])
    arrays = {f"w{i}": np.asarray(p).astype(np.float32) for i, p in enumerate(params)}
    np.savez_compressed(path, dim=np.array(model.dim), **arrays)
    return Path(path)


def load(path=None, distilled: bool = False, torch: bool = False) -> ReflowMLP:
    """The shipped 2-rectified flow of gmm-2d-ring8, or with distilled=True its one-step distillation (sample it
    on the grid [1, 0]); or the .npz at path. The network runs in numpy (no torch import); torch=True loads it
    into the torch network instead (the same numbers to round-off: to train it further)."""
    path = DATA_DIR / (DISTILLED if distilled else WEIGHTS) if path is None else path
    with np.load(path, allow_pickle=False) as f:
        dim = int(f["dim"])
        params = [f[f"w{i}"].astype(np.float64) for i in range(2 * (DEPTH + 1))]
    if not torch:
        return ReflowMLP([(params[i], params[i + 1]) for i in range(0, len(params), 2)], dim)
    import torch as _torch

    net = _network(dim)
    with _torch.no_grad():
        for p, value in zip(net.parameters(), params, strict=True):
            p.copy_(_torch.from_numpy(value))
    return ReflowMLP(net, dim)


def make_weights(out_dir=None, n: int = 20000, steps: int = 3000, progress=True) -> list[Path]:
    """Couple n noise draws by the exact 1-rectified flow of gmm-2d-ring8, fit the 2-rectified flow and the one-step
    distillation on the same coupling, save both."""
    z, x0 = coupling(get_target(TARGET), n, seed=0)
    folder = Path(DATA_DIR if out_dir is None else out_dir)
    return [save(train(z, x0, steps=steps, seed=0, progress=progress), folder / WEIGHTS),
            save(train(z, x0, steps=steps, seed=0, progress=progress, one_step=True), folder / DISTILLED)]


if __name__ == "__main__":  # python -m explorer.analyses.reflow_mlp [out_dir]: remake the shipped weights
    import sys

    print(make_weights(sys.argv[1] if len(sys.argv) > 1 else None))
