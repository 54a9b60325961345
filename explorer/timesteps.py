"""Time grids: where a sampler evaluates the model."""

from __future__ import annotations

import numpy as np

from .schedules import Schedule

SPACINGS = ("uniform-lambda", "uniform-t", "karras", "quadratic")


def timesteps(
    s: Schedule, n_steps: int, spacing: str = "uniform-lambda", t_start=None, t_end=None, rho: float = 7.0
) -> np.ndarray:
    """A strictly decreasing grid of n_steps + 1 times from t_start to t_end.

    uniform-lambda: equal steps in the half log-SNR lambda (the exponential integrators' variable);
    uniform-t: equal steps in t;
    karras: sigma/alpha = e^{-lambda} spaced as (s_max^{1/rho} + i/n (s_min^{1/rho} - s_max^{1/rho}))^rho;
    quadratic: t_end + (t_start - t_end) (1 - i/n)^2, dense near the data (DDIM).
    """
    if isinstance(n_steps, bool) or not float(n_steps).is_integer() or int(n_steps) < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    n = int(n_steps)
    t0 = s.t_max if t_start is None else float(t_start)
    t1 = s.t_min if t_end is None else float(t_end)
    if not (np.isfinite(t0) and np.isfinite(t1)):
        raise ValueError("t_start and t_end must be finite")
    if not t0 > t1:
        raise ValueError(f"t_start must be greater than t_end (time runs toward the data), got {t0} <= {t1}")
    lo, hi = getattr(s, "t_lo", -np.inf), getattr(s, "t_hi", np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        finite = np.isfinite(s.lambda_(t1)) and np.isfinite(s.lambda_(t0))
    if t1 < lo or t0 > hi or not finite:
        raise ValueError(f"[t_end, t_start] = [{t1}, {t0}] leaves the schedule's range [{lo}, {hi}] (lambda must be finite)")

    u = np.arange(n + 1) / n
    if spacing == "uniform-t":
        ts = t0 + u * (t1 - t0)
    elif spacing == "uniform-lambda":
        l0, l1 = float(s.lambda_(t0)), float(s.lambda_(t1))
        ts = s.t_of_lambda(l0 + u * (l1 - l0))
    elif spacing == "karras":
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        s0, s1 = np.exp(-float(s.lambda_(t0))), np.exp(-float(s.lambda_(t1)))
        ratio = (s0 ** (1 / rho) + u * (s1 ** (1 / rho) - s0 ** (1 / rho))) ** rho
        ts = s.t_of_lambda(-np.log(ratio))
    elif spacing == "quadratic":
        ts = t1 + (t0 - t1) * (1.0 - u) ** 2
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose from {list(SPACINGS)}")
    ts = np.asarray(ts, dtype=np.float64)
    ts[0], ts[-1] = t0, t1  # exact ends, whatever the round trip through lambda did
    if not np.all(np.diff(ts) < 0):
        raise ValueError(
            f"{n} steps of {spacing!r} spacing on [{t1}, {t0}] are too fine to be distinct in float64"
        )
    return ts
