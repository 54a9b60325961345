"""One look for every figure: template, colours, margins, and the plotting box of a target."""

from __future__ import annotations

import json
import pkgutil

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.basedatatypes import BasePlotlyType
from plotly.graph_objects import layout as _layout

TEMPLATE = "explorer_white"  # plotly_white cut to what these figures draw (registered below)
# The trace types the figures draw: the template keeps plotly_white's defaults for these only.
TRACE_TYPES = ("scatter", "scattergl", "heatmap", "histogram", "bar", "contour", "table", "surface")
_UNUSED_LAYOUT = ("scene", "polar", "ternary", "geo", "mapbox")  # 3D, polar, ternary and map axes: none drawn


class _PlainTemplate(_layout.Template):
    """A template copied as the plain data it is. Plotly deep-copies the registered template into every figure
    that names it, and copy.deepcopy of a graph object walks its validators and parent links: 4.7 ms a figure,
    most of what a small figure costs to build. This one copies through its JSON (0.15 ms): the same content,
    in a Template of plotly's own class."""

    def __deepcopy__(self, memo):
        return _layout.Template(self.to_plotly_json(), _validate=False)


def _register_template() -> None:
    """Register TEMPLATE: plotly_white's layout (less the axes of the plot kinds none of these figures draws) and
    its defaults for TRACE_TYPES. Plotly deep-copies and re-validates a figure's template whenever one is made or
    its layout set; plotly_white's defaults for some 25 trace types made that most of the cost of a small figure
    (about 15 ms a figure on a busy core, 8 ms with this one). Every figure drawn here looks the same under both."""
    if TEMPLATE in pio.templates:
        return
    white = json.loads(pkgutil.get_data("plotly", "package_data/templates/plotly_white.json"))  # what pio loads
    data = {k: v for k, v in white["data"].items() if k in TRACE_TYPES}
    layout = {k: v for k, v in white["layout"].items() if k not in _UNUSED_LAYOUT}
    template = _PlainTemplate({"data": data, "layout": layout}, _validate=False)
    store = getattr(pio.templates, "_templates", None)
    if isinstance(store, dict):  # stored as plotly stores its own (unvalidated): a figure validates the copy it takes
        store[TEMPLATE] = template
    else:
        pio.templates[TEMPLATE] = template


_register_template()
FONT = dict(family="Inter, 'Source Sans Pro', Helvetica, Arial, sans-serif", size=13, color="#262730")
SAMPLE_COLOR = "#1f4e9c"  # the solver's particles
TARGET_COLOR = "#d62728"  # the exact target density
X0_COLOR = "#ff9f1c"  # x0-predictions
REFERENCE_COLOR = "#6c757d"  # the rk45 reference
MODE_PALETTE_1D = [  # paths over the blue density: no blue
    "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
]
DENSITY_SCALE = [  # p_t(x): white for no mass, deep blue for the most
    [0.0, "#ffffff"], [0.15, "#e3edf7"], [0.4, "#9ecae1"], [0.7, "#4292c6"], [1.0, "#08306b"],
]


# Markers per trace from which WebGL draws faster than SVG. A WebGL trace costs a fixed 0.2-0.3 s in a browser
# drawing WebGL in software (headless Chromium, many laptops without GPU acceleration; measured there: 300 points
# 0.28 s in WebGL against 0.03 s in SVG, 4,000 points 0.24 s against 0.18 s, 10,000 points 0.28 s against 0.35 s).
GL_POINTS = 6000


def points(n: int, **kwargs) -> go.Scatter | go.Scattergl:
    """A scatter trace for n markers (n the most it shows in any frame): SVG below GL_POINTS, WebGL from there."""
    return (go.Scattergl if n >= GL_POINTS else go.Scatter)(**kwargs)


def _merged(into: dict, update: dict) -> dict:
    """into updated as plotly's update() does: a dict merges into a dict, anything else replaces."""
    for key, value in update.items():
        if isinstance(value, BasePlotlyType):
            value = value.to_plotly_json()
        elif isinstance(value, (list, tuple)):
            value = [v.to_plotly_json() if isinstance(v, BasePlotlyType) else v for v in value]
        into[key] = _merged(dict(into[key]), value) if isinstance(value, dict) and isinstance(into.get(key), dict) else value
    return into


def set_layout(fig: go.Figure, layout: dict, xaxes: dict | None = None, yaxes: dict | None = None,
               annotations: dict | None = None) -> go.Figure:
    """fig.update_layout(**layout), then update_xaxes(**xaxes), update_yaxes(**yaxes) and
    update_annotations(**annotations) over every axis and annotation, as one assignment of the layout.
    Each update_* call validates and records every key path it changes for plotly's widget sync; on a grid of
    subplots the four calls cost as much as drawing the figure (Few steps' 28-cell grid: 200 ms, 100 ms this way).
    The same figure either way: the 247 figures the app drew when the figures moved to it were compared as JSON,
    and tests/test_figures.py compares the two on a grid of subplots. Pays where a figure is rebuilt on every rerun."""
    for props in (layout, xaxes or {}, yaxes or {}, annotations or {}):
        magic = [key for key in props if "_" in key]
        if magic:
            raise ValueError(f"set_layout takes nested dicts, not plotly's underscore paths: {magic}")
    merged = fig.layout.to_plotly_json()
    if "template" in layout:
        merged.pop("template", None)  # replaced whole, as update_layout replaces it
    _merged(merged, layout)
    for letter, props in (("x", xaxes), ("y", yaxes)):
        if props:
            names = [k for k in merged if k.startswith(letter + "axis")] or [letter + "axis"]
            for name in names:
                merged[name] = _merged(dict(merged.get(name, {})), props)
    if annotations and merged.get("annotations"):
        merged["annotations"] = [_merged(dict(a), annotations) for a in merged["annotations"]]
    fig.layout = merged
    return fig


