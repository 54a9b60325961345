"""Interpolant schedules, the SDE family with a chosen diffusion coefficient, lazy schedules."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import explorer as ex
from explorer import conversion as C
from explorer import interpolants as I
from explorer.solvers import interpolant_sde as SDE


def ring():
    return ex.targets.get("gmm-2d-ring8", radius=2.0, std=0.3)


def gaussian(mean, var, dim=2):
    return ex.GaussianMixture(np.full((1, dim), mean, dtype=float), np.array([var], dtype=float))


# Schedules.


def test_named_interpolants_follow_their_formulas():
    t = np.linspace(0.0, 1.0, 11)
    trig = ex.schedules.get("trigonometric")
    np.testing.assert_allclose(trig.alpha(t), np.cos(np.pi * t / 2), rtol=0, atol=1e-15)
    np.testing.assert_allclose(trig.sigma(t), np.sin(np.pi * t / 2), rtol=0, atol=1e-15)
    pm = ex.schedules.get("point-mass", data_var=2.0)
    np.testing.assert_allclose(pm.alpha(t), 1 - t)
    np.testing.assert_allclose(pm.sigma(t), np.sqrt(2 * t * (1 - t)))
    assert pm.alpha(1.0) == 0 and pm.sigma(1.0) == 0  # the base is a point
    assert {"trigonometric", "point-mass"} <= set(ex.schedules.names())
    with pytest.raises(ValueError, match="data_var"):
        ex.schedules.get("trigonometric", data_var=-1.0)


@given(p=st.floats(0.5, 3.0), q=st.floats(0.5, 3.0), k=st.floats(0.2, 5.0), u=st.floats(0.0, 1.0))
def test_formula_interpolants_invert_lambda_and_differentiate_exactly(p, q, k, u):
    s = I.Interpolant(lambda t: (1 - t) ** p, lambda t: k * t**q, t_min=1e-3, t_max=0.999)
    t = s.t_min + u * (s.t_max - s.t_min)
    assert s.t_of_lambda(s.lambda_(t)) == pytest.approx(t, rel=1e-13, abs=1e-15)
    assert s.d_alpha(t) == pytest.approx(-p * (1 - t) ** (p - 1), rel=1e-12)  # complex step: exact
    assert s.d_sigma(t) == pytest.approx(k * q * t ** (q - 1), rel=1e-12)


def test_interpolants_coincide_with_the_schedules_they_equal():
    rf = ex.schedules.get("rectified-flow")
    linear = I.Interpolant(lambda t: 1 - t, lambda t: t)
    trig = ex.schedules.get("trigonometric")
    cosine = ex.schedules.VPCosine(s=0.0, t_max=0.999)  # s = 0: alpha = cos(pi t / 2) exactly
    gm = ring()
    x = np.random.default_rng(0).normal(size=(50, 2)) * 2
    for a, b in ((linear, rf), (trig, cosine)):
        ma, mb = ex.AnalyticModel(gm, a), ex.AnalyticModel(gm, b)
        for t in (0.01, 0.3, 0.7, 0.95):
            for fn in ("denoise", "score", "velocity"):
                np.testing.assert_allclose(getattr(ma, fn)(x, t), getattr(mb, fn)(x, t), rtol=1e-11, atol=1e-11)
    # x_t = alpha x0 + beta x1 + gamma z with Gaussian x1: one noise of std sqrt(beta^2 + gamma^2)
    si = I.Interpolant(lambda t: 1 - t, beta=lambda t: t, gamma=lambda t: np.sqrt(2 * t * (1 - t)))
    t = np.linspace(0.01, 0.99, 9)
    np.testing.assert_allclose(si.sigma(t), np.sqrt(t**2 + 2 * t * (1 - t)), rtol=1e-14)
    np.testing.assert_allclose(si.gamma(t), np.sqrt(2 * t * (1 - t)), rtol=1e-14)
    np.testing.assert_allclose(si.d_sigma(t), (1 - t) / np.sqrt(t**2 + 2 * t * (1 - t)), rtol=1e-12)


def test_tabulated_schedule_interpolates_a_table():
    ref = ex.schedules.get("vp-linear")
    knots = np.linspace(0.0, 1.0, 401)
    tab = I.tabulated(knots, ref.alpha(knots), ref.sigma(knots), t_min=1e-3, t_max=1.0)
    np.testing.assert_allclose(tab.alpha(knots), ref.alpha(knots), rtol=1e-15)  # exact on its knots
    t = np.linspace(1e-3, 1.0, 997)
    np.testing.assert_allclose(tab.alpha(t), ref.alpha(t), rtol=1e-6)
    np.testing.assert_allclose(tab.sigma(t[t > 0.02]), ref.sigma(t[t > 0.02]), rtol=1e-5)  # sigma ~ sqrt(t) near 0
    np.testing.assert_allclose(tab.d_alpha(t[t > 0.02]), ref.d_alpha(t[t > 0.02]), rtol=5e-3)  # PCHIP slopes
    np.testing.assert_allclose(tab.t_of_lambda(tab.lambda_(t)), t, rtol=1e-12)
    with pytest.raises(ValueError, match="lambda"):
        I.tabulated([0, 0.5, 1], [1, 0.5, 0.6], [0.1, 0.5, 0.4])
    with pytest.raises(ValueError, match="increase"):
        I.tabulated([0, 1, 0.5], [1, 0.5, 0.6], [0.1, 0.5, 0.4])
    with pytest.raises(ValueError, match="lambda"):
        I.Interpolant(lambda t: t, lambda t: 1 - t)
    with pytest.raises(ValueError, match="callable"):
        I.Interpolant(1.0, lambda t: t)


@pytest.mark.parametrize("schedule", [
    I.Interpolant(lambda t: (1 - t) ** 2, gamma=lambda t: np.sin(np.pi * t / 2), beta=lambda t: t),
    I.tabulated(np.linspace(0, 1, 201), np.cos(np.linspace(0, 1, 201)), np.linspace(0, 1, 201) ** 1.5,
                t_min=0.01, t_max=0.99),
    ex.schedules.get("point-mass", data_var=3.0),
])
def test_score_and_velocity_are_exact_under_any_interpolant(schedule):
    # score = grad log p_t (finite differences of the exact density); velocity solves the continuity equation
    gm = ring()
    model = ex.AnalyticModel(gm, schedule)
    x = np.random.default_rng(1).normal(size=(30, 2)) * 1.5
    for t in (0.05, 0.4, 0.9, 0.995):
        hx, ht = 1e-5, 1e-6
        fd = np.stack([(model.log_prob(x + hx * e, t) - model.log_prob(x - hx * e, t)) / (2 * hx) for e in np.eye(2)], 1)
        np.testing.assert_allclose(model.score(x, t), fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
        dlogp = (model.log_prob(x, t + ht) - model.log_prob(x, t - ht)) / (2 * ht)
        v = model.velocity(x, t)
        div = sum((model.velocity(x + hx * e, t) - model.velocity(x - hx * e, t))[:, j] / (2 * hx)
                  for j, e in enumerate(np.eye(2)))
        residual = dlogp + np.sum(v * model.score(x, t), axis=1) + div
        assert np.abs(residual).max() < 1e-4 * (np.abs(dlogp).max() + np.abs(div).max())


# The diffusion coefficient and the SDE.


def test_optimal_diffusion_is_the_schedules_own_g2_over_2():
    vp = ex.schedules.get("vp-linear")
    t = np.linspace(0.01, 1.0, 50)
    np.testing.assert_allclose(I.optimal_diffusion(vp, t), 0.5 * (0.1 + 19.9 * t), rtol=1e-10)  # g^2 = beta(t)
    rf = ex.schedules.get("rectified-flow")
    np.testing.assert_allclose(I.optimal_diffusion(rf, t[:-1]), t[:-1] / (1 - t[:-1]), rtol=1e-12)
    pm = ex.schedules.get("point-mass", data_var=2.5)
    generic = I.Interpolant(pm.alpha, pm.sigma, pm.d_alpha, pm.d_sigma)
    np.testing.assert_allclose(I.optimal_diffusion(generic, t[:-1]), 1.25, rtol=1e-12)
    np.testing.assert_array_equal(I.optimal_diffusion(pm, [0.5, 1.0]), 1.25)  # also at the point itself
    for bad in ("nope", -1.0):
        with pytest.raises(ValueError, match="diffusion|scale"):
            I.diffusion_coefficient(vp, t, bad if isinstance(bad, str) else "constant", 1.0 if isinstance(bad, str) else bad)


def test_sde_signs_match_the_score_sde_and_ddpm():
    # eps = eps* is the diffusion model's reverse SDE: Euler-Maruyama step for step, same noise.
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(ring(), s)
    x = model.prior_sample(40, 2)
    ts = ex.timesteps(s, 25, "uniform-t")
    ours = ex.sample(model, x, ts, "interpolant-sde", rng=3)
    theirs = ex.sample(model, x, ts, "euler-maruyama", rng=3)
    np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-10, atol=1e-10)
    # the exponential step with eps = eps* is DDPM's posterior step, with eps = 0 DDIM
    exp1 = ex.sample(model, x, ts, "interpolant-sde", rng=3, method="exponential")
    np.testing.assert_allclose(exp1.x, ex.sample(model, x, ts, "ddim", rng=3, eta=1.0).x, rtol=1e-10, atol=1e-10)
    exp0 = ex.sample(model, x, ts, "interpolant-sde", diffusion="zero", method="exponential")
    np.testing.assert_allclose(exp0.x, ex.sample(model, x, ts, "ddim").x, rtol=1e-12, atol=1e-12)
    # eps = 0 with Euler-Maruyama is Euler on the probability-flow ODE
    ode = ex.sample(model, x, ts, "interpolant-sde", diffusion="zero")
    np.testing.assert_allclose(ode.x, ex.sample(model, x, ts, "euler").x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule, diffusion, scale, method, from_point", [
    ("rectified-flow", "constant", 0.5, "euler-maruyama", False),
    ("trigonometric", "optimal", 2.0, "exponential", False),
    ("point-mass", "optimal", 1.0, "euler-maruyama", True),
    ("point-mass", "optimal", 1.0, "exponential", True),
])
def test_the_sde_reaches_the_target(schedule, diffusion, scale, method, from_point):
    gm = ring()
    s = ex.schedules.get(schedule)
    model = ex.AnalyticModel(gm, s)
    n = 4000
    if from_point:  # the point-mass base: every particle at 0, t = 1
        x, ts = np.zeros((n, 2)), np.linspace(1.0, s.t_min, 301)
    else:
        x, ts = model.prior_sample(n, 4, exact=True), ex.timesteps(s, 300, "uniform-t")
    traj = ex.sample(model, x, ts, "interpolant-sde", rng=5, diffusion=diffusion, scale=scale, method=method)
    dist = ex.metrics.sliced_wasserstein(traj.x[-1], gm.sample(20000, 6))
    floor = ex.metrics.sliced_wasserstein(gm.sample(n, 7), gm.sample(20000, 6))  # sampling noise alone
    assert dist < 2.5 * floor + 0.02, (dist, floor)
    assert ex.metrics.coverage_error(traj.x[-1], gm) < 0.05


def test_a_point_mass_start_needs_noise():
    s = ex.schedules.get("point-mass")
    model = ex.AnalyticModel(ring(), s)
    ts = np.linspace(1.0, 0.01, 11)
    with pytest.raises(ValueError, match="point-mass"):
        ex.sample(model, np.zeros((5, 2)), ts, "euler")
    with pytest.raises(ValueError, match="deterministic"):
        ex.sample(model, np.zeros((5, 2)), ts, "interpolant-sde", diffusion="zero")
    with pytest.raises(ValueError, match="point 0"):
        ex.sample(model, np.ones((5, 2)), ts, "interpolant-sde", rng=0)
    np.testing.assert_array_equal(model.denoise(np.zeros((3, 2)), 1.0), np.zeros((3, 2)) + ring().mean())
    with pytest.raises(ValueError, match="exponential"):
        ex.sample(model, np.zeros((5, 2)), ts, "interpolant-sde", rng=0, diffusion="constant", method="exponential")


def _moments_of_the_scheme(model, ts, eps, mean0, var0):
    """Mean and variance after the Euler-Maruyama recursion x' = A x + B + C xi: exact for Gaussian data,
    where x0_hat is affine in x (no Monte Carlo noise in the weak error)."""
    s = model.schedule
    probe = np.array([[0.0], [1.0]])
    mean, var = mean0, var0
    for t, t1 in zip(ts[:-1], ts[1:]):
        e = float(I.diffusion_coefficient(s, t, *eps))
        out = SDE.em_step(s, probe, model.denoise(probe, t), t, t1, e, 0.0)[:, 0]
        noise = math.sqrt(2 * e * abs(t1 - t))
        A, B = out[1] - out[0], out[0]
        mean, var = A * mean + B, A * A * var + noise * noise
    return mean, var


@pytest.mark.parametrize("eps", [("optimal", 1.0), ("constant", 0.3)])
def test_euler_maruyama_has_weak_order_one(eps):
    gm = ex.GaussianMixture([[0.7]], [0.25])
    s = ex.schedules.get("rectified-flow", t_max=0.9, t_min=0.05)
    model = ex.AnalyticModel(gm, s)
    a0, s0 = float(s.alpha(s.t_max)), float(s.sigma(s.t_max))
    a1, s1 = float(s.alpha(s.t_min)), float(s.sigma(s.t_min))
    ns = np.array([16, 32, 64, 128, 256])
    errors = []
    for n in ns:
        mean, var = _moments_of_the_scheme(model, np.linspace(s.t_max, s.t_min, n + 1), eps, a0 * 0.7, a0**2 * 0.25 + s0**2)
        errors.append(abs(mean - a1 * 0.7) + abs(var - (a1**2 * 0.25 + s1**2)))
    order = ex.experiments.fitted_order(ns, errors)
    assert 0.85 < order < 1.15, (errors, order)


# Lazy schedules.


@given(c=st.floats(0.05, 20.0), u=st.floats(0.0, 1.0))
def test_lazy_drift_is_zero_for_gaussian_data(c, u):
    gm = gaussian(0.0, c)
    x = np.random.default_rng(2).normal(size=(20, 2)) * math.sqrt(c) * 2
    det = I.lazy(gm)
    t = det.t_min + u * (det.t_max - det.t_min)
    model = ex.AnalyticModel(gm, det)
    scale = np.abs(model.velocity(x, t)).max() + np.abs(x).max() * abs(float(det.d_sigma(t) / det.sigma(t)))
    assert np.abs(I.drift(model, x, t, "zero")).max() <= 1e-13 * scale
    sto = I.lazy((np.zeros(2), c * np.eye(2)), stochastic=True)
    model = ex.AnalyticModel(gm, sto)
    t = 1e-3 + u * (1.0 - 1e-3)
    x_t = np.zeros((3, 2)) if t == 1.0 else x
    d = I.drift(model, x_t, t, "optimal")
    eps = float(I.optimal_diffusion(sto, t))
    assert eps == pytest.approx(c / 2)
    bound = 1e-13 * (1 + np.abs(x_t).max() * (abs(float(sto.d_sigma(t) / sto.sigma(t))) + eps / float(sto.sigma(t)) ** 2)) if t < 1 else 0.0
    assert np.abs(d).max() <= bound


def test_lazy_drift_is_not_zero_elsewhere():
    # the test above can fail: the same data under another schedule, or a non-centred Gaussian, has a drift
    gm = gaussian(0.0, 2.0)
    x = np.random.default_rng(3).normal(size=(20, 2))
    assert np.abs(I.drift(ex.AnalyticModel(gm, ex.schedules.get("trigonometric")), x, 0.5, "zero")).max() > 0.1
    shifted = gaussian(1.0, 2.0)
    lz = I.lazy(shifted)
    assert lz.data_var == pytest.approx(3.0)  # fitted to the second moment: |m|^2 / D + tr C / D
    d = I.drift(ex.AnalyticModel(shifted, lz), x, 0.5, "zero")
    assert np.abs(d).max() > 0.1
    with pytest.raises(ValueError, match="cov"):
        I.lazy((np.zeros(2), -np.eye(2)))
    with pytest.raises(ValueError, match="GaussianMixture"):
        I.lazy("gaussian")


def euler_errors(gm, original, lazy_schedule, ns, n_particles=200):
    """Endpoint error of Euler steps (uniform in each schedule's own t) against the exact ODE solution,
    the lazy schedule run over the same lambda range from the same (converted) start."""
    m, ml = ex.AnalyticModel(gm, original), ex.AnalyticModel(gm, lazy_schedule)
    x = m.prior_sample(n_particles, 0, exact=True)
    ends = np.array([original.t_max, original.t_min])
    lazy_ends = C.convert_time(original, lazy_schedule, ends)
    into = C.state_scale(original, lazy_schedule, ends, lazy_ends)
    exact = ex.sample(m, x, ends, "rk45", rtol=1e-9, atol=1e-9).x[-1]
    orig_err, lazy_err = [], []
    for n in ns:
        orig_err.append(ex.metrics.endpoint_error(ex.sample(m, x, np.linspace(*ends, n + 1), "euler").x[-1], exact))
        y = ex.sample(ml, x * into[0], np.linspace(*lazy_ends, n + 1), "euler").x[-1] / into[1]
        lazy_err.append(ex.metrics.endpoint_error(y, exact))
    return np.array(orig_err), np.array(lazy_err)


def test_the_lazy_schedule_needs_fewer_euler_steps_on_a_broad_mixture():
    # 25 modes on a grid: near-Gaussian overall, so the fitted lazy schedule's drift stays small.
    # Measured (200 particles): rectified flow 4/8/16/32/64 steps: 1.60, 1.07, 0.69, 0.42, 0.22;
    # lazy: 0.57, 0.30, 0.11, 0.04, 0.02, i.e. the lazy schedule at n steps beats rectified flow at 4n.
    gm = ex.targets.get("gmm-2d-grid25")
    orig, lazy_err = euler_errors(gm, ex.schedules.get("rectified-flow"), I.lazy(gm), [4, 8, 16, 32, 64])
    assert np.all(lazy_err[:3] < orig[2:])


def test_one_step_is_exact_under_the_lazy_schedules_for_gaussian_data():
    # zero drift: Euler (deterministic lazy) keeps the exact marginal, and one Euler-Maruyama step from the
    # point mass with eps* = c / 2 lands on the exact N(0, c (1 - t)) (its variance to round-off).
    c = 2.5
    gm = gaussian(0.0, c, dim=1)
    det = I.lazy(gm)
    model = ex.AnalyticModel(gm, det)
    x = model.prior_sample(7, 0, exact=True)
    np.testing.assert_allclose(ex.sample(model, x, np.array([det.t_max, det.t_min]), "euler").x[-1], x, rtol=1e-13)
    sto = I.lazy(gm, stochastic=True)
    model = ex.AnalyticModel(gm, sto)
    for t_end in (0.5, 0.01):
        mean, var = _moments_of_the_scheme(model, np.array([1.0, t_end]), ("optimal", 1.0), 0.0, 0.0)
        assert mean == 0.0 and var == pytest.approx(c * (1 - t_end), rel=1e-14)
        exact_var = float(sto.alpha(t_end)) ** 2 * c + float(sto.sigma(t_end)) ** 2
        assert var == pytest.approx(exact_var, rel=1e-14)
    # not so under rectified flow: one step from its base misses the variance
    rf = ex.AnalyticModel(gm, ex.schedules.get("rectified-flow"))
    _, var = _moments_of_the_scheme(rf, np.array([0.999, 0.5]), ("optimal", 1.0), 0.0, 0.999**2)
    assert abs(var - (0.25 * c + 0.25)) > 0.1


def test_the_stochastic_lazy_schedule_needs_fewer_sde_steps_on_a_near_gaussian_mixture():
    # Euler-Maruyama with eps* on two unequal overlapping modes (1D), W2 to exact draws. Measured with
    # 100,000 particles, steps 4/8/16/32: rectified flow 3.11, 1.55, 0.65, 0.18; the fitted point-mass
    # schedule from its point 0.50, 0.34, 0.22, 0.13. (On three narrow separated modes, gmm-1d-3modes, it
    # is worse: 0.56, 0.39, 0.31, 0.26 against 99, 0.21, 0.07, 0.07; lazy means near-Gaussian data.)
    gm = ex.targets.get("gmm-1d-asym")
    n = 20000
    exact = gm.sample(n, 9)
    rf, pm = ex.schedules.get("rectified-flow"), I.lazy(gm, stochastic=True)
    m_rf, m_pm = ex.AnalyticModel(gm, rf), ex.AnalyticModel(gm, pm)
    x_rf = m_rf.prior_sample(n, 1, exact=True)

    def w2(model, x, ts):
        out = ex.sample(model, x, ts, "interpolant-sde", rng=2).x[-1] / float(model.schedule.alpha(ts[-1]))
        return ex.metrics.sliced_wasserstein(out, exact)

    for steps in (4, 8):
        lazy = w2(m_pm, np.zeros((n, 1)), np.linspace(1.0, pm.t_min, steps + 1))
        original = w2(m_rf, x_rf, np.linspace(rf.t_max, rf.t_min, 2 * steps + 1))
        assert lazy < original, (steps, lazy, original)  # n lazy steps beat 2n steps of rectified flow
