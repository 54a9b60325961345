"""A noisy classifier p_psi(y | x_t, t): the small time-conditioned network classifier guidance trains
(ADM's `classifier_train.py`, which minority guidance reuses): x0 and its label from the data, t drawn
at random, x_t = alpha x0 + sigma eps, cross-entropy on the label. Here an MLP on low-dimensional x
with the sinusoidal time embedding of the mixture MLPs (explorer/learned/mlp.py), fed the log-SNR
lambda(t) so that one network serves any schedule.

Torch is imported here; analyses import this module only when a classifier is trained or loaded.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..foundations.random import as_generator
from .mlp import ResidualBlock, TrainingProgress, timestep_embedding, torch_threads

# The network sees lambda scaled into roughly [0, 100], the range of t the embedding was made for.
LAMBDA_OFFSET, LAMBDA_SCALE = 12.0, 4.0


class NoisyClassifier(nn.Module):
    """logits(x_t, lambda): input layer, n_blocks residual blocks of `width` with the time embedding,
    LayerNorm and an output layer of n_classes logits."""

    def __init__(self, dim: int, n_classes: int, width: int = 64, n_blocks: int = 2):
        super().__init__()
        self.width = width
        self.inp = nn.Linear(dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.02))
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(n_blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_classes))

    def forward(self, x, lam):
        temb = self.time(timestep_embedding((lam + LAMBDA_OFFSET) * LAMBDA_SCALE, self.width))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)


class Classifier:
    """A trained NoisyClassifier seen through numpy: probs(x, t) (N, n_classes) and grad_log_prob(x, t, c),
    grad_x log p_psi(c | x_t) by autograd, both float64 out. .schedule maps t to lambda."""

    def __init__(self, net: NoisyClassifier, schedule, config: dict, history=()):
        self.net, self.schedule, self.config, self.history = net.eval(), schedule, config, list(history)
        self.n_classes = int(config["n_classes"])

    def _inputs(self, x, t):
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        lam = torch.full((len(x),), float(self.schedule.lambda_(t)), dtype=torch.float32)
        return x, lam

    def probs(self, x, t) -> np.ndarray:
        x, lam = self._inputs(x, t)
        with torch.no_grad(), torch_threads(1):
            return torch.softmax(self.net(x, lam), dim=1).double().numpy()

    def grad_log_prob(self, x, t, label: int) -> np.ndarray:
        """(N, D) grad_x log p_psi(label | x_t = x)."""
        x, lam = self._inputs(x, t)
        with torch_threads(1), torch.enable_grad():
            x.requires_grad_(True)
            logp = torch.log_softmax(self.net(x, lam), dim=1)[:, int(label)]
            (grad,) = torch.autograd.grad(logp.sum(), x)
        return grad.double().numpy()


def train(x0, labels, schedule, n_classes: int, steps: int = 3000, batch_size: int = 512, lr: float = 3e-3,
          width: int = 64, n_blocks: int = 2, seed: int = 0, progress=False) -> Classifier:
    """Cross-entropy training on noised data (ADM's classifier_train): at every step a batch of (x0, y)
    from the fixed training set, t with lambda(t) uniform over the schedule's range, x_t = alpha x0 +
    sigma eps. Adam with a cosine-decayed learning rate. Same seed, one thread: bit-identical weights.
    progress: True for a tqdm bar, or a callable progress(step, loss)."""
    x0 = np.asarray(x0, dtype=np.float64)
    labels = np.asarray(labels)
    if x0.ndim != 2 or labels.shape != (len(x0),):
        raise ValueError(f"x0 must be (N, D) and labels (N,), got {x0.shape} and {labels.shape}")
    steps, batch_size = int(steps), int(batch_size)
    rng = as_generator(seed)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = NoisyClassifier(x0.shape[1], int(n_classes), width, n_blocks)
    lam_hi, lam_lo = float(schedule.lambda_(schedule.t_min)), float(schedule.lambda_(schedule.t_max))
    data = torch.as_tensor(x0, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history, report = [], TrainingProgress(progress, steps, "training the noisy classifier")
    started = time.perf_counter()
    with torch_threads(1):
        net.train()
        for step in range(steps):
            idx = torch.randint(len(data), (batch_size,), generator=gen)
            lam = lam_lo + (lam_hi - lam_lo) * rng.random(batch_size)
            t = schedule.t_of_lambda(lam)
            a = torch.as_tensor(schedule.alpha(t), dtype=torch.float32)[:, None]
            s = torch.as_tensor(schedule.sigma(t), dtype=torch.float32)[:, None]
            x_t = a * data[idx] + s * torch.randn((batch_size, data.shape[1]), generator=gen)
            loss = nn.functional.cross_entropy(net(x_t, torch.as_tensor(lam, dtype=torch.float32)), y[idx])
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / max(1, steps - 1))) + 1e-2 * lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(loss.item())
            report(step, history)
    report.close()
    config = {"n_classes": int(n_classes), "dim": int(x0.shape[1]), "width": width, "n_blocks": n_blocks,
              "steps": steps, "batch_size": batch_size, "lr": lr, "seed": int(seed), "n_train": len(x0),
              "seconds": round(time.perf_counter() - started, 1),
              "final_loss": float(np.mean(history[-min(100, len(history)):]))}
    return Classifier(net, schedule, config, history)


def save(classifier: Classifier, path, extra: dict | None = None) -> Path:
    """{"state_dict", "config", "history"} (float32 tensors and plain Python: loads with weights_only=True);
    `extra` is stored in config["extra"] (what the labels meant, to check the file against the code)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {**classifier.config, "extra": extra or {}}
    torch.save({"state_dict": classifier.net.state_dict(), "config": config,
                "history": torch.tensor(classifier.history, dtype=torch.float32)}, path)
    return path


def load(path, schedule) -> Classifier:
    """A classifier written by save(), seen under `schedule` (only its lambda(t) is used)."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    cfg = blob["config"]
    net = NoisyClassifier(cfg["dim"], cfg["n_classes"], cfg["width"], cfg["n_blocks"])
    net.load_state_dict(blob["state_dict"])
    return Classifier(net, schedule, cfg, blob["history"].tolist())
