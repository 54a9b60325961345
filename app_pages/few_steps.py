"""Few steps: samplers that change what a step is, at 1, 2, 4 and 8 NFE on exact mixtures. Exact reverse
kernels (exact in law at any NFE) against DDPM's Gaussian kernels and a good ODE solver, the exact one-step
flow map (the ideal consistency model), rectified flow and reflow, and the Light Schrodinger Bridge. The page
opens on the shipped table (data/few-steps.npz, made by `python -m explorer.analyses.few_step_compare`);
"Recompute" reruns it live at the chosen sample size and seed."""

from __future__ import annotations

import numpy as np
import streamlit as st

import explorer as ex
from app_pages import chart, controls
from explorer.analyses import few_step_compare as C
from explorer.analyses import lightsb as L
from explorer.analyses import reflow as R
from explorer.figures import few_steps as F

URL = controls.URL


@st.cache_resource(show_spinner=False)
def table() -> dict:
    return C.load_table()


@st.cache_data(max_entries=8, show_spinner=False)
def live(name: str, n: int, seed: int) -> tuple:
    sb = table()["lightsb"][name][table()["meta"]["targets"][name]["lightsb_epsilon_in_rows"]]
    bar = st.progress(0.0, text="Running each method at 1, 2, 4 and 8 NFE…")
    rows = C.compare(name, n=n, seed=seed, sb=sb, ot_map=table()["dpm_ot"][name],
                     progress=lambda i, k, s: bar.progress(i / k, text=f"Ran {s}"))
    bar.empty()
    return [{k: v for k, v in r.items() if k != "sample"} for r in rows], [r["sample"] for r in rows]


@st.cache_data(max_entries=16, show_spinner=False)
def bridge_paths(n_paths: int, seed: int) -> dict:
    source = ex.targets.get(C.BRIDGE_SOURCE)
    x0 = source.sample(n_paths, seed)
    return {eps: L.bridge_paths(sb, x0, 32, seed) for eps, sb in table()["bridge"].items()}


@st.cache_data(max_entries=8, show_spinner=False)
def reflow_paths(name: str, n_lines: int, seed: int):
    gm = ex.targets.get(name)
    rf = ex.schedules.get("rectified-flow")
    z = np.sort(np.random.default_rng(seed).standard_normal((n_lines, 1)), axis=0)
    traj = ex.sample(ex.AnalyticModel(gm, rf), z, np.linspace(1.0 - 1e-6, 1e-6, 41), "heun")
    return z, (traj.t, np.asarray(traj.x)), R.monotone_map(gm, z)


st.title("Few steps")
st.caption(
    "Samplers that buy speed by changing what a step is, on targets whose every error is exact: the true reverse "
    "kernel q(x_s | x_t), a Gaussian mixture in closed form (*Denoising Diffusion GANs* learn it; here it is known), "
    "against DDPM's Gaussian kernel and a good ODE solver; the exact one-step flow map (what consistency models "
    "distil); rectified flow and reflow (*Flow Straight and Fast*); the *Light Schrödinger Bridge*; *DPM-OT*'s optimal-transport map "
    "to cached intermediate states. Every control is in the URL."
)

with st.sidebar:
    st.header("Target")
    name = st.selectbox("Target", C.TARGETS, key="fs_target", bind=URL)
    st.header("Live run")
    n = controls.particles(2000, key="fs_n", high=10000)
    seed = controls.seed(key="fs_seed")
    recompute = st.toggle("Recompute live", False, key="fs_live", bind=URL,
                          help="Off: the shipped table (2,000 samples, seed 0). On: every method rerun at this size and seed.")

target = ex.targets.get(name)
shipped = table()
info = shipped["meta"]["targets"][name]
if recompute:
    try:
        rows, samples = live(name, int(n), int(seed))
    except Exception as err:  # bad input or a bug in the core: a message, never a traceback
        controls.report_core_error(err)
        st.stop()
else:
    rows, samples = info["rows"], shipped["samples"][name]

