"""Schedules: two noise schedules side by side, one sample path converted between them at equal
log-SNR, the drift each schedule makes particles follow (and the lazy schedule's flat one),
where conversion and optimised grids buy fewer steps, and an optimised grid to take away."""

from __future__ import annotations

import numpy as np
import streamlit as st

import explorer as ex
from app_pages import chart, controls, precomputed
from explorer import grid_search, schedule_experiments
from explorer import interpolants as I
from explorer.figures import schedules as F

URL = controls.URL
LAZY = "lazy (fitted to the target)"
LAZY_SDE = "lazy point-mass (stochastic)"
DDPM = "ddpm-discrete (1000 steps)"  # a tabulated schedule, as real checkpoints ship it
DRIFTS = {"ODE": "zero", "optimal SDE": "optimal"}  # label (in the URL) -> ex.interpolants diffusion

# `setup` = (target key, schedule A, schedule B, solver, spacing, steps, particles, seed): hashable for the caches.


@st.cache_data(max_entries=64, show_spinner=False)
def schedule_of(name: str, target_key: tuple) -> ex.schedules.Schedule:
    """A named schedule, or the lazy one fitted to the target's mean and covariance."""
    if name == LAZY:
        return I.lazy(controls.load_target(target_key))
    if name == LAZY_SDE:
        return I.lazy(controls.load_target(target_key), stochastic=True)
    if name == DDPM:  # DDPM's linear betas 1e-4 .. 0.02, abar_i tabulated at integer times
        return ex.schedules.Discrete.from_betas(np.linspace(1e-4, 0.02, 1000))
    return ex.schedules.get(name)


def gaussian_key(target_key: tuple) -> tuple:
    """The target key of N(0, c I) with the target's second moment per dimension c (the data_var of its lazy
    schedule): the Gaussian whose lazy schedule is the target's (and has zero drift on it)."""
    gm = controls.load_target(target_key)
    c = I.lazy(gm).data_var
    return target_key[0], (), ", ".join(["0"] * gm.dim + [repr(float(np.sqrt(c)))])


def _model(target_key: tuple, name: str) -> ex.AnalyticModel:
    return ex.AnalyticModel(controls.load_target(target_key), schedule_of(name, target_key))


@st.cache_data(max_entries=16, show_spinner=False)
@precomputed.default("schedules")
def run_a(setup: tuple) -> ex.Trajectory:
    """The particles' path under schedule A, from A's prior, on A's grid over the shared log-SNR range."""
    target_key, a, b, solver, spacing, steps, n, seed = setup
    model = _model(target_key, a)
    ends = schedule_experiments.shared_range(model.schedule, schedule_of(b, target_key))
    ts = ex.timesteps(model.schedule, steps, spacing, *ends)
    return ex.sample(model, model.prior_sample(n, np.random.default_rng(seed), t=ts[0]), ts, solver)


@st.cache_data(max_entries=32, show_spinner=False)
def converted(setup: tuple, name: str) -> ex.Trajectory:
    """A's path carried to schedule `name` at equal log-SNR."""
    return ex.convert_path(run_a(setup), schedule_of(name, setup[0]), from_schedule=schedule_of(setup[1], setup[0]))


@st.cache_data(max_entries=16, show_spinner=False)
def direct_gap(setup: tuple) -> float:
    """Largest distance between B's converted path and the same solver run under B on the converted
    grid from the converted start (0 for a solver that commutes with the conversion)."""
    return schedule_experiments.commutation_gap(converted(setup, setup[2]), _model(setup[0], setup[2]), setup[3])


@st.cache_data(max_entries=32, show_spinner=False)
def drift_curve(setup: tuple, name: str, diffusion: str) -> dict:
    """Mean |drift| over particles at every grid time of A's path converted to schedule `name`."""
    path = run_a(setup) if name == setup[1] else converted(setup, name)
    return schedule_experiments.drift_along(path, _model(setup[0], name), diffusion)


