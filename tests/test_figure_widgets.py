"""What the notebooks' FigureWidgets are given (figures.widget, figures.sync): numpy arrays, never plotly's
base64 typed-array specs ({dtype, bdata, shape}). The widget's frontend decodes such a spec for plotly.js
and sends the decoded array back in every trace delta, each nested row with its whole buffer (a 3 GB
message for the 1D explorer's 160 x 120 x 2 customdata); tests/test_browser_notebooks.py runs the widgets
in JupyterLab. NaN/inf still become gaps (None): a widget message is strict JSON. And sync sends each change
as messages plotly.js draws once, not twice."""

import numpy as np
import plotly.graph_objects as go
import pytest
from plotly.serializers import _py_to_js

from explorer import figures


def _specs(value, path="") -> list[str]:
    """Where value holds a typed-array spec ({dtype, bdata}), recursively."""
    if isinstance(value, dict):
        if {"dtype", "bdata"} <= set(value):
            return [path]
        return [p for k, v in value.items() for p in _specs(v, f"{path}.{k}")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _specs(v, f"{path}[{i}]")]
    return []


def _fig(shift: float = 0.0, gap: bool = False) -> go.Figure:
    """A heatmap with 2D z and 3D customdata (as density_heatmap_1d draws), a contour, and a line, all float32."""
    z = np.linspace(0, 1, 12 * 10, dtype=np.float32).reshape(12, 10)
    y = np.linspace(-1, 1, 50, dtype=np.float32) + np.float32(shift)
    if gap:
        y[7] = np.nan
    return go.Figure([
        go.Heatmap(z=z, customdata=np.dstack([z, 2 * z]), x=np.arange(10.0), y=np.arange(12.0)),
        go.Contour(z=z.T, x=np.arange(12.0), y=np.arange(10.0)),
        go.Scatter(x=np.arange(50, dtype=np.float32), y=y, mode="lines"),
    ])


def test_widget_data_gives_arrays_back_as_numpy():
    fig = _fig()
    plotly_json = fig.to_plotly_json()
    assert _specs(plotly_json), "plotly's to_plotly_json() no longer writes typed-array specs: this test is moot"
    data = figures.widget_data(plotly_json)
    assert _specs(data) == []
    heatmap, contour, line = data["data"]
    assert isinstance(heatmap["customdata"], np.ndarray) and heatmap["customdata"].shape == (12, 10, 2)
    np.testing.assert_array_equal(heatmap["customdata"][..., 1], 2 * fig.data[0].z)
    np.testing.assert_array_equal(contour["z"], fig.data[1].z)
    assert line["y"].dtype == np.float32 and line["y"].shape == (50,)


def test_widget_data_turns_nan_into_gaps_and_says_so():
    replaced = []
    data = figures.widget_data(_fig(gap=True).to_plotly_json(), replaced)
    y = data["data"][2]["y"]
    assert replaced and y[7] is None and y[6] == pytest.approx(-1 + 12 / 49, abs=1e-6)
    assert figures.widget_data({"x": [1.0, float("inf")]}) == {"x": [1.0, None]}


@pytest.mark.parametrize("gap", [False, True], ids=["finite", "with-a-gap"])
def test_widget_and_sync_send_no_typed_array_spec(gap, monkeypatch):
    """Every message the widget sends, through plotly's own widget serializer: 1D numbers as binary
    buffers, more dimensions as nested lists, never a spec; when sync replaces the traces (other types)
    and when it updates them in place (same types)."""
    w = figures.widget(_fig(gap=gap))
    sent = {"widget": [w._widget_data]}
    for name in ("_send_addTraces_msg", "_send_update_msg", "_send_restyle_msg", "_send_relayout_msg"):
        original = getattr(w, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            sent.setdefault(_name, []).append([args, kwargs])
            return _original(*args, **kwargs)

        monkeypatch.setattr(w, name, spy)
    figures.sync(w, go.Figure(go.Bar(x=[1, 2], y=[3, 4])))
    figures.sync(w, _fig(gap=gap))
    figures.sync(w, _fig(shift=0.5, gap=gap))
    assert {"widget", "_send_addTraces_msg", "_send_update_msg"} <= set(sent)
    for name, messages in sent.items():
        for message in messages:
            serialized = _py_to_js(message, None)
            assert _specs(message) == [] and _specs(serialized) == [], name
    heatmap, contour, line = _py_to_js(w._data, None)
    assert isinstance(heatmap["z"], list) and isinstance(heatmap["customdata"][0][0], list)
    assert isinstance(contour["z"][0][0], float)
    assert set(line["x"]) == {"buffer", "dtype", "shape"} and line["x"]["dtype"] == "float32"
    assert float(w.data[2].y[0]) == pytest.approx(-0.5)  # the in-place update landed


def test_sync_sends_a_replacing_figure_s_layout_before_its_traces():
    """plotly.js redraws after every message: the layout goes to the emptied figure, and the new traces
    come in one addTraces that draws them once (a layout sent last drew every trace a second time).
    Traces that line up go in one update with what changed of the layout, gone keys removed."""
    w = figures.widget(go.Figure(go.Bar(x=[1, 2], y=[3, 4])))
    sent = []
    for name in ("_send_addTraces_msg", "_send_deleteTraces_msg", "_send_update_msg", "_send_restyle_msg",
                 "_send_relayout_msg", "_send_moveTraces_msg"):
        original = getattr(w, name)
        setattr(w, name, lambda *a, _original=original, _name=name, **k: (sent.append(_name), _original(*a, **k))[1])
    figures.sync(w, _fig())
    assert sent == ["_send_deleteTraces_msg", "_send_relayout_msg", "_send_addTraces_msg"]
    assert [t.type for t in w.data] == ["heatmap", "contour", "scatter"]
    w.layout.annotations = [dict(text="only in the old layout")]
    sent.clear()
    new = _fig(shift=0.5)
    new.update_layout(height=321)
    figures.sync(w, new)
    assert sent == ["_send_update_msg"]
    assert w.layout.height == 321 and not w.layout.annotations and float(w.data[2].y[0]) == pytest.approx(-0.5)
