"""Scheduler audit: diffusers' schedulers, in their common configurations, measured on an exact
target against the exact probability-flow ODE (ex.audit.diffusers), with the flags each raises;
any row reopened step by step and drawn with the Trajectories page's figures."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd
import streamlit as st

import explorer as ex
from app_pages import chart, controls, precomputed
from explorer import figures

URL = controls.URL
DEFAULT_SCHEDULERS = ["DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                      "UniPCMultistepScheduler", "HeunDiscreteScheduler"]
MODES = {"normal": False, "oracle": True, "both": "both"}


@st.cache_data(show_spinner=False)
@precomputed.default("audit")
def scheduler_names() -> list[str]:
    return [name for name, _ in ex.audit.scheduler_classes()]


# One scheduler class at a time, cached on every input: adding a class to the selection runs only that one.
@st.cache_data(max_entries=256, show_spinner=False)
@precomputed.default("audit")
def audit_class(name: str, nfes: tuple, oracle, target: tuple, n: int, seed: int) -> list[dict]:
    return ex.audit.diffusers((target[0], dict(target[1])), nfes, schedulers=[name], oracle=oracle,
                              n_particles=n, seed=seed)


@st.cache_data(max_entries=64, show_spinner=False)
@precomputed.default("audit")
def planned_rows(names: tuple, oracle) -> list[dict]:
    """The rows the audit of these classes makes (scheduler, config, overrides, oracle), in its order, unrun."""
    return ex.audit.planned(list(names), oracle=oracle)


@st.cache_data(max_entries=64, show_spinner=False)
@precomputed.default("audit")
def audit_row(name: str, overrides: tuple, oracle: bool, nfes: tuple, target: tuple, n: int, seed: int) -> dict:
    """One row alone (the same numbers as in its class's audit): the row shown below the table is drawn before the
    table's classes have run."""
    [row] = ex.audit.diffusers((target[0], dict(target[1])), nfes, schedulers=[name], configs={name: [dict(overrides)]},
                               oracle=oracle, n_particles=n, seed=seed)
    return row


@st.cache_resource(max_entries=16, show_spinner=False)
def rerun_figures(row_key: str, _row: dict, nfe: int) -> dict:
    """The row's run at nfe steps against the exact path, and its figures (row_key stands for the row)."""
    traj, ref = ex.audit.rerun(_row, nfe)
    spec = _row["target"]
    model = ex.AnalyticModel(ex.targets.get(spec["name"], **spec["params"]), traj.schedule)
    stochastic = bool(_row.get("stochastic"))
    out = {"traj": traj, "ref": ref, "values": figures.audit.step_values(traj, ref, stochastic),
           "steps": figures.audit.step_errors(traj, ref, stochastic, height=480)}
    if model.dim == 1:
        out["paths"] = figures.density_heatmap_1d(model, traj, time_axis="step", height=420)
        out["final"] = figures.final_histogram_1d(model.target, traj.sample, height=340)
    else:
        out["paths"] = figures.particles_2d(model, traj, height=520)
        out["final"] = figures.final_samples_2d(model.target, traj.sample, height=420)
    return out


def table(rows: list[dict], nfes: tuple) -> pd.DataFrame:
    """The rows as a sortable frame: label first, flags as text, the numbers as numbers."""
    keep = (["status", "flags", "order", "order0"] + [f"error_{n}" for n in nfes] + [f"error0_{n}" for n in nfes]
            + ["metric", "floor", "floor0"] + [f"nfe_{n}" for n in nfes] + ["final_sigma", "mismatch", "details",
                                                                          "message"])
    frame = pd.DataFrame([{"row": figures.audit.label(r), **{k: r.get(k) for k in keep}} for r in rows])
    frame["flags"] = frame["flags"].map(lambda f: ", ".join(f or []))
    numeric = [c for c in keep if c.split("_")[0] in ("order", "order0", "error", "error0", "floor", "floor0", "nfe")
               or c in ("final_sigma", "mismatch")]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    return frame


def csv_bytes(rows: list[dict]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "audit.csv")
        ex.audit.to_csv(rows, path)
        with open(path, "rb") as f:
            return f.read()


st.title("Scheduler audit")
st.caption(
    "diffusers' schedulers in their common configurations, driven on an exact target and measured against the "
    "exact probability-flow ODE from the same start: error per number of steps, fitted order, and flags for what "
    "a scheduler does differently from the ODE. Stochastic schedulers are compared by sliced W2 to the exact "
    "distribution (same seed at every step count), with the finite-sample floor. Every control is in the URL."
)

names = scheduler_names()
with st.sidebar:
    st.header("Schedulers")
    everything = st.toggle("All schedulers", key="all", bind=URL,
                           help=f"Every *Scheduler diffusers exports ({len(names)}; ~35 s the first time).")
    chosen = st.multiselect("Scheduler classes", names, [s for s in DEFAULT_SCHEDULERS if s in names], key="schedulers",
                            bind=URL, disabled=everything, help="Each in every common configuration of its own "
                            "constructor (ex.audit.configurations).")
    st.header("Runs")
    mode = st.segmented_control("Model sees", list(MODES), default="normal", key="mode", bind=URL,
                                help="normal: the timestep the scheduler passes; oracle: the update's own noise "
                                     "level (separates timestep rounding from the solver's error); both: a row each.")
    mode = mode or "normal"
    try:
        nfes = controls.int_list("Inference steps", "nfes", "5, 10, 20, 40", 1, 500,
                                 help="num_inference_steps values, comma-separated.")
    except ValueError as err:
        nfes = err
    st.header("Target")
    targets = ex.targets.names()
    default_name, default_params = ex.audit.DEFAULT_TARGET
    target_name = st.selectbox("Target", targets, targets.index(default_name), key="target", bind=URL,
                               help="A Gaussian mixture: the exact path and distances are exact.")
    st.caption(ex.targets.describe(target_name))
    params = {}
    for p, default in ex.targets.params(target_name).items():
        if target_name == default_name and p in default_params:
            default = default_params[p]  # the audit's default: std 0.3, where orders are measurable
        params[p] = controls.number(p.replace("_", " "), f"audit.{target_name}.{p}", default)
    n = controls.particles(1000, help="Particles on the exact path (the cost is mostly per step, not per particle).")
    seed = controls.seed()

if isinstance(nfes, ValueError):
    st.error(f"**Can't run this audit.** {nfes}")
    st.stop()
selected = names if everything else [s for s in names if s in chosen]
if not selected:
    st.info("Choose at least one scheduler class in the sidebar.")
    st.stop()
target_key = (target_name, tuple(sorted(params.items())))
try:
    ex.targets.get(target_name, **params)  # bad parameters say so before any run
except ValueError as err:
    st.error(f"**Can't run this audit.** {err}")
    st.stop()

# The row shown below the table is run and drawn first (one row: a fraction of a second); the table's classes run
# after it, with a progress bar, and the table is filled in above once they have.
try:
    plan = planned_rows(tuple(selected), MODES[mode])
except Exception as err:
    controls.report_core_error(err)
    st.stop()
progress = st.progress(0.0, text="Running the row shown below first…")
summary = st.container()


@st.fragment
def one_row(rows_plan: list[dict]) -> None:
    """The section of one row: its error against NFE, its fitted orders, and its run at a chosen step count (a
    fragment: its controls rerun it alone, not the table's classes)."""
    st.header("One row")
    labels = [figures.audit.label(r) for r in rows_plan]
    choice = st.selectbox("Row", labels, key="row", bind=URL, help="Opens the row's run: its error against NFE, "
                          "its error at every step and the noise levels of every model call, and its particles.")
    planned = rows_plan[labels.index(choice)]
    try:
        row = audit_row(planned["scheduler"], tuple(planned["overrides"].items()), planned["oracle"], nfes, target_key,
                        int(n), int(seed))
    except Exception as err:
        controls.report_core_error(err)
        return
    if row["flags"]:
        st.markdown("**Flags:** " + ", ".join(f"`{f}`" for f in row["flags"]) + (f". {row['details']}." if row["details"] else ""))
    ran = [m for m in nfes if row.get(f"nfe_{m}") is not None]
    if row["message"]:
        (st.warning if ran else st.error)(f"**{choice}**: {row['message']}", icon=":material/report:")
    if not ran:
        return
    left, right = st.columns([3, 2])
    chart.draw(figures.audit.error_vs_nfe([row], height=440), left, key="row_nfe")
    metric = "sliced W2" if row["stochastic"] else "RMS error"
    right.metric("Fitted order (own final level)", "—" if row["order"] is None or not np.isfinite(row["order"])
                 else f"{row['order']:.2f}")
    right.metric("Fitted order (sigma 0)", "—" if row["order0"] is None or not np.isfinite(row["order0"])
                 else f"{row['order0']:.2f}")
    if row["stochastic"]:
        right.metric("Finite-sample floor (sigma 0)", f"{row['floor0']:.3g}",
                     help="The sliced W2 of the exact path's own particles: a distance below it is not measurable.")
    at = st.select_slider("Inference steps of the run shown", ran, ran[len(ran) // 2], key="at", bind=URL)
    try:
        with st.spinner(f"Running {choice} at {at} steps…"):
            shown = rerun_figures(f"{choice}|{target_key}|{n}|{seed}|{mode}", row, int(at))
    except Exception as err:
        controls.report_core_error(err)
        return
    traj = shown["traj"]
    if traj.diverged:
        st.warning(f"**The run diverged** at step {traj.diverged_at}: {traj.diverged_reason}.")
    chart.draw(shown["steps"], key="row_steps")
    st.caption(f"Top: the {metric} at every state against the exact path at the same noise level. Bottom: per model "
               "call, |σ_model / σ_update − 1|; red above the flag threshold (calls with no gap are not drawn on the log "
               "axis).")
    st.subheader("The run, in the Trajectories views")
    chart.draw(shown["paths"], key="row_paths")
    chart.draw(shown["final"], key="row_final")


one_row(plan)

rows = []
for k, name in enumerate(selected):
    progress.progress(k / len(selected), text=f"Auditing {name} ({k + 1} of {len(selected)}) in every configuration…")
    try:
        rows.extend(audit_class(name, nfes, MODES[mode], target_key, int(n), int(seed)))
    except Exception as err:  # the audit reports failures as rows; anything else is a message, never a traceback
        with summary:
            controls.report_core_error(err)
        st.stop()
progress.empty()

with summary:
    frame = table(rows, nfes)
    ok = sum(r["status"] == "ok" for r in rows)
    flagged = sum(bool(r["flags"]) for r in rows)
    st.markdown(f"**{len(rows)} rows** from {len(selected)} scheduler classes: {ok} ran, {flagged} raise a flag, "
                f"{len(rows) - ok} have a message (unsupported or failed). Click a column header to sort.")
    st.dataframe(frame, hide_index=True, height=min(420, 38 + 35 * len(frame)), key="table",
                 column_config={"row": st.column_config.TextColumn("row", pinned=True, width="large")})
    st.download_button("Download the table (CSV)", csv_bytes(rows), "scheduler_audit.csv", "text/csv",
                       icon=":material/download:")
    with st.expander("What the flags mean"):
        st.markdown("\n".join(f"- **{flag}**: {meaning}" for flag, meaning in ex.audit.FLAGS.items()))
        st.caption("error_n: RMS distance to the exact path at the scheduler's own final noise level after n inference "
                   "steps (sliced W2 for stochastic rows); error0_n: the same at sigma 0; order: fitted from the three "
                   "largest NFE; floor: the distance of the exact path's own particles (stochastic rows).")
        chart.draw(figures.audit.flags(rows), key="flags_figure")
