"""Mode interpolation: a learned denoiser smooths the true one's jumps between modes, so samples
land between modes (hallucinations); the variance of the x0-prediction over the last steps flags
them; filtering on it removes most of them (Aithal et al.)."""

from __future__ import annotations


import numpy as np
import streamlit as st

import explorer as ex
from app_pages import chart, controls, precomputed
from explorer import hallucination as H
from explorer.figures import hallucination as FH
from explorer.learned import torch_threads

URL = controls.URL
PAPER = "Understanding Hallucinations in Diffusion Models through Mode Interpolation"
MODELS = ("gmm-1d-3modes", "gmm-2d-grid25")
PREVIEW = 100  # samples in a new set-up's first view (0.25 s on the 1D model)


@st.cache_resource(max_entries=4, show_spinner=False)
def load(name: str):
    return ex.models.load_pretrained(name)


def _exact(name: str):
    model = load(name)
    return ex.AnalyticModel(model.target, model.schedule)


def _preview(n: int, **_) -> bool:
    """The default view's preview (n <= PREVIEW samples) is shipped in data/precomputed/mode_interpolation.npz;
    its full set is sampled live while the preview shows."""
    return n <= PREVIEW


@st.cache_data(max_entries=16, show_spinner=False)
@precomputed.default("mode_interpolation", only=_preview)
def run(name: str, exact: bool, solver: str, n_steps: int, n: int, seed: int, t_start: int | None = None) -> H.Run:
    model = _exact(name) if exact else load(name)
    with torch_threads(1):  # Streamlit reruns in a fresh thread: 2 torch threads there ran 2x slower
        return H.sample_run(model, n, seed=seed, solver=solver, n_steps=n_steps, t_start=t_start)


@st.cache_data(max_entries=64, show_spinner=False)
@precomputed.default("mode_interpolation", only=_preview)
def analysis(name: str, solver: str, n_steps: int, n: int, seed: int, window: int, k: float,
             t_start: int | None = None) -> dict:
    """Per-sample flags and scores, the trade-off curve, a default threshold (cheap once sampled)."""
    r = run(name, False, solver, n_steps, n, seed, t_start)
    target = load(name).target
    bad = H.hallucinated(r.samples, target, k)
    scores = H.trajectory_variance(r.denoised, window)
    return {"bad": bad, "scores": scores, "curve": H.tradeoff(scores, bad),
            "threshold": H.choose_threshold(scores, bad) if bad.any() and (~bad).any() else float(np.median(scores))}


@st.cache_data(max_entries=8, show_spinner=False)
def generations(name: str, filters: tuple, n_gen: int, n_samples: int, train_steps: int, sample_steps: int,
                seed: int, _progress=None) -> dict:
    model = load(name)
    target, betas = model.target, model.config["schedule"]  # each generation trains on the shipped model's betas
    t0 = H.pure_noise_t(model.schedule)  # and samples from where x_t is pure noise
    out = {}
    for j, f in enumerate(filters):
        def report(frac, msg, j=j, f=f):
            if _progress:
                _progress((j + frac) / len(filters), f"{f}: {msg}")
        out[f] = H.recursive_training(
            target, n_gen, n_samples, filter=None if f == "none" else f, train_kwargs={"steps": train_steps, "batch_size": 512, **betas},
            sample_kwargs={"n_steps": min(sample_steps, t0 + 1), "t_start": t0}, seed=seed, progress=report,
        )
    return out


st.title("Mode interpolation")
st.caption(
    f"After *{PAPER}* (Aithal et al.). A network trained on a mixture smooths the exact denoiser's jumps "
    "between modes, so some samples land where the data has none. Every control is in the URL."
)

with st.sidebar:
    st.header("Model")
    name = st.selectbox("Pretrained model", MODELS, key="model", bind=URL,
                        help="A small eps-prediction MLP trained with DDPM's loss on the mixture (data/).")
    solver = st.radio("Sampler", ("ddpm", "ddim"), key="sampler", bind=URL, horizontal=True,
                      help="DDPM (the paper's; fixed-large variance) or deterministic DDIM on the same model.")
    n_steps = controls.number(
        "Steps", "sample_steps", 1000,
        "Grid of integer timesteps from 999 to 0 (1000: every one, as the paper). On the 1D model's betas (the "
        "paper's) the modes form in the last ~10 timesteps: with fewer steps DDPM's last jumps are so large "
        "that even the exact denoiser lands between modes (250 steps: 2%, 100: 15-18%).", 10, 1000)
    skip = st.checkbox("Skip the pure-noise steps", True, key="skip_noise", bind=URL,
                       help="Start from N(0, I) where alpha(t) <= 0.001 (x_t is pure noise to 3 decimals) instead of "
                            "at t = 999: the same grid below it, about 3x faster. Untick for the full run.")
    n = controls.number("Samples", "samples", 1000,
                        "The shipped 1D model puts about 0.45% of its samples beyond 3 std (the exact denoiser about 0.15%, "
                        "the target's tails 0.27%): a few per thousand. Raise this for steadier rates and filter fractions "
                        "(the measured figures use 20,000; about 2 s per 1,000).", 100, 20000)
    seed = controls.seed("sample_seed")
    st.header("Detection")
    k = st.slider("Support: k standard deviations", 1.0, 6.0, H.K_STD, 0.5, key="k", bind=URL,
                  help="A sample is in support if within k std (Mahalanobis) of some mode.")

