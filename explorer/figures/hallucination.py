"""Figures of mode interpolation (Aithal et al.): the learned against the exact denoiser, where
samples land, the x0-prediction trajectories, the variance filter and its trade-off, generations."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..analyses import hallucination as H
from . import style

GOOD_COLOR = style.SAMPLE_COLOR  # in-support samples
BAD_COLOR = "#d62728"  # hallucinations
EXACT_COLOR = "#2ca02c"  # the exact denoiser and its samples
PAPER_COLOR = "#ff9f1c"
_INSIDE = dict(orientation="v", yanchor="top", y=0.99, xanchor="right", x=0.99, bgcolor="rgba(255,255,255,0.8)")


def denoiser_1d(model, exact_model, t: float, x_range=None, n: int = 600, height: int = 380) -> go.Figure:
    """E[x0 | x_t = x] against x at time t: the exact denoiser (a near-step between modes at small t)
    and the learned one (a smooth ramp through the gap: the cause of mode interpolation)."""
    target = exact_model.target
    if x_range is None:
        a = float(exact_model.schedule.alpha(t))
        box = style.target_box(target, pad=0.05)[0]
        x_range = (a * box[0] - 0.3, a * box[1] + 0.3)
    x = np.linspace(x_range[0], x_range[1], n)[:, None]
    exact = np.asarray(exact_model.denoise(x, float(t)), dtype=np.float64)[:, 0]
    learned = np.asarray(model.denoise(x, float(t)), dtype=np.float64)[:, 0]
    fig = go.Figure()
    for m in target.means[:, 0]:
        fig.add_hline(y=float(m), line=dict(color="#bbbbbb", width=1, dash="dot"))
    fig.add_trace(go.Scatter(x=x[:, 0], y=exact, mode="lines", name="exact E[x0 | x_t]",
                             line=dict(color=EXACT_COLOR, width=3)))
    fig.add_trace(go.Scatter(x=x[:, 0], y=learned, mode="lines", name="learned (network)",
                             line=dict(color=BAD_COLOR, width=2.5, dash="dash")))
    sigma = float(exact_model.schedule.sigma(t))
    return style.set_layout(fig, style.base_layout(f"Denoiser at t = {t:g} (σ = {sigma:.3g})", height),
                            xaxes=dict(title=dict(text="x_t")), yaxes=dict(title=dict(text="predicted x0")))


def sample_histogram(samples, target, k: float = H.K_STD, title: str | None = None, log_y: bool = True,
                     bins: int = 150, x_range=None, height: int = 360) -> go.Figure:
    """Histogram of samples, in-support (blue) and hallucinated (red) stacked, with the target's
    expected counts; log counts by default (hallucinations are rare)."""
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)[:, 0]
    bad = H.hallucinated(x[:, None], target, k)
    if x_range is None:
        x_range = tuple(style.target_box(target, pad=0.1)[0])
    edges = np.linspace(x_range[0], x_range[1], bins + 1)
    size = edges[1] - edges[0]
    fig = go.Figure()
    for mask, name, color in ((~bad, "in support", GOOD_COLOR), (bad, "hallucinated", BAD_COLOR)):
        fig.add_trace(go.Histogram(
            x=x[mask], name=f"{name} ({int(mask.sum())})", xbins=dict(start=edges[0], end=edges[-1], size=size),
            marker=dict(color=color, line=dict(width=0)), opacity=0.8,
        ))
    grid = np.linspace(x_range[0], x_range[1], 800)
    expected = len(x) * size * np.exp(target.log_prob(grid[:, None]))
    fig.add_trace(go.Scatter(x=grid, y=np.where(expected >= 0.3, expected, None) if log_y else expected, mode="lines",
                             name="target (expected)", line=dict(color="#444444", width=1.2)))
    rate = bad.mean() if len(x) else 0.0
    layout = dict(style.base_layout(title or f"Samples: {rate:.2%} hallucinated", height), barmode="stack", bargap=0)
    layout["legend"].update(_INSIDE)
    yaxis = dict(title=dict(text="count" + (" (log)" if log_y else "")), type="log" if log_y else "linear")
    if log_y:
        yaxis.update(range=[-0.4, np.log10(max(len(x), 10)) + 0.1], dtick="D2")  # 1, 2, 5 labels a decade
    return style.set_layout(fig, layout, xaxes=dict(title=dict(text="x"), range=list(x_range)), yaxes=yaxis)


def samples_2d(samples, target, k: float = H.K_STD, title: str | None = None, n_show: int = 4000,
               height: int = 480) -> go.Figure:
    """2D samples, in-support and hallucinated, over the modes' k-std circles."""
    x = np.asarray(samples, dtype=np.float64)[:n_show]
    bad = H.hallucinated(x, target, k)
    fig = go.Figure()
    for mask, name, color in ((~bad, "in support", GOOD_COLOR), (bad, "hallucinated", BAD_COLOR)):
        fig.add_trace(style.points(len(x), x=x[mask, 0], y=x[mask, 1], mode="markers",
                                   name=f"{name} ({int(mask.sum())})", marker=dict(color=color, size=3, opacity=0.6)))
    fig.add_trace(go.Scatter(x=target.means[:, 0], y=target.means[:, 1], mode="markers", name="modes",
                             marker=dict(color="black", symbol="x", size=7)))
    layout = style.base_layout(title or f"Samples: {bad.mean():.2%} hallucinated", height)
    layout["legend"].update(orientation="h", yanchor="top", y=-0.1, xanchor="left", x=0)
    return style.set_layout(fig, layout, xaxes=style.FIXED_MARGINS, yaxes=dict(scaleanchor="x", scaleratio=1, **style.FIXED_MARGINS))


