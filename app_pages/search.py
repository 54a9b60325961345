"""Solver search: samplers found by search or fitting (USF's solver schedules, AutoDiffusion's time
steps, DC-Solver's compensation ratios), scored against the exact ODE on particles and targets they
never saw, beside the best fixed solver at the same NFE. The defaults are precomputed (data/); a new
search runs on the button, with a progress bar."""

from __future__ import annotations

import json

import streamlit as st

import explorer as ex
from app_pages import chart, controls
from explorer.analyses import solver_search as S
from explorer.figures import search as F

URL = controls.URL
METHODS = {"schedule": "solver schedule + grid (USF)", "grid-ea": "time steps (AutoDiffusion)", "dc": "DC-Solver's ρ"}


@st.cache_data(show_spinner=False)
def defaults(mtime: float) -> dict:
    """The shipped results (keyed by the file's time, so a rewritten file is read again)."""
    return S.load_defaults()


@st.cache_resource(show_spinner=False)
def store() -> dict:
    """Reports run from this page, by configuration (shared by every session of this server)."""
    return {}


def settings_box(label: str, key: str, default: tuple, help: str):
    cols = st.columns(2)
    target = cols[0].selectbox(f"{label}: target", ex.targets.names(), ex.targets.names().index(default[0]),
                               key=f"{key}_target", bind=URL, help=help)
    schedule = cols[1].selectbox("schedule", ex.schedules.names(), ex.schedules.names().index(default[1]),
                                 key=f"{key}_schedule", bind=URL)
    return [target, schedule]


st.title("Solver search")
st.caption(
    "Three papers improve a sampler by searching or fitting it, and score the search by FID on a trained model. "
    "Here the objective is exact: the distance of the samples to the probability-flow ODE's own endpoint from the "
    "same starts. *A Unified Sampling Framework for Solver Searching* (USF) searches a decision per step; "
    "*AutoDiffusion* searches the time steps; *DC-Solver* fits a compensation ratio per step. Every searched "
    "sampler is scored on particles it never saw, on other targets and schedules, against the best fixed solver at "
    "the same number of model evaluations (NFE). Every control is in the URL."
)

D = S.DEFAULTS
with st.sidebar:
    st.header("Fit on")
    setting = settings_box("Fit", "fit", tuple(D["setting"]), "The exact model the searches are fitted on.")
    heldout = settings_box("Held out", "held", tuple(D["heldout_setting"]), "Scored only: never seen by a search.")
    st.header("Search")
    try:
        nfes = list(controls.int_list("NFE values", "nfes", ", ".join(map(str, D["nfes"])), 2, 20,
                                      help="A search at each: model evaluations per sample."))
        bad_nfes = None
    except ValueError as err:
        nfes, bad_nfes = list(D["nfes"]), err
    nfe = st.select_slider("NFE in focus", nfes, D["nfe"] if D["nfe"] in nfes else nfes[0], key="nfe", bind=URL,
                           help="The NFE whose searched schedule and grids are shown (the transfer matrix, the held-out "
                                "target and Nelder-Mead are at the run's NFE, 5 when it is among the values).")
    n_fit = controls.particles(D["n_fit"], key="n_fit", high=4000, step=32,
                               help="Particles the searches are fitted on (held-out: 1000 of the next seed). "
                                    "Fewer fit particles overfit more.")
    budget = int(st.number_input("Search budget (runs per schedule search)", 100, 5000, D["budget"], 100, key="budget",
                                 bind=URL))
    seed = controls.seed()

if bad_nfes is not None:
    st.error(f"**Can't use these NFE values.** {bad_nfes}")

changes = dict(setting=setting, heldout_setting=heldout, nfes=nfes, nfe=D["nfe"] if D["nfe"] in nfes else nfes[0],
               n_fit=int(n_fit), budget=budget, seed=int(seed))
try:
    cfg = S.config(**changes)
except ValueError as err:
    controls.report_core_error(err)
    st.stop()
is_default = cfg == S.config()
if not is_default:  # a run fits the transfer matrix's row on its own setting only (the defaults fit three)
    score = cfg["transfer_score"] + [s for s in (setting, heldout) if s not in cfg["transfer_score"]]
    cfg = S.config(**{**changes, "transfer_fit": [setting], "transfer_score": score})
key = json.dumps(cfg, sort_keys=True)

results = None
if is_default:
    results = defaults(S.defaults_path().stat().st_mtime if S.defaults_path().is_file() else 0.0)
