"""Few-step samplers side by side at 1, 2, 4 and 8 NFE on an exact mixture: distance to the target, per-mode
mass, and transport cost against the optimal one; and the shipped table the "Few steps" page opens with.

Methods (NFE = evaluations of the model, or draws of a learned/exact kernel):
  ode        DPM-Solver++(2M) on the VP-linear probability-flow ODE (a good ODE solver);
  ddpm       DDPM's Gaussian kernels on the same grid;
  exact      exact reverse-kernel draws (ex.few_steps.exact_kernels; exact in law at any NFE);
  flow-map   the exact probability-flow ODE map as one step (the ideal consistency model; NFE 1 only);
  rf1        1-rectified flow (the rectified-flow schedule's ODE), Euler steps;
  rf2        2-rectified flow (reflow), Euler steps: exact in 1D (ex.reflow.Reflow1D); in 2D the shipped
             network of ex.reflow_mlp (gmm-2d-ring8 only; torch);
  distilled  a network distilled from the flow map in one step (gmm-2d-ring8 only; NFE 1; ex.reflow_mlp);
  lightsb    Light Schrodinger Bridge with shipped potentials: one exact draw from the fitted plan at
             NFE 1, Euler-Maruyama on the bridge SDE (the official sampler) at NFE > 1;
  dpm-ot     DPM-OT: the semi-discrete OT map from uniform noise to a shipped cache of CACHE_M states at
             T_K (made by DPM-Solver++(2M), CACHE_STEPS steps each: the cache's cost), then NFE solver steps.
The per-method starts are each method's own noise: the exact p_T for exact kernels, sigma_T N(0, I) else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..foundations.analytic import AnalyticModel
from ..foundations.data_files import DATA_DIR
from ..foundations.random import as_generator
from ..foundations.schedules import get as get_schedule
from ..foundations.targets import get as get_target
from ..foundations.timesteps import timesteps
from ..solvers.sampling import sample
from . import dpm_ot, few_steps, lightsb, metrics, reflow, reflow_mlp

NFES = (1, 2, 4, 8)
METHODS = ("ode", "ddpm", "exact", "flow-map", "distilled", "rf1", "rf2", "lightsb", "dpm-ot")
LABELS = {
    "ode": "ODE solver (DPM-Solver++ 2M)", "ddpm": "DDPM Gaussian kernels", "exact": "exact reverse kernels",
    "flow-map": "exact one-step flow map", "distilled": "distilled one-step network",
    "rf1": "1-rectified flow (Euler)", "rf2": "2-rectified flow (reflow)",
    "lightsb": "Light Schrodinger Bridge", "dpm-ot": "DPM-OT (OT map to a cache)",
}
TARGETS = ("gmm-1d-3modes", "gmm-2d-ring8")
EPSILONS = (0.01, 0.1, 1.0)
BRIDGE_SOURCE = "gmm-2d-two-aniso"  # the bridges between two 2D mixtures: this one to gmm-2d-ring8
T_K, CACHE_M, CACHE_STEPS = 0.2, 200, 50  # DPM-OT's cache: where, how many states, steps to make each
TABLE = "few-steps.npz"
KEEP = 1000  # samples per row kept in the shipped table, for drawing (the numbers use all n)


def run_method(method: str, target_name: str, nfe: int, n: int, seed, sb: lightsb.LightSB | None = None,
               ot_map: dict | None = None):
    """(samples (n, D), starting noise z (n, D) in N(0, I) units, Trajectory) of one method at one NFE.
    lightsb needs sb (fitted potentials); dpm-ot needs ot_map = {"cache": (M, D), "h": (M,), "t_k": float}."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if int(nfe) < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    gm = get_target(target_name)
    rng = as_generator(seed)
    z = rng.standard_normal((int(n), gm.dim))
    vp, rf = get_schedule("vp-linear"), get_schedule("rectified-flow")
    if method in ("ode", "ddpm", "exact"):
        model = AnalyticModel(gm, vp)
        ts = timesteps(vp, int(nfe))
        if method == "exact":
            x_T = float(vp.alpha(ts[0])) * gm.sample(int(n), rng) + float(vp.sigma(ts[0])) * z
            traj = few_steps.exact_kernels(gm, vp, x_T, ts, rng)
        else:
            traj = sample(model, float(vp.sigma(ts[0])) * z, ts, "dpmpp-2m" if method == "ode" else "ddpm",
                          rng=rng if method == "ddpm" else None)
    elif method == "flow-map":
        traj = few_steps.flow_map(AnalyticModel(gm, rf), z, 1.0 - 1e-9, 1e-9)
    elif method == "distilled":
        if target_name != reflow_mlp.TARGET:
            raise ValueError(f"method 'distilled' runs on {reflow_mlp.TARGET} (the shipped network), not on {target_name!r}")
        traj = sample(reflow_mlp.load(distilled=True), z, np.array([1.0, 0.0]), "euler")
    elif method == "rf1":
        traj = sample(AnalyticModel(gm, rf), float(rf.sigma(rf.t_max)) * z, timesteps(rf, int(nfe), "uniform-t"), "euler")
    elif method == "rf2":
        if gm.dim == 1:
            model = reflow.Reflow1D(gm)
        elif target_name == reflow_mlp.TARGET:
            model = reflow_mlp.load()
        else:
            raise ValueError(f"method 'rf2' runs on 1D targets (exact) and on {reflow_mlp.TARGET} (the shipped "
                             f"network), not on {target_name!r}")
        traj = sample(model, z, np.linspace(1.0, 0.0, int(nfe) + 1), "euler")
    elif method == "dpm-ot":
        if ot_map is None:
            raise ValueError("method 'dpm-ot' needs ot_map (load_table()['dpm_ot'][target] or make_ot_map)")
        traj = dpm_ot.sample_dpm_ot(AnalyticModel(gm, vp), ot_map["cache"], ot_map["h"], ot_map["t_k"], int(n),
                                    int(nfe), seed=rng)
    else:
        if sb is None:
            raise ValueError("method 'lightsb' needs fitted potentials sb (load_table()['lightsb'] or lightsb.fit)")
        traj = lightsb.bridge_paths(sb, z, int(nfe), rng, exact=int(nfe) == 1)
    return np.asarray(traj.x[-1]), z, traj


