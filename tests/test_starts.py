"""Where sampling starts (explorer.analyses.terminal_snr, dmcmc, boundary) and the Starts page.

Every number against its closed form or a Monte Carlo estimate with a stated tolerance: Stable
Diffusion's terminal SNR; the zero-terminal-SNR rescale; the exact affine map of Gaussian data
(pointwise against rk45) and the shrink it predicts (against sampling, ODE and SDE); One More Step's
MSE-optimal step (right mean, shrunk spread); the exact posterior over noise levels (calibration by
Monte Carlo); exact Gibbs keeping the joint, the paper's variant not; EDM's sampler against our Heun;
the boundary-condition search's closed-form loss against a reference set, and what sharing a start costs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer as ex
from explorer.analyses import boundary as B
from explorer.analyses import dmcmc as M
from explorer.analyses import terminal_snr as T

SD = T.stable_diffusion()
MEAN = np.array([1.5, 0.0])
COV = np.array([[16.0, 1.0], [1.0, 0.25]])  # a wide "brightness" direction, a narrow one
GAUSS = ex.GaussianMixture(MEAN[None], COV[None])


def _along_top(x):
    e = np.linalg.eigh(COV)[1][:, -1]
    return np.asarray(x) @ e


# Stable Diffusion's table and the zero-terminal-SNR rescale.


def test_stable_diffusion_leaves_signal_at_the_last_step():
    abar = SD.alphas_cumprod
    assert abar[-1] == pytest.approx(0.0046601, abs=1e-6)
    assert np.sqrt(abar[-1]) == pytest.approx(0.06826, abs=1e-4)  # "about 0.068 of signal"
    assert T.table_timesteps(50, "leading")[0] == 981 and T.table_timesteps(10, "leading")[0] == 901
    assert T.table_timesteps(10, "trailing")[0] == 999 and T.table_timesteps(10, "linspace")[0] == 999
    for spacing in T.SPACINGS:
        ts = T.table_timesteps(10, spacing)
        assert ts[-1] == 0 and np.all(np.diff(ts) < 0)
    with pytest.raises(ValueError, match="spacing"):
        T.table_timesteps(10, "uniform")
    with pytest.raises(ValueError, match="n_steps"):
        T.table_timesteps(0)


def test_zero_snr_rescale_is_lin_et_al():
    abar = SD.alphas_cumprod
    new = T.rescale_zero_terminal_snr(abar)
    assert new[-1] == 0.0 and new[0] == pytest.approx(abar[0], rel=1e-14)
    # sqrt(abar') is an affine function of sqrt(abar): shift by the last value, scale to keep the first
    a, a2 = np.sqrt(abar), np.sqrt(new)
    assert np.allclose(a2, (a - a[-1]) * a[0] / (a[0] - a[-1]), rtol=0, atol=1e-15)
    z = T.ZeroTerminalSNR(new)
    ints = np.arange(0, 999.0)
    assert np.allclose(z.alpha(ints), np.sqrt(new[:-1]), rtol=1e-12)
    assert z.alpha(999.0) == 0.0 and z.sigma(999.0) == 1.0
    tail = np.array([998.0, 998.25, 998.5, 998.9])  # the last interval, where alpha falls linearly to 0
    assert np.allclose(z.alpha(tail), np.sqrt(new[-2]) * (999.0 - tail), rtol=1e-12)
    assert np.allclose(z.t_of_lambda(z.lambda_(tail)), tail, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="ending in exactly 0"):
        T.ZeroTerminalSNR(abar)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 998.999))
def test_zero_snr_schedule_inverts_lambda_and_differentiates(t):
    z = T.zero_snr_stable_diffusion()
    assert float(z.t_of_lambda(z.lambda_(t))) == pytest.approx(t, abs=1e-7)
    h = 1e-5
    if int(t - h) == int(t + h) and abs(t - 998.0) > 2 * h:  # away from the table's integer kinks
        assert float(z.d_alpha(t)) == pytest.approx(float(z.alpha(t + h) - z.alpha(t - h)) / (2 * h), rel=1e-5, abs=1e-9)
        assert float(z.d_sigma(t)) == pytest.approx(float(z.sigma(t + h) - z.sigma(t - h)) / (2 * h), rel=1e-5, abs=1e-9)


# The exact shrink of Gaussian data.


def test_flow_map_is_the_probability_flow_ode():
    """The affine map equals the rk45 solve from the same points (pointwise, 1e-7)."""
    x = np.random.default_rng(0).standard_normal((6, 2)) * 2.0
    model = ex.AnalyticModel(GAUSS, SD)
    for t0 in (999.0, 901.0):
        ref = ex.reference(model, x, np.array([t0, 0.0]))
        A, b = T.flow_map(MEAN, COV, SD, t0, 0.0)
        assert np.abs(ref.x[-1] - (x @ A.T + b)).max() < 1e-7


def test_shrink_against_ode_sampling():
    """The naive start's mean and std along the wide direction: closed form against 2000 rk45 samples
    (tolerance 4 standard errors: 0.36 on the mean, 0.27 on the std); the pull is real (factor 0.71)."""
    n = 2000
    x_T = T.naive_start(n, 2, 0)
    traj = ex.reference(ex.AnalyticModel(GAUSS, SD), x_T, np.array([981.0, 0.0]))
    b = _along_top(traj.x[-1])
    sh = T.shrink(MEAN, COV, SD, 981.0, 0.0)
    se = sh["std"] / np.sqrt(n)
    assert abs(b.mean() - sh["mean"]) < 4 * se
    assert abs(b.std() - sh["std"]) < 4 * sh["std"] / np.sqrt(2 * n)
    assert sh["mean_factor"] == pytest.approx(0.708, abs=0.002) and sh["std_factor"] == pytest.approx(0.959, abs=0.002)
    # the closed form by hand, from the docstring: mean factor alpha_end - alpha_T r_end / r_T (over alpha_end)
    a0, s0, a1, s1 = float(SD.alpha(981.0)), float(SD.sigma(981.0)), float(SD.alpha(0.0)), float(SD.sigma(0.0))
    lam = np.linalg.eigvalsh(COV)[-1]
    r0, r1 = np.sqrt(a0**2 * lam + s0**2), np.sqrt(a1**2 * lam + s1**2)
    assert sh["mean_factor"] == pytest.approx((a1 - a0 * r1 / r0) / a1, rel=1e-12)
    assert sh["std_factor"] == pytest.approx((r1 / r0) / r1, rel=1e-12)


def test_shrink_against_sde_sampling():
    """The reverse SDE forgets the start faster (mean factor 0.915 vs 0.708): closed form against 2000 DDPM
    samples on every table step (4 standard errors, plus 1% for the discrete steps)."""
    n = 2000
    x_T = T.naive_start(n, 2, 1)
    traj = ex.sample(ex.AnalyticModel(GAUSS, SD), x_T, np.arange(981.0, -1.0, -1.0), "ddpm", rng=2)
    b = _along_top(traj.x[-1])
    sh = T.shrink(MEAN, COV, SD, 981.0, 0.0, kind="sde")
    assert abs(b.mean() - sh["mean"]) < 4 * sh["std"] / np.sqrt(n) + 0.01 * abs(sh["mean"])
    assert abs(b.std() - sh["std"]) < 4 * sh["std"] / np.sqrt(2 * n) + 0.01 * sh["std"]
    assert sh["mean_factor"] == pytest.approx(0.915, abs=0.002)
    exact = T.shrink(MEAN, COV, SD, 981.0, 0.0, kind="sde", method="exact p_T start")
    assert exact["mean_factor"] == pytest.approx(1.0, abs=1e-12) and exact["std_factor"] == pytest.approx(1.0, abs=1e-12)


def test_one_more_step_fixes_the_mean_not_the_spread():
    """The MSE-optimal extra step from pure noise: x_T = alpha_T E[x0] + sigma_T z. Its mean is right
    (mean factor 1 exactly), its spread stays shrunk by sigma_T / r_T (Monte Carlo, 4 standard errors); with
    the official code's noise scale (1 - abar) the same noise comes out sigma_T^2 z."""
    sh = T.shrink(MEAN, COV, SD, 981.0, 0.0, method="One More Step")
    naive = T.shrink(MEAN, COV, SD, 981.0, 0.0)
    a0, s0 = float(SD.alpha(981.0)), float(SD.sigma(981.0))
    r0 = np.sqrt(a0**2 * np.linalg.eigvalsh(COV)[-1] + s0**2)
    assert sh["mean_factor"] == pytest.approx(1.0, abs=1e-12)
    assert sh["std_factor"] == pytest.approx(s0 / r0, rel=1e-12) and sh["std_factor"] < naive["std_factor"] < 1
    model = ex.AnalyticModel(GAUSS, SD)
    n = 20000
    x = T.one_more_step(model, n, 981.0, 0)
    assert np.abs(x.mean(0) - a0 * MEAN).max() < 4 * s0 / np.sqrt(n)
    assert np.abs(x.std(0) - s0).max() < 4 * s0 / np.sqrt(2 * n)
    code = T.one_more_step(model, n, 981.0, 0, variance="oms-code")  # the same noise, scaled by sigma^2, not sigma
    assert np.allclose(code - a0 * MEAN, s0 * (x - a0 * MEAN), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="variance"):
        T.one_more_step(model, 10, 981.0, 0, variance="sqrt")


