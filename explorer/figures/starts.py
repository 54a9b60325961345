"""Starts figures: what a start that is not p_T costs (brightness histograms against the exact p_0 and
the closed-form predictions, the tables' signal near T), Denoising MCMC (the chain in (x, level), its level
histogram against the prior, error and mode-weight bias against NFE), and optimal boundary conditions
(the candidates, the shared start's outputs per condition).

Pure functions from analyses results to plotly figures.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analyses import terminal_snr as T
from ..analyses.guidance import conditional_target
from . import style
from .trajectories import _f32, _target_contour

METHOD_COLORS = {
    "N(0, I) start": "#d62728", "exact p_T start": "#2ca02c", "zero terminal SNR": "#1f4e9c", "One More Step": "#ff9f1c",
}
DMCMC_COLORS = ["#6c757d", "#343a40", "#d62728", "#1f4e9c", "#2ca02c", "#9467bd"]


def brightness(rows: list[dict], target, kind: str | None = "ode", bins: int = 60, height: int = 420) -> go.Figure:
    """Left: histogram (as density) of each start's samples along the brightness direction, the exact density of
    p_0 there (black) and, for Gaussian data, each start's closed-form prediction (dashed; kind "ode" or "sde").
    Right: each start's brightness mean and std (bars: 2 standard errors) against p_0's (cross), and the closed
    forms (open markers)."""
    sd = T.stable_diffusion()
    e = rows[0]["direction"]
    values = {r["name"]: r["sample"] @ e for r in rows}
    lo = min(v.min() for v in values.values())
    hi = max(v.max() for v in values.values())
    edges = np.linspace(lo, hi, bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig = make_subplots(rows=1, cols=2, column_widths=[0.64, 0.36], horizontal_spacing=0.1,
                        subplot_titles=("Histogram along the brightness direction", "Mean and spread of the brightness"))
    grid = np.linspace(lo, hi, 400)
    fig.add_trace(go.Scatter(x=grid, y=_f32(T.projected_density(target, sd, 0.0, e, grid)), mode="lines",
                             name="exact p₀", line=dict(color="#111111", width=2.5)), row=1, col=1)
    gaussian = target.n_components == 1 and kind is not None
    n = len(rows[0]["sample"])
    for r in rows:
        color = METHOD_COLORS.get(r["name"], style.SAMPLE_COLOR)
        hist, _ = np.histogram(values[r["name"]], edges, density=True)
        fig.add_trace(go.Scatter(x=centres, y=_f32(hist), mode="lines", line=dict(color=color, width=1.5, shape="hvh"),
                                 name=r["name"], legendgroup=r["name"]), row=1, col=1)
        fig.add_trace(go.Scatter(x=[r["mean"]], y=[r["std"]], mode="markers", showlegend=False, legendgroup=r["name"],
                                 marker=dict(size=11, color=color, line=dict(color="#111", width=1)),
                                 error_x=dict(array=[2 * r["std"] / np.sqrt(n)], color=color),
                                 error_y=dict(array=[2 * r["std"] / np.sqrt(2 * n)], color=color),
                                 hovertemplate=f"{r['name']}<br>mean %{{x:.3f}}, std %{{y:.3f}}<extra></extra>"), row=1, col=2)
        if gaussian and r["name"] != "zero terminal SNR":
            sh = T.shrink(target.means[0], target.covs[0], sd, r["t_start"], 0.0, kind=kind, method=r["name"], direction=e)
            pdf = np.exp(-0.5 * (grid - sh["mean"]) ** 2 / sh["std"] ** 2) / np.sqrt(2 * np.pi * sh["std"] ** 2)
            fig.add_trace(go.Scatter(x=grid, y=_f32(pdf), mode="lines", showlegend=False, hoverinfo="skip", legendgroup=r["name"],
                                     line=dict(color=color, width=1.2, dash="dash")), row=1, col=1)
            fig.add_trace(go.Scatter(x=[sh["mean"]], y=[sh["std"]], mode="markers", showlegend=False, legendgroup=r["name"],
                                     marker=dict(size=15, color="rgba(0,0,0,0)", line=dict(color=color, width=2), symbol="circle-open"),
                                     hovertemplate=f"{r['name']}, closed form<br>mean %{{x:.3f}}, std %{{y:.3f}}<extra></extra>"),
                          row=1, col=2)
    fig.add_trace(go.Scatter(x=[rows[0]["true_mean"]], y=[rows[0]["true_std"]], mode="markers", name="p₀",
                             marker=dict(size=16, symbol="x-thin", line=dict(color="#111", width=3)), showlegend=False,
                             hovertemplate="exact p₀<br>mean %{x:.3f}, std %{y:.3f}<extra></extra>"), row=1, col=2)
    fig.add_vline(x=float(rows[0]["true_mean"]), line=dict(color="#111111", width=1, dash="dot"), row=1, col=1)
    return style.set_layout(fig, dict(
        style.base_below("Brightness of the samples: the start against the exact p₀", height),
        xaxis=dict(title=dict(text="brightness (the data's widest direction)")), yaxis=dict(title=dict(text="density")),
        xaxis2=dict(title=dict(text="mean")), yaxis2=dict(title=dict(text="std"))))


def terminal_signal(n_steps: int = 50, height: int = 320) -> go.Figure:
    """sqrt(abar_t) near the end of Stable Diffusion's table and of its zero-terminal-SNR rescale, with the
    first time of each spacing's grid: where a sampler starts, and how much signal is left there."""
    sd, zero = T.stable_diffusion(), T.zero_snr_stable_diffusion()
    t = np.arange(850.0, 1000.0)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=t, y=_f32(sd.alpha(t)), name="Stable Diffusion (scaled linear)", line=dict(color="#d62728", width=2.5)))
    fig.add_trace(go.Scatter(x=t, y=_f32(zero.alpha(t)), name="rescaled to zero terminal SNR", line=dict(color="#1f4e9c", width=2.5)))
    for spacing, symbol in zip(T.SPACINGS, ("circle", "diamond", "square")):
        t0 = float(T.table_timesteps(n_steps, spacing)[0])
        fig.add_trace(go.Scatter(x=[t0], y=[float(sd.alpha(t0))], mode="markers+text", text=[f"{spacing}: t = {t0:.0f}"],
                                 textposition="top center", marker=dict(size=10, symbol=symbol, color="#d62728"),
                                 showlegend=False, hovertemplate=f"{spacing} starts at t = {t0:.0f}, √ᾱ = %{{y:.4f}}<extra></extra>"))
    return style.set_layout(fig, style.base_layout(f"Signal left where sampling starts ({n_steps} steps)", height),
                            xaxes=dict(title=dict(text="table timestep t")),
                            yaxes=dict(title=dict(text="√ᾱ_t (share of x0 in x_t)"), rangemode="tozero"))