def fit_lightsb(target_name: str, epsilon: float, source: str | None = None, n: int = 20000, steps: int = 4000,
                seed=0, progress=None) -> lightsb.LightSB:
    """LightSB from N(0, I) (or the source mixture) to the target, by the paper's Adam training."""
    gm = get_target(target_name)
    rng = as_generator(seed)
    x0 = rng.standard_normal((n, gm.dim)) if source is None else get_target(source).sample(n, rng)
    return lightsb.fit(x0, gm.sample(n, rng), epsilon, n_potentials=max(16, 4 * gm.n_components), steps=steps,
                       seed=rng, progress=progress)


def in_mode_mass(x, target, radius: float = 3.0) -> np.ndarray:
    """Fraction of samples within Mahalanobis distance `radius` of each component (K,); what is left is the
    mass between modes (a sample at the mean of a ring is "assigned" to some mode by largest responsibility,
    but lies in none: this counts it as off-mode)."""
    x = np.asarray(x, dtype=np.float64)
    diff = x[:, None, :] - target.means[None]
    d2 = np.einsum("nki,kij,nkj->nk", diff, np.linalg.inv(target.covs), diff)
    inside = d2 <= radius * radius
    first = np.where(inside.any(axis=1), np.argmax(inside, axis=1), -1)
    return np.array([np.mean(first == k) for k in range(target.n_components)])