@st.cache_data(max_entries=16, show_spinner=False)
@precomputed.default("schedules")
def particle_sets(target_key: tuple, name: str, seed: int, n: int = 200) -> tuple:
    """Fit (seed) and held-out (seed + 1) starts under a schedule with their exact ODE endpoints
    (rk45 once per set: every grid and schedule is scored against them)."""
    model = _model(target_key, name)
    return grid_search.particles(model, n, seed), grid_search.particles(model, n, seed + 1)


# The page's grid searches: Nelder-Mead from the best GRID_STARTS fixed spacings, at most GRID_RUNS runs each.
GRID_STARTS, GRID_RUNS = 2, 150


@st.cache_data(max_entries=8, show_spinner=False)
@precomputed.default("schedules")
def optimised(target_key: tuple, name: str, solver: str, nfe: int, seed: int) -> grid_search.GridResult:
    """The grid search (fit on seed, held out on seed + 1), GRID_STARTS starts of at most GRID_RUNS runs each
    (about a second)."""
    fit, holdout = particle_sets(target_key, name, seed)
    return grid_search.optimise(_model(target_key, name), solver, nfe, fit=fit, holdout=holdout,
                                starts=GRID_STARTS, max_evals=GRID_RUNS)


SWEEP_NAMES = {LAZY: "lazy", LAZY_SDE: "lazy-stochastic"}  # the page's names -> schedule_experiments'


@st.cache_data(max_entries=128, show_spinner=False)
@precomputed.default("schedules")
def sweep_one(target_key: tuple, a: str, convert_to: tuple, solver: str, spacing: str, nfe: int, seed: int) -> list:
    """Held-out error at one NFE under A, under each schedule of convert_to (the same model sampled
    there, the path converted back) and on A's optimised grid: schedule_experiments.error_vs_nfe,
    cached per NFE so that adding one is cheap."""
    fit, holdout = particle_sets(target_key, a, seed)
    return schedule_experiments.error_vs_nfe(
        _model(target_key, a), solver, (nfe,),
        tuple(schedule_of(c, target_key) if c == DDPM else SWEEP_NAMES.get(c, c) for c in convert_to), spacing,
        fit=fit, holdout=holdout, max_evals=GRID_RUNS,
    )


@st.cache_resource(max_entries=16, show_spinner=False)
def schedule_figures(target_key: tuple, a: str, b: str, grid: tuple, log_t: bool | None) -> tuple:
    sa, sb = schedule_of(a, target_key), schedule_of(b, target_key)
    return (F.curves({a: sa, b: sb}, log_t=log_t, height=380),
            F.conversion_map(sa, sb, a, b, grid=np.asarray(grid), height=360))


@st.cache_resource(max_entries=32, show_spinner=False)
def drift_figure(setup: tuple, names: tuple, diffusion: str, axis: str):
    return F.drift_magnitude({name: drift_curve(setup, name, diffusion) for name in names}, axis=axis, height=380)


@st.cache_resource(max_entries=16, show_spinner=False)
def sweep_figure(target_key: tuple, a: str, convert_to: tuple, solver: str, spacing: str, nfes: tuple, seed: int):
    """The error-vs-NFE figure of cached sweeps, with the fewer-steps arrows, and those arrows."""
    records = [r for nfe in nfes for r in sweep_one(target_key, a, convert_to, solver, spacing, nfe, seed)]
    if not records:
        return None, []
    fewer = F.fewer_steps(records, next(r["label"] for r in records if r["kind"] == "original"))
    return F.error_vs_nfe(records, fewer, height=440), fewer


@st.cache_resource(max_entries=16, show_spinner=False)
def paths_figure(setup: tuple, n_paths: int):
    a, b = setup[1], setup[2]
    trajs = {a: run_a(setup), b: converted(setup, b)}
    schedules = {a: schedule_of(a, setup[0]), b: schedule_of(b, setup[0])}
    return F.linked_paths(trajs, schedules, controls.load_target(setup[0]), n_paths=n_paths, height=460)


