"""Learned fields: what a score field is and what a learned one is not. The gauge freedom of the
probability-flow ODE (a rotation of the score changes paths, never marginals), the curl and non-conservative
share of the shipped 2D MLP per noise level (from the shipped table; other levels computed live), and the
intrinsic dimension read off the score's Jacobian at small noise."""

from __future__ import annotations

import numpy as np
import streamlit as st

import explorer as ex
from app_pages import chart, controls, precomputed
from explorer.analyses import gauge as G
from explorer.figures import learned_fields as F

URL = controls.URL
GAUGE_TARGETS = ("gmm-2d-two-aniso", "gmm-2d-ring8", "gmm-2d-grid25", "gmm-2d-checkerboard")
GAUGE_SCHEDULES = ("vp-cosine", "vp-linear", "edm", "rectified-flow")
NOISES = tuple(float(v) for v in np.round(np.logspace(-4, 0.5, 19), 6))


def _model(name: str, schedule: str) -> ex.AnalyticModel:
    return ex.AnalyticModel(ex.targets.get(name), ex.schedules.get(schedule))


@st.cache_data(max_entries=16, show_spinner=False)
def runs(name: str, schedule: str, c: float, n: int, seed: int) -> dict:
    return G.gauge_runs(_model(name, schedule), (0.0, c), n=n, seed=seed)


@st.cache_data(max_entries=16, show_spinner=False)
@precomputed.default("learned_fields")
def errors(name: str, schedule: str, n_steps: int, seed: int) -> list:
    return G.gauge_errors(_model(name, schedule), n_steps=n_steps, seed=seed)


@st.cache_resource(show_spinner=False)
def table() -> dict:
    return G.load_table()


@st.cache_resource(show_spinner=False)
def learned_model():
    return ex.models.load_pretrained("gmm-2d-grid25")


@st.cache_data(max_entries=16, show_spinner=False)
def live_field(level: float, n: int) -> dict:
    model = learned_model()
    f = G.field_on_grid(model, G.time_of(model.schedule, level), n)
    return dict(x=f["x"], y=f["y"], curl=f["curl"], log_p=f["log_p"], fraction=G.helmholtz(f)["fraction"],
                near_origin=G.curl_near(model, f["t"]))


@st.cache_data(max_entries=16, show_spinner=False)
def dimensions(length: float, width: float, n: int, seed: int) -> tuple:
    target = G.line_target(length, width)
    model = ex.AnalyticModel(target, ex.schedules.get("vp-cosine"))
    x0, comp = target.sample(n, np.random.default_rng([seed, 1]), return_components=True)
    dims, spec = G.dimension_vs_noise(model, x0, comp, NOISES, seed, spectra=True)
    return x0, comp, dims, spec


@st.cache_data(max_entries=16, show_spinner=False)
def point_dimensions(length: float, width: float, n: int, seed: int, level: float) -> tuple:
    x0, comp, _, _ = dimensions(length, width, n, seed)
    model = ex.AnalyticModel(G.line_target(length, width), ex.schedules.get("vp-cosine"))
    t = G.time_of(model.schedule, level)
    a, sg = float(model.schedule.alpha(t)), float(model.schedule.sigma(t))
    xt = a * x0 + sg * np.random.default_rng([seed, 2]).standard_normal(x0.shape)
    return xt / a, G.intrinsic_dimension(model, xt, t)


st.title("Learned fields")
st.caption(
    "A score field is the gradient of log p_t; a network's output need not be, and the sampler cannot tell every "
    "difference (*On gauge freedom, conservativity and intrinsic dimensionality estimation in diffusion models*). "
    "Every control is in the URL."
)

with st.sidebar:
    st.header("Gauge")
    g_target = st.selectbox("Target", GAUGE_TARGETS, key="g_target", bind=URL)
    g_schedule = st.selectbox("Schedule", GAUGE_SCHEDULES, key="g_schedule", bind=URL)
    c = st.slider("c (score + c J score)", -3.0, 3.0, 1.5, 0.25, key="gauge_c", bind=URL,
                  help="J rotates by 90°: div(p J ∇log p) = 0, so the probability-flow ODE with s + c J s has the same marginals.")
    n = controls.particles(600, key="g_particles", high=3000)
    seed = controls.seed()

