"""Solver-search figures: a solver schedule's decisions per step as a strip, searched grids in lambda,
error against NFE for searched and fixed samplers, the search's best error against evaluations,
DC-Solver's rho per step, and the transfer matrix (fitted on A, scored on B).

Pure functions from explorer.analyses.solver_search results as plain data (Searched.to_dict(), the
precomputed defaults) to plotly figures.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..solvers import usf as _usf
from . import style

SEARCHED = "#d95f02"
GRID = "#1b9e77"
FIXED = style.REFERENCE_COLOR
DC = "#7570b3"
ROWS = ("prediction", "order", "derivative points", "relaxation", "corrector")


BELOW = dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0, bgcolor="rgba(0,0,0,0)")


def _layout(fig: go.Figure, title: str, height: int, legend_below: bool = False, **axes) -> go.Figure:
    """The figure's layout (style.set_layout; axes: its xaxes and yaxes updates)."""
    layout = style.base_layout(title, height)
    if legend_below:  # long legends under the plot, clear of the title
        layout["legend"].update(BELOW)
        layout["margin"].update(l=70, r=20, t=50, b=130)
        layout["height"] = height + 60
    return style.set_layout(fig, layout, **axes)


def _log_axis(values) -> dict:
    """A log axis ticked at 1, 2, 5 times powers of ten over the finite positive values, labelled plainly."""
    v = np.asarray([x for x in np.ravel(np.asarray(values, dtype=np.float64)) if np.isfinite(x) and x > 0])
    if len(v) == 0:
        return dict(type="log")
    lo, hi = np.floor(np.log10(v.min())), np.ceil(np.log10(v.max()))
    ticks = [m * 10.0 ** e for e in np.arange(lo, hi + 1) for m in (1, 2, 5)
             if v.min() / 1.5 <= m * 10.0 ** e <= v.max() * 1.5]
    return dict(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])


def _cells(step) -> list[tuple[float, str]]:
    """(value for the colour in [0, 1], text) for each row of ROWS."""
    relax = {"taylor": "Taylor", "bh1": "B(h)=h", "bh2": "B(h)=e^h−1"}.get(step.relax, f"1{step.coef:+.3f}h")
    relax_v = {"taylor": 0.0, "bh1": 0.35, "bh2": 0.6}.get(step.relax, 0.85)
    corr = {"none": "—", "pseudo": "UniC", "implicit": "implicit"}[step.corrector]
    if step.corrector_relax != "taylor":
        corr += f" ({step.corrector_relax})"
    pts = "—" if step.order == 1 else str(step.first_points)
    start = "" if step.start == 1 else f" @{step.start}"
    return [
        (0.15 if step.prediction == "d" else 0.75, ("data x₀" if step.prediction == "d" else "noise ε") + start),
        ((step.order - 1) / 3.0, str(step.order)),
        (0.0 if step.order == 1 else step.first_points / 3.0, pts),
        (relax_v if step.order > 1 else 0.0, relax if step.order > 1 else "—"),
        ({"none": 0.0, "pseudo": 0.6, "implicit": 0.9}[step.corrector], corr),
    ]


def decision_strip(schedule, ts=None, title: str = "The searched solver schedule, step by step",
                   height: int = 290) -> go.Figure:
    """One column per step, one row per decision (prediction, Taylor order, points estimating the
    first derivative, its relaxation, corrector), coloured by value and labelled; the columns are
    captioned with the step's times when ts is given."""
    steps = _usf.parse(schedule)
    n = len(steps)
    z = np.zeros((len(ROWS), n))
    text = np.empty((len(ROWS), n), dtype=object)
    for j, step in enumerate(steps):
        for i, (v, t) in enumerate(_cells(step)):
            z[i, j], text[i, j] = v, t
    cols = [f"step {j + 1}" for j in range(n)]
    if ts is not None:
        ts = np.asarray(ts, dtype=np.float64)
        cols = [f"{j + 1}: {ts[j]:.3g}→{ts[j + 1]:.3g}" for j in range(n)]
    fig = go.Figure(go.Heatmap(
        z=z[::-1], x=cols, y=list(ROWS)[::-1], text=text[::-1], texttemplate="%{text}", textfont=dict(size=12),
        colorscale=[[0, "#f4f6f9"], [0.5, "#c6dbef"], [1, "#6baed6"]], zmin=0, zmax=1, showscale=False, xgap=3, ygap=3,
        hovertemplate="%{x}<br>%{y}: %{text}<extra></extra>",
    ))
    layout = style.base_layout(title, height)
    layout["margin"].update(l=130, r=20, t=60, b=40)
    style.set_layout(fig, layout, xaxes=dict(side="bottom", showgrid=False), yaxes=dict(showgrid=False))
    return fig


