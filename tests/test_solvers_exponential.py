"""The exponential-integrator family: DPM-Solver-2/3, DPM-Solver++ (2S, 3M, 2M SDE) and tAB-DEIS.

Three kinds of checks:
- measured convergence order against a tight rk45 (DOP853) reference on a smooth mixture,
  on a variance-preserving and a variance-exploding schedule;
- same algorithm, same answer: k-diffusion under EDM (alpha = 1, sigma = t, so its sigma
  grid is our t grid; no final zero is appended, so no special last step is taken) and
  diffusers' DPMSolverMultistepScheduler on a tabulated (Discrete) VP schedule;
- identities: DEIS of order 1 is DDIM, DPM-Solver++(3M) warms up with DDIM then 2M,
  the 2M SDE with eta = 0 is 2M, and the DEIS weights are exact integrals.

Note on DPM-Solver++(3M). The third-order update in the DPM-Solver code (and, copied from
it, diffusers and k-diffusion) weights the second divided difference D2 ~ h^2 x0''/2 by
h phi_3(-h), which captures only half of the Taylor term h^3 phi_3(-h) x0''; that update is
globally second order (measured: 2.03 at 128 steps). Ours defaults to the Taylor weight
2 h phi_3(-h) (third order, exact for quadratic x0_hat); form="dpm-solver-code" is the
peers' update, checked against both peers below.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from scipy.integrate import quad

import explorer as ex
from explorer.solvers.deis import tab_weights
from explorer.solvers.exponential import dpmpp_multistep_update
from peers import k_diffusion_sampling
from fakes import BlowsUp, TorchModel, smooth_mixture
from test_kdiffusion import KDiffusionDenoiser, relative_deviation, run_k_diffusion

K = k_diffusion_sampling()
RTOL = 1e-10  # relative to the largest |x| at each step; the same-algorithm checks measure <= 1e-13

# solver, options, theoretical order, step counts in the asymptotic range on uniform-lambda grids
ORDERS = [
    ("dpm-solver-2", {}, 2, (16, 32, 64, 128)),
    ("dpm-solver-3", {}, 3, (16, 32, 64, 128)),
    ("dpmpp-2s", {}, 2, (16, 32, 64, 128)),
    ("dpmpp-3m", {}, 3, (32, 64, 128, 256)),
    ("deis", {"order": 1}, 1, (16, 32, 64, 128)),
    ("deis", {"order": 2}, 2, (32, 64, 128, 256)),
    ("deis", {"order": 3}, 3, (64, 128, 256, 512)),
]


@pytest.fixture(scope="module", params=["vp-linear", "edm"])
def problem(request):
    """A smooth 2D mixture, 100 starting points and the rk45 endpoint (error ~1e-10, far below
    the smallest solver error used in a fit, ~1e-6)."""
    s = ex.schedules.get(request.param)
    model = ex.AnalyticModel(smooth_mixture(), s)
    x = model.prior_sample(100, 1)
    ref = ex.sample(model, x, ex.timesteps(s, 4), "rk45", rtol=1e-12, atol=1e-12, method="DOP853")
    return model, x, ref.x[-1]


@pytest.mark.parametrize(
    "solver, options, order, ns", ORDERS, ids=[s + "".join(f"-{k}={v}" for k, v in o.items()) for s, o, _, _ in ORDERS]
)
def test_measured_order(problem, solver, options, order, ns):
    model, x, ref = problem
    errors = []
    for n in ns:
        traj = ex.sample(model, x, ex.timesteps(model.schedule, n), solver, **options)
        errors.append(ex.metrics.endpoint_error(traj.x[-1], ref))
    assert min(errors) > 1e3 * 1e-10  # far above the reference's own error
    measured = -np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert abs(measured - order) < 0.3, (solver, options, measured, errors)


def test_the_dpm_solver_code_form_of_3m_is_second_order(problem):
    """The peers' 3M update (see the module docstring) converges at order 2, ours at 3."""
    model, x, ref = problem
    ns = (64, 128, 256)
    errors = {}
    for form in ("taylor", "dpm-solver-code"):
        runs = [ex.sample(model, x, ex.timesteps(model.schedule, n), "dpmpp-3m", form=form) for n in ns]
        errors[form] = [ex.metrics.endpoint_error(run.x[-1], ref) for run in runs]
    slope = {f: -np.polyfit(np.log(ns), np.log(e), 1)[0] for f, e in errors.items()}
    assert abs(slope["dpm-solver-code"] - 2) < 0.2 and abs(slope["taylor"] - 3) < 0.2, slope


