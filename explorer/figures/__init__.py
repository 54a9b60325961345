"""Figures: pure functions from results (models, trajectories, samples) to plotly figures.

Shared by the Streamlit app and the notebooks (wrap a result in go.FigureWidget to
update it in place). Plotly only: explorer/__init__.py does not import this package,
so the core runs without plotly.
"""

from .metrics import path_error
from .time_axis import TIME_AXES
from .trajectories import density_heatmap_1d, final_histogram_1d, final_samples_2d, particles_2d

__all__ = [
    "TIME_AXES", "density_heatmap_1d", "final_histogram_1d", "final_samples_2d", "particles_2d", "path_error",
]
