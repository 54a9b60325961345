"""Guidance figures: samples over the density each method intends, every method's distance and mode masses
against its strength, CFG's score error per noise level, the trained classifier against the exact class
posterior, SVDD per number of candidates. Pure functions from the records of explorer.analyses.tilted,
minority, svdd and guidance_methods to plotly figures."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analyses import guidance_methods as GM
from ..analyses.hallucination import hallucinated
from . import style

METHOD_COLORS = {
    "cfg-ode": "#1f4e9c", "cfg-sde": "#6baed6", "minority-exact": "#2ca02c", "minority-learned": "#98df8a",
    "svdd-exact": "#d62728", "svdd-pm": "#ff9896", "gradient-pm": "#9467bd",
}
OFF_COLOR = "#ff7f0e"
STRENGTH_AXIS = "guidance strength: w (CFG, minority), 1/α (SVDD, reward gradient)"


SIGMA_AXIS = dict(type="log", title=dict(text="noise level σ/α (log)"))


def over_density(want, samples, target, title: str | None = None, n_show: int = 2000, height: int = 480) -> go.Figure:
    """The samples over the intended target's density (want: guidance_methods.Intended, or anything with
    grid, values and name). 1D: the density and the samples' histogram (density-normalised); 2D: the
    density's filled contours, the samples as dots, those beyond 3 std of every mode in orange."""
    x = np.asarray(samples, dtype=np.float64)
    x = x[np.all(np.isfinite(x), axis=1)]
    grid, values = want.grid, np.asarray(want.values)
    fig = go.Figure()
    if grid.dim == 1:
        lo, hi = style.target_box(target, pad=0.1)[0]
        fig.add_trace(go.Histogram(x=x[:, 0], histnorm="probability density", name=f"samples ({len(x)})",
                                   xbins=dict(start=lo, end=hi, size=(hi - lo) / 120),
                                   marker=dict(color=style.SAMPLE_COLOR, line=dict(width=0)), opacity=0.55))
        fig.add_trace(go.Scatter(x=grid.axes[0], y=values, mode="lines", name="intended density",
                                 line=dict(color=style.TARGET_COLOR, width=2)))
        return style.set_layout(fig, dict(style.base_layout(title or f"Samples over {want.name}", height), bargap=0),
                                xaxes=dict(title=dict(text="x"), range=[lo, hi]), yaxes=dict(title=dict(text="density")))
    box = style.view_box(target, x, widen=1.3, square=True) if len(x) else style.target_box(target)
    k = max(1, grid.n // 150)  # at most ~150 x 150 values to draw
    v = values.reshape(grid.shape)[::k, ::k].T  # contour wants z[y][x]
    scale = [[0.0, "rgba(255, 255, 255, 0)"]] + style.DENSITY_SCALE[1:]  # no mass: transparent, not a tinted box
    fig.add_trace(go.Contour(x=grid.axes[0][::k], y=grid.axes[1][::k], z=np.sqrt(v / v.max()), colorscale=scale,
                             zmin=0.0, zmax=1.0, showscale=False,
                             contours=dict(coloring="fill", showlines=False, start=0.08, end=1.0, size=0.08),
                             hoverinfo="skip", name="intended density"))
    show = x[:n_show]
    bad = hallucinated(show, target) if len(show) else np.zeros(0, bool)
    for mask, name, color in ((~bad, "samples", style.SAMPLE_COLOR), (bad, "beyond 3 std of every mode", OFF_COLOR)):
        if mask.any():
            fig.add_trace(style.points(len(show), x=show[mask, 0], y=show[mask, 1], mode="markers",
                                       name=f"{name} ({int(mask.sum())})", marker=dict(color=color, size=3.5, opacity=0.65)))
    fig.add_trace(go.Scatter(x=target.means[:, 0], y=target.means[:, 1], mode="markers", name="modes",
                             text=[f"mode {k}, weight {w:.3f}" for k, w in enumerate(target.weights)],
                             hovertemplate="%{text}<extra></extra>",
                             marker=dict(color="black", symbol="x", size=6 + 40 * target.weights)))
    layout = style.base_layout(title or f"Samples over {want.name}", height)
    layout["legend"].update(orientation="h", yanchor="top", y=-0.12, xanchor="left", x=0)
    return style.set_layout(fig, layout, xaxes=dict(range=list(box[0]), title=dict(text="x₁"), **style.FIXED_MARGINS),
                            yaxes=dict(range=list(box[1]), title=dict(text="x₂"), scaleanchor="x", scaleratio=1, **style.FIXED_MARGINS))


def strength_sweep(records, title: str | None = None, height: int = 760) -> go.Figure:
    """Every method against its guidance strength (guidance_methods.sweep records), on one plot: the
    distance to its own intended target (dotted: the finite-sample floor), the mass on the modes that
    target favours (dotted: the target's own), and the fraction of samples off the support."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("distance to the intended target (sliced W2)",
                                        "mass on the modes the intended target favours",
                                        "off the support (beyond 3 std of every mode)"))
    for method in dict.fromkeys(r["method"] for r in records):
        rows = sorted((r for r in records if r["method"] == method), key=lambda r: r["strength"])
        color, name = METHOD_COLORS.get(method, "#444"), GM.METHODS.get(method, method)
        s = [r["strength"] for r in rows]
        hover = "%{x:g}: %{y:.3g}<extra>" + name + "</extra>"
        for row, key, dotted in ((1, "distance", "floor"), (2, "mass_favoured", "target_mass_favoured"), (3, "off_support", None)):
            fig.add_trace(go.Scatter(x=s, y=[r[key] for r in rows], mode="lines+markers", name=name, legendgroup=method,
                                     showlegend=row == 1, line=dict(color=color, width=2), marker=dict(size=7),
                                     hovertemplate=hover), row=row, col=1)
            if dotted:
                fig.add_trace(go.Scatter(x=s, y=[r[dotted] for r in rows], mode="lines", legendgroup=method, showlegend=False,
                                         line=dict(color=color, width=1.2, dash="dot"),
                                         hovertemplate="%{x:g}: %{y:.3g}<extra>" + name + (" floor" if row == 1 else ", intended") + "</extra>"),
                              row=row, col=1)
    layout = style.base_layout(title or "Every method against its strength, each measured against what it intends", height)
    layout["legend"] = dict(orientation="h", yanchor="bottom", y=1.03, xanchor="left", x=0, font=dict(size=11))
    layout["margin"].update(t=110)
    layout.update(yaxis=dict(type="log"), yaxis2=dict(range=[-0.03, 1.03]), yaxis3=dict(range=[-0.03, 1.03]),
                  xaxis3=dict(title=dict(text=STRENGTH_AXIS)))  # rows 1, 2, 3
    return style.set_layout(fig, layout)


def score_error(records, w: float, title: str | None = None, height: int = 400) -> go.Figure:
    """CFG's score against the noised p_w's (tilted.score_error records): RMS |s_CFG − s_w| per noise level
    with the importance-sampling error bar, and the RMS of |s_w| for scale."""
    sig = [r["sigma"] for r in records]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=sig, y=[r["error"] for r in records], mode="lines+markers", name="RMS |s_CFG − s_w|",
                             error_y=dict(type="data", array=[r["error_se"] for r in records], visible=True, thickness=1),
                             line=dict(color=style.SAMPLE_COLOR, width=2),
                             customdata=[[r["error_se"], r["ess"]] for r in records],
                             hovertemplate="σ/α = %{x:.3g}: %{y:.3g} ± %{customdata[0]:.2g} (ESS %{customdata[1]:.0f})<extra></extra>"))
    fig.add_trace(go.Scatter(x=sig, y=[r["scale"] for r in records], mode="lines", name="RMS |s_w| (for scale)",
                             line=dict(color=style.REFERENCE_COLOR, width=1.5, dash="dash"),
                             hovertemplate="σ/α = %{x:.3g}: %{y:.3g}<extra></extra>"))
    return style.set_layout(fig, style.base_layout(title or f"CFG's score against the noised p_w's, w = {w:g}", height),
                            xaxes=SIGMA_AXIS, yaxes=dict(title=dict(text="score (RMS over x_t ~ noised p_w)"), rangemode="tozero"))


def classifier_agreement(records, title: str | None = None, height: int = 380) -> go.Figure:
    """The trained classifier against the exact class posterior per noise level (minority.classifier_agreement
    records): mean total variation, and the same between two Monte Carlo estimates of the exact one."""
    sig = [float(np.exp(-r["lambda_"])) for r in records]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=sig, y=[r["tv"] for r in records], mode="lines+markers", name="trained vs exact",
                             line=dict(color=METHOD_COLORS["minority-learned"], width=2.5),
                             hovertemplate="σ/α = %{x:.3g}: TV %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=sig, y=[r["tv_mc"] for r in records], mode="lines", name="exact vs exact (Monte Carlo noise)",
                             line=dict(color=style.REFERENCE_COLOR, width=1.5, dash="dot"),
                             hovertemplate="σ/α = %{x:.3g}: TV %{y:.3f}<extra></extra>"))
    return style.set_layout(fig, style.base_layout(title or "The trained noisy classifier against the exact class posterior", height),
                            xaxes=SIGMA_AXIS, yaxes=dict(title=dict(text="mean total variation"), rangemode="tozero"))


def svdd_vs_m(records, title: str | None = None, height: int = 460) -> go.Figure:
    """SVDD per number of candidates M (svdd.compare records): distance to p(x) exp(r / α) and mean reward, for
    each value (exact, PM) and α; gradient guidance as horizontal lines; dotted: the floor and E[r] under
    the target."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("distance to p(x) exp(r(x) / α)", "mean reward"))
    alphas = sorted({r["alpha"] for r in records}, reverse=True)
    dashes = ["solid", "dash", "dashdot", "longdash"]
    Ms = sorted({r["M"] for r in records if r["M"]})
    for j, alpha in enumerate(alphas):
        rows = [r for r in records if r["alpha"] == alpha]
        for method in ("svdd-exact", "svdd-pm"):
            rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["M"])
            if not rs:
                continue
            name = f"{GM.METHODS[method]}, α = {alpha:g}"
            for col, key in ((1, "distance"), (2, "reward")):
                fig.add_trace(go.Scatter(x=[r["M"] for r in rs], y=[r[key] for r in rs], mode="lines+markers", name=name,
                                         legendgroup=name, showlegend=col == 1,
                                         line=dict(color=METHOD_COLORS[method], dash=dashes[j % 4], width=2),
                                         hovertemplate="M = %{x}: %{y:.3g}<extra>" + name + "</extra>"), row=1, col=col)
        for method in ("gradient-pm", "gradient-exact"):
            g = [r for r in rows if r["method"] == method]
            if g and Ms:
                name = f"{'reward gradient (posterior mean)' if method == 'gradient-pm' else 'exact gradient'}, α = {alpha:g}"
                color = METHOD_COLORS["gradient-pm"] if method == "gradient-pm" else "#444444"
                for col, key in ((1, "distance"), (2, "reward")):
                    fig.add_trace(go.Scatter(x=[Ms[0], Ms[-1]], y=[g[0][key]] * 2, mode="lines", name=name, legendgroup=name,
                                             showlegend=col == 1, line=dict(color=color, dash=dashes[j % 4], width=1.5),
                                             hovertemplate="%{y:.3g}<extra>" + name + "</extra>"), row=1, col=col)
        if rows and Ms:
            for col, key in ((1, "floor"), (2, "target_reward")):
                fig.add_trace(go.Scatter(x=[Ms[0], Ms[-1]], y=[rows[0][key]] * 2, mode="lines", showlegend=False,
                                         line=dict(color=style.REFERENCE_COLOR, dash="dot", width=1.2),
                                         hovertemplate=("floor" if col == 1 else "E[r] under the target") + f", α = {alpha:g}: " + "%{y:.3g}<extra></extra>"),
                              row=1, col=col)
    layout = style.base_layout(title or "SVDD against the closed-form tilted target, per number of candidates M", height)
    layout["legend"] = dict(orientation="v", x=1.01, xanchor="left", y=1.0, font=dict(size=10))
    layout["yaxis"] = dict(type="log")  # row 1, col 1
    return style.set_layout(fig, layout, xaxes=dict(type="log", title=dict(text="candidates per step M"),
                                                    dtick=np.log10(2) if len(Ms) > 1 else None))
