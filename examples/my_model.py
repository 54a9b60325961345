"""An example model plug-in: two torch networks wrapped into explorer models and registered.

- my-mlp-1d: the shipped 1D eps-MLP, loaded into a fresh network from data/gmm-1d-3modes.pt with
  torch.load(weights_only=True); it predicts eps on its DDPM table and is fed the timestep index.
- my-flow-2d: a hand-written module returning the exact flow-matching velocity of the ring of 8
  modes under x_t = (1 - t) x0 + t eps: a perfectly trained flow model, no training needed.

Each factory runs when the model is first chosen, not when the plug-in loads. Load it with
ex.plugins.load("examples/my_model.py") or EXPLORER_PLUGINS=examples/my_model.py; then
ex.models.get("my-flow-2d") is the model, and the Trajectories page offers both.
"""

import numpy as np
import torch

import explorer as ex
from explorer.foundations.data_files import DATA_DIR
from explorer.learned import EpsMLP


def shipped_mlp():
    net = ex.models.load_weights(EpsMLP(dim=1, width=128, n_blocks=3), DATA_DIR / "gmm-1d-3modes.pt")
    abar = np.cumprod(1 - np.linspace(1e-3, 0.2, 1000))  # the betas it was trained on (data/PRETRAINED.md)
    # Start at t = 363, where alpha < 1e-3 and x_t is pure noise: above it x0 = (x - sigma eps) / alpha
    # divides the network's error by an alpha down to 1e-23.
    schedule = ex.schedules.from_alphas_cumprod(abar, t_max=363)
    return ex.models.wrap(net, schedule, "eps", time_input="index", target=ex.targets.get("gmm-1d-3modes"))


class MixtureFlow(torch.nn.Module):
    """u(x, t) = E[eps - x0 | x_t = x] = (x - E[x0 | x_t]) / t for a mixture of isotropic Gaussians."""

    def __init__(self, target):
        super().__init__()
        self.register_buffer("means", torch.as_tensor(target.means))  # (K, D), float64: the model runs in float64
        self.register_buffer("var", torch.as_tensor(target.covs[:, 0, 0]))  # (K,) isotropic variances
        self.register_buffer("log_w", torch.as_tensor(np.log(target.weights)))

    def forward(self, x, t):
        a, s = (1 - t)[:, None], t[:, None]  # alpha, sigma: (N, 1)
        var = a * a * self.var + s * s  # (N, K): the variance of x_t within mode k
        diff = x[:, None, :] - a[:, :, None] * self.means  # (N, K, D)
        logits = self.log_w - 0.5 * x.shape[1] * torch.log(var) - 0.5 * (diff**2).sum(-1) / var
        x0_k = self.means + (a * self.var / var)[..., None] * diff  # E[x0 | x_t, mode k]
        x0 = (torch.softmax(logits, dim=1)[..., None] * x0_k).sum(1)
        return (x - x0) / s


def exact_flow():
    ring = ex.targets.get("gmm-2d-ring8")
    return ex.models.wrap(MixtureFlow(ring), "rectified-flow", "velocity", time_input="t", target=ring)


ex.models.register("my-mlp-1d", shipped_mlp, kind="mixture",
                   summary="The shipped 1D eps-MLP re-wrapped from its weights file: DDPM table, timestep index.")
ex.models.register("my-flow-2d", exact_flow, kind="mixture",
                   summary="A hand-written module: the exact flow-matching velocity of the ring of 8 (rectified flow).")
