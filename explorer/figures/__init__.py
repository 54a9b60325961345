"""Figures: pure functions from results (models, trajectories, samples) to plotly figures.

Shared by the Streamlit app and the notebooks (wrap a result in go.FigureWidget to
update it in place). Plotly only: explorer/__init__.py does not import this package,
so the core runs without plotly.
"""

from . import hallucination, images, schedules, stability
from .metrics import path_error
from .solver_lab import (
    distance_vs_nfe, guidance_failure, side_by_side, solver_rows, solver_table, step_errors, work_precision,
)
from .time_axis import TIME_AXES
from .trajectories import density_heatmap_1d, final_histogram_1d, final_samples_2d, particles_2d

__all__ = [
    "sync", "hallucination", "images", "schedules", "stability", "TIME_AXES", "density_heatmap_1d", "final_histogram_1d", "final_samples_2d", "particles_2d", "path_error",
    "distance_vs_nfe", "guidance_failure", "side_by_side", "solver_rows", "solver_table", "step_errors", "work_precision",
]


def sync(widget, fig) -> None:
    """Make a plotly FigureWidget show fig, in one batch update: trace data is updated in place
    when the traces line up (fast, no flicker), otherwise the traces are replaced."""
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
