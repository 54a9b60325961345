"""How particles move: the density they travel through, their paths, where they end."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from . import style
from .time_axis import time_axis as _time_axis

DENSITY_SCALES = ("sqrt", "linear", "log", "per-t")


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)


def _spread_indices(values: np.ndarray, n: int) -> np.ndarray:
    """n particle indices spread evenly over the ranking of `values` (so every mode gets some)."""
    finite = np.flatnonzero(np.isfinite(values))
    if len(finite) == 0:
        finite = np.arange(len(values))
    order = finite[np.argsort(values[finite], kind="stable")]
    n = min(n, len(order))
    return order[np.linspace(0, len(order) - 1, n).round().astype(int)] if n else order[:0]


def _destination(target, x_final) -> np.ndarray:
    """Index of the component each final sample most likely came from (0 where it is not finite)."""
    x_final = np.asarray(x_final, dtype=np.float64)
    ok = np.all(np.isfinite(x_final), axis=1)
    comp = np.zeros(len(x_final), dtype=int)
    if ok.any():
        with np.errstate(all="ignore"):  # far-off points (a diverging run) may overflow: they keep 0
            resp = target.responsibilities(x_final[ok])
        comp[ok] = np.argmax(np.nan_to_num(resp, nan=0.0), axis=1)
    return comp


def _f32(a) -> np.ndarray:
    """Half the bytes sent to the browser; plenty for drawing (beyond float32's range: inf)."""
    with np.errstate(over="ignore"):
        return np.asarray(a, dtype=np.float32)


def _mode_marker(target, x_final) -> dict:
    """Marker colours by destination mode, as numbers on a discrete colour scale (fast to
    validate and to send, unlike one colour string per point)."""
    colors = style.mode_colors(target)
    k = max(len(colors) - 1, 1)
    scale = [[i / k, c] for i, c in enumerate(colors)] if len(colors) > 1 else [[0, colors[0]], [1, colors[0]]]
    return dict(color=_destination(target, x_final).astype(np.float32), colorscale=scale, cmin=0, cmax=k)


def _polylines(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (paths, points) joined into one trace, separated by NaN gaps."""
    gap = np.full((xs.shape[0], 1), np.nan)
    return np.hstack([xs, gap]).ravel(), np.hstack([ys, gap]).ravel()


def density_heatmap_1d(
    model,
    traj,
    show_x0: bool = False,
    n_paths: int = 40,
    time_axis: str = "log-snr",
    density: str = "sqrt",
    n_t: int = 120,
    n_x: int = 160,
    title: str | None = None,
    height: int = 460,
) -> go.Figure:
    """The exact noised density p_t(x) of a 1D model over (t, x), noise on the left, with the
    paths of n_paths particles (and, if show_x0, their x0-predictions x0_hat(x_t, t)) on top.

    density: colour as sqrt(p / max p) (default), p / max p, log p, or per-t (p_t / max_x p_t).
    Models without log_prob get the paths alone.
    """
    if density not in DENSITY_SCALES:
        raise ValueError(f"unknown density scale {density!r}; choose from {list(DENSITY_SCALES)}")
    s = model.schedule
    t = np.asarray(traj.t, dtype=np.float64)
    x, d = _np(traj.x)[..., 0], _np(traj.denoised)[..., 0]  # (n + 1, N), (n, N)
    to_x, xaxis = _time_axis(s, t, time_axis)
    target = getattr(model, "target", None)
    box = style.view_box(target, x[..., None])[0]
    fig = go.Figure()

    if callable(getattr(model, "log_prob", None)):
        lam = np.linspace(float(s.lambda_(t[0])), float(s.lambda_(t[-1])), n_t)
        t_cols = np.clip(s.t_of_lambda(lam), t[-1], t[0])
        xs = np.linspace(box[0], box[1], n_x)
        tt, xx = np.meshgrid(t_cols, xs)  # (n_x, n_t)
        with np.errstate(all="ignore"):  # a diverged run's grid may reach absurd t
            p = np.exp(model.log_prob(xx.reshape(-1, 1), tt.ravel())).reshape(xx.shape)
        p = np.where(np.isfinite(p), p, 0.0)
        p = p if p.max() > 0 else np.ones_like(p)
        z = {
            "sqrt": lambda: np.sqrt(p / p.max()),
            "linear": lambda: p / p.max(),
            "log": lambda: np.maximum(np.log(p / p.max()), -12.0),
            "per-t": lambda: p / p.max(axis=0, keepdims=True),
        }[density]()
        cols = to_x(t_cols)
        step = np.diff(cols)
        # Evenly spaced columns (the log-SNR axis) are drawn as one small image the browser smooths as it scales
        # it ("fast": 38 ms against 69 ms for plotly's own interpolation, "best", which uneven columns need).
        even = bool(xaxis.get("type") != "log" and np.all(np.isfinite(step))
                    and np.allclose(step, step.mean(), rtol=1e-3, atol=0))
        fig.add_trace(
            go.Heatmap(
                x=cols, y=xs, z=_f32(z), customdata=_f32(np.dstack([tt, p])), colorscale=style.DENSITY_SCALE,
                showscale=False, name="p_t(x)", zsmooth="fast" if even else "best",
                hovertemplate="t = %{customdata[0]:.4g}<br>x = %{y:.3f}<br>p_t(x) = %{customdata[1]:.3g}<extra></extra>",
            )
        )

    paths = _spread_indices(x[-1], n_paths)
    if target is not None:
        dest, colors = _destination(target, x[-1, paths, None]), style.mode_colors(target)
    else:
        dest, colors = np.zeros(len(paths), dtype=int), [style.SAMPLE_COLOR]
    steps = np.arange(len(t))
    hover = "step %{customdata}<br>x = %{y:.3f}<extra>%{fullData.name}</extra>"
    for k in np.unique(dest):  # one trace per destination mode: a line has one colour
        mine = paths[dest == k]
        if show_x0:
            px, py = _polylines(np.tile(to_x(t[:-1]), (len(mine), 1)), d[:, mine].T)
            fig.add_trace(
                go.Scatter(
                    x=px, y=py, mode="lines+markers", name="x0-prediction", legendgroup="x0", showlegend=False,
                    customdata=np.tile(np.append(steps[:-1], -1), len(mine)), hovertemplate=hover,
                    line=dict(color=colors[k], width=1), marker=dict(size=6, color=colors[k], symbol="x-thin", line=dict(width=1.5, color=colors[k])),
                    opacity=0.55,
                )
            )
        px, py = _polylines(np.tile(to_x(t), (len(mine), 1)), x[:, mine].T)
        fig.add_trace(
            go.Scatter(
                x=px, y=py, mode="lines+markers", name="particle", legendgroup="x", showlegend=False,
                customdata=np.tile(np.append(steps, -1), len(mine)), hovertemplate=hover,
                line=dict(color=colors[k], width=1.3), marker=dict(size=4, color=colors[k]), opacity=0.9,
            )
        )
    # legend entries in neutral grey: the colours themselves mean "the mode this particle reaches"
    entries = [("x", f"paths of {len(paths)} particles, coloured by the mode they reach", "circle", 1.3)]
    if show_x0:
        entries.append(("x0", "their x0-predictions", "x-thin", 1.0))
    for group, name, symbol, width in entries:
        fig.add_trace(
            go.Scatter(
                x=[None], y=[None], mode="lines+markers", name=name, legendgroup=group,
                line=dict(color="#555", width=width), marker=dict(size=6, color="#555", symbol=symbol, line=dict(width=1.5, color="#555")),
            )
        )
    return style.set_layout(fig, style.base_layout(title or f"Particle paths through the exact density p_t(x) — {traj.solver}", height),
                            xaxes=dict(xaxis, showgrid=False, zeroline=False),
                            yaxes=dict(title=dict(text="x"), range=list(box), showgrid=False, zeroline=False))


def final_histogram_1d(target, samples, n_bins: int | None = None, title: str | None = None, height: int = 360) -> go.Figure:
    """Histogram of the final samples (as a density) against the exact target density curve.
    n_bins defaults to bins of a third of the narrowest mode's std (at most 200 in the view)."""
    x = _np(samples).reshape(len(samples), -1)[:, 0]
    box = style.view_box(target, x[:, None], widen=1.0)[0]
    grid = np.linspace(box[0], box[1], 600)
    density = np.exp(target.log_prob(grid[:, None]))
    finite = x[np.isfinite(x)]
    if n_bins is None:
        n_bins = int(np.clip((box[1] - box[0]) / (target.stds().min() / 3), 30, 200))
    outside = np.mean((finite < box[0]) | (finite > box[1])) if len(finite) else 0.0
    fig = go.Figure()
    fig.add_trace(
        go.Histogram(
            x=finite, histnorm="probability density", name=f"samples ({len(finite)})",
            xbins=dict(start=box[0], end=box[1], size=(box[1] - box[0]) / n_bins),
            marker=dict(color=style.SAMPLE_COLOR, line=dict(width=0)), opacity=0.55,
            hovertemplate="x = %{x}<br>density %{y:.3f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=grid, y=density, mode="lines", name="target p(x)", line=dict(color=style.TARGET_COLOR, width=2),
            hovertemplate="x = %{x:.3f}<br>p(x) = %{y:.3f}<extra></extra>",
        )
    )
    style.set_layout(fig, dict(style.base_layout(title or "Final samples against the target", height), bargap=0),
                     xaxes=dict(title=dict(text="x"), range=list(box)), yaxes=dict(title=dict(text="density"), rangemode="tozero"))
    if outside > 0:
        fig.add_annotation(
            text=f"{outside:.1%} of samples outside the view", xref="paper", yref="paper", x=1, y=0.98,
            showarrow=False, xanchor="right", font=dict(size=11, color=style.REFERENCE_COLOR),
        )
    return fig


def _target_contour(target, box: np.ndarray, n: int = 120, name: str = "target density") -> go.Contour:
    """Filled contours of the target density p(x) / max p (light, to sit under particles)."""
    gx, gy = np.linspace(*box[0], n), np.linspace(*box[1], n)
    xx, yy = np.meshgrid(gx, gy)
    p = np.exp(target.log_prob(np.stack([xx.ravel(), yy.ravel()], axis=1))).reshape(xx.shape)
    return go.Contour(
        x=gx, y=gy, z=_f32(np.sqrt(p / p.max())), name=name, showscale=False, hoverinfo="skip",
        colorscale=[[0, "rgba(255,255,255,0)"], [0.25, "#eef3fa"], [1, "#9ab7dc"]],
        contours=dict(start=0.05, end=1.0, size=0.15, coloring="fill", showlines=True),
        line=dict(width=0.6, color="rgba(60, 90, 150, 0.45)"),
    )


def _arrows(model, t: float, box: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrows of the direction particles travel at time t while sampling, -dx/dt (t decreases),
    on an n x n grid; lengths normalised per time so that the field reads at every t."""
    gx, gy = np.linspace(*box[0], n + 2)[1:-1], np.linspace(*box[1], n + 2)[1:-1]
    xx, yy = np.meshgrid(gx, gy)
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    with np.errstate(all="ignore"):  # absurd t (a diverged run's grid): the arrows just vanish
        v = -np.asarray(model.velocity(pts, t), dtype=np.float64)
    v[~np.all(np.isfinite(v), axis=1)] = 0.0
    speed = np.linalg.norm(v, axis=1)
    cell = min(gx[1] - gx[0], gy[1] - gy[0])
    scale = np.quantile(speed[np.isfinite(speed)], 0.9) if np.isfinite(speed).any() else 1.0
    length = 0.9 * cell * np.clip(speed / max(scale, 1e-300), 0.0, 1.0)
    u = np.divide(v, speed[:, None], out=np.zeros_like(v), where=speed[:, None] > 0)
    u[~np.isfinite(u)] = 0.0
    tip = pts + length[:, None] * u
    head = 0.35 * length[:, None]
    normal = np.stack([-u[:, 1], u[:, 0]], axis=1)
    left = tip - head * (u - 0.55 * normal)
    right = tip - head * (u + 0.55 * normal)
    nan = np.full_like(pts, np.nan)
    seg = np.stack([pts, tip, nan, left, tip, right, nan], axis=1).reshape(-1, 2)
    return seg[:, 0], seg[:, 1]


def _frame_steps(n_states: int, max_frames: int) -> np.ndarray:
    if n_states <= max_frames:
        return np.arange(n_states)
    return np.unique(np.linspace(0, n_states - 1, max_frames).round().astype(int))


def particles_2d(
    model,
    traj,
    n_show: int = 2000,
    n_highlight: int = 8,
    n_arrows: int = 17,
    max_frames: int = 60,
    show_x0: bool = False,
    frame: int = -1,
    animate: bool = True,
    title: str | None = None,
    height: int = 620,
) -> go.Figure:
    """2D particles at every grid time as plotly frames (slider and play button, animated in the
    browser), over the target's density contours, with the probability-flow field at the shown
    time (arrows: the direction of travel, -dx/dt, lengths normalised per frame) and the whole
    paths of n_highlight particles. Particles are coloured by the mode they end in.

    n_show caps the particles drawn; max_frames caps the frames (evenly chosen steps);
    show_x0 adds the x0-predictions at each step; frame indexes the frame shown first (-1: the
    last). animate=False draws that frame alone, without frames, slider or buttons (for a
    FigureWidget, which cannot hold frames: drive it with your own step control).
    A model without a .target (a learned one) gets no contours and one colour.
    """
    s = model.schedule
    t = np.asarray(traj.t, dtype=np.float64)
    x, d = _np(traj.x), _np(traj.denoised)
    target = getattr(model, "target", None)
    box = style.view_box(target, x, widen=1.4, square=True)
    n = x.shape[1]
    show = np.arange(n) if n <= n_show else np.linspace(0, n - 1, n_show).round().astype(int)
    if target is not None:
        mode_marker, centre = _mode_marker(target, x[-1, show]), target.mean()
    else:
        mode_marker, centre = dict(color=style.SAMPLE_COLOR), box.mean(axis=1)
    highlight = show[_spread_indices(np.arctan2(*(x[-1, show] - centre).T), n_highlight)]
    steps = _frame_steps(len(t), max_frames)

    def state(i, full=True):
        """The traces that change from frame to frame, at grid index i (frames carry only x and y).
        Drawn bottom to top: flow arrows, x0-predictions, particles, the followed particles."""
        ax, ay = _arrows(model, t[i], box, n_arrows)
        layers = [(ax, ay)]
        if show_x0:
            j = min(i, len(d) - 1)  # the last state has no prediction of its own: keep the one before
            layers.append((d[j, show, 0], d[j, show, 1]))
        layers += [(x[i, show, 0], x[i, show, 1]), (x[i, highlight, 0], x[i, highlight, 1])]
        if not full:
            return [dict(x=_f32(a), y=_f32(b)) for a, b in layers]
        traces = [
            go.Scatter(mode="lines", line=dict(color="rgba(40,40,40,0.55)", width=1), name="flow (direction of travel)", hoverinfo="skip"),
        ]
        if show_x0:
            traces.append(
                style.points(
                    len(show), mode="markers", name="x0-prediction", hoverinfo="skip",
                    marker=dict(size=5, color=style.X0_COLOR, opacity=0.45, symbol="x", line=dict(width=0)),
                )
            )
        traces += [
            style.points(
                len(show), mode="markers", name="particles", hoverinfo="skip",
                marker=dict(size=4, opacity=0.75, line=dict(width=0), **mode_marker),
            ),
            go.Scatter(
                mode="markers", name="followed particles", showlegend=False, hoverinfo="skip",
                marker=dict(size=10, color="#111111", symbol="circle-open", line=dict(width=2)),
            ),
        ]
        for trace, (a, b) in zip(traces, layers):
            trace.update(x=_f32(a), y=_f32(b))
        return traces

    static = [_target_contour(target, box)] if target is not None else []
    px, py = _polylines(x[:, highlight, 0].T, x[:, highlight, 1].T)
    static.append(
        go.Scatter(
            x=px, y=py, mode="lines", name=f"paths of {len(highlight)} particles",
            line=dict(color="rgba(17,17,17,0.75)", width=1.5), hoverinfo="skip",
        )
    )
    first = int(steps[frame]) if -len(steps) <= frame < len(steps) else int(steps[-1])
    fig = go.Figure(data=static + state(first))
    moving = list(range(len(static), len(fig.data)))

    def label(i):
        return f"step {i}/{len(t) - 1}  ·  t = {t[i]:.4g}  ·  σ/α = {np.exp(-float(s.lambda_(t[i]))):.3g}"

    axes = _plane_2d(box)
    if not animate:
        layout = style.base_layout(title or f"{traj.solver} — {label(first)}", height)
        layout["legend"].update(x=0.0, xanchor="left", y=1.01, yanchor="bottom")
        return style.set_layout(fig, dict(layout, **axes))

    fig.frames = [go.Frame(data=state(int(i), full=False), traces=moving, name=str(int(i))) for i in steps]
    play = dict(frame=dict(duration=max(60, 4000 // len(steps)), redraw=True), transition=dict(duration=0), fromcurrent=False, mode="immediate")
    jump = dict(frame=dict(duration=0, redraw=True), transition=dict(duration=0), mode="immediate")
    layout = style.base_layout(title or f"Particles from noise to data — {traj.solver}", height)
    layout["margin"].update(t=90, b=115)
    layout["legend"].update(x=0.0, xanchor="left", y=1.01, yanchor="bottom")
    return style.set_layout(fig, dict(
        layout, **axes,
        updatemenus=[
            dict(
                type="buttons", direction="left", x=0.0, y=-0.12, xanchor="left", yanchor="top", pad=dict(t=28, r=6),
                showactive=False, font=dict(size=12),
                buttons=[
                    dict(label="▶ Play", method="animate", args=[None, play]),
                    dict(label="❚❚", method="animate", args=[[None], {**jump, "frame": dict(duration=0, redraw=False)}]),
                ],
            )
        ],
        sliders=[
            dict(
                active=int(np.flatnonzero(steps == first)[0]), x=0.24, len=0.76, y=-0.12, yanchor="top",
                pad=dict(t=10, b=0), ticklen=4, minorticklen=0, font=dict(color="rgba(0,0,0,0)"),  # ticks, no labels
                currentvalue=dict(prefix="", font=dict(size=12, color="#262730"), xanchor="left", offset=6),
                steps=[dict(label=label(int(i)), method="animate", args=[[str(int(i))], jump]) for i in steps],
            )
        ],
    ))


def final_samples_2d(target, samples, n_show: int = 4000, title: str | None = None, height: int = 620) -> go.Figure:
    """The final 2D samples over the target's density contours, coloured by their mode."""
    x = _np(samples).reshape(len(samples), -1)
    box = style.view_box(target, x, widen=1.0, square=True)
    ok = np.all(np.isfinite(x), axis=1)
    x = x[ok]
    if len(x) > n_show:
        x = x[np.linspace(0, len(x) - 1, n_show).round().astype(int)]
    fig = go.Figure(
        [
            _target_contour(target, box),
            style.points(
                len(x), x=x[:, 0], y=x[:, 1], mode="markers", name=f"samples ({len(x)})",
                marker=dict(size=4, opacity=0.75, line=dict(width=0), **_mode_marker(target, x)),
                hovertemplate="(%{x:.3f}, %{y:.3f})<extra></extra>",
            ),
        ]
    )
    return style.set_layout(fig, dict(style.base_layout(title or "Final samples against the target", height), **_plane_2d(box)))


def _plane_2d(box) -> dict:
    """The x and y axes of a 2D view of box, equal in scale, with fixed margins (style.FIXED_MARGINS)."""
    common = dict(showgrid=False, zeroline=False, constrain="domain", **style.FIXED_MARGINS)
    return dict(xaxis=dict(range=list(box[0]), title=dict(text="x₁"), **common),
                yaxis=dict(range=list(box[1]), title=dict(text="x₂"), scaleanchor="x", scaleratio=1, **common))
