"""Figures of image models: a grid of samples, a film strip of one sample's x_t and x0-prediction
per step, two solvers from the same noise, quality against NFE per solver, and the Simple Shapes
counts and flagged images. Images are tiled into one grey heatmap per panel (pixels in [-1, 1],
row 0 at the top), tiles separated by a thin gap."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import style

GREYS = [[0.0, "#000000"], [1.0, "#ffffff"]]
GAP_COLOR = "#dde3ea"
FLAG_COLOR = "#d62728"
SOLVER_PALETTE = ["#1f4e9c", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def tile(images, cols: int, gap: int = 1) -> np.ndarray:
    """(rows * (H + gap) - gap, cols * (W + gap) - gap) mosaic of images (N, 1, H, W) or (N, H, W),
    row-major, NaN in the gaps and empty slots."""
    x = _np(images)
    if x.ndim == 4:
        x = x[:, 0]
    n, h, w = x.shape
    cols = max(1, min(int(cols), n))
    rows = max(1, -(-n // cols))
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = x[i]
    return out


def _heatmap(mosaic: np.ndarray, hover: str = "pixel %{z:.2f}<extra></extra>", text=None) -> go.Heatmap:
    return go.Heatmap(z=mosaic, colorscale=GREYS, zmin=-1, zmax=1, showscale=False, hovertemplate=hover,
                      customdata=text, xgap=0, ygap=0)


def _image_axes(fig: go.Figure, n_axes: int = 1, shape=None) -> None:
    """Image axes: row 0 on top, square pixels, no ticks; shape (rows, cols) pins the range to the mosaic."""
    for i in range(1, n_axes + 1):
        suffix = "" if i == 1 else str(i)
        fig.update_layout({f"yaxis{suffix}": dict(autorange="reversed", scaleanchor=f"x{suffix}", scaleratio=1,
                                                  showticklabels=False, showgrid=False, zeroline=False, constrain="domain"),
                           f"xaxis{suffix}": dict(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")})
    fig.update_layout(plot_bgcolor=GAP_COLOR)
    if shape is not None:
        fig.update_xaxes(range=[-0.5, shape[1] - 0.5])
        fig.update_yaxes(range=[shape[0] - 0.5, -0.5], autorange=False)


def _tile_index(n: int, cols: int, h: int, w: int, gap: int = 1) -> np.ndarray:
    """For every mosaic pixel, which image it belongs to (-1 in gaps), as hover data."""
    idx = np.full((max(1, -(-n // cols)) * (h + gap) - gap, cols * (w + gap) - gap), -1)
    for i in range(n):
        r, c = divmod(i, cols)
        idx[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = i
    return idx


def _outline(fig, i: int, cols: int, h: int, w: int, color: str, row=None, col=None, gap: int = 1) -> None:
    r, c = divmod(i, cols)
    y0, x0 = r * (h + gap) - 0.5, c * (w + gap) - 0.5
    fig.add_shape(type="rect", x0=x0, x1=x0 + w, y0=y0, y1=y0 + h, line=dict(color=color, width=2),
                  row=row, col=col)


def _panel_borders(n: int, cols: int, h: int, w: int, gap: int = 1) -> go.Scatter:
    """Faint dotted lines where the panels of three-panel images (width = 3 height) meet."""
    xs, ys = [], []
    for i in range(n):
        r, c = divmod(i, cols)
        for k in (1, 2):
            x = c * (w + gap) + k * w / 3 - 0.5
            xs += [x, x, None]
            ys += [r * (h + gap) - 0.5, r * (h + gap) + h - 0.5, None]
    return go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#6c757d", width=1, dash="dot"), hoverinfo="skip",
                      showlegend=False)


def sample_grid(images, cols: int = 8, title: str = "Samples", flagged=None, height: int | None = None) -> go.Figure:
    """The images as one tiled grey picture (hover names the sample); flagged (N,) bool outlines
    those samples in red. Three-panel images (width = 3 height) show their panel borders dotted."""
    x = _np(images)
    n, h, w = len(x), x.shape[-2], x.shape[-1]
    cols = max(1, min(int(cols), n))
    mosaic = tile(x, cols)
    index = _tile_index(n, cols, h, w)
    fig = go.Figure(_heatmap(mosaic, "sample %{customdata}<br>pixel %{z:.2f}<extra></extra>", index))
    if w == 3 * h:
        fig.add_trace(_panel_borders(n, cols, h, w))
    if flagged is not None:
        for i in np.flatnonzero(np.asarray(flagged, bool)):
            _outline(fig, int(i), cols, h, w, FLAG_COLOR)
    rows = mosaic.shape[0]
    width_px = 700
    fig.update_layout(**style.base_layout(title, height or int(min(900, 80 + width_px * rows / mosaic.shape[1]))))
    fig.update_layout(margin=dict(l=10, r=10, t=50, b=10))
    _image_axes(fig, shape=mosaic.shape)
    return fig


def film_strip(traj, index: int = 0, frames: int = 8, title: str | None = None, height: int = 300) -> go.Figure:
    """One sample along its run: x_t (top row) and the x0-prediction made there (bottom row) at
    `frames` evenly spaced steps, the last column the final sample; each column titled by step and t."""
    x, d = _np(traj.x), _np(traj.denoised)
    n_steps = len(d)
    if not 0 <= int(index) < x.shape[1]:
        raise ValueError(f"index must be in [0, {x.shape[1] - 1}], got {index}")
    steps = np.unique(np.round(np.linspace(0, n_steps - 1, max(2, min(int(frames), n_steps)))).astype(int))
    top = np.concatenate([x[steps, index], x[-1:, index]])
    bottom = np.concatenate([d[steps, index], x[-1:, index]])
    k = len(top)
    mosaic = tile(np.concatenate([top, bottom]), k)
    h, w = top.shape[-2], top.shape[-1]
    fig = go.Figure(_heatmap(mosaic))
    t = np.asarray(traj.t)
    labels = [f"step {s}<br>t={t[s]:.3g}" for s in steps] + [f"sample<br>t={t[-1]:.3g}"]
    fig.update_layout(**style.base_layout(title or f"Sample {index}: x_t (top) and the x0-prediction (bottom) per step", height))
    _image_axes(fig)
    fig.update_xaxes(showticklabels=True, tickmode="array", tickvals=[c * (w + 1) + (w - 1) / 2 for c in range(k)],
                     ticktext=labels, side="top", tickfont=dict(size=11))
    fig.update_yaxes(showticklabels=True, tickmode="array", tickvals=[(h - 1) / 2, h + 1 + (h - 1) / 2],
                     ticktext=["x_t", "x0-pred."])
    fig.update_layout(margin=dict(l=70, r=10, t=90, b=10))
    return fig


def side_by_side(images_a, images_b, label_a: str, label_b: str, cols: int = 8, title: str | None = None,
                 height: int | None = None) -> go.Figure:
    """Two grids of samples from the same noise (sample i in both grids started from the same x_T)."""
    a, b = _np(images_a), _np(images_b)
    cols = max(1, min(int(cols), len(a)))
    ma, mb = tile(a, cols), tile(b, cols)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[label_a, label_b], horizontal_spacing=0.03)
    for c, m in ((1, ma), (2, mb)):
        fig.add_trace(_heatmap(m), row=1, col=c)
    fig.update_layout(**style.base_layout(title or "Two solvers from the same noise",
                                          height or int(min(800, 110 + 560 * ma.shape[0] / ma.shape[1]))))
    fig.update_layout(margin=dict(l=10, r=10, t=70, b=10))
    _image_axes(fig, 2)
    return fig


def quality_vs_nfe(records: list[dict], floor: float | None = None, empirical: dict | None = None,
                   title: str = "Sample quality against NFE", height: int = 400) -> go.Figure:
    """Left: Frechet distance in the classifier's features against NFE, one line per solver (log
    axes; a diverged run is named in the legend), with the floor (real images against real images, same count) dashed; right: mean
    distance to the nearest training image (0: the samples are training images). empirical:
    {"fd", "nearest"} of the memorising model's samples, drawn as a dotted line."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Frechet distance (features) ↓", "Nearest training image (RMS pixel)"],
                        horizontal_spacing=0.1)
    names = list(dict.fromkeys(r["solver"] for r in records))
    for k, name in enumerate(names):
        rs = [r for r in records if r["solver"] == name and np.isfinite(r["fd"])]
        lost = [r["nfe"] for r in records if r["solver"] == name and not np.isfinite(r["fd"])]
        label = name + (f" (diverged at NFE {', '.join(map(str, lost))})" if lost else "")
        color = SOLVER_PALETTE[k % len(SOLVER_PALETTE)]
        nfe = [r["nfe"] for r in rs]
        fig.add_trace(go.Scatter(x=nfe, y=[r["fd"] for r in rs], mode="lines+markers", name=label, legendgroup=name,
                                 line=dict(color=color), hovertemplate=f"{name}<br>NFE %{{x}}<br>FD %{{y:.3g}}<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=nfe, y=[r["nearest"] for r in rs], mode="lines+markers", name=name, legendgroup=name,
                                 showlegend=False, line=dict(color=color),
                                 hovertemplate=f"{name}<br>NFE %{{x}}<br>distance %{{y:.3g}}<extra></extra>"), row=1, col=2)
    span = [min((r["nfe"] for r in records), default=1), max((r["nfe"] for r in records), default=1)]
    if floor is not None:
        fig.add_trace(go.Scatter(x=span, y=[floor] * 2, mode="lines", name="real vs real (same count)",
                                 line=dict(color=style.REFERENCE_COLOR, dash="dash")), row=1, col=1)
    if empirical is not None:
        for col, key in ((1, "fd"), (2, "nearest")):
            fig.add_trace(go.Scatter(x=span, y=[empirical[key]] * 2, mode="lines", name="memoriser", legendgroup="memoriser",
                                     showlegend=col == 1, line=dict(color="#2ca02c", dash="dot")), row=1, col=col)
    fig.update_layout(**style.base_layout(title, height))
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0), margin=dict(b=90))
    fig.update_xaxes(type="log", title_text="NFE")
    fig.update_yaxes(type="log", row=1, col=1)
    return fig


