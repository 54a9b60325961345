"""Searched and compensated samplers: the `usf` solver reproduces the native DPM-Solver(++) and UniPC to
round-off and reaches each schedule's order; DC-Solver with rho = 1 is UniPC bit for bit and otherwise
compensates with the Lagrange interpolant; the evolutionary time-step search finds the brute-force
optimum for 2 and 3 steps; searched samplers are scored on held-out particles at equal NFE; the cascade
regression recovers its coefficients; the shipped defaults are not stale; bad input names the argument."""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer as ex
from explorer.analyses import solver_search as S
from explorer.solvers import usf as U
from explorer.solvers.dc_solver import lagrange_weights
from fakes import smooth_mixture

@pytest.fixture(scope="module")
def small():
    """gmm-1d-3modes under vp-linear: 64 particles to fit on, 256 held out (seed 1)."""
    return S.problem(("gmm-1d-3modes", "vp-linear"), n_fit=64, n_holdout=256, seed=0)


def _rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ---------------------------------------------------------------- the usf solver


@pytest.mark.parametrize("schedule", ["vp-linear", "edm", "rectified-flow"])
def test_usf_presets_reproduce_the_native_solvers(schedule):
    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get(schedule))
    x = model.prior_sample(40, 0)
    worst = 0.0
    for n in (1, 2, 3, 6):
        ts = ex.timesteps(model.schedule, n, "karras")
        runs = [("dpmpp-2m", {}, "dpmpp-2m"), ("dpmpp-3m", {}, "dpmpp-3m"), ("ddim", {}, "ddim"),
                ("unipc", {}, "unipc-3"), ("unipc", {"order": 2}, "unipc-2"), ("unipc", {"order": 1}, "unipc-1")]
        runs += [("unipc", dict(order=o, variant=v, corrector=c), U.unipc(n, o, v, c))
                 for o in (1, 2, 3) for v in ("bh1", "bh2") for c in (True, False)]
        for solver, options, sched in runs:
            native = ex.sample(model, x, ts, solver, **options)
            searched = ex.sample(model, x, ts, "usf", schedule=sched)
            assert searched.nfe == native.nfe, (solver, options, n)
            worst = max(worst, _rel(searched.x, native.x))
    assert worst < 1e-13, worst  # measured: 2e-15


@pytest.mark.parametrize("schedule", ["vp-linear", "edm"])
def test_usf_start_points_reproduce_the_singlestep_solvers(schedule):
    # DPM-Solver-2 (noise) and DPM-Solver++(2S) (data) are two usf steps per step on the grid with its
    # lambda-midpoints: a first-order step to the midpoint, then order 2 from the step's start (@2).
    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get(schedule))
    s, n = model.schedule, 4
    x = model.prior_sample(40, 0)
    ts = ex.timesteps(s, n, "uniform-t")
    lam = s.lambda_(ts)
    fine = np.empty(2 * n + 1)
    fine[0::2], fine[1::2] = ts, s.t_of_lambda(0.5 * (lam[:-1] + lam[1:]))
    for solver, pair in (("dpm-solver-2", "n1, n2@2/bh2"), ("dpmpp-2s", "d1, d2@2/bh2")):
        native = ex.sample(model, x, ts, solver)
        searched = ex.sample(model, x, fine, "usf", schedule=", ".join([pair] * n))
        assert searched.nfe == native.nfe
        assert _rel(searched.x[0::2], native.x) < 1e-12, solver  # measured: 8e-15


@pytest.mark.parametrize("corrector", [True, False])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_usf_noise_prediction_is_diffusers_unipc_on_eps(variant, order, corrector):
    # No native noise-prediction UniPC here: the peer is diffusers' (predict_x0=False, fed eps), matched
    # as in test_solvers_unipc_sa. A pseudo-corrected point's eps is read at the state the model saw.
    from diffusers import UniPCMultistepScheduler
    from test_kdiffusion import relative_deviation
    from test_solvers_unipc_sa import N_STEPS, _matched, _run_diffusers

    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", solver_order=order, solver_type=variant,
        predict_x0=False, prediction_type="epsilon", lower_order_final=False, final_sigmas_type="sigma_min",
        disable_corrector=[] if corrector else list(range(N_STEPS)),
    )
    model, x, ts = _matched(scheduler)
    traj = ex.sample(model, x, ts, "usf", schedule=U.unipc(N_STEPS, order, variant, corrector, prediction="n"))
    states, _ = _run_diffusers(scheduler, model, x, output="eps")
    assert traj.nfe == N_STEPS
    assert relative_deviation(traj.x, states).max() < 1e-10  # measured: 1e-14