try:
    model = load(name)
except Exception as err:  # no such file shipped, torch missing...
    st.error(f"**Can't load the pretrained model {name!r}** ({type(err).__name__}): {err}")
    st.stop()
target = model.target
one_d = target.dim == 1

t_top = int(round(model.schedule.t_max))
t_start = H.pure_noise_t(model.schedule) if skip else t_top
# the same step density below t_start: every timestep from it when Steps = 1000
n_run = max(2, min(t_start + 1, round(int(n_steps) * (t_start + 1) / (t_top + 1))))
# A new set-up shows a preview of PREVIEW samples first, then samples the rest
# at the end of the page and reruns with all of them (cached from then on).
full = (name, solver, n_run, int(n), int(seed), t_start)
sampled = st.session_state.setdefault("_sampled", set())
n_shown = int(n) if full in sampled else min(int(n), PREVIEW)
with st.spinner(f"Sampling {n_shown} points with {n_run}-step {solver} from t = {t_start}, learned and exact…"):
    try:
        learned = run(name, False, solver, n_run, n_shown, int(seed), t_start)
        exact = run(name, True, solver, n_run, n_shown, int(seed), t_start)
    except ValueError as err:  # e.g. DDIM from t = 999 on the paper's betas: x0 = (x - sigma eps) / 4e-24
        controls.report_core_error(err)
        st.stop()

rate_l, rate_e = H.hallucination_rate(learned.samples, target, k), H.hallucination_rate(exact.samples, target, k)
tails = H.tail_mass(k, target.dim)
cols = st.columns(3)
cols[0].metric("Hallucinated (learned)", f"{rate_l:.2%}", help="Samples beyond k std of every mode.")
cols[1].metric("Hallucinated (exact denoiser)", f"{rate_e:.2%}", delta=f"target's own tails: {tails:.2%}",
               delta_color="off", delta_arrow="off")
if n_shown < int(n):
    st.info(f"A first look from {n_shown} of the {int(n)} samples: the rest are being sampled (below), "
            "then every figure redraws with all of them.", icon=":material/hourglass_top:")
cols[2].metric("Sampling time", f"{learned.wall_time:.1f} s",
               delta=f"{n_run} steps from t = {t_start}" if t_start < t_top else f"{n_run} steps", delta_color="off",
               delta_arrow="off", help="Model evaluations per sample: one per step.")


def _mode(i: int) -> str:
    return "beyond" if i < 0 else f"{target.means[i, 0]:g}" if one_d else f"({target.means[i, 0]:g}, {target.means[i, 1]:g})"


landing = H.landing_counts(learned.samples, target, k)
if landing:
    where = "; ".join(f"{_mode(i)} – {_mode(j)}: {c}" for (i, j), c in list(landing.items())[:6])
    st.caption(f"**Where the learned model's hallucinations land** (between modes; {'neighbours' if one_d else 'the two nearest'}): "
               f"{where}.")

@st.fragment
def denoiser_at_t():
    """The learned and exact denoisers at a chosen timestep (a fragment: its slider redraws this figure alone)."""
    sig = np.asarray(model.schedule.sigma(np.arange(t_top + 1.0)))
    t_jump = int(np.searchsorted(sig, 0.06))  # noise just above the modes' std 0.05: the exact denoiser jumps
    t = st.slider("t (timestep) for the denoiser", 0, t_top, t_jump, key="denoiser_t", bind=URL)
    chart.draw(FH.denoiser_1d(model, _exact(name), float(t)))


if one_d:
    st.subheader("The cause: the learned denoiser is a ramp where the exact one jumps")
    denoiser_at_t()
    left, right = st.columns(2)
    chart.draw(FH.sample_histogram(learned.samples, target, k, f"Learned: {rate_l:.2%} hallucinated"), left)
    chart.draw(FH.sample_histogram(exact.samples, target, k, f"Exact: {rate_e:.2%} hallucinated"), right)
else:
    left, right = st.columns(2)
    chart.draw(FH.samples_2d(learned.samples, target, k, f"Learned: {rate_l:.2%} hallucinated"), left)
    chart.draw(FH.samples_2d(exact.samples, target, k, f"Exact: {rate_e:.2%} hallucinated"), right)


