"""explorer.figures: pure functions from results to plotly figures (shared by app and notebooks)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import plotly.graph_objects as go
import pytest

import explorer as ex
from explorer import figures
from explorer.figures import style


def _run(target: str, schedule: str = "edm", steps: int = 8, n: int = 300, solver: str = "dpmpp-2m", **grid):
    model = ex.AnalyticModel(ex.targets.get(target), ex.schedules.get(schedule))
    ts = ex.timesteps(model.schedule, steps, **grid)
    x_T = model.prior_sample(n, 0, t=ts[0])
    return model, ex.sample(model, x_T, ts, solver, rng=1), ex.reference(model, x_T, ts)


@pytest.fixture(scope="module")
def run_1d():
    return _run("gmm-1d-3modes")


@pytest.fixture(scope="module")
def run_2d():
    return _run("gmm-2d-ring8", schedule="vp-linear")


def test_figures_import_no_ui():
    code = "import sys, explorer.figures; assert not {'streamlit', 'ipywidgets'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_set_layout_is_update_layout_then_every_axis_and_annotation():
    """style.set_layout(fig, layout, xaxes=, yaxes=, annotations=) draws what update_layout, update_xaxes,
    update_yaxes and update_annotations draw, on a grid of subplots with shapes and titles already in its layout;
    plotly's underscore paths are refused, by name."""
    import json

    from plotly.subplots import make_subplots

    def grid():
        fig = make_subplots(rows=2, cols=2, subplot_titles=("a", "b", "c", "d"), shared_xaxes=True)
        for k in range(4):
            fig.add_trace(go.Scatter(x=[0, 1], y=[k, 1]), row=k // 2 + 1, col=k % 2 + 1)
        fig.add_hline(y=0.5, row=1, col=2)
        return fig

    layout = dict(style.base_layout("t", 300), annotations=[go.layout.Annotation(text="extra", x=0, y=0)],
                  yaxis3=dict(type="log"), legend=dict(x=0.5), margin=dict(b=99))
    xaxes, yaxes, notes = dict(range=[0, 1], title=dict(text="x")), dict(showgrid=False), dict(font=dict(size=10))
    by_plotly = grid()
    by_plotly.update_layout(**{k: v for k, v in layout.items() if k != "annotations"},
                            annotations=list(by_plotly.layout.annotations) + layout["annotations"])
    by_plotly.update_xaxes(xaxes).update_yaxes(yaxes).update_annotations(notes)
    fig = grid()
    ours = style.set_layout(fig, dict(layout, annotations=list(fig.layout.annotations) + layout["annotations"]),
                            xaxes=xaxes, yaxes=yaxes, annotations=notes)
    assert ours is fig
    drawn = [json.dumps(f.to_plotly_json(), sort_keys=True, default=str) for f in (by_plotly, ours)]
    assert drawn[0] == drawn[1]
    assert ours.layout.yaxis3.type == "log" and ours.layout.yaxis3.showgrid is False and len(ours.layout.shapes) == 1
    with pytest.raises(ValueError, match="xaxis_title"):
        style.set_layout(go.Figure(), dict(xaxis_title="x"))


def test_the_template_is_plotly_whites_and_copies_as_plain_data():
    """Every figure takes a copy of style.TEMPLATE; the copy is plotly_white's layout (less the unused plot
    kinds) and its defaults for style.TRACE_TYPES, equal to the registered one and independent of it."""
    import copy
    import json
    import pkgutil

    import plotly.io as pio

    white = json.loads(pkgutil.get_data("plotly", "package_data/templates/plotly_white.json"))
    registered = pio.templates[style.TEMPLATE]
    copied = copy.deepcopy(registered)
    assert type(copied) is go.layout.Template
    assert copied.to_plotly_json() == registered.to_plotly_json()
    assert copied.to_plotly_json()["data"] == {k: v for k, v in white["data"].items() if k in style.TRACE_TYPES}
    assert copied.to_plotly_json()["layout"] == {k: v for k, v in white["layout"].items() if k not in style._UNUSED_LAYOUT}
    copied.layout.font.color = "#000000"
    assert registered.layout.font.color == white["layout"]["font"]["color"]
    drawn = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]), layout=style.base_layout("t", 300)).to_plotly_json()
    assert drawn["layout"]["template"] == registered.to_plotly_json()


