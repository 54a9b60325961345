"""Time grids: where a sampler evaluates the model."""

from __future__ import annotations

import numpy as np

from .schedules import Schedule

SPACINGS = ("uniform-lambda", "uniform-t", "karras", "quadratic")


def timesteps(
    s: Schedule, n_steps=None, spacing: str = "uniform-lambda", t_start=None, t_end=None, rho: float = 7.0,
    *, times=None, sigmas=None,
) -> np.ndarray:
    """A strictly decreasing grid of n_steps + 1 times from t_start to t_end.

    uniform-lambda: equal steps in the half log-SNR lambda (the exponential integrators' variable);
    uniform-t: equal steps in t;
    karras: sigma/alpha = e^{-lambda} spaced as (s_max^{1/rho} + i/n (s_min^{1/rho} - s_max^{1/rho}))^rho;
    quadratic: t_end + (t_start - t_end) (1 - i/n)^2, dense near the data (DDIM).

    A custom grid instead: times=[t_0 > t_1 > ... > t_n] (checked and returned as float64; an
    array passed as n_steps is taken as times), or sigmas=[...] in k-diffusion's convention
    sigma/alpha = e^{-lambda}, mapped to t = t_of_lambda(-log sigma) (see grid_from_sigmas).
    """
    if n_steps is not None and np.ndim(n_steps) > 0 and times is None:
        times, n_steps = n_steps, None  # an array in n_steps' place is a grid of times
    if times is not None or sigmas is not None:
        custom = "times" if times is not None else "sigmas"
        clash = [k for k, v in (("n_steps", n_steps), ("t_start", t_start), ("t_end", t_end)) if v is not None]
        clash += ["sigmas"] * (times is not None and sigmas is not None) + ["spacing"] * (spacing != "uniform-lambda")
        if clash:
            raise ValueError(f"a custom grid ({custom}) fixes every time itself: it takes no {', '.join(clash)}")
        return check_grid(s, times) if times is not None else grid_from_sigmas(s, sigmas)
    if n_steps is None:
        raise ValueError("n_steps is required (or pass a custom grid as times= or sigmas=)")
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


def check_grid(s: Schedule, times, name: str = "times") -> np.ndarray:
    """times as a float64 grid, checked: 1-D, at least 2 entries, finite, strictly decreasing,
    inside [s.t_lo, s.t_hi] with finite lambda at every time. ValueError naming `name` otherwise."""
    try:
        ts = np.array(times, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got {times!r}") from None
    if ts.ndim != 1 or len(ts) < 2:
        raise ValueError(f"{name} must be a 1-D grid of at least 2 times, got shape {ts.shape}")
    if not np.all(np.isfinite(ts)):
        raise ValueError(f"{name} contains NaN or inf")
    bad = np.flatnonzero(np.diff(ts) >= 0)
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{name} must be strictly decreasing (sampling runs from noise toward data): "
            f"{name}[{i}] = {ts[i]} <= {name}[{i + 1}] = {ts[i + 1]}"
        )
    lo, hi = getattr(s, "t_lo", -np.inf), getattr(s, "t_hi", np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.asarray(s.lambda_(ts), dtype=np.float64)
    outside = (ts < lo) | (ts > hi) | ~np.isfinite(lam)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{name}[{i}] = {ts[i]} leaves the schedule's range [{lo}, {hi}] where lambda is finite"
        )
    return ts


def reaches_data(s: Schedule) -> bool:
    """Whether the schedule's noise vanishes at its data end: sigma(t_lo) = 0 < alpha(t_lo), so a
    k-diffusion grid for it may end with sigma = 0."""
    lo = getattr(s, "t_lo", None)
    if lo is None or not np.isfinite(lo):
        return False
    with np.errstate(all="ignore"):
        return float(s.sigma(lo)) == 0.0 and float(s.alpha(lo)) > 0.0


