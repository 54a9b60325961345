"""Solver lab figures: work-precision, two solvers side by side, guidance, and the solver table.

Pure functions from the records of explorer.analyses.experiments / explorer.analyses.guidance to plotly figures.
A run that diverged is drawn, not dropped: a red cross at the top of the plot whose hover
says at which step it stopped and why.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .. import solvers as _solvers
from ..analyses.experiments import orders as _orders
from . import style
from .time_axis import time_axis as _time_axis
from .trajectories import _f32, _np, _spread_indices, _target_contour

DIVERGED_COLOR = "#c0392b"
COLORS = [style.SAMPLE_COLOR, *(c for c in qualitative.D3[1:] if c != "#D62728"), *qualitative.Dark2]  # red: divergence
PAIR = [style.SAMPLE_COLOR, "#7b3fa0"]  # solvers A and B side by side: neither is the x0-predictions' orange


def _color(k: int) -> str:
    return COLORS[k % len(COLORS)]


def _labels(records) -> list[str]:
    return list(dict.fromkeys(r["label"] for r in records))


def _log_range(values, pad: float = 0.15):
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0], dtype=np.float64)
    if not len(v):
        return [-3, 0]
    lo, hi = np.log10(v.min()), np.log10(v.max())
    span = max(hi - lo, 0.5)
    return [lo - pad * span, hi + 2.5 * pad * span]  # room at the top for the divergence crosses


def _cross_height(values) -> float:
    """Where the divergence crosses sit: near the top of _log_range(values), fully inside it."""
    lo, hi = _log_range(values)
    return 10 ** (hi - 0.06 * (hi - lo))


def _log_ticks(values) -> dict:
    """Powers of ten when the values span a few decades, else ticks at 1, 2 and 5 times them."""
    lo, hi = _log_range(values)
    if hi - lo > 2.5:
        return dict(dtick=1, tickformat=".0e")
    ticks = [m * 10.0**k for k in range(int(np.floor(lo)), int(np.ceil(hi)) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo <= np.log10(t) <= hi]
    return dict(tickvals=ticks, ticktext=[f"{t:.3g}" for t in ticks])


def _diverged_trace(xs, y_top, texts, name="diverged") -> go.Scatter:
    return go.Scatter(
        x=xs, y=[y_top] * len(xs), mode="markers", name=name, text=texts,
        marker=dict(symbol="x-thin", size=13, color=DIVERGED_COLOR, line=dict(width=3, color=DIVERGED_COLOR)),
        hovertemplate="%{text}<extra></extra>",
    )


def _note_divergences(label: str, rows, crosses) -> None:
    """Add the sweep rows that diverged to crosses (NFE positions, hover texts naming step and reason)."""
    for r in rows:
        if r["diverged_at"] is not None:
            crosses[0].append(r["nfe_spent"])
            crosses[1].append(f"{label}, NFE {r['nfe']}: diverged at step {r['diverged_at']} — {r['reason']}")


def work_precision(records, tail: int = 3, title: str | None = None, height: int = 440) -> go.Figure:
    """Error against the rk45 solution from the same start at the final time, against NFE, log-log:
    one line per solver, its fitted order (slope over the `tail` largest NFEs) in the legend.
    Diverged runs: red crosses along the top, hover naming the step and the reason."""
    fitted = _orders(records, tail)
    fig = go.Figure()
    top = _cross_height([r["error"] for r in records])
    crosses = ([], [])
    for k, label in enumerate(_labels(records)):
        rows = [r for r in records if r["label"] == label]
        stochastic = _solvers.spec(rows[0]["solver"]).draws_noise(_solvers.spec(rows[0]["solver"]).resolve(rows[0]["options"]))
        p = fitted[label]
        note = "stochastic" if stochastic else (f"order ≈ {p:.2f}" if np.isfinite(p) else "order: —")
        fig.add_trace(
            go.Scatter(
                x=[r["nfe_spent"] for r in rows], y=[r["error"] for r in rows], mode="lines+markers",
                name=f"{label} ({note})", line=dict(color=_color(k), width=2, dash="dot" if stochastic else "solid"),
                marker=dict(size=7), customdata=[[r["n_steps"]] for r in rows],
                hovertemplate="NFE %{x} (%{customdata[0]} steps)<br>error %{y:.3g}<extra>" + label + "</extra>",
            )
        )
        _note_divergences(label, rows, crosses)
    if crosses[0]:
        fig.add_trace(_diverged_trace(crosses[0], top, crosses[1]))
    layout = style.base_layout(title or "Error against the exact ODE solution", height)
    layout["legend"] = dict(orientation="v", x=1.01, xanchor="left", y=1.0, yanchor="top", font=dict(size=11))
    layout["margin"].update(r=10)
    errors = [r["error"] for r in records]
    return style.set_layout(fig, layout, xaxes=_nfe_axis(records), yaxes=dict(
        type="log", title=dict(text="RMS ‖x − x_rk45‖ at t_min"), range=_log_range(errors), **_log_ticks(errors)))


def distance_vs_nfe(records, floor: float | None = None, title: str | None = None, height: int = 400) -> go.Figure:
    """Distance of the final samples to the target (sliced W2 to fresh draws) against NFE; the dashed
    line is the exact ODE's own distance from the same start (the finite-sample floor)."""
    fig = go.Figure()
    values = [r["distance"] for r in records] + ([floor] if floor else [])
    top = _cross_height(values)
    crosses = ([], [])
    for k, label in enumerate(_labels(records)):
        rows = [r for r in records if r["label"] == label]
        fig.add_trace(
            go.Scatter(
                x=[r["nfe_spent"] for r in rows], y=[r["distance"] for r in rows], mode="lines+markers", name=label,
                line=dict(color=_color(k), width=2), marker=dict(size=7),
                hovertemplate="NFE %{x}<br>sliced W2 %{y:.3g}<extra>" + label + "</extra>",
            )
        )
        _note_divergences(label, rows, crosses)
    if crosses[0]:
        fig.add_trace(_diverged_trace(crosses[0], top, crosses[1]))
    if floor is not None and np.isfinite(floor):
        spent = [r["nfe_spent"] for r in records] or [1]
        fig.add_trace(go.Scatter(
            x=[min(spent), max(spent)], y=[floor, floor], mode="lines", name="exact ODE (rk45), same start",
            line=dict(color=style.REFERENCE_COLOR, dash="dash", width=1.5),
            hovertemplate="exact ODE from the same start: %{y:.3g}<extra></extra>",
        ))
    layout = style.base_layout(title or "Distance to the target", height)
    layout["legend"] = dict(orientation="v", x=1.01, xanchor="left", y=1.0, yanchor="top", font=dict(size=11))
    layout["margin"].update(r=10)
    return style.set_layout(fig, layout, xaxes=_nfe_axis(records), yaxes=dict(
        type="log", title=dict(text="sliced W2 to the target"), range=_log_range(values), **_log_ticks(values)))


