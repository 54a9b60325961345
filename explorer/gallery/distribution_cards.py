"""Gallery cards of the Scheduler audit, Guidance, Starts and Few steps pages: what a sampler really samples."""

from __future__ import annotations

import numpy as np

import explorer as ex

from .card import Card

# --------------------------------------------------------------------- Scheduler audit


def _audit_rows(scheduler: str, configs: list[dict]) -> list[dict]:
    """The audit's rows of these configurations on its default target (5, 10, 20 and 40 steps)."""
    return ex.audit.diffusers(ex.audit.DEFAULT_TARGET, (5, 10, 20, 40), schedulers=[scheduler], configs=configs)


def _ddim_clipped():
    from explorer import figures

    (row,) = _audit_rows("DDIMScheduler", [{}])
    traj, _ = ex.audit.rerun(row, 20)
    spec = row["target"]
    target = ex.targets.get(spec["name"], **spec["params"])
    return figures.final_histogram_1d(target, traj.sample, height=340)


def _heun_trailing():
    from explorer import figures

    rows = _audit_rows("HeunDiscreteScheduler", [{}, {"timestep_spacing": "trailing"}])
    return figures.audit.error_vs_nfe(rows, title="HeunDiscreteScheduler: default (linspace) and trailing spacing",
                                      height=440)


# --------------------------------------------------------------------- Guidance


def _guided(method: str, strength: float):
    """The shipped sweep's run of `method` at `strength` over the density it intends (the Guidance page's first chart)."""
    from explorer.analyses import guidance_methods as GM
    from explorer.figures import guidance_exact as F

    setup, records = GM.load()
    rec = next(r for r in records if r["method"] == method and r["strength"] == strength)
    classes = GM.classes_for(setup) if GM.family(method) == "minority" else None
    want = GM.intended(setup, method, strength, classes)
    fam = GM.family(method)
    return F.over_density(want, rec["samples"], setup.mixture(),
                          title=f"{GM.METHODS[method]}, {GM.SCALE_NAME[fam]} = {strength:g}")


def _cfg_ode():
    return _guided("cfg-ode", 4.0)


def _minority_exact():
    return _guided("minority-exact", 1.0)


def _svdd_candidates():
    from explorer.analyses import guidance_methods as GM
    from explorer.figures import guidance_exact as F

    records = [r for r in GM.load(name="svdd")[1] if r["alpha"] == 0.5]
    return F.svdd_vs_m(records)


# --------------------------------------------------------------------- Starts


def _terminal_snr():
    from explorer.analyses import terminal_snr as T
    from explorer.figures import starts as F

    target = T.brightness_target("gaussian", 3.0, 8.0)
    rows = T.compare_starts(target, 50, "leading", "ddim", 4000, 0, "posterior")
    return F.brightness(rows, target, "ode")


def _dmcmc():
    from explorer.analyses import dmcmc as M
    from explorer.figures import starts as F

    target, n, seed = ex.targets.get("gmm-1d-asym"), 1000, 0  # the Starts page's sweep: 250 chains, 4 rounds
    steps = {"paper": 0.05, "gibbs": 0.5}
    records = M.error_vs_nfe(target, n=n, n_skip=10, steps=steps, seed=seed)
    return F.dmcmc_vs_nfe(records, M.floor(target, n, seed))


# --------------------------------------------------------------------- Few steps


def _kernels():
    from explorer.figures import few_steps as F

    return F.kernels(ex.targets.get("gmm-1d-3modes"), ex.schedules.get("vp-linear"), 0.9, 0.4, 0.1)


def _reflow_ring():
    from explorer.analyses import few_step_compare as C
    from explorer.figures import few_steps as F

    table = C.load_table()
    name = "gmm-2d-ring8"
    return F.samples_grid(table["meta"]["targets"][name]["rows"], table["samples"][name], ex.targets.get(name))