# Denoising MCMC.


def chain(chains, target, n_paths: int = 6, height: int = 440) -> go.Figure:
    """The chain in (x, noise level): the joint density pi(sigma) p_sigma(x) (first coordinate; levels on a log
    axis), a few chains' paths over the sweeps, and each round's picked state (where the solve starts)."""
    from ..analyses.dmcmc import log_joint

    levels = chains.levels
    x = chains.x[..., 0]
    lo, hi = np.quantile(x, [0.005, 0.995])
    box = np.array([[lo - 0.5, hi + 0.5], [lo - 0.5, hi + 0.5]])
    u = np.linspace(box[0, 0], box[0, 1], 160)
    pts = np.zeros((len(u), target.dim))
    pts[:, 0] = u
    marginal = target
    if target.dim > 1:  # the first coordinate's marginal: a 1D mixture
        from ..foundations.mixture import GaussianMixture

        marginal = GaussianMixture(target.means[:, :1], target.covs[:, :1, :1], target.weights)
        pts = pts[:, :1]
    lj = log_joint(marginal, pts, levels)  # (x, level)
    z = np.exp(lj - lj.max(axis=0, keepdims=True))  # each level's density, scaled to its own peak
    fig = go.Figure()
    fig.add_trace(go.Heatmap(x=u, y=np.log10(levels), z=_f32(z.T), colorscale=style.DENSITY_SCALE, showscale=False,
                             hoverinfo="skip", name="p_σ(x)"))
    pick = np.linspace(0, chains.x.shape[1] - 1, min(n_paths, chains.x.shape[1])).astype(int)
    for j, c in enumerate(pick):
        color = style.MODE_PALETTE_1D[j % len(style.MODE_PALETTE_1D)]
        fig.add_trace(go.Scatter(x=_f32(x[:, c]), y=_f32(np.log10(chains.sigma[:, c])), mode="lines+markers",
                                 line=dict(color=color, width=1.2), marker=dict(size=4, color=color),
                                 name=f"chain {c}", showlegend=j == 0, legendgroup="chains"))
        fig.add_trace(go.Scatter(x=_f32(chains.picked_x[:, c, 0]), y=_f32(np.log10(chains.picked_sigma[:, c])), mode="markers",
                                 marker=dict(size=11, symbol="star", color=color, line=dict(color="#111", width=1)),
                                 name="picked (solve starts)", showlegend=j == 0, legendgroup="picked"))
    ticks = np.arange(np.floor(np.log10(levels.min())), np.ceil(np.log10(levels.max())) + 1)
    return style.set_layout(fig, style.base_layout(f"Chains in (x, σ): variant {chains.variant}", height),
                            xaxes=dict(title=dict(text="x (first coordinate)"), range=list(box[0])),
                            yaxes=dict(title=dict(text="noise level σ"), tickvals=ticks, ticktext=[f"{10 ** v:g}" for v in ticks]))


