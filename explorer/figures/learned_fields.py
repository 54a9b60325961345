"""Learned-fields figures: gauge freedom (paths of the same particles with and without the rotation c J s,
their marginals against the exact one, the solver's error against c), conservativity (the curl of a field
on a grid, the non-conservative share per noise level) and the intrinsic dimension read off the score's
Jacobian (its spectrum against the noise level, per component).

Pure functions from analyses results to plotly figures.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import style
from .trajectories import _f32, _target_contour

GAUGE_COLORS = ["#1f4e9c", "#d62728", "#2ca02c", "#ff9f1c", "#9467bd"]
LEARNED_COLOR, EXACT_COLOR = "#d62728", "#2ca02c"
COMPONENT_COLORS = ["#1f4e9c", "#d62728", "#2ca02c", "#ff9f1c"]


def gauge_paths(runs: dict, target, n_paths: int = 12, n_show: int = 400, height: int = 480) -> go.Figure:
    """The same starting particles under each gauge c (label -> Trajectory, states in the schedule's own
    scale): their paths over the target, and where each ends (at most n_show samples drawn per gauge)."""
    first = next(iter(runs.values()))
    x_all = np.concatenate([np.asarray(tr.x).reshape(-1, 2) for tr in runs.values()])
    lo, hi = np.quantile(x_all, [0.01, 0.99], axis=0)
    box = np.stack([np.minimum(lo, style.target_box(target)[:, 0]), np.maximum(hi, style.target_box(target)[:, 1])], axis=1)
    fig = go.Figure()
    fig.add_trace(_target_contour(target, box, n=70))
    pick = np.linspace(0, first.x.shape[1] - 1, min(n_paths, first.x.shape[1])).astype(int)
    for j, (label, tr) in enumerate(runs.items()):
        color = GAUGE_COLORS[j % len(GAUGE_COLORS)]
        xs = np.asarray(tr.x)[:, pick]  # (steps, paths, 2)
        seg = np.concatenate([xs, np.full((1,) + xs.shape[1:], np.nan)], axis=0).transpose(1, 0, 2).reshape(-1, 2)
        fig.add_trace(go.Scatter(x=_f32(seg[:, 0]), y=_f32(seg[:, 1]), mode="lines", line=dict(color=color, width=1.3),
                                 name=f"{label}: paths", legendgroup=label))
        end = np.asarray(tr.x[-1])[:n_show]
        fig.add_trace(go.Scatter(x=_f32(end[:, 0]), y=_f32(end[:, 1]), mode="markers", name=f"{label}: samples",
                                 legendgroup=label, marker=dict(size=3, color=color, opacity=0.45)))
        fig.add_trace(go.Scatter(x=_f32(xs[-1, :, 0]), y=_f32(xs[-1, :, 1]), mode="markers", showlegend=False, legendgroup=label,
                                 marker=dict(size=8, color=color, line=dict(color="#111", width=1))))
    return style.set_layout(fig, style.base_layout("The same noise, two gauges: different paths, the same samples", height),
                            xaxes=dict(range=list(box[0]), **style.FIXED_MARGINS),
                            yaxes=dict(range=list(box[1]), scaleanchor="x", **style.FIXED_MARGINS))


def gauge_marginals(runs: dict, exact_density, height: int = 340, bins: int = 60) -> go.Figure:
    """Histograms of each gauge's samples along both coordinates against the exact marginal densities
    (exact_density(axis, u) -> density of coordinate `axis` at the points u)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("first coordinate", "second coordinate"))
    for axis in (0, 1):
        vals = np.concatenate([np.asarray(tr.x[-1])[:, axis] for tr in runs.values()])
        lo, hi = np.quantile(vals, [0.002, 0.998])
        edges = np.linspace(lo, hi, bins + 1)
        centres = 0.5 * (edges[1:] + edges[:-1])
        u = np.linspace(lo, hi, 300)
        fig.add_trace(go.Scatter(x=u, y=_f32(exact_density(axis, u)), mode="lines", line=dict(color="#111", width=2.5),
                                 name="exact marginal", showlegend=axis == 0), row=1, col=axis + 1)
        for j, (label, tr) in enumerate(runs.items()):
            hist, _ = np.histogram(np.asarray(tr.x[-1])[:, axis], edges, density=True)
            fig.add_trace(go.Scatter(x=centres, y=_f32(hist), mode="lines", line=dict(color=GAUGE_COLORS[j % len(GAUGE_COLORS)],
                                     width=1.6, shape="hvh"), name=label, showlegend=axis == 0, legendgroup=label), row=1, col=axis + 1)
    return style.set_layout(fig, style.base_below("Marginals of the samples: the gauge changes none", height))


