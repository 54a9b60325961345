"""Gallery cards of the Trajectories, Solver lab, Stability and Solver search pages: how solvers step.

Each figure function draws, with explorer and explorer.figures alone, the chart its card's view shows
(the page's chart number `chart`), on the same settings."""

from __future__ import annotations

import numpy as np

import explorer as ex

from .card import Card

# ------------------------------------------------------------------ Trajectories (default: gmm-1d-3modes, edm)


def _trajectories_run(solver: str, steps: int, t_start=None, n: int = 2000, seed: int = 0):
    """The Trajectories page's run: its exact model, time grid, start and the solver's own noise stream."""
    model = ex.AnalyticModel(ex.targets.get("gmm-1d-3modes"), ex.schedules.get("edm"))
    ts = ex.timesteps(model.schedule, steps, ex.SPACINGS[0], t_start, None)
    x_T = model.prior_sample(n, np.random.default_rng(seed), t=ts[0])
    traj = ex.sample(model, x_T, ts, solver, rng=np.random.default_rng([seed, 1]))
    return model, x_T, ts, traj


def _euler_paths():
    from explorer import figures

    model, _, _, traj = _trajectories_run("euler", 10)
    return figures.density_heatmap_1d(model, traj, height=440, title="Ten Euler steps over the exact p_t(x)")


def _stochastic_path_error():
    from explorer import figures

    model, x_T, ts, traj = _trajectories_run("euler-maruyama", 100)
    ref = ex.reference(model, x_T, ts, method="DOP853")
    return figures.path_error(model, traj, ref, height=340,
                              title="Euler-Maruyama drifts away from the exact ODE path from the same noise")


def _truncated_start_histogram():
    from explorer import figures

    model, _, _, traj = _trajectories_run("heun", 10, t_start=2.0)
    return figures.final_histogram_1d(model.target, traj.sample, height=340,
                                      title="Started at σ = 2 from N(0, 2²): the modes' weights are wrong")


# ------------------------------------------------------------------ Solver lab (default: gmm-2d-ring8, vp-linear)

ORDER_NFES = (128, 256, 512, 1000)
GUIDANCE_NFE = 9


def _dpmpp_3m_orders():
    from explorer import experiments, figures

    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get("vp-linear"))
    x_T = model.prior_sample(200, np.random.default_rng(0))
    sides = {"A: dpmpp-3m (form=dpm-solver-code)": ("dpmpp-3m", {"form": "dpm-solver-code"}),
             "B: dpmpp-3m": ("dpmpp-3m", {"form": "taylor"})}
    records = experiments.work_precision(model, x_T, sides, ORDER_NFES, ex.SPACINGS[0], seed=0)
    return figures.work_precision(records, title="Solvers A and B, with their options")


def _guidance_blow_ups():
    from explorer import figures
    from explorer import guidance as G

    gm = ex.targets.get("gmm-2d-ring8")
    labelled = G.with_labels(gm, G.class_labels("gmm-2d-ring8", gm))
    records = G.guidance_sweep(labelled, ex.schedules.get("vp-linear"), 0, nfe=GUIDANCE_NFE, n=300, seed=0,
                               spacing=ex.SPACINGS[0])
    return figures.guidance_failure(records)


# ------------------------------------------------------------------ Stability


def _toy_errors():
    from explorer.figures import stability as FS

    result = FS.toy_data(FS.toy_methods(2, 0.8), 24)
    return FS.toy_error(result["runs"], result["exact"], result["t"], height=460)


def _guided_plms_sweep():
    from explorer.figures import stability as FS

    beta = 0.5
    methods = {
        "plms 4": ("plms", {"order": 4}),
        FS.label("ghvb", {"order": 4, "beta": beta}): ("ghvb", {"order": 4, "beta": beta}),
        FS.label("heavy-ball", {"base": "plms", "base_order": 4, "beta": beta}):
            ("heavy-ball", {"base": "plms", "base_order": 4, "beta": beta}),
        "plms 2": ("plms", {"order": 2}),
    }
    sweep = FS.guidance_sweep(FS.nested_classes(), ex.schedules.get("vp-linear"),
                              (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0), methods, 15, n=200, seed=0)
    return FS.guidance_stability(sweep, height=460)


