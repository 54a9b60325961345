"""Schedules figures: alpha, sigma and lambda side by side, the conversion map between two
schedules, one set of particles under both (linked at equal lambda), drift magnitude along a
path, error against NFE under original, converted and optimised grids, and a grid's export text.

Pure functions from schedules, trajectories and experiment records to plotly figures.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..foundations.conversion import convert_time, state_scale
from . import style
from .time_axis import log_dtick
from .trajectories import _f32, _np, _polylines, _spread_indices

COLORS = [style.SAMPLE_COLOR, "#d95f02", "#1b9e77", "#7570b3", "#e7298a"]  # schedule A, B, lazy, ...
HIGHLIGHT = "#111111"


def color(k: int) -> str:
    return COLORS[k % len(COLORS)]


def _span(schedules, n: int):
    """Each schedule's own sampling interval [t_min, t_max], sampled densely in lambda (so both
    ends are resolved on any axis)."""
    out = []
    for s in schedules:
        lam = np.linspace(float(s.lambda_(s.t_max)), float(s.lambda_(s.t_min)), n)
        t = np.asarray(s.t_of_lambda(lam), dtype=np.float64)
        t[0], t[-1] = s.t_max, s.t_min
        out.append(t)
    return out


def _log_t(schedules, log_t) -> bool:
    """Auto: a log time axis when the schedules live on different scales of time (one's t_max more
    than ten times another's, as EDM's 80 against a VP schedule's 1), linear otherwise."""
    if log_t is not None:
        return bool(log_t)
    highs = [s.t_max for s in schedules]
    return min(s.t_min for s in schedules) > 0 and max(highs) / min(highs) > 10


def _t_axis(schedules, log_t: bool) -> dict:
    """Shared x-axis over t, noise on the left (reversed), as the other figures read."""
    lo = min(s.t_min for s in schedules)
    hi = max(s.t_max for s in schedules)
    if log_t:
        return dict(type="log", range=[np.log10(hi), np.log10(lo)], autorange=False,
                    dtick=log_dtick(np.log10(hi / lo)))
    return dict(range=[hi, lo], autorange=False)


def curves(schedules: dict, log_t: bool | None = None, n: int = 400, title: str | None = None,
           height: int = 520) -> go.Figure:
    """alpha(t), sigma(t) and lambda(t) = log(alpha / sigma) of each schedule (label -> Schedule)
    over its own sampling interval, on one shared t axis (log when the times span decades)."""
    if not schedules:
        raise ValueError("schedules: give at least one schedule")
    labels, ss = list(schedules), list(schedules.values())
    log_t = _log_t(ss, log_t)
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07,
                        subplot_titles=("α(t)  signal scale", "σ(t)  noise scale", "λ(t) = log α/σ  (half log-SNR)"))
    sigma_max = 1.0
    for k, (label, s, t) in enumerate(zip(labels, ss, _span(ss, n))):
        a, sg, lam = s.alpha(t), s.sigma(t), s.lambda_(t)
        sigma_max = max(sigma_max, float(np.max(sg)))
        for col, y, name in ((1, a, "α"), (2, sg, "σ"), (3, lam, "λ")):
            fig.add_trace(go.Scatter(
                x=t, y=y, mode="lines", name=label, legendgroup=label, showlegend=col == 1,
                line=dict(color=color(k), width=2.4, dash="solid" if k % 2 == 0 else "dash"),
                hovertemplate=f"{label}<br>t=%{{x:.4g}}<br>{name}=%{{y:.4g}}<extra></extra>",
            ), row=1, col=col)
    layout = style.base_layout(title or "The schedules: signal, noise and log-SNR", height)
    layout["margin"].update(l=55, r=20, t=95, b=55)
    layout["legend"].update(y=1.1)
    if sigma_max > 10:
        layout["yaxis2"] = dict(type="log")  # sigma's panel
    return style.set_layout(fig, layout, xaxes=dict(title=dict(text="t  (noise → data)"), **_t_axis(ss, log_t)))


