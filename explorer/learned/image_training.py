"""Training the image U-Nets: DDPM's loss (Ho et al., Algorithm 1) in v-parameterisation
("Progressive Distillation for Fast Sampling of Diffusion Models", Salimans & Ho) on the cosine
table, with Adam and an exponential moving average of the weights; seeded by one torch.Generator
and resumable from a checkpoint to the same weights as an uninterrupted run."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from .image_models import UNetModel, schedule_from_config, training_set
from .mlp import TrainingProgress, save  # noqa: F401  (save: the same file layout for both kinds of model)
from .unet import UNet, n_parameters

# Presets: the data and network of each shipped model (CPU-sized; see data/PRETRAINED.md).
PRESETS = {
    "digits": {"data": {"dataset": "digits"},
               "architecture": {"in_channels": 1, "channels": [32, 64], "blocks": 1, "attention": True, "patch": 1}},
    "shapes": {"data": {"dataset": "shapes", "n": 5000, "seed": 0, "panel": 16},
               "architecture": {"in_channels": 1, "channels": [32, 64, 64], "blocks": 1, "attention": True,
                                "patch": 2}},
}
# What a resumed run must share with its checkpoint for the continuation to be the same run.
_RUN_KEYS = ("data", "architecture", "schedule", "prediction", "optim", "seed")


def _config(dataset, batch_size, lr, warmup, ema_decay, seed, name, architecture=None, data=None):
    if dataset not in PRESETS:
        raise ValueError(f"dataset must be one of {list(PRESETS)}, got {dataset!r}")
    preset = copy.deepcopy(PRESETS[dataset])
    return {
        "name": name or dataset,
        "data": {**preset["data"], **(data or {})},
        "architecture": {**preset["architecture"], **(architecture or {})},
        "schedule": {"kind": "cosine", "T": 1000, "s": 0.008, "max_beta": 0.999},
        "prediction": "v",
        "optim": {"batch_size": int(batch_size), "lr": float(lr), "warmup": int(warmup), "ema_decay": float(ema_decay),
                  "grad_clip": 1.0},
        "seed": int(seed),
    }


def _ema_update(ema, net, decay):
    with torch.no_grad():
        pe, p = list(ema.parameters()), list(net.parameters())
        torch._foreach_mul_(pe, decay)
        torch._foreach_add_(pe, p, alpha=1.0 - decay)


def train(dataset: str = "digits", steps: int = 8000, batch_size: int = 128, lr: float = 1e-3, warmup: int = 200,
          ema_decay: float = 0.999, seed: int = 0, name: str | None = None, architecture: dict | None = None,
          data: dict | None = None, resume=None, checkpoint=None, checkpoint_every: int = 1000,
          progress=True) -> UNetModel:
    """Algorithm 1 with v-targets: x0 from the training set, t ~ U[0, T-1] (continuous, the table
    interpolated as the Discrete schedule does), eps ~ N(0, I), x_t = alpha x0 + sigma eps,
    minimise || v - v_theta(x_t, t) ||^2, v = alpha eps - sigma x0. Adam (lr warmed up linearly
    over `warmup` steps, gradients clipped at norm 1), EMA of the weights (decay min(ema_decay,
    (1+k)/(10+k))); the returned model carries the EMA weights.

    resume: a checkpoint path to continue from (same data, network, optimiser and seed: then the
    result equals the uninterrupted run's, bit for bit on the same thread count); steps is the
    total count. checkpoint: where to write {weights, EMA, optimiser, generator state, history}
    every checkpoint_every steps and at the end (None: no checkpoint). progress: True for a
    tqdm bar, False for none, or a callable progress(step, loss)."""
    steps = int(steps)
    if steps < 1 or int(batch_size) < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
    if not lr > 0 or not 0 <= ema_decay < 1:
        raise ValueError(f"lr must be positive and ema_decay in [0, 1), got {lr}, {ema_decay}")
    config = _config(dataset, batch_size, lr, warmup, ema_decay, seed, name, architecture, data)
    images = torch.from_numpy(training_set(config["data"]))
    config["image_shape"] = list(images.shape[1:])
    schedule = schedule_from_config(config["schedule"])
    T = len(schedule.alphas_cumprod)

    gen = torch.Generator().manual_seed(config["seed"])
    with torch.random.fork_rng(devices=[]):  # initialise from the seed without touching global torch state
        torch.manual_seed(config["seed"])
        net = UNet(**config["architecture"])
    ema = copy.deepcopy(net)
    opt = torch.optim.Adam(net.parameters(), lr=lr, foreach=True)
    history, start_step, seconds_before, cpu_before = [], 0, 0.0, 0.0
    if resume is not None:
        blob = torch.load(resume, map_location="cpu", weights_only=True)
        old = blob["config"]
        differ = [k for k in _RUN_KEYS if old.get(k) != config[k]]
        if differ:
            raise ValueError(f"resume: checkpoint {resume} was trained with different {', '.join(differ)}")
        net.load_state_dict(blob["state_dict"])
        ema.load_state_dict(blob["ema"])
        opt.load_state_dict(blob["optimizer"])
        gen.set_state(blob["generator"])
        history = blob["history"].tolist()
        start_step = int(blob["step"])
        seconds_before = float(old.get("training", {}).get("seconds", 0.0))
        cpu_before = float(old.get("training", {}).get("cpu_seconds", 0.0))
        if start_step > steps:
            raise ValueError(f"steps ({steps}) is below the checkpoint's step count ({start_step})")

    def write_checkpoint(step, seconds, cpu):
        cfg = {**config, "training": {"steps": step, "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
                                      "cpu_seconds": round(cpu, 1)}}
        path = Path(checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": net.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                    "generator": gen.get_state(), "step": step, "config": cfg,
                    "history": torch.tensor(history, dtype=torch.float32)}, path)

    report = TrainingProgress(progress, steps, f"training {config['name']}", initial=start_step, window=100)
    started, cpu_started = time.perf_counter(), time.process_time()
    net.train()
    for step in range(start_step, steps):
        # Algorithm 1: draw x0, t and eps.
        x0 = images[torch.randint(len(images), (int(batch_size),), generator=gen)]
        t = torch.rand(int(batch_size), generator=gen, dtype=torch.float64) * (T - 1)
        eps = torch.randn(x0.shape, generator=gen)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        a = torch.from_numpy(schedule.alpha(t.numpy())).to(torch.float32).reshape(shape)
        s = torch.from_numpy(schedule.sigma(t.numpy())).to(torch.float32).reshape(shape)
        x_t = a * x0 + s * eps
        # Gradient step on || v - v_theta(x_t, t) ||^2.
        loss = ((net(x_t, t.to(torch.float32)) - (a * eps - s * x0)) ** 2).mean()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / max(1, warmup))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), config["optim"]["grad_clip"])
        opt.step()
        _ema_update(ema, net, min(ema_decay, (1 + step) / (10 + step)))
        history.append(loss.item())
        report(step, history)
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            write_checkpoint(step + 1, seconds_before + time.perf_counter() - started,
                             cpu_before + time.process_time() - cpu_started)
    report.close()
    seconds = seconds_before + time.perf_counter() - started
    cpu = cpu_before + time.process_time() - cpu_started
    if checkpoint is not None:
        write_checkpoint(steps, seconds, cpu)
    config["training"] = {"steps": steps, "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
                          "cpu_seconds": round(cpu, 1), "resumed_from": start_step or None}
    config["parameters"] = n_parameters(net)
    config["final_loss"] = float(np.mean(history[-min(200, len(history)):]))
    return UNetModel(ema.eval(), schedule, config, history)


def model_from_checkpoint(path) -> UNetModel:
    """The model (EMA weights) a checkpoint holds: the same as `train(..., steps=<its step>)` returns."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    config = dict(blob["config"])
    net = UNet(**config["architecture"])
    net.load_state_dict(blob["ema"])
    history = blob["history"].tolist()
    config["parameters"] = n_parameters(net)
    config["final_loss"] = float(np.mean(history[-min(200, len(history)):]))
    return UNetModel(net, schedule_from_config(config["schedule"]), config, history)