def shapes_counts(summary: dict, title: str = "What each panel holds", height: int = 360) -> go.Figure:
    """Left: per panel, how many images hold no, one, or two or more components there; right: how
    many images raise each flag (combinations the data never has)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Components per panel", "Images flagged, by reason"],
                        horizontal_spacing=0.22, column_widths=[0.5, 0.5])
    panels = list(summary["components_per_panel"])
    short = [p.split("(")[-1].rstrip(")") + " panel" for p in panels]
    colors = ["#adb5bd", style.SAMPLE_COLOR, FLAG_COLOR]
    for k, label in enumerate(("none", "one", "two or more")):
        fig.add_trace(go.Bar(x=short, y=[summary["components_per_panel"][p][k] for p in panels], name=label,
                             marker_color=colors[k]), row=1, col=1)
    flags = summary["flags"]
    fig.add_trace(go.Bar(y=list(flags), x=list(flags.values()), orientation="h", marker_color=FLAG_COLOR, showlegend=False,
                         text=list(flags.values()), textposition="outside", cliponaxis=False), row=1, col=2)
    fig.update_layout(**style.base_layout(title, height), barmode="group")
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=-0.25, xanchor="left", x=0.0),
                      margin=dict(l=60, r=30, t=70, b=70))
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    fig.update_xaxes(range=[0, max(1, max(flags.values())) * 1.25], row=1, col=2)
    return fig


def flagged_images(images, analysis, max_images: int = 24, cols: int = 8, title: str | None = None) -> go.Figure:
    """The flagged images (up to max_images), each hovering the flags it raised."""
    from ..analyses.shapes_analysis import FLAGS

    x = _np(images)
    idx = np.flatnonzero(analysis.flagged)[: int(max_images)]
    if not len(idx):
        fig = go.Figure()
        fig.update_layout(**style.base_layout(title or "No flagged images", 120))
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        return fig
    cols = max(1, min(int(cols), len(idx)))
    h, w = x.shape[-2], x.shape[-1]
    mosaic = tile(x[idx], cols)
    where = _tile_index(len(idx), cols, h, w)
    reasons = np.array([", ".join(f for f in FLAGS if analysis.flags[f][i]) for i in idx] + [""], dtype=object)
    text = np.where(where >= 0, np.array([f"sample {i}" for i in idx] + [""], dtype=object)[where] + "<br>" + reasons[where], "")
    fig = go.Figure(_heatmap(mosaic, "%{customdata}<extra></extra>", text))
    if w == 3 * h:
        fig.add_trace(_panel_borders(len(idx), cols, h, w))
    rows = mosaic.shape[0]
    fig.update_layout(**style.base_layout(title or f"Flagged images ({int(analysis.flagged.sum())}; hover for the reason)",
                                          int(min(700, 80 + 700 * rows / mosaic.shape[1]))))
    fig.update_layout(margin=dict(l=10, r=10, t=50, b=10))
    _image_axes(fig, shape=mosaic.shape)
    return fig
