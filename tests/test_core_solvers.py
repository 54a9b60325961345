"""Samplers: convergence order against the exact/reference path, bookkeeping, noise,
divergence handling and bad input."""

import numpy as np
import pytest

import explorer as ex
from fakes import BlowsUp, Spy, TorchModel, smooth_mixture

DETERMINISTIC = {"euler": 1, "ddim": 1, "heun": 2, "dpmpp-2m": 2}
STOCHASTIC = [("ddpm", {}), ("ddpm", {"variance": "beta"}), ("euler-maruyama", {}), ("ddim", {"eta": 1.0})]


def measured_order(model, x, solver, ref_final, ns=(16, 32, 64, 128), spacing="uniform-lambda"):
    errors = []
    for n in ns:
        traj = ex.sample(model, x, ex.timesteps(model.schedule, n, spacing), solver)
        errors.append(ex.metrics.endpoint_error(traj.x[-1], ref_final))
    return -np.polyfit(np.log(ns), np.log(errors), 1)[0], errors


def test_every_solver_is_registered_with_its_info():
    for name in ["euler", "heun", "ddim", "ddpm", "euler-maruyama", "dpmpp-2m", "rk45"]:
        info = ex.solvers.info(name)
        assert {"order", "stochastic", "multistep", "reference", "options"} <= set(info)
    assert ex.solvers.info("ddim")["options"]["eta"]["range"] == (0.0, 1.0)
    assert ex.solvers.info("dpmpp-2m")["multistep"] and ex.solvers.info("ddpm")["stochastic"]


@pytest.mark.parametrize("schedule", ["vp-linear", "edm", "rectified-flow"])
def test_rk45_follows_the_exact_gaussian_flow(schedule):
    # For x0 ~ N(mu, S) the probability-flow map is x_t = a_t mu + (C_t C_T^-1)^{1/2} (x_T - a_T mu),
    # C_t = a_t^2 S + s_t^2 I (all C_t share S's eigenvectors, so the map is exact and linear).
    S = np.array([[1.0, 0.3], [0.3, 0.5]])
    mu = np.array([0.5, -1.0])
    s = ex.schedules.get(schedule)
    model = ex.AnalyticModel(ex.GaussianMixture([mu], [S]), s)
    x = model.prior_sample(100, 0)
    ts = ex.timesteps(s, 6)
    traj = ex.sample(model, x, ts, "rk45")
    lam, U = np.linalg.eigh(S)
    for i, t in enumerate(ts):
        c_t = s.alpha(t) ** 2 * lam + s.sigma(t) ** 2
        c_T = s.alpha(ts[0]) ** 2 * lam + s.sigma(ts[0]) ** 2
        exact = s.alpha(t) * mu + ((x - s.alpha(ts[0]) * mu) @ U * np.sqrt(c_t / c_T)) @ U.T
        np.testing.assert_allclose(traj.x[i], exact, atol=1e-7)


@pytest.mark.parametrize("schedule", ["vp-linear", "vp-cosine", "edm", "rectified-flow"])
def test_measured_orders_on_a_mixture(schedule):
    s = ex.schedules.get(schedule)
    model = ex.AnalyticModel(smooth_mixture(), s)
    x = model.prior_sample(200, 1)
    ref = ex.reference(model, x, ex.timesteps(s, 4))
    for solver, order in DETERMINISTIC.items():
        measured, errors = measured_order(model, x, solver, ref.x[-1])
        assert abs(measured - order) < 0.2, (solver, measured, errors)


def test_ddim_equals_euler_when_alpha_is_one():
    s = ex.schedules.get("edm")
    model = ex.AnalyticModel(smooth_mixture(), s)
    x = model.prior_sample(50, 2)
    ts = ex.timesteps(s, 12, "karras")
    np.testing.assert_allclose(ex.sample(model, x, ts, "ddim").x, ex.sample(model, x, ts, "euler").x, rtol=1e-12)


@pytest.mark.parametrize("solver", ex.solvers.names())
def test_solvers_stay_on_the_grid_and_count_evaluations(solver):
    s = ex.schedules.get("vp-linear")
    spy = Spy(ex.AnalyticModel(smooth_mixture(), s))
    ts = ex.timesteps(s, 7, "karras")
    traj = ex.sample(spy, spy.model.prior_sample(20, 3), ts, solver, rng=0)
    assert min(spy.times) >= ts[-1] and max(spy.times) <= ts[0]
    assert traj.nfe == len(spy.times)
    per_step = ex.solvers.info(solver)["nfe_per_step"]
    if per_step is not None:
        assert traj.nfe == per_step * 7
    assert traj.x.shape == (8, 20, 2) and traj.denoised.shape == (7, 20, 2)
    np.testing.assert_array_equal(traj.t, ts)
    assert traj.diverged_at is None


