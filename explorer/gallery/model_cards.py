"""Gallery cards of the Mode interpolation, Images, Schedules and Learned fields pages: learned models and
schedules. Each figure function redraws its card's chart with the page's settings, outside the app."""

from __future__ import annotations

import numpy as np

import explorer as ex

from .card import Card

LAZY = "lazy (fitted to the target)"  # the Schedules page's name for interpolants.lazy(target)


# ---------------------------------------------------------------- Mode interpolation


def _ddpm_run(name: str, sample_steps: int, n: int, exact: bool):
    """The Mode interpolation page's run: DDPM on the shipped model (or the exact denoiser of its mixture)
    from where x_t is pure noise, with the page's step count below it, seed 0."""
    from explorer.analyses import hallucination as H
    from explorer.learned import torch_threads

    model = ex.models.load_pretrained(name)
    if exact:
        model = ex.AnalyticModel(model.target, model.schedule)
    t_top = int(round(model.schedule.t_max))
    t_start = H.pure_noise_t(model.schedule)
    n_run = max(2, min(t_start + 1, round(sample_steps * (t_start + 1) / (t_top + 1))))
    with torch_threads(1):
        return model, H.sample_run(model, n, seed=0, solver="ddpm", n_steps=n_run, t_start=t_start)


def _filter_scores():
    from explorer.analyses import hallucination as H
    from explorer.figures import hallucination as FH

    model, run = _ddpm_run("gmm-2d-grid25", 100, 1000, exact=False)
    bad = H.hallucinated(run.samples, model.target, 4.0)
    scores = H.trajectory_variance(run.denoised, 10)
    threshold = 10.0 ** round(float(np.log10(H.choose_threshold(scores, bad))), 2)  # the page's default
    return FH.score_histogram(scores, bad, threshold)


def _coarse_exact():
    from explorer.analyses import hallucination as H
    from explorer.figures import hallucination as FH

    model, run = _ddpm_run("gmm-1d-3modes", 100, 250, exact=True)
    rate = H.hallucination_rate(run.samples, model.target, 3.0)
    return FH.sample_histogram(run.samples, model.target, 3.0, f"Exact: {rate:.2%} hallucinated")


# ---------------------------------------------------------------- Schedules


def _path_under_a(target, a, b, solver: str, steps: int = 12, n: int = 500, seed: int = 0):
    """The Schedules page's run under A: from A's prior, on A's uniform-lambda grid over the range B reaches."""
    model = ex.AnalyticModel(target, a)
    ends = ex.schedule_experiments.shared_range(a, b)
    ts = ex.timesteps(a, steps, "uniform-lambda", *ends)
    return ex.sample(model, model.prior_sample(n, np.random.default_rng(seed), t=ts[0]), ts, solver)


def _lazy_drift():
    from explorer.figures import schedules as F

    target = ex.targets.get("gmm-1d-3modes")
    lazy = ex.interpolants.lazy(target)
    gauss = ex.targets.from_text(f"0, {float(np.sqrt(lazy.data_var))!r}", 1)  # N(0, c): the page's "N(0, c I)"
    clocks = {"vp-linear": ex.schedules.get("vp-linear"), "edm": ex.schedules.get("edm"), LAZY: lazy}
    path = _path_under_a(gauss, clocks["vp-linear"], clocks["edm"], "dpmpp-2m")
    curves = {}
    for name, schedule in clocks.items():
        p = path if name == "vp-linear" else ex.convert_path(path, schedule, from_schedule=clocks["vp-linear"])
        curves[name] = ex.schedule_experiments.drift_along(p, ex.AnalyticModel(gauss, schedule), "zero")
    return F.drift_magnitude(curves, axis="lambda", height=380)


def _lazy_fewer_steps():
    from explorer.figures import schedules as F

    model = ex.AnalyticModel(ex.targets.get("gmm-2d-grid25"), ex.schedules.get("vp-linear"))
    fit, holdout = ex.grid_search.particles(model, 200, 0), ex.grid_search.particles(model, 200, 1)
    records = ex.schedule_experiments.error_vs_nfe(model, "euler", (4, 8, 32), ("lazy",), "uniform-t",
                                                   fit=fit, holdout=holdout, max_evals=150)
    return F.error_vs_nfe(records, F.fewer_steps(records, "vp-linear, uniform-t"), height=440)