def grids(rows: dict, title: str = "Where each grid puts its steps (relative position in λ)",
          height: int = 300) -> go.Figure:
    """rows: label -> relative positions in lambda (0 at t_start, 1 at t_end), one row of dots each."""
    fig = go.Figure()
    for k, (label, pos) in enumerate(rows.items()):
        pos = np.asarray(pos, dtype=np.float64)
        fig.add_trace(go.Scatter(
            x=pos, y=[label] * len(pos), mode="lines+markers", name=label, showlegend=False,
            line=dict(color="#cccccc", width=1), marker=dict(size=11, color=[SEARCHED, GRID, FIXED, DC][k % 4]),
            hovertemplate=f"{label}<br>position %{{x:.3f}}<extra></extra>",
        ))
    style.set_layout(fig, style.base_layout(title, height), yaxes=dict(autorange="reversed"),
                     xaxes=dict(title=dict(text="relative position in λ  (noise → data)"), range=[-0.03, 1.03]))
    return fig


def error_vs_nfe(curve: list, title: str = "Held-out error against NFE: searched against fixed",
                 height: int = 420) -> go.Figure:
    """curve: one record per NFE with 'nfe', 'best_fixed' (holdout_error, label, spacing), 'schedule'
    and 'grid_ea' (Searched.to_dict()). Held-out errors solid, the searches' fit errors dotted."""
    nfe = [r["nfe"] for r in curve]
    fig = go.Figure()
    fixed = [r["best_fixed"] for r in curve]
    fig.add_trace(go.Scatter(
        x=nfe, y=[f["holdout_error"] for f in fixed], mode="lines+markers", name="best fixed solver",
        line=dict(color=FIXED, width=2.4), text=[f"{f['label']} / {f['spacing']}" for f in fixed],
        hovertemplate="NFE %{x}<br>%{text}<br>held-out %{y:.3g}<extra></extra>",
    ))
    for key, name, color in (("schedule", "searched schedule + grid (USF)", SEARCHED),
                             ("grid_ea", "searched grid (AutoDiffusion)", GRID)):
        if not all(key in r for r in curve):
            continue
        found = [r[key] for r in curve]
        solver = found[0]["solver"]
        fig.add_trace(go.Scatter(
            x=nfe, y=[f["holdout_error"] for f in found], mode="lines+markers",
            name=name + ("" if key == "schedule" else f" for {solver}"),
            line=dict(color=color, width=2.4), legendgroup=key,
            text=[f["options"].get("schedule", solver) for f in found],
            hovertemplate="NFE %{x}<br>%{text}<br>held-out %{y:.3g}<extra></extra>",
        ))
        fig.add_trace(go.Scatter(
            x=nfe, y=[f["fit_error"] for f in found], mode="lines", name="… on its fit particles", legendgroup=key,
            line=dict(color=color, width=1.5, dash="dot"), showlegend=key == "schedule",
            hovertemplate="NFE %{x}<br>fit %{y:.3g}<extra></extra>",
        ))
    _layout(fig, title, height, legend_below=True, xaxes=dict(title=dict(text="NFE (model evaluations)"), dtick=1),
            yaxes=dict(title=dict(text="RMS error to the exact endpoint"), **_log_axis([y for t in fig.data for y in t.y])))
    return fig