def test_compare_starts_on_the_table():
    """With DDIM at 50 leading steps: N(0, I) pulls the mean (0.71 of it, closed form within 4 SE + the
    solver's 2%), the exact start and zero terminal SNR reach p_0 (sliced W2 at the finite-sample floor),
    One More Step gets the mean right."""
    n = 3000
    rows = {r["name"]: r for r in T.compare_starts(GAUSS, 50, "leading", n=n, seed=0)}
    assert rows["N(0, I) start"]["t_start"] == 981 and rows["zero terminal SNR"]["t_start"] == 999
    assert rows["zero terminal SNR"]["abar_start"] == 0.0
    true_mean = rows["N(0, I) start"]["true_mean"]
    se = rows["N(0, I) start"]["true_std"] / np.sqrt(n)
    sh = T.shrink(MEAN, COV, SD, 981.0, 0.0)
    assert abs(rows["N(0, I) start"]["mean"] - abs(sh["mean"])) < 4 * se + 0.02 * abs(sh["mean"])
    for name in ("exact p_T start", "zero terminal SNR", "One More Step"):
        assert abs(rows[name]["mean"] - true_mean) < 4 * se + 0.02 * abs(true_mean), name
    p0 = ex.AnalyticModel(GAUSS, SD).prior_sample(20000, 5, t=0.0, exact=True)
    floor = ex.metrics.sliced_wasserstein(GAUSS.sample(n, 6), p0)
    for name in ("exact p_T start", "zero terminal SNR"):
        assert ex.metrics.sliced_wasserstein(rows[name]["sample"], p0) < 2 * floor + 0.03, name
    assert ex.metrics.sliced_wasserstein(rows["N(0, I) start"]["sample"], p0) > 3 * floor
    with pytest.raises(ValueError, match="methods"):
        T.compare_starts(GAUSS, methods=("nope",))


