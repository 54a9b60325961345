"""A sweep's tidy table drawn: a metric against NFE, one line per solver, one panel per target."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import style
from .solver_lab import _color

# Columns that, when they take more than one value in the table, tell lines apart beside the solver.
LINE_COLUMNS = ("schedule", "spacing")


def sweep_table(rows, y: str = "error", x: str = "nfe", line: str | None = None, panel: str = "target",
                log: bool = True, title: str | None = None, height: int = 420) -> go.Figure:
    """y against x from a tidy table (one dict per cell, e.g. ex.solver_sweep.run's rows or
    ex.sweeps.load's): one panel per value of `panel`, one line per value of `line` (default "label",
    else "solver"; with the schedule and spacing appended where the table has several), the median
    over the other columns (seeds) with error bars from the smallest to the largest value.
    Non-finite values (diverged runs) are left out of the medians and counted in the hover."""
    rows = list(rows)
    if not rows:
        raise ValueError("rows must not be empty")
    columns = set().union(*(r.keys() for r in rows))
    line = line or ("label" if "label" in columns else "solver")
    for name, value in (("y", y), ("x", x), ("line", line), ("panel", panel)):
        if value not in columns:
            raise ValueError(f"{name}: the table has no column {value!r} (columns: {', '.join(sorted(columns))})")
    extra = [c for c in LINE_COLUMNS if c in columns and len({r.get(c) for r in rows}) > 1]

    def line_of(r) -> str:
        return " ".join([str(r[line]), *(f"{r[c]}" for c in extra)])

    panels = list(dict.fromkeys(r[panel] for r in rows))
    lines = list(dict.fromkeys(line_of(r) for r in rows))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[str(p) for p in panels], shared_yaxes=True,
                        horizontal_spacing=0.04)
    for j, p in enumerate(panels):
        for k, name in enumerate(lines):
            groups = {}
            for r in rows:
                if r[panel] == p and line_of(r) == name:
                    groups.setdefault(r[x], []).append(_float(r[y]))
            if not groups:
                continue
            xs = sorted(groups)
            med, lo, hi, bad = [], [], [], []
            for v in xs:
                vals = np.array([u for u in groups[v] if math.isfinite(u)])
                bad.append(len(groups[v]) - len(vals))
                m = float(np.median(vals)) if len(vals) else math.nan
                med.append(m)
                lo.append(m - float(vals.min()) if len(vals) else 0.0)
                hi.append(float(vals.max()) - m if len(vals) else 0.0)
            fig.add_trace(go.Scatter(
                x=xs, y=med, mode="lines+markers", name=name, legendgroup=name, showlegend=j == 0,
                line=dict(color=_color(k), width=2), marker=dict(size=6),
                error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo, thickness=1, width=3),
                customdata=[[len(groups[v]), b] for v, b in zip(xs, bad)],
                hovertemplate=f"{x} %{{x}}<br>{y} %{{y:.3g}} (median of %{{customdata[0]}}; "
                              f"%{{customdata[1]}} not finite)<extra>{name}</extra>",
            ), row=1, col=j + 1)
    layout = style.base_layout(title or f"{y} against {x}", height)
    layout["legend"] = dict(orientation="v", x=1.01, xanchor="left", y=1.0, yanchor="top", font=dict(size=11))
    xs = sorted({v for r in rows if isinstance(v := r[x], (int, float)) and not isinstance(v, bool)})
    ticks = dict(tickvals=xs, ticktext=[f"{v:g}" for v in xs]) if log and 0 < len(xs) <= 12 else {}
    layout["yaxis"] = dict(title=dict(text=y))  # the first panel's
    return style.set_layout(fig, layout, xaxes=dict(type="log" if log else "linear", title=dict(text=x), **ticks),
                            yaxes=dict(type="log" if log else "linear"))


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