st.subheader("Distance to the target and mode mixing at 1, 2, 4 and 8 NFE")
chart.draw(F.error_vs_nfe(rows))
st.caption(
    f"Sliced W2 to fresh target draws (its floor at this sample size is where the exact kernels sit) and the share of "
    f"samples more than 3 component-sd from every mode. LightSB (ε = {info['lightsb_epsilon_in_rows']:g}, shipped "
    "potentials): one exact draw from its fitted plan at 1 NFE; Euler–Maruyama on its SDE (the official sampler) at "
    "more. 2-rectified flow is exact in 1D (the monotone coupling) and a shipped network on the ring (trained on the "
    "exact 1-rectified flow's coupling; `python -m explorer.analyses.reflow_mlp`); the flow map is one step by definition, "
    "and so is the network distilled from it on the ring (it errs where the map jumps between modes). "
    f"DPM-OT maps uniform noise to a cache of {info['dpm_ot']['m']} states at t = {info['dpm_ot']['t_k']:g} (the cache "
    f"cost {info['dpm_ot']['cache_nfe']:,} evaluations once; its cells hold 1/M to a median "
    f"{100 * info['dpm_ot']['cell_mass_error']:.0f}%), then NFE solver steps: no mode mixture from pure noise, but "
    "only as many distinct starts as the cache holds."
)
with st.expander("The chart's numbers: sliced W2 at each NFE (share between the modes)"):
    st.markdown(C.summary(rows))
chart.draw(F.samples_grid(rows, samples, target))
mass = [{"method": C.LABELS[r["method"]], "NFE": r["nfe"], "W2 (sliced)": r["distance"], "off-mode": r["off_mode"],
         **{f"mode {k + 1}": m for k, m in enumerate(r["mass"])}} for r in rows]
with st.expander(f"Each row's numbers: W2, share between the modes and mass per mode (target weights: "
                 f"{', '.join(f'{w:.3f}' for w in target.weights)})"):
    controls.table(mass, formats={k: ".3f" for k in mass[0] if k not in ("method", "NFE")})

st.subheader("Transport cost against the optimal coupling")
chart.draw(F.transport_table(info["transport"]))
st.caption(
    "Pairs (z, x) of 500 noise draws and where each map sends them; the optimal cost between the same two point sets "
    "is POT's exact network simplex (ot.emd2). In 1D the flow map is the monotone, optimal map (ratio 1 to round-off); "
    "on 500 points in 2D POT finds no cheaper pairing either. LightSB's plan is stochastic: its excess grows with ε."
)

# The two sections below are fragments: their sliders rerun their own section, not the page above
# (whose 32-panel sample grid takes 0.1-0.3 s to build).


@st.fragment
def one_step():
    st.subheader("One reverse step, exact and Gaussian")
    cols = st.columns(3)
    x_t = cols[0].slider("x_t", -1.0, 4.0, 0.9, 0.1, key="fs_xt", bind=URL)
    t_from = cols[1].slider("from t", 0.2, 1.0, 0.4, 0.05, key="fs_t", bind=URL)
    s_to = cols[2].slider("to s", 0.01, 0.5, 0.1, 0.01, key="fs_s", bind=URL)
    kernel_target = target if target.dim == 1 else ex.targets.get("gmm-1d-3modes")
    if s_to >= t_from:
        st.info("Pick s below t: the step runs toward the data.")
    else:
        chart.draw(F.kernels(kernel_target, ex.schedules.get("vp-linear"), x_t, t_from, s_to))
    st.caption("VP-linear schedule, gmm-1d-3modes in 2D views. The exact kernel keeps one bump per mode the step can "
               "still reach; DDPM's Gaussian sits at their average, which is why few Gaussian steps blur the modes.")


one_step()


@st.fragment
def reflow_and_bridges():
    st.subheader("Reflow in 1D and bridges in 2D")
    lines_target = name if target.dim == 1 else "gmm-1d-3modes"
    z, rf1, _ = reflow_paths(lines_target, 40, int(seed))
    chart.draw(F.reflow_lines(z, rf1))
    n_paths = st.slider("Bridge paths", 20, 300, 80, 10, key="fs_paths", bind=URL)
    chart.draw(F.bridges(bridge_paths(int(n_paths), int(seed)), ex.targets.get(C.BRIDGE_SOURCE),
                         ex.targets.get("gmm-2d-ring8")))
    st.caption(
        f"Light Schrödinger Bridge from {C.BRIDGE_SOURCE} to gmm-2d-ring8 (shipped potentials, fitted by the paper's "
        "objective): x1 drawn from the fitted plan, then the exact Brownian bridge of variance ε. Small ε: nearly "
        "straight, near-optimal transport; large ε: diffuse paths and a plan close to independent."
    )


reflow_and_bridges()