@pytest.mark.parametrize("axis", figures.TIME_AXES)
@pytest.mark.parametrize("show_x0", [False, True])
def test_density_heatmap_1d(run_1d, axis, show_x0):
    model, traj, _ = run_1d
    fig = figures.density_heatmap_1d(model, traj, show_x0=show_x0, n_paths=12, time_axis=axis)
    assert isinstance(fig, go.Figure)
    heat = [tr for tr in fig.data if tr.type == "heatmap"]
    assert len(heat) == 1 and np.nanmax(heat[0].z) == pytest.approx(1.0)
    # "fast" exactly where plotly.js accepts it (columns even to 1% of their step on a linear axis; else it warns
    # and draws unsmoothed bricks): always on the log-SNR axis, whose columns are even in lambda
    columns = np.diff(np.asarray(heat[0].x, dtype=np.float64))
    even = np.abs(columns - columns.mean()).max() <= abs(columns.mean()) / 100 and fig.layout.xaxis.type != "log"
    assert heat[0].zsmooth == ("fast" if even else "best") and (even or axis != "log-snr")
    names = {tr.name for tr in fig.data}
    assert ("x0-prediction" in names) == show_x0
    # noise on the left: the first grid time sits left of the last
    xaxis = fig.layout.xaxis
    first, last = (heat[0].x[0], heat[0].x[-1])
    if xaxis.range is not None and xaxis.range[0] > xaxis.range[1]:
        first, last = -first, -last  # reversed axis (t)
    assert first < last


def test_density_heatmap_1d_refuses_an_unknown_scale(run_1d):
    model, traj, _ = run_1d
    with pytest.raises(ValueError, match="density"):
        figures.density_heatmap_1d(model, traj, density="cubic")


def test_time_axis_ticks_read_as_t():
    s = ex.schedules.get("edm")
    _, axis = figures.time_axis.time_axis(s, ex.timesteps(s, 10))
    labels = list(axis["ticktext"])
    assert labels[0] == "80" and labels[-1] == "0.002" and "1" in labels
    assert np.all(np.diff(axis["tickvals"]) > 0)  # lambda grows toward the data


def test_final_histogram_1d(run_1d):
    model, traj, _ = run_1d
    fig = figures.final_histogram_1d(model.target, traj.sample)
    assert [tr.type for tr in fig.data] == ["histogram", "scatter"]
    curve = fig.data[1]
    assert np.trapezoid(curve.y, curve.x) == pytest.approx(1.0, abs=1e-3)  # the exact density, normalised


def test_particles_2d_frames_and_arrows(run_2d):
    model, traj, _ = run_2d
    fig = figures.particles_2d(model, traj, n_show=150, n_highlight=5, n_arrows=9)
    assert len(fig.frames) == traj.n_steps + 1
    assert len(fig.layout.sliders[0].steps) == len(fig.frames)
    assert fig.layout.yaxis.scaleanchor == "x"
    moving = fig.frames[0].traces
    particles = [i for i in moving if fig.data[i].name == "particles"][0]
    assert len(fig.data[particles].x) == 150
    # arrows never outgrow a grid cell: the field is normalised at every time
    box_width = fig.layout.xaxis.range[1] - fig.layout.xaxis.range[0]
    for frame in fig.frames:
        ax, ay = np.asarray(frame.data[0].x, float), np.asarray(frame.data[0].y, float)
        seg = np.stack([ax, ay], 1).reshape(-1, 7, 2)  # start, tip, gap, barb, tip, barb, gap
        assert np.all(np.linalg.norm(seg[:, 1] - seg[:, 0], axis=1) <= box_width / 10 + 1e-6)


def test_particles_2d_caps_frames(run_2d):
    model = run_2d[0]
    ts = ex.timesteps(model.schedule, 150)
    traj = ex.sample(model, model.prior_sample(50, 0), ts, "euler")
    fig = figures.particles_2d(model, traj, max_frames=30, show_x0=True)
    assert len(fig.frames) == 30
    assert {"0", str(traj.n_steps)} <= {f.name for f in fig.frames}


