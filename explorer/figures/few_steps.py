"""Few-steps figures: samples of every few-step method at 1/2/4/8 NFE against the exact target, distance and
between-mode mass against NFE, the exact reverse kernel against DDPM's Gaussian one, Light Schrodinger
Bridge sample paths for several entropic regularisations, and reflow's straight lines in 1D.

Pure functions from analyses results to plotly figures.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analyses.few_step_compare import LABELS
from ..analyses.few_steps import kernel_log_prob
from . import style
from .trajectories import _f32, _target_contour

COLORS = {
    "ode": "#1f4e9c", "ddpm": "#d62728", "exact": "#2ca02c", "flow-map": "#111111", "distilled": "#7f7f7f", "rf1": "#ff7f0e",
    "rf2": "#9467bd", "lightsb": "#17becf", "dpm-ot": "#8c564b",
}


def _methods(rows):
    seen = []
    for r in rows:
        if r["method"] not in seen:
            seen.append(r["method"])
    return seen


def samples_grid(rows, samples, target, nfes=(1, 2, 4, 8), max_points: int = 600, height_per_row: int = 150) -> go.Figure:
    """One row per method, one column per NFE: the samples (2D: points over the target's contours; 1D: a
    histogram over the exact density, red). A method that runs at one NFE only fills its first column."""
    methods = _methods(rows)
    fig = make_subplots(rows=len(methods), cols=len(nfes), shared_xaxes=True, shared_yaxes=target.dim == 2,
                        horizontal_spacing=0.02, vertical_spacing=0.025, column_titles=[f"{k} NFE" for k in nfes],
                        row_titles=[LABELS[m].replace(" (", "<br>(") for m in methods])
    box = style.target_box(target)
    if target.dim == 1:
        grid = np.linspace(box[0, 0], box[0, 1], 400)
        density = dict(x=_f32(grid), y=_f32(np.exp(target.log_prob(grid[:, None]))), mode="lines", showlegend=False,
                       hoverinfo="skip", line=dict(color=style.TARGET_COLOR, width=1))
    else:
        contour = _target_contour(target, box, n=60)  # the same in every cell: computed once
    # Every cell's traces and label are collected and added at once: plotly validates per call (0.3-0.5 s one by one).
    traces, cells, labels = [], [], []
    for r, x in zip(rows, samples):
        i, j = methods.index(r["method"]) + 1, (list(nfes).index(r["nfe"]) + 1 if r["nfe"] in nfes else None)
        if j is None:
            continue
        x = np.asarray(x)[:max_points] if target.dim == 2 else np.asarray(x)
        if target.dim == 2:
            traces += [contour, style.points(len(x), x=_f32(x[:, 0]), y=_f32(x[:, 1]), mode="markers", showlegend=False,
                                             marker=dict(size=3, color=COLORS[r["method"]], opacity=0.6),
                                             name=f"{LABELS[r['method']]}, {r['nfe']} NFE")]
        else:
            traces += [go.Histogram(x=_f32(x[:, 0]), histnorm="probability density", showlegend=False,
                                    xbins=dict(start=box[0, 0], end=box[0, 1], size=(box[0, 1] - box[0, 0]) / 120),
                                    marker_color=COLORS[r["method"]], opacity=0.75), go.Scatter(**density)]
        cells += [(i, j), (i, j)]
        k = "" if (i, j) == (1, 1) else (i - 1) * len(nfes) + j
        labels.append(dict(text=f"W {r['distance']:.2f} · off {100 * r['off_mode']:.0f}%", showarrow=False,
                           xref=f"x{k} domain", yref=f"y{k} domain", x=0.02, y=0.98, xanchor="left", yanchor="top",
                           font=dict(size=10, color="#444")))
    if traces:
        fig.add_traces(traces, rows=[c[0] for c in cells], cols=[c[1] for c in cells])
    title = "Samples at 1, 2, 4 and 8 NFE (W: sliced W2 to the target; off: mass between modes)"
    return style.set_layout(
        fig, dict(style.base_layout(title, 60 + height_per_row * len(methods)), annotations=list(fig.layout.annotations) + labels),
        xaxes=dict(range=list(box[0]), showticklabels=False),
        yaxes=dict(showticklabels=False, **({"range": list(box[1])} if target.dim == 2 else {})),
        annotations=dict(font=dict(size=10)))


def error_vs_nfe(rows, height: int = 380) -> go.Figure:
    """Left: sliced W2 to the target against NFE per method (the noise floor of the metric at this sample
    size is the exact kernels' level). Right: the mass between modes (off-mode) against NFE."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("sliced W2 to the target", "mass between modes"),
                        horizontal_spacing=0.1)
    for m in _methods(rows):
        rs = [r for r in rows if r["method"] == m]
        nfe = [r["nfe"] for r in rs]
        mode = "lines+markers" if len(rs) > 1 else "markers"
        marker = dict(size=9 if len(rs) == 1 else 6, symbol="star" if len(rs) == 1 else "circle")
        fig.add_trace(go.Scatter(x=nfe, y=[r["distance"] for r in rs], mode=mode, name=LABELS[m], legendgroup=m,
                                 line=dict(color=COLORS[m]), marker=marker), row=1, col=1)
        fig.add_trace(go.Scatter(x=nfe, y=[r["off_mode"] for r in rs], mode=mode, name=LABELS[m], legendgroup=m,
                                 showlegend=False, line=dict(color=COLORS[m]), marker=marker), row=1, col=2)
    layout = style.base_layout("Distance and mode mixing against NFE", height)
    layout["legend"] = dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0)
    layout["margin"] = dict(l=60, r=20, t=60, b=120)
    layout.update(yaxis=dict(type="log"), yaxis2=dict(range=[-0.03, 1.03], tickformat=".0%"))  # the two panels
    return style.set_layout(fig, layout, xaxes=dict(type="log", tickvals=[1, 2, 4, 8], title=dict(text="NFE")))


