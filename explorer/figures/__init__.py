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
    "json_safe", "sync", "widget", "widget_data", "audit", "hallucination", "images", "schedules", "stability", "TIME_AXES", "density_heatmap_1d", "final_histogram_1d", "final_samples_2d", "particles_2d", "path_error",
    "distance_vs_nfe", "guidance_failure", "side_by_side", "solver_rows", "solver_table", "step_errors", "work_precision",
]


def _finite_or_none(value, replaced: list):
    """value with every NaN/inf float replaced by None (JSON null), recursively, noting each
    replacement in `replaced`; numeric arrays without one are returned as numpy arrays, also those
    plotly's to_plotly_json() base64-encoded ({dtype, bdata, shape}): see widget_data."""
    if isinstance(value, dict):
        if set(value) >= {"dtype", "bdata"}:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            if "shape" in value:
                array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
            return _finite_or_none(array, replaced)
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
    A figure with none is returned as it is (no second validation of every trace). Its arrays stay
    numpy arrays (see widget_data)."""
    replaced = []
    clean = widget_data(fig.to_plotly_json(), replaced)
    return go.Figure(clean, skip_invalid=False) if replaced else fig


def widget_data(plotly_json: dict, replaced: list | None = None) -> dict:
    """A figure's or trace's to_plotly_json() as a FigureWidget should be given it: NaN/inf as None,
    arrays as numpy arrays, never as plotly's base64 typed-array specs ({dtype, bdata, shape}).

    The widget's frontend decodes such a spec for plotly.js, finds the decoded array unequal to the
    spec it keeps, and sends it back to the kernel in the trace deltas that follow every draw, each
    nested row with the whole buffer: the 1D explorer's 160 x 120 x 2 float32 customdata made a 3 GB
    message (19,200 copies of its 154 kB) that Chromium spent 2.5-3.5 s of CPU assembling, a 120 x 120
    contour 120 copies of its 58 kB (6.9 MB, echoed back by the kernel). Numpy arrays go through
    plotly's own widget serializer instead: 1D as binary buffers that plotly.js keeps as they are, more
    dimensions as nested lists (about twice the bytes of base64, sent once), and no array comes back."""
    return _finite_or_none(plotly_json, [] if replaced is None else replaced)


def widget(fig: go.Figure | None = None) -> go.FigureWidget:
    """A plotly FigureWidget showing fig (NaN/inf as gaps), for a notebook to update with sync()."""
    return go.FigureWidget(None if fig is None else json_safe(fig))


def sync(widget, fig) -> None:
    """Make a plotly FigureWidget show fig: trace data and layout are updated in place when the traces
    line up (one update message, one redraw, only what changed), otherwise the traces are replaced.
    NaN/inf become gaps (see json_safe)."""
    fig = json_safe(fig)
    same = len(widget.data) == len(fig.data) and all(a.type == b.type for a, b in zip(widget.data, fig.data))
    if same:
        layout = widget_data(fig.layout.to_plotly_json())
        gone = {key: None for key in widget.layout.to_plotly_json() if key not in layout}
        with widget.batch_update():
            for old, new in zip(widget.data, fig.data):
                old.update(widget_data(new.to_plotly_json()), overwrite=True)
            # Not `widget.layout = fig.layout`: that sends the whole layout (template included) at once, in a
            # relayout of its own that plotly.js draws before the batch's update, every figure twice a change.
            widget.update_layout(gone | layout, overwrite=True)
    else:
        # The widget sends trace deletions and additions at once (a batch holds back only restyles and
        # relayouts), and plotly.js redraws after each: the new layout goes to the emptied figure, so
        # that only the added traces draw the new figure in full (a layout sent last drew it twice).
        widget.data = []
        widget.layout = fig.layout
        widget.add_traces(list(fig.data))
