"""How far a run is from where it should be, step by step."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from ..analyses import metrics
from . import style
from .time_axis import log_dtick
from .time_axis import time_axis as _time_axis


def path_error(model, trajs, ref, time_axis: str = "log-snr", title: str | None = None, height: int = 360) -> go.Figure:
    """RMS distance to the reference path at every grid time, sqrt(mean_i ||x_i(t) - x_ref_i(t)||^2),
    on a log scale. trajs: one Trajectory, or a dict label -> Trajectory, all on ref's grid."""
    if not isinstance(trajs, dict):
        trajs = {trajs.solver: trajs}
    s = getattr(model, "schedule", model)
    to_x, xaxis = _time_axis(s, ref.t, time_axis)
    fig = go.Figure()
    colors = [style.SAMPLE_COLOR, *qualitative.D3[1:]]
    shown = []
    for k, (name, traj) in enumerate(trajs.items()):
        err = metrics.path_error(traj, ref)
        err = np.where(err > 0, err, np.nan)  # the shared start has zero error: nothing to draw on a log axis
        shown.append(err[np.isfinite(err)])
        fig.add_trace(
            go.Scatter(
                x=to_x(traj.t), y=err, mode="lines+markers", name=name, customdata=np.stack([traj.t, np.arange(len(err))], 1),
                line=dict(color=colors[k % len(colors)], width=2), marker=dict(size=5),
                hovertemplate="step %{customdata[1]}, t = %{customdata[0]:.4g}<br>RMS error %{y:.3g}<extra>%{fullData.name}</extra>",
            )
        )
    shown = np.concatenate(shown)
    decades = np.log10(shown.max() / shown.min()) if len(shown) else 0.0
    return style.set_layout(fig, dict(style.base_layout(title or "Distance to the rk45 reference path", height), showlegend=len(trajs) > 1),
                            xaxes=xaxis, yaxes=dict(title=dict(text="RMS ‖x − x_ref‖"), type="log", dtick=log_dtick(decades), tickformat=".0e"))
