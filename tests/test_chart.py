"""app_pages/chart.py: every figure of the pages goes to the browser whole, and is drawn by the partial plotly.js
in static/ (its browser side is checked in test_browser.py)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from plotly.offline import get_plotlyjs_version

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from apptest import charts, keyed_charts  # noqa: E402
from app_pages import chart  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "static" / chart.BUNDLE


def _banner() -> re.Match:
    with open(BUNDLE) as f:
        first = f.readline()
    banner = re.match(r"/\* plotly\.js v(\S+) \(MIT license\), traces: ([a-z0-9, ]+)\. Built by scripts/plotly_bundle\. \*/",
                      first)
    assert banner, f"static/{chart.BUNDLE} does not open with build.js's banner: {first[:200]!r}"
    return banner


def test_the_bundle_is_plotly_pys_plotly_js_with_the_pages_trace_types():
    """The bundle is the plotly.js that plotly.py ships (the notebooks draw with it), with BUNDLE_TRACES, and build.js
    (which writes the banner) lists the same traces."""
    banner = _banner()
    assert banner[1] == get_plotlyjs_version()
    assert set(banner[2].split(", ")) == chart.BUNDLE_TRACES
    build = (ROOT / "scripts" / "plotly_bundle" / "build.js").read_text()
    listed = re.search(r"const TRACES = \[([^\]]*)\]", build)[1]
    assert set(re.findall(r"'([a-z0-9]+)'", listed)) == chart.BUNDLE_TRACES
    package = json.loads((ROOT / "scripts" / "plotly_bundle" / "package.json").read_text())
    assert package["devDependencies"]["plotly.js"] == banner[1]
    assert 1e6 < BUNDLE.stat().st_size < 2.5e6  # the whole of plotly.js is 4.8 MB


def test_the_app_serves_the_bundle():
    """Streamlit serves static/ (next to app.py) only with static serving on: the app's config turns it on."""
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["enableStaticServing"] is True
    assert (ROOT / "app.py").exists() and BUNDLE.exists()


def _page():
    import numpy as np
    import plotly.graph_objects as go
    import streamlit as st

    from app_pages import chart

    x = np.linspace(0.0, 1.0, 5)
    fig = go.Figure(go.Scatter(x=x, y=x**2, name="square"), layout=dict(title=dict(text="Squares"), height=321))
    fig.frames = [go.Frame(data=[go.Scatter(x=x, y=x**3)], name="cube")]
    chart.draw(fig)
    left, right = st.columns(2)
    chart.draw(go.Figure(go.Heatmap(z=np.eye(3))), left, key="eye")
    chart.draw(go.Figure(go.Histogram(x=x)), right, config={"displayModeBar": False})


def test_draw_sends_the_whole_figure_and_its_config():
    at = AppTest.from_function(_page).run()
    assert not at.exception, [e.message for e in at.exception]
    drawn = charts(at)
    assert [fig["data"][0]["type"] for fig in drawn] == ["scatter", "heatmap", "histogram"]
    x = np.linspace(0.0, 1.0, 5)
    expected = go.Figure(go.Scatter(x=x, y=x**2, name="square"), layout=dict(title=dict(text="Squares"), height=321))
    expected.frames = [go.Frame(data=[go.Scatter(x=x, y=x**3)], name="cube")]
    assert drawn[0] == json.loads(pio.to_json(expected, validate=False))  # data, layout (template included), frames
    assert drawn[0]["frames"][0]["name"] == "cube" and drawn[0]["layout"]["height"] == 321
    assert set(keyed_charts(at)) == {"None", "eye"}
    sent = [json.loads(e.proto.bytes)["config"] for e in at.get("bidi_component")]
    assert sent == [chart.CONFIG, chart.CONFIG, {"displayModeBar": False}]


def _run_without_static_serving(page) -> AppTest:
    """page run as the app runs with Streamlit's static serving off (apptest.py turns it on for every test)."""
    from streamlit import config

    config.set_option("server.enableStaticServing", False)
    try:
        return AppTest.from_function(page).run()
    finally:
        config.set_option("server.enableStaticServing", True)


def _preloaded():
    from app_pages import chart

    chart.preload()


def test_the_preload_asks_for_the_bundle_from_the_sidebar_and_draws_nothing():
    """app.py's preload: one element in the sidebar, with no figure, whose script loads the same bundle as the charts'
    (and only with static serving on: without it there is no bundle to load)."""
    at = AppTest.from_function(_preloaded).run()
    assert not at.exception, [e.message for e in at.exception]
    [element] = at.sidebar.get("bidi_component")
    assert element.proto.component_name == chart.PRELOAD and not charts(at)
    assert f'const SRC = "/app/static/{chart.BUNDLE}";' in element.proto.js_content
    at = _run_without_static_serving(_preloaded)
    assert not at.exception and not at.get("bidi_component")


def _unbundled():
    import plotly.graph_objects as go

    from app_pages import chart

    chart.draw(go.Figure([go.Scatter(y=[1, 2]), go.Surface(z=[[1, 2], [3, 4]])]))


def test_a_trace_type_outside_the_bundle_is_an_error_naming_it():
    """plotly.js would leave a trace of a type it lacks out of the figure without a word: draw says so instead."""
    at = AppTest.from_function(_unbundled).run()
    [error] = at.exception
    assert error.proto.type == "ValueError"
    assert "surface" in error.message and "build.js" in error.message
    assert not charts(at)


def test_without_static_serving_the_figure_goes_to_st_plotly_chart():
    """Started from another folder by plain `streamlit run`, the app has no static serving, so the bundle cannot
    load: draw hands the same figure and config to st.plotly_chart instead of drawing an error."""
    at = _run_without_static_serving(_page)
    assert not at.exception, [e.message for e in at.exception]
    assert not charts(at)
    drawn = at.get("plotly_chart")
    assert len(drawn) == 3
    assert json.loads(drawn[0].proto.spec)["layout"]["title"]["text"] == "Squares"
    assert json.loads(drawn[2].proto.config) == {"displayModeBar": False}
