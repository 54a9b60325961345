"""Stability: why fast samplers diverge. Regions in the complex plane, the h·λ a run really meets,
the momentum paper's toy system, and guidance pushing a run out of its region."""

from __future__ import annotations

import inspect

import numpy as np
import streamlit as st

import explorer as ex
from app_pages import chart, controls, precomputed
from explorer import guidance as G
from explorer import stability as S
from explorer.figures import stability as FS

URL = controls.URL
DEFAULT_METHODS = ("euler", "plms", "heavy-ball", "ghvb")
TARGETS_2D = [t for t in ex.targets.names() if ex.targets.get(t).dim == 2]


def _options(solver: str, order: int, beta: float, h: float) -> dict:
    """The sidebar's order and beta for the options this solver declares (the rest at defaults)."""
    declared = ex.solvers.info(solver)["options"]
    out = {}
    if declared.get("order", {}).get("type") == "int":
        high = declared["order"].get("range", (None, None))[1]  # a plug-in's may have no upper bound
        out["order"] = int(order if high is None else min(order, high))
    if "base_order" in declared:
        out["base_order"] = int(order)
    if "beta" in declared:
        out["beta"] = float(beta)
    if S.variable(solver, **out) == "lambda":
        out["h"] = float(h)
    return out


@st.cache_data(max_entries=256, show_spinner=False)
@precomputed.default("stability")
def region(solver: str, options: tuple, box: tuple, n: int = 150) -> dict:
    # 150 x 150 draws the same boundary as 300 x 300 at these sizes (plotly interpolates the level between grid
    # points) with a quarter of the data to send and contour in the browser
    return FS.region_data(solver, dict(options), box, n)


def _run_problem(target: str, schedule: str, spacing: str, steps: int, n: int, seed: int):
    model = ex.AnalyticModel(ex.targets.get(target), ex.schedules.get(schedule))
    x_T = model.prior_sample(n, np.random.default_rng(seed))
    return model, x_T, ex.timesteps(model.schedule, steps, spacing)


@st.cache_data(max_entries=32, show_spinner=False)
def run(setup: tuple, solver: str, options: tuple):
    model, x_T, ts = _run_problem(*setup)
    traj = ex.sample(model, x_T, ts, solver, **dict(options))
    return traj, FS.run_data(model, traj)


@st.cache_data(max_entries=16, show_spinner=False)
@precomputed.default("stability")
def toy(order: int, beta: float, steps: int) -> dict:
    return FS.toy_data(FS.toy_methods(order, beta), steps)


def _guidance_methods(beta: float) -> dict:
    return {
        "plms 4": ("plms", {"order": 4}),
        FS.label("ghvb", {"order": 4, "beta": beta}): ("ghvb", {"order": 4, "beta": beta}),
        FS.label("heavy-ball", {"base": "plms", "base_order": 4, "beta": beta}):
            ("heavy-ball", {"base": "plms", "base_order": 4, "beta": beta}),
        "plms 2": ("plms", {"order": 2}),
    }


@st.cache_data(max_entries=16, show_spinner=False)
def guided(w: float, beta: float, steps: int, n: int, seed: int):
    target, schedule = FS.nested_classes(), ex.schedules.get("vp-linear")
    runs, model = FS.guided_runs(target, schedule, w, _guidance_methods(beta), steps, n, seed)
    return runs, {name: FS.run_data(model, traj) for name, traj in runs.items()}


@st.cache_data(max_entries=8, show_spinner=False)
@precomputed.default("stability")
def guided_sweep(beta: float, steps: int, seed: int) -> list:
    target, schedule = FS.nested_classes(), ex.schedules.get("vp-linear")
    return FS.guidance_sweep(target, schedule, (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0), _guidance_methods(beta), steps,
                             n=200, seed=seed)


def _run_box(data: dict, intervals) -> tuple:
    """A plane that holds the run's values and the region's real interval (imaginary range a third of it)."""
    z = data["z"][np.isfinite(data["z"])]
    lo = min([-1.0] + [1.3 * i for i in intervals if np.isfinite(i)] + ([1.1 * float(z.real.min())] if len(z) else []))
    lo = max(lo, -60.0)
    hi = max(0.5, min(1.1 * float(z.real.max()), 8.0)) if len(z) else 0.5
    half = max(1.0, (hi - lo) / 3)
    return ((round(lo, 1), round(hi, 1)), (-round(half, 1), round(half, 1)))