def gauge_error(records: list[dict], height: int = 320) -> go.Figure:
    """The solver's error against the exact path of the same (rotated) ODE, against the gauge c, per solver."""
    fig = go.Figure()
    solvers = list(dict.fromkeys(r["solver"] for r in records))
    for j, s in enumerate(solvers):
        rs = sorted((r for r in records if r["solver"] == s), key=lambda r: r["c"])
        fig.add_trace(go.Scatter(x=[r["c"] for r in rs], y=[max(r["error"], 1e-8) for r in rs], mode="lines+markers", name=s,
                                 line=dict(color=GAUGE_COLORS[j % len(GAUGE_COLORS)], width=2)))
    return style.set_layout(fig, style.base_layout("The gauge changes the solver's error", height),
                            xaxes=dict(title=dict(text="c (score + c J score)")),
                            yaxes=dict(title=dict(text="error against the exact path (RMS)"), type="log", dtick=1))


def curl_map(x, y, curl, log_p, sigma_over_alpha: float, title: str | None = None, clip: float = 0.99,
             height: int = 440) -> go.Figure:
    """(σ/α)² times the curl of a 2D field on a grid (rows along y), red one way, blue the other, colours
    clipped at the `clip` quantile of |curl| (a singular point stays visible in the hover), with contours of
    the exact log p_t."""
    scaled = np.asarray(curl, dtype=np.float64) * sigma_over_alpha**2
    top = float(np.quantile(np.abs(scaled), clip)) or 1e-12
    fig = go.Figure()
    fig.add_trace(go.Heatmap(x=_f32(x), y=_f32(y), z=_f32(scaled), zmin=-top, zmax=top, colorscale="RdBu_r", zmid=0,
                             colorbar=dict(title="(σ/α)² curl", thickness=12),
                             hovertemplate="x %{x:.2f}, y %{y:.2f}<br>(σ/α)² curl %{z:.3g}<extra></extra>"))
    lp = np.asarray(log_p, dtype=np.float64)
    fig.add_trace(go.Contour(x=_f32(x), y=_f32(y), z=_f32(np.exp(lp - lp.max())), showscale=False, hoverinfo="skip",
                             contours=dict(coloring="none", start=0.1, end=0.9, size=0.2), line=dict(color="rgba(0,0,0,0.45)", width=1),
                             name="p_t"))
    return style.set_layout(fig, style.base_layout(title or f"Curl of the field at σ/α = {sigma_over_alpha:g}", height),
                            xaxes=style.FIXED_MARGINS, yaxes=dict(scaleanchor="x", **style.FIXED_MARGINS))