def x0_trajectories(run: H.Run, target, k: float = H.K_STD, last: int = 60, window: int = H.WINDOW,
                    n_show: int = 25, height: int = 380) -> go.Figure:
    """x0-predictions over the last `last` steps of some in-support and some hallucinated samples
    (first coordinate): the hallucinated ones keep moving; shaded: the variance window."""
    bad = H.hallucinated(run.samples, target, k)
    d = run.denoised[-last:, :, 0]
    t = run.t[-last:]
    fig = go.Figure()
    fig.add_vrect(x0=float(run.t[-window]), x1=float(run.t[-1]), fillcolor="#eeeeee", line_width=0, layer="below")
    for mask, name, color in ((~bad, "in support", GOOD_COLOR), (bad, "hallucinated", BAD_COLOR)):
        idx = np.flatnonzero(mask)[:n_show]
        xs, ys = [], []
        for i in idx:
            xs.extend(t.tolist() + [None])
            ys.extend(d[:, i].tolist() + [None])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{name} ({len(idx)} shown)",
                                 line=dict(color=color, width=1), opacity=0.7))
    for m in target.means[:, 0]:
        fig.add_hline(y=float(m), line=dict(color="#bbbbbb", width=1, dash="dot"))
    return style.set_layout(fig, style.base_layout(f"x0-predictions over the last {last} steps (window of {window} shaded)", height),
                            xaxes=dict(title=dict(text="t (timestep)"), autorange="reversed"),
                            yaxes=dict(title=dict(text="predicted x0")))