def _euler_clock():
    from explorer.figures import schedules as F

    target = ex.targets.get("gmm-1d-3modes")
    a, b = ex.schedules.get("vp-linear"), ex.schedules.get("edm")
    path = _path_under_a(target, a, b, "euler")
    trajs = {"vp-linear": path, "edm": ex.convert_path(path, b, from_schedule=a)}
    return F.linked_paths(trajs, {"vp-linear": a, "edm": b}, target, n_paths=30, height=460)


# ---------------------------------------------------------------- Learned fields


def _gauge_paths():
    from explorer.analyses import gauge as G
    from explorer.figures import learned_fields as F

    target = ex.targets.get("gmm-2d-ring8")
    runs = G.gauge_runs(ex.AnalyticModel(target, ex.schedules.get("vp-cosine")), (0.0, 1.5), n=600, seed=0)
    return F.gauge_paths(runs, target)


def _curl_map():
    from explorer.analyses import gauge as G
    from explorer.figures import learned_fields as F

    table = G.load_table()
    j = [float(v) for v in table["levels"]].index(0.5)
    return F.curl_map(table["x"][j], table["y"][j], table["curl"][j], table["log_p"][j], 0.5,
                      title="Curl of the learned field at σ/α = 0.5")


def _dimension_spectrum():
    from explorer.analyses import gauge as G
    from explorer.figures import learned_fields as F

    noises = tuple(float(v) for v in np.round(np.logspace(-4, 0.5, 19), 6))  # the page's levels
    target = G.line_target(2.0, 1e-3)
    model = ex.AnalyticModel(target, ex.schedules.get("vp-cosine"))
    x0, comp = target.sample(600, np.random.default_rng([0, 1]), return_components=True)
    dims, spec = G.dimension_vs_noise(model, x0, comp, noises, 0, spectra=True)
    names = ["line", "point", "blob"]
    return F.dimension_spectrum(noises, {nm: spec[:, k] for k, nm in enumerate(names)},
                                {nm: dims[:, k] for k, nm in enumerate(names)}, dict(zip(names, G.LINE_DIMENSIONS)))


# ---------------------------------------------------------------- Images


def _digits(kind: str, solver: str, nfe: int, n: int) -> np.ndarray:
    """The Images page's run on the 8x8 digits (seed 0, uniform-lambda grid): its final images."""
    from explorer import image_quality as Q
    from explorer import image_training

    if kind == "learned":
        model = ex.models.load_pretrained("digits")
    else:
        images = ex.image_models.training_set(image_training.PRESETS["digits"]["data"])
        model = ex.image_models.EmpiricalModel(images, ex.image_models.cosine_schedule(), dataset="digits")
    with Q.torch_threads(1):
        x = Q.sample_images(model, n, solver, nfe, 0, "uniform-lambda").x[-1]
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, np.float32)


def _memoriser():
    from explorer.figures import images as FI

    return FI.sample_grid(_digits("empirical", "dpmpp-2m", 20, 64), cols=16,
                          title="empirical optimum (memoriser), dpmpp-2m, 20 NFE")


def _ddim_against_dpm():
    from explorer.figures import images as FI

    # The figure shows the first 32 of the page's 256 digits: a 32-digit run is the same prior draw's first 32
    # (drawn in order), so the same images (to the bit, measured) for an eighth of the network calls.
    a, b = _digits("learned", "dpmpp-2m", 5, 32), _digits("learned", "ddim", 5, 32)
    return FI.side_by_side(a, b, "dpmpp-2m: NFE 5", "ddim: NFE 5", cols=8)