@pytest.mark.parametrize("solver, options", STOCHASTIC)
def test_stochastic_solvers_reach_the_target(solver, options):
    gm = ex.targets.get("gmm-2d-ring8", radius=2.0, std=0.3)
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(gm, s)
    n = 4000
    x = model.prior_sample(n, 4, exact=True)
    traj = ex.sample(model, x, ex.timesteps(s, 300, "uniform-t"), solver, rng=5, **options)
    dist = ex.metrics.sliced_wasserstein(traj.x[-1], gm.sample(20000, 6))
    baseline = ex.metrics.sliced_wasserstein(gm.sample(n, 7), gm.sample(20000, 6))  # sampling noise alone
    assert dist < 2.5 * baseline + 0.02, (dist, baseline)
    assert ex.metrics.coverage_error(traj.x[-1], gm) < 0.05


@pytest.mark.parametrize("solver, options", STOCHASTIC)
def test_stochastic_solvers_are_seeded(solver, options):
    s = ex.schedules.get("edm")
    model = ex.AnalyticModel(smooth_mixture(), s)
    x = model.prior_sample(30, 8)
    ts = ex.timesteps(s, 5)
    a = ex.sample(model, x, ts, solver, rng=11, **options)
    b = ex.sample(model, x, ts, solver, rng=np.random.default_rng(11), **options)
    c = ex.sample(model, x, ts, solver, rng=12, **options)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.allclose(a.x[-1], c.x[-1])
    with pytest.raises(ValueError, match="rng"):
        ex.sample(model, x, ts, solver, **options)


