"""Time-Shift Sampler: evaluate the model at a nearby time whose noise level fits the state.

Exposure bias: a sampler's state x_i at t_i need not look like a draw from p_{t_i} (the
network saw only true noisy data in training), but it may fit a nearby time better. At
each step above the cutoff, the Time-Shift Sampler measures the variance of the state,
picks within a window around t_i the time tau whose expected variance
alpha(tau)^2 data_var + sigma(tau)^2 is closest to it, and takes the base solver's step
from (x_i, tau) to t_{i+1}. data_var = 0 is the paper's rule (the state's variance is
matched with the noise variance 1 - alpha_bar_tau of a VP schedule). The cutoff counts
steps: shifting stops when the last `cutoff` fraction of the steps remains (on the paper's
uniform grids of DDPM steps this is its cutoff time; counted in steps it means the same
on any schedule and spacing). The first step never shifts (x_T is exact prior noise).

Differences from the paper, forced by the model interface (one time per call): the paper
picks one time per image from that image's pixel variance; here one time serves the
whole batch, from the variance across particles (statistic="batch", the default, which
is what a cloud of low-dimensional particles has), or from the per-sample variance over
features averaged over the batch (statistic="sample", the paper's statistic for images).
The window is continuous: 21 candidate times spaced evenly within
[t_i - window (t_i - t_{i+1}), t_i + window (t_i - t_{i+1})], clipped to the grid; ties
keep t_i. The base is a single-step rule (DDIM, Euler or Heun), so the shifted step needs
no history from other times.
"""

from __future__ import annotations

import numpy as np

from .basic import _ddim_step
from .common import grid, pf_drift
from .registry import Option, solver

TIME_SHIFT = "Alleviating Exposure Bias in Diffusion Models through Sampling with Shifted Time Steps"
CANDIDATES = 10  # candidate times on each side of t_i


def state_variance(x, statistic: str = "batch") -> float:
    """The variance the shift is fitted to: across particles per feature ("batch") or over
    each sample's features ("sample"), averaged."""
    flat = x.reshape(x.shape[0], -1)
    if statistic == "batch" and flat.shape[0] > 1:
        v = flat.var(axis=0) if isinstance(flat, np.ndarray) else flat.var(dim=0, correction=0)
    else:
        v = flat.var(axis=1) if isinstance(flat, np.ndarray) else flat.var(dim=1, correction=0)
    return float(v.mean())


def shifted_time(schedule, variance: float, t: float, lo: float, hi: float, data_var: float = 0.0) -> float:
    """The time tau in [lo, hi] (on an even grid of candidates through t) whose expected variance
    alpha(tau)^2 data_var + sigma(tau)^2 is closest to the measured one; t itself on ties."""
    below = t - (t - lo) * np.arange(CANDIDATES, 0, -1) / CANDIDATES
    above = t + (hi - t) * np.arange(1, CANDIDATES + 1) / CANDIDATES
    taus = np.concatenate([[t], below, above])  # t first: argmin keeps it on ties
    expected = schedule.alpha(taus) ** 2 * data_var + schedule.sigma(taus) ** 2
    return float(taus[int(np.argmin(np.abs(expected - variance)))])


@solver(
    "time-shift", order=lambda o: {"heun": 2}.get(o["base"], 1) if o["window"] == 0 or o["cutoff"] == 1 else 0, nfe_per_step=None, reference=TIME_SHIFT,
    summary="Time-Shift Sampler: above the cutoff, each step starts from the nearby time whose noise level "
    "best fits the state's variance, then takes a DDIM, Euler or Heun step to the next grid time. "
    "Order 0: a shift of up to window x step per step moves the state off the ODE path by O(1) in total "
    "(deliberately: it follows the state's noise level, not the grid); with window 0 it is its base.",
    options=[
        Option("base", "choice", "ddim", "the single-step rule taken from the shifted time", choices=("ddim", "euler", "heun")),
        Option("window", "float", 0.2, "half-width of the search, as a fraction of the current step (0: no shift)", 0.0, 0.9),
        Option("cutoff", "float", 0.5, "shift only during the steps before this fraction of the run remains (1: never)", 0.0, 1.0),
        Option("data_var", "float", 0.0, "per-feature data variance in the fit alpha^2 data_var + sigma^2 (0: the paper's rule)", 0.0, 100.0),
        Option("statistic", "choice", "batch", "variance across particles, or over each sample's features", choices=("batch", "sample")),
    ],
)
def time_shift(model, x, ts, rng, record, base="ddim", window=0.2, cutoff=0.5, data_var=0.0, statistic="batch"):
    s = model.schedule
    g = grid(s, ts)
    n = len(ts) - 1
    for i in range(n):
        t_i, t_next, h = ts[i], ts[i + 1], ts[i] - ts[i + 1]
        tau = t_i
        if i > 0 and window > 0 and n - i > cutoff * n:
            # Shift the time: the nearby time whose noise level fits the state's variance.
            lo, hi = t_i - window * h, min(t_i + window * h, ts[0])
            tau = shifted_time(s, state_variance(x, statistic), t_i, lo, hi, data_var)
        d = model.denoise(x, tau)
        if base == "ddim":
            # DDIM step from (x, tau) to t_{i+1}.
            pair = g if tau == t_i else grid(s, [tau, t_next])
            x_next = _ddim_step(pair, i if tau == t_i else 0, x, d, 0.0, None)
        else:
            # Euler step from (x, tau) to t_{i+1}.
            v = pf_drift(s, x, d, tau)
            x_next = x + (t_next - tau) * v
            if base == "heun":
                # Apply 2nd order correction.
                d_next = model.denoise(x_next, t_next)
                x_next = x + (t_next - tau) * 0.5 * (v + pf_drift(s, x_next, d_next, t_next))
        x = record(i, x_next, d)