CARDS: list[Card] = [
    Card(
        slug="variance-filter-removes-hallucinations",
        title="The variance filter removes most of a learned model's hallucinations",
        text=("The network's denoiser is a smooth ramp where the exact one jumps between modes, so some of its samples "
              "land in the gaps of the 5 × 5 grid, beyond 4 standard deviations of every mode, where the exact denoiser "
              "puts none of its 1000. The x0-prediction of such a sample is still moving over the last steps, while that "
              "of a sample settled in a mode is not, so the variance of those predictions flags it: in the histogram the "
              "hallucinations sit at the high end."),
        page="mode-interpolation",
        params={"model": "gmm-2d-grid25", "sample_steps": 100, "samples": 1000, "window": 10, "k": 4.0},
        claim=("With 100 DDPM steps the learned model hallucinates 2.6% of 1000 samples (the exact denoiser 0.0%); the "
               "variance filter removes 85% of them and keeps 90% of the in-support samples."),
        reads=r"the filter removes (\d+)% of the hallucinations and keeps (?:[7-9]\d|100)% of the in-support",
        expect=(75, 100),
        figure=_filter_scores,
        chart=2,
    ),
    Card(
        slug="coarse-ddpm-hallucinates-exactly",
        title="Coarse DDPM steps hallucinate even with the exact denoiser",
        text=("With 100 of the 1000 timesteps (36 steps below t = 363) DDPM's last step starts from σ = 0.15, three times "
              "the modes' width, and lands near the posterior mean E[x0 | x_t], which averages two modes wherever x_t could "
              "have come from either. So the exact denoiser puts about a fifth of its samples between modes, as the "
              "network does, and the variance filter barely beats chance on them: the sampler hallucinates, not the "
              "model."),
        page="mode-interpolation",
        params={"sample_steps": 100, "samples": 250},
        claim="With 100 of 1000 steps the exact denoiser hallucinates 19.2% of 250 samples (about 0.15% with every step).",
        reads=r"Hallucinated \(exact denoiser\): ([\d.]+)%",
        expect=(10, 30),
        figure=_coarse_exact,
        chart=2,
    ),
    Card(
        slug="lazy-schedule-zero-drift",
        title="The lazy schedule does not move Gaussian data",
        text=("The lazy schedule is the trigonometric one fitted to the data's second moment c, so that α² c + σ² = c: on "
              "N(0, c I) the marginal p_t never changes and the probability-flow velocity is zero everywhere. Along the "
              "same path converted to each clock, VP-linear's and EDM's drifts are of order one while the lazy one's is "
              "round-off; on the mixture itself what remains is what no scalar schedule can remove."),
        page="schedules",
        params={"drift_data": "N(0, c I)"},
        claim="On N(0, c I) the lazy schedule's largest mean drift is 6e-14, against 2.2 for VP-linear and 0.81 for EDM.",
        reads=r"lazy \(fitted to the target\) ([-+.\de]+)",
        expect=(0.0, 1e-9),
        figure=_lazy_drift,
        chart=3,
    ),
    Card(
        slug="lazy-clock-fewer-euler-steps",
        title="Under the lazy clock Euler needs 4× fewer steps on a 5 × 5 grid",
        text=("Euler on a uniform-t grid depends on the clock it steps in. Here the same exact model sampled under the lazy "
              "schedule (from the converted start, its path converted back) reaches VP-linear's 32-step error with 8 "
              "steps (4 are not enough). The lazy clock is fitted to the grid's second moment, and at high noise 25 "
              "evenly spaced modes look much like the Gaussian of that moment, whose lazy drift is zero."),
        page="schedules",
        params={"target": "gmm-2d-grid25", "sweep_solver": "euler", "sweep_spacing": "uniform-t", "convert_to": [LAZY],
                "sweep_nfes": "4, 8, 32"},
        claim="Euler under the lazy schedule reaches VP-linear's error at 32 NFE with 8 (4× fewer).",
        reads=r"as lazy, uniform-t\*\* reaches vp-linear's error at \d+ NFE with \d+ \(([\d.]+)× fewer\)",
        expect=(3.5, 4.5),
        figure=_lazy_fewer_steps,
        chart=4,
    ),
    Card(
        slug="euler-depends-on-the-clock",
        title="Euler's samples depend on the schedule; DPM-Solver++'s do not",
        text=("A schedule is a clock: the probability-flow ODE in VP-linear's time and in EDM's has the same solutions, "
              "and a path converts between them at equal log-SNR. DPM-Solver++ and DDIM step in log-SNR, so under EDM "
              "on the converted grid they retrace the converted path to round-off; Euler steps in t, and the same twelve "
              "steps from the same start come up to 0.9 apart along the way, nearly the distance between two modes."),
        page="schedules",
        params={"path_solver": "euler", "b": "edm", "path_steps": 12},
        claim="Twelve Euler steps under EDM differ from the converted VP-linear path by up to 0.9 (DPM-Solver++(2M): 7e-14).",
        reads=r"euler under B vs the converted path: ([\d.e+-]+)",
        expect=(0.5, 1.5),
        figure=_euler_clock,
        chart=2,
    ),
    Card(
        slug="gauge-rotation-harder-paths",
        title="A rotated score keeps every marginal but is 200× harder for Euler",
        text=("Adding c J s to the score, J a 90° rotation, adds a drift along the contours of p_t that moves no density: "
              "the rotated probability-flow ODE has the same marginals, but particles circle the ring as they go and the "
              "same noise ends elsewhere. A network is free to learn such a gauge, and it costs the sampler: at c = 1.5 "
              "Euler's 20-step error is 213× its error at c = 0, DPM-Solver++(2M)'s 110×."),
        page="learned-fields",
        params={"g_target": "gmm-2d-ring8", "gauge_c": 1.5, "err_steps": 20},
        claim="On the ring, from c = 0 to c = 1.5 Euler's 20-step end error grows ×213 (0.077 → 16); DPM-Solver++(2M)'s ×110.",
        reads=r"\(×([\d.]+)\) for euler",
        expect=(150, 300),
        figure=_gauge_paths,
        chart=0,
    ),
    Card(
        slug="learned-field-not-conservative",
        title="The shipped 2D network's field is 10% non-conservative",
        text=("A score is a gradient, so its curl is zero everywhere; the 2D MLP's output is not, and at σ/α = 0.5 a tenth "
              "of it, weighted by p_t, is a part no gradient fits, its curl largest around the modes. The exact score "
              "split the same way leaves 7e-11, the grid's discretisation, and across noise levels the network's share "
              "runs from 3% to this 10%."),
        page="learned-fields",
        params={"curl_level": 0.5},
        claim="At σ/α = 0.5 the shipped MLP's non-conservative share is 10.0% (the exact score's: 6.9e-11).",
        reads=r"Non-conservative share \(p_t-weighted\): ([\d.]+)%",
        expect=(8.0, 12.0),
        figure=_curl_map,
        chart=3,
    ),
    Card(
        slug="score-reads-intrinsic-dimension",
        title="The score's Jacobian reads the data's dimension: 1, 0 and 2",
        text=("Near the data the score pulls straight back onto it: −σ² ∇s has eigenvalues near 1 across the data and near "
              "0 along it, so counting those below 1/2 gives the local dimension. At σ/α = 0.01, between the line's width "
              "and the blob's spread, it reads 1 on the line, 0 on the point and 2 on the blob; below the width "
              "everything looks 2-dimensional, above the spread everything looks like a point."),
        page="learned-fields",
        params={"id_noise": 0.01, "line_width": 0.001},
        claim="At σ/α = 0.01 the estimated dimension is right at 100% of 600 points (line 1, point 0, blob 2).",
        reads=r"matches the known one at (\d+)% of the",
        expect=(95, 100),
        figure=_dimension_spectrum,
        chart=5,
    ),
    Card(
        slug="memoriser-copies-training-digits",
        title="The exact optimum of the training loss only copies its training set",
        text=("The denoiser that minimises the training loss exactly on a finite set of 8x8 digits is the posterior mean "
              "over point masses at those images. Sampled with the same solver, every image it returns is a training "
              "digit, 0.006 from the nearest one in RMS pixels against 0.29 for the U-Net trained on the same set: a "
              "perfect score with no generalisation."),
        page="images",
        params={"model": "empirical"},
        claim="The memoriser's samples sit 0.006 (RMS) from their nearest training digit; the learned U-Net's 0.29.",
        reads=r"Nearest training image: ([\d.]+)",
        expect=(0.0, 0.03),
        figure=_memoriser,
        chart=0,
    ),
    Card(
        slug="dpm-solver-beats-ddim-at-five-nfe",
        title="At 5 NFE DDIM's digits are 5× farther from real than DPM-Solver++(2M)'s",
        text=("DPM-Solver++(2M) is DDIM plus a correction from the previous step's x0-prediction: one network call a step "
              "as DDIM, but second order instead of first. From the same noise at 5 evaluations DDIM's digits are still "
              "blurred, and in Frechet distance they lie 5× farther from real digits."),
        page="images",
        params={"nfe": 5, "images": 256, "solver": "dpmpp-2m", "solver_b": "ddim"},
        claim="At 5 NFE on 256 digits the Frechet distance is 391 for DDIM and 76 for DPM-Solver++(2M) (5.2×); real vs real 22.",
        reads=r"\(ddim's is ([\d.]+)× dpmpp-2m's\)",
        expect=(3.5, 7.0),
        figure=_ddim_against_dpm,
        chart=2,
    ),
]