# 1. Gauge freedom.
st.subheader("Gauge freedom: other paths, the same marginals")
try:
    gauge = runs(g_target, g_schedule, float(c), int(n), int(seed))
except Exception as err:  # bad input or a bug in the core: a message, never a traceback
    controls.report_core_error(err)
    st.stop()
target = ex.targets.get(g_target)
chart.draw(F.gauge_paths(gauge, target))
schedule = ex.schedules.get(g_schedule)
t_end = float(next(iter(gauge.values())).t[-1])
chart.draw(F.gauge_marginals(gauge, lambda axis, u: G.coordinate_density(target, schedule, t_end, axis, u)))
ends = [np.asarray(tr.x[-1]) for tr in gauge.values()]
cols = st.columns(3)
cols[0].metric("Same particle, two gauges: mean distance apart", f"{np.mean(np.linalg.norm(ends[-1] - ends[0], axis=1)):.2f}")
cols[1].metric("Sliced W2 between the two sample sets", f"{ex.metrics.sliced_wasserstein(ends[0], ends[-1], 64):.3f}",
               help="Both are exact samples of p_t (rk45 from exact draws of p_T): what remains is the finite sample.")
cols[2].metric("NFE of the exact solve (c = 0 → c)", " → ".join(str(tr.nfe) for tr in gauge.values()))


@st.fragment
def solver_errors():
    """The solvers' error on each rotated ODE (a fragment: its step count reruns this part alone)."""
    n_steps = st.slider("Steps for the solvers' error", 5, 60, 20, key="err_steps", bind=URL)
    try:
        with st.spinner("Euler and DPM-Solver++(2M) against the exact path of each rotated ODE…"):
            err_records = errors(g_target, g_schedule, int(n_steps), int(seed))
    except Exception as err:
        controls.report_core_error(err)
    else:
        chart.draw(F.gauge_error(err_records))
        growth = G.error_growth(err_records)
        if growth:
            cs = [r["c"] for r in err_records]
            st.markdown(f"**From c = {min(cs):g} to c = {max(cs):g}** the end error grows "
                        + ", ".join(f"{g['from']:.2g} → {g['to']:.2g} (×{g['factor']:.3g}) for {solver}"
                                    for solver, g in growth.items())
                        + ": the same marginals, a harder path.")


solver_errors()
st.caption(
    "The rotation adds −c (g²/2) J s to the drift: particles circle along the contours of p_t as they go, so the same noise "
    "ends elsewhere, but the density moves exactly as before (dp/dt = −div(p v) is unchanged). A learned field fixes no "
    "gauge: two networks with the same marginals can take the same noise to different samples, and a fast rotation makes "
    "every solver's error larger."
)


