"""Starts: where sampling starts. Stable Diffusion's last step is not pure noise and samplers start from
N(0, I) anyway (what it costs, and three fixes: the exact start, zero terminal SNR with trailing steps,
One More Step's extra step); Denoising MCMC, which starts the solve from a chain on (x, noise level);
optimal boundary conditions, one fixed start for every condition. All on exact models: no torch here."""

from __future__ import annotations

import streamlit as st

import explorer as ex
from app_pages import chart, controls, precomputed
from explorer.analyses import boundary as B
from explorer.analyses import dmcmc as M
from explorer.analyses import terminal_snr as T
from explorer.figures import starts as F

URL = controls.URL
SOLVERS = ("ddim", "ddpm", "dpmpp-2m", "heun", "euler")
DMCMC_TARGETS = ("gmm-1d-asym", "gmm-1d-3modes", "gmm-2d-ring8", "gmm-2d-two-aniso")
LABELLED = ("gmm-2d-ring8", "gmm-2d-grid25", "gmm-2d-checkerboard")
BOUNDARY_SCHEDULES = ("vp-cosine", "vp-linear", "edm", "rectified-flow")
SWEEP_N = 1000  # samples per point of the DMCMC sweep (250 chains, 4 rounds)


@st.cache_data(max_entries=32, show_spinner=False)
@precomputed.default("starts")
def starts(target_args: tuple, n_steps: int, spacing: str, solver: str, n: int, seed: int, oms_variance: str) -> list:
    """compare_starts on the brightness target, without the trajectories (the page draws the samples)."""
    rows = T.compare_starts(T.brightness_target(*target_args), n_steps, spacing, solver, n, seed, oms_variance)
    return [{k: v for k, v in r.items() if k != "traj"} for r in rows]


@st.cache_data(max_entries=32, show_spinner=False)
@precomputed.default("starts")
def starts_table(target_args: tuple, n_steps: int, spacing: str, solver: str, n: int, seed: int, oms_variance: str) -> list:
    rows = starts(target_args, n_steps, spacing, solver, n, seed, oms_variance)
    return T.summary(rows, T.brightness_target(*target_args), solver, seed)


@st.cache_data(max_entries=16, show_spinner=False)
def chains(name: str, variant: str, step: float, n_skip: int, pick: str, n_chains: int, seed: int) -> M.Chains:
    return M.run_chains(ex.targets.get(name), n_chains, 4, n_skip, variant, step=step, pick=pick, seed=seed)