def _reaches(b, lam) -> np.ndarray:
    """Where schedule b reaches the log-SNR values lam: lambda_b(t_hi) <= lam <= lambda_b(t_lo)."""
    with np.errstate(divide="ignore"):
        lam_lo, lam_hi = float(b.lambda_(b.t_hi)), float(b.lambda_(b.t_lo))
    return (lam >= lam_lo) & (lam <= lam_hi)


def conversion_arrays(a, b, n: int = 300) -> dict:
    """The map from schedule a's time to schedule b's at equal log-SNR over a's sampling interval
    (ex.conversion.convert_time and state_scale): t' = lambda_b^{-1}(lambda_a(t)) and the scale
    alpha_b(t') / alpha_a(t) that carries x_t to x'_{t'}. Where b never reaches a's lambda
    (`inside` False) both are NaN."""
    t = _span([a], n)[0]
    lam = np.asarray(a.lambda_(t), dtype=np.float64)
    inside = _reaches(b, lam)
    t_to, scale = np.full_like(t, np.nan), np.full_like(t, np.nan)
    if inside.any():
        t_to[inside] = convert_time(a, b, t[inside])
        scale[inside] = state_scale(a, b, t[inside], t_to[inside])
    return dict(t=t, lam=lam, t_to=t_to, scale=scale, inside=inside)


def conversion_map(a, b, label_a: str = "A", label_b: str = "B", grid=None, n: int = 300,
                   title: str | None = None, height: int = 380) -> go.Figure:
    """Left: t -> t' with lambda_b(t') = lambda_a(t) (and b's own sampling interval shaded);
    right: the factor alpha_b(t') / alpha_a(t) a path is scaled by. `grid` (a's time grid, inside the
    log-SNR range b reaches) marks the points a converted run lands on."""
    m = conversion_arrays(a, b, n)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        f"t′ in {label_b} at the same log-SNR (shaded: {label_b}'s interval)", f"scale α′(t′) / α(t): x′ = scale · x"))
    hover = f"{label_a} t=%{{x:.4g}}<br>{label_b} t′=%{{y:.4g}}<br>λ=%{{customdata:.3f}}<extra></extra>"
    fig.add_trace(go.Scatter(x=m["t"], y=m["t_to"], customdata=m["lam"], mode="lines", name="t → t′",
                             line=dict(color=color(1), width=2.6), hovertemplate=hover), row=1, col=1)
    fig.add_trace(go.Scatter(x=m["t"], y=m["scale"], customdata=m["lam"], mode="lines", name="α′/α",
                             line=dict(color=color(2), width=2.6), showlegend=False,
                             hovertemplate=f"{label_a} t=%{{x:.4g}}<br>α′/α=%{{y:.4g}}<extra></extra>"), row=1, col=2)
    if grid is not None:
        g_t = np.asarray(grid, dtype=np.float64)
        g_t = g_t[_reaches(b, np.asarray(a.lambda_(g_t), dtype=np.float64))]
        g_to = np.asarray(convert_time(a, b, g_t), dtype=np.float64)
        g_scale = state_scale(a, b, g_t, g_to)
        fig.add_trace(go.Scatter(x=g_t, y=g_to, mode="markers", name="grid points",
                                 marker=dict(color=HIGHLIGHT, size=6), hovertemplate=hover.replace("customdata:.3f", "x:.4g")),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=g_t, y=g_scale, mode="markers", showlegend=False, name="grid points",
                                 marker=dict(color=HIGHLIGHT, size=6),
                                 hovertemplate=f"{label_a} t=%{{x:.4g}}<br>α′/α=%{{y:.4g}}<extra></extra>"), row=1, col=2)
    log_t = _log_t([a], None)
    t_to = m["t_to"][np.isfinite(m["t_to"])]
    log_t2 = len(t_to) > 0 and t_to.min() > 0 and t_to.max() / t_to.min() > 100
    fig.add_hrect(y0=b.t_min, y1=b.t_max, fillcolor=color(1), opacity=0.08, line_width=0, row=1, col=1)
    layout = style.base_layout(title or f"The conversion map {label_a} → {label_b} (equal signal-to-noise)", height)
    layout["margin"].update(l=60, r=20, t=85, b=55)
    layout.update(showlegend=False, yaxis=dict(title=dict(text=f"t′ in {label_b}"), type="log" if log_t2 else "linear"))
    s = m["scale"][np.isfinite(m["scale"])]
    if len(s) and s.min() > 0 and s.max() / s.min() > 100:
        layout["yaxis2"] = dict(type="log")
    style.set_layout(fig, layout, xaxes=dict(title=dict(text=f"t in {label_a}"), **_t_axis([a], log_t)))
    if not m["inside"].all():
        lost = m["t"][~m["inside"]]
        fig.add_annotation(text=f"{label_b} cannot reach {label_a}'s log-SNR for t in [{lost.min():.3g}, {lost.max():.3g}]",
                           xref="paper", yref="paper", x=0.0, y=-0.22, showarrow=False, font=dict(size=11, color="#a33"))
    return fig