st.title("Schedules")
st.caption(
    "A schedule x_t = α(t) x0 + σ(t) ε is only a clock: two schedules with the same log-SNR λ = log α/σ see the "
    "same data at a different scale. A path sampled under one converts into the path under another by "
    "x′ = α′(t′)/α(t) · x at λ′(t′) = λ(t) (*Fast Sampling for Flows and Diffusions with Lazy and Point Mass "
    "Stochastic Interpolants*). Every control is in the URL."
)

deterministic = [s for s in ex.solvers.names() if s != "rk45" and not ex.solvers.info(s)["stochastic"]]
with st.sidebar:
    st.header("Target")
    target_key = controls.target()

    st.header("Schedules")
    choices = ex.schedules.names() + [DDPM, LAZY, LAZY_SDE]
    a = st.selectbox("Schedule A (sampled)", choices, choices.index("vp-linear"), key="a", bind=URL)
    b = st.selectbox("Schedule B (converted to)", choices, choices.index("edm"), key="b", bind=URL)

    st.header("Sampler (under A)")
    solver = st.selectbox("Solver", deterministic, deterministic.index("dpmpp-2m"), key="path_solver", bind=URL,
                          help="Deterministic solvers: the converted path is compared with a direct solve under B.")
    spacing = controls.spacing()
    steps = st.slider("Steps", 2, 60, 12, key="path_steps", bind=URL)
    n = controls.particles(500, key="particles", high=5000)
    seed = controls.seed()

setup = (target_key, a, b, solver, spacing, int(steps), int(n), int(seed))
try:
    traj_a = run_a(setup)
except Exception as err:  # bad input or a bug in the core: a message, never a traceback
    controls.report_core_error(err)
    st.stop()

# Sections 1, 3, 4 and 5 are fragments: a control of one reruns that section alone, not the page (whose
# sidebar holds what every section depends on).


# 1. The two schedules and the map between them.
@st.fragment
def clocks():
    st.subheader("Two clocks for the same noise")
    log_choice = st.radio("Time axis", ["auto", "linear", "log"], horizontal=True, key="time_axis", bind=URL,
                          help="auto: log when the two schedules live on different scales of time (EDM's 80 against 1).")
    try:
        curves_fig, map_fig = schedule_figures(target_key, a, b, tuple(traj_a.t),
                                               {"auto": None, "linear": False, "log": True}[log_choice])
    except Exception as err:
        controls.report_core_error(err)
        return
    chart.draw(curves_fig)
    chart.draw(map_fig)
    st.caption(f"Left: the time t′ of {b} at which the signal-to-noise ratio equals that of {a} at t; dots: A's grid, "
               f"the times a converted run lands on. Right: the factor the state is scaled by on the way.")


clocks()

# 2. The same particles under both.
st.subheader("One path, two schedules")
try:
    with st.spinner(f"Converting the path to {b}…"):
        paths = paths_figure(setup, 30)
        gap = direct_gap(setup)
except Exception as err:
    controls.report_core_error(err)
else:
    chart.draw(paths)
    cols = st.columns(3)
    cols[0].metric("NFE under A", traj_a.nfe)
    cols[1].metric(f"{solver} under B vs the converted path", f"{gap:.2g}",
                   help="Largest difference between the converted path and the same solver run directly under B "
                        "on the converted grid from the converted start.")
    cols[2].metric("λ range", f"{float(schedule_of(a, target_key).lambda_(traj_a.t[0])):.2f} → "
                              f"{float(schedule_of(a, target_key).lambda_(traj_a.t[-1])):.2f}")
    st.caption("Drag the slider (it runs in the browser): step k is highlighted under both schedules at once, at the "
               "same λ. In the right panel the states divided by √(α² + σ²) lie on one path: the schedules differ only "
               "by a clock and a scale. Solvers whose step depends on λ alone (DDIM, DPM-Solver++) give exactly the "
               "converted path under B; those stepping in t (Euler, Heun) do not.")