CARDS: list[Card] = [
    Card(
        slug="ddim-clips-by-default",
        title="DDIM's default clip_sample gets worse with more steps",
        text=("diffusers' DDIMScheduler defaults to clip_sample=True, which clips every step's prediction of x0 to "
              "[-1, 1]: right for pixels, wrong for this target, whose modes sit at 1, 2 and 3. Look at the final "
              "histogram, where every sample ends below even the lowest mode, and at the error against the exact ODE, "
              "which grows with the number of steps; with clip_sample=False the same scheduler is first order."),
        page="audit",
        params={"row": "DDIM · default"},
        claim="With its default clip_sample=True, DDIM's error at σ = 0 grows from 1.28 at 5 steps to 1.75 at 40 "
              "(clip_sample=False: 0.03 at 40, order 0.99).",
        reads=r"error at sigma 0 [\d.]+ \(n=5\) -> ([\d.]+) \(n=40\)",
        expect=(1.5, 2.0),
        figure=_ddim_clipped,
        chart=4,
    ),
    Card(
        slug="heun-trailing-first-order",
        title="Heun with trailing timesteps is only first order",
        text=("diffusers' HeunDiscreteScheduler ends with a plain Euler step from the last nonzero σ to 0. Its default "
              "linspace spacing puts that σ at 0.03 (timestep 0) for any number of steps, but trailing spacing leaves "
              "0.69 at 5 steps and still 0.16 at 40, so that one Euler step dominates the error. The audit raises no flag: "
              "only the fitted order, 0.88 instead of 2.0, shows it."),
        page="audit",
        params={"row": "HeunDiscrete · timestep_spacing=trailing"},
        claim="HeunDiscreteScheduler with timestep_spacing=trailing fits order 0.88 (default spacing: 2.01).",
        reads=r"Fitted order \(sigma 0\): ([\d.]+)",
        expect=(0.6, 1.2),
        figure=_heun_trailing,
        chart=1,
    ),
    Card(
        slug="cfg-is-not-the-tilted-target",
        title="CFG's ODE empties a mode the tilted target keeps",
        text=("CFG is said to sample p_w ∝ p(x | c)^(1+w) p(x)^(−w), but its guided score is that distribution's "
              "score only at t = 0. On the imbalanced ring at w = 4 the class's lighter mode keeps 43% of p_w, while "
              "CFG's ODE, pushed away from the other classes, sends 99.7% of its samples to the heavier mode and leaves "
              "48% beyond 3 std of every mode."),
        page="guidance",
        params={"gmethod": "cfg-ode", "gstrength": 4.0},
        claim="At w = 4 CFG's ODE puts 0.3% of its samples on mode 7, which p_w gives 42.6% (distance to p_w 1.245, "
              "floor 0.052).",
        reads=r"Most under-sampled mode:\*\* mode \d+ holds [\d.]+% of the intended target and ([\d.]+)% of the samples",
        expect=(0.0, 3.0),
        figure=_cfg_ode,
        chart=0,
    ),
    Card(
        slug="minority-guidance-exact-classifier",
        title="Exact minority guidance samples the rarest class",
        text=("Minority guidance steers toward the class of highest minority score (worst one-shot reconstruction) with "
              "a classifier's gradient. With the exact class posterior at scale 1 the guided model is the exact "
              "conditional model, so almost every sample lands in the rarest class, whose share of the unguided target "
              "is 10% by construction."),
        page="guidance",
        params={"gmethod": "minority-exact", "gstrength": 1.0},
        claim="With the exact classifier at w = 1, 99.5% of the samples fall in the rarest of 10 minority-score "
              "classes (unguided: 8.7%), 0.195 from p(x0 | rarest) against a floor of 0.177.",
        reads=r"In the rarest class: ([\d.]+)%",
        expect=(97.0, 100.0),
        figure=_minority_exact,
        chart=0,
    ),
    Card(
        slug="svdd-more-candidates",
        title="SVDD with the exact value converges as candidates grow",
        text=("SVDD keeps one of M candidates per denoising step, drawn with weights exp(v/α) of the soft value v. "
              "With the exact soft value it approaches the tilted target p(x) exp(r(x)/α) as M grows, while with the "
              "posterior-mean value (SVDD-PM) more candidates overshoot the reward and the distance grows again past "
              "M = 8."),
        page="guidance",
        params={"gmethod": "svdd-exact", "gstrength": 2.0},
        claim="At α = 0.5 SVDD with the exact value goes from 3.248 at M = 1 to 0.125 at M = 32 from the tilted "
              "target (floor 0.094; SVDD-PM 0.329).",
        reads=r"SVDD, exact value [\d.]+ at M = 1 → ([\d.]+) at M = 32",
        expect=(0.05, 0.25),
        figure=_svdd_candidates,
        chart=4,
    ),
    Card(
        slug="terminal-snr-pulls-brightness",
        title="Starting from N(0, I) halves a bright target's mean",
        text=("Stable Diffusion's 50 leading steps start at √ᾱ = 0.076, where the noised data still carries signal, "
              "yet samplers start from pure N(0, I). The probability-flow ODE carries the start's standardised error "
              "to the data, so the mean brightness is pulled toward 0 and the spread shrinks, the more the wider the "
              "data."),
        page="starts",
        params={"snr_mean": 3.0, "snr_spread": 8.0},
        claim="From N(0, I) a mean brightness of 3.0 comes out as 1.45 (closed form 1.44), and a spread of 8 as 6.79.",
        reads=r"Mean brightness, N\(0, I\) start: ([\d.]+)",
        expect=(1.25, 1.65),
        figure=_terminal_snr,
        chart=0,
    ),
    Card(
        slug="dmcmc-lowest-state-bias",
        title="Picking the chain's lowest state biases Denoising MCMC",
        text=("Denoising MCMC runs a chain on (x, σ) and solves from the lowest noise level a round visits. Even with "
              "an exact Gibbs chain, picking the lowest state selects x too, so the solve starts from the wrong "
              "distribution and more levels do not help; starting from the state the round ends in keeps it exact."),
        page="starts",
        params={"dm_target": "gmm-1d-asym", "dm_pick": "last"},
        claim="At 16 levels exact Gibbs picked at its lowest state ends 0.695 from the target, picked at the round's "
              "end 0.070 (exact samples 0.102; the paper's chain 0.383; plain EDM Heun 0.205).",
        reads=r"DMCMC gibbs \(lowest\) ([\d.]+)",
        expect=(0.5, 0.9),
        figure=_dmcmc,
        chart=5,
    ),
    Card(
        slug="exact-kernels-vs-gaussian-steps",
        title="Two Gaussian steps blur the modes; two exact kernels do not",
        text=("A reverse step q(x_s | x_t) is a mixture with a bump per mode the step can still reach, and DDPM "
              "replaces it by one Gaussian at their average. With two steps most DDPM samples land between the modes, "
              "while draws from the exact kernels are exact in law at any number of steps."),
        page="few-steps",
        params={"fs_target": "gmm-1d-3modes"},
        claim="At 2 NFE DDPM's Gaussian kernels leave 75.2% of the samples between the modes; exact reverse kernels "
              "0.2%.",
        reads=r"DDPM Gaussian kernels\*\*: .*?2 NFE [\d.]+ \(([\d.]+)%\)",
        expect=(60.0, 90.0),
        figure=_kernels,
        chart=3,
    ),
    Card(
        slug="reflow-one-step-ring",
        title="Reflow samples the ring in one step; a solver cannot",
        text=("One step of DPM-Solver++(2M), of DDPM or of the first rectified flow from pure noise lands at the "
              "posterior mean of the whole ring, its centre. The 2-rectified flow, trained on the first flow's "
              "coupling, has nearly straight paths, so one Euler step of the network already lands on the ring, though "
              "23% of its samples fall between modes."),
        page="few-steps",
        params={"fs_target": "gmm-2d-ring8"},
        claim="At 1 NFE the 2-rectified network ends 0.148 from the ring (23% between modes); DPM-Solver++(2M) 2.086, "
              "every sample off the modes.",
        reads=r"2-rectified flow \(reflow\)\*\*: 1 NFE ([\d.]+)",
        expect=(0.08, 0.25),
        figure=_reflow_ring,
        chart=1,
    ),
]