# Denoising MCMC.

ASYM = ex.targets.get("gmm-1d-asym")


def test_log_joint_is_the_noised_mixture():
    x = ex.targets.get("gmm-2d-two-aniso").sample(50, np.random.default_rng(0)) + 0.4
    levels = M.noise_levels(30)
    lj = M.log_joint(ex.targets.get("gmm-2d-two-aniso"), x, levels)
    direct = np.stack([ex.targets.get("gmm-2d-two-aniso").noised(x, 1.0, float(s), need=("log_prob",))["log_prob"]
                       for s in levels], axis=1)
    assert np.abs(lj - direct).max() < 1e-10
    assert levels[0] == pytest.approx(M.SIGMA_MAX * (M.SIGMA_MIN / M.SIGMA_MAX) ** 0.0) and levels[-1] > M.SIGMA_MIN


def test_level_posterior_is_calibrated():
    """p(sigma | x) is the conditional of the joint: E[f(x) 1{sigma = s_l}] = E[f(x) p(s_l | x)] for
    f = 1{|x| in a bin}, by Monte Carlo over 40,000 joint draws (tolerance 0.006 per cell, about 4 SE)."""
    rng = np.random.default_rng(0)
    levels = M.noise_levels(8, 0.05, 5.0)
    n = 40000
    k = rng.integers(0, len(levels), n)
    x = ASYM.sample(n, rng) + levels[k][:, None] * rng.standard_normal((n, 1))
    post = M.level_posterior(ASYM, x, levels)
    assert np.allclose(post.sum(1), 1.0)
    for lo, hi in ((0, 0.5), (0.5, 1.5), (1.5, 4), (4, np.inf)):
        f = ((np.abs(x[:, 0]) >= lo) & (np.abs(x[:, 0]) < hi)).astype(float)
        lhs = np.array([np.mean(f * (k == j)) for j in range(len(levels))])
        rhs = np.mean(f[:, None] * post, axis=0)
        assert np.abs(lhs - rhs).max() < 0.006, (lo, hi, lhs - rhs)


