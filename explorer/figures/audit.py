"""Figures of the scheduler audit (ex.audit): error against NFE per row, the flags of every row at a
glance, and one row's run step by step (its distance to the exact path and the noise level its
model was told against the one its update used)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..analyses import metrics
from ..analyses.audit import FLAGS, MISMATCH_TOL
from . import style

COLORS = [style.SAMPLE_COLOR, *qualitative.D3[1:]]


def label(row: dict) -> str:
    """A row's name: 'Scheduler · config' (and ' · oracle' for the oracle mode)."""
    return f"{row['scheduler'].removesuffix('Scheduler')} · {row['config']}" + (" · oracle" if row.get("oracle") else "")


def _series(row: dict, key: str):
    """(NFE spent, values, inference steps) over the row's nfes where the run gave a finite value."""
    out = [(row.get(f"nfe_{n}"), row.get(f"{key}_{n}"), n) for n in row.get("nfes") or []]
    out = [(e, v, n) for e, v, n in out if e is not None and v is not None and np.isfinite(v) and v > 0]
    return tuple(np.array(c, dtype=np.float64) for c in zip(*out)) if out else (np.array([]),) * 3


def error_vs_nfe(rows, title: str | None = None, height: int = 420) -> go.Figure:
    """Error (path rows: RMS distance to the exact path; stochastic rows: sliced W2 to the exact
    marginal) against the NFE spent, log-log: solid at the scheduler's own final noise level, dashed
    at sigma = 0 (what a pipeline outputs). A stochastic row's finite-sample floor is a dotted line."""
    if isinstance(rows, dict):
        rows = [rows]
    fig = go.Figure()
    for k, row in enumerate(rows):
        color, name = COLORS[k % len(COLORS)], label(row)
        for key, dash, where in (("error", "solid", "own final level"), ("error0", "dash", "sigma 0")):
            nfe, err, steps = _series(row, key)
            metric = "sliced W2" if row.get("stochastic") else "RMS error"
            fig.add_trace(go.Scatter(
                x=nfe, y=err, mode="lines+markers", name=f"{name} ({where})", legendgroup=name,
                line=dict(color=color, dash=dash, width=2), marker=dict(size=6), customdata=steps,
                hovertemplate=f"{where}: {metric} %{{y:.3g}}<br>NFE %{{x}}, %{{customdata}} inference steps"
                              f"<extra>{name}</extra>",
            ))
        if row.get("stochastic") and row.get("floor0") is not None and np.isfinite(row["floor0"]):
            nfe, _, _ = _series(row, "error0")
            if len(nfe):
                fig.add_trace(go.Scatter(
                    x=[nfe.min(), nfe.max()], y=[row["floor0"]] * 2, mode="lines", name=f"{name} (floor)",
                    legendgroup=name, line=dict(color=color, dash="dot", width=1.5),
                    hovertemplate="finite-sample floor at sigma 0: %{y:.3g}<extra>" + name + "</extra>",
                ))
    layout = style.base_layout(title or "Error against NFE", height)
    layout["legend"] = dict(orientation="h", x=0.0, xanchor="left", y=-0.22, yanchor="top", font=dict(size=11))
    layout["margin"].update(b=40 + 22 * len(fig.data))
    spent = sorted({float(v) for trace in fig.data for v in np.asarray(trace.x, dtype=np.float64) if np.isfinite(v)})
    return style.set_layout(fig, layout, yaxes=dict(type="log", title=dict(text="error"), tickformat=".2g"), xaxes=dict(
        type="log", title=dict(text="NFE (model calls spent)"), tickvals=spent, ticktext=[f"{v:g}" for v in spent]))


def flags(rows, title: str | None = None, height: int | None = None) -> go.Figure:
    """Which flag each row raises: a grid of rows x flags (dark: raised; grey: the row has no runs)."""
    names = list(FLAGS)
    labels = [label(r) for r in rows]
    z, text = [], []
    for row in rows:
        ran = row.get("status") != "unsupported" and any(row.get(f"nfe_{n}") is not None for n in row.get("nfes") or [])
        raised = set(row.get("flags") or [])
        z.append([(1.0 if f in raised else 0.0) if ran else 0.5 for f in names])
        text.append([FLAGS[f] if f in raised else ("no run: " + (row.get("message") or "")[:120] if not ran else "")
                     for f in names])
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=labels, text=text, zmin=0, zmax=1, showscale=False, xgap=2, ygap=2,
        colorscale=[[0.0, "#f4f6fa"], [0.5, "#d5d8dd"], [1.0, style.TARGET_COLOR]],
        hovertemplate="%{y}<br>%{x}: %{text}<extra></extra>",
    ))
    layout = style.base_layout(title or "Flags raised per row", height or max(220, 90 + 18 * len(rows)))
    layout["margin"].update(l=10)
    return style.set_layout(fig, layout, xaxes=dict(side="top", tickangle=-30, automargin=True),
                            yaxes=dict(autorange="reversed", automargin=True, tickfont=dict(size=11)))


