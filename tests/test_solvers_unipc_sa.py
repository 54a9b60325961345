"""UniPC and SA-Solver: same answer as diffusers, measured orders, the SDE's distribution.

Same algorithm, same answer. diffusers' UniPCMultistepScheduler and SASolverScheduler on
DDPM's linear betas, which are our Discrete.from_betas(linspace(1e-4, 0.02, 1000)) (diffusers
stores them in float32: equal to 1e-7). How the runs are matched:
- grid: diffusers' integer timesteps ("linspace" spacing) are our times (Discrete is exact at
  integer t = the timestep index); its last target sigma is that of alphas_cumprod[0]
  (UniPC: final_sigmas_type="sigma_min"; SA-Solver always), our t = 0. So ts = [*timesteps, 0],
  and both sides take a full last step to t = 0 (no denoise-to-zero, no special last step).
  diffusers' sigma table (sigma/alpha, float32) is replaced by our float64 values on that grid.
- orders: lower_order_final=False, so both warm up with orders 1, 2, ... and then keep the order
  to the end; UniPC's corrector is switched off in diffusers by disable_corrector = every step.
- corrector: diffusers applies UniC (or the SA-Corrector) at the start of the next step() call,
  with the model output it was given there (evaluated at the predicted point), and keeps the
  corrected state in `scheduler.last_sample`; the last prediction is returned uncorrected. Ours
  corrects inside step i and records the corrected state, which is the state the next step starts
  from: traj.x[k] is diffusers' last_sample after call k (k = 1..n-1), traj.x[n] its last
  prev_sample, and traj.denoised[k] the x0-prediction it was fed at call k.
- model: UniPC with prediction_type="sample" (our x0-prediction), SA-Solver with "epsilon" (our
  eps); SA-Solver with tau > 0 draws its noise through randn_tensor, replaced by the draws of a
  numpy Generator seeded as ours (one draw per step, on both sides).
Measured deviation: <= 1e-14 relative on every state; asserted 1e-10.

Orders against rk45 (DOP853, rtol = atol = 1e-12) on a smooth mixture, vp-linear with a Karras
grid (the last interval does not dominate, unlike uniform-t on vp-linear). UniPC-p: p without
the corrector, p + 1 with it. SA-Solver (tau = 0): its predictor's order p alone, min(p + 1, q)
with a corrector of q points. When q <= p the corrector's leading error term is small and of
opposite sign to the next one, so the slope starts well above q and reaches it only at
hundreds of steps: those cases are fitted on 256-768 steps ((3, 3) on 512-1536).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import explorer as ex
from fakes import BlowsUp, TorchModel, smooth_mixture
from test_kdiffusion import relative_deviation

RTOL = 1e-10
N_STEPS = 12
BETAS = np.linspace(1e-4, 0.02, 1000)


def test_info_declares_options_and_noise():
    u = ex.solvers.info("unipc")
    assert u["order"] == 4 and u["multistep"] and not u["stochastic"] and u["nfe_per_step"] == 1
    assert u["reference"] == "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models"
    assert u["options"]["order"]["range"] == (1, 3) and u["options"]["variant"]["choices"] == ["bh1", "bh2"]
    assert u["options"]["corrector"]["default"] is True
    sa = ex.solvers.info("sa-solver")
    assert sa["reference"] == "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion Models"
    assert sa["stochastic"] and sa["multistep"] and sa["nfe_per_step"] == 1
    assert sa["options"]["predictor_order"]["range"] == (1, 4) and sa["options"]["corrector_order"]["range"] == (0, 4)
    spec = ex.solvers.spec("sa-solver")
    assert not spec.draws_noise(spec.resolve({"tau": 0.0})) and spec.draws_noise(spec.resolve({"tau": 0.5}))
    with pytest.raises(ValueError, match="order"):
        ex.sample(ex.AnalyticModel(smooth_mixture(), ex.schedules.get("edm")), np.zeros((2, 2)), [1.0, 0.5], "unipc", order=4)


# ---------------------------------------------------------------- diffusers


def _matched(scheduler):
    """Our model, start and grid for a diffusers scheduler on the linear betas (see the module docstring)."""
    s = ex.schedules.Discrete.from_betas(BETAS)
    np.testing.assert_allclose(scheduler.alphas_cumprod.double().numpy(), s.alphas_cumprod, rtol=1e-6)
    scheduler.set_timesteps(N_STEPS)
    ts = np.concatenate([scheduler.timesteps.numpy().astype(np.float64), [0.0]])
    rho = np.exp(-s.lambda_(ts))  # sigma / alpha on the grid
    np.testing.assert_allclose(scheduler.sigmas.numpy(), rho, rtol=1e-3)  # their float32 table
    scheduler.sigmas = torch.tensor(rho, dtype=torch.float64)
    model = ex.AnalyticModel(smooth_mixture(), s)
    return model, model.prior_sample(100, 2), ts


def _run_diffusers(scheduler, model, x, output="sample"):
    """States as our trajectory records them: corrected ones (last_sample), then the final prediction."""
    sample = torch.from_numpy(x)
    states, fed = [sample.numpy()], []
    for k, t in enumerate(scheduler.timesteps):
        x0 = model.denoise(sample.numpy(), float(t))
        fed.append(x0)
        out = x0 if output == "sample" else model.eps(sample.numpy(), float(t))
        sample = scheduler.step(torch.from_numpy(out), t, sample).prev_sample
        assert sample.dtype == torch.float64
        if k > 0:
            states.append(scheduler.last_sample.numpy())
    states.append(sample.numpy())
    return np.stack(states), np.stack(fed)


@pytest.mark.parametrize("corrector", [True, False])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_is_diffusers_unipc(variant, order, corrector):
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", solver_order=order, solver_type=variant,
        predict_x0=True, prediction_type="sample", lower_order_final=False, final_sigmas_type="sigma_min",
        disable_corrector=[] if corrector else list(range(N_STEPS)),
    )
    model, x, ts = _matched(scheduler)
    traj = ex.sample(model, x, ts, "unipc", order=order, variant=variant, corrector=corrector)
    states, fed = _run_diffusers(scheduler, model, x)
    assert traj.nfe == N_STEPS
    assert relative_deviation(traj.x, states).max() < RTOL
    assert relative_deviation(traj.denoised, fed).max() < RTOL
    if corrector:  # the corrector did change the path
        plain = ex.sample(model, x, ts, "unipc", order=order, variant=variant, corrector=False)
        assert relative_deviation(plain.x, states).max() > 1e4 * RTOL


@pytest.mark.parametrize("tau", [0.0, 0.7])
@pytest.mark.parametrize("predictor_order, corrector_order", [(1, 1), (2, 2), (3, 4), (4, 4), (1, 3), (4, 2)])
def test_sa_solver_is_diffusers_sa_solver(monkeypatch, predictor_order, corrector_order, tau):
    from diffusers import SASolverScheduler
    from diffusers.schedulers import scheduling_sasolver

    scheduler = SASolverScheduler(
        num_train_timesteps=1000, beta_schedule="linear", predictor_order=predictor_order,
        corrector_order=corrector_order, prediction_type="epsilon", algorithm_type="data_prediction",
        tau_func=lambda t: tau, lower_order_final=False,
    )
    model, x, ts = _matched(scheduler)
    traj = ex.sample(
        model, x, ts, "sa-solver", rng=np.random.default_rng(9), tau=tau,
        predictor_order=predictor_order, corrector_order=corrector_order,
    )
    draws = np.random.default_rng(9)
    monkeypatch.setattr(
        scheduling_sasolver, "randn_tensor",
        lambda shape, generator=None, device=None, dtype=None: torch.from_numpy(draws.standard_normal(tuple(shape))),
    )
    states, fed = _run_diffusers(scheduler, model, x, output="epsilon")
    assert traj.nfe == N_STEPS
    assert relative_deviation(traj.x, states).max() < RTOL
    assert relative_deviation(traj.denoised, fed).max() < RTOL


@pytest.mark.parametrize("order", [1, 2, 3])
def test_sa_solver_ode_with_a_corrector_one_order_up_is_unipc_bh1(order):
    """At tau = 0 both integrate the Lagrange interpolant of x0_hat exactly (UniPC's B(h) cancels
    from rho B(h) whenever rho solves the order conditions), and both replace phi_2 by 1/2 at two
    nodes (UniPC's rho = 1/2 with B(h) = h): SA(p, p + 1) is UniPC-p bh1 with UniC."""
    s = ex.schedules.get("vp-cosine")
    model = ex.AnalyticModel(smooth_mixture(), s)
    x = model.prior_sample(50, 3)
    ts = ex.timesteps(s, 15, "karras")
    u = ex.sample(model, x, ts, "unipc", order=order, variant="bh1")
    sa = ex.sample(model, x, ts, "sa-solver", tau=0.0, predictor_order=order, corrector_order=order + 1)
    assert relative_deviation(sa.x, u.x).max() < RTOL


# ---------------------------------------------------------------- orders


@pytest.fixture(scope="module")
def problem():
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(smooth_mixture(), s)
    x = model.prior_sample(200, 1)
    ref = ex.sample(model, x, ex.timesteps(s, 4), "rk45", rtol=1e-12, atol=1e-12, method="DOP853")
    return model, x, ref.x[-1]


def _order(problem, solver, ns, **options):
    model, x, ref = problem
    errors = [ex.metrics.endpoint_error(ex.sample(model, x, ex.timesteps(model.schedule, n, "karras"), solver, **options).x[-1], ref) for n in ns]
    return -np.polyfit(np.log(ns), np.log(errors), 1)[0], errors


ASYMPTOTIC = (64, 96, 128, 192)


@pytest.mark.parametrize("corrector", [False, True])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_order_is_p_and_p_plus_one_with_the_corrector(problem, variant, order, corrector):
    # measured (bh1 / bh2): p=1: 0.99 / 0.99, with UniC 2.05 / 1.99; p=2: 2.09 / 2.05, with UniC
    # 3.06 / 3.01; p=3: 3.08 / 3.08, with UniC 4.05 / 4.05
    measured, errors = _order(problem, "unipc", ASYMPTOTIC, order=order, variant=variant, corrector=corrector)
    assert abs(measured - (order + corrector)) < 0.3, (measured, errors)


@pytest.mark.parametrize(
    "p, q, ns",
    [
        (1, 0, ASYMPTOTIC), (2, 0, ASYMPTOTIC), (3, 0, ASYMPTOTIC), (4, 0, ASYMPTOTIC),  # 0.99 2.09 3.08 4.07
        (1, 2, ASYMPTOTIC), (2, 3, ASYMPTOTIC), (3, 4, ASYMPTOTIC),  # 2.05 3.06 4.05
        (1, 1, (256, 384, 512, 768)), (2, 2, (256, 384, 512, 768)),  # 0.97 2.10
        (4, 3, (256, 384, 512, 768)), (4, 4, (256, 384, 512, 768)),  # 2.99 3.97
        (3, 3, (512, 768, 1024, 1536)),  # 2.76 (slope 4.8 at 64-192 steps, 2.4 at 256-768)
    ],
)
def test_sa_solver_ode_order_is_min_of_predictor_plus_one_and_corrector(problem, p, q, ns):
    measured, errors = _order(problem, "sa-solver", ns, tau=0.0, predictor_order=p, corrector_order=q)
    theory = min(p + 1, q) if q else p
    assert abs(measured - theory) < 0.3, (measured, errors)


# ---------------------------------------------------------------- the SDE, NFE, torch


@pytest.mark.parametrize("tau, p, q", [(1.0, 3, 4), (0.5, 2, 2), (2.0, 1, 0)])
def test_sa_solver_sde_reaches_the_target(tau, p, q):
    gm = ex.targets.get("gmm-2d-ring8", radius=2.0, std=0.3)
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(gm, s)
    n = 4000
    x = model.prior_sample(n, 4, exact=True)
    traj = ex.sample(model, x, ex.timesteps(s, 100), "sa-solver", rng=5, tau=tau, predictor_order=p, corrector_order=q)
    dist = ex.metrics.sliced_wasserstein(traj.x[-1], gm.sample(20000, 6))
    baseline = ex.metrics.sliced_wasserstein(gm.sample(n, 7), gm.sample(20000, 6))  # sampling noise alone
    assert dist < 2.5 * baseline + 0.02, (dist, baseline)  # measured: 1.15, 1.09 and 0.94 x baseline
    assert ex.metrics.coverage_error(traj.x[-1], gm) < 0.05
    ode = ex.sample(model, x, ex.timesteps(s, 100), "sa-solver", tau=0.0, predictor_order=p, corrector_order=q)
    assert np.abs(ode.x[-1] - traj.x[-1]).mean() > 0.1  # the noise did act


@pytest.mark.parametrize("solver, options", [("unipc", {}), ("sa-solver", {"tau": 0.0})])
def test_the_corrector_reuses_the_next_evaluation_unless_the_state_was_moved(solver, options):
    """UniC / the SA-Corrector use the evaluation at the predicted point, which the next step
    reuses: traj.denoised[i] is the model at the *predicted* state, not at the corrected
    traj.x[i]. A Langevin corrector moves the state after that; the next step then evaluates
    the model afresh at the moved state (one more evaluation per step)."""
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(smooth_mixture(), s)
    x = model.prior_sample(40, 6)
    ts = ex.timesteps(s, 10)
    traj = ex.sample(model, x, ts, solver, **options)
    at_states = np.stack([model.denoise(traj.x[i], ts[i]) for i in range(10)])
    assert traj.nfe == 10
    assert np.abs(at_states[1:] - traj.denoised[1:]).max() > 1e-6
    moved = ex.sample(model, x, ts, solver, rng=1, corrector_steps=1, **options)
    assert moved.nfe == 10 + 9 + 9
    at_states = np.stack([model.denoise(moved.x[i], ts[i]) for i in range(10)])
    np.testing.assert_allclose(moved.denoised, at_states, rtol=0, atol=1e-13)


@pytest.mark.parametrize("solver, options", [("unipc", {"variant": "bh2"}), ("sa-solver", {"tau": 0.8})])
def test_torch_states_give_the_numpy_answer(solver, options):
    s = ex.schedules.get("edm")
    model = ex.AnalyticModel(smooth_mixture(), s)
    x = model.prior_sample(30, 7)
    ts = ex.timesteps(s, 9, "karras")
    # numpy Generators on both sides (an integer seed with torch states is re-seeded at every draw
    # by explorer.foundations.random.standard_normal_like: reported, not ours to change here)
    ours = ex.sample(model, x, ts, solver, rng=np.random.default_rng(3), **options)
    theirs = ex.sample(TorchModel(model), torch.from_numpy(x), ts, solver, rng=np.random.default_rng(3), **options)
    np.testing.assert_allclose(np.asarray(theirs.x), ours.x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver, options", [("unipc", {}), ("sa-solver", {"tau": 0.0})])
@pytest.mark.parametrize("corrector", [True, False])
def test_divergence_stops_at_the_step_that_used_the_bad_evaluation(solver, options, corrector):
    """Evaluation k (k >= 2) is made at the start of step k - 1 without a corrector; with one it is
    the evaluation at the predicted point inside step k - 2, whose corrected state it spoils."""
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(smooth_mixture(), s)
    switch = {"corrector": corrector} if solver == "unipc" else {"corrector_order": 4 if corrector else 0}
    traj = ex.sample(BlowsUp(model, k=5), model.prior_sample(10, 9), ex.timesteps(s, 10), solver, **options, **switch)
    assert traj.diverged_at == (3 if corrector else 4) and "NaN or inf" in traj.diverged_reason
    assert np.all(np.isfinite(traj.x[: traj.diverged_at + 1]))
    assert not np.all(np.isfinite(traj.x[traj.diverged_at + 1]))