# 3. Drift.
@st.fragment
def drift():
    st.subheader("How hard each schedule makes particles move")
    cols = st.columns([2, 2, 3])
    drift_label = cols[0].radio("Drift of", list(DRIFTS), key="drift", bind=URL, horizontal=True,
                                help="ODE: the probability-flow velocity (ε = 0). Optimal SDE: v − ε* s with the statistically "
                                     "optimal ε* = −σ² λ′(t); its lazy schedule is the point-mass one.")
    axis = cols[1].radio("Against", ["lambda", "t"], key="drift_axis", bind=URL, horizontal=True,
                         help="lambda: one shared log-SNR axis; t: each schedule's own time.")
    on_gaussian = "N(0, c I)" == cols[2].radio(
        "Data", ["target", "N(0, c I)"], key="drift_data", bind=URL, horizontal=True,
        help="N(0, c I): the centred Gaussian with the target's second moment c = (|m|² + tr C) / D, on which the lazy "
             "schedule fitted to the target moves nothing: its drift is zero to round-off.")
    diffusion = DRIFTS[drift_label]
    lazy_name = LAZY if diffusion == "zero" else LAZY_SDE
    try:
        with st.spinner("Evaluating the drift along the paths…"):
            drift_setup = (gaussian_key(target_key),) + setup[1:] if on_gaussian else setup
            drift_names = tuple(dict.fromkeys((a, b, lazy_name)))
            drift_fig = drift_figure(drift_setup, drift_names, diffusion, axis)
            peaks = {name: float(np.max(drift_curve(drift_setup, name, diffusion)["drift"])) for name in drift_names}
    except Exception as err:
        controls.report_core_error(err)
    else:
        chart.draw(drift_fig)
        st.markdown("**Largest mean |drift| along the path** (each schedule in its own time): "
                    + " · ".join(f"{name} {v:.2g}" for name, v in peaks.items()))
        lazy_s = schedule_of(lazy_name, target_key)
        st.caption(f"Mean over particles of |dx/dt| (ODE) or |v − ε s| (SDE) in each schedule's own time, along A's path "
                   f"converted to each schedule (on the data chosen on the right). The lazy schedule, `{lazy_s!r}`, is fitted "
                   "to the target's second moment: on N(0, c I) its drift vanishes identically (drawn at the floor of the log "
                   "axis, dashed); on a mixture what is left is the part no scalar schedule can remove.")


drift()


