"""Trajectories: how a sampler carries particles from noise to a Gaussian-mixture target, with the
exact denoiser or a registered model (a plug-in's network, measured against its target's exact answer)."""

from __future__ import annotations


import numpy as np
import streamlit as st

import explorer as ex
from app_pages import chart, controls, precomputed
from explorer import figures

URL = controls.URL


EXACT = "exact"  # the Model choice for the exact denoiser of the chosen target


# The core, cached on hashable parameters. `setup` is (target key, schedule, spacing, steps,
# (t_start, t_end), particles, seed, exact start, model): everything but the solver. The model is
# EXACT, or a registered model's name (then it brings its own target and schedule, and the target
# key and schedule are None).


def _exact(setup: tuple) -> ex.AnalyticModel:
    """The exact model of the setup's target under its schedule: the registered model's own target
    and schedule when one is chosen (the reference and the metrics measure against it)."""
    target_key, schedule, *_, model_name = setup
    if model_name != EXACT:
        model = ex.models.get(model_name)
        return ex.AnalyticModel(model.target, model.schedule)
    return ex.AnalyticModel(controls.load_target(target_key), ex.schedules.get(schedule))


def _problem(setup: tuple):
    """The model that samples, the starting points x_T and the time grid a setup stands for (cheap)."""
    _, _, spacing, steps, t_range, n, seed, exact, model_name = setup
    reference_model = _exact(setup)
    ts = ex.timesteps(reference_model.schedule, steps, spacing, *t_range)
    x_T = reference_model.prior_sample(n, np.random.default_rng(seed), t=ts[0], exact=exact)
    return (reference_model if model_name == EXACT else ex.models.get(model_name)), x_T, ts


@st.cache_data(max_entries=32, show_spinner=False)
def run(setup: tuple, solver: str, options: tuple) -> ex.Trajectory:
    model, x_T, ts = _problem(setup)
    noise = np.random.default_rng([setup[6], 1])  # the solver's own stream, apart from x_T's
    if setup[-1] == EXACT:
        return ex.sample(model, x_T, ts, solver, rng=noise, **dict(options))
    from explorer.learned import torch_threads

    with torch_threads(1):  # a network on a shared machine: one thread is far faster (see torch_threads)
        return ex.sample(model, x_T, ts, solver, rng=noise, **dict(options))


@st.cache_data(max_entries=16, show_spinner=False)
@precomputed.default("trajectories")  # the default view's: its rk45 run is most of a fresh process's first run
def reference(setup: tuple) -> ex.Trajectory:
    _, x_T, ts = _problem(setup)
    return ex.reference(_exact(setup), x_T, ts, method="DOP853")  # same tolerance, ~1/3 fewer evaluations than RK45


@st.cache_data(max_entries=16, show_spinner=False)
def reference_distance(setup: tuple) -> float:
    """How close the exact ODE's samples get: the floor set by the finite sample and the start."""
    return ex.metrics.distance_to_target(reference(setup).sample, _exact(setup).target)


@st.cache_data(max_entries=32, show_spinner=False)
def scores(setup: tuple, solver: str, options: tuple, against_reference: bool) -> dict:
    ref = reference(setup) if against_reference else None
    return ex.metrics.summary(run(setup, solver, options), _exact(setup).target, ref)


# Figures are plotly objects: cache_resource hands back the same object without a pickle round trip.


@st.cache_resource(max_entries=16, show_spinner=False)
def main_figures(setup: tuple, solver: str, options: tuple, show_x0: bool, axis: str) -> tuple:
    model = _exact(setup)  # the exact density and flow under the paths (a registered model's own target)
    traj = run(setup, solver, options)
    if model.dim == 1:
        paths = figures.density_heatmap_1d(model, traj, show_x0=show_x0, time_axis=axis, height=440)
        final = figures.final_histogram_1d(model.target, traj.sample, height=340)
    else:
        paths = figures.particles_2d(model, traj, show_x0=show_x0, height=600)
        final = figures.final_samples_2d(model.target, traj.sample, height=480)
    return paths, final


@st.cache_resource(max_entries=16, show_spinner=False)
def error_figure(setup: tuple, solver: str, options: tuple, axis: str):
    return figures.path_error(_exact(setup), run(setup, solver, options), reference(setup), time_axis=axis, height=340)