def _path_positions(traj, n_paths: int):
    """The particles to draw: n_paths spread over the ranking of their final first coordinate."""
    x = _np(traj.x)
    final = x[-1, :, 0]
    return _spread_indices(final, n_paths)


def linked_paths(trajs: dict, schedules: dict, target=None, n_paths: int = 30, step: int | None = None,
                 title: str | None = None, height: int = 440) -> go.Figure:
    """The same particles under two (or more) schedules, label -> Trajectory and label -> Schedule,
    whose grids correspond step by step at equal lambda. 1D: x against each schedule's own t, and
    a last panel of x / alpha against lambda where the paths coincide; 2D: the paths in the plane.
    A slider (in the browser, no rerun) highlights step k in every panel at once."""
    labels = list(trajs)
    if len(labels) < 2:
        raise ValueError("trajs: give at least two trajectories to link")
    if list(schedules) != labels:
        raise ValueError("schedules: need one schedule per trajectory, under the same labels")
    steps = {len(trajs[l].t) for l in labels}
    if len(steps) != 1:
        raise ValueError(f"the trajectories must have the same number of steps to be linked, got {sorted(steps)}")
    n_t = steps.pop()
    xs = {l: _np(trajs[l].x) for l in labels}
    dim = xs[labels[0]].shape[-1]
    idx = _path_positions(trajs[labels[0]], n_paths)
    step = n_t - 1 if step is None else int(np.clip(step, 0, n_t - 1))
    one_d = dim == 1
    n_cols = len(labels) + (1 if one_d else 0)
    titles = [f"under {l}" + ("  (own time t)" if one_d else "") for l in labels]
    if one_d:
        titles.append("x / √(α² + σ²) against λ: one path")
    fig = make_subplots(rows=1, cols=n_cols, horizontal_spacing=0.06, subplot_titles=titles)
    highlight = []  # (trace index, x-values per step, y-values per step)
    axes = {}  # each panel's axes, set with the layout

    def axis(letter, col) -> dict:
        return axes.setdefault(f"{letter}axis{'' if col == 1 else col}", {})

    def add_paths(k, col, px, py, label):
        lx, ly = _polylines(_f32(px), _f32(py))
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", name=label, legendgroup=label, showlegend=col <= len(labels),
                                 line=dict(color=color(k), width=1.1), opacity=0.55, hoverinfo="skip"), row=1, col=col)

    def add_highlight(col, px, py, hover):
        highlight.append((len(fig.data), px, py))
        fig.add_trace(go.Scatter(x=_f32(px[:, step]), y=_f32(py[:, step]), mode="markers", showlegend=False,
                                 name="step", marker=dict(color=HIGHLIGHT, size=6, line=dict(color="white", width=0.8)),
                                 hovertemplate=hover), row=1, col=col)

    for k, label in enumerate(labels):
        s, traj = schedules[label], trajs[label]
        x = xs[label][:, idx]  # (T, P, D)
        if one_d:
            tt = np.broadcast_to(np.asarray(traj.t, dtype=np.float64)[None, :], (len(idx), n_t))
            add_paths(k, k + 1, tt, x[:, :, 0].T, label)
            add_highlight(k + 1, tt, x[:, :, 0].T, f"{label}<br>t=%{{x:.4g}}<br>x=%{{y:.4g}}<extra></extra>")
            lam = np.broadcast_to(np.asarray(s.lambda_(traj.t), dtype=np.float64)[None, :], (len(idx), n_t))
            # x / alpha is the same at equal lambda; divided by sqrt(1 + e^{-2 lambda}) it stays bounded
            xa = (x[:, :, 0] / np.hypot(s.alpha(traj.t), s.sigma(traj.t))[:, None]).T
            add_paths(k, n_cols, lam, xa, label)
            fig.data[-1].line.dash = "solid" if k == 0 else "dot"
            fig.data[-1].line.width = 1.1 if k == 0 else 2.0
            ts = np.asarray(traj.t, dtype=np.float64)
            log = ts.min() > 0 and ts.max() > 1.5 and ts.max() / ts.min() > 100  # VE/EDM-like, not the unit interval
            axis("x", k + 1).update(title=dict(text=f"t in {label}"), **_t_axis([_Range(ts.min(), ts.max())], log))
            if k == 0:
                add_highlight(n_cols, lam, xa, "λ=%{x:.3f}<br>x/√(α²+σ²)=%{y:.4g}<extra></extra>")
            if target is not None:  # the data's range (widened), not the far-off start of a VE/EDM path
                axis("y", k + 1).update(range=list(style.view_box(target, x, widen=3.0)[0]))
        else:
            add_paths(k, k + 1, x[:, :, 0].T, x[:, :, 1].T, label)
            add_highlight(k + 1, x[:, :, 0].T, x[:, :, 1].T, f"{label}<br>x=%{{x:.3g}}, %{{y:.3g}}<extra></extra>")
            axis("x", k + 1).update(title=dict(text="x₁"))
            axis("y", k + 1).update(title=dict(text="x₂"), scaleanchor=f"x{k + 1 if k else ''}")
            if target is not None:
                box = style.view_box(target, x)
                axis("x", k + 1).update(range=list(box[0]))
                axis("y", k + 1).update(range=list(box[1]))
    if one_d:
        axis("x", n_cols).update(title=dict(text="λ (data →)"))
        axis("y", 1).update(title=dict(text="x"))

    def state(i):
        return [
            {"x": [_f32(px[:, i]) for _, px, _ in highlight], "y": [_f32(py[:, i]) for _, _, py in highlight]},
            [j for j, _, _ in highlight],
        ]

    t_text = {l: np.asarray(trajs[l].t, dtype=np.float64) for l in labels}
    lam0 = np.asarray(schedules[labels[0]].lambda_(t_text[labels[0]]), dtype=np.float64)
    slider_steps = [
        dict(method="restyle", args=state(i), label=str(i)) for i in range(n_t)
    ]
    layout = style.base_layout(title or "The same particles under each schedule, step by step", height)
    layout["margin"].update(l=55, r=20, t=95, b=120)
    layout["legend"].update(y=1.1)
    fixed = None if one_d else style.FIXED_MARGINS
    return style.set_layout(fig, dict(
        layout, **axes,
        sliders=[dict(
            active=step, steps=slider_steps, x=0.0, len=1.0, y=-0.12, yanchor="top", pad=dict(t=30),
            currentvalue=dict(prefix="step ", font=dict(size=12)),
        )],
        annotations=list(fig.layout.annotations) + [dict(
            text="step k: " + " · ".join(f"{l} t={t_text[l][0]:.3g}→{t_text[l][-1]:.3g}" for l in labels)
                 + f" · λ {lam0[0]:.2f}→{lam0[-1]:.2f}",
            xref="paper", yref="paper", x=1.0, xanchor="right", y=-0.3, showarrow=False, font=dict(size=11, color="#555"),
        )],
    ), xaxes=fixed, yaxes=fixed)