def test_usf_noise_prediction_2m_is_diffusers_dpm_solver(monkeypatch):
    from diffusers import DPMSolverMultistepScheduler
    from diffusers.schedulers import scheduling_dpmsolver_multistep as dpm_module
    from test_kdiffusion import relative_deviation
    from test_solvers_exponential import _Float64Torch
    from test_solvers_unipc_sa import N_STEPS, _matched, _run_diffusers

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", algorithm_type="dpmsolver", solver_order=2,
        solver_type="midpoint", lower_order_final=False, euler_at_final=False, final_sigmas_type="sigma_min",
        prediction_type="epsilon",
    )
    model, x, ts = _matched(scheduler)
    monkeypatch.setattr(dpm_module, "torch", _Float64Torch())  # its step() casts to float32
    traj = ex.sample(model, x, ts, "usf", schedule="dpm-solver-2m")
    sample, states = x, [x]
    for t in scheduler.timesteps:
        out = scheduler.step(torch.from_numpy(model.eps(sample, float(t))), t, torch.from_numpy(sample)).prev_sample
        sample = out.numpy()
        states.append(sample)
    assert relative_deviation(traj.x, np.stack(states)).max() < 1e-10  # measured: 1e-14


@pytest.mark.parametrize("prediction", ["d", "n"])
def test_usf_schedules_reach_their_order(prediction):
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(smooth_mixture(), s)
    x = model.prior_sample(100, 1)
    ref = ex.reference(model, x, ex.timesteps(s, 4)).x[-1]
    ns = (16, 32, 64, 128)
    expected = {(2, False): 2, (3, False): 3, (4, False): 4, (1, True): 2, (2, True): 3}
    for (order, corr), theory in expected.items():
        errs = []
        for n in ns:
            steps = [f"{prediction}{min(order, i + 1)}" + ("+c" if corr and i < n - 1 else "") for i in range(n)]
            traj = ex.sample(model, x, ex.timesteps(s, n), "usf", schedule=steps)
            errs.append(ex.metrics.endpoint_error(traj.x[-1], ref))
        measured = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
        assert abs(measured - theory) < 0.65, (order, corr, measured)  # measured: within 0.35, n4 3.4


@st.composite
def valid_schedules(draw):
    n = draw(st.integers(1, 6))
    steps = []
    for i in range(n):
        order = draw(st.integers(1, min(4, i + 1)))
        relax = draw(st.sampled_from(["taylor", "bh1", "bh2", "linear"])) if order > 1 else "taylor"
        corrector = draw(st.sampled_from(U.CORRECTORS))
        steps.append(U.Step(
            prediction=draw(st.sampled_from(U.PREDICTIONS)), order=order,
            points=draw(st.none() | st.integers(1, order - 1)) if order > 1 else None,
            start=draw(st.integers(1, i + 1)), relax=relax,
            coef=draw(st.floats(-0.5, 0.5).filter(lambda c: c != 0)) if relax == "linear" else 0.0,
            corrector=corrector,
            corrector_relax=draw(st.sampled_from(["taylor", "bh1", "bh2"])) if corrector != "none" else "taylor",
        ))
    return steps


@settings(max_examples=40, deadline=None)
@given(valid_schedules())
def test_any_schedule_runs_spends_what_it_declares_and_round_trips_as_text(steps):
    text = U.to_text(steps)
    assert U.parse(text) == tuple(U.check_step(s) for s in steps)
    assert U.to_text(U.parse(text)) == text
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(smooth_mixture(), s)
    traj = ex.sample(model, model.prior_sample(8, 2), ex.timesteps(s, len(steps)), "usf", schedule=text)
    assert traj.nfe == U.nfe(steps)
    assert traj.diverged_at is None and np.all(np.isfinite(traj.x))