def test_final_samples_2d(run_2d):
    model, traj, _ = run_2d
    fig = figures.final_samples_2d(model.target, traj.sample)
    assert [tr.type for tr in fig.data] == ["contour", "scatter"]  # a few hundred samples: SVG
    many = np.tile(np.asarray(traj.sample), (-(-style.GL_POINTS // len(traj.sample)), 1))
    fig = figures.final_samples_2d(model.target, many, n_show=len(many))
    assert [tr.type for tr in fig.data] == ["contour", "scattergl"] and len(fig.data[1].x) >= style.GL_POINTS


def test_points_are_svg_below_the_webgl_threshold_and_keep_their_settings():
    few = style.points(style.GL_POINTS - 1, x=[0.0], y=[1.0], mode="markers", name="p", marker=dict(size=3))
    many = style.points(style.GL_POINTS, x=[0.0], y=[1.0], mode="markers", name="p", marker=dict(size=3))
    assert (few.type, many.type) == ("scatter", "scattergl")
    assert few.name == many.name == "p" and few.marker.size == many.marker.size == 3 and tuple(many.y) == (1.0,)


def test_path_error(run_1d):
    model, traj, ref = run_1d
    fig = figures.path_error(model, {"a": traj, "b": ref}, ref)
    assert len(fig.data) == 2 and fig.layout.yaxis.type == "log"
    assert np.isnan(fig.data[1].y).all()  # the reference against itself: nothing on a log axis


def test_a_diverged_run_still_draws():
    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get("edm"))
    ts = ex.timesteps(model.schedule, 4, t_start=1e200)
    traj = ex.sample(model, model.prior_sample(40, 0, t=ts[0]), ts, "euler")
    assert traj.diverged
    figures.particles_2d(model, traj).to_json()
    figures.final_samples_2d(model.target, traj.sample).to_json()
    model_1d = ex.AnalyticModel(ex.targets.get("gmm-1d-3modes"), model.schedule)
    traj_1d = ex.sample(model_1d, model_1d.prior_sample(40, 0, t=ts[0]), ts, "euler")
    figures.density_heatmap_1d(model_1d, traj_1d, show_x0=True).to_json()
    figures.final_histogram_1d(model_1d.target, traj_1d.sample).to_json()


class _NoTarget:
    """A model as a learned one looks to the figures: the four methods and a schedule, no target."""

    def __init__(self, model):
        self._model, self.schedule = model, model.schedule

    def denoise(self, x, t):
        return self._model.denoise(x, t)

    def velocity(self, x, t):
        return self._model.velocity(x, t)


def test_models_without_a_target(run_1d, run_2d):
    for model, traj, _ in (run_1d, run_2d):
        learned = _NoTarget(model)
        if model.dim == 1:
            fig = figures.density_heatmap_1d(learned, traj)
            assert not [tr for tr in fig.data if tr.type == "heatmap"]
        else:
            fig = figures.particles_2d(learned, traj)
            assert not [tr for tr in fig.data if tr.type == "contour"]
        fig.to_json()


def test_recursive_training_figure_keeps_its_axes_apart():
    """FH.generations: the rate axis in percent, the modes-covered axis in whole modes (it once took the
    rate's percent format: 3 modes read 300%), and the legend's two rows below the plot, clear of the title."""
    from explorer.figures import hallucination as FH

    records = {f: [dict(generation=g, hallucination_rate=0.5 + 0.01 * g, modes_covered=3 - (g > 0) * (f == "random"))
                   for g in range(3)] for f in ("variance", "random")}
    fig = FH.generations(records)
    assert fig.layout.yaxis.tickformat == ".1%" and fig.layout.yaxis2.tickformat is None
    assert fig.layout.yaxis2.dtick == 1 and fig.layout.yaxis2.overlaying == "y"
    assert [t.yaxis or "y" for t in fig.data] == ["y", "y2"] * 2
    assert fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"
    assert list(fig.data[3].y) == [3, 2, 2]