def test_exact_gibbs_keeps_the_joint_and_the_paper_variant_does_not():
    """From exact joint draws, 6 sweeps of exact Gibbs leave the level histogram at the uniform prior
    (total variation < 0.05 with 3000 chains over 10 levels; its Monte Carlo size is about 0.03) and E|x|^2
    at its exact value; the paper's argmax-and-fixed-step chain drifts away from it (TV > 0.15, measured 0.25)."""
    levels = M.noise_levels(10, 0.05, 5.0)
    prior = np.full(len(levels), 1 / len(levels))
    exact_sq = np.mean(ASYM.means[:, 0] ** 2 @ ASYM.weights + np.einsum("kdd->k", ASYM.covs) @ ASYM.weights) + np.mean(levels**2)
    tv = {}
    for variant in ("gibbs", "paper"):
        ch = M.run_chains(ASYM, 3000, 1, 6, variant, levels=levels, burn_in=0, init="exact", seed=1)
        hist = np.bincount(ch.k[-1], minlength=len(levels)) / ch.k.shape[1]
        tv[variant] = 0.5 * np.abs(hist - prior).sum()
        if variant == "gibbs":
            sq = np.mean(np.sum(ch.x[-1] ** 2, axis=1))
            assert abs(sq - exact_sq) < 0.08 * exact_sq
            assert 0.5 < ch.accept <= 1.0 and ch.nfe_per_sweep == 2
    assert tv["gibbs"] < 0.05 and tv["paper"] > 0.15


def test_edm_solve_is_heun_on_the_karras_grid():
    """Our per-particle EDM sampler with one shared start equals ex.sample's Heun on the same Karras grid
    (plus the final Euler step onto 0, which is the x0-prediction), to round-off."""
    model = M._model(ASYM)
    x = 3.0 * np.random.default_rng(0).standard_normal((40, 1))
    out, nfe = M.edm_solve(model, x, np.full(40, 3.0), 8)
    sig = M.karras_levels([3.0], 8)[0]
    traj = ex.sample(model, x, sig[:-1], "heun")
    assert nfe == 2 * 7 - 1
    assert np.abs(out - model.denoise(traj.x[-1], sig[-2])).max() < 1e-12