def nonconservative_vs_noise(levels, learned_fraction, exact_fraction, learned_curl=None, exact_curl=None,
                             height: int = 360) -> go.Figure:
    """The p_t-weighted non-conservative share of the field (what a potential's gradient cannot fit) and the
    weighted RMS of (σ/α)² curl, per noise level: the learned field against the exact one (0 up to the grid)."""
    n_cols = 2 if learned_curl is not None else 1
    titles = ("Non-conservative share (weighted Helmholtz)", "(σ/α)² curl, weighted RMS")[:n_cols]
    fig = make_subplots(rows=1, cols=n_cols, subplot_titles=titles)
    pairs = [(1, learned_fraction, exact_fraction)]
    if learned_curl is not None:
        pairs.append((2, learned_curl, exact_curl))
    for col, learned, exact in pairs:
        fig.add_trace(go.Scatter(x=_f32(levels), y=_f32(np.maximum(learned, 1e-12)), mode="lines+markers", name="learned MLP",
                                 line=dict(color=LEARNED_COLOR, width=2.5), showlegend=col == 1, legendgroup="l"), row=1, col=col)
        if exact is not None:
            fig.add_trace(go.Scatter(x=_f32(levels), y=_f32(np.maximum(exact, 1e-12)), mode="lines+markers", name="exact score",
                                     line=dict(color=EXACT_COLOR, width=2.5), showlegend=col == 1, legendgroup="e"), row=1, col=col)
    style.set_layout(fig, style.base_below("How far the learned field is from a gradient, per noise level", height),
                     xaxes=dict(type="log", title=dict(text="σ/α"), dtick=1), yaxes=dict(type="log", dtick=2, exponentformat="power"))
    if exact_curl is not None and not np.any(np.asarray(exact_curl) > 1e-12):
        fig.add_annotation(text="exact: 0 (drawn at the axis floor)", xref="x2 domain", yref="y2 domain", x=0.98, y=0.08,
                           showarrow=False, xanchor="right", font=dict(size=11, color=EXACT_COLOR))
    return fig


def dimension_spectrum(noises, spectra: dict, dims: dict, known: dict | None = None, threshold: float = 0.5,
                       height: int = 400) -> go.Figure:
    """Left: eigenvalues of -σ² ∇s (symmetric part; median over a component's points) against σ/α, one colour
    per component, with the threshold; right: the estimated dimension per component, the known one dotted.
    spectra: name -> (len(noises), D) eigenvalues; dims: name -> (len(noises),) estimated dimension."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Spectrum of -σ² ∇s", "Estimated dimension"))
    for j, name in enumerate(spectra):
        color = COMPONENT_COLORS[j % len(COMPONENT_COLORS)]
        ev = np.asarray(spectra[name])
        for d in range(ev.shape[1]):
            fig.add_trace(go.Scatter(x=_f32(noises), y=_f32(ev[:, d]), mode="lines+markers", line=dict(color=color, width=1.8),
                                     name=name, legendgroup=name, showlegend=d == 0), row=1, col=1)
        fig.add_trace(go.Scatter(x=_f32(noises), y=np.asarray(dims[name], dtype=np.float32), mode="lines+markers",
                                 line=dict(color=color, width=2.5, shape="hv"), name=name, legendgroup=name, showlegend=False),
                      row=1, col=2)
        if known and name in known:
            fig.add_hline(y=known[name], line=dict(color=color, dash="dot", width=1), row=1, col=2)
    fig.add_hline(y=threshold, line=dict(color="#111", dash="dash", width=1), row=1, col=1)
    layout = dict(style.base_below("The dimension the score sees, against the noise level", height),
                  yaxis=dict(range=[-0.05, 1.05]), yaxis2=dict(dtick=1))
    return style.set_layout(fig, layout, xaxes=dict(type="log", title=dict(text="σ/α"), dtick=1, exponentformat="power"))


def dimension_points(target, x, dims, height: int = 420) -> go.Figure:
    """The points where the dimension was read, coloured by the estimate (0, 1, 2), over the target."""
    box = style.target_box(target)
    fig = go.Figure()
    fig.add_trace(_target_contour(target, box, n=80))
    for d, color in zip(range(3), ("#d62728", "#1f4e9c", "#2ca02c")):
        sel = np.asarray(dims) == d
        fig.add_trace(go.Scatter(x=_f32(x[sel, 0]), y=_f32(x[sel, 1]), mode="markers", name=f"dimension {d} ({int(sel.sum())})",
                                 marker=dict(size=5, color=color, opacity=0.7)))
    return style.set_layout(fig, style.base_below("Where the score reads each dimension", height),
                            xaxes=dict(range=list(box[0]), **style.FIXED_MARGINS),
                            yaxes=dict(range=list(box[1]), scaleanchor="x", **style.FIXED_MARGINS))