st.title("Stability")
st.caption(
    "The momentum paper (*Diffusion Sampling with Momentum for Mitigating Divergence Artifacts*) traces the divergence "
    "of fast samplers to their small stability regions. Here are the regions, read off the solvers' own step code, and "
    "the values h·λ that a run actually meets. Every control is in the URL."
)

# Each section is a fragment: its controls rerun it alone (the beta slider redraws only the regions).


@st.fragment
def regions_section():
    st.subheader("Stability regions")
    covered = S.covered()  # the built-ins covered, and the registered plug-ins whose regions can be computed
    chosen = st.multiselect(
        "Methods", covered, [m for m in DEFAULT_METHODS if m in covered], key="methods", bind=URL,
        help="Overlaid in the plane of z = h·λ, h the step in each method's own variable (see the table).",
    )
    for name, why in S.not_covered().items():
        st.info(f"**Plug-in solver {name} has no region here.** {why}")
    controls_row = st.columns(4)
    order = controls_row[0].slider(
        "Order", 1, 4, 2, key="order", bind=URL,
        help="Adams-Bashforth order of plms, of Heavy Ball's plms base, of GHVB (and unipc / deis, up to 3).",
    )
    beta = controls_row[1].slider(
        "Momentum β", 0.05, 1.0, 0.8, 0.05, key="beta", bind=URL,
        help="Heavy Ball and GHVB: 1 is the base method; smaller averages over more past steps and widens the region.",
    )
    h_lambda = controls_row[2].slider(
        "Step h in λ", 0.05, 2.0, 0.5, 0.05, key="h", bind=URL,
        help="Exponential integrators: their test problem (see below) depends on the step in λ as well as on z.",
    )
    re_lo = controls_row[3].slider("Plane from Re z =", -12.0, -1.0, -3.5, 0.5, key="re", bind=URL)

    half = round(0.52 * (0.75 - float(re_lo)), 2)
    box = ((float(re_lo), 0.75), (-half, half))
    if not chosen:
        st.info("Choose at least one method.")
    else:
        regions, failed = [], []
        with st.spinner("Reading the regions off the solvers' code…"):
            for solver in chosen:
                try:
                    regions.append(region(solver, tuple(sorted(_options(solver, order, beta, h_lambda).items())), box))
                except Exception as err:  # one method's failure leaves the others standing
                    failed.append(f"{solver}: {type(err).__name__}: {err}")
        for message in failed:
            st.error(f"**A region failed.** {message}")
        left, right = st.columns([3, 2])
        if regions:
            chart.draw(FS.stability_regions(regions, box, height=600), left)
            controls.table([{"method": r["label"], "h in": r["variable"], "real interval": f"[{r['interval']:.4g}, 0]"}
                            for r in regions], where=right)
        right.markdown(
            "A method applied to the test equation y′ = λy with step h is a linear recurrence in z = h·λ; it is **stable** "
            "when every root ζ of its characteristic polynomial has |ζ| ≤ 1 (filled). Dotted: the boundary locus, the z "
            "where a root has |ζ| = 1. Tick on the real axis: the left end of the real interval. The regions are fitted "
            "from runs of each solver's own step code on the test problem, so they cannot drift from the methods."
        )
        with right.expander("The test problems (h in t, in σ/α, in λ)", expanded=any(r["variable"] == "lambda" for r in regions)):
            st.markdown(inspect.cleandoc(S.__doc__).split("\n\nHow a region is derived")[0].split("\n\n", 1)[-1])