def kernels(target, schedule, x_t: float, t: float, s: float, height: int = 340) -> go.Figure:
    """1D: the exact reverse kernel q(x_s | x_t) (a mixture) and DDPM's Gaussian kernel from the same x_t."""
    box = style.target_box(target)
    a_s = float(schedule.alpha(s))
    grid = np.linspace(min(a_s * box[0, 0], box[0, 0]) - 0.5, max(a_s * box[0, 1], box[0, 1]) + 0.5, 1200)
    xt = np.array([[float(x_t)]])
    exact = np.exp(kernel_log_prob(target, schedule, xt, t, s, grid[:, None]))[0]
    gauss = np.exp(kernel_log_prob(target, schedule, xt, t, s, grid[:, None], gaussian=True))[0]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=_f32(grid), y=_f32(exact), mode="lines", name="exact q(x_s | x_t)",
                             line=dict(color=COLORS["exact"], width=2), fill="tozeroy"))
    fig.add_trace(go.Scatter(x=_f32(grid), y=_f32(gauss), mode="lines", name="DDPM's Gaussian kernel",
                             line=dict(color=COLORS["ddpm"], width=2, dash="dash")))
    return style.set_layout(fig, style.base_layout(f"One reverse step from x_t = {x_t:g} at t = {t:g} to s = {s:g}", height),
                            xaxes=dict(title=dict(text="x_s")), yaxes=dict(title=dict(text="density")))