def test_3m_third_order_term_is_exact_for_quadratic_x0():
    """One 3M step with x0_hat(lambda) a quadratic reproduces the exact integral to round-off."""
    lam = [0.0, 0.25, 0.6, 0.9]  # lambda_{i-2}, lambda_{i-1}, lambda_i, lambda_{i+1}; alpha = 1, sigma = e^-lambda
    g = types.SimpleNamespace(lam=lam, alpha=[1.0] * 4, sigma=[math.exp(-v) for v in lam])
    x0 = lambda v: 1.0 + 2.0 * v + 3.0 * v * v  # noqa: E731
    h = lam[3] - lam[2]
    exact = quad(lambda tau: math.exp(-(h - tau)) * x0(lam[2] + tau), 0.0, h, epsabs=1e-15)[0]
    history = [(x0(lam[1]), lam[1]), (x0(lam[0]), lam[0])]
    ours = dpmpp_multistep_update(g, 2, 0.0, x0(lam[2]), history, "taylor")
    code = dpmpp_multistep_update(g, 2, 0.0, x0(lam[2]), history, "dpm-solver-code")
    assert abs(ours - exact) < 1e-14
    assert abs(code - exact) > 1e-3  # h^3 phi_3 x0''/2 short


# ---------------------------------------------------------------- identities


@pytest.fixture(scope="module")
def vp_case():
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(smooth_mixture(), s)
    return model, model.prior_sample(50, 2)


def test_deis_order_1_is_ddim(vp_case):
    model, x = vp_case
    for spacing in ("karras", "uniform-t"):
        ts = ex.timesteps(model.schedule, 9, spacing)
        np.testing.assert_array_equal(ex.sample(model, x, ts, "deis", order=1).x, ex.sample(model, x, ts, "ddim").x)