@pytest.mark.parametrize("schedule, n, message", [
    ("d1, d2", 3, "schedule has 2 steps but the grid has 3"),
    ("d2", 1, "order 2 needs 2 points"),
    ("d1, d2@3", 2, "start 3 needs 3 points"),
    ("x1", 1, "'x1' is not a step"),
    ("d1/bh1", 1, "needs a derivative term"),
    ("d1, d3.3", 2, "points"),
    ("d5", 1, "order must be an integer in"),
    ("d1+c/bh9", 1, "is not a step"),
    ("", 1, "no steps"),
    (42, 1, "a schedule is a string"),
    ([{"order": 1, "colour": "red"}], 1, "step 0"),
])
def test_bad_schedules_are_refused_naming_the_option(schedule, n, message):
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(smooth_mixture(), s)
    with pytest.raises(ValueError, match=message) as err:
        ex.sample(model, model.prior_sample(4, 0), ex.timesteps(s, n), "usf", schedule=schedule)
    assert "schedule" in str(err.value)


# ---------------------------------------------------------------- DC-Solver


def test_dc_solver_with_rho_one_is_unipc_bit_for_bit():
    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get("edm"))
    x = model.prior_sample(30, 0)
    for n in (1, 2, 3, 7):
        ts = ex.timesteps(model.schedule, n)
        for order in (1, 2, 3):
            for variant in ("bh1", "bh2"):
                for corrector in (True, False):
                    opts = dict(order=order, variant=variant, corrector=corrector)
                    native = ex.sample(model, x, ts, "unipc", **opts)
                    for rho in (1.0, [1.0] * n, ",".join(["1"] * n)):
                        dc = ex.sample(model, x, ts, "dc-solver", rho=rho, **opts)
                        np.testing.assert_array_equal(dc.x, native.x)
                        assert dc.nfe == native.nfe


def test_dc_compensation_is_the_lagrange_interpolant_of_the_buffer():
    # Interpolation is exact on polynomials of degree K.
    nodes = [0.9, 0.7, 0.4]
    assert abs(sum(w * t * t for w, t in zip(lagrange_weights(nodes, 0.55), nodes)) - 0.55 ** 2) < 1e-15
    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get("vp-linear"))
    x = model.prior_sample(20, 0)
    ts = ex.timesteps(model.schedule, 6)
    rhos = [1.0, 1.0, 0.8, 1.2, 0.9, 0.7]
    rec = S._Recorder(model)
    traj = ex.sample(rec, x, ts, "dc-solver", rho=rhos)
    raw = [d for _, _, d in rec.calls]
    comp = S.compensated_buffer(raw, list(ts), rhos, 2)
    for i in range(6):  # the x0-prediction each step used is the compensated buffer entry
        np.testing.assert_allclose(traj.denoised[i], comp[i], rtol=0, atol=1e-14)
    assert np.array_equal(traj.denoised[1], raw[1]) and not np.allclose(traj.denoised[2], raw[2])
    # K = 1 by hand: m* = m_{i-1} + rho (m_i - m_{i-1}), with m_{i-1} the compensated value.
    rec1 = S._Recorder(model)
    t1 = ex.sample(rec1, x, ts, "dc-solver", rho=0.6, dc_order=1)
    raw1 = [d for _, _, d in rec1.calls]
    np.testing.assert_allclose(t1.denoised[2], t1.denoised[1] + 0.6 * (raw1[2] - t1.denoised[1]), atol=1e-14)


@pytest.mark.parametrize("rho, message", [([1.0, 1.0], "rho has 2 values but the grid has 3"), (2.5, "rho"),
                                          ([1.0, -1.0, 1.0], "rho"), ("a,b", "rho")])
def test_dc_solver_bad_rho(rho, message):
    model = ex.AnalyticModel(smooth_mixture(), ex.schedules.get("vp-linear"))
    with pytest.raises(ValueError, match=message):
        ex.sample(model, model.prior_sample(4, 0), ex.timesteps(model.schedule, 3), "dc-solver", rho=rho)