class _Range:
    """The t range of a grid, shaped like a schedule's sampling interval (for the shared axis)."""

    def __init__(self, t_min: float, t_max: float):
        self.t_min, self.t_max = float(t_min), float(t_max)


def mean_norm(v) -> np.ndarray:
    """Mean Euclidean norm over particles: (N, D) -> float, or (T, N, D) -> (T,)."""
    v = _np(v)
    return np.mean(np.sqrt(np.sum(v * v, axis=-1)), axis=-1)


def drift_magnitude(curves: dict, axis: str = "lambda", log_y: bool = True, title: str | None = None,
                    height: int = 380) -> go.Figure:
    """Mean |drift| over particles along each path: label -> dict(t, lam, drift) (drift (T,) the mean
    norm at each grid time, in that schedule's own time). axis: "lambda" (every schedule on one
    log-SNR axis, data on the right) or "t" (each in its own time). A curve that is zero to round-off
    (every value below 1e-9 of the largest drift) is labelled so and, on a log axis, drawn flat at a
    floor a decade under the other curves (its hover gives the true values)."""
    if axis not in ("lambda", "t"):
        raise ValueError(f"axis must be 'lambda' or 't', got {axis!r}")
    fig = go.Figure()
    drifts = {label: np.asarray(c["drift"], dtype=np.float64) for label, c in curves.items()}
    finite = [v for y in drifts.values() for v in y if np.isfinite(v)]
    tiny = 1e-9 * max(max(finite, default=1.0), 1e-300)  # round-off of the largest drift
    zero = {label: bool(np.all(y[np.isfinite(y)] <= tiny)) for label, y in drifts.items()}
    positives = [v for label, y in drifts.items() if not zero[label] for v in y if np.isfinite(v) and v > 0]
    floor = min(positives) / 10 if positives else 1e-16
    for k, (label, c) in enumerate(curves.items()):
        x = np.asarray(c["lam"] if axis == "lambda" else c["t"], dtype=np.float64)
        y = drifts[label]
        shown = (np.full_like(y, floor) if zero[label] else np.maximum(y, floor)) if log_y else y
        fig.add_trace(go.Scatter(
            x=x, y=shown, mode="lines+markers", name=label + ("  (zero drift)" if zero[label] else ""),
            line=dict(color=color(k), width=2.4, dash="dash" if zero[label] else "solid"), marker=dict(size=4),
            customdata=y, hovertemplate=f"{label}<br>{'λ' if axis == 'lambda' else 't'}=%{{x:.4g}}"
                                        f"<br>mean |drift|=%{{customdata:.3g}}<extra></extra>",
        ))
    xaxis = dict(title=dict(text="λ = log α/σ  (noise → data)")) if axis == "lambda" else dict(
        title=dict(text="t in each schedule's own time (noise → data)"), autorange="reversed")
    if axis == "t":
        ts = [v for c in curves.values() for v in np.asarray(c["t"], dtype=np.float64) if v > 0]
        if ts and max(ts) / min(ts) > 100:
            xaxis.update(type="log")
    layout = style.base_layout(title or "Drift magnitude along the path: mean |dx/dt| over particles", height)
    return style.set_layout(fig, dict(layout, xaxis=xaxis, yaxis=dict(title=dict(text="mean |drift|"), type="log" if log_y else "linear")))