def step_values(traj, ref, stochastic: bool = False) -> np.ndarray:
    """The distance at every state of traj to the exact path (ref, on the same noise levels): RMS over
    particles (ex.metrics.path_error), or, for a stochastic run, the sliced W2 between the two sets of
    particles (both are samples of the marginal there when the run is exact in law)."""
    if not stochastic:
        return metrics.path_error(traj, ref)
    return np.array([metrics.sliced_wasserstein(a, b) if np.isfinite(a).all() else np.nan
                     for a, b in zip(traj.x, ref.x)])


def mismatch(traj) -> np.ndarray:
    """Per model call, |sigma_model / sigma_update - 1|: how far the noise level the model was told is
    from the one the update used (0 where they agree exactly; NaN where the update's sigma is 0)."""
    upd, mod = np.asarray(traj.extras["sigma_update"]), np.asarray(traj.extras["sigma_model"])
    with np.errstate(all="ignore"):
        return np.where(upd > 0, np.abs(mod / np.where(upd > 0, upd, 1.0) - 1.0), np.nan)


def step_errors(traj, ref, stochastic: bool = False, title: str | None = None, height: int = 520) -> go.Figure:
    """One run, step by step. Top: its distance to the exact path at every state (step_values), with
    each state's noise level (the scheduler's sigma) in the hover. Bottom: per model call, the
    relative gap between the noise level the model saw and the one the update used (mismatch), with
    the audit's flag threshold; calls where the two agree exactly are listed in the title."""
    values = step_values(traj, ref, stochastic)
    sig = np.asarray(traj.extras["sigma"])
    gap = mismatch(traj)
    step = np.asarray(traj.extras["step"])
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.22, row_heights=[0.58, 0.42], subplot_titles=(
        "sliced W2 to the exact marginal" if stochastic else "RMS distance to the exact path",
        "model's noise level vs the update's"))
    shown = np.where(values > 1e-12, values, np.nan)  # the shared start: 0 (round-off for a distance)
    fig.add_trace(go.Scatter(
        x=np.arange(len(values)), y=shown, mode="lines+markers", name="error", showlegend=False,
        line=dict(color=style.SAMPLE_COLOR, width=2), marker=dict(size=6), customdata=sig,
        hovertemplate="state %{x} (sigma %{customdata:.4g})<br>%{y:.3g}<extra></extra>",
    ), row=1, col=1)
    exact = int(np.sum(gap == 0))
    drawn = np.where(gap > 0, gap, np.nan)
    fig.add_trace(go.Scatter(
        x=np.arange(len(gap)), y=drawn, mode="markers", name="|σ_model/σ_update − 1|", showlegend=False,
        marker=dict(size=7, color=np.where(gap > MISMATCH_TOL, style.TARGET_COLOR, style.REFERENCE_COLOR)),
        customdata=np.stack([step, np.asarray(traj.extras["sigma_model"]), np.asarray(traj.extras["sigma_update"])], 1),
        hovertemplate="call %{x} (step %{customdata[0]})<br>model σ %{customdata[1]:.5g}, update σ "
                      "%{customdata[2]:.5g}<br>relative gap %{y:.3g}<extra></extra>",
    ), row=2, col=1)
    fig.add_hline(y=MISMATCH_TOL, line=dict(color=style.TARGET_COLOR, dash="dot", width=1), row=2, col=1,
                  annotation_text="flag threshold", annotation_position="top left", annotation_font_size=11)
    layout = style.base_layout(title or f"Step by step ({traj.nfe} model calls; {exact} with no gap)", height)
    finite = drawn[np.isfinite(drawn)]
    low = min(MISMATCH_TOL / 10, finite.min() / 2) if len(finite) else MISMATCH_TOL / 10
    high = max(MISMATCH_TOL * 10, finite.max() * 2) if len(finite) else MISMATCH_TOL * 10
    layout.update(  # row 1, then row 2
        xaxis=dict(title=dict(text="state (0: the start)")), yaxis=dict(type="log", tickformat=".0e"),
        xaxis2=dict(title=dict(text="model call")), yaxis2=dict(type="log", tickformat=".0e", range=[np.log10(low), np.log10(high)]))
    return style.set_layout(fig, layout)