def test_dmcmc_exact_gibbs_sample_has_the_target_weights():
    """Exact Gibbs, each round's last state, a 12-level ODE solve: mode weights within 0.04 of (0.75, 0.25)
    (2000 samples; 4 SE is 0.04) and sliced W2 near the floor; the paper variant picks its lowest levels."""
    res = M.sample(ASYM, 12, "gibbs", n_chains=500, n_rounds=4, n_skip=6, init="exact", pick="last", seed=0)
    w = ex.metrics.mode_coverage(res["sample"], ASYM)
    assert np.abs(w - ASYM.weights).max() < 0.04
    floor = M.floor(ASYM, len(res["sample"]))
    assert ex.metrics.distance_to_target(res["sample"], ASYM) < 2 * floor["distance"] + 0.05
    assert res["nfe"] == 6 * 2 + 2 * 11 - 1
    with pytest.raises(ValueError, match="pick"):
        M.run_chains(ASYM, 10, 1, 1, pick="first")
    with pytest.raises(ValueError, match="unknown option"):
        M.run_chains(ASYM, 10, 1, 1, stepsize=1.0)


# Optimal boundary conditions.



def test_dmcmc_summary_reads_the_most_levels():
    records = [dict(method=m, n_sigmas=ns, nfe=nfe, distance=d) for m, ns, nfe, d in (
        ("plain ODE", 3, 3, 41.5), ("plain ODE", 16, 29, 0.205), ("DMCMC paper", 16, 39, 0.383),
        ("DMCMC paper", 3, 13, 0.282))]
    line = M.summary(records, {"distance": 0.1016})
    assert line == "**Distance at the most levels (16):** plain ODE 0.205 (29 NFE) · DMCMC paper 0.383 (39 NFE); exact samples 0.102."
    assert M.summary([]) == "" and M.summary(records).endswith("(39 NFE).")

def test_boundary_loss_is_its_reference_set_limit():
    """The closed-form expected loss, averaged over p(c), equals the reference-set estimate with 40,000
    pairs (relative 2%); the conditional ODE lands on the class's own modes."""
    tg = ex.guidance.labelled("gmm-2d-ring8")
    res = B.find(tg, ex.schedules.get("vp-cosine"), 24, "mse", n_reference=40000, seed=0)
    assert np.allclose(res.reference_loss, res.mean_loss, rtol=0.02)
    for i, c in enumerate(res.labels):
        cond = ex.guidance.conditional_target(tg, int(c))
        near = np.min(np.linalg.norm(res.outputs[i][:, None] - cond.means[None], axis=2), axis=1)
        assert np.median(near) < 0.3


def test_shared_start_depends_on_the_symmetry_of_the_conditions():
    """Rows of the grid are translations of one another: every row has the same best start (regret 0,
    agreement > 0.95) and it lands on the middle mode, the class mean (loss = tr Cov_c = 8.05, half a
    random start's 16.5). Arcs of the ring are rotations: the rows disagree (agreement < 0.7) and sharing
    costs two arcs > 0.5. A shared start reaches one mode of each class's five."""
    grid = ex.guidance.labelled("gmm-2d-grid25")
    res = B.find(grid, ex.schedules.get("vp-cosine"), 128, "mse", seed=0)
    assert res.mean_loss[res.best] == res.mean_loss.min() and np.all(res.regret() >= 0)
    assert res.agreement() > 0.95 and np.all(res.regret() < 0.01)
    assert res.loss[:, res.best] == pytest.approx(np.full(5, 8.0 + 2 * 0.15**2), abs=0.02)
    div = B.diversity(res, grid)
    assert all(d["modes_random"] == 5 and d["modes_shared"] == 1 for d in div)
    assert all(d["loss_random"] > 1.8 * d["loss_shared"] for d in div)
    ring = B.find(ex.guidance.labelled("gmm-2d-ring8"), ex.schedules.get("vp-cosine"), 128, "mse", seed=0)
    assert ring.agreement() < 0.7 and np.sort(ring.regret())[-2] > 0.5
    assert all(ring.mean_loss[ring.best] <= ring.mean_loss[k] for k in ring.best_per_class)
    with pytest.raises(ValueError, match="labelled"):
        B.find(ex.targets.get("gmm-2d-grid25"), ex.schedules.get("vp-cosine"))
    with pytest.raises(ValueError, match="criterion"):
        B.expected_loss(res.outputs, grid, "lpips")


# The Starts page.