# Off: the template's automatic axis margins (for set_layout's xaxes and yaxes, or an axis dict), on a figure whose
# plots keep their aspect ratio (scaleanchor). There each margin a tick label pushes reshapes the plot, whose new ticks
# push again, and plotly redraws the whole figure up to its limit of times (in Chromium: the Stability page's run
# figure 2.5 s with them, 0.08 s without). These axes carry short numeric ticks, which the fixed margins hold.
FIXED_MARGINS = dict(automargin=False)


def base_layout(title: str, height: int) -> dict:
    return dict(
        template=TEMPLATE,
        font=FONT,
        title=dict(text=title, x=0.01, xanchor="left", yref="container", y=1.0, yanchor="top", pad=dict(t=14), font=dict(size=16)),
        height=height,
        margin=dict(l=60, r=20, t=60, b=55),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0, bgcolor="rgba(0,0,0,0)"),
        hoverlabel=dict(font_size=12),
    )


LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0)  # clear of subplot titles


def base_below(title: str, height: int) -> dict:
    """base_layout with the legend below the plots, and the room it takes (`height` is the plots')."""
    layout = base_layout(title, height + 50)
    layout["legend"].update(LEGEND_BELOW)
    layout["margin"].update(b=110)
    return layout


def mode_colors(target) -> list[str]:
    """One colour per mixture component, read off where the component sits: in 1D by its rank
    along x, in 2D hue by angle around the centre and saturation by distance,
    so neighbouring modes get neighbouring colours and a ring reads as a colour wheel."""
    means = np.asarray(target.means, dtype=np.float64)
    if len(means) == 1:
        return [SAMPLE_COLOR]
    if means.shape[1] == 1:  # by rank along x: neighbouring modes never share a colour
        rank = np.argsort(np.argsort(means[:, 0], kind="stable"))
        return [MODE_PALETTE_1D[r % len(MODE_PALETTE_1D)] for r in rank]
    offset = means[:, :2] - means[:, :2].mean(axis=0)
    radius = np.hypot(offset[:, 0], offset[:, 1])
    hue = (np.degrees(np.arctan2(offset[:, 1], offset[:, 0])) + 360.0) % 360.0
    saturation = 25 + 65 * radius / (radius.max() or 1.0)
    return [f"hsl({h:.0f}, {sat:.0f}%, 45%)" for h, sat in zip(hue, saturation)]


def target_box(target, pad: float = 0.15) -> np.ndarray:
    """(D, 2) lower and upper corners holding every component's mean +- 3.5 std, padded."""
    lo = np.min(target.means - 3.5 * target.stds()[:, None], axis=0)
    hi = np.max(target.means + 3.5 * target.stds()[:, None], axis=0)
    width = hi - lo
    return np.stack([lo - pad * width, hi + pad * width], axis=1)


def view_box(target, x, widen: float = 1.6, square: bool = False) -> np.ndarray:
    """(D, 2) the plotting box: the target's box grown to hold the bulk of the particles x
    (any shape (..., D)), but never wider than `widen` times the target's box, so that the
    target keeps its detail when the start is far away (ve, edm). Without a target (None): the
    particles' 1-99% quantile box."""
    pts = np.asarray(x, dtype=np.float64)
    pts = pts.reshape(-1, pts.shape[-1])
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if target is None:
        box = np.quantile(pts, [0.01, 0.99], axis=0).T if len(pts) else np.tile([-1.0, 1.0], (x.shape[-1], 1))
        box = box + np.array([-1.0, 1.0]) * np.maximum(0.1 * (box[:, 1:] - box[:, :1]), 1e-3)
        if square:
            centre, half = box.mean(axis=1), 0.5 * (box[:, 1] - box[:, 0]).max()
            box = np.stack([centre - half, centre + half], axis=1)
        return box
    box = target_box(target)
    centre, half = box.mean(axis=1), 0.5 * (box[:, 1] - box[:, 0])
    if len(pts):
        lo, hi = np.quantile(pts, [0.01, 0.99], axis=0)
        half = np.maximum(half, np.maximum(centre - lo, hi - centre) * 1.05)
        half = np.minimum(half, widen * 0.5 * (box[:, 1] - box[:, 0]))
    if square:
        half = np.full_like(half, half.max())
    return np.stack([centre - half, centre + half], axis=1)
