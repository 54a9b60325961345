"""What every solver needs: the schedule's coefficients on the grid and the drift."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def grid(schedule, ts) -> SimpleNamespace:
    """alpha, sigma and lambda at the grid times, as Python floats (work for numpy and torch states)."""
    ts = np.asarray(ts, dtype=np.float64)
    return SimpleNamespace(
        t=ts.tolist(),
        alpha=np.asarray(schedule.alpha(ts), dtype=np.float64).tolist(),
        sigma=np.asarray(schedule.sigma(ts), dtype=np.float64).tolist(),
        lam=np.asarray(schedule.lambda_(ts), dtype=np.float64).tolist(),
    )


def pf_drift(schedule, x, denoised, t: float):
    """Probability-flow drift dx/dt = alpha'(t) x0_hat + sigma'(t) (x - alpha x0_hat) / sigma."""
    a, sg = float(schedule.alpha(t)), float(schedule.sigma(t))
    da, ds = float(schedule.d_alpha(t)), float(schedule.d_sigma(t))
    return da * denoised + ds * (x - a * denoised) / sg


def combine(coefficients, arrays):
    """sum_j c_j a_j for Python-float coefficients (numpy arrays or torch tensors alike)."""
    out = coefficients[0] * arrays[0]
    for c, a in zip(coefficients[1:], arrays[1:]):
        out = out + c * a
    return out