PAGE = "app_pages/starts.py"


def run_page(page: str, query: dict, toggles: tuple = ()) -> list[dict]:
    """AppTest of one page file in a fresh interpreter (so that what it imports is its own): after the first run
    and after each toggle (key) switched on, its metrics, tables, chart count, errors and whether torch is loaded.
    A table is the rows the page gave controls.table, column by column at full precision ("tables"); what the page
    shows of it is its markdown, in "texts" with the rest of the page's markdown."""
    return run_pages(page, [(query, toggles)])[0]


def run_pages(page: str, views: list) -> list[list[dict]]:
    """run_page for several (query, toggles) views of one page file, opened one after the other (each its own
    AppTest) in one fresh interpreter: the same records for each. Whether torch is loaded is read after each run,
    so a view that reports torch absent says that no view before it loaded torch either."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = f"""
import json, sys
sys.path.insert(0, {str(root)!r})
from streamlit.testing.v1 import AppTest
from app_pages import chart, controls
tables, draw = [], controls.table
def record(rows, *args, **kwargs):
    tables.append({{k: [r.get(k) for r in rows] for k in dict.fromkeys(k for r in rows for k in r)}})
    return draw(rows, *args, **kwargs)
controls.table = record
out = []
for query, toggles in {[(dict(q), tuple(t)) for q, t in views]!r}:
    at = AppTest.from_file({str(root / page)!r}, default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    records = []
    for toggle in (None,) + toggles:
        tables.clear()
        if toggle is None:
            at.run()
        else:
            at.toggle(key=toggle).set_value(True).run()
        records.append(dict(errors=[e.message for e in at.exception] + [e.value for e in at.error],
                            metrics={{m.label: m.value for m in at.metric}}, charts=sum(e.proto.component_name == chart.NAME for e in at.get("bidi_component")),
                            tables=list(tables), texts=[m.value for m in at.markdown], torch="torch" in sys.modules))
    out.append(records)
print("RESULT" + json.dumps(out, default=float))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def test_starts_page_shows_the_cores_numbers_without_torch():
    """AppTest of /starts?snr_spacing=trailing&snr_steps=20: no error, torch never imported; its table is
    terminal_snr.summary of the same runs, number for number; the start is at 999 with sqrt(abar) 0.0683; every
    section draws (8 charts); the boundary metrics are the core's for the default ring."""
    (view,) = run_page(PAGE, {"snr_spacing": "trailing", "snr_steps": "20"})
    assert not view["errors"], view["errors"]
    assert view["torch"] is False
    table = view["tables"][0]
    target = T.brightness_target("gaussian", 1.5, 4.0)
    expected = T.summary(T.compare_starts(target, 20, "trailing", "ddim", 4000, 0), target, "ddim", 0)
    assert table["start"] == list(T.METHODS)
    for col in ("t_start", "mean", "std", "closed_form_mean", "closed_form_std", "w2_to_p0"):
        assert np.allclose(np.asarray(table[col], dtype=float), [r[col] for r in expected], rtol=1e-12), col
    shown = next(text for text in view["texts"] if text.startswith("| start |"))  # the table as drawn
    for r in expected:
        assert f"| {r['start']} | {r['t_start']:.0f} | {r['sqrt_abar_start']:.4f} |" in shown
        assert f"| {r['closed_form_std']:.3f} | {r['w2_to_p0']:.3f} |" in shown
    assert table["t_start"][0] == 999 and view["metrics"]["√ᾱ where it starts"] == f"{np.sqrt(SD.alphas_cumprod[999]):.4f}"
    assert view["charts"] == 8  # brightness, signal, two chains, level histogram, vs NFE, boundary, ranks
    res = B.find(ex.guidance.labelled("gmm-2d-ring8"), ex.schedules.get("vp-cosine"), 256, "mse", n_reference=32, seed=0)
    assert view["metrics"]["Agreement between conditions"] == f"{res.agreement():.2f}"
    assert view["metrics"]["Largest regret of sharing"] == f"{res.regret().max():.3f}"