def grid_from_sigmas(s: Schedule, sigmas, trailing_zero: str = "drop") -> np.ndarray:
    """The times of a k-diffusion sigma grid under schedule s: t_i = t_of_lambda(-log sigma_i), where
    k-diffusion's sigma is our sigma/alpha = e^{-lambda} (the two coincide when alpha = 1).

    A final sigma = 0 is k-diffusion's last step onto the data (x <- x0_hat(x, sigma_{n-1})); no time
    of ours has lambda = inf, so it is only accepted where the schedule reaches sigma = 0
    (reaches_data) and trailing_zero="drop" removes it: the grid ends at the last positive sigma, and
    the equivalent of that last step is model.denoise(traj.sample, ts[-1]).
    trailing_zero="error" refuses it.
    """
    if trailing_zero not in ("drop", "error"):
        raise ValueError(f"trailing_zero must be 'drop' or 'error', got {trailing_zero!r}")
    try:
        sg = np.array(sigmas, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"sigmas must be a 1-D sequence of numbers, got {sigmas!r}") from None
    if sg.ndim != 1:
        raise ValueError(f"sigmas must be 1-D, got shape {sg.shape}")
    if len(sg) and sg[-1] == 0.0:
        if trailing_zero == "error":
            raise ValueError("sigmas ends with 0 (k-diffusion's final step to the data); trailing_zero='error' refuses it")
        if not reaches_data(s):
            raise ValueError(
                f"sigmas ends with 0, but schedule {getattr(s, 'name', s)!r} never reaches sigma = 0 "
                f"(sigma(t_lo={s.t_lo}) = {float(s.sigma(s.t_lo)):.4g}): no time has that noise level"
            )
        sg = sg[:-1]
    if not np.all(np.isfinite(sg)) or np.any(sg <= 0):
        raise ValueError("sigmas must be positive and finite (a 0 is allowed only as the last entry)")
    if len(sg) < 2:
        raise ValueError(f"sigmas must hold at least 2 positive values, got {len(sg)}")
    if np.any(np.diff(sg) >= 0):
        raise ValueError("sigmas must be strictly decreasing")
    lam = -np.log(sg)
    with np.errstate(all="ignore"):
        ts = np.asarray(s.t_of_lambda(lam), dtype=np.float64)
        # a numeric inverse clamps to [t_lo, t_hi]: a sigma the schedule never reaches shows here
        miss = ~(np.abs(np.asarray(s.lambda_(ts), dtype=np.float64) - lam) <= 1e-8 * np.maximum(1.0, np.abs(lam)))
    if miss.any():
        i = int(np.flatnonzero(miss)[0])
        with np.errstate(all="ignore"):
            reach = np.exp(-np.asarray(s.lambda_(np.array([s.t_lo, s.t_hi])), dtype=np.float64))
        raise ValueError(
            f"sigmas[{i}] = {sg[i]:.6g} is a noise level schedule {getattr(s, 'name', s)!r} never reaches "
            f"(sigma/alpha runs from {reach[0]:.6g} to {reach[1]:.6g} on [t_lo, t_hi])"
        )
    return check_grid(s, ts, name="times of sigmas")


def sigmas_of(s: Schedule, ts, trailing_zero: bool = False) -> np.ndarray:
    """k-diffusion's sigma grid for our times: sigma_i = sigma(t_i) / alpha(t_i) = e^{-lambda(t_i)}.
    trailing_zero=True appends k-diffusion's final 0 (a last step onto the data that our grid
    does not take), only where the schedule reaches sigma = 0."""
    ts = check_grid(s, ts, name="ts")
    out = np.exp(-np.asarray(s.lambda_(ts), dtype=np.float64))
    if trailing_zero:
        if not reaches_data(s):
            raise ValueError(f"trailing_zero: schedule {getattr(s, 'name', s)!r} never reaches sigma = 0")
        out = np.append(out, 0.0)
    return out
