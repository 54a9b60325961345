"""Every figure of the pages, drawn by a small component of our own with a partial plotly.js.

st.plotly_chart makes the browser load the whole of plotly.js (4.8 MB of script, with every trace type from 3D
surfaces to maps) before it draws a page's first figure. The pages draw seven trace types: static/BUNDLE is
plotly.js (the version plotly.py ships) built with only those (1.6 MB, scripts/plotly_bundle), served by
Streamlit's static file serving (.streamlit/config.toml) and drawn by draw(). Measured on 2 cores against
st.plotly_chart, on a page of one figure, five runs: a browser's first visit 2.2-3.4 s -> 1.3-1.6 s to the first
figure, a new tab 1.7-2.5 s -> 0.8-1.1 s, a reload 0.4-0.6 s -> 0.4 s (README, "How live the app feels").

Nothing on the pages reads a plotly selection, so drawing is all the component does: Plotly.react into one
div (a chart that Streamlit keeps across a rerun is updated in place), resized with its column, and shown on the
whole screen from its mode bar (what st.plotly_chart's full-screen button did)."""

from __future__ import annotations

import functools
import json
from contextlib import nullcontext

import plotly.io as pio
import streamlit as st
from streamlit import config as st_config

BUNDLE = "plotly-explorer.min.js"  # under static/, built by scripts/plotly_bundle/build.js
BUNDLE_TRACES = frozenset({"scatter", "scattergl", "heatmap", "histogram", "bar", "contour", "table"})  # build.js's
NAME = "explorer_chart"  # the component's name (tests/apptest.py's charts() reads the figures back by it)
PRELOAD = "explorer_plotly_preload"  # the name and key of preload()'s component
CLASS = "explorer-chart"  # the class of the div each figure is drawn in
# Every chart's mode bar: no plotly logo, no selection tools (nothing on these pages reads a selection), and no
# "Share chart" (plotly.js 4 shows it by default, and it sends the figure's data to cloud.plotly.com).
CONFIG = {"displaylogo": False, "showSendToCloud": False,
          "modeBarButtonsToRemove": ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d"]}

# One <script> tag loads the bundle for every chart of the page and the preload (window.__explorerPlotly is its
# promise, shared by the two components' scripts).
LOADER = """
const SRC = %(src)s;

function plotly() {
  if (!window.__explorerPlotly) {
    window.__explorerPlotly = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = SRC;
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => {
        window.__explorerPlotly = null;
        reject(new Error(`${SRC} did not load. Streamlit serves static/ only with server.enableStaticServing ` +
                         "on, as .streamlit/config.toml sets it when the app starts from the project's folder."));
      };
      document.head.appendChild(script);
    });
  }
  return window.__explorerPlotly;
}
"""

# The preload: app.py puts one, hidden, in the sidebar of every page before the page's script runs, so that the
# browser fetches and compiles plotly.js while the server computes the page's first figure (on a browser's first
# visit of Trajectories on 2 cores the bundle was requested 2.25 s after navigation, 1.52 s with the preload; a
# reload drew its first figure 0.04-0.09 s sooner in three interleaved runs, a first visit and a new tab within noise).
PRELOAD_JS = LOADER + """
export default function ({ parentElement }) {
  const element = parentElement.closest('[data-testid="stElementContainer"]');
  if (element) element.style.display = "none";  // nothing to show: no gap in the sidebar
  plotly().catch(() => {});  // a chart says what failed, if the bundle cannot load
}
"""

# The chart's script. Until the bundle has run, a chart holds its figure's height and says what it waits for. The
# page's charts draw one at a time, in the order they asked; the first of a burst is painted alone and the rest in
# slices of about SLICE ms (else every figure that arrived while plotly.js loaded is drawn in one task, and the page's
# first figure shows only when its last is drawn; painting after every figure cost Stability's nine 0.3 s more).
# A chart already drawn is updated by Plotly.react. It is redrawn at its new width when its column's width changes.
JS = LOADER + """
const CLASS = %(cls)s;

const SLICE = 200;  // ms of drawing between two paints

// Resolves when the next draw may start: at once, unless the draws since the last paint include the first of a
// burst (which is shown alone, as soon as it is drawn) or have taken SLICE ms; then after the browser has painted
// them (a frame, or 100 ms in a hidden tab, which has none).
function painted() {
  const slice = window.__explorerSlice;  // the draws since the last paint: when they began, whether a burst's first
  if (!slice || (!slice.first && performance.now() - slice.start < SLICE)) return Promise.resolve();
  return new Promise(resolve => {
    const done = () => { window.__explorerSlice = null; resolve(); };
    const fallback = setTimeout(done, 100);
    requestAnimationFrame(() => setTimeout(() => { clearTimeout(fallback); done(); }, 0));
  });
}

// draw() in the page's queue of draws, after the draws asked before it (a burst: the draws queued while one runs;
// its first is the one asked of an empty queue).
function inTurn(draw) {
  const first = !window.__explorerQueued;
  window.__explorerQueued = (window.__explorerQueued || 0) + 1;
  const turn = (window.__explorerDraws || Promise.resolve()).then(painted).then(() => {
    if (!window.__explorerSlice) window.__explorerSlice = { start: performance.now(), first };
    return draw();
  }).finally(() => { window.__explorerQueued -= 1; });
  window.__explorerDraws = turn.catch(() => {});
  return turn;
}

// A mode bar button that shows the chart on the whole screen, drawn at the screen's size (and back at its own).
const FULL_SCREEN = {
  name: "fullscreen",
  title: "Full screen",
  icon: { width: 1000, height: 1000,  // four corners
          path: "M100 100h300v100h-200v200h-100zM900 100v300h-100v-200h-200v-100zM100 900v-300h100v200h200v100z" +
                "M900 900h-300v-100h200v-200h100z" },
  click: chart => (document.fullscreenElement === chart ? document.exitFullscreen() : chart.requestFullscreen()),
};

function onFullScreen(chart) {
  if (document.fullscreenElement === chart) {
    chart.__windowed = { height: chart.layout.height ?? null };
    chart.style.background = "white";
    window.Plotly.relayout(chart, { width: window.innerWidth, height: window.innerHeight });
  } else if (chart.__windowed) {
    chart.style.background = "";
    window.Plotly.relayout(chart, { width: null, height: chart.__windowed.height });
    delete chart.__windowed;
  }
}

export default function ({ parentElement, data }) {
  let chart = parentElement.querySelector(`.${CLASS}`);
  if (!chart) {
    chart = document.createElement("div");
    chart.className = CLASS;
    chart.addEventListener("fullscreenchange", () => onFullScreen(chart));
    parentElement.appendChild(chart);
  }
  // Streamlit calls this again whenever it re-renders the element, often with the same figure: draw only a new
  // one, and one draw at a time per chart (plotly.js fails on a chart whose previous draw has not finished).
  const text = typeof data === "string" ? data : new TextDecoder().decode(data);
  if (chart.__figure !== text) {
    chart.__figure = text;
    const { figure, config } = JSON.parse(text);
    if (!chart.classList.contains("js-plotly-plot")) {
      chart.style.minHeight = `${(figure.layout && figure.layout.height) || 450}px`;
      chart.style.color = "rgba(128, 128, 128, 0.8)";
      chart.textContent = "Drawing the figure…";
    }
    chart.__drawing = (chart.__drawing || Promise.resolve()).then(plotly).then(Plotly => inTurn(() => {
      if (chart.__figure !== text) return;  // a newer figure came while this one waited: draw that one only
      if (!chart.classList.contains("js-plotly-plot")) chart.textContent = "";
      const buttons = [...(config.modeBarButtonsToAdd || []), FULL_SCREEN];
      return Plotly.react(chart, { data: figure.data, layout: figure.layout, frames: figure.frames || [],
                                   config: { ...config, modeBarButtonsToAdd: buttons } })
        .then(() => { chart.style.minHeight = ""; });
    })).catch(error => {
      if (window.Plotly) window.Plotly.purge(chart);
      chart.__figure = null;
      chart.style.color = "#c0392b";
      chart.textContent = `The figure could not be drawn: ${error.message}`;
    });
  }
  let live = true, observer = null, width = parentElement.clientWidth;
  chart.__drawing.then(() => {
    if (!live || !chart.classList.contains("js-plotly-plot")) return;
    observer = new ResizeObserver(() => {  // redrawn at its column's new width
      if (parentElement.clientWidth !== width) {
        width = parentElement.clientWidth;
        window.Plotly.Plots.resize(chart);
      }
    });
    observer.observe(parentElement);
  });
  return () => {
    live = false;
    if (observer) observer.disconnect();
  };
}
"""


def _bundle_url() -> str:
    """The bundle's URL path, under the server's base URL path."""
    base = st_config.get_option("server.baseUrlPath").strip("/")
    return "/" + "/".join(p for p in (base, "app", "static", BUNDLE) if p)


@functools.cache
def _component():
    """The component, registered once per process."""
    return st.components.v2.component(NAME, js=JS % {"src": json.dumps(_bundle_url()), "cls": json.dumps(CLASS)},
                                      isolate_styles=False)


@functools.cache
def _preloader():
    return st.components.v2.component(PRELOAD, js=PRELOAD_JS % {"src": json.dumps(_bundle_url())},
                                      isolate_styles=False)


def preload() -> None:
    """Start loading plotly.js in the browser now, before any figure is drawn (PRELOAD_JS): a hidden element in the
    sidebar. Nothing with Streamlit's static serving off (draw() then uses st.plotly_chart)."""
    if st_config.get_option("server.enableStaticServing"):
        with st.sidebar:
            _preloader()(key=PRELOAD)


def draw(fig, where=st, key: str | None = None, config: dict = CONFIG) -> None:
    """fig (a plotly Figure) drawn in `where` (the page, a column, a placeholder), with plotly's `config`
    (CONFIG: a short mode bar). Raises ValueError for a trace type the bundle lacks: plotly.js would leave it out
    of the figure without a word. With Streamlit's static serving off (the app started with plain `streamlit run`
    from another folder, so that .streamlit/config.toml was not read) the bundle cannot be served: the figure is
    drawn by st.plotly_chart instead, slower to a first view and otherwise the same."""
    missing = {trace.type for trace in fig.data} - BUNDLE_TRACES
    if missing:
        raise ValueError(f"draw: fig has trace types {sorted(missing)}, which static/{BUNDLE} does not carry "
                         f"({', '.join(sorted(BUNDLE_TRACES))}); add them in scripts/plotly_bundle/build.js")
    if not st_config.get_option("server.enableStaticServing"):
        where.plotly_chart(fig, theme=None, config=config, key=key)
        return
    payload = f'{{"config": {json.dumps(config)}, "figure": {pio.to_json(fig, validate=False)}}}'
    with nullcontext() if where is st else where:
        _component()(data=payload.encode(), key=key)
