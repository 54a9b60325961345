"""The Streamlit app, run headless by AppTest: every view renders, bad input is an st.error
(never a traceback), the URL restores the controls, and a rerun stays fast."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from apptest import assert_clean, charts, code_text, open_app  # noqa: E402

import explorer as ex  # noqa: E402

METRICS = {"NFE", "Distance to target", "Error vs reference", "Mode mass error", "Wall time"}


def _app(**query) -> AppTest:
    return open_app(timeout=60, **query)



def _metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


@pytest.fixture
def app() -> AppTest:
    """The app on its defaults (st.cache_data is per process: later apps start warm)."""
    return _app()


def test_defaults_render(app):
    assert_clean(app)
    assert set(_metrics(app)) == METRICS
    assert _metrics(app)["NFE"] == "10"
    assert app.selectbox(key="target").value == "gmm-1d-3modes"
    assert len(charts(app)) == 3  # paths over p_t(x), final histogram, error vs reference
    assert app.title[0].value == "Trajectories"


def test_solver_options_come_from_the_declaration(app):
    kinds = {"float": "number_input", "int": "number_input", "bool": "checkbox", "choice": "selectbox"}
    for solver in ex.solvers.names():
        app.selectbox(key="solver").set_value(solver).run()
        assert_clean(app)
        for option, spec in ex.solvers.info(solver)["options"].items():
            widget = getattr(app, kinds[spec["type"]])(key=f"{solver}.{option}")  # KeyError if missing
            assert widget.value == spec["default"]


def test_controls_rerun_cleanly_and_fast(app):
    app.selectbox(key="solver").set_value("euler").run()
    assert_clean(app)
    app.slider(key="steps").set_value(20).run()
    assert_clean(app)
    assert _metrics(app)["NFE"] == "20"
    app.toggle(key="x0").set_value(True).run()
    assert_clean(app)
    # on the defaults, a changed control reruns in well under a second (measured ~0.1-0.25 s; the
    # bound leaves room for a busy machine)
    times = []
    for solver in ("heun", "ddim", "dpmpp-2m"):
        start = time.perf_counter()
        app.selectbox(key="solver").set_value(solver).run()
        times.append(time.perf_counter() - start)
        assert_clean(app)
    assert sorted(times)[1] < 1.0, times


def test_two_dimensional_target(app):
    app.selectbox(key="target").set_value("gmm-2d-ring8").run()
    assert_clean(app)
    app.selectbox(key="solver").set_value("heun").run()
    app.slider(key="steps").set_value(6).run()
    assert_clean(app)
    assert _metrics(app)["NFE"] == "12"
    assert len(charts(app)) == 3  # particle animation, final samples, error vs reference
    app.number_input(key="gmm-2d-ring8.radius").set_value(5.0).run()
    assert_clean(app)


def test_bad_custom_modes_show_an_error():
    at = _app()
    at.toggle(key="custom").set_value(True).run()
    assert_clean(at)  # the preset's own modes, as text
    assert "1, 0.05" in at.text_area(key="gmm-1d-3modes.modes").value
    at.text_area(key="gmm-1d-3modes.modes").set_value("1.0, 0.05\nnot a number").run()
    assert not at.exception
    assert len(at.error) == 1 and "line 2" in at.error[0].value
    at.text_area(key="gmm-1d-3modes.modes").set_value("0, 0.3, 1\n4, 0.3, 3").run()
    assert_clean(at)


@pytest.mark.parametrize(
    "query, message",
    [
        ({"gmm-1d-3modes.std": "-0.5"}, "std must be a positive number"),
        ({"t_start": "0.001"}, "t_start must be greater than t_end"),
        ({"target": "gmm-2d-ring8", "gmm-2d-ring8.n_modes": "0"}, "n_modes must be an integer"),
    ],
)
def test_bad_input_is_an_error_not_a_traceback(query, message):
    at = _app(**query)
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value


def test_a_diverged_run_warns_and_still_draws():
    at = _app(t_start="1e300", steps="5")
    assert not at.exception and not at.error
    warnings = " ".join(w.value for w in at.warning)
    assert "diverged" in warnings and "step 0" in warnings
    assert _metrics(at)["Distance to target"] == "—"
    assert len(charts(at)) >= 2


def _core_metrics(query: dict) -> dict:
    """The Trajectories page's metrics for a URL, recomputed with the core API alone (not the page's
    code): the run the URL stands for (x_T from the seed, the solver's noise from [seed, 1]), its rk45
    reference (DOP853), and explorer.analyses.metrics on both, formatted as the page shows them."""
    import numpy as np

    name = query.get("target", "gmm-1d-3modes")
    params = {p: type(d)(float(query[f"{name}.{p}"])) for p, d in ex.targets.params(name).items() if f"{name}.{p}" in query}
    target = ex.targets.get(name, **params)
    solver = query.get("solver", "dpmpp-2m")
    cast = {"float": float, "int": int, "bool": lambda v: v == "true", "choice": str}
    options = {o: cast[spec["type"]](query[f"{solver}.{o}"]) for o, spec in ex.solvers.info(solver)["options"].items()
               if f"{solver}.{o}" in query}
    seed = int(query.get("seed", 0))
    model = ex.AnalyticModel(target, ex.schedules.get(query.get("schedule", "edm")))
    t_range = [float(query[k]) if k in query else None for k in ("t_start", "t_end")]
    ts = ex.timesteps(model.schedule, int(query.get("steps", 10)), query.get("spacing", ex.SPACINGS[0]), *t_range)
    x_T = model.prior_sample(int(query.get("n", 2000)), np.random.default_rng(seed), t=ts[0],
                             exact=query.get("exact") == "true")
    traj = ex.sample(model, x_T, ts, solver, rng=np.random.default_rng([seed, 1]), **options)
    ref = ex.reference(model, x_T, ts, method="DOP853")
    assert not traj.diverged and not ref.diverged
    return {
        "NFE": str(traj.nfe),
        "Distance to target": f"{ex.metrics.distance_to_target(traj.sample, target):.3f}",
        "floor": f"exact ODE: {ex.metrics.distance_to_target(ref.sample, target):.3f}",
        "Error vs reference": f"{ex.metrics.endpoint_error(traj.sample, ref.sample):.3g}",
        "Mode mass error": f"{ex.metrics.coverage_error(traj.sample, target):.3f}",
    }


@pytest.mark.parametrize("query", [
    {},  # the defaults: 1D, dpmpp-2m on edm
    {"target": "gmm-2d-ring8", "gmm-2d-ring8.radius": "4", "schedule": "vp-linear", "spacing": "karras",
     "solver": "ddim", "ddim.eta": "0.5", "steps": "7", "n": "500", "seed": "3", "exact": "true"},
    {"target": "gmm-1d-3modes", "gmm-1d-3modes.std": "0.1", "solver": "heun", "steps": "5", "n": "800", "seed": "7",
     "t_start": "20", "t_end": "0.01"},
])
def test_shown_metrics_are_the_core_metrics_of_the_url(query):
    at = _app(**query)
    assert_clean(at)
    shown = {m.label: m for m in at.metric}
    expected = _core_metrics(query)
    assert {k: shown[k].value for k in expected if k != "floor"} == {k: v for k, v in expected.items() if k != "floor"}
    assert shown["Distance to target"].proto.delta == expected["floor"]


def test_a_table_is_markdown_with_its_formats_labels_and_blanks():
    """controls.table, the pages' small read-only tables: columns in order of appearance, a missing value blank,
    formats and labels applied, other floats to 4 significant digits, all-number columns right-aligned (a bool is
    not a number), and a | inside a cell escaped."""
    from app_pages import controls

    class Capture:
        def markdown(self, text):
            self.text = text

    shown = Capture()
    controls.table([{"name": "a|b", "x": 0.123456, "n": 3, "flag": True},
                    {"name": "c", "n": 4, "flag": False, "y": 1234.5678}], formats={"x": ".2f"}, labels={"n": "count"},
                   where=shown)
    assert shown.text.splitlines() == ["| name | x | count | flag | y |",
                                       "|---|---:|---:|---|---:|",
                                       "| a\\|b | 0.12 | 3 | True |  |",
                                       "| c |  | 4 | False | 1235 |"]


def test_a_code_block_shows_its_text_exactly():
    """controls.code_block (st.html's <pre>, not st.code's 1.6 MB highlighter): markup in the text is escaped, so
    the reader sees and copies exactly the text, and tests read it back the same."""
    text = "x = [1, 2] < 3 & 'a' != \"b\"\n    <pre>not a tag</pre>\ttab"
    at = AppTest.from_string(f"from app_pages import controls\ncontrols.code_block({text!r})").run()
    assert not at.exception
    assert code_text(at) == [text]
    assert "<pre>not" not in at.get("html")[0].proto.body  # escaped, not markup


def test_the_benchmark_floor_pages_draw_their_one_figure():
    """bench_app --floor times FLOOR_PAGES as the least a Streamlit page with a plotly figure costs, drawn by
    st.plotly_chart and by the app's chart: each must run on the pinned Streamlit and draw exactly one figure, the
    way its name says, and nothing else heavy (no widget, no table)."""
    spec = importlib.util.spec_from_file_location("bench_app", Path(__file__).parent.parent / "benchmarks" / "bench_app.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert len(bench.FLOOR_PAGES) == 2
    for name, page in bench.FLOOR_PAGES.items():
        at = AppTest.from_string(page).run()
        assert not at.exception, name
        drawn = (len(at.get("plotly_chart")), len(charts(at)))
        assert drawn == ((1, 0) if "st.plotly_chart" in name else (0, 1)), (name, drawn)
        assert at.title[0].value == "One figure"
        assert not (at.button or at.slider or at.selectbox or at.dataframe or at.table)


def test_query_params_restore_the_controls():
    at = _app(
        target="gmm-2d-ring8", **{"gmm-2d-ring8.radius": "4"}, schedule="vp-linear", spacing="karras",
        solver="ddim", **{"ddim.eta": "0.5"}, steps="7", n="500", seed="3", exact="true",
    )
    assert_clean(at)
    assert at.selectbox(key="target").value == "gmm-2d-ring8"
    assert at.number_input(key="gmm-2d-ring8.radius").value == 4.0
    assert at.selectbox(key="schedule").value == "vp-linear"
    assert at.selectbox(key="spacing").value == "karras"
    assert at.selectbox(key="solver").value == "ddim"
    assert at.number_input(key="ddim.eta").value == 0.5
    assert at.slider(key="steps").value == 7
    assert at.number_input(key="n").value == 500
    assert at.number_input(key="seed").value == 3
    assert at.checkbox(key="exact").value is True
    assert _metrics(at)["NFE"] == "7"  # (that a changed control lands in the URL: tests/test_browser.py)