def bridges(paths: dict, source, target, height: int = 380) -> go.Figure:
    """Light Schrodinger Bridge sample paths from the source mixture to the target, one panel per epsilon
    (paths: {epsilon: Trajectory from lightsb.bridge_paths})."""
    eps_list = list(paths)
    fig = make_subplots(rows=1, cols=len(eps_list), subplot_titles=[f"epsilon = {e:g}" for e in eps_list],
                        horizontal_spacing=0.03, shared_yaxes=True)
    lo = np.minimum(style.target_box(source)[:, 0], style.target_box(target)[:, 0])
    hi = np.maximum(style.target_box(source)[:, 1], style.target_box(target)[:, 1])
    box = np.stack([lo, hi], axis=1)
    for j, e in enumerate(eps_list, start=1):
        x = np.asarray(paths[e].x)  # (n + 1, N, 2)
        xs = np.concatenate([x[:, :, 0], np.full((1, x.shape[1]), np.nan)], axis=0).T.ravel()
        ys = np.concatenate([x[:, :, 1], np.full((1, x.shape[1]), np.nan)], axis=0).T.ravel()
        # the paths are one SVG path each (cheap at any length); the draws SVG or WebGL by their number
        fig.add_trace(go.Scatter(x=_f32(xs), y=_f32(ys), mode="lines", line=dict(width=0.7, color="rgba(31,78,156,0.35)"),
                                 showlegend=j == 1, name="bridge path", hoverinfo="skip"), row=1, col=j)
        fig.add_trace(style.points(x.shape[1], x=_f32(x[0, :, 0]), y=_f32(x[0, :, 1]), mode="markers", showlegend=j == 1,
                                   name="source draw", marker=dict(size=4, color="#6c757d")), row=1, col=j)
        fig.add_trace(style.points(x.shape[1], x=_f32(x[-1, :, 0]), y=_f32(x[-1, :, 1]), mode="markers", showlegend=j == 1,
                                   name="target draw", marker=dict(size=4, color=style.TARGET_COLOR)), row=1, col=j)
    layout = style.base_layout("Light Schrodinger Bridge paths between two mixtures", height)
    # the legend below the panels: above them it ran into the last panel's title
    layout["legend"].update(yanchor="top", y=-0.12, xanchor="center", x=0.5)
    layout["margin"].update(b=70)
    return style.set_layout(fig, layout, xaxes=dict(range=list(box[0])), yaxes=dict(range=list(box[1])))


def reflow_lines(z, x_rf1, height: int = 340) -> go.Figure:
    """1D: each noise z joined to its data point by the 2-rectified flow's straight line in (t, x), over the
    1-rectified flow's curved ODE paths (x_rf1: (n + 1, N) states at times t of its Trajectory; given as
    (t, states))."""
    t, states = x_rf1
    z = np.asarray(z).ravel()
    end = np.asarray(states)[-1].ravel()
    fig = go.Figure()
    ts = np.asarray(t)
    xs = np.concatenate([np.asarray(states)[:, :, 0], np.full((1, states.shape[1]), np.nan)], axis=0).T.ravel()
    tt = np.tile(np.concatenate([ts, [np.nan]]), states.shape[1])
    fig.add_trace(go.Scatter(x=_f32(tt), y=_f32(xs), mode="lines", name="1-rectified flow (ODE paths)",
                             line=dict(width=0.8, color="rgba(255,127,14,0.6)")))
    lx = np.stack([z, end, np.full_like(z, np.nan)], axis=1).ravel()
    lt = np.tile([1.0, 0.0, np.nan], len(z))
    fig.add_trace(go.Scatter(x=_f32(lt), y=_f32(lx), mode="lines", name="2-rectified flow (straight)",
                             line=dict(width=0.8, color="rgba(148,103,189,0.7)", dash="dot")))
    return style.set_layout(fig, style.base_layout("Reflow in 1D: the same coupling, straight paths", height),
                            xaxes=dict(title=dict(text="t (noise at 1, data at 0)"), autorange="reversed"),
                            yaxes=dict(title=dict(text="x")))


def transport_table(rows) -> go.Figure:
    """Coupling cost E||z - x||^2, POT's optimal cost on the same point sets, and their ratio."""
    fig = go.Figure(go.Table(
        header=dict(values=["coupling", "cost E||z - x||²", "optimal (POT)", "ratio"], align="left"),
        cells=dict(values=[[r["coupling"] for r in rows], [f"{r['cost']:.4f}" for r in rows],
                           [f"{r['optimal']:.4f}" for r in rows], [f"{r['ratio']:.4f}" for r in rows]], align="left"),
    ))
    # as tall as its rows (about 24 px each, the header's too) below the title: no blank band under the table
    layout = style.base_layout("Transport cost against the optimal coupling", 80 + 24 * (len(rows) + 1))
    layout["margin"].update(b=10)
    return style.set_layout(fig, layout)