def histories(runs: dict, optimum: float | None = None, title: str = "Best fit error against evaluations",
              height: int = 380) -> go.Figure:
    """runs: label -> best-so-far fit error per evaluation; optimum: the brute-force minimum, drawn flat."""
    fig = go.Figure()
    for k, (label, h) in enumerate(runs.items()):
        h = np.asarray(h, dtype=np.float64)
        fig.add_trace(go.Scatter(
            x=np.arange(1, len(h) + 1), y=h, mode="lines", name=label,
            line=dict(color=[SEARCHED, GRID, DC, FIXED][k % 4], width=2.2),
            hovertemplate=f"{label}<br>evaluation %{{x}}<br>best %{{y:.4g}}<extra></extra>",
        ))
    if optimum is not None:
        fig.add_trace(go.Scatter(
            x=[1, max(len(np.asarray(h)) for h in runs.values())], y=[optimum, optimum], mode="lines",
            name="brute-force optimum (3 steps)", line=dict(color="#111111", dash="dash", width=1.2),
            hovertemplate="brute-force optimum %{y:.4g}<extra></extra>",
        ))
    _layout(fig, title, height, legend_below=True, xaxes=dict(title=dict(text="evaluations (solver runs)"), type="log"),
            yaxes=dict(title=dict(text="best fit error so far"), **_log_axis([y for t in fig.data for y in t.y])))
    return fig


def rho_per_step(fit: dict, title: str | None = None, height: int = 380) -> go.Figure:
    """One DC-Solver fit record ('nfe', 'rho', 'rho_aligned', 'rho_exact', 'rho_cpr'): rho per step,
    fitted to the trajectory against the rho that aligns the buffer with the corrected state."""
    k = np.arange(1, fit["nfe"] + 1)
    fig = go.Figure()
    series = (("rho", "fitted to the trajectory", DC, "solid", "circle"),
              ("rho_aligned", "aligns the buffer with the corrected state", SEARCHED, "dash", "diamond"),
              ("rho_exact", "aligns the buffer with the exact path", GRID, "dot", "square"),
              ("rho_cpr", "cascade regression's prediction", FIXED, "dashdot", "x"))
    for key, name, color, dash, symbol in series:
        if key in fit:
            fig.add_trace(go.Scatter(x=k, y=fit[key], mode="lines+markers", name=name,
                                     line=dict(color=color, dash=dash, width=2), marker=dict(symbol=symbol, size=8),
                                     hovertemplate=f"{name}<br>step %{{x}}<br>ρ = %{{y:.3f}}<extra></extra>"))
    fig.add_hline(y=1.0, line=dict(color="#999999", width=1), annotation_text="ρ = 1: UniPC",
                  annotation_position="bottom left")
    _layout(fig, title or f"DC-Solver's ρ per step at NFE {fit['nfe']}", height, legend_below=True,
            xaxes=dict(title=dict(text="step"), dtick=1), yaxes=dict(title=dict(text="ρ   (t* = t_{i−1} + ρ (t_i − t_{i−1}))")))
    return fig


def dc_error_vs_nfe(fits: list, title: str = "DC-Solver against UniPC (held out)", height: int = 400) -> go.Figure:
    """fits: DC records ('nfe', 'unipc', 'dc', 'dc_cpr', 'best_fixed', 'heldout_nfe'); NFE values the
    regression never saw are marked with open symbols."""
    fits = sorted(fits, key=lambda r: r["nfe"])
    nfe = [r["nfe"] for r in fits]
    fig = go.Figure()
    for key, name, color in (("unipc", "UniPC (ρ = 1)", FIXED), ("dc", "DC-Solver, ρ fitted at this NFE", DC),
                             ("dc_cpr", "DC-Solver, ρ from the cascade regression", SEARCHED)):
        fig.add_trace(go.Scatter(
            x=nfe, y=[r[key] for r in fits], mode="lines+markers", name=name, line=dict(color=color, width=2.2),
            marker=dict(size=9, symbol=["circle-open" if r["heldout_nfe"] else "circle" for r in fits]),
            hovertemplate=f"{name}<br>NFE %{{x}}<br>held-out %{{y:.3g}}<extra></extra>",
        ))
    fig.add_trace(go.Scatter(
        x=nfe, y=[r["best_fixed"]["holdout_error"] for r in fits], mode="lines", name="best fixed solver",
        line=dict(color="#111111", dash="dot", width=1.5),
        hovertemplate="best fixed<br>NFE %{x}<br>%{y:.3g}<extra></extra>",
    ))
    _layout(fig, title, height, legend_below=True, xaxes=dict(title=dict(text="NFE  (open: not fitted by the regression)"), dtick=1),
            yaxes=dict(title=dict(text="RMS error to the exact endpoint"), **_log_axis([y for t in fig.data for y in t.y])))
    return fig