def fewer_steps(records, base: str) -> list[dict]:
    """Where another option buys fewer steps than `base` (a record label): for each other label, the
    base run at NFE N and the fewest NFE n < N at which that label's error is no larger, the largest
    saving N / n (then the largest N). Records: dicts with label, nfe, error (measured NFEs only)."""
    base_rows = [r for r in records if r["label"] == base and np.isfinite(r["error"])]
    out = []
    for label in dict.fromkeys(r["label"] for r in records):
        if label == base:
            continue
        rows = [r for r in records if r["label"] == label and np.isfinite(r["error"])]
        best = None
        for b in base_rows:
            cheaper = [r["nfe"] for r in rows if r["nfe"] < b["nfe"] and r["error"] <= b["error"]]
            if cheaper and (best is None or (b["nfe"] / min(cheaper), b["nfe"]) > (best["nfe_from"] / best["nfe_to"], best["nfe_from"])):
                best = dict(error=b["error"], nfe_from=b["nfe"], nfe_to=min(cheaper), label_from=base, label_to=label)
        if best is not None:
            out.append(best)
    return out


def error_vs_nfe(records, fewer=None, title: str | None = None, height: int = 440) -> go.Figure:
    """Error against NFE, one line per record label (e.g. original, converted, optimised): records are
    dicts with label, nfe, error. fewer: dicts (error, nfe_from, nfe_to, label_from, label_to), e.g. from
    fewer_steps, drawn as arrows at that error from nfe_from back to nfe_to in label_to's colour."""
    fig = go.Figure()
    labels = list(dict.fromkeys(r["label"] for r in records))
    for k, label in enumerate(labels):
        rows = sorted((r for r in records if r["label"] == label), key=lambda r: r["nfe"])
        fig.add_trace(go.Scatter(
            x=[r["nfe"] for r in rows], y=[r["error"] if np.isfinite(r["error"]) and r["error"] > 0 else None for r in rows],
            mode="lines+markers", name=label, line=dict(color=color(k), width=2.4, dash="solid" if k == 0 else "dash" if "optimised" in label else "solid"),
            marker=dict(size=7), hovertemplate=f"{label}<br>NFE=%{{x}}<br>error=%{{y:.3g}}<extra></extra>",
        ))
    for f in fewer or ():
        c = color(labels.index(f["label_to"])) if f["label_to"] in labels else "#444"
        x0, x1, y = np.log10(f["nfe_from"]), np.log10(f["nfe_to"]), np.log10(f["error"])
        fig.add_annotation(x=x1, y=y, ax=x0, ay=y, xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                           arrowhead=3, arrowsize=1.3, arrowwidth=2, arrowcolor=c, text="")
        fig.add_annotation(x=0.5 * (x0 + x1), y=y, xref="x", yref="y", showarrow=False, yshift=11,
                           text=f"{f['nfe_from']:g} → {f['nfe_to']:g} NFE", font=dict(size=11, color=c))
    nfes = sorted({r["nfe"] for r in records})
    layout = style.base_layout(title or "Error against NFE: same model and solver, other schedules and grids", height)
    layout["legend"] = dict(orientation="v", yanchor="bottom", y=0.02, xanchor="left", x=0.01, bgcolor="rgba(255,255,255,0.8)")
    return style.set_layout(fig, dict(
        layout, xaxis=dict(title=dict(text="NFE (model evaluations)"), type="log", tickvals=nfes, ticktext=[str(n) for n in nfes]),
        yaxis=dict(title=dict(text="held-out error against the exact ODE endpoint"), type="log", exponentformat="power")))


def grid_text(timesteps, sigmas=None, precision: int = 17) -> str:
    """A grid as copyable text: a line `timesteps = [...]` and, when given, `sigmas = [...]`
    (each value with enough digits to round-trip float64)."""
    def fmt(values):
        return "[" + ", ".join(f"{float(v):.{precision}g}" for v in np.asarray(values, dtype=np.float64).ravel()) + "]"

    text = f"timesteps = {fmt(timesteps)}"
    if sigmas is not None:
        text += f"\nsigmas = {fmt(sigmas)}"
    return text