# ------------------------------------------------------------------ Solver search (the shipped results)


def _search_gain():
    from explorer.analyses import solver_search as S
    from explorer.figures import search as F

    return F.error_vs_nfe(S.load_defaults()["curve"])


CARDS: list[Card] = [
    Card(
        slug="euler-ten-steps",
        title="Ten Euler steps miss the exact flow",
        text=("Euler follows the probability-flow ODE's tangent, and the tangent turns fastest near the data, "
              "where the modes separate. With ten steps the paths overshoot there and end visibly off the exact "
              "ODE's endpoints from the same noise."),
        page="",
        params={"solver": "euler", "steps": 10},
        claim="Ten Euler steps end 0.29 from the exact ODE's samples (RMS over 2000 particles).",
        reads=r"Error vs reference: ([\d.]+)",
        expect=(0.2, 0.4),
        figure=_euler_paths,
    ),
    Card(
        slug="stochastic-sampler-leaves-the-ode-path",
        title="A stochastic sampler ends far from its ODE path, yet on the target",
        text=("Euler-Maruyama integrates the reverse SDE: its fresh noise sends each particle to a different endpoint "
              "than the probability-flow ODE from the same start, so its error against that path is about the width "
              "of the modes. The distribution is still right: its distance to the target is no larger than the exact "
              "ODE's own (shown under it), which is why stochastic samplers are judged by distance, not path error."),
        page="",
        params={"solver": "euler-maruyama", "steps": 100},
        claim=("With 100 steps Euler-Maruyama ends 1.15 from the exact ODE's endpoints (RMS), yet 0.099 from the "
               "target (the exact ODE: 0.155)."),
        reads=r"Distance to target: 0\.[01]\d*\nError vs reference: ([\d.]+)",
        expect=(0.9, 1.4),
        figure=_stochastic_path_error,
        chart=2,
    ),
    Card(
        slug="truncated-start-prior-mismatch",
        title="A late start from N(0, σ²) puts the mass in the wrong modes",
        text=("Started at σ = 2 instead of 80, the noise N(0, 2²) is not the noised data p_T, which is centred on "
              "the middle mode at 2: its mass sits around 0, and 72% of the samples land in the lowest mode. Heun "
              "follows the exact flow from there closely (small error against the reference) and still lands in the "
              "wrong proportions; tick 'Start from exact p_T' and the mode mass error drops to 0.008."),
        page="",
        params={"solver": "heun", "steps": 10, "t_start": 2.0},
        claim="From N(0, 2²) at σ = 2, ten Heun steps land with mode mass error 0.387 (0.008 from the exact p_T).",
        reads=r"Error vs reference: 0\.\d+\nMode mass error: ([\d.]+)",
        expect=(0.25, 0.5),
        figure=_truncated_start_histogram,
        chart=1,
    ),
    Card(
        slug="dpmpp-3m-published-is-second-order",
        title="DPM-Solver++(3M) as published is second order",
        text=("The multistep third-order update needs the second divided difference with weight 2 h φ₃; the "
              "DPM-Solver code, diffusers and k-diffusion use h φ₃, which leaves an O(h³) local error. At large NFE the "
              "fitted slopes tell the two apart: order 2.15 for the published weight, 2.98 for the Taylor one."),
        page="solver-lab",
        params={"solvers": ["dpmpp-3m"], "n": 200, "nfes": "128, 256, 512, 1000", "a": "dpmpp-3m",
                "a.dpmpp-3m.form": "dpm-solver-code", "b": "dpmpp-3m", "ab_orders": True},
        claim="Over NFE 128-1000, DPM-Solver++(3M) as published measures order 2.15; with the Taylor weight 2.98.",
        # the published form's order, in a line whose Taylor form reads third order
        reads=r"\*\*A: dpmpp-3m \(form=dpm-solver-code\)\*\*: order ([\d.]+) · \*\*B: dpmpp-3m\*\*: order (?:2\.[89]|3\.[01])",
        expect=(1.85, 2.4),
        figure=_dpmpp_3m_orders,
        chart=4,
    ),
    Card(
        slug="guidance-blows-up-high-order-solvers",
        title="Strong guidance blows up high-order solvers; thresholding rescues them",
        text=("Classifier-free guidance extrapolates the denoiser, D = (1 + w) D(x | c) − w D(x), and at large w a "
              "third-order solver taking three steps (dpm-solver-3) carries it far outside the data, while DDIM at the "
              "same NFE stays in range. Dynamic thresholding clips each x0-prediction back into the data's range, and "
              "in the same sweep no run blows up."),
        page="solver-lab",
        params={"solvers": ["ddim"], "n": 200, "nfes": "9", "guided": True, "gnfe": GUIDANCE_NFE, "gcontrast": True},
        claim="At 9 NFE, 4 of 20 guided runs blow up (dpm-solver-3 to 47.9 × the data range); with thresholding 0 of 20.",
        reads=r"\*\*(\d+) of \d+ runs blew up\*\*.* With dynamic thresholding: 0 of \d+ blew up",
        expect=(3, 6),
        figure=_guidance_blow_ups,
        chart=4,
    ),
    Card(
        slug="adams-bashforth-leaves-its-region",
        title="Adams-Bashforth 2 leaves its stability region; Heavy Ball does not",
        text=("On x′ = A x with eigenvalues −1 and −9, 24 steps over [0, 3] put h·λ = −1.125 just outside "
              "Adams-Bashforth 2's real interval [−1, 0], so every step multiplies that error mode by more than one. "
              "Heavy Ball's momentum (β = 0.8) widens the region to [−1.5, 0] and follows the exact solution."),
        page="stability",
        params={"toy_order": 2, "toy_beta": 0.8, "toy_steps": 24},
        claim="At 24 steps, plms 2 ends 17.6 from the exact solution, Heavy Ball 0.0068.",
        reads=r"\| plms 2 \| inside / \*\*outside\*\* \| ([\d.]+) \|\n\| heavy-ball \(plms 2\), β = 0.8 \| inside / inside \| 0\.00",
        expect=(5.0, 60.0),
        figure=_toy_errors,
        chart=5,
    ),
    Card(
        slug="guidance-breaks-plms-4",
        title="Guidance pushes PLMS-4 out of its region; Heavy Ball holds it",
        text=("Guided toward a sharp class inside a broad one, the guided Jacobian has large negative eigenvalues at "
              "moderate noise, and 15 steps put h·λ far outside PLMS-4's small region. From w = 10 its samples end "
              "tens of class ranges away, while Heavy Ball on the same PLMS-4 (β = 0.5) stays on the class."),
        page="stability",
        params={"w": 10.0, "g_beta": 0.5, "g_steps": 15},
        claim="At w = 10, PLMS-4's samples reach 22.9 × the class's range; Heavy Ball's 0.154 ×.",
        reads=r"\*\*plms 4\*\*: max \|x\| = ([\d.]+) × the class's range.*\*\*heavy-ball \(plms 4\), β = 0\.5\*\*: "
              r"max \|x\| = 0\.\d+ ×",
        expect=(8.0, 60.0),
        figure=_guided_plms_sweep,
        chart=7,
    ),
    Card(
        slug="searched-schedule-beats-fixed-solvers",
        title="A searched solver schedule beats every fixed solver five-fold at NFE 4",
        text=("USF searches one decision per step (prediction type, Taylor order, corrector) against the exact ODE's "
              "endpoints, starting from every native solver on every standard grid. Scored on particles it never saw, "
              "the schedule found at NFE 4 is five times closer than the best fixed solver; the gain shrinks to ×1.05 "
              "at NFE 10, where fixed solvers are already accurate."),
        page="search",
        params={"nfe": 4},
        claim="At NFE 4 the searched schedule's held-out error is ×5.14 smaller than the best fixed solver's.",
        reads=r"In its own setting \(held-out particles\): ×([\d.]+)",
        expect=(4.0, 6.5),
        figure=_search_gain,
        chart=2,
    ),
]
