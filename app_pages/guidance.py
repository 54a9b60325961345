"""Guidance: what classifier-free guidance, minority guidance and SVDD really sample, each against the
distribution it intends, on exact mixtures."""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import streamlit as st

from app_pages import chart, controls, precomputed
from explorer.analyses import guidance as G
from explorer.analyses import guidance_methods as GM
from explorer.analyses import minority as Mi
from explorer.analyses import tilted as T
from explorer.figures import guidance_exact as F

URL = controls.URL
DEFAULT = GM.Setup()
HELP = {
    "cfg": "CFG's scale w: D = (1 + w) D(x | c) − w D(x). 0 is the conditional model; the intended target is "
           "p_w ∝ p(x | c)^(1+w) p(x)^(−w).",
    "minority": "The classifier scale w: the score plus w ∇ log p(rarest class | x_t). 0 is the unguided model; "
                "1 samples p(x0 | rarest class) exactly (with the exact classifier).",
    "svdd": "1/α, α the reward temperature: the intended target is p(x) exp(r(x)/α). 0 is the unguided model.",
}
HELP["gradient"] = HELP["svdd"]


@st.cache_data(max_entries=2, show_spinner=False)
def shipped() -> tuple:
    setup, sweep = GM.load()
    return setup, sweep, GM.load(name="svdd")[1], GM.load(name="agreement")[1]


@st.cache_resource(max_entries=4, show_spinner=False)
def classes(setup: GM.Setup) -> Mi.MinorityClasses:
    return GM.classes_for(setup)


@st.cache_resource(max_entries=2, show_spinner=False)
def classifier(setup: GM.Setup):
    return GM.shipped_classifier(setup)


@st.cache_resource(max_entries=16, show_spinner=False)
def intended(setup: GM.Setup, method: str, strength: float) -> GM.Intended:
    return GM.intended(setup, method, strength, classes(setup) if GM.family(method) == "minority" else None)


@st.cache_data(max_entries=32, show_spinner=False)
def run(setup: GM.Setup, method: str, strength: float) -> dict:
    """The method's samples and their measures: from the shipped sweep when it holds this run."""
    ship_setup, sweep = shipped()[:2]
    if setup == ship_setup:
        for r in sweep:
            if r["method"] == method and r["strength"] == strength:
                return r
    fam = GM.family(method)
    x = GM.run(setup, method, strength, classes(setup) if fam == "minority" else None, classifier(setup))
    return dict(method=method, strength=strength, **GM.measure(x, setup, intended(setup, method, strength)), samples=x)


@st.cache_data(max_entries=256, show_spinner=False)
def sweep_record(setup: GM.Setup, method: str, strength: float) -> dict:
    """One run of the sweep (cached per run, so the progress bar below can name each)."""
    fam = GM.family(method)
    return GM.record(setup, method, strength, classes(setup) if fam == "minority" else None, classifier(setup))


@st.cache_data(max_entries=16, show_spinner=False)
@precomputed.default("guidance")
def score_error(setup: GM.Setup, w: float) -> list:
    return T.score_error(setup.mixture(), setup.sched(), setup.label, w, seed=setup.seed)


@st.cache_data(max_entries=4, show_spinner=False)
def agreement(setup: GM.Setup) -> list | None:
    """The trained classifier against the exact posterior: shipped for the default set-up, else computed
    (None without a classifier)."""
    if setup == shipped()[0]:
        return shipped()[3]
    clf = classifier(setup)
    return None if clf is None else Mi.classifier_agreement(classes(setup), clf, seed=setup.seed)


@st.cache_data(max_entries=4, show_spinner=False)
def candidates(setup: GM.Setup, alpha: float) -> list:
    ship_setup, _, svdd_records, _ = shipped()
    if setup == ship_setup and alpha in GM.SVDD_ALPHAS:
        return [r for r in svdd_records if r["alpha"] == alpha]
    return GM.svdd_candidates(setup, alphas=(alpha,), n=min(setup.n, 500))


st.title("Guidance")
st.caption(
    "Guidance methods are judged by eye and by FID; on exact mixtures the distribution each one *intends* is known "
    "exactly, and so is what it really samples. CFG is said to sample p_w ∝ p(x | c)^(1+w) p(x)^(−w); minority guidance "
    "the rarest class of the minority score; SVDD p(x) exp(r(x)/α). Every control is in the URL."
)