def dc_guided(guided: dict, title: str = "DC-Solver under guidance (held out)", height: int = 400) -> go.Figure:
    """guided: solver_search.dc_guidance output. Held-out error against NFE at each guidance scale w (one
    colour each, red for the scale the regression never saw): UniPC dotted, DC-Solver with ρ from the
    cascade regression over (NFE, w) solid; open markers: never fitted."""
    fig = go.Figure()
    ws = guided["ws"] + [guided["heldout_w"]]
    palette = ["#9ecae1", "#4292c6", "#08306b"]
    for k, w in enumerate(ws):
        rows = sorted((r for r in guided["rows"] if r["w"] == w), key=lambda r: r["nfe"])
        unseen = w == guided["heldout_w"]
        color = "#e31a1c" if unseen else palette[k % len(palette)]
        for key, name, width, dash in (("unipc", "UniPC", 1.4, "dot"), ("dc_cpr", "DC-Solver (regression)", 2.6, "solid")):
            fig.add_trace(go.Scatter(
                x=[r["nfe"] for r in rows], y=[r[key] for r in rows], mode="lines+markers",
                name=f"{name}, w = {w:g}" + (" (unseen)" if unseen else ""),
                line=dict(color=color, width=width, dash=dash),
                marker=dict(size=8, symbol=["circle-open" if r["heldout"] else "circle" for r in rows]),
                hovertemplate=f"{name}, w = {w:g}<br>NFE %{{x}}<br>held-out %{{y:.3g}}<extra></extra>",
            ))
    _layout(fig, title, height, legend_below=True, xaxes=dict(title=dict(text="NFE  (open: not fitted by the regression)"), dtick=1),
            yaxes=dict(title=dict(text="RMS error to the exact endpoint"), **_log_axis([y for t in fig.data for y in t.y])))
    return fig


def transfer_matrix(matrix: dict, title: str = "Gain over the best fixed solver: fitted on a row, scored on a column",
                    height: int = 360) -> go.Figure:
    """matrix: solver_search.transfer output. Cells: the gain (best fixed held-out error / the
    sampler's) on a log colour scale centred on 1 (no gain); the diagonal is the in-setting gain."""
    gain = np.asarray(matrix["gain"], dtype=np.float64)
    z = np.log10(np.clip(gain, 1e-3, 1e3))
    text = [[f"×{g:.2f}" for g in row] for row in gain]
    bound = max(0.3, float(np.nanmax(np.abs(z))))
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"on {c}" for c in matrix["cols"]], y=[f"fit {r}" for r in matrix["rows"]], text=text,
        texttemplate="%{text}", textfont=dict(size=13), zmin=-bound, zmax=bound, zmid=0,
        colorscale=[[0, "#b2182b"], [0.5, "#f7f7f7"], [1, "#2166ac"]],
        colorbar=dict(title="gain", tickvals=[-1, -0.5, 0, 0.5, 1], ticktext=["×0.1", "×0.3", "×1", "×3", "×10"]),
        hovertemplate="%{y}<br>%{x}<br>gain %{text}<extra></extra>",
    ))
    layout = style.base_layout(title, height)
    layout["margin"].update(l=220, r=20, t=60, b=80)
    style.set_layout(fig, layout, yaxes=dict(autorange="reversed"))
    return fig