@st.fragment
def detection():
    """The score, its window and the filter's threshold (a fragment: its sliders redraw this section alone)."""
    st.subheader("Detection: the variance of the x0-prediction over the last steps")
    window = st.slider("Window (last x0-predictions)", 2, 100, H.WINDOW, key="window", bind=URL,
                       help="The score is the variance of the x0-prediction over this many last steps "
                            "(the paper: 10 of 1000 on its betas linspace(0.001, 0.2), which the shipped 1D model uses).")
    if one_d:
        chart.draw(FH.x0_trajectories(learned, target, k, window=int(window)))
    a = analysis(name, solver, n_run, n_shown, int(seed), int(window), float(k), t_start)
    scores, bad = a["scores"], a["bad"]
    lo = float(np.floor(np.log10(max(scores.min(), 1e-30)) * 10) / 10)
    hi = float(np.ceil(np.log10(max(scores.max(), 1e-30)) * 10) / 10)
    default = float(np.clip(round(np.log10(a["threshold"]), 2), lo, hi))
    log_th = st.slider("log10 threshold (keep samples at or below)", lo, max(hi, lo + 0.1), default, 0.01,
                       key="threshold", bind=URL,
                       help=f"Default: the threshold maximising removed + kept on this run ({a['threshold']:.3g}).")
    c = H.filter_counts(scores, bad, 10.0 ** log_th)
    m = st.columns(4)
    m[0].metric("Hallucinations removed", f"{c['removed_hallucinations']} / {c['hallucinations']}",
                delta=f"{c['removed_fraction']:.1%} (paper: >95%)", delta_color="off", delta_arrow="off")
    m[1].metric("In-support kept", f"{c['kept_in_support']} / {c['in_support']}",
                delta=f"{c['kept_fraction']:.1%} (paper: 96%)", delta_color="off", delta_arrow="off")
    m[2].metric("Hallucination rate after", f"{c['rate_after']:.2%}", delta=f"before: {c['rate_before']:.2%}",
                delta_color="off", delta_arrow="off")
    m[3].metric("Samples kept", f"{c['kept']} / {c['n']}")
    if c["hallucinations"] and c["in_support"] and c["kept"]:
        st.caption(f"At this threshold the filter removes {c['removed_fraction']:.0%} of the hallucinations and keeps "
                   f"{c['kept_fraction']:.0%} of the in-support samples: the hallucination rate falls from "
                   f"{c['rate_before']:.2%} to {c['rate_after']:.2%}.")
    left, right = st.columns(2)
    chart.draw(FH.score_histogram(scores, bad, 10.0 ** log_th), left)
    chart.draw(FH.tradeoff_curve(a["curve"], c), right)


detection()

if n_shown < int(n):  # the preview is on screen: sample the full set, then redraw with it
    with st.spinner(f"Sampling all {int(n)} points ({n_run} steps, learned and exact)…"):
        try:
            run(name, False, solver, n_run, int(n), int(seed), t_start)
            run(name, True, solver, n_run, int(n), int(seed), t_start)
        except ValueError as err:
            controls.report_core_error(err)
            st.stop()
    sampled.add(full)
    st.rerun()

st.subheader("Recursive training: each generation trained on the last one's samples")
st.caption("Generation g+1 trains on samples of generation g: all of them (none), the lowest-variance "
           "80% of a larger draw (variance), or a random 80% of it (random: the same number dropped). "
           "Small defaults so it finishes quickly; raise them for the paper's regime.")
with st.form("gens"):
    g_cols = st.columns(5)
    n_gen = g_cols[0].number_input("Generations", 1, 10, 2, key="gens", bind=URL)
    g_n = g_cols[1].number_input("Samples per generation", 100, 20000, 500, 100, key="g_n", bind=URL)
    g_train = g_cols[2].number_input("Training steps", 50, 20000, 300, 50, key="g_train", bind=URL)
    g_steps = g_cols[3].number_input("Sampling steps", 10, 1000, 364, 10, key="g_steps", bind=URL,
                                     help="From where x_t is pure noise (t = 363 on the paper's betas): 364 is every timestep.")
    g_filters = g_cols[4].multiselect("Filters", ("none", "variance", "random"), ("variance", "random"),
                                      key="g_filters", bind=URL)
    start = st.form_submit_button("Run generations")
if start or st.session_state.get("gens_done"):
    if not g_filters:
        st.warning("Choose at least one filter.")
    else:
        bar = st.progress(0.0, "starting…")
        results = generations(name, tuple(g_filters), int(n_gen), int(g_n), int(g_train), int(g_steps), int(seed),
                              _progress=lambda f, msg: bar.progress(min(max(f, 0.0), 1.0), msg))
        bar.empty()
        st.session_state["gens_done"] = True
        chart.draw(FH.generations(results))