def _format(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


st.title("Trajectories")
st.caption(
    "How a sampler carries particles from noise to the data, on a Gaussian-mixture target whose "
    "noised densities are exact. Every control is in the URL: copy it to share this view."
)

with st.sidebar:
    registered = ex.models.registered("mixture")
    model_name = EXACT
    if registered:  # plug-ins declared models: choose one, or the exact denoiser
        st.header("Model")
        model_name = st.selectbox(
            "Model", [EXACT, *registered], key="denoiser", bind=URL,
            help="exact: the target's exact E[x0 | x_t]. Otherwise a registered model (a plug-in's network): it "
                 "brings its own target and schedule, and the metrics measure it against that target's exact answer.",
        )
    if model_name == EXACT:
        st.header("Target")
        target_key = controls.target()
    else:
        target_key = None
        about = ex.models.info(model_name)
        st.caption(f"*{model_name}* ({about['source']})" + (f": {about['summary']}" if about["summary"] else ""))

    st.header("Sampler")
    if model_name == EXACT:
        schedules = ex.schedules.names()
        schedule = st.selectbox("Schedule", schedules, schedules.index("edm"), key="schedule", bind=URL)
    else:
        schedule = None
    spacing = controls.spacing()
    solvers = ex.solvers.names()
    solver = st.selectbox("Solver", solvers, solvers.index("dpmpp-2m"), key="solver", bind=URL)
    info = ex.solvers.info(solver)
    st.caption(f"{info['summary']} Order {info['order']}." + (f" *{info['reference']}*" if info["reference"] else ""))
    options = tuple(controls.solver_options(solver).items())
    steps = st.slider("Steps", 1, 200, 10, key="steps", bind=URL, help="Solver steps; NFE = model evaluations.")

    st.header("Particles")
    n = controls.particles(2000)
    seed = controls.seed()
    exact = st.checkbox(
        "Start from exact p_T", key="exact", bind=URL,
        help="Draw x_T from the true noised marginal p_T instead of N(0, σ(T)² I): removes the prior mismatch.",
    )
    with st.expander("Time range"):
        defaults = None
        if model_name == EXACT:
            defaults = ex.schedules.get(schedule)
        else:
            try:
                defaults = ex.models.get(model_name).schedule
            except Exception:  # a model that fails to build says so below, once
                pass
        defaults = defaults or ex.schedules.get("edm")
        t_start = st.number_input(
            "t start (noise end)", value=None, format="%g", key="t_start", bind=URL, placeholder=f"{defaults.t_max:g}"
        )
        t_end = st.number_input(
            "t end (data end)", value=None, format="%g", key="t_end", bind=URL, placeholder=f"{defaults.t_min:g}"
        )

setup = (target_key, schedule, spacing, int(steps), (t_start, t_end), int(n), int(seed), bool(exact), model_name)
try:
    model = _exact(setup)  # a registered model that fails to build says so here
    if model_name != EXACT:
        clock = model.schedule
        st.info(f"**Model {model_name}** samples on its own target ({model.target.n_components} modes in "
                f"{model.dim}D) and schedule ({clock.name}, t from {clock.t_max:g} to {clock.t_min:g}); the density, "
                "the flow field and every metric are the exact ones of that target.", icon=":material/extension:")
    with st.spinner(f"Sampling with {solver}…"):
        traj = run(setup, solver, options)
except Exception as err:  # bad input, a broken model or a bug in the core: a message, never a traceback
    controls.report_core_error(err)
    st.stop()

if traj.diverged:
    st.warning(f"**The run diverged** at step {traj.diverged_at} of {traj.n_steps}: {traj.diverged_reason}. "
               "The figures show the steps before it.")

metric_slots = [c.empty() for c in st.columns(5)]  # the distances fill in once the reference is in
metric_slots[0].metric("NFE", traj.nfe, help="Model evaluations the solver spent.")
metric_slots[4].metric("Wall time", f"{traj.wall_time * 1e3:.1f} ms", help="The solver's run, model evaluations included.")

view = st.columns([2, 3, 5], vertical_alignment="center")
show_x0 = view[0].toggle("x0-predictions", key="x0", bind=URL, help="Draw the model's x0-prediction at every step.")
axis = view[1].segmented_control(
    "Time axis", figures.TIME_AXES, default="log-snr", key="axis", bind=URL, label_visibility="collapsed",
    help="Spacing of the time axis: by log-SNR (ticks in t), t itself, or solver steps.",
) or "log-snr"

paths, final = main_figures(setup, solver, options, bool(show_x0), axis)
if model.dim == 1:
    chart.draw(paths)
    st.caption(
        "Colour: the exact density p_t(x) of the noised target. Each path is coloured by the mode it "
        "reaches; dots mark the solver's grid times."
    )
    left, right = st.columns(2)
    chart.draw(final, left)
else:
    left, right = st.columns([3, 2])
    chart.draw(paths, left)
    left.caption(
        "▶ plays the run in the browser; the slider picks a step. Particles are coloured by the mode they "
        "reach; arrows show where the flow carries them at that time (lengths normalised per step)."
    )
    chart.draw(final, right)
    right = st

# The reference path (rk45, with scipy's first import on a fresh process) comes after the figures: they show
# first, and the metrics row above and the error figure fill in when it is done.
error_box = right.empty()
floor = None
try:
    with error_box, st.spinner("Integrating the rk45 reference path…"):
        ref = reference(setup)
        if not ref.diverged:
            floor = reference_distance(setup)
except Exception as err:  # the reference is an extra: the page goes on without it
    ref = None
    st.warning(f"**The rk45 reference failed** ({type(err).__name__}: {err}); comparisons against it are skipped.")
against_reference = ref is not None and not ref.diverged
if against_reference:
    chart.draw(error_figure(setup, solver, options, axis), error_box)
else:
    error_box.empty()
summary = scores(setup, solver, options, against_reference)
metric_slots[1].metric(
    "Distance to target", _format(summary.get("sliced_w2"), ".3f"),
    delta=None if floor is None else f"exact ODE: {floor:.3f}", delta_color="off", delta_arrow="off",
    help="Sliced W2 between the final samples and fresh target draws. Below: the same for the rk45 "
         "reference from the same start — the floor set by the finite sample.",
)
metric_slots[2].metric(
    "Error vs reference", _format(summary.get("error_vs_reference"), ".3g"),
    help="RMS distance between each final sample and the rk45 path from the same x_T."
         + (" A stochastic solver is not meant to follow that path." if info["stochastic"] else "")
         + ("" if model_name == EXACT else f" The path is the exact denoiser's: this is {model_name}'s own error "
                                           "plus the solver's."),
)
metric_slots[3].metric(
    "Mode mass error", _format(summary.get("coverage_tv"), ".3f"),
    help="Total-variation distance between the samples' share of each mode and the mixture weights.",
)