def side_by_side(model, result: dict, n_paths: int = 24, show_x0: bool = True, time_axis: str = "log-snr",
                 title: str | None = None, height: int = 480) -> go.Figure:
    """Two solvers from the same noise (experiments.compare_two): the paths of n_paths particles
    (the same particles in both panels), the x0-prediction each step started from (orange) and
    the exact path from the same start (grey, dashed). 2D: paths in the plane over the target's
    density; 1D: x against time. A diverged run says where it stopped."""
    sides = [result["a"], result["b"]]
    dim = np.asarray(sides[0]["traj"].x).shape[-1]
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"{s['label']} — {s['traj'].n_steps} steps, NFE {s['traj'].nfe}" for s in sides],
                        horizontal_spacing=0.08, shared_yaxes=dim == 1)
    target = getattr(model, "target", None)
    x_end = _np(sides[0]["ref"].x)[-1]
    pick = _spread_indices(np.arctan2(*(x_end[:, :2] - x_end[:, :2].mean(0)).T) if dim > 1 else x_end[:, 0], n_paths)
    if dim > 1:
        box = style.view_box(target, np.concatenate([_np(s["traj"].x)[:, pick] for s in sides]), widen=1.3, square=True)
    axes = {}  # each panel's axes, set with the layout
    for col, side in enumerate(sides, start=1):
        traj, ref = side["traj"], side["ref"]
        x, d, xr = _np(traj.x)[:, pick], _np(traj.denoised)[:, pick], _np(ref.x)[:, pick]
        first, suffix = col == 1, "" if col == 1 else col
        if dim > 1:
            if target is not None:
                fig.add_trace(_target_contour(target, box, n=80), row=1, col=col)
            rx, ry = _nan_join(xr[..., 0]), _nan_join(xr[..., 1])
            fig.add_trace(go.Scatter(x=rx, y=ry, mode="lines", name="exact path (rk45)", legendgroup="ref", showlegend=first,
                                     line=dict(color=style.REFERENCE_COLOR, dash="dash", width=1.2), hoverinfo="skip"), row=1, col=col)
            px, py = _nan_join(x[..., 0]), _nan_join(x[..., 1])
            fig.add_trace(go.Scatter(x=px, y=py, mode="lines+markers", name="solver path", legendgroup="path", showlegend=first,
                                     line=dict(color=PAIR[col - 1], width=1.6), marker=dict(size=4), hoverinfo="skip"), row=1, col=col)
            if show_x0:
                fig.add_trace(go.Scatter(x=_f32(d[..., 0].ravel()), y=_f32(d[..., 1].ravel()), mode="markers",
                                         name="x0-prediction", legendgroup="x0", showlegend=first,
                                         marker=dict(size=5, color=style.X0_COLOR, symbol="x", opacity=0.7),
                                         customdata=np.repeat(np.arange(len(d)), len(pick)),
                                         hovertemplate="x0-prediction at step %{customdata}<extra></extra>"), row=1, col=col)
            axes[f"xaxis{suffix}"] = dict(range=list(box[0]), showgrid=False, zeroline=False, title=dict(text="x₁"))
            axes[f"yaxis{suffix}"] = dict(range=list(box[1]), showgrid=False, zeroline=False, title=dict(text="x₂" if first else None),
                                          scaleanchor="x" if first else "x2", scaleratio=1)
        else:
            to_x, xaxis = _time_axis(model.schedule, traj.t, time_axis)
            tx = to_x(traj.t)
            fig.add_trace(go.Scatter(x=_nan_join(np.broadcast_to(tx[:, None], xr.shape[:2])), y=_nan_join(xr[..., 0]), mode="lines",
                                     name="exact path (rk45)", legendgroup="ref", showlegend=first,
                                     line=dict(color=style.REFERENCE_COLOR, dash="dash", width=1.2), hoverinfo="skip"), row=1, col=col)
            fig.add_trace(go.Scatter(x=_nan_join(np.broadcast_to(tx[:, None], x.shape[:2])), y=_nan_join(x[..., 0]), mode="lines+markers",
                                     name="solver path", legendgroup="path", showlegend=first,
                                     line=dict(color=PAIR[col - 1], width=1.6), marker=dict(size=4), hoverinfo="skip"), row=1, col=col)
            if show_x0:
                fig.add_trace(go.Scatter(x=np.repeat(tx[:-1], len(pick)), y=_f32(d[..., 0].ravel()), mode="markers",
                                         name="x0-prediction", legendgroup="x0", showlegend=first,
                                         marker=dict(size=5, color=style.X0_COLOR, symbol="x", opacity=0.7),
                                         hovertemplate="x0-prediction %{y:.3f}<extra></extra>"), row=1, col=col)
            axes[f"xaxis{suffix}"] = xaxis
            axes[f"yaxis{suffix}"] = dict(title=dict(text="x" if first else None))
        if traj.diverged:
            fig.add_annotation(text=f"<b>diverged at step {traj.diverged_at}</b><br>{_wrap(traj.diverged_reason)}",
                               xref=f"x{col if col > 1 else ''} domain", yref=f"y{col if col > 1 else ''} domain",
                               x=0.5, y=0.5, showarrow=False, bgcolor="rgba(255,255,255,0.85)",
                               font=dict(color=DIVERGED_COLOR, size=12), bordercolor=DIVERGED_COLOR, borderwidth=1)
    layout = style.base_layout(title or "Two solvers from the same noise, at the same NFE", height)
    layout["margin"].update(t=95)
    layout["legend"].update(y=1.09)
    fixed = style.FIXED_MARGINS if dim > 1 else None
    return style.set_layout(fig, dict(layout, **axes), xaxes=fixed, yaxes=fixed)