def test_dc_fit_lowers_each_fitted_steps_error(small):
    fit = S.fit_dc(small.model, 5, ex.grid_search.particles(small.model, 16, 2))
    ref = ex.reference(small.model, ex.grid_search.particles(small.model, 16, 2).x_T, fit.ts)
    x_T = ex.grid_search.particles(small.model, 16, 2).x_T
    assert np.all(fit.rho[:2] == 1.0) and np.all((0.5 <= fit.rho) & (fit.rho <= 1.5))
    for i in range(2, 5):  # each rho beats rho = 1 at its own step, the earlier ones fixed
        trial = list(fit.rho[:i]) + [1.0] * (5 - i)
        mine = list(fit.rho[: i + 1]) + [1.0] * (5 - i - 1)
        e1 = ex.metrics.endpoint_error(ex.sample(small.model, x_T, fit.ts, "dc-solver", rho=trial).x[i + 1], ref.x[i + 1])
        e2 = ex.metrics.endpoint_error(ex.sample(small.model, x_T, fit.ts, "dc-solver", rho=mine).x[i + 1], ref.x[i + 1])
        assert e2 <= e1 + 1e-12
    assert fit.fit_error < fit.unipc_fit_error  # measured: 0.067 against 0.33 at NFE 5
    # rho_aligned: no other ratio brings step i's compensated buffer closer to the denoiser at the corrected state.
    rec = S._Recorder(small.model)
    traj = ex.sample(rec, x_T, fit.ts, "dc-solver", rho=tuple(fit.rho))
    raw = [d for _, _, d in rec.calls]
    comp = S.compensated_buffer(raw, list(fit.ts), list(fit.rho))
    for i in (2, 3):
        aligned = small.model.denoise(traj.x[i], fit.ts[i])

        def gap(r, i=i):
            t_star = fit.ts[i - 1] + r * (fit.ts[i] - fit.ts[i - 1])
            w = lagrange_weights([fit.ts[i], fit.ts[i - 1], fit.ts[i - 2]], t_star)
            return ex.metrics.endpoint_error(w[0] * raw[i] + w[1] * comp[i - 1] + w[2] * comp[i - 2], aligned)

        assert gap(fit.rho_aligned[i]) <= min(gap(r) for r in np.linspace(0.5, 1.5, 201)) + 1e-12


def test_cascade_regression_recovers_its_coefficients():
    rng = np.random.default_rng(0)
    for guidance, shape, ws in ((False, (4, 3), [None]), (True, (4, 3, 3), [1.0, 3.0, 7.5])):
        true = S.Cascade(rng.normal(0, 0.3, shape), guidance)
        fits = [S.DCFit(k, np.zeros(k + 1), true.predict(k, w), np.ones(k), np.ones(k), 0.0, 0.0, {}, w)
                for k in (5, 6, 8, 10, 12) for w in ws]
        got = S.cascade_fit(fits)
        assert got.guidance == guidance and got.residual < 1e-10
        for k in (7, 9, 20):
            np.testing.assert_allclose(got.predict(k, ws[-1]), true.predict(k, ws[-1]), atol=1e-8)
    with pytest.raises(ValueError, match="fits is empty"):
        S.cascade_fit([])
    # The layout is the official code's: coefficients of (i/NFE)^k are quadratics in CFG/12 whose own
    # coefficients are quadratics in NFE/50 (cascade_polynomial_regression in DC-Solver's scheduler).
    c = rng.normal(0, 1, (4, 3, 3))
    for cfg, nfe in ((7.5, 10), (3.0, 6)):
        f2 = c[..., 0] * (nfe / 50) ** 2 + c[..., 1] * (nfe / 50) + c[..., 2]  # (k, 3)
        coef = f2[:, 0] * (cfg / 12) ** 2 + f2[:, 1] * (cfg / 12) + f2[:, 2]  # (k,)
        official = [1.0 if step < 3 else sum(coef[k] * (step / nfe) ** k for k in range(4)) for step in range(1, nfe + 1)]
        np.testing.assert_allclose(S.Cascade(c, True).predict(nfe, cfg), official, rtol=1e-12)
    with pytest.raises(ValueError, match="pass w"):
        got.predict(5)


# ---------------------------------------------------------------- searches


