"""The time axis of every figure over t: noise on the left, data on the right."""

from __future__ import annotations

import numpy as np

TIME_AXES = ("log-snr", "t", "step")


def time_axis(schedule, ts, kind: str = "log-snr"):
    """Positions of times on a plotted axis, and that axis' plotly layout.

    log-snr: x = lambda(t) = log(alpha / sigma), ticks labelled with round values of t, so that
    every schedule reads alike (equal steps in lambda look equal); t: x = t, reversed, on a log
    scale when the grid spans more than two decades (ve, edm); step: x = the fractional index
    on the grid ts (lambda interpolated between grid times).
    Returns (position(t) -> array, xaxis dict).
    """
    ts = np.asarray(ts, dtype=np.float64)
    t_hi, t_lo = float(ts[0]), float(ts[-1])
    if kind == "log-snr":
        ticks = _round_times(schedule, t_lo, t_hi)
        axis = dict(
            title=dict(text="t   (spaced by log-SNR λ = log α/σ)"),
            tickmode="array",
            tickvals=[float(schedule.lambda_(t)) for t in ticks],
            ticktext=[f"{t:.3g}" for t in ticks],
        )
        return (lambda t: np.asarray(schedule.lambda_(t), dtype=np.float64)), axis
    if kind == "t":
        if t_hi / t_lo > 100:
            lo, hi = np.log10(t_lo), np.log10(t_hi)
            return (lambda t: np.asarray(t, dtype=np.float64)), dict(
                title=dict(text="t (log scale)"), type="log", range=[hi, lo], autorange=False,
                dtick=log_dtick(hi - lo),
            )
        return (lambda t: np.asarray(t, dtype=np.float64)), dict(title=dict(text="t"), range=[t_hi, t_lo])
    if kind == "step":
        lam = np.asarray(schedule.lambda_(ts), dtype=np.float64)
        index = np.arange(len(ts), dtype=np.float64)

        def position(t):
            return np.interp(np.asarray(schedule.lambda_(t), dtype=np.float64), lam, index)

        return position, dict(title=dict(text="solver step"))
    raise ValueError(f"unknown time axis {kind!r}; choose from {list(TIME_AXES)}")


def log_dtick(decades: float):
    """Tick spacing for a log axis spanning `decades`: powers of ten only when there are
    enough of them, else 1-2-5 (plotly's "D2")."""
    return 1 if decades > 2.5 else "D2"


def _round_times(schedule, t_lo: float, t_hi: float, n_ticks: int = 7) -> list[float]:
    """The ends and a few round times (1, 2, 5 x 10^k, and 1 minus those) spread evenly in lambda."""
    decades = 10.0 ** np.arange(-6, 5)
    round_t = np.concatenate([decades, 2 * decades, 5 * decades])
    round_t = np.concatenate([round_t, 1.0 - round_t[round_t < 0.5]])
    candidates = [t for t in round_t if t_lo < t < t_hi]
    lam = {t: float(schedule.lambda_(t)) for t in [t_lo, t_hi, *candidates]}
    gap = abs(lam[t_lo] - lam[t_hi]) / n_ticks
    chosen = [t_hi, t_lo]
    for t in sorted(candidates, key=lambda t: abs(np.log10(t) - round(np.log10(t)))):  # powers of ten first
        if all(abs(lam[t] - lam[c]) >= gap for c in chosen):
            chosen.append(t)
    return sorted(chosen, reverse=True)
