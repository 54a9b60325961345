"""Solver lab: solvers against each other at equal cost, on exact models (with guidance)."""

from __future__ import annotations

import inspect
import time
from urllib.parse import quote_plus

import numpy as np
import streamlit as st

import explorer as ex
from app_pages import chart, controls, precomputed
from explorer import experiments, figures
from explorer import guidance as G

URL = controls.URL
DEFAULT_SOLVERS = ("euler", "heun", "ddim", "dpmpp-2m", "dpmpp-3m", "unipc", "deis", "dpm-solver-3")
STREAM_AFTER = 0.03  # s of sweeping after which the sweeps are being computed, not read from the cache: draw early

# `setup` = (target key, guidance, schedule, spacing, particles, seed), guidance = (label, w,
# thresholding) or None: everything but the solvers, hashable for the caches.


def _problem(setup: tuple):
    """The model (guided and/or thresholded as asked), the start x_T and the target to measure against."""
    target_key, guide, schedule, spacing, n, seed = setup
    gm = controls.load_target(target_key)
    s = ex.schedules.get(schedule)
    base = ex.AnalyticModel(gm, s)
    x_T = base.prior_sample(n, np.random.default_rng(seed))
    if guide is None:
        return base, x_T, gm
    label, w, thresholding = guide
    labelled = G.with_labels(gm, G.class_labels(target_key[0], gm))
    model = G.guided_model(labelled, s, label, w, thresholding=thresholding)
    return model, x_T, model.target


@st.cache_data(max_entries=8, show_spinner=False)
@precomputed.default("solver_lab")
def reference_final(setup: tuple):
    model, x_T, _ = _problem(setup)
    ref = ex.reference(model, x_T, ex.timesteps(model.schedule, 1, setup[3]))
    return None if ref.diverged else np.asarray(ref.sample)


@st.cache_data(max_entries=8, show_spinner=False)
@precomputed.default("solver_lab")
def floor(setup: tuple) -> float:
    x = reference_final(setup)
    if x is None:
        return float("nan")
    _, x_T, target = _problem(setup)
    draws = target.sample(int(np.clip(4 * len(x_T), 5000, 20000)), np.random.default_rng(setup[5]))
    return experiments.SlicedW2(draws)(x)


@st.cache_data(max_entries=256, show_spinner=False)
@precomputed.default("solver_lab")
def sweep_one(setup: tuple, solver: str, nfes: tuple) -> list:
    """The work-precision records of one solver (cached per solver, so adding one is cheap)."""
    model, x_T, target = _problem(setup)
    return experiments.work_precision(
        model, x_T, {solver: solver}, nfes, setup[3], target=target, seed=setup[5],
        reference_sample=reference_final(setup),
    )


@st.cache_data(max_entries=32, show_spinner=False)
def sweep_with(setup: tuple, label: str, solver: str, options: tuple, nfes: tuple) -> list:
    """sweep_one for a solver with options (solvers A and B), under its own label."""
    model, x_T, target = _problem(setup)
    return experiments.work_precision(
        model, x_T, {label: (solver, dict(options))}, nfes, setup[3], target=target, seed=setup[5],
        reference_sample=reference_final(setup),
    )


@st.cache_data(max_entries=16, show_spinner=False)
def compare(setup: tuple, a: tuple, b: tuple, nfe: int) -> dict:
    model, x_T, _ = _problem(setup)
    return experiments.compare_two(model, x_T, (a[0], dict(a[1])), (b[0], dict(b[1])), nfe, setup[3], seed=setup[5])


@st.cache_data(max_entries=8, show_spinner=False)
def guidance_failure(target_key: tuple, schedule: str, spacing: str, label: int, solvers: tuple, nfe: int,
                     thresholding: bool, seed: int) -> list:
    gm = controls.load_target(target_key)
    labelled = G.with_labels(gm, G.class_labels(target_key[0], gm))
    return G.guidance_sweep(labelled, ex.schedules.get(schedule), label, solvers=solvers, nfe=nfe, n=300,
                            seed=seed, spacing=spacing, thresholding=thresholding)


def _sweep_label(side: str, solver: str, options: dict) -> str:
    """'A: dpmpp-3m (form=dpm-solver-code)': the side, the solver and the options that differ from its defaults."""
    declared = ex.solvers.info(solver)["options"]
    changed = ", ".join(f"{k}={v}" for k, v in options.items() if k in declared and v != declared[k]["default"])
    return f"{side}: {solver}" + (f" ({changed})" if changed else "")


