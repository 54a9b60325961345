"""Figures: pure functions from results (models, trajectories, samples) to plotly figures.
Import everything below them (foundations, solvers, learned, analyses); never the UI.

Shared by the Streamlit app and the notebooks (`widget(fig)` wraps a figure in a plotly
FigureWidget, `sync(widget, fig)` updates it in place). Plotly only: explorer/__init__.py does not import this package,
so the core runs without plotly.
"""

from __future__ import annotations

import base64
import math

import numpy as np
import plotly.graph_objects as go

from . import audit, guidance_exact, hallucination, images, schedules, stability
from .metrics import path_error
from .solver_lab import (
    distance_vs_nfe, guidance_failure, side_by_side, solver_rows, solver_table, step_errors, work_precision,
)
from .time_axis import TIME_AXES
from .trajectories import density_heatmap_1d, final_histogram_1d, final_samples_2d, particles_2d

__all__ = [
    "json_safe", "sync", "widget", "audit", "hallucination", "images", "schedules", "stability", "TIME_AXES", "density_heatmap_1d", "final_histogram_1d", "final_samples_2d", "particles_2d", "path_error",
    "distance_vs_nfe", "guidance_failure", "side_by_side", "solver_rows", "solver_table", "step_errors", "work_precision",
]


def _finite_or_none(value, replaced: list):
    """value with every NaN/inf float replaced by None (JSON null), recursively, noting each
    replacement in `replaced`; numeric arrays without one are returned as they are (plotly keeps them
    base64-encoded: {dtype, bdata, shape})."""
    if isinstance(value, dict):
        if set(value) >= {"dtype", "bdata"}:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            if "shape" in value:
                array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
            finite = array.dtype.kind not in "fc" or np.isfinite(array).all()
            return value if finite else _finite_or_none(array, replaced)
        return {k: _finite_or_none(v, replaced) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            replaced.append(True)
            return np.where(np.isfinite(value), value, None).tolist()
        if value.dtype.kind == "O":
            return [_finite_or_none(v, replaced) for v in value.tolist()]
        return value
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v, replaced) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        replaced.append(True)
        return None
    return value


def json_safe(fig: go.Figure) -> go.Figure:
    """fig with NaN/inf values drawn as gaps (None): a notebook widget sends its figure as strict
    JSON, where NaN is not allowed (static figures and Streamlit convert NaN to null themselves).
    A figure with none is returned as it is (no second validation of every trace)."""
    replaced = []
    clean = _finite_or_none(fig.to_plotly_json(), replaced)
    return go.Figure(clean, skip_invalid=False) if replaced else fig


def widget(fig: go.Figure | None = None) -> go.FigureWidget:
    """A plotly FigureWidget showing fig (NaN/inf as gaps), for a notebook to update with sync()."""
    return go.FigureWidget(None if fig is None else json_safe(fig))


def sync(widget, fig) -> None:
    """Make a plotly FigureWidget show fig, in one batch update: trace data is updated in place
    when the traces line up (fast, no flicker), otherwise the traces are replaced. NaN/inf become
    gaps (see json_safe)."""
    fig = json_safe(fig)
    with widget.batch_update():
        same = len(widget.data) == len(fig.data) and all(
            a.type == b.type for a, b in zip(widget.data, fig.data)
        )
        if same:
            for old, new in zip(widget.data, fig.data):
                old.update(new.to_plotly_json(), overwrite=True)
        else:
            widget.data = []
            widget.add_traces(list(fig.data))
        widget.layout = fig.layout