def make_ot_map(target_name: str, seed=0) -> dict:
    """DPM-OT's cache (CACHE_M states at T_K by DPM-Solver++(2M) in CACHE_STEPS steps) and its semi-discrete map's
    intercepts, from POT's exact dual on 20,000 uniforms (dpm_ot.fit_map_exact; the official Monte Carlo ascent,
    dpm_ot.fit_map, reaches a median cell-mass error of 15% after 1,000 iterations at M = 200, the dual 8%)."""
    gm = get_target(target_name)
    cache, cost = dpm_ot.make_cache(AnalyticModel(gm, get_schedule("vp-linear")), CACHE_M, T_K, CACHE_STEPS, seed=seed)
    return {"cache": cache, "h": dpm_ot.fit_map_exact(cache, seed=seed), "t_k": T_K, "cache_nfe": cost}


def compare(target_name: str, nfes=NFES, n: int = 2000, seed=0, sb: lightsb.LightSB | None = None,
            methods=METHODS, progress=None, ot_map: dict | None = None) -> list[dict]:
    """One row per method and NFE: nfe, sliced W2 to the target ("distance"), per-mode mass ("mass", (K,):
    in_mode_mass), the mass between modes ("off_mode"), the total-variation error of (mass, off_mode) against
    (weights, 0) ("mass_tv") and the samples (float32)."""
    gm = get_target(target_name)
    network = target_name == reflow_mlp.TARGET  # the shipped 2D networks are the ring's
    todo = [(m, k) for m in methods for k in nfes
            if not (m in ("flow-map", "distilled") and k != 1) and not (m == "distilled" and not network)
            and not (m == "rf2" and gm.dim != 1 and not network) and not (m == "lightsb" and sb is None)
            and not (m == "dpm-ot" and ot_map is None)]
    rows = []
    for i, (m, k) in enumerate(todo):
        x, _, traj = run_method(m, target_name, k, n, seed, sb, ot_map)
        mass = in_mode_mass(x, gm)
        off = float(1.0 - mass.sum())
        rows.append({"method": m, "nfe": int(traj.nfe) if m != "lightsb" else int(k), "distance":
                     metrics.distance_to_target(x, gm, rng=1), "mass": mass, "off_mode": off,
                     "mass_tv": float(0.5 * (np.abs(mass - gm.weights).sum() + off)), "sample": x.astype(np.float32)})
        if progress is not None:
            progress(i + 1, len(todo), f"{m} at {k} NFE")
    return rows


def summary(rows: list[dict]) -> str:
    """compare()'s rows as markdown, a line per method in row order: the distance at each NFE and, in
    brackets, the share of samples between the modes ("off_mode")."""
    lines = []
    for m in dict.fromkeys(r["method"] for r in rows):
        cells = [f"{r['nfe']} NFE {r['distance']:.3f} ({r['off_mode']:.1%})" for r in rows if r["method"] == m]
        lines.append(f"- **{LABELS.get(m, m)}**: " + " · ".join(cells))
    return "\n".join(lines)


def transport(target_name: str, n: int = 500, seed=0, sbs=()) -> list[dict]:
    """Coupling cost E||z - x||^2 of noise-to-data maps against POT's optimal cost between the same point sets:
    the 1-rectified flow's exact map (its ODE coupling), and each LightSB plan (a stochastic coupling)."""
    gm = get_target(target_name)
    z = as_generator(seed).standard_normal((n, gm.dim))
    rf = get_schedule("rectified-flow")
    out = []
    x = np.asarray(few_steps.flow_map(AnalyticModel(gm, rf), z, 1.0 - 1e-9, 1e-9).x[-1])
    out.append({"coupling": "1-rectified flow map", **reflow.transport_report(z, x)})
    if gm.dim == 2 and target_name == reflow_mlp.TARGET:  # the 2-rectified flow's own map: 64 Euler steps
        x = sample(reflow_mlp.load(), z, np.linspace(1.0, 0.0, 65), "euler").x[-1]
        out.append({"coupling": "2-rectified flow map (network)", **reflow.transport_report(z, np.asarray(x))})
        x = sample(reflow_mlp.load(distilled=True), z, np.array([1.0, 0.0]), "euler").x[-1]
        out.append({"coupling": "distilled one-step network", **reflow.transport_report(z, np.asarray(x))})
    for sb in sbs:
        x = sb.sample(z, as_generator(seed))
        out.append({"coupling": f"LightSB eps={sb.epsilon:g}", **reflow.transport_report(z, x)})
    return out