else:
    results = store().get(key)
    if results is None:
        st.info("These settings differ from the precomputed ones. A run searches at every NFE value, checks the "
                "time-step search against brute force, fits DC-Solver and scores everything held out "
                f"(about {6 * len(nfes) + 20} s). Until then the page shows the precomputed results for the defaults.")
        if st.button("Run the search", type="primary", key="run"):
            bar = st.progress(0.0, text="Starting…")
            try:
                results = S.report(cfg, progress=lambda f, text: bar.progress(min(f, 1.0), text=text))
                store()[key] = results
            except Exception as err:
                controls.report_core_error(err)
                st.stop()
            finally:
                bar.empty()
        else:
            results = defaults(S.defaults_path().stat().st_mtime)
shown = results["inputs"]
focus = next((r for r in results["curve"] if r["nfe"] == nfe), None) or next(
    r for r in results["curve"] if r["nfe"] == shown["nfe"])
k = focus["nfe"]
found = S.Searched.from_dict(focus["schedule"])
grid_found = S.Searched.from_dict(focus["grid_ea"])
where = S.Setting(*shown["setting"]).label

# 1. The searched schedule.
st.subheader(f"A solver schedule, searched at NFE {k} on {where}")
cols = st.columns(4)
cols[0].metric("Held-out error, searched", f"{found.holdout_error:.3g}",
               delta=f"×{found.gain:.2f} vs best fixed", delta_color="normal" if found.gain >= 1 else "inverse",
               delta_arrow="off")
cols[1].metric("Best fixed solver at equal NFE", f"{found.best_fixed['holdout_error']:.3g}",
               help=f"{found.best_fixed['label']} on a {found.best_fixed['spacing']} grid: the best of "
                    f"{len(S.FIXED)} solver settings × {len(ex.SPACINGS)} spacings, chosen on the held-out particles "
                    "themselves (the strongest baseline: the gains are lower bounds).")
cols[2].metric("Error on its own fit particles", f"{found.fit_error:.3g}",
               delta=f"×{found.holdout_error / found.fit_error:.1f} held out" if found.fit_error > 0 else None,
               delta_color="off", delta_arrow="off",
               help="A searched sampler overfits its fit particles: the held-out error is the one that counts.")
cols[3].metric("Search", f"{found.n_evals} runs", delta=f"{found.wall_time:.1f} s", delta_color="off", delta_arrow="off")
chart.draw(F.decision_strip(found.options["schedule"], found.ts))
positions = {"searched (USF)": found.positions, f"searched for {grid_found.solver} (AutoDiffusion)": grid_found.positions,
             "uniform in λ": S.relative_positions(found.schedule, ex.timesteps(found.schedule, k, "uniform-lambda"))}
chart.draw(F.grids(positions))
st.caption(f"`{found.options['schedule']}`: d/n = data or noise prediction, the digit the Taylor order, .k the points "
           "estimating the first derivative, /bh1 /bh2 /l⟨c⟩ its relaxation, +c a UniC corrector (free: its evaluation "
           "is the next step's). The initial population is the native solvers on every standard spacing, so the "
           "search starts from the best fixed schedule it can express.")

# 2. Error against NFE.
st.subheader("Error against NFE")
chart.draw(F.error_vs_nfe(results["curve"]))
gains = ", ".join(f"{r['nfe']}: ×{r['best_fixed']['holdout_error'] / r['schedule']['holdout_error']:.2f}"
                  for r in results["curve"])
st.caption(f"Held-out gain of the searched schedule over the best fixed solver, by NFE: {gains}. Dotted: the same "
           "search's error on the particles it was fitted on.")

# 3. Time steps.
st.subheader("Time steps: evolution, Nelder-Mead and brute force")
bf = results["brute_force"]
ea_small = S.Searched.from_dict(bf["ea"])
nm = S.Searched.from_dict(results["grid_nm"])
runs = {f"AutoDiffusion EA, {bf['nfe']} steps of {bf['candidates']} candidates": ea_small.history}
if k == shown["nfe"]:
    runs.update({f"AutoDiffusion EA, NFE {k}": grid_found.history, f"Nelder-Mead, NFE {k}": nm.history,
                 f"USF schedule search, NFE {k}": found.history})
chart.draw(F.histories(runs, optimum=bf["error"]))
hit = ea_small.extra["indices"] == bf["indices"]
st.caption(f"Brute force over all {bf['n_grids']} grids of {bf['nfe']} steps on {bf['candidates']} candidate times: "
           f"optimum {bf['error']:.4g}; the evolutionary search {'found it' if hit else 'did not find it'} "
           f"({ea_small.fit_error:.4g}) in {ea_small.n_evals} runs. At NFE {shown['nfe']}, Nelder-Mead on a continuous "
           f"grid: held-out {nm.holdout_error:.3g}; the evolutionary search on 1000 candidates: held-out "
           f"{S.Searched.from_dict(next(r for r in results['curve'] if r['nfe'] == shown['nfe'])['grid_ea']).holdout_error:.3g}.")