def step_errors(model, result: dict, time_axis: str = "log-snr", title: str | None = None, height: int = 400) -> go.Figure:
    """Per step, for both solvers: the local error the step commits (solid; exact flow from the
    solver's own state), the global error against the exact path (dashed) and the error of the
    x0-prediction against the model's on the exact path (dotted), at the time each step ends.
    A diverged run gets a red line at the step it stopped."""
    fig = go.Figure()
    ts_all = np.concatenate([np.asarray(side["traj"].t) for side in result.values()])
    to_x, xaxis = _time_axis(model.schedule, np.sort(ts_all)[::-1], time_axis)
    values = []
    for k, side in enumerate(result.values()):
        traj, color, label = side["traj"], PAIR[k], side["label"]
        t = np.asarray(traj.t)
        steps = np.arange(traj.n_steps)
        for y, x, dash, what in (
            (side["local_error"], t[1:], "solid", "local error"),
            (side["global_error"][1:], t[1:], "dash", "global error"),
            (side["x0_error"], t[:-1], "dot", "x0-prediction error"),
        ):
            y = np.where(np.asarray(y) > 0, y, np.nan)
            values.extend(y[np.isfinite(y)])
            fig.add_trace(go.Scatter(
                x=to_x(x), y=y, mode="lines+markers", name=f"{label}: {what}", legendgroup=label,
                line=dict(color=color, dash=dash, width=2 if dash == "solid" else 1.5), marker=dict(size=5),
                customdata=np.stack([steps, x], 1),
                hovertemplate="step %{customdata[0]}, t = %{customdata[1]:.4g}<br>" + what + " %{y:.3g}<extra>" + label + "</extra>",
            ))
        if traj.diverged:
            at = to_x(t[traj.diverged_at])
            fig.add_vline(x=float(at), line=dict(color=DIVERGED_COLOR, width=2))
            fig.add_annotation(x=float(at), y=1.0, yref="paper", text=f"{label} diverged at step {traj.diverged_at}",
                               showarrow=False, xanchor="left", yanchor="top", font=dict(color=DIVERGED_COLOR, size=11),
                               hovertext=traj.diverged_reason)
    layout = style.base_layout(title or "Error committed at each step", height)
    layout["legend"] = dict(orientation="v", x=1.01, xanchor="left", y=1.0, yanchor="top", font=dict(size=11))
    layout["margin"].update(r=10)
    return style.set_layout(fig, layout, xaxes=xaxis, yaxes=dict(
        type="log", title=dict(text="RMS error"), range=_log_range(values), **_log_ticks(values)))