def _stochastic(solver: str, options: dict) -> bool:
    spec = ex.solvers.spec(solver)
    return spec.draws_noise(spec.resolve(options))


BLOW_UP = 10.0  # a final |x| above this many data ranges is a blow-up


def _blow_ups(records) -> list:
    return [r for r in records if r["diverged_at"] is not None or r["max_norm"] > BLOW_UP]


def _blow_up_summary(records) -> tuple:
    """(runs that blew up, runs, the largest final |x| in data ranges as text, the run it comes from)."""
    if not records:
        return 0, 0, "—", "no run"
    worst = max(records, key=lambda r: r["max_norm"])
    size = "diverged" if worst["diverged_at"] is not None else f"{worst['max_norm']:.3g} × the data range"
    return len(_blow_ups(records)), len(records), size, f"{worst['solver']} at w = {worst['w']:g}"


def _paper_link(title: str) -> str:
    if not title:  # a plug-in may name no paper
        return "—"
    return f"[{title}](https://scholar.google.com/scholar?q={quote_plus(chr(34) + title + chr(34))})"


def _plugin_note(name: str) -> str:
    """' (plug-in: module)' for a solver registered outside explorer.solvers."""
    source = ex.solvers.info(name)["source"]
    return "" if source.startswith("explorer.solvers.") else f" (plug-in: {source})"


st.title("Solver lab")
st.caption(
    "Solvers against each other at equal cost (model evaluations, NFE) on an exact Gaussian-mixture model: "
    "error against the exact ODE solution, distance to the target, two solvers step by step, and what "
    "classifier-free guidance does to them. Every control is in the URL."
)

runnable = [s for s in ex.solvers.names() if s != "rk45"]
with st.sidebar:
    st.header("Target")
    target_key = controls.target("gmm-2d-ring8")

    st.header("Sweep")
    schedules = ex.schedules.names()
    schedule = st.selectbox("Schedule", schedules, schedules.index("vp-linear"), key="schedule", bind=URL)
    spacing = controls.spacing()
    chosen = st.multiselect(
        "Solvers", runnable, [s for s in DEFAULT_SOLVERS if s in runnable], key="solvers", bind=URL,
        help="Each with its default options. A solver spending k evaluations per step gets NFE / k steps.",
    )
    bad_input = None
    try:
        nfes = controls.int_list("NFE values", "nfes", "4, 6, 8, 12, 16, 24, 32, 48", 1, 1000,
                                 help="Model evaluations per run, comma-separated.")
    except ValueError as err:
        nfes, bad_input = (), err
    n = controls.particles(1000)
    seed = controls.seed()

    st.header("Guidance")
    guided = st.toggle(
        "Classifier-free guidance", key="guided", bind=URL,
        help="Label the target's modes (ring: 4 arcs; grid: its rows; otherwise one class per mode) and sample "
             "D = (1 + w) D(x | c) − w D(x), with the exact conditional and unconditional denoisers.",
    )
    guide = None
    if guided:
        try:
            gm = controls.load_target(target_key)
            labels = G.classes(G.with_labels(gm, G.class_labels(target_key[0], gm)))
        except ValueError:
            labels = [0]
        label = st.selectbox("Class c", labels, key="label", bind=URL)
        w = controls.number("Guidance scale w", "w", 3.0, "0: the conditional model; larger: sharper, harder to solve", 0.0, 30.0)
    thresholding = st.toggle(
        "Dynamic thresholding", key="threshold", bind=URL, disabled=not guided,
        help=inspect.cleandoc(G.DynamicThresholding.__doc__).split("\n\n")[0],
    )
    if guided:
        guide = (int(label), float(w), bool(thresholding))

if bad_input is not None:
    st.error(f"**Can't run this sweep.** {bad_input}")
    st.stop()
if not chosen:
    st.info("Choose at least one solver in the sidebar.")
    st.stop()

setup = (target_key, guide, schedule, spacing, int(n), int(seed))
try:
    model, x_T, target = _problem(setup)
    with st.spinner("Integrating the rk45 reference…"):
        ref_final = reference_final(setup)
except Exception as err:  # bad input or a bug in the core: a message, never a traceback
    controls.report_core_error(err)
    st.stop()