def level_histogram(chains_by_name: dict, height: int = 360) -> go.Figure:
    """Share of chain states at each level (all sweeps) against the prior (uniform over the grid), and the
    levels the solves start from (each round's pick)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Chain states", "Picked states (solve starts)"), shared_yaxes=False)
    for j, (name, ch) in enumerate(chains_by_name.items()):
        L = len(ch.levels)
        color = DMCMC_COLORS[(j + 2) % len(DMCMC_COLORS)]
        for col, k in ((1, ch.k[1:]), (2, ch.picked_k)):
            share = np.bincount(np.ravel(k), minlength=L) / np.size(k)
            fig.add_trace(go.Scatter(x=_f32(ch.levels), y=_f32(share), mode="lines", line=dict(color=color, width=2, shape="hvh"),
                                     name=name, showlegend=col == 1, legendgroup=name), row=1, col=col)
        if j == 0:
            fig.add_trace(go.Scatter(x=_f32(ch.levels), y=np.full(L, 1.0 / L, dtype=np.float32), mode="lines",
                                     line=dict(color="#111", dash="dash"), name="prior (uniform)"), row=1, col=1)
    return style.set_layout(fig, dict(style.base_below("Noise levels the chains visit", height), yaxis=dict(title=dict(text="share"))),
                            xaxes=dict(type="log", title=dict(text="σ"), dtick=1))


def dmcmc_vs_nfe(records: list[dict], floor: dict | None = None, height: int = 400) -> go.Figure:
    """Sliced W2 to the target and mode-weight bias (TV of the per-mode mass) against NFE per sample, one line per
    method, with the finite-sample floor (exact samples of the same size) dashed."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Distance to the target (sliced W2)", "Mode-weight bias (TV)"))
    methods = list(dict.fromkeys(r["method"] for r in records))
    for j, m in enumerate(methods):
        rs = sorted((r for r in records if r["method"] == m), key=lambda r: r["nfe"])
        color = DMCMC_COLORS[j % len(DMCMC_COLORS)]
        for col, key in ((1, "distance"), (2, "mode_bias")):
            fig.add_trace(go.Scatter(x=[r["nfe"] for r in rs], y=[max(r[key], 1e-4) for r in rs], mode="lines+markers",
                                     name=m, legendgroup=m, showlegend=col == 1, line=dict(color=color, width=2,
                                     dash="dot" if m.startswith("plain") else "solid"),
                                     hovertemplate=f"{m}<br>NFE %{{x}}<br>%{{y:.3g}}<extra></extra>"), row=1, col=col)
    if floor is not None:
        for col, key in ((1, "distance"), (2, "mode_bias")):
            fig.add_hline(y=max(floor[key], 1e-4), line=dict(color="#999", dash="dash"), row=1, col=col)
    return style.set_layout(fig, style.base_below("DMCMC against plain sampling, at equal NFE per sample", height),
                            xaxes=dict(type="log", title=dict(text="NFE per sample")), yaxes=dict(type="log", dtick=1))


# Optimal boundary conditions.