def score_histogram(scores, is_hallucinated, threshold: float, bins: int = 60, height: int = 340) -> go.Figure:
    """log10 of the trajectory variance for in-support and hallucinated samples, the threshold drawn,
    with the filter's counts in the title."""
    s = np.log10(np.maximum(np.asarray(scores, dtype=np.float64), 1e-30))
    bad = np.asarray(is_hallucinated, dtype=bool)
    c = H.filter_counts(scores, bad, threshold)
    lo, hi = float(np.min(s)), float(np.max(s))
    size = (hi - lo) / bins or 0.1
    fig = go.Figure()
    for mask, name, color in ((~bad, "in support", GOOD_COLOR), (bad, "hallucinated", BAD_COLOR)):
        fig.add_trace(go.Histogram(x=s[mask], name=name, xbins=dict(start=lo, end=hi + size, size=size),
                                   marker=dict(color=color, line=dict(width=0)), opacity=0.7))
    fig.add_vline(x=float(np.log10(max(threshold, 1e-30))), line=dict(color="black", width=2, dash="dash"))
    layout = dict(style.base_layout("Trajectory variance (dashed: threshold)", height), barmode="overlay", bargap=0)
    layout["legend"].update(_INSIDE)
    style.set_layout(fig, layout, xaxes=dict(title=dict(text="log10 trajectory variance")),
                     yaxes=dict(title=dict(text="count"), type="log", dtick="D2"))  # 1, 2, 5: not every digit
    fig.add_annotation(text=f"removed {c['removed_hallucinations']}/{c['hallucinations']} hallucinations<br>"
                            f"kept {c['kept_in_support']}/{c['in_support']} in-support",
                       xref="paper", yref="paper", x=0.01, y=0.99, xanchor="left", yanchor="top", showarrow=False,
                       align="left", font=dict(size=12), bgcolor="rgba(255,255,255,0.8)")
    return fig


def tradeoff_curve(curve: dict, counts: dict | None = None, paper: dict = H.PAPER, height: int = 380) -> go.Figure:
    """Fraction of hallucinations removed against fraction of in-support samples kept, over every
    threshold; the current threshold and the paper's headline (over 95% removed, 96% kept) marked."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=curve["kept"], y=curve["removed"], mode="lines", name="variance filter",
                             line=dict(color=GOOD_COLOR, width=2.5), line_shape="hv"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[1, 0], mode="lines", name="random filter",
                             line=dict(color="#999999", width=1, dash="dot")))
    fig.add_trace(go.Scatter(x=[paper["kept"]], y=[paper["removed"]], mode="markers+text", name="paper (Aithal et al.)",
                             text=["paper"], textposition="bottom left",
                             marker=dict(color=PAPER_COLOR, size=13, symbol="star")))
    if counts is not None:
        fig.add_trace(go.Scatter(x=[counts["kept_fraction"]], y=[counts["removed_fraction"]], mode="markers",
                                 name="this threshold", marker=dict(color="black", size=10, symbol="circle-open",
                                                                    line=dict(width=2))))
    layout = style.base_layout("Trade-off over all thresholds", height)
    layout["legend"].update(_INSIDE, yanchor="bottom", y=0.02, xanchor="left", x=0.02)
    return style.set_layout(fig, layout, xaxes=dict(title=dict(text="in-support samples kept"), range=[0, 1.02], tickformat=".0%"),
                            yaxes=dict(title=dict(text="hallucinations removed"), range=[0, 1.02], tickformat=".0%"))


def generations(results: dict, height: int = 360) -> go.Figure:
    """Hallucination rate (solid) and modes covered (dotted, right axis) per generation, one colour
    per filter. results: {label: records from hallucination.recursive_training}."""
    colors = {"none": "#6c757d", "variance": GOOD_COLOR, "random": "#9467bd"}
    fig = go.Figure()
    for label, records in results.items():
        g = [r["generation"] for r in records]
        color = colors.get(label, "#333333")
        fig.add_trace(go.Scatter(x=g, y=[r["hallucination_rate"] for r in records], mode="lines+markers",
                                 name=f"{label}: hallucination rate", line=dict(color=color, width=2.5)))
        fig.add_trace(go.Scatter(x=g, y=[r["modes_covered"] for r in records], mode="lines+markers", yaxis="y2",
                                 name=f"{label}: modes covered", line=dict(color=color, width=1.5, dash="dot")))
    layout = style.base_layout("Recursive training, generation by generation", height)
    # The four entries wrap to two rows: below the plot, clear of the title.
    layout["legend"].update(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0)
    layout["margin"].update(r=60, b=100)
    layout.update(yaxis=dict(title=dict(text="hallucination rate"), tickformat=".1%", rangemode="tozero"),
                  yaxis2=dict(overlaying="y", side="right", title=dict(text="modes covered"), rangemode="tozero", dtick=1))
    return style.set_layout(fig, layout, xaxes=dict(title=dict(text="generation"), dtick=1))