def make_table(out=None, n: int = 2000, progress=None) -> Path:
    """Fit the LightSB potentials (each target from N(0, I) at every EPSILON, and BRIDGE_SOURCE -> gmm-2d-ring8),
    run compare and transport on TARGETS, and write everything small to data/few-steps.npz."""
    arrays, meta = {}, {"targets": {}, "n": n}
    for name in TARGETS:
        sbs = [fit_lightsb(name, eps, seed=1) for eps in EPSILONS]
        for eps, sb in zip(EPSILONS, sbs):
            for key in ("log_alpha", "r", "S"):
                arrays[f"{name}/lightsb/{eps:g}/{key}"] = getattr(sb, key)
        ot_map = make_ot_map(name)
        arrays[f"{name}/dpm_ot/cache"], arrays[f"{name}/dpm_ot/h"] = ot_map["cache"], ot_map["h"]
        rows = compare(name, n=n, seed=0, sb=sbs[1], progress=progress, ot_map=ot_map)
        for j, row in enumerate(rows):
            arrays[f"{name}/sample/{j}"] = row["sample"][:KEEP].astype(np.float16)  # for drawing only
        meta["targets"][name] = {
            "rows": [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items() if k != "sample"}
                     for r in rows],
            "transport": transport(name, sbs=sbs), "lightsb_epsilon_in_rows": EPSILONS[1],
            "dpm_ot": {"t_k": T_K, "cache_nfe": ot_map["cache_nfe"], "m": CACHE_M,
                       "cell_mass_error": float(np.median(np.abs(dpm_ot.cell_masses(ot_map["cache"], ot_map["h"])
                                                                 * CACHE_M - 1)))},
        }
    for eps in EPSILONS:
        sb = fit_lightsb("gmm-2d-ring8", eps, source=BRIDGE_SOURCE, seed=2)
        for key in ("log_alpha", "r", "S"):
            arrays[f"bridge/{eps:g}/{key}"] = getattr(sb, key)
    out = Path(DATA_DIR / TABLE if out is None else out)
    np.savez_compressed(out, meta=np.array(json.dumps(meta)), **arrays)
    return out


def load_table(path=None) -> dict:
    """The shipped table: {"meta": dict, "samples": {target: [rows' samples]}, "lightsb": {target: {eps: LightSB}},
    "dpm_ot": {target: {"cache", "h", "t_k", "cache_nfe", "m", "cell_mass_error"}}, "bridge": {eps: LightSB}}
    (see make_table)."""
    with np.load(DATA_DIR / TABLE if path is None else path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in z.files if k != "meta"}

    def potentials(prefix, eps):
        return lightsb.LightSB(arrays[f"{prefix}/{eps:g}/log_alpha"], arrays[f"{prefix}/{eps:g}/r"],
                               arrays[f"{prefix}/{eps:g}/S"], eps)

    out = {"meta": meta, "samples": {}, "lightsb": {}, "dpm_ot": {},
           "bridge": {eps: potentials("bridge", eps) for eps in EPSILONS}}
    for name, info in meta["targets"].items():
        out["samples"][name] = [arrays[f"{name}/sample/{j}"].astype(np.float32) for j in range(len(info["rows"]))]
        out["lightsb"][name] = {eps: potentials(f"{name}/lightsb", eps) for eps in EPSILONS}
        out["dpm_ot"][name] = {"cache": arrays[f"{name}/dpm_ot/cache"], "h": arrays[f"{name}/dpm_ot/h"],
                               **info["dpm_ot"]}
    return out


if __name__ == "__main__":  # python -m explorer.analyses.few_step_compare [out.npz]: remake the shipped table
    import sys

    from tqdm import tqdm

    bar = tqdm(desc="few-step table")

    def _progress(i, total, text):
        bar.total = total
        bar.n = i
        bar.set_postfix_str(text)
        bar.refresh()

    print(make_table(sys.argv[1] if len(sys.argv) > 1 else None, progress=_progress))
    bar.close()