def guidance_failure(records, what: str = "error", title: str | None = None, height: int = 400) -> go.Figure:
    """Each solver against the guidance scale w (guidance.guidance_sweep records): error against
    the exact guided ODE (what="error") or distance to the conditional target ("distance").
    Runs that diverged, or blew up (final |x| over 10x the data's range), are red crosses."""
    if what not in ("error", "distance"):
        raise ValueError(f"what must be 'error' or 'distance', got {what!r}")
    fig = go.Figure()
    values = [r[what] for r in records]
    top = _cross_height(values)
    crosses = ([], [])
    solver_names = list(dict.fromkeys(r["solver"] for r in records))
    for k, name in enumerate(solver_names):
        rows = [r for r in records if r["solver"] == name]
        fig.add_trace(go.Scatter(
            x=[r["w"] for r in rows], y=[r[what] for r in rows], mode="lines+markers", name=f"{name} (order {_solvers.info(name)['order']})",
            line=dict(color=_color(k), width=2), marker=dict(size=7),
            hovertemplate="w = %{x}<br>" + what + " %{y:.3g}<extra>" + name + "</extra>",
        ))
        for r in rows:
            if r["diverged_at"] is not None or r["max_norm"] > 10:
                crosses[0].append(r["w"])
                why = f"diverged at step {r['diverged_at']} — {r['reason']}" if r["diverged_at"] is not None else \
                    f"blew up: final |x| reaches {r['max_norm']:.3g}x the data's range"
                crosses[1].append(f"{name}, w = {r['w']:g}: {why}")
    if crosses[0]:
        fig.add_trace(_diverged_trace(crosses[0], top, crosses[1], name="diverged or blew up"))
    nfe = records[0]["nfe"] if records else 0
    label = "RMS ‖x − x_rk45‖ (guided ODE)" if what == "error" else "sliced W2 to p(x | c)"
    layout = style.base_layout(title or f"Guidance scale against accuracy, {nfe} NFE", height)
    layout["legend"] = dict(orientation="v", x=1.01, xanchor="left", y=1.0, yanchor="top", font=dict(size=11))
    layout["margin"].update(r=10)
    return style.set_layout(fig, layout, xaxes=dict(title=dict(text="guidance scale w   (D = (1 + w) D(x | c) − w D(x))")),
                            yaxes=dict(type="log", title=dict(text=label), range=_log_range(values), **_log_ticks(values)))