raw = st.query_params.get("gstrength")  # read before the widget takes it (it drops what it cannot take)
with st.sidebar:
    st.header("Target")
    names = GM.target_names()
    target = st.selectbox("Target", names, names.index(DEFAULT.target), key="gtarget", bind=URL,
                          help="imbalanced-ring8: eight modes whose weights fall 8x around the ring, labelled in four "
                               "arcs. The presets are labelled as in the Solver lab.")
    try:
        labels = G.classes(GM.Setup(target=target).mixture())
    except ValueError:
        labels = [0]
    label = st.selectbox("CFG's class c", labels, labels.index(DEFAULT.label) if DEFAULT.label in labels else 0,
                         key="glabel", bind=URL)
    st.header("Method")
    methods = list(GM.METHODS)
    method = st.selectbox("Method", methods, key="gmethod", bind=URL,
                          help="\n".join(f"- **{k}**: {v}" for k, v in GM.METHODS.items()))
    st.caption(GM.METHODS[method])
    fam = GM.family(method)
    strength = st.number_input(f"Strength ({GM.SCALE_NAME[fam]})", value=2.0, step=0.5, key="gstrength", bind=URL,
                               help=HELP[fam])
    st.header("Reward (SVDD, gradient)")
    reward = st.selectbox("Reward r(x)", ["linear", "quadratic"], key="greward", bind=URL,
                          help="linear: r = u·x; quadratic: r = −|x − c|²/2, c on the circle through the farthest mode")
    angle = st.slider("Direction (degrees)", 0, 359, int(DEFAULT.angle), 15, key="gangle", bind=URL)
    st.header("Run")
    n = st.select_slider("Particles", [250, 500, 1000, 2000], DEFAULT.n, key="gn", bind=URL)
    seed = controls.seed()

try:
    if raw is not None and float(raw) != strength:
        raise ValueError
except ValueError:  # Streamlit falls back to the default on a value it cannot take (nan, inf, text): say so
    st.warning(f"The link's strength `{raw}` is not a finite number: showing {strength:g} instead.")
try:
    setup = GM.Setup(target, DEFAULT.schedule, int(label), reward, float(angle), int(n), int(seed)).check()
    strength = GM.check_strength(method, strength)
except ValueError as err:
    st.error(f"**Can't run this set-up.** {err}")
    st.stop()

# The samples over what they are meant to be.
left, right = st.columns([3, 2])
try:
    with st.spinner(f"Sampling {GM.METHODS[method]} at {GM.SCALE_NAME[fam]} = {strength:g}…"):
        want = intended(setup, method, strength)
        rec = run(setup, method, strength)
except ValueError as err:
    controls.report_core_error(err)
    st.stop()
chart.draw(F.over_density(want, rec["samples"], setup.mixture(),
                          title=f"{GM.METHODS[method]}, {GM.SCALE_NAME[fam]} = {strength:g}"), left)
with right:
    st.markdown(f"**Intended:** {want.name}")
    a, b = st.columns(2)
    a.metric("Distance to it", f"{rec['distance']:.3f}", help="Sliced W2 between the samples and exact draws of the intended target.")
    b.metric("Finite-sample floor", f"{rec['floor']:.3f}", help="The same distance for exact draws: what a perfect sampler scores.")
    a.metric("Mass on favoured modes", f"{rec['mass_favoured']:.3f}", f"{rec['mass_favoured'] - rec['target_mass_favoured']:+.3f} vs intended",
             delta_color="off", help="The modes the intended target gives more mass than the unguided target.")
    b.metric("Off the support", f"{rec['off_support']:.1%}", help="Samples beyond 3 standard deviations of every mode.")
    if fam == "minority" and np.all(np.isfinite(rec["samples"])):
        c = classes(setup)
        a.metric("In the rarest class", f"{np.mean(c.classify(rec['samples']) == c.rarest):.1%}",
                 help=f"Samples whose minority score falls in the rarest of the {c.n_classes} quantile classes "
                      f"(1/{c.n_classes} of the unguided target by construction).")
    gap = np.asarray(rec["target_masses"]) - np.asarray(rec["masses"])
    if np.all(np.isfinite(gap)):
        k = int(np.argmax(gap))
        st.markdown(f"**Most under-sampled mode:** mode {k} holds {rec['target_masses'][k]:.1%} of the intended target "
                    f"and {rec['masses'][k]:.1%} of the samples.")
    if fam == "cfg":
        st.info("**Where CFG differs from p_w.** CFG follows (1 + w) ∇log p_t(x | c) − w ∇log p_t(x), which equals the "
                "score of p_w only at t = 0. At every noise level in between it is not the score of the noised p_w "
                "(the figure below measures by how much), so its samples are not p_w's: p_w keeps the class's modes and "
                "their shape, while CFG pushes samples away from the other classes, off the modes as w grows "
                "(the ODE much more than the SDE).")
    elif fam == "minority":
        st.info("The class is a function of x0, so p(x0) p(c | x0)^w = p(x0 | c) for every w > 0: the intended target "
                "does not move with w. The exact classifier at w = 1 samples it; below 1 is under-, above 1 over-guided.")
    else:
        st.info("SVDD keeps one of M candidates per step, drawn with weights exp(v/α); with the exact soft value and "
                f"many candidates it samples p(x) exp(r/α). The sweep uses M = {GM.SVDD_M}.")