@st.fragment
def run_section():
    st.subheader("A run: the h·λ it meets, step by step")
    st.caption(
        "For a mixture the denoiser's Jacobian is exact, ∇ₓE[x₀|xₜ] = (α/σ²) Cov[x₀|xₜ], so are the eigenvalues λ of the "
        "drift's Jacobian in the solver's variable at every particle; times the step h they are the z the step is taken "
        "at. The Jacobian is symmetric, so they are real: the real interval is what counts."
    )
    cols = st.columns(4)
    run_target = cols[0].selectbox("Target", TARGETS_2D, TARGETS_2D.index("gmm-2d-ring8"), key="run_target", bind=URL)
    schedules = ex.schedules.names()
    run_schedule = cols[0].selectbox("Schedule", schedules, schedules.index("vp-linear"), key="run_schedule", bind=URL)
    run_spacing = controls.spacing("run_spacing", cols[1])
    run_steps = cols[1].slider("Steps", 2, 50, 10, key="run_steps", bind=URL)
    runnable = S.covered()
    run_solver = cols[2].selectbox("Solver", runnable, runnable.index("plms") if "plms" in runnable else 0, key="run_solver", bind=URL)
    with cols[3]:
        run_options = controls.solver_options_for(run_solver, "run")
    run_n = controls.particles(300, "run_n", cols[2], high=2000, step=50)
    run_seed = controls.seed("run_seed", cols[2])

    setup = (run_target, run_schedule, run_spacing, int(run_steps), int(run_n), int(run_seed))
    try:
        with st.spinner(f"Running {run_solver} and its Jacobians…"):
            traj, data = run(setup, run_solver, tuple(run_options.items()))
            model = _run_problem(*setup)[0]
            opts = dict(run_options)
            h_first = None
            if data["variable"] == "lambda":
                lam = model.schedule.lambda_(np.asarray(traj.t))
                h_first = float(np.median(np.abs(np.diff(lam))))
                opts["h"] = h_first
            rbox = _run_box(data, [S.real_interval(run_solver, **opts)])
            run_region = region(run_solver, tuple(sorted(opts.items())), rbox)
    except Exception as err:  # bad input or a bug in the core: a message, never a traceback
        controls.report_core_error(err)
    else:
        flagged = [i + 1 for i, f in enumerate(data["fraction"]) if f > 0]
        if traj.diverged:
            st.warning(f"**The run diverged** at step {traj.diverged_at + 1} of {traj.n_steps}: {traj.diverged_reason}.")
        if flagged:
            st.warning(f"**{len(flagged)} of {traj.n_steps} steps leave the region** (some particle's h·λ, where the flow "
                       f"contracts, lies outside): steps {', '.join(map(str, flagged))}. "
                       f"Largest |root| {np.nanmax(data['radius']):.3g} at step {int(np.nanargmax(data['radius'])) + 1}.")
        else:
            st.success(f"Every step's h·λ lies in the region of {data['label']}.")
        chart.draw(FS.step_eigenvalues(model, traj, [run_region], data, box=rbox, height=560))
        st.caption(
            "▶ plays the run; the slider picks a step (it opens on the step the method amplifies most). Red: values outside "
            "the region where the exact flow contracts — the method amplifies them — and the particles that carry them. "
            "Hollow grey: Re h·λ > 0, directions the flow itself pulls apart (a particle choosing its mode); every explicit "
            "method is 'unstable' there and rightly so. Leaving the region is not a blow-up by itself: each such step "
            "multiplies the part of the error in the amplified mode by its |root| (top of the chart below); a few steps "
            "at 1.5 leave the particles in place, a run of steps at 10 (guidance, below) does not."
            + (f" Region for the median step h = {h_first:.3g} in λ; each step is checked with its own h." if h_first else "")
        )
        chart.draw(FS.step_report([data], data_range=G.data_range(model.target),
                                  height=420))