def solver_rows(names=None) -> list[dict]:
    """One row per solver from its declaration (ex.solvers.info): the data of the solver table."""
    rows = []
    for name in names or _solvers.names():
        info = _solvers.info(name)
        options = ", ".join(
            f"{opt} = {spec['default']}" + (f" in [{spec['range'][0]:g}, {spec['range'][1]:g}]" if spec.get("range") and None not in spec["range"] else "")
            + (f" of {'/'.join(map(str, spec['choices']))}" if spec.get("choices") else "")
            for opt, spec in info["options"].items()
        )
        rows.append(dict(
            solver=name, order=info["order"], stochastic=info["stochastic"], multistep=info["multistep"],
            nfe_per_step=info["nfe_per_step"] if info["nfe_per_step"] is not None else "varies",
            options=options or "—", paper=info["reference"], summary=info["summary"],
        ))
    return rows


def solver_table(names=None, height: int | None = None) -> go.Figure:
    """Every solver's declaration as a table: order, stochastic, multistep, NFE per step, options
    with defaults and ranges, and the paper (exact title)."""
    rows = solver_rows(names)
    columns = ["solver", "order", "stochastic", "multistep", "nfe_per_step", "options", "paper"]
    header = ["solver", "order", "stochastic", "multistep", "NFE / step", "options (default, range)", "paper"]
    cells = [[("yes" if r[c] else "no") if isinstance(r[c], bool) else r[c] for r in rows] for c in columns]
    fig = go.Figure(go.Table(
        columnwidth=[90, 45, 65, 65, 60, 260, 330],
        header=dict(values=[f"<b>{h}</b>" for h in header], fill_color="#eef3fa", align="left", font=dict(size=12)),
        cells=dict(values=cells, align="left", font=dict(size=11), height=24),
    ))
    layout = style.base_layout("Solvers", height or 90 + 34 * len(rows))
    layout["margin"].update(l=10, r=10, t=45, b=10)
    return style.set_layout(fig, layout)


def _nfe_axis(records) -> dict:
    """A log NFE axis ticked at the NFE values of the runs."""
    ticks = sorted({int(r["nfe_spent"]) for r in records})
    if len(ticks) > 10:
        ticks = ticks[:: int(np.ceil(len(ticks) / 10))]
    return dict(type="log", title=dict(text="NFE (model evaluations)"), tickvals=ticks, ticktext=[str(t) for t in ticks])


def _nan_join(values: np.ndarray) -> np.ndarray:
    """(steps, paths) -> one polyline per path, NaN-separated."""
    values = np.asarray(values, dtype=np.float64).T
    return _f32(np.hstack([values, np.full((values.shape[0], 1), np.nan)]).ravel())


def _wrap(text: str | None, width: int = 48) -> str:
    words, lines, line = (text or "").split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join(lines + [line])