if ref_final is None:
    st.warning("**The rk45 reference diverged** on this set-up: errors against it are not shown.")

# Work-precision: drawn once the first solver's sweep is in when the sweeps are computed (a new problem), then whole.
st.subheader("Work-precision")
notes = st.container()  # failures, skipped solvers and divergences, once every sweep is in
bar = st.progress(0.0, text="Sweeping…")
left, right = st.columns(2)
plots, captions = (left.empty(), right.empty()), (left.empty(), right.empty())


def draw_sweeps(records: list) -> None:
    chart.draw(figures.work_precision(records), plots[0])
    chart.draw(figures.distance_vs_nfe(records, floor(setup)), plots[1])


records, failed = [], []
started, early = time.perf_counter(), False
for k, solver in enumerate(chosen):
    bar.progress(k / len(chosen), text=f"Sweeping {solver} ({k + 1}/{len(chosen)})…")
    try:
        records += sweep_one(setup, solver, nfes)
    except Exception as err:  # one solver's failure leaves the others standing
        failed.append(f"{solver}: {type(err).__name__}: {err}")
    if not early and records and k < len(chosen) - 1 and time.perf_counter() - started > STREAM_AFTER:
        draw_sweeps(records)  # not from the cache: show the first solver's while the others run
        early = True
bar.empty()
for message in failed:
    notes.error(f"**A solver failed.** {message}")
skipped = [s for s in chosen if not any(r["solver"] == s for r in records) and not any(f.startswith(s + ":") for f in failed)]
if skipped:
    notes.info(f"No NFE value fits a whole number of steps of: {', '.join(skipped)}.")
diverged = [r for r in records if r["diverged_at"] is not None]
if diverged:
    lines = "\n".join(f"- **{r['label']}** at NFE {r['nfe']}: step {r['diverged_at']} of {r['n_steps']} — {r['reason']}" for r in diverged)
    notes.warning(f"**{len(diverged)} run(s) diverged** (red crosses on the plots):\n{lines}")
if records:
    draw_sweeps(records)
    captions[0].caption("Fitted order: slope of log error against log NFE over the three largest NFEs (the asymptotic "
                        "part). Stochastic solvers (dotted) are not meant to follow the ODE path: compare their distance "
                        "instead.")
    captions[1].caption("Sliced W2 between the final samples and fresh target draws; the dashed line is the exact ODE "
                        "from the same start, the floor set by the finite sample."
                        + (" With guidance the target is the class's own modes p(x | c), which guided samples are not "
                           "meant to match exactly (they are sharper): the floor rises with w." if guide else ""))

# Side by side.
st.subheader("Two solvers from the same noise")
cols = st.columns([2, 2, 2, 2])
a = cols[0].selectbox("Solver A", runnable, runnable.index("ddim") if "ddim" in runnable else 0, key="a", bind=URL)
with cols[1]:
    opts_a = controls.solver_options_for(a, "a")
b = cols[2].selectbox("Solver B", runnable, runnable.index("dpmpp-2m") if "dpmpp-2m" in runnable else 0, key="b", bind=URL)
with cols[3]:
    opts_b = controls.solver_options_for(b, "b")
nfe = cols[0].slider("NFE", 1, 60, 10, key="nfe", bind=URL, help="Both solvers spend this many model evaluations.")
show_x0 = cols[2].toggle("x0-predictions", True, key="x0", bind=URL)
try:
    with st.spinner(f"Running {a} and {b}, and the exact flow over every step…"):
        result = compare(setup, (a, tuple(opts_a.items())), (b, tuple(opts_b.items())), int(nfe))
except ValueError as err:
    st.error(f"**Can't compare at this NFE.** {err}")
else:
    for side in result.values():
        if side["traj"].diverged:
            st.warning(f"**{side['label']} diverged** at step {side['traj'].diverged_at}: {side['traj'].diverged_reason}")
    chart.draw(figures.side_by_side(model, result, show_x0=bool(show_x0)))
    chart.draw(figures.step_errors(model, result))
    st.caption("Local error: what each step adds, against the exact flow from the solver's own state (first 400 "
               "particles). Global error: distance to the exact path from the same start. x0-prediction error: the "
               "solver's x0-prediction against the model's on the exact path.")