@st.fragment
def toy_section():
    st.subheader("The momentum paper's toy system")
    st.caption(
        "x′ = A x with A = [[0, 1], [−9, −10]] (eigenvalues −1 and −9), x(0) = (−1, 0), t ∈ [0, 3]. With 26 steps, "
        "h·λ = −9·3/26 ≈ −1.04 lies just outside Adams-Bashforth 2's interval [−1, 0]: it blows up, while Heavy Ball and "
        "GHVB with β = 0.8 (wider regions) follow the exact solution expm(A t) x(0)."
    )
    cols = st.columns(3)
    toy_order = cols[0].slider("Order", 1, 4, 2, key="toy_order", bind=URL)
    toy_beta = cols[1].slider("β", 0.05, 1.0, 0.8, 0.05, key="toy_beta", bind=URL)
    toy_steps = cols[2].slider("Steps", 5, 60, 26, key="toy_steps", bind=URL)
    result = toy(int(toy_order), float(toy_beta), int(toy_steps))
    methods = FS.toy_methods(int(toy_order), float(toy_beta))
    toy_box = ((min(-3.5, 1.2 * float(result["z"].real.min())), 0.75), (-2.0, 2.0))
    toy_regions = [region(s, tuple(sorted(o.items())), toy_box) for s, o in methods.values()]
    outside = ~S.region("plms", result["z"], order=int(toy_order))  # red: outside the classical method's region
    left, right = st.columns([3, 2])
    chart.draw(FS.stability_regions(toy_regions, toy_box, points=(result["z"], outside), height=440,
                                    title="Regions, and h·λ at A's eigenvalues"), left)
    at_z = "h·λ = " + ", ".join(f"{z.real:.3g}" for z in result["z"])
    inside = []
    for name, (s, o) in methods.items():
        err = float(np.linalg.norm(result["runs"][name][-1] - result["exact"][-1]))
        inside.append({"method": name, at_z: " / ".join("inside" if k else "**outside**" for k in S.region(s, result["z"], **o)),
                       "final error": f"{err:.3g}"})
    controls.table(inside, where=right)
    right.caption(f"Red on the plane: outside the region of plms {int(toy_order)} (Adams-Bashforth), the classical method. "
                  "A value outside a method's region grows by its largest |root| every step.")
    left, right = st.columns(2)
    chart.draw(FS.toy_paths(result["runs"], result["exact"], height=460), left)
    chart.draw(FS.toy_error(result["runs"], result["exact"], result["t"], height=460), right)


@st.fragment
def guidance_section():
    st.subheader("Guidance pushes h·λ out of the region")
    st.caption(
        "Classifier-free guidance D_w = (1 + w) D(x | c) − w D(x) on a labelled target with a sharp class (N(0, 0.3² I)) "
        "inside a broad one (N(0, 3² I)), guided toward the sharp one; vp-linear, uniform-λ grid. The guided Jacobian "
        "(α/σ²)[(1 + w) Cov(x₀|x, c) − w Cov(x₀|x)] has large negative eigenvalues at moderate noise, so h·λ reaches "
        "far left: PLMS-4's small region is left, it amplifies and blows up, while GHVB and Heavy Ball (same base, "
        "momentum β) or a lower order keep the run stable at the same NFE. On the ring or grid presets guidance moves "
        "the particles into their class before h·λ gets large, and none of these methods blows up there: this target is "
        "built to show the effect."
    )
    cols = st.columns(4)
    w = cols[0].slider("Guidance scale w", 0.0, 20.0, 10.0, 0.5, key="w", bind=URL)
    g_beta = cols[1].slider("β (GHVB, Heavy Ball)", 0.05, 1.0, 0.5, 0.05, key="g_beta", bind=URL)
    g_steps = cols[2].slider("Steps", 4, 40, 15, key="g_steps", bind=URL)
    g_seed = controls.seed("g_seed", cols[3])
    with st.spinner("Running the guided sampler with each method…"):
        g_runs, g_data = guided(float(w), float(g_beta), int(g_steps), 300, int(g_seed))
    scale = G.data_range(G.conditional_target(FS.nested_classes(), 0))
    summary = []
    for name, traj in g_runs.items():
        final = np.asarray(traj.x[-1])
        size = float(np.max(np.abs(final))) / scale if np.isfinite(final).all() else np.inf
        summary.append(f"**{name}**: " + (f"diverged at step {traj.diverged_at + 1}" if traj.diverged else f"max |x| = {size:.3g} × the class's range"))
    st.markdown(" · ".join(summary))
    left, right = st.columns(2)
    chart.draw(FS.step_report(list(g_data.values()), data_range=scale, height=460, range_name="class's range",
                              title=f"Guided, w = {w:g}: step by step"), left)
    with st.spinner("Sweeping w…"):
        sweep = guided_sweep(float(g_beta), int(g_steps), int(g_seed))
    chart.draw(FS.guidance_stability(sweep, height=460), right)
    shown = st.selectbox("Step by step", list(g_runs), key="g_show", bind=URL)
    g_model = G.guided_model(FS.nested_classes(), ex.schedules.get("vp-linear"), 0, float(w))
    g_box = _run_box(g_data[shown], [])
    s_name, s_opts = _guidance_methods(float(g_beta))[shown]
    chart.draw(FS.step_eigenvalues(g_model, g_runs[shown], [region(s_name, tuple(sorted(s_opts.items())), g_box)],
                                   g_data[shown], box=g_box, height=540))


regions_section()
run_section()
toy_section()
guidance_section()