@st.cache_data(max_entries=256, show_spinner=False)
@precomputed.default("starts")
def dmcmc_point(name: str, what, n_sigmas: int, step: float, n_skip: int, n: int, seed: int) -> dict:
    """One point of the error-vs-NFE sweep, cached on its own so that the progress bar moves between points."""
    target = ex.targets.get(name)
    if isinstance(what, str):
        return M.measure(target, what, n_sigmas, n, n_skip, seed=seed)
    return M.measure(target, what, n_sigmas, n, n_skip, seed=seed,
                     chains=chains(name, what[0], step, n_skip, what[1], max(1, n // 4), seed))


@st.cache_data(max_entries=16, show_spinner=False)
@precomputed.default("starts")
def boundary(name: str, schedule: str, criterion: str, n_candidates: int, n_steps: int, n_reference: int, seed: int):
    target = ex.guidance.labelled(name)
    res = B.find(target, ex.schedules.get(schedule), n_candidates, criterion, n_steps=n_steps, n_reference=n_reference, seed=seed)
    return res, B.diversity(res, target)


st.title("Starts")
st.caption(
    "Where sampling starts, on exact targets: a start that is not the true p_T, and three fixes (*One More Step*; "
    "*Common Diffusion Noise Schedules and Sample Steps are Flawed*); a Markov chain on (x, noise level) that starts the "
    "solve low (*Denoising MCMC*); one fixed start for every condition (*Solving Diffusion ODEs with Optimal Boundary "
    "Conditions*). Every control is in the URL."
)

with st.sidebar:
    st.header("Brightness target")
    kind = st.radio("Data", ["gaussian", "levels"], horizontal=True, key="snr_data", bind=URL,
                    help="gaussian: N((mean, 0), diag(spread², 0.5²)), every cost in closed form; levels: five modes from dark to "
                         "bright with the same mean and spread.")
    mean = st.slider("Mean brightness", -3.0, 3.0, 1.5, 0.1, key="snr_mean", bind=URL)
    spread = st.slider("Brightness spread (std)", 0.5, 8.0, 4.0, 0.1, key="snr_spread", bind=URL)
    st.header("Sampler")
    solver = st.selectbox("Solver", SOLVERS, key="snr_solver", bind=URL,
                          help="DDIM and the deterministic solvers follow the probability-flow ODE (dashed: its exact map); DDPM the "
                               "reverse SDE, which forgets the start faster.")
    n_steps = st.slider("Steps", 5, 100, 50, key="snr_steps", bind=URL)
    spacing = st.selectbox("Timesteps", T.SPACINGS, key="snr_spacing", bind=URL,
                           help="diffusers' DDIM placements on the 1000-step table. leading (Stable Diffusion's config, offset 1) "
                                "starts at 981 for 50 steps and 901 for 10, never at 999; trailing starts at 999.")
    oms_variance = st.radio("One More Step's noise", ["posterior", "oms-code"], horizontal=True, key="oms_noise", bind=URL,
                            help="posterior: DDPM's std √(1 − ᾱ_T); oms-code: the official oms_step scales the noise by the "
                                 "variance 1 − ᾱ_T instead of its square root.")
    n = controls.particles(4000, key="snr_particles", high=20000)
    seed = controls.seed()

# 1. Terminal SNR.
st.subheader("A start that is not p_T")
target_args = (kind, float(mean), float(spread))
setup = (target_args, int(n_steps), spacing, solver, int(n), int(seed), oms_variance)
try:
    rows = starts(*setup)
except Exception as err:  # bad input or a bug in the core: a message, never a traceback
    controls.report_core_error(err)
    st.stop()
target = T.brightness_target(*target_args)
chart.draw(F.brightness(rows, target, "sde" if solver == "ddpm" else "ode"))
with st.spinner("Measuring each start against p₀…"):
    table = starts_table(*setup)
naive = next(r for r in table if r["start"] == "N(0, I) start")
cols = st.columns(4)
cols[0].metric("√ᾱ where it starts", f"{naive['sqrt_abar_start']:.4f}", help="Stable Diffusion's table ends at ᾱ_999 = 0.00466.")
cols[1].metric("Mean brightness, N(0, I) start", f"{naive['mean']:.2f}", delta=f"{naive['mean'] - naive['true_mean']:+.2f} vs p₀",
               delta_color="off", delta_arrow="off")
cols[2].metric("Std, N(0, I) start", f"{naive['std']:.2f}", delta=f"{naive['std'] - naive['true_std']:+.2f} vs p₀", delta_color="off",
               delta_arrow="off")
oms = next(r for r in table if r["start"] == "One More Step")
cols[3].metric("Std, One More Step", f"{oms['std']:.2f}", delta=f"{oms['std'] - oms['true_std']:+.2f} vs p₀", delta_color="off",
               delta_arrow="off")
measured = ("mean", "true_mean", "std", "true_std", "closed_form_mean", "closed_form_std", "w2_to_p0", "mode_mass_error")
controls.table(table, formats={"t_start": ".0f", "sqrt_abar_start": ".4f", **{k: ".3f" for k in measured}},
               labels={"t_start": "starts at t", "sqrt_abar_start": "√ᾱ there", **{k: k.replace("_", " ") for k in measured}})
st.caption(
    "For Gaussian data the probability-flow ODE keeps (x_t − α_t m)/r_t fixed, r_t² = α_t² s + σ_t², so from N(0, I) the "
    "sample's mean is m(α₀ − α_T r₀/r_T) and its std r₀/r_T: pulled toward 0 the more, the wider the data (dashed: these "
    "closed forms). The exact start and zero terminal SNR (a table rescaled so that ᾱ_T = 0, trailing steps from pure noise; "
    "a real model must be retrained on it, the exact one is right on any table) land on p₀. One More Step's extra step with "
    "its MSE-optimal prediction from pure noise, E[x0], gets the mean right but keeps the spread (1 − ᾱ_T) I, missing "
    "ᾱ_T Cov(x0): its std stays shrunk by σ_T/r_T."
)
with st.expander("Signal left where each grid starts"):
    chart.draw(F.terminal_signal(int(n_steps)))

# 2. Denoising MCMC.
st.subheader("Denoising MCMC: a chain on (x, σ), then a short solve")
cols = st.columns([2, 1, 1, 1, 1])
dm_target = cols[0].selectbox("Target", DMCMC_TARGETS, key="dm_target", bind=URL)
paper_step = cols[1].number_input("η (paper)", 0.001, 1.0, 0.05, 0.01, format="%.3f", key="eta_paper", bind=URL,
                                  help="The paper's fixed Langevin step: x ← x + η/2 s + √η z, whatever the level.")
gibbs_step = cols[2].number_input("η (Gibbs)", 0.01, 2.0, 0.5, 0.05, key="eta_gibbs", bind=URL,
                                  help="Exact Gibbs: a Metropolis-adjusted Langevin step of size η σ² at the chain's level.")
n_skip = cols[3].slider("Sweeps per sample", 1, 30, 10, key="dm_sweeps", bind=URL,
                        help="n_skip: Gibbs sweeps between two samples of a chain (each a score call, two for Gibbs).")
pick = cols[4].radio("Gibbs: solve from", ["last", "lowest"], key="dm_pick", bind=URL,
                     help="lowest: each round's lowest-level state, as the paper does; last: the state the round ends in, which "
                          "keeps exact Gibbs exact (picking the lowest level selects x too).")
try:
    with st.spinner(f"Running {SWEEP_N // 4} chains of each variant…"):
        ch = {"paper": chains(dm_target, "paper", float(paper_step), int(n_skip), "lowest", SWEEP_N // 4, int(seed)),
              f"gibbs ({pick})": chains(dm_target, "gibbs", float(gibbs_step), int(n_skip), pick, SWEEP_N // 4, int(seed))}
except Exception as err:
    controls.report_core_error(err)
else:
    dm = ex.targets.get(dm_target)
    tabs = st.tabs([f"Chain: {k}" for k in ch])
    for tab, c in zip(tabs, ch.values()):
        with tab:
            chart.draw(F.chain(c, dm))
    chart.draw(F.level_histogram(ch))
    st.caption(
        "The paper's chain takes the level of highest posterior p(σ | x) (its noise classifier's argmax) and a fixed step; "
        "exact Gibbs draws the level from p(σ | x), exact for a mixture, and corrects its Langevin step, so its states keep "
        "the joint π(σ) p_σ(x): their levels follow the prior (uniform over the grid), the paper's pile up low."
    )
    bar = st.progress(0.0, text="Sweeping plain ODE/SDE and DMCMC against NFE…")
    records, steps = [], {"paper": float(paper_step), "gibbs": float(gibbs_step)}
    try:
        runs = M.nfe_runs()
        for i, (label, what, ns) in enumerate(runs):  # each point cached: the bar moves between them
            bar.progress(i / len(runs), text=f"Running {label}, {ns} levels ({i + 1}/{len(runs)})…")
            step = steps.get(what[0]) if not isinstance(what, str) else 0.0
            records.append(dmcmc_point(dm_target, what, ns, step, int(n_skip), SWEEP_N, int(seed)))
        fl = M.floor(dm, SWEEP_N, int(seed))
    except Exception as err:
        controls.report_core_error(err)
    else:
        chart.draw(F.dmcmc_vs_nfe(records, fl))
        st.markdown(M.summary(records, fl))
        st.caption(
            f"{SWEEP_N} samples each; NFE per sample counts the sweeps (one score call each, two with the Metropolis step) and the "
            f"EDM solve from the picked level (Heun, Karras levels down to σ = {M.SIGMA_MIN}, then onto 0). Plain: EDM's "
            f"sampler from σ = {M.SIGMA_MAX:g} (SDE: the demo's churn). Dashed grey: exact samples of the same size."
        )
    finally:
        bar.empty()

# 3. Optimal boundary conditions.
st.subheader("One start for every condition")
cols = st.columns(5)
bc_target = cols[0].selectbox("Labelled target", LABELLED, key="bc_target", bind=URL,
                              help="ring: four arcs of two modes (rotations of one another); grid: five rows (translations); "
                                   "checkerboard: eight cells of four modes.")
bc_schedule = cols[1].selectbox("Schedule", BOUNDARY_SCHEDULES, key="bc_schedule", bind=URL)
criterion = cols[2].radio("Loss", B.CRITERIA, key="bc_loss", bind=URL, horizontal=True,
                          help="mse: E‖h − x0‖² over x0 ~ p(x0 | c) (exact: ‖h − m_c‖² + tr Cov_c); nll: −log p(h | c), "
                               "the output of highest density.")
n_candidates = cols[3].select_slider("Candidates", [32, 64, 128, 256, 512], 256, key="bc_candidates", bind=URL)
n_reference = cols[4].select_slider("Reference pairs", [0, 8, 32, 128, 512], 32, key="bc_reference", bind=URL,
                                    help="The paper's reference set of (x0, c) pairs: the search by their mean loss, beside the exact one.")
try:
    with st.spinner(f"Solving the conditional ODE from {n_candidates} starts under every condition…"):
        res, div = boundary(bc_target, bc_schedule, criterion, int(n_candidates), 10, int(n_reference), int(seed))
except Exception as err:
    controls.report_core_error(err)
else:
    bt = ex.guidance.labelled(bc_target)
    chart.draw(F.boundary(res, bt))
    cols = st.columns(4)
    cols[0].metric("Agreement between conditions", f"{res.agreement():.2f}",
                   help="Mean Spearman correlation of the conditions' rankings of the candidates (1: they agree on the best start).")
    cols[1].metric("Largest regret of sharing", f"{res.regret().max():.3f}",
                   help="loss_c(shared best) − loss_c(c's own best), the worst condition.")
    cols[2].metric("Loss: shared start vs random", f"{res.mean_loss[res.best]:.3f}", delta=f"{res.random_loss() @ res.weights:.3f} random",
                   delta_color="off", delta_arrow="off")
    if res.reference_best is not None:
        cols[3].metric(f"Search on {n_reference} reference pairs", f"{res.mean_loss[res.reference_best]:.3f}",
                       delta=f"{res.mean_loss[res.reference_best] - res.mean_loss[res.best]:+.3f} vs exact", delta_color="off",
                       delta_arrow="off")
    chart.draw(F.boundary_ranks(res))
    controls.table([{**d, "regret": float(r), "rank_of_shared": int(k)} for d, r, k in zip(div, res.regret(), res.rank_of_best())],
                   formats={k: ".3f" for k in ("spread_random", "spread_shared", "loss_random", "loss_shared", "loss_own_best", "regret")},
                   labels={k: k.replace("_", " ") for k in (*div[0], "rank_of_shared")})
    st.caption(
        "A shared start gives each condition one output: of its modes it reaches one, and two draws are 0 apart (random "
        "starts: all modes, spread as listed). With mse the best output is the one nearest the condition's mean, which may lie "
        "between modes; nll picks a mode's centre. When the conditions are translations of one another (the grid's rows) "
        "they agree on the best start; rotations (the ring's arcs) do not."
    )