# 2. Conservativity of the shipped model (a fragment: its controls rerun this section alone).
@st.fragment
def conservativity():
    st.subheader("Is the learned field a gradient?")
    tab = table()
    levels = [float(v) for v in tab["levels"]]
    cols = st.columns([3, 2])
    level = cols[0].select_slider("Noise level σ/α", levels, levels[3], key="curl_level", bind=URL,
                                  format_func=lambda v: f"{v:g}")
    live = cols[1].toggle("Recompute live (loads the torch model)", key="curl_live", bind=URL,
                          help="The shipped table (data/learned-fields-grid25.npz, made by `python -m explorer.analyses.gauge`) "
                               "holds these levels on a 40 × 40 grid; live recomputes them, with the field near x = 0.")
    j = levels.index(level)
    if live:
        try:
            with st.spinner(f"Loading the 2D MLP (torch) and differentiating it on a 40 × 40 grid at σ/α = {level:g}…"):
                field = live_field(level, G.TABLE_N)
        except Exception as err:
            controls.report_core_error(err)
            field = None
    else:
        field = dict(x=tab["x"][j], y=tab["y"][j], curl=tab["curl"][j], log_p=tab["log_p"][j], fraction=float(tab["fraction"][j]))
    if field is not None:
        cols = st.columns([3, 2])
        chart.draw(F.curl_map(field["x"], field["y"], field["curl"], field["log_p"], level,
                              title=f"Curl of the learned field at σ/α = {level:g}"), cols[0])
        cols[1].metric("Non-conservative share (p_t-weighted)", f"{field['fraction']:.1%}",
                       help="What the best potential's gradient cannot fit, weighted by p_t (weighted Helmholtz split on the grid).")
        cols[1].metric("Exact score, the same split", f"{tab['exact_fraction'][j]:.1e}")
        if "near_origin" in field:
            cols[1].metric("(σ/α)² |curl| at 10⁻⁴ from x = 0", f"{field['near_origin'][0]:.3g}",
                           help="The MLP's input layer has no bias and its first LayerNorm sees only the direction of W x: the field is "
                                "singular at x = 0, one of the modes. The grid avoids that point.")
        cols[1].caption("The exact field's curl is zero everywhere (its Jacobian is symmetric); the learned one's is not, and is "
                        "largest around the modes, where the network must bend most.")
    chart.draw(F.nonconservative_vs_noise(tab["levels"], tab["fraction"], tab["exact_fraction"], tab["curl_rms"],
                                          tab["exact_curl_rms"]))
    st.caption(
        "Left: the share of the field, weighted by p_t, that no gradient fits: the part that is p-orthogonal to every gradient "
        "(div(p r) = 0 in the limit), which to first order moves no marginal, a gauge. Right: (σ/α)² times the p_t-weighted RMS curl "
        "on the grid. The exact score's values are the grid's discretisation."
    )


conservativity()


# 3. Intrinsic dimension (a fragment, as 2).
@st.fragment
def intrinsic_dimension():
    st.subheader("The dimension the score sees")
    cols = st.columns(4)
    length = cols[0].number_input("Line: length (std)", 0.5, 5.0, 2.0, 0.5, key="line_length", bind=URL)
    width = cols[1].number_input("Line and point: width (std)", 1e-5, 0.1, 1e-3, format="%.1e", key="line_width", bind=URL)
    n_points = cols[2].select_slider("Points", [150, 300, 600, 1200], 600, key="id_points", bind=URL)
    level_d = cols[3].select_slider("σ/α for the map", NOISES, NOISES[8], key="id_noise", bind=URL, format_func=lambda v: f"{v:.2g}")
    try:
        x0, comp, dims, spec = dimensions(float(length), float(width), int(n_points), int(seed))
        pts, d = point_dimensions(float(length), float(width), int(n_points), int(seed), float(level_d))
    except Exception as err:
        controls.report_core_error(err)
    else:
        names = ["line", "point", "blob"]
        known = dict(zip(names, G.LINE_DIMENSIONS))
        chart.draw(F.dimension_spectrum(NOISES, {nm: spec[:, k] for k, nm in enumerate(names)},
                                        {nm: dims[:, k] for k, nm in enumerate(names)}, known))
        cols = st.columns([3, 2])
        chart.draw(F.dimension_points(G.line_target(float(length), float(width)), pts, d), cols[0])
        controls.table([{"component": nm, "known": known[nm], "estimated (median)": int(np.median(d[comp == k])),
                         "agree": f"{np.mean(d[comp == k] == known[nm]):.0%}"} for k, nm in enumerate(names)], where=cols[1])
        agree = float(np.mean(d == np.asarray(G.LINE_DIMENSIONS)[comp]))
        cols[1].markdown(f"**At σ/α = {level_d:.2g}** the score's dimension matches the known one at {agree:.0%} of the "
                         f"{len(d)} points (line {known['line']}, point {known['point']}, blob {known['blob']}).")
        cols[1].caption(
            "−σ² ∇s = I − (α²/σ²) Cov[x0 | x_t]: its eigenvalues are near 1 across the data, near 0 along it; the dimension is "
            "how many fall below 1/2. Between the line's width and the blob's spread the score reads 1, 0 and 2; below the width "
            "every component is 2-dimensional, above the spread everything looks like a point."
        )


intrinsic_dimension()