# Every method against its strength.
st.subheader("Every method against its strength")
ship_setup = shipped()[0]
if setup == ship_setup:
    records = shipped()[1]
    st.caption("The default set-up's sweep ships with the app (`python -m explorer.analyses.guidance_methods` made it).")
else:
    wanted = st.toggle("Sweep every method on this set-up (about a minute)", key="gsweep", bind=URL)
    records = None
    if wanted:
        todo = GM.jobs(setup, classifier=classifier(setup))
        bar, records = st.progress(0.0, text="Sweeping every method…"), []
        for k, (m, v) in enumerate(todo):
            bar.progress(k / len(todo), text=f"Sweeping every method ({k + 1}/{len(todo)}): {GM.METHODS[m]} at "
                                             f"{GM.SCALE_NAME[GM.family(m)]} = {v:g}…")
            records.append(sweep_record(setup, m, v))
        bar.empty()
    else:
        st.info("Turn the sweep on to run every method at every strength on this set-up.")
if records:
    chart.draw(F.strength_sweep(records))
    st.caption("Each method is measured against its own intended target. Strength 0 is the unguided model (CFG: the "
               "conditional model). Dotted: the floor set by the finite sample (top) and the intended target's own mass "
               "(middle).")

# CFG's score per noise level.
st.subheader("CFG's score against the score of the noised p_w")
w_score = strength if fam == "cfg" else 4.0
with st.spinner(f"Importance sampling the noised p_w at w = {w_score:g}…"):
    chart.draw(F.score_error(score_error(setup, w_score), w_score))
st.caption("At each noise level, 200 points drawn exactly from the noised p_w; its score by importance sampling "
           "(512 draws from the exact conditional posterior, weighted by p(c | x0)^w, the conditional posterior mean as "
           "control variate), the error bar its standard error. At σ → 0 the two agree (the error is the bar); in "
           "between, CFG's score is off by as much as the score itself.")

solver_lab = "solver-lab?" + urlencode({"target": "gmm-2d-ring8", "guided": "true", "w": "15", "nfes": "6, 12, 24",
                                         "solvers": ["ddim", "dpmpp-2m", "dpm-solver-3"]}, doseq=True)
st.markdown(f"At large w CFG is also hard to *solve*: high-order solvers diverge where DDIM degrades gracefully. "
            f"[Open the Solver lab with CFG at w = 15]({solver_lab}).")

# Minority guidance: the classifier.
st.subheader("Minority guidance: the trained classifier against the exact class posterior")
with st.spinner("Comparing the trained classifier with the exact posterior…"):
    agree = agreement(setup)
if agree is None:
    st.info("A trained classifier ships for the default target only (training one takes about 20 s: "
            "`ex.minority.train_classifier`). The exact class posterior is used on this target.")
else:
    chart.draw(F.classifier_agreement(agree))
    st.caption(f"The paper's pipeline: minority score at its perturbation level, {Mi.N_CLASSES} quantile classes, a small "
               f"noisy classifier trained by cross-entropy ({GM.CLASSIFIER_STEPS} steps on 20,000 draws). The exact "
               "posterior: Monte Carlo over each component of the mixture's posterior p(x0 | x_t), 64 draws a component.")

# SVDD per number of candidates.
st.subheader("SVDD per number of candidates")
alpha = 1.0 / strength if fam in ("svdd", "gradient") and strength > 0 else GM.SVDD_ALPHAS[-1]
with st.spinner(f"SVDD per number of candidates M = {', '.join(map(str, GM.SVDD_MS))} at α = {alpha:g}, and gradient "
                "guidance…"):
    cand = candidates(setup, float(alpha))
chart.draw(F.svdd_vs_m(cand))
st.markdown(GM.svdd_summary(cand))
st.caption("Against the closed-form tilted mixture. M = 1 is the unguided sampler. With the exact soft value SVDD "
           "approaches the target as M grows; the posterior-mean value (SVDD-PM) and the reward gradient at the "
           "posterior mean overshoot the reward. Gradient-Free Classifier Guidance is not here: its rule could not be "
           "pinned down from what is published (no official code; see explorer/analyses/guidance_methods.py).")