def boundary(result, target, height: int = 480) -> go.Figure:
    """Left: the candidate starts coloured by their mean expected loss, the shared best (star) and each
    condition's own best (diamonds). Right: every candidate's output under each condition (small dots, the
    condition's colour) and the shared start's outputs (stars), over the target's modes."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Candidate starts x_T", "Outputs h(x_T, c) per condition"),
                        horizontal_spacing=0.08)
    mean = result.mean_loss
    s = result.starts
    fig.add_trace(go.Scatter(x=_f32(s[:, 0]), y=_f32(s[:, 1]), mode="markers", name="candidates",
                             marker=dict(size=6, color=_f32(mean), colorscale="Viridis_r", showscale=True,
                                         colorbar=dict(title="loss", x=0.44, len=0.8, thickness=12)),
                             hovertemplate="mean loss %{marker.color:.3g}<extra></extra>"), row=1, col=1)
    palette = style.MODE_PALETTE_1D
    for i, c in enumerate(result.labels):
        k = int(result.best_per_class[i])
        fig.add_trace(go.Scatter(x=[s[k, 0]], y=[s[k, 1]], mode="markers", name=f"best for c = {c}", legendgroup=f"c{c}",
                                 marker=dict(size=11, symbol="diamond", color=palette[i % len(palette)], line=dict(color="#111", width=1))),
                      row=1, col=1)
    fig.add_trace(go.Scatter(x=[s[result.best, 0]], y=[s[result.best, 1]], mode="markers", name="shared best",
                             marker=dict(size=16, symbol="star", color="#111")), row=1, col=1)
    box = style.target_box(target)
    fig.add_trace(_target_contour(target, box, n=70), row=1, col=2)
    for i, c in enumerate(result.labels):
        color = palette[i % len(palette)]
        out = result.outputs[i]
        fig.add_trace(go.Scatter(x=_f32(out[:, 0]), y=_f32(out[:, 1]), mode="markers", marker=dict(size=4, color=color, opacity=0.5),
                                 name=f"c = {c}: random starts", legendgroup=f"c{c}", showlegend=False), row=1, col=2)
        fig.add_trace(go.Scatter(x=[out[result.best, 0]], y=[out[result.best, 1]], mode="markers", showlegend=False,
                                 marker=dict(size=16, symbol="star", color=color, line=dict(color="#111", width=1.2)),
                                 hovertemplate=f"c = {c}: the shared start's output<extra></extra>"), row=1, col=2)
        m = conditional_target(target, int(c)).mean()
        fig.add_trace(go.Scatter(x=[m[0]], y=[m[1]], mode="markers", showlegend=False, hovertemplate=f"E[x0 | c = {c}]<extra></extra>",
                                 marker=dict(size=10, symbol="x-thin", color=color, line=dict(color=color, width=2))), row=1, col=2)
    layout = dict(style.base_below(f"One start for every condition ({result.criterion})", height),
                  xaxis2=dict(range=list(box[0])), yaxis=dict(scaleanchor="x"), yaxis2=dict(range=list(box[1]), scaleanchor="x2"))
    return style.set_layout(fig, layout, xaxes=style.FIXED_MARGINS, yaxes=style.FIXED_MARGINS)


def boundary_ranks(result, height: int = 300) -> go.Figure:
    """Each condition's loss of every candidate, candidates ordered by their mean loss: rows that rise
    together agree on the best start; a row whose minimum sits elsewhere does not."""
    order = np.argsort(result.mean_loss)
    fig = go.Figure()
    for i, c in enumerate(result.labels):
        fig.add_trace(go.Scatter(x=np.arange(len(order)), y=_f32(result.loss[i, order]), mode="lines", name=f"c = {c}",
                                 line=dict(color=style.MODE_PALETTE_1D[i % len(style.MODE_PALETTE_1D)], width=1.5)))
    fig.add_vline(x=0, line=dict(color="#111", dash="dot"))
    return style.set_layout(fig, style.base_layout("Loss of each candidate under each condition (ordered by the mean)", height),
                            xaxes=dict(title=dict(text="candidate (rank of its mean loss)")),
                            yaxes=dict(title=dict(text="expected loss")))


__all__ = ["brightness", "terminal_signal", "chain", "level_histogram", "dmcmc_vs_nfe", "boundary", "boundary_ranks"]