if st.toggle("Fit their orders", key="ab_orders", bind=URL,
             help="Sweep A and B, each with the options above, over the sidebar's NFE values, and fit each one's order "
                  "(the slope over the three largest NFEs): large NFE values show the asymptotic order."):
    sides = {_sweep_label("A", a, opts_a): (a, opts_a), _sweep_label("B", b, opts_b): (b, opts_b)}
    ab_records = []
    with st.spinner(f"Sweeping {a} and {b} over NFE {', '.join(map(str, nfes))}…"):
        for label, (name, opts) in sides.items():
            try:
                ab_records += sweep_with(setup, label, name, tuple(opts.items()), nfes)
            except Exception as err:  # one side's failure leaves the other standing
                st.error(f"**{label} failed.** {type(err).__name__}: {err}")
    if ab_records:
        chart.draw(figures.work_precision(ab_records, title="Solvers A and B, with their options"))
        fitted = experiments.orders(ab_records)
        shown = [f"**{label}**: " + ("stochastic, not meant to follow the ODE" if _stochastic(*sides[label]) else
                                     f"order {fitted[label]:.2f}" if np.isfinite(fitted[label]) else "order —")
                 for label in fitted]
        st.markdown(f"Fitted over NFE {', '.join(map(str, nfes))}: " + " · ".join(shown) + ".")

# Guidance.
st.subheader("High guidance breaks high-order solvers")
if guide is None:
    st.info("Turn on **Classifier-free guidance** in the sidebar to sweep the guidance scale: DPM-Solver++ showed that "
            "at large w high-order solvers lose their advantage or blow up, while a first-order one degrades gracefully.")
else:
    failure_solvers = st.multiselect(
        "Solvers", runnable, [s for s in G.FAILURE_SOLVERS if s in runnable], key="gsolvers", bind=URL,
    )
    g_nfe = st.slider("NFE", 2, 48, 12, key="gnfe", bind=URL,
                      help="Each solver gets NFE // (its evaluations per step) steps: 12 suits 1, 2 and 3 per step.")
    if failure_solvers:
        with st.spinner(f"Sweeping the guidance scale w = {', '.join(f'{w:g}' for w in G.FAILURE_SCALES)}…"):
            g_records = guidance_failure(target_key, schedule, spacing, guide[0], tuple(failure_solvers), int(g_nfe),
                                         guide[2], int(seed))
        bad = _blow_ups(g_records)
        if bad:
            st.warning("**Blow-ups:** " + "; ".join(f"{r['solver']} at w = {r['w']:g}" for r in bad))
        count, runs, size, where = _blow_up_summary(g_records)
        line = (f"**{count} of {runs} runs blew up** (diverged, or final |x| above {BLOW_UP:g} × the data range); "
                f"the largest final |x|: {size} ({where}).")
        summary = st.empty()  # the line, then (if asked) the same sweep's count with thresholding the other way
        summary.markdown(line)
        left, right = st.columns(2)
        chart.draw(figures.guidance_failure(g_records), left)
        chart.draw(figures.guidance_failure(g_records, "distance", title="Guidance scale against distance to p(x | c)"), right)
        other_way = "without" if guide[2] else "with"
        if st.toggle(f"Compare: the same sweep {other_way} dynamic thresholding", key="gcontrast", bind=URL,
                     help="Sweep again with thresholding the other way and count its blow-ups beside these "
                          "(a thresholded guided reference is slow to solve: off by default)."):
            with st.spinner(f"The same sweep {other_way} dynamic thresholding…"):
                other = guidance_failure(target_key, schedule, spacing, guide[0], tuple(failure_solvers), int(g_nfe),
                                         not guide[2], int(seed))
            count, runs, size, where = _blow_up_summary(other)
            summary.markdown(line + f" {other_way.capitalize()} dynamic thresholding: {count} of {runs} blew up; "
                                    f"the largest final |x|: {size} ({where}).")
        st.caption("300 particles, the same noise for every run. Error: against rk45 on the same guided ODE. "
                   "Turn on dynamic thresholding to clip the guided x0-prediction back into the data's range.")

# The table.
st.subheader("Solvers")
rows = figures.solver_rows()
controls.table([{"solver": f"**{r['solver']}**{_plugin_note(r['solver'])}", "order": str(r["order"]),
                 "stochastic": "yes" if r["stochastic"] else "no", "multistep": "yes" if r["multistep"] else "no",
                 "NFE/step": str(r["nfe_per_step"]), "options": r["options"].replace("|", "/"), "paper": _paper_link(r["paper"])}
                for r in rows])