@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp-2m", "ddim"])
def test_divergence_stops_the_run_without_raising(solver):
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(smooth_mixture(), s)
    bad = BlowsUp(model, k=4)
    traj = ex.sample(bad, model.prior_sample(10, 9), ex.timesteps(s, 10), solver)
    per_step = ex.solvers.info(solver)["nfe_per_step"]
    assert traj.diverged_at == (4 - 1) // per_step
    assert "NaN or inf" in traj.diverged_reason
    assert traj.x.shape == (11, 10, 2)
    assert np.all(np.isfinite(traj.x[: traj.diverged_at + 1]))
    assert not np.all(np.isfinite(traj.x[traj.diverged_at + 1]))
    assert np.all(np.isnan(traj.x[traj.diverged_at + 2 :]))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(solver="nope"), "unknown solver"),
        (dict(solver="ddim", eta=2.0), "eta"),
        (dict(solver="ddim", etta=0.5), "etta"),
        (dict(solver="ddpm", variance="large", rng=0), "variance"),
        (dict(solver="euler", ts=[0.5, 0.6]), "decreasing"),
        (dict(solver="euler", ts=[0.5]), "ts"),
        (dict(solver="euler", x_T=np.zeros((4, 3))), "x_T"),
        (dict(solver="euler", x_T=np.full((4, 2), np.nan)), "x_T"),
    ],
)
def test_bad_sampling_input_raises_a_clear_error(kwargs, word):
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(smooth_mixture(), s)
    args = dict(x_T=np.zeros((4, 2)), ts=ex.timesteps(s, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        ex.sample(model, args.pop("x_T"), args.pop("ts"), **args)


def test_langevin_corrector_follows_every_step_but_the_last():
    gm = ex.targets.get("gmm-2d-ring8", radius=2.0, std=0.3)
    s = ex.schedules.get("ve")
    model = ex.AnalyticModel(gm, s)
    x = model.prior_sample(4000, 0, exact=True)
    ts = ex.timesteps(s, 100)
    traj = ex.sample(model, x, ts, "ddpm", rng=1, corrector_steps=2)
    assert traj.nfe == 100 + 2 * 99
    assert traj.options["corrector_steps"] == 2
    dist = ex.metrics.sliced_wasserstein(traj.x[-1], gm.sample(20000, 2))
    baseline = ex.metrics.sliced_wasserstein(gm.sample(4000, 3), gm.sample(20000, 2))
    assert dist < 2.5 * baseline + 0.02, (dist, baseline)
    # the corrector alone, at a fixed time, keeps the exact marginal p_t: start there and compare
    t = float(ts[50])
    x_t = model.prior_sample(4000, 4, t=t, exact=True)
    moved = ex.sampling.langevin_correct(model, x_t, t, np.random.default_rng(5), 20, 0.16)
    assert np.abs(moved - x_t).mean() > 0.01  # it did move
    assert ex.metrics.sliced_wasserstein(moved, model.prior_sample(20000, 6, t=t, exact=True)) < 0.08


def test_corrector_needs_rng_and_valid_settings():
    s = ex.schedules.get("edm")
    model = ex.AnalyticModel(smooth_mixture(), s)
    x, ts = np.zeros((4, 2)), ex.timesteps(s, 3)
    with pytest.raises(ValueError, match="rng"):
        ex.sample(model, x, ts, "heun", corrector_steps=1)
    for kwargs, word in [(dict(corrector_steps=-1), "corrector_steps"), (dict(corrector_steps=1, corrector_snr=0), "snr")]:
        with pytest.raises(ValueError, match=word):
            ex.sample(model, x, ts, "heun", rng=0, **kwargs)
    with pytest.raises(ValueError, match="rk45"):
        ex.sample(model, x, ts, "rk45", rng=0, corrector_steps=1)


def _ddpm_step_noise(model, traj):
    """The z_i each DDPM step drew, recovered exactly: x_{i+1} = alpha' x0_hat + sqrt(sigma'^2 - c^2) eps_hat + c z
    with c = sigma' sqrt(1 - e^{-2h}) (the posterior's noise scale), solved for z."""
    s = model.schedule
    zs = []
    for i in range(traj.n_steps):
        t, t1 = float(traj.t[i]), float(traj.t[i + 1])
        a, sg, a1, s1 = (float(v) for v in (s.alpha(t), s.sigma(t), s.alpha(t1), s.sigma(t1)))
        h = float(s.lambda_(t1)) - float(s.lambda_(t))
        c = s1 * np.sqrt(-np.expm1(-2.0 * h))
        x, d = np.asarray(traj.x[i]), np.asarray(traj.denoised[i])
        eps = (x - a * d) / sg
        zs.append((np.asarray(traj.x[i + 1]) - a1 * d - np.sqrt(s1 * s1 - c * c) * eps) / c)
    return zs


def _assert_fresh_seeded_noise(model, traj, seed):
    """Step i drew the i-th draw of one Generator seeded once for the run, so no two steps share noise."""
    zs = _ddpm_step_noise(model, traj)
    rng = np.random.default_rng(seed)
    for i, z in enumerate(zs):
        np.testing.assert_allclose(z, rng.standard_normal(z.shape), atol=1e-6, err_msg=f"step {i}")
    for i in range(len(zs)):
        for j in range(i):
            assert not np.allclose(zs[i], zs[j], atol=1e-3), f"steps {j} and {i} drew the same noise"


def test_torch_states_get_fresh_noise_every_step_from_a_seed(monkeypatch):
    torch = pytest.importorskip("torch")
    import explorer.solvers.basic as basic

    model = ex.AnalyticModel(smooth_mixture(), ex.schedules.get("edm"))
    x = torch.zeros((3, 2), dtype=torch.float64)
    ts = ex.timesteps(model.schedule, 4)
    traj = ex.sample(TorchModel(model), x, ts, "ddpm", rng=3)
    again = ex.sample(TorchModel(model), x, ts, "ddpm", rng=np.random.default_rng(3))
    assert torch.equal(traj.x, again.x)
    _assert_fresh_seeded_noise(model, traj, 3)

    # negative controls: a solver that re-seeds at every step, or re-uses its first draw, is caught
    fresh = basic.standard_normal_like
    monkeypatch.setattr(basic, "standard_normal_like", lambda x, rng: fresh(x, 3))
    with pytest.raises(AssertionError):
        _assert_fresh_seeded_noise(model, ex.sample(TorchModel(model), x, ts, "ddpm", rng=3), 3)
    first = []

    def reuse_first_draw(x, rng):
        if not first:
            first.append(fresh(x, rng))
        return first[0]

    monkeypatch.setattr(basic, "standard_normal_like", reuse_first_draw)
    reused = ex.sample(TorchModel(model), x, ts, "ddpm", rng=3)
    with pytest.raises(AssertionError, match="same noise|step 1"):
        _assert_fresh_seeded_noise(model, reused, 3)


def test_order_follows_the_options():
    assert ex.solvers.order("plms", order=2) == 2 and ex.solvers.info("plms")["order"] == 4
    assert ex.solvers.order("unipc", order=2, corrector=False) == 2
    assert ex.solvers.order("unipc", order=2) == 3
    assert ex.solvers.order("time-shift", window=0.0, base="heun") == 2
    assert ex.solvers.order("time-shift") == 0  # shifting leaves the ODE path by O(h) per step
    with pytest.raises(ValueError, match="order"):
        ex.solvers.order("deis", order=5)


def test_every_api_solver_is_declared_with_a_paper():
    api = ("euler heun ddim ddpm euler-maruyama dpm-solver-2 dpm-solver-3 dpmpp-2s dpmpp-2m dpmpp-3m dpmpp-2m-sde "
           "unipc deis plms sa-solver heavy-ball ghvb bdia time-shift rk45").split()
    assert set(api) <= set(ex.solvers.names())  # the API's canonical names, and any added since
    for name in ex.solvers.names():
        info = ex.solvers.info(name)
        assert len(info["reference"]) > 20 and info["summary"]
        for option in info["options"].values():
            assert option["help"] and "default" in option