@pytest.mark.parametrize("nfe", [2, 3])
def test_brute_force_agrees_with_the_evolutionary_search(small, nfe):
    # AutoDiffusion's own settings (population 50, 10 epochs); measured: the optimum on seeds 0-5 at 3 steps.
    brute = S.brute_force_grid(small, "dpmpp-2m", nfe, candidates=60)
    found = S.search_grid(small, "dpmpp-2m", nfe, candidates=60, fixed_rows=[_row()])
    assert found.extra["indices"] == brute["indices"]
    assert found.fit_error == pytest.approx(brute["error"], rel=1e-12)
    assert brute["n_grids"] == (59 if nfe == 2 else 59 * 58 // 2)
    if nfe == 3:
        assert found.n_evals < brute["n_grids"] / 3  # measured: 495 of 1711


def test_the_time_step_operators_are_autodiffusions():
    rng = np.random.default_rng(0)
    interior, parent = list(range(1, 200)), list(range(10, 30))
    changed = []
    for _ in range(2000):
        child = S.mutate_grid(parent, interior, 0.1, rng)
        assert len(set(child)) == len(child) and set(child) <= set(interior)
        changed.append(np.mean([c != p for c, p in zip(child, parent)]))
    assert abs(np.mean(changed) - 0.1) < 0.005  # each time replaced with probability m_prob
    a, b = list(range(0, 20)), list(range(100, 120))
    picks = np.array([[c >= 100 for c in S.crossover_grid(a, b, rng)] for _ in range(2000)])
    assert abs(picks.mean() - 0.5) < 0.02 and all(c in (a[k], b[k]) for k, c in enumerate(S.crossover_grid(a, b, rng)))
    # On 3 candidate times a 3-step grid has 3 choices: crossovers that repeat a time are skipped, not run.
    small3 = S.problem(("gmm-1d-3modes", "vp-linear"), n_fit=8, n_holdout=8, seed=0)
    tiny = dict(S.EA_CONFIG, population=6, select=3, mutation=2, crossover=6, epochs=4)
    found = S.search_grid(small3, "dpmpp-2m", 3, candidates=4, config=tiny, fixed_rows=[_row()])
    assert found.n_evals == 3 and found.extra["indices"] == S.brute_force_grid(small3, "dpmpp-2m", 3, candidates=4)["indices"]


def test_the_schedule_operators_are_usfs():
    rng = np.random.default_rng(0)
    n = 8
    parent = U.dpmpp(n, 2)  # d1, then d2/bh2
    ts = ex.timesteps(ex.schedules.get("vp-linear"), n)
    order_changed, pred_changed, t_moved, corrected = [], [], [], []
    for _ in range(1500):
        steps, grid = S.mutate_schedule(parent, ts, rng)
        assert U.check(steps) == steps and steps[-1].corrector == "none"  # valid, never corrected at the end
        assert grid[0] == ts[0] and grid[-1] == ts[-1] and np.all(np.diff(grid) < 0)
        order_changed += [s.order != 2 for s in steps[3:]]
        pred_changed += [s.prediction != "d" for s in steps]
        t_moved += list(grid[1:-1] != ts[1:-1])
        corrected += [s.corrector == "pseudo" for s in steps[:-1]]
    # The official rates: 0.3 x P(a different draw): order 0.3 x 0.6, prediction 0.3 x 0.5, corrector 0.3 x 0.5,
    # each interior time 0.3 (a multiplicative N(0, 0.08) kick; a kick that leaves the ends is dropped).
    for got, want in ((order_changed, 0.18), (pred_changed, 0.15), (corrected, 0.15), (t_moved, 0.3)):
        assert abs(np.mean(got) - want) < 0.02, (np.mean(got), want)
    a, b = (U.dpmpp(n, 2), ts), (U.unipc(n, 3, "bh1", True, "n"), ex.timesteps(ex.schedules.get("vp-linear"), n, "karras"))
    both = []
    for _ in range(400):
        steps, grid = S.crossover_schedule(a, b, rng)
        U.check(steps)
        assert np.array_equal(grid, a[1]) or np.array_equal(grid, b[1])
        # Genes of each parent (a: data prediction, order 2, no corrector; b: noise, order 3, UniC) in the child.
        from_a = np.array_equal(grid, a[1]) or any(s.prediction == "d" or s.order == 2 or s.corrector == "none" for s in steps[2:-1])
        from_b = np.array_equal(grid, b[1]) or any(s.prediction == "n" or s.order == 3 or s.corrector == "pseudo" for s in steps[2:-1])
        both.append(from_a and from_b)
    assert np.mean(both) > 0.95  # the groups come from both parents (a deep crossover may re-pick every step from one)


def _row(**kw):
    return dict(dict(label="x", solver="ddim", options={}, spacing="uniform-lambda", fit_error=1.0, holdout_error=1.0), **kw)


def test_schedule_search_is_scored_at_equal_nfe_on_held_out_particles(small):
    rows = S.baselines(small, 4)
    found = S.search_schedule(small, 4, budget=250, batch=24, seed=0, fixed_rows=rows)
    # The exported sampler runs through ex.sample with the NFE of the search and the reported errors.
    r = found.runnable()
    for p, reported in ((small.fit, found.fit_error), (small.holdout, found.holdout_error)):
        traj = ex.sample(small.model, p.x_T, r["timesteps"], r["solver"], **r["options"])
        assert traj.nfe == 4
        assert ex.metrics.endpoint_error(traj.x[-1], p.x_ref) == pytest.approx(reported, rel=1e-12)
    assert found.fit_error <= found.extra["best_initial_fit_error"] and found.n_evals == 250
    assert np.all(np.diff(found.history) <= 0)
    # The baseline is the best fixed solver at NFE 4 chosen on the held-out particles themselves.
    assert found.best_fixed["holdout_error"] == min(r["holdout_error"] for r in rows)
    # Measured: held-out 0.058 against the best fixed solver's 0.21 (deis, uniform-t): gain 3.6; the
    # fit error 0.037 is lower than the held-out one (it overfits a little).
    assert found.gain > 2.0, found.gain
    assert found.holdout_error > found.fit_error
    # Carried to the same setting, the sampler scores its own held-out error; to another, it is rescored.
    same = S.score_on(found, small, rows)
    assert same["error"] == pytest.approx(found.holdout_error, rel=1e-12)
    np.testing.assert_allclose(S.grid_at(small.schedule, found.positions, *small.ends), found.ts, rtol=1e-12)
    # A round trip through JSON keeps the sampler.
    back = S.Searched.from_dict(json.loads(json.dumps(found.to_dict())))
    assert back.options == found.options and np.array_equal(back.ts, found.ts)
    np.testing.assert_array_equal(back.history, found.history)


def test_searches_go_through_the_sweep_runner(small):
    cells = [S.cell("dpmpp-2m", {}, ex.timesteps(small.schedule, k)) for k in (3, 5)]
    direct = [ex.metrics.endpoint_error(ex.sample(small.model, small.fit.x_T, c[2], "dpmpp-2m").x[-1], small.fit.x_ref)
              for c in cells]
    assert S.errors(small.model, small.fit, cells) == direct
    with pytest.raises(ValueError, match="executor"):
        S.errors(small.model, small.fit, cells, executor="no-such-executor")
    with pytest.raises(ValueError, match="executor"):
        S.search_schedule(small, 3, budget=10, fixed_rows=[_row()], executor="no-such-executor")


def test_bad_input_names_the_argument(small):
    cases = [
        (lambda: S.problem(("gmm-1d-3modes", "vp-linear"), n_fit=0), "n_fit"),
        (lambda: S.problem(("no-such-target", "vp-linear")), "setting target"),
        (lambda: S.problem("gmm-1d-3modes / nope"), "setting schedule"),
        (lambda: S.search_schedule(small, 1), "nfe"),
        (lambda: S.search_schedule(small, 3, budget=0), "budget"),
        (lambda: S.search_schedule(small, 3, budget=5, fixed_rows=[_row()], progress="yes"), "progress"),
        (lambda: S.search_grid(small, "ddpm", 4), "deterministic"),
        (lambda: S.search_grid(small, "dpmpp-2m", 1), "fewer than 2 steps"),
        (lambda: S.search_grid(small, "dpmpp-2m", 4, candidates=1), "candidates"),
        (lambda: S.brute_force_grid(small, "dpmpp-2m", 5), "2 or 3 steps"),
        (lambda: S.cascade_fit([S.DCFit(5, np.zeros(6), np.ones(5), np.ones(5), np.ones(5), 0, 0, {})]), "too few"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


# ---------------------------------------------------------------- the shipped defaults


def test_the_shipped_defaults_are_not_stale():
    d = S.load_defaults()
    assert d["inputs"] == S._jsonable(S.DEFAULTS)  # made with today's settings
    cfg = d["inputs"]
    prob = S.problem(tuple(cfg["setting"]), cfg["n_fit"], cfg["n_holdout"], cfg["seed"])
    rec = next(r for r in d["curve"] if r["nfe"] == cfg["nfe"])
    found = S.Searched.from_dict(rec["schedule"])
    # Its recorded errors are today's errors of the recorded sampler on the recorded particles.
    for p, reported in ((prob.fit, found.fit_error), (prob.holdout, found.holdout_error)):
        assert S.errors(prob.model, p, [S.cell(found.solver, found.options, found.ts)])[0] == pytest.approx(reported, rel=1e-9)
    # DC-Solver's fitted ratios at that NFE come out the same today.
    dc = next(r for r in d["dc"]["fits"] if r["nfe"] == cfg["nfe"])
    fit = S.fit_dc(prob.model, cfg["nfe"], ex.grid_search.particles(prob.model, cfg["dc_n_fit"], cfg["seed"] + 2))
    np.testing.assert_allclose(fit.rho, dc["rho"], atol=1e-6)