# 4. Error against NFE.
@st.fragment
def sweep():
    st.subheader("Where a change of clock buys fewer steps")
    cols = st.columns([2, 2, 3, 3])
    sweep_solver = cols[0].selectbox("Solver", deterministic, deterministic.index("euler"), key="sweep_solver", bind=URL,
                                     help="Solvers stepping in t (Euler, Heun) change with the schedule; those stepping in λ "
                                          "(DDIM, DPM-Solver++) on a uniform-λ grid do not.")
    sweep_spacing = cols[1].selectbox("Grid", ex.SPACINGS, ex.SPACINGS.index("uniform-t"), key="sweep_spacing", bind=URL)
    others = [c for c in choices if c != a]
    convert_to = cols[2].multiselect("Convert to", others, [c for c in dict.fromkeys((b, "trigonometric", LAZY)) if c in others],
                                     key="convert_to", bind=URL)
    sweep_error = None
    with cols[3]:
        try:
            sweep_nfes = controls.int_list("NFE values", "sweep_nfes", "4, 6, 8, 12, 16", 1, 200,
                                           help="Model evaluations per run, comma-separated.")
        except ValueError as err:
            sweep_nfes, sweep_error = (), err
    if sweep_error is not None:
        st.error(f"**Can't run this sweep.** {sweep_error}")
    else:
        sa = schedule_of(a, target_key)
        unreachable = [c for c in convert_to if schedule_experiments.shared_range(sa, schedule_of(c, target_key)) != (None, None)]
        if unreachable:
            st.info(f"Left out: {', '.join(unreachable)} never reach(es) {a}'s whole log-SNR range, so its runs cannot "
                    "be measured against the same exact endpoints.")
        reach = tuple(c for c in convert_to if c not in unreachable)
        bar, sweep_fig = st.progress(0.0, text="Sweeping…"), None
        try:
            for k, nfe in enumerate(sweep_nfes):  # each NFE cached on its own: the bar moves between them
                bar.progress(k / len(sweep_nfes), text=f"NFE {nfe} ({k + 1}/{len(sweep_nfes)}): original, converted, optimised grid…")
                sweep_one(target_key, a, reach, sweep_solver, sweep_spacing, nfe, int(seed))
            sweep_fig, fewer = sweep_figure(target_key, a, reach, sweep_solver, sweep_spacing, tuple(sweep_nfes), int(seed))
        except Exception as err:
            controls.report_core_error(err)
        finally:
            bar.empty()
        if sweep_fig is not None:
            chart.draw(sweep_fig)
            savings = "; ".join(f"**{f['label_to']}** reaches {a}'s error at {f['nfe_from']} NFE with {f['nfe_to']} "
                                f"({f['nfe_from'] / f['nfe_to']:.2g}× fewer)" for f in fewer)
            st.caption(
                f"The same exact model and {sweep_solver}, measured on held-out particles against the exact ODE endpoint "
                f"in {a}'s scale. *as B*: the model sampled under schedule B from the converted start, on B's own "
                f"{sweep_spacing} grid, the path converted back; *optimised grid*: the grid search under {a}, fitted on "
                "another seed. Arrows: " + (savings if savings else "no option reaches an error of the original in fewer steps here.")
            )
        else:
            st.info(f"No NFE value fits a whole number of {sweep_solver} steps.")


sweep()


# 5. Export an optimised grid.
@st.fragment
def export():
    st.subheader("An optimised grid to take away")
    cols = st.columns(3)
    grid_solver = cols[0].selectbox("Solver", deterministic, deterministic.index("dpmpp-2m"), key="grid_solver", bind=URL)
    grid_nfe = cols[1].slider("NFE", 2, 30, 8, key="grid_nfe", bind=URL)
    grid_schedule = cols[2].selectbox("Under schedule", [a, b] if a != b else [a], key="grid_schedule", bind=URL)
    try:
        with st.spinner(f"Searching the grid of {grid_nfe} evaluations for {grid_solver} ({GRID_STARTS} starts of at most {GRID_RUNS} runs)…"):
            result = optimised(target_key, grid_schedule, grid_solver, int(grid_nfe), int(seed))
    except Exception as err:
        controls.report_core_error(err)
    else:
        cols = st.columns(3)
        cols[0].metric("Held-out error, optimised", f"{result.holdout_error:.3g}")
        cols[1].metric("Held-out error, uniform-λ", f"{result.default['holdout_error']:.3g}",
                       delta=f"×{result.improvement:.2f} better" if np.isfinite(result.improvement) else None,
                       delta_color="off", delta_arrow="off")
        cols[2].metric("Search", f"{len(result.history)} runs", delta=f"{result.wall_time:.1f} s", delta_color="off",
                       delta_arrow="off")
        text = F.grid_text(result.to_list("t"), result.to_list("sigma"))
        controls.code_block(text)
        st.download_button("Download (.txt)", text, file_name=f"grid-{grid_schedule}-{grid_solver}-nfe{grid_nfe}.txt",
                           mime="text/plain")
        st.caption("timesteps: our times t (sampling from the first to the last). sigmas: the same grid in k-diffusion's "
                   "convention σ/α = e^{−λ} (append a 0 for k-diffusion's final step onto the data). Fitted on "
                   f"{result.n_fit} particles of seed {result.fit_seed}, scored on seed {result.holdout_seed}.")


export()
