"""Explicit randomness: every draw takes a seed or a numpy Generator."""

from __future__ import annotations

import numbers

import numpy as np


def as_generator(rng) -> np.random.Generator:
    """A numpy Generator from a Generator or an integer seed (None is refused)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(
        f"rng must be an integer seed or a numpy.random.Generator, got {rng!r}: "
        "every random draw in explorer is seeded explicitly"
    )


def standard_normal_like(x, rng):
    """N(0, I) noise of x's shape and kind (numpy array or torch tensor)."""
    if isinstance(x, np.ndarray):
        return as_generator(rng).standard_normal(x.shape)
    import torch  # torch models only

    if isinstance(rng, torch.Generator):
        return torch.randn(x.shape, generator=rng, dtype=x.dtype, device=rng.device).to(x.device)
    z = as_generator(rng).standard_normal(tuple(x.shape))
    return torch.as_tensor(z, dtype=x.dtype, device=x.device)