# 4. DC-Solver (a fragment: its NFE slider reruns this section alone).
@st.fragment
def dc_solver():
    st.subheader("DC-Solver: compensation ratio per step")
    dc = results["dc"]
    dc_nfes = [r["nfe"] for r in dc["fits"]]
    dc_nfe = st.select_slider("DC-Solver at NFE", dc_nfes, k if k in dc_nfes else dc_nfes[0], key="dc_nfe", bind=URL)
    row = next(r for r in dc["fits"] if r["nfe"] == dc_nfe)
    cols = st.columns([3, 2])
    chart.draw(F.rho_per_step(row), cols[0])
    chart.draw(F.dc_error_vs_nfe(dc["fits"], height=380), cols[1])
    fitted = [abs(r - 1) for f in dc["fits"] for r in f["rho"][2:]]
    aligned = [abs(r - 1) for f in dc["fits"] for r in f["rho_aligned"][2:]]
    st.caption(
        f"ρ fitted per step on {dc['n_fit']} trajectories against the exact path, greedily along the solver's own path "
        f"(the paper's search). The question it leaves open: the ratio that makes the buffer equal the denoiser at the "
        f"corrected state (the misalignment itself) is {sum(aligned) / len(aligned):.3f} from 1 on average over every "
        f"compensated step here (at most {max(aligned):.2f}), the fitted ratio {sum(fitted) / len(fitted):.3f} (at most "
        f"{max(fitted):.2f}), and the two often lie on opposite sides of 1: the fit compensates truncation error more than "
        "it fixes the misalignment. The cascade regression is fitted on NFE "
        f"{', '.join(map(str, shown['dc_fit_nfes']))}; open symbols mark NFE it never saw."
    )

    if "dc_guided" in results:
        guided = results["dc_guided"]
        chart.draw(F.dc_guided(guided))
        unseen = [r for r in guided["rows"] if r["w"] == guided["heldout_w"]]
        better = sum(r["dc_cpr"] < r["unipc"] for r in unseen)
        st.caption(
            f"Under classifier-free guidance ({guided['target']}, class {guided['label']}, D = (1 + w) D(x | c) − w D(x)), "
            f"where multistep solvers break at low NFE: ρ fitted at w = {', '.join(f'{w:g}' for w in guided['ws'])} and the "
            f"regression over NFE and w (36 coefficients, as the paper's). At w = {guided['heldout_w']:g}, which it never "
            f"saw, its ratios beat UniPC at {better} of {len(unseen)} NFE values."
        )


dc_solver()


# 5. Held out (a fragment: its sampler choice reruns this section alone).
@st.fragment
def held_out():
    st.subheader("Held out: other particles, another target, other schedules")
    ht = results["heldout_target"]
    cols = st.columns(3)
    cols[0].metric(f"On {ht['setting']}, searched", f"{ht['error']:.3g}", delta=f"×{ht['gain']:.2f} vs best fixed",
                   delta_color="normal" if ht["gain"] >= 1 else "inverse", delta_arrow="off")
    cols[1].metric("Best fixed solver there", f"{ht['best_fixed']:.3g}", help=ht["best_fixed_label"])
    cols[2].metric(f"In its own setting (held-out particles)", f"×{found.gain:.2f}")
    method = st.radio("Sampler", [m for m in METHODS if m in results["transfer"]], format_func=METHODS.get,
                      horizontal=True, key="method", bind=URL)
    chart.draw(F.transfer_matrix(results["transfer"][method]))
    st.caption(f"Each row: the sampler fitted at NFE {shown['nfe']} in one setting; each column: its held-out error in "
               "another (the grid carried over at the same relative positions in λ), as a gain over the best fixed solver "
               "there. The diagonal is the in-setting gain; off it, the loss when the sampler is moved.")


held_out()

# 6. Take it away.
st.subheader("Take it away")
controls.code_block(found.code())
st.download_button("Download the searched sampler (.json)", json.dumps(found.runnable(), indent=1),
                   file_name=f"usf-nfe{k}.json", mime="application/json")
with st.expander(f"The best fixed solvers at NFE {shown['nfe']}"):
    controls.table(results["fixed"], labels={"fit_error": "fit error", "holdout_error": "held-out error"})
if not is_default and key not in store():
    st.caption("Showing the precomputed results for the default settings.")
