"""Learned models: the mixture MLPs and image U-Nets trained here, their datasets and trainers,
outside networks wrapped as models, and the model registry. Imports foundations only (torch on use).

The mixture MLPs' names (train, load, EpsMLP, torch_threads, ...) are reachable here as
explorer.learned.<name>; they load torch on first use."""

import importlib

_MLP = ("DDPM_BETAS", "PAPER_BETAS", "EpsMLP", "LearnedModel", "ResidualBlock", "TrainingProgress", "available",
        "cosine_lr", "ddpm_schedule", "load", "save", "timestep_embedding", "torch_threads", "train")


def __getattr__(name):
    if name in _MLP:
        return getattr(importlib.import_module(f"{__name__}.mlp"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
