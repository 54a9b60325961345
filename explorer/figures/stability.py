"""Stability figures: regions in the complex plane, a run's h*eigenvalues on them step by step,
the momentum paper's toy system, and what guidance does to stability.

The numbers come from explorer.analyses.stability (the regions from the solvers' own step code, the
exact Jacobians of mixture denoisers); these functions only arrange them. `region_data` and
`run_data` compute once into plain dicts that the figures draw (and the app caches).
A point z = h*lambda is "outside" when the method's characteristic roots at z leave the unit disk.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analyses import stability as _stability
from . import style
from .trajectories import _f32, _np, _target_contour

OUTSIDE_COLOR = "#d62728"  # h*lambda outside the region / a particle whose values are outside
INSIDE_COLOR = "#2b2b2b"
REGION_COLORS = ["#1f4e9c", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22"]
DEFAULT_BOX = ((-3.5, 0.75), (-2.25, 2.25))  # (Re range, Im range) of the plane
RADIUS_ONE = 16384  # the spectral radius is stored as uint16, round(radius * RADIUS_ONE) (up to 4): light to cache


def _legend_below(layout: dict, y: float = -0.16, bottom: int = 110) -> dict:
    """A horizontal legend under the plot (long method names would crowd the title otherwise)."""
    layout["legend"].update(orientation="h", x=0.0, xanchor="left", y=y, yanchor="top")
    layout["margin"].update(b=bottom)
    return layout


def region_color(k: int) -> str:
    return REGION_COLORS[k % len(REGION_COLORS)]


def label(solver: str, options: dict | None = None) -> str:
    """A short name for a method with its options: 'plms 4', 'ghvb 2, β = 0.8', 'heavy-ball (plms 4), β = 0.8'."""
    o = dict(options or {})
    if solver in ("plms", "unipc", "deis") and "order" in o:
        return f"{solver} {o['order']}"
    if solver == "ghvb":
        return f"ghvb {o.get('order', 4)}, β = {float(o.get('beta', 0.8)):.2g}"
    if solver == "heavy-ball":
        base = o.get("base", "plms")
        base = f"plms {o.get('base_order', 4)}" if base == "plms" else base
        return f"heavy-ball ({base}), β = {float(o.get('beta', 0.8)):.2g}"
    return solver


# Data: computed once, drawn many times.


# Marching squares, oriented. A cell's corners are bits (bottom-left 1, bottom-right 2, top-right 4, top-left
# 8) set where inside; its edges are 0 bottom, 1 right, 2 top, 3 left. Per case the segments (from edge,
# to edge), the inside on their left; the two saddles split by the centre (inside, outside).
_SEGMENTS = {1: [(0, 3)], 2: [(1, 0)], 4: [(2, 1)], 8: [(3, 2)], 14: [(3, 0)], 13: [(0, 1)], 11: [(1, 2)],
             7: [(2, 3)], 3: [(1, 3)], 12: [(3, 1)], 6: [(2, 0)], 9: [(0, 2)]}
_SADDLES = {5: ([(0, 1), (2, 3)], [(0, 3), (2, 1)]), 10: ([(3, 0), (1, 2)], [(1, 0), (3, 2)])}


def outline(x, y, f) -> np.ndarray:
    """The closed loops around {f <= 0}, f (ny, nx) sampled on the grid x (nx,), y (ny,), as one complex
    array x + iy with NaN between loops: counter-clockwise around the set, clockwise around its holes (so
    an SVG path fills the set, holes left open), along the grid's edge where the set reaches it. Crossings
    interpolate f linearly along the cell's edges (plotly's contours do the same in the browser)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = np.concatenate([x[:1], x, x[-1:]]), np.concatenate([y[:1], y, y[-1:]])  # a zero-width border...
    f = np.pad(np.asarray(f, dtype=np.float64), 1, constant_values=1.0)  # ...outside, so every loop closes
    ny, nx = f.shape
    inside = f <= 0
    case = inside[:-1, :-1] * 1 + inside[:-1, 1:] * 2 + inside[1:, 1:] * 4 + inside[1:, :-1] * 8
    n_across = ny * (nx - 1)  # edge ids: the horizontal edges (i, j)-(i, j+1) first, then the vertical ones

    def crossing(edge: int) -> complex:
        if edge < n_across:
            i, j = divmod(edge, nx - 1)
            s = f[i, j] / (f[i, j] - f[i, j + 1])
            return complex(x[j] + s * (x[j + 1] - x[j]), y[i])
        i, j = divmod(edge - n_across, nx)
        s = f[i, j] / (f[i, j] - f[i + 1, j])
        return complex(x[j], y[i] + s * (y[i + 1] - y[i]))

    following = {}  # edge crossed -> the next edge along its loop
    for i, j in zip(*np.nonzero((case != 0) & (case != 15))):
        c = int(case[i, j])
        edges = (i * (nx - 1) + j, n_across + i * nx + j + 1, (i + 1) * (nx - 1) + j, n_across + i * nx + j)
        if c in _SADDLES:
            segments = _SADDLES[c][0 if f[i : i + 2, j : j + 2].sum() <= 0 else 1]
        else:
            segments = _SEGMENTS[c]
        for a, b in segments:
            following[edges[a]] = edges[b]
    points = []
    while following:
        start, edge = following.popitem()
        loop = [start]
        while edge != start:
            loop.append(edge)
            edge = following.pop(edge)
        points += [crossing(e) for e in loop] + [crossing(start), complex(np.nan, np.nan)]
    return np.array(points, dtype=np.complex128)