def test_dpmpp_3m_warms_up_with_ddim_then_2m(vp_case):
    model, x = vp_case
    ts = ex.timesteps(model.schedule, 2, "karras")
    for form in ("taylor", "dpm-solver-code"):
        three = ex.sample(model, x, ts, "dpmpp-3m", form=form)
        np.testing.assert_allclose(three.x, ex.sample(model, x, ts, "dpmpp-2m").x, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(three.x[:2], ex.sample(model, x, ts[:2], "ddim").x, rtol=1e-13, atol=1e-13)
    # from the third step on the 3M update takes over
    ts = ex.timesteps(model.schedule, 3, "karras")
    three, two = ex.sample(model, x, ts, "dpmpp-3m"), ex.sample(model, x, ts, "dpmpp-2m")
    assert not np.allclose(three.x[-1], two.x[-1], atol=1e-4)


def test_deis_warms_up_with_lower_orders(vp_case):
    model, x = vp_case
    ts = ex.timesteps(model.schedule, 6)
    third = ex.sample(model, x, ts, "deis", order=3).x
    second = ex.sample(model, x, ts, "deis", order=2).x
    np.testing.assert_array_equal(third[:3], second[:3])  # steps 0 and 1 are the same warm-up
    assert not np.allclose(third[3], second[3], atol=1e-6)


def test_2m_sde_with_eta_0_is_2m(vp_case):
    model, x = vp_case
    ts = ex.timesteps(model.schedule, 10, "karras")
    sde = ex.sample(model, x, ts, "dpmpp-2m-sde", eta=0.0)
    np.testing.assert_allclose(sde.x, ex.sample(model, x, ts, "dpmpp-2m").x, rtol=1e-12, atol=1e-12)
    assert ex.solvers.info("dpmpp-2m-sde")["stochastic"]


@pytest.mark.parametrize("schedule", ["vp-linear", "vp-cosine", "edm", "rectified-flow"])
def test_deis_weights_are_the_exact_integrals(schedule):
    """C_j = int rho'(t) l_j(t) dt over a step, against adaptive quadrature in t (scipy quad), and
    32 against 64 Gauss nodes on the coarse 5-step grid's long steps."""
    s = ex.schedules.get(schedule)
    ts = ex.timesteps(s, 5)
    lam = s.lambda_(ts)

    def rho_prime(t):
        a, sg = s.alpha(t), s.sigma(t)
        return (s.d_sigma(t) * a - sg * s.d_alpha(t)) / (a * a)

    for i in (2, 3):
        nodes = ts[i - 2 : i + 1][::-1]
        ours = tab_weights(s, nodes, lam[i], lam[i + 1])
        np.testing.assert_allclose(ours, tab_weights(s, nodes, lam[i], lam[i + 1], n_nodes=64), rtol=1e-13, atol=1e-15)
        for j, t_j in enumerate(nodes):
            def basis(t, j=j, t_j=t_j):
                return np.prod([(t - t_m) / (t_j - t_m) for m, t_m in enumerate(nodes) if m != j])

            ref = -quad(lambda t: rho_prime(t) * basis(t), ts[i + 1], ts[i], epsabs=0, epsrel=1e-13, limit=200)[0]
            assert abs(ours[j] - ref) < 1e-10 * np.abs(ours).max(), (schedule, i, j, ours[j], ref)
        assert abs(ours.sum() - (math.exp(-lam[i + 1]) - math.exp(-lam[i]))) < 1e-13 * abs(ours.sum())


def test_registered_with_their_info():
    expect = {
        "dpm-solver-2": (2, False, 2), "dpm-solver-3": (3, False, 3), "dpmpp-2s": (2, False, 2),
        "dpmpp-3m": (3, True, 1), "dpmpp-2m-sde": (1, True, 1), "deis": (3, True, 1),
    }
    for name, (order, multistep, nfe) in expect.items():
        info = ex.solvers.info(name)
        assert (info["order"], info["multistep"], info["nfe_per_step"]) == (order, multistep, nfe), name
        assert info["reference"]
    assert ex.solvers.info("deis")["options"]["order"]["range"] == (1, 3)
    assert ex.solvers.info("dpmpp-2m-sde")["options"]["solver_type"]["choices"] == ["midpoint", "heun"]
    assert "DPM-Solver: A Fast ODE Solver" in ex.solvers.info("dpm-solver-3")["reference"]
    assert ex.solvers.info("deis")["reference"] == "Fast Sampling of Diffusion Models with Exponential Integrator"


def test_2m_sde_reaches_the_target():
    gm = ex.targets.get("gmm-2d-ring8", radius=2.0, std=0.3)
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(gm, s)
    n = 4000
    x = model.prior_sample(n, 4, exact=True)
    traj = ex.sample(model, x, ex.timesteps(s, 100, "uniform-t"), "dpmpp-2m-sde", rng=5)
    dist = ex.metrics.sliced_wasserstein(traj.x[-1], gm.sample(20000, 6))
    baseline = ex.metrics.sliced_wasserstein(gm.sample(n, 7), gm.sample(20000, 6))  # sampling noise alone
    assert dist < 2.5 * baseline + 0.02, (dist, baseline)
    assert ex.metrics.coverage_error(traj.x[-1], gm) < 0.05


# ---------------------------------------------------------------- k-diffusion (EDM)

N_PARTICLES = 200
SEED = 20240611


@pytest.fixture(scope="module", params=["gmm-2d-ring8", "gmm-1d-3modes"])
def edm_case(request):
    s = ex.schedules.get("edm")
    model = ex.AnalyticModel(ex.targets.get(request.param), s)
    return model, model.prior_sample(N_PARTICLES, np.random.default_rng(SEED))


@pytest.mark.parametrize("spacing", ["karras", "uniform-lambda"])
def test_dpmpp_2s_is_k_diffusions_2s_ancestral_with_eta_0(edm_case, spacing):
    # eta = 0: sigma_down = sigma_next and sigma_up = 0, so each step is the plain DPM-Solver++(2S)
    # step with r = 1/2 (the zero-scaled noise it adds changes nothing).
    model, x = edm_case
    ts = ex.timesteps(model.schedule, 12, spacing)
    traj = ex.sample(model, x, ts, "dpmpp-2s")
    x_k, d_k, nfe_k = run_k_diffusion(K.sample_dpmpp_2s_ancestral, model, x, ts, eta=0.0)
    assert traj.nfe == nfe_k == 24
    assert relative_deviation(traj.x, x_k).max() < RTOL
    assert relative_deviation(traj.denoised, d_k).max() < RTOL


@pytest.mark.parametrize("eta, solver_type", [(1.0, "midpoint"), (1.0, "heun"), (0.5, "midpoint"), (0.0, "heun")])
def test_dpmpp_2m_sde_is_k_diffusions_with_the_same_noise(edm_case, eta, solver_type):
    # Our solver draws one standard normal array per step from the Generator (standard_normal_like);
    # k-diffusion gets the same arrays, in order, through its noise_sampler hook.
    model, x = edm_case
    ts = ex.timesteps(model.schedule, 15, "karras")
    traj = ex.sample(model, x, ts, "dpmpp-2m-sde", rng=np.random.default_rng(7), eta=eta, solver_type=solver_type)
    draws = np.random.default_rng(7)
    used = []

    def noise_sampler(sigma, sigma_next):
        used.append(float(sigma))
        return torch.from_numpy(draws.standard_normal(x.shape))

    x_k, _, _ = run_k_diffusion(
        K.sample_dpmpp_2m_sde, model, x, ts, eta=eta, solver_type=solver_type, noise_sampler=noise_sampler
    )
    assert len(used) == (15 if eta > 0 else 0)
    assert relative_deviation(traj.x, x_k).max() < RTOL


def test_dpmpp_3m_is_k_diffusions_3m_sde_with_eta_0_step_by_step(edm_case):
    """k-diffusion's 3M update from its own state and history equals ours (form="dpm-solver-code")
    at every step once three x0-predictions exist, and at the first (DDIM) step. Its second
    step is a 2M step in the phi_2 ("heun") form, where ours (like the DPM-Solver code and
    diffusers) uses the midpoint form of dpmpp-2m, so whole trajectories differ from there."""
    model, x = edm_case
    ts = ex.timesteps(model.schedule, 12, "karras")

    def never(*args):  # eta = 0: no noise is drawn (and no Brownian tree is built)
        raise AssertionError("noise drawn with eta = 0")

    x_k, d_k, _ = run_k_diffusion(K.sample_dpmpp_3m_sde, model, x, ts, eta=0.0, noise_sampler=never)
    g = ex.solvers.common.grid(model.schedule, ts)
    for i in [0] + list(range(2, 12)):
        history = [(d_k[i - j], g.lam[i - j]) for j in (1, 2) if i - j >= 0]
        ours = dpmpp_multistep_update(g, i, x_k[i], d_k[i], history, "dpm-solver-code")
        assert relative_deviation(ours[None], x_k[i + 1][None]).max() < RTOL, i
    # k-diffusion's second step is the phi_2 form: our 2M SDE with eta = 0 and solver_type="heun"
    heun = ex.sample(model, x, ts[:3], "dpmpp-2m-sde", eta=0.0, solver_type="heun")
    assert relative_deviation(heun.x, x_k[:3]).max() < RTOL
    taylor = ex.sample(model, x, ts, "dpmpp-3m")
    assert relative_deviation(taylor.x, x_k).max() > 1e4 * RTOL  # the check can tell the forms apart


@pytest.mark.parametrize("solver, step", [("dpm-solver-2", "dpm_solver_2_step"), ("dpm-solver-3", "dpm_solver_3_step")])
def test_dpm_solver_is_k_diffusions_dpm_solver_steps(edm_case, solver, step):
    # k-diffusion's DPMSolver works in its t = -log(sigma) = our lambda under EDM; we drive its
    # single-step methods over our grid, one call per step.
    model, x = edm_case
    ts = ex.timesteps(model.schedule, 10, "karras")
    traj = ex.sample(model, x, ts, solver)
    denoiser = KDiffusionDenoiser(model)
    dpm = K.DPMSolver(denoiser)
    sigmas = torch.tensor(ts, dtype=torch.float64)
    x_k = [torch.from_numpy(x)]
    for i in range(len(ts) - 1):
        x_next, _ = getattr(dpm, step)(x_k[-1], dpm.t(sigmas[i]), dpm.t(sigmas[i + 1]))
        x_k.append(x_next)
    assert traj.nfe == denoiser.nfe
    assert relative_deviation(traj.x, torch.stack(x_k).numpy()).max() < RTOL


# ---------------------------------------------------------------- diffusers (Discrete VP)


class _Float64Torch:
    """torch as diffusers' step() sees it, except that torch.float32 is float64.

    DPMSolverMultistepScheduler.step casts the sample with `sample.to(torch.float32)` (an
    upcast meant for fp16); for a float64 check that cast would round every state to
    float32. Only that module's name `torch` is replaced, for the duration of the test."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


@pytest.mark.parametrize("order, solver, options", [(2, "dpmpp-2m", {}), (3, "dpmpp-3m", {"form": "dpm-solver-code"})])
@pytest.mark.parametrize("n_steps", [8, 20])
def test_dpmpp_multistep_is_diffusers_dpm_solver_multistep(monkeypatch, order, solver, options, n_steps):
    """DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=order) on DDPM's
    linear betas. Grid: its integer timesteps (linspace spacing) are our times, and with
    final_sigmas_type="sigma_min" its last target is alphas_cumprod[0], our t = 0, so
    ts = [*timesteps, 0]. Its sigma table (sigma/alpha, stored in float32) is replaced by the
    float64 values of the same grid. Orders: lower_order_final=False and euler_at_final=False,
    so step() takes order 1, then 2, then solver_order, exactly our warm-up.
    Model: prediction_type="sample", fed our x0-prediction at t = timestep."""
    from diffusers import DPMSolverMultistepScheduler
    from diffusers.schedulers import scheduling_dpmsolver_multistep as dpm_module

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", algorithm_type="dpmsolver++", solver_order=order,
        solver_type="midpoint", lower_order_final=False, euler_at_final=False, final_sigmas_type="sigma_min",
        prediction_type="sample",
    )
    scheduler.set_timesteps(n_steps)
    s = ex.schedules.Discrete(scheduler.alphas_cumprod.double().numpy())
    ts = np.concatenate([scheduler.timesteps.numpy().astype(np.float64), [0.0]])
    rho = np.exp(-s.lambda_(ts))  # sigma / alpha on the grid
    np.testing.assert_allclose(rho, scheduler.sigmas.numpy(), rtol=1e-6)  # the same grid, in float64
    scheduler.sigmas = torch.tensor(rho, dtype=torch.float64)

    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), s)
    x = model.prior_sample(N_PARTICLES, np.random.default_rng(SEED))
    traj = ex.sample(model, x, ts, solver, **options)

    monkeypatch.setattr(dpm_module, "torch", _Float64Torch())
    sample = torch.from_numpy(x)
    states = [sample]
    for t in scheduler.timesteps:
        x0 = torch.from_numpy(model.denoise(sample.numpy(), float(t)))
        sample = scheduler.step(x0, t, sample).prev_sample
        assert sample.dtype == torch.float64
        states.append(sample)
    assert relative_deviation(traj.x, torch.stack(states).numpy()).max() < RTOL
    if order == 3 and n_steps > 3:  # our default (Taylor) form is a different third-order update
        taylor = ex.sample(model, x, ts, "dpmpp-3m")
        assert relative_deviation(taylor.x, torch.stack(states).numpy()).max() > 1e4 * RTOL


# ---------------------------------------------------------------- torch states, divergence

ALL = [
    ("dpm-solver-2", {}), ("dpm-solver-3", {}), ("dpmpp-2s", {}), ("dpmpp-3m", {}), ("dpmpp-2m-sde", {"eta": 0.0}),
    ("dpmpp-2m-sde", {"solver_type": "heun"}), ("deis", {"order": 3}),
]


@pytest.mark.parametrize("solver, options", ALL)
def test_the_same_code_runs_on_torch_tensors(vp_case, solver, options):
    model, x = vp_case
    ts = ex.timesteps(model.schedule, 9)
    want = ex.sample(model, x, ts, solver, rng=np.random.default_rng(3), **options)
    got = ex.sample(TorchModel(model), torch.from_numpy(x.copy()), ts, solver, rng=np.random.default_rng(3), **options)
    assert isinstance(got.x, torch.Tensor)
    np.testing.assert_allclose(got.x.numpy(), want.x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver, options", ALL)
def test_divergence_stops_the_run_at_its_step(vp_case, solver, options):
    model, x = vp_case
    per_step = ex.solvers.info(solver)["nfe_per_step"]
    traj = ex.sample(BlowsUp(model, k=7), x[:10], ex.timesteps(model.schedule, 10), solver, rng=0, **options)
    assert traj.diverged_at == (7 - 1) // per_step and "NaN or inf" in traj.diverged_reason
    assert np.all(np.isfinite(traj.x[: traj.diverged_at + 1]))