def region_data(solver: str, options: dict | None = None, box=DEFAULT_BOX, n: int = 150) -> dict:
    """The method's stability region on an n x n grid over box = ((re_lo, re_hi), (im_lo, im_hi)):
    spectral radius (max |root| of the characteristic polynomial at z = h*lambda), the outline of
    {radius <= 1} (what the figures fill), boundary locus, left end of the real stability interval and
    the integration variable h is measured in."""
    options = dict(options or {})
    (a, b), (c, d) = box
    re, im = np.linspace(a, b, n), np.linspace(c, d, n)
    z = re[None, :] + 1j * im[:, None]
    recurrence = getattr(_stability, "recurrence", None)
    if c == -d and recurrence is not None and np.isrealobj(recurrence(solver, **options)):
        # real coefficients: the region is symmetric about the real axis, so compute the upper half
        upper = np.asarray(_stability.spectral_radius(solver, z[n // 2 :], **options), dtype=np.float64)
        radius = np.concatenate([upper[len(upper) - n // 2 :][::-1], upper])
    else:
        radius = np.asarray(_stability.spectral_radius(solver, z, **options), dtype=np.float64)
    try:
        locus = np.asarray(_stability.boundary(solver, **options), dtype=np.complex128)
    except Exception:  # the locus is an extra on the plot; the region stands without it
        locus = np.array([], dtype=np.complex128)
    radius = np.round(np.clip(np.nan_to_num(radius, nan=4.0, posinf=4.0), 0.0, 65535 / RADIUS_ONE) * RADIUS_ONE).astype(np.uint16)
    return dict(
        solver=solver, options=options, label=label(solver, options), re=re, im=im, radius=radius,
        outline=outline(re, im, radius - (RADIUS_ONE + 0.5)).astype(np.complex64),  # radius <= 1 (z = 0 is on the edge)
        boundary=locus, interval=float(_stability.real_interval(solver, **options)),
        variable=_stability.variable(solver, **{k: v for k, v in options.items() if k != "h"}),
    )


def run_data(model, traj, particles=None) -> dict:
    """A run's h*eigenvalues per step, and which fall outside the method's region.

    z: (n_steps, P, D) h*lambda at each step's particles (P = particles given, default all), from
    ex.stability.step_eigenvalues; outside: (n_steps, P, D) outside the region where the exact flow
    contracts (Re z <= 0): growth that only the method makes; growing: Re z > 0, directions the
    flow itself pulls apart (particles choosing between modes), outside every explicit method's
    region and not an error; particle_outside: (n_steps, P) any value outside; fraction:
    (n_steps,) share of the (finite) particles with one; radius: (n_steps,) the largest root modulus
    of the method over the step's contracting values (> 1: the method amplifies what the flow damps);
    norm: (n_steps + 1,) largest |x| per state.
    For the exponential integrators each step's region is the one for its own step h in lambda."""
    x = _np(traj.x)
    idx = np.arange(x.shape[1]) if particles is None else np.asarray(particles)
    z = np.asarray(_stability.step_eigenvalues(model, traj, idx), dtype=np.complex128)
    options = dict(traj.options)
    var = _stability.variable(traj.solver, **options)
    finite = np.isfinite(z)
    t = np.asarray(traj.t, dtype=np.float64)
    radius = np.full(z.shape, np.nan)
    if var == "lambda":
        lam = np.asarray(model.schedule.lambda_(t), dtype=np.float64)
        for i in range(len(z)):
            if finite[i].any():
                radius[i][finite[i]] = _stability.spectral_radius(
                    traj.solver, z[i][finite[i]], h=float(abs(lam[i + 1] - lam[i])), **options)
    elif finite.any():
        radius[finite] = _stability.spectral_radius(traj.solver, z[finite], **options)
    inside = ~finite | (radius <= 1.0 + getattr(_stability, "TOL", 1e-9))
    growing = finite & (z.real > 0)
    outside = finite & ~inside & ~growing
    particle_outside = outside.any(axis=2)
    alive = finite.all(axis=2)
    fraction = particle_outside.sum(axis=1) / np.maximum(alive.sum(axis=1), 1)
    contracting = np.where(finite & ~growing, radius, np.nan)
    with np.errstate(invalid="ignore"):
        worst = np.array([np.nanmax(r) if np.isfinite(r).any() else np.nan for r in contracting])
        norm = np.array([np.nanmax(np.abs(xi)) if np.isfinite(xi).any() else np.nan for xi in x[:, idx]])
    return dict(
        solver=traj.solver, options=options, label=label(traj.solver, options), particles=idx, z=z,
        outside=outside, growing=growing, particle_outside=particle_outside, fraction=fraction, radius=worst, norm=norm,
        diverged_at=traj.diverged_at, variable=var, t=t,
    )


# The plane.


def _plane(box, col=None) -> tuple[dict, dict]:
    """The x and y axes of the plane of h*lambda over box (in column col of a grid), equal in scale."""
    common = dict(zeroline=True, zerolinecolor="#999", zerolinewidth=1, showgrid=True, gridcolor="#eee", constrain="domain")
    return (dict(range=list(box[0]), title=dict(text="Re(h·λ)"), **common),
            dict(range=list(box[1]), title=dict(text="Im(h·λ)"), scaleanchor="x" if col in (None, 1) else f"x{col}",
                 scaleratio=1, **common))


def _region_traces(regions, fill_opacity: float = 0.18) -> list:
    """Per region: the filled set {spectral radius <= 1} (its outline on the grid, computed here: a
    few kB, where a contour of the grid sends the grid and has the browser trace it on every redraw),
    the boundary locus (dashed: the curve on which a root has modulus one) and a tick at the left end
    of the real interval."""
    traces = []
    for k, r in enumerate(regions):
        color = region_color(k)
        rgb = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
        group = f"region{k}"
        name = f"{r['label']} · [{r['interval']:.3g}, 0]"
        edge = r["outline"]
        traces.append(go.Scatter(
            x=_f32(edge.real), y=_f32(edge.imag), mode="lines", fill="toself", name=name, legendgroup=group,
            showlegend=False, hoverinfo="skip",
            fillcolor=f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{fill_opacity})", line=dict(color=color, width=1.6),
        ))
        locus = r["boundary"]
        traces.append(go.Scatter(
            x=_f32(locus.real), y=_f32(locus.imag), mode="lines", name=name, legendgroup=group,
            line=dict(color=color, width=1.2, dash="dot"), hoverinfo="skip",
        ))
        traces.append(go.Scatter(
            x=[r["interval"]], y=[0.0], mode="markers", name=name, legendgroup=group, showlegend=False,
            marker=dict(symbol="line-ns", size=16, line=dict(color=color, width=3)),
            hovertemplate=f"{r['label']}<br>real interval [{r['interval']:.4g}, 0]<extra></extra>",
        ))
    return traces


def stability_regions(regions, box=DEFAULT_BOX, points=None, title: str | None = None, height: int = 560) -> go.Figure:
    """Stability regions of several methods overlaid in the plane of z = h*lambda.

    regions: region_data dicts (same box). Filled: where every root of the method's characteristic
    polynomial has modulus <= 1; dotted: the boundary locus; tick on the real axis: the left end of
    the real stability interval (also in the legend). points: optional complex values to place on
    the plane with a bool mask of those outside, as (z, outside)."""
    fig = go.Figure(_region_traces(regions))
    if points is not None:
        for trace in _point_traces(*points):  # (z, outside) or (z, outside, growing)
            fig.add_trace(trace)
    layout = _legend_below(style.base_layout(title or "Stability regions (filled: stable)", height))
    x, y = _plane(box)
    return style.set_layout(fig, layout, xaxes=dict(x, **style.FIXED_MARGINS), yaxes=dict(y, **style.FIXED_MARGINS))


def _point_traces(z, outside, growing=None, full: bool = True) -> list:
    """Three sets of points: inside the region; outside where the exact flow contracts (red);
    Re z > 0, where the flow itself separates (hollow)."""
    z, outside = np.ravel(z), np.ravel(outside)
    growing = np.zeros(z.shape, dtype=bool) if growing is None else np.ravel(growing)
    keep = np.isfinite(z)
    parts = [
        (z[keep & ~outside & ~growing], "h·λ inside the region", dict(size=5, color=INSIDE_COLOR, opacity=0.5)),
        (z[keep & outside], "h·λ outside: amplified by the method", dict(size=6, color=OUTSIDE_COLOR, opacity=0.6)),
        (z[keep & growing], "Re h·λ > 0: the flow itself separates", dict(size=6, color="#888", symbol="circle-open", opacity=0.7)),
    ]
    if not full:
        return [dict(x=_f32(p.real), y=_f32(p.imag)) for p, *_ in parts]
    return [
        style.points(z.size, x=_f32(p.real), y=_f32(p.imag), mode="markers", name=name, hoverinfo="skip",
                     marker=dict(line=dict(width=1 if "symbol" in m else 0, color=m["color"]), **m))
        for p, name, m in parts
    ]


# A run: h*eigenvalues and particles, step by step.


def step_eigenvalues(model, traj, regions, data, box=DEFAULT_BOX, frame: int | None = None, animate: bool = True,
                     title: str | None = None, height: int = 560, widen: float = 10.0) -> go.Figure:
    """Left: the run's h*lambda at one step over the regions (red: outside the run's own region).
    Right: the particles at that step, those with a value outside in red, over the target's density.
    With animate, one frame per step and a slider (played in the browser); otherwise `frame` alone
    (default: the step with the largest root modulus, if above 1, else the last step). The particle
    view holds the second half of the run, up to `widen` times the target's box (the caption gives
    the largest |x| at each step)."""
    z, outside, growing, po = data["z"], data["outside"], data["growing"], data["particle_outside"]
    n_steps = len(z)
    x = _np(traj.x)[:, data["particles"]]
    target = getattr(model, "target", None)
    # The box holds every particle of the second half of the run (where a blow-up shows), up to widen x the target's.
    late = x[len(x) // 2 :].reshape(-1, x.shape[2])
    late = late[np.isfinite(late).all(axis=1)]
    xbox = style.view_box(target, late[:0] if len(late) else x[0], square=True)
    if len(late):
        centre, half = xbox.mean(axis=1), 0.5 * (xbox[:, 1] - xbox[:, 0])
        reach = 1.05 * np.abs(late - centre).max()
        half = np.full_like(half, min(max(half.max(), reach), widen * half.max()))
        xbox = np.stack([centre - half, centre + half], axis=1)
    if frame is None:  # the step where the method amplifies most
        r = np.nan_to_num(np.asarray(data["radius"], dtype=np.float64), nan=-1.0)
        frame = int(np.argmax(r)) if r.max() > 1.0 + 1e-9 else n_steps - 1
    frame = int(np.clip(frame if frame >= 0 else n_steps + frame, 0, n_steps - 1))

    def state(i, full=True):
        xi, bad = x[i], po[i]
        moving = _point_traces(z[i], outside[i], growing[i], full) + [
            (dict(x=_f32(xi[~bad, 0]), y=_f32(xi[~bad, 1])) if not full else style.points(
                len(xi), x=_f32(xi[~bad, 0]), y=_f32(xi[~bad, 1]), mode="markers", name="particles", hoverinfo="skip",
                marker=dict(size=4, opacity=0.7, line=dict(width=0), color=INSIDE_COLOR), xaxis="x2", yaxis="y2")),
            (dict(x=_f32(xi[bad, 0]), y=_f32(xi[bad, 1])) if not full else style.points(
                len(xi), x=_f32(xi[bad, 0]), y=_f32(xi[bad, 1]), mode="markers", name="particles with h·λ outside", hoverinfo="skip",
                marker=dict(size=6, opacity=0.9, line=dict(width=0), color=OUTSIDE_COLOR), xaxis="x2", yaxis="y2")),
        ]
        return moving

    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.08,
                        subplot_titles=("h·λ of the drift's Jacobian at the particles", "the particles at that step"))
    for tr in _region_traces(regions):
        fig.add_trace(tr, row=1, col=1)
    if target is not None and x.shape[2] == 2:
        fig.add_trace(_target_contour(target, xbox), row=1, col=2)
    n_static = len(fig.data)
    fig.add_traces(state(frame))
    moving = list(range(n_static, len(fig.data)))

    def caption(i):
        t = data["t"]
        k = int(po[i].sum())
        return (f"step {i + 1}/{n_steps} · t {t[i]:.3g} → {t[i + 1]:.3g} · "
                f"{k} of {po.shape[1]} particles outside · max |x| {data['norm'][i]:.3g}")

    layout = style.base_layout(title or f"{data['label']}: h·λ per step (h in {data['variable']})", height)
    layout["legend"].update(x=0.0, xanchor="left", y=1.08, yanchor="bottom")
    layout["margin"].update(t=110)
    plane_x, plane_y = _plane(box, 1)
    layout.update(xaxis=plane_x, yaxis=plane_y,
                  xaxis2=dict(range=list(xbox[0]), title=dict(text="x₁"), showgrid=False, zeroline=False, constrain="domain"),
                  yaxis2=dict(range=list(xbox[1]), title=dict(text="x₂"), showgrid=False, zeroline=False, scaleanchor="x2",
                              scaleratio=1, constrain="domain"))
    fixed = style.FIXED_MARGINS
    titles = dict(font=dict(size=13), y=1.0, yanchor="bottom")  # the two panels' titles
    if not animate:
        style.set_layout(fig, layout, xaxes=fixed, yaxes=fixed, annotations=titles)
        fig.add_annotation(text=caption(frame), x=0.0, y=-0.16, xref="paper", yref="paper", showarrow=False,
                           xanchor="left", font=dict(size=12))
        return fig
    fig.frames = [go.Frame(data=state(i, full=False), traces=moving, name=str(i)) for i in range(n_steps)]
    jump = dict(frame=dict(duration=0, redraw=True), transition=dict(duration=0), mode="immediate")
    play = dict(frame=dict(duration=max(150, 3000 // n_steps), redraw=True), transition=dict(duration=0), mode="immediate")
    layout.update(
        margin=dict(l=60, r=20, t=110, b=120),
        updatemenus=[dict(
            type="buttons", direction="left", x=0.0, y=-0.14, xanchor="left", yanchor="top", pad=dict(t=28, r=6),
            showactive=False, font=dict(size=12),
            buttons=[dict(label="▶ Play", method="animate", args=[None, play]),
                     dict(label="❚❚", method="animate", args=[[None], {**jump, "frame": dict(duration=0, redraw=False)}])],
        )],
        sliders=[dict(
            active=frame, x=0.16, len=0.84, y=-0.14, yanchor="top", pad=dict(t=10, b=0), ticklen=4, minorticklen=0,
            font=dict(color="rgba(0,0,0,0)"),
            currentvalue=dict(prefix="", font=dict(size=12, color="#262730"), xanchor="left", offset=6),
            steps=[dict(label=caption(i), method="animate", args=[[str(i)], jump]) for i in range(n_steps)],
        )],
    )
    return style.set_layout(fig, layout, xaxes=fixed, yaxes=fixed, annotations=titles)


def step_report(runs, data_range: float | None = None, title: str | None = None, height: int = 440,
                range_name: str = "target's range") -> go.Figure:
    """Per step, for one or more runs (run_data dicts): top, the largest root modulus of the method at
    the step's h*lambda (over values where the flow contracts; above 1 the method amplifies them, the
    hover gives the share of particles outside the region); bottom, the largest |x| after the step
    (log), with the target's range dashed and a cross where the run diverged."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, row_heights=[0.45, 0.55],
                        subplot_titles=("largest |root| at the step's h·λ (above 1: amplified)", "largest |x| after the step"))
    for k, r in enumerate(runs):
        color = region_color(k)
        steps = np.arange(1, len(r["fraction"]) + 1)
        fig.add_trace(go.Scatter(
            x=steps, y=r["radius"], mode="lines+markers", name=r["label"], legendgroup=r["label"],
            line=dict(color=color, width=2), marker=dict(size=6), customdata=r["fraction"],
            hovertemplate="step %{x}: |root| ≤ %{y:.3g}, %{customdata:.0%} of particles outside<extra>" + r["label"] + "</extra>",
        ), row=1, col=1)
        norm = np.asarray(r["norm"][1:], dtype=np.float64)
        fig.add_trace(go.Scatter(x=steps, y=norm, mode="lines+markers", name=r["label"], legendgroup=r["label"],
                                 showlegend=False, line=dict(color=color, width=2), marker=dict(size=6),
                                 hovertemplate="step %{x}: max |x| = %{y:.3g}<extra>" + r["label"] + "</extra>"),
                      row=2, col=1)
        if r["diverged_at"] is not None:
            finite = norm[np.isfinite(norm)]
            top = (finite.max() if len(finite) else 1.0) * 3
            fig.add_trace(go.Scatter(x=[r["diverged_at"] + 1], y=[top], mode="markers", showlegend=False,
                                     marker=dict(symbol="x", size=13, color=OUTSIDE_COLOR, line=dict(width=1)),
                                     hovertemplate=f"{r['label']} diverged (inf/NaN) at step {r['diverged_at'] + 1}<extra></extra>"),
                          row=2, col=1)
    fig.add_hline(y=1.0, line=dict(color=OUTSIDE_COLOR, dash="dash", width=1), row=1, col=1)
    if data_range is not None:
        fig.add_hline(y=data_range, line=dict(color="#888", dash="dash", width=1), row=2, col=1,
                      annotation_text=range_name, annotation_position="bottom right", annotation_font_size=11)
    layout = _legend_below(style.base_layout(title or "What each step does: amplification, and the particles' size", height),
                           y=-0.2)
    layout["margin"].update(t=70)
    layout.update(yaxis=dict(type="log"), yaxis2=dict(type="log"),  # rows 1 and 2
                  xaxis2=dict(title=dict(text="step"), dtick=1 if max(len(r["fraction"]) for r in runs) <= 30 else None))
    notes = [a.to_plotly_json() for a in fig.layout.annotations]
    layout["annotations"] = [  # the panels' titles to the left, smaller (the range line's label as it is)
        dict(a, font=dict(a.get("font", {}), size=13), x=0.0, xanchor="left") if a.get("text", "").startswith("largest") else a
        for a in notes]
    return style.set_layout(fig, layout)


# The toy system of the momentum paper.


def toy_paths(results: dict, exact: np.ndarray, title: str | None = None, height: int = 460) -> go.Figure:
    """Paths of x' = A x in the (x1, x2) plane: the exact solution (grey) and each method's states
    (results: label -> (n_steps + 1, 2)). The view is the exact path's box, widened: a method that
    blows up leaves it (its last shown point carries the size in the hover)."""
    exact = np.asarray(exact, dtype=np.float64)
    lo, hi = exact.min(axis=0), exact.max(axis=0)
    pad = 0.6 * (hi - lo) + 0.1
    box = np.stack([lo - pad, hi + pad], axis=1)
    fig = go.Figure(go.Scatter(x=exact[:, 0], y=exact[:, 1], mode="lines", name="exact (expm)",
                               line=dict(color=style.REFERENCE_COLOR, width=4), opacity=0.6, hoverinfo="skip"))
    for k, (name, states) in enumerate(results.items()):
        s = np.asarray(states, dtype=np.float64)
        fig.add_trace(go.Scatter(
            x=s[:, 0], y=s[:, 1], mode="lines+markers", name=name, line=dict(color=region_color(k), width=1.8),
            marker=dict(size=5), customdata=np.arange(len(s)),
            hovertemplate="step %{customdata}: (%{x:.3g}, %{y:.3g})<extra>" + name + "</extra>",
        ))
    layout = _legend_below(style.base_layout(title or "Paths of x′ = A x from (−1, 0)", height))
    return style.set_layout(fig, layout, xaxes=dict(range=list(box[0]), title=dict(text="x₁")),
                            yaxes=dict(range=list(box[1]), title=dict(text="x₂")))


def toy_error(results: dict, exact: np.ndarray, t: np.ndarray, title: str | None = None, height: int = 460) -> go.Figure:
    """|x_n - x(t_n)| over time for each method (log scale)."""
    fig = go.Figure()
    for k, (name, states) in enumerate(results.items()):
        err = np.linalg.norm(np.asarray(states, dtype=np.float64) - exact, axis=1)
        fig.add_trace(go.Scatter(x=t, y=np.where(err > 0, err, np.nan), mode="lines+markers", name=name,
                                 line=dict(color=region_color(k), width=1.8), marker=dict(size=5),
                                 hovertemplate="t = %{x:.3g}: error %{y:.3g}<extra>" + name + "</extra>"))
    layout = _legend_below(style.base_layout(title or "Error against the exact solution", height))
    return style.set_layout(fig, layout, xaxes=dict(title=dict(text="t")),
                            yaxes=dict(type="log", title=dict(text="‖x_n − x(t_n)‖"), exponentformat="power"))


# Guidance.


def guidance_stability(records, title: str | None = None, height: int = 420, range_name: str = "class's range") -> go.Figure:
    """Guidance scale w against the largest |x| of the final samples in units of the target's range
    (log; far above 1: the run blew up), one line per method; a cross where the run diverged.
    records: dicts with w, label, max_norm (inf when diverged), worst_fraction (share outside at the worst step)."""
    labels = list(dict.fromkeys(r["label"] for r in records))
    finite = [r["max_norm"] for r in records if np.isfinite(r["max_norm"])]
    top = (max(finite) if finite else 1.0) * 4
    fig = go.Figure()
    for k, name in enumerate(labels):
        rs = [r for r in records if r["label"] == name]
        w = [r["w"] for r in rs]
        y = [r["max_norm"] if np.isfinite(r["max_norm"]) else np.nan for r in rs]
        share = [r.get("worst_radius", np.nan) for r in rs]
        fig.add_trace(go.Scatter(x=w, y=y, mode="lines+markers", name=name, line=dict(color=region_color(k), width=2),
                                 customdata=share, hovertemplate="w = %{x:g}: max |x| / range = %{y:.3g}<br>"
                                 "largest |root| over the steps: %{customdata:.3g}<extra>" + name + "</extra>"))
        bad = [r["w"] for r in rs if not np.isfinite(r["max_norm"])]
        if bad:
            fig.add_trace(go.Scatter(x=bad, y=[top] * len(bad), mode="markers", showlegend=False,
                                     marker=dict(symbol="x", size=13, color=OUTSIDE_COLOR),
                                     hovertemplate=name + " diverged at w = %{x:g}<extra></extra>"))
    fig.add_hline(y=1.0, line=dict(color="#888", dash="dash", width=1), annotation_text=range_name,
                  annotation_position="bottom right", annotation_font_size=11)
    layout = _legend_below(style.base_layout(title or "Guidance scale w against the samples' size", height))
    return style.set_layout(fig, layout, xaxes=dict(title=dict(text="guidance scale w")),
                            yaxes=dict(type="log", title=dict(text=f"max |x| / {range_name}")))


# Data for the toy system and the guidance demo (shared by the page and the notebook).

TOY_A = ((0.0, 1.0), (-9.0, -10.0))  # eigenvalues -1 and -9: stiff for a high-order Adams method
TOY_X0 = (-1.0, 0.0)


def toy_methods(order: int = 2, beta: float = 0.8) -> dict:
    """The momentum paper's comparison: Adams-Bashforth of an order (plms), Heavy Ball on it, GHVB."""
    return {
        label("plms", {"order": order}): ("plms", {"order": order}),
        label("heavy-ball", {"base": "plms", "base_order": order, "beta": beta}):
            ("heavy-ball", {"base": "plms", "base_order": order, "beta": beta}),
        label("ghvb", {"order": order, "beta": beta}): ("ghvb", {"order": order, "beta": beta}),
    }


def toy_data(methods: dict, n_steps: int = 26, t_end: float = 3.0, A=TOY_A, x0=TOY_X0) -> dict:
    """Each method on x' = A x (ex.stability.linear_system) and the exact solution expm(A t) x0 on the
    same grid; z: the eigenvalues of A times the step h = t_end / n_steps."""
    from scipy.linalg import expm

    A, x0 = np.asarray(A, dtype=np.float64), np.asarray(x0, dtype=np.float64)
    t = np.linspace(0.0, t_end, int(n_steps) + 1)
    exact = np.stack([expm(A * ti) @ x0 for ti in t])
    with np.errstate(all="ignore"):
        runs = {name: np.asarray(_stability.linear_system(s, A, x0, t_end, int(n_steps), **o)) for name, (s, o) in methods.items()}
    return dict(t=t, exact=exact, runs=runs, z=np.linalg.eigvals(A) * (t_end / n_steps))


def nested_classes(std_sharp: float = 0.3, std_broad: float = 3.0):
    """The guidance demo's labelled target in 2D: class 0 a sharp Gaussian N(0, std_sharp^2 I) inside
    class 1, a broad one N(0, std_broad^2 I). The unconditional posterior keeps the broad class's
    spread where the conditional one is sharp, so D_w = (1 + w) D(x | 0) - w D(x) has a Jacobian
    with large negative eigenvalues at moderate noise: large |h*lambda| at large w."""
    from ..foundations.mixture import GaussianMixture

    return GaussianMixture(np.zeros((2, 2)), np.array([std_sharp**2, std_broad**2]), labels=np.array([0, 1]))


def guided_runs(target, schedule, w: float, methods: dict, n_steps: int, n: int = 300, seed: int = 0,
                spacing: str = "uniform-lambda", label_: int = 0) -> dict:
    """Each method (label -> (solver, options)) on classifier-free guidance of scale w toward class
    label_ of a labelled mixture, from the same x_T: {label: (model, trajectory)}."""
    from ..analyses import guidance as _G
    from ..foundations.analytic import AnalyticModel
    from ..solvers.sampling import sample
    from ..foundations.timesteps import timesteps

    model = _G.guided_model(target, schedule, label_, w)
    x_T = AnalyticModel(target, schedule).prior_sample(n, np.random.default_rng(seed))
    ts = timesteps(schedule, int(n_steps), spacing)
    return {name: sample(model, x_T, ts, s, **o) for name, (s, o) in methods.items()}, model


def guidance_sweep(target, schedule, ws, methods: dict, n_steps: int, n: int = 300, seed: int = 0,
                   spacing: str = "uniform-lambda", label_: int = 0) -> list[dict]:
    """guided_runs at each w: records with w, label, max_norm (largest |x| of the final samples over
    the conditional target's range; inf when the run diverged) and worst_fraction (share of
    particles with h*lambda outside the region at the worst step)."""
    from ..analyses import guidance as _G

    scale = _G.data_range(_G.conditional_target(target, label_))
    out = []
    for w in ws:
        runs, model = guided_runs(target, schedule, w, methods, n_steps, n, seed, spacing, label_)
        for name, traj in runs.items():
            data = run_data(model, traj, np.arange(min(n, 200)))
            final = _np(traj.x)[-1]
            out.append(dict(
                w=float(w), label=name, diverged_at=traj.diverged_at,
                max_norm=float(np.max(np.abs(final))) / scale if np.isfinite(final).all() else np.inf,
                worst_fraction=float(np.max(data["fraction"])), worst_radius=float(np.nanmax(data["radius"])),
            ))
    return out
