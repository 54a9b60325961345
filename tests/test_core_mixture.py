"""GaussianMixture: validation, exact densities, and the noised marginal's score and
posterior mean checked against finite differences and Monte Carlo."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

import explorer as ex


def full_mixture():
    covs = np.array([[[1.0, 0.4], [0.4, 0.5]], [[0.3, -0.1], [-0.1, 0.2]], [[0.05, 0.0], [0.0, 0.6]]])
    return ex.GaussianMixture([[0.0, 1.0], [2.0, -1.0], [-1.5, -0.5]], covs, [0.5, 0.3, 0.2])


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(means=[[0.0, np.nan]], covs=[1.0]), "means"),
        (dict(means=[[0.0, 0.0]], covs=[[[1.0, 2.0], [2.0, 1.0]]]), "covs"),  # indefinite
        (dict(means=[[0.0, 0.0]], covs=[[[1.0, 0.5], [0.0, 1.0]]]), "covs"),  # not symmetric
        (dict(means=[[0.0, 0.0]], covs=[-1.0]), "covs"),
        (dict(means=[[0.0, 0.0]], covs=[1.0, 1.0, 1.0]), "covs"),  # wrong shape
        (dict(means=[[0.0], [1.0]], covs=[1.0, 1.0], weights=[1.0, -0.5]), "weights"),
        (dict(means=[[0.0], [1.0]], covs=[1.0, 1.0], weights=[0.0, 0.0]), "weights"),
        (dict(means=[[0.0], [1.0]], covs=[1.0, 1.0], weights=[1.0]), "weights"),
        (dict(means=np.zeros((2, 2, 2)), covs=[1.0, 1.0]), "means"),
        (dict(means="abc", covs=[1.0]), "means"),
    ],
)
def test_bad_parameters_raise_naming_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ex.GaussianMixture(**kwargs)


def test_log_prob_matches_scipy():
    gm = full_mixture()
    x = np.random.default_rng(0).normal(size=(50, 2)) * 2
    expected = np.log(
        sum(w * multivariate_normal(m, c).pdf(x) for w, m, c in zip(gm.weights, gm.means, gm.covs))
    )
    np.testing.assert_allclose(gm.log_prob(x), expected, rtol=1e-12)


def test_isotropic_diagonal_and_full_covariances_agree():
    means = [[0.0, 1.0], [2.0, 0.0]]
    iso = ex.GaussianMixture(means, [0.5, 0.2])
    diag = ex.GaussianMixture(means, [[0.5, 0.5], [0.2, 0.2]])
    full = ex.GaussianMixture(means, [np.eye(2) * 0.5, np.eye(2) * 0.2])
    x = np.random.default_rng(1).normal(size=(20, 2))
    for gm in (diag, full):
        np.testing.assert_allclose(gm.log_prob(x), iso.log_prob(x), rtol=1e-13)
    assert iso.diagonal and full.diagonal


def test_samples_have_the_mixture_moments():
    gm = full_mixture()
    x = gm.sample(400_000, np.random.default_rng(2))
    np.testing.assert_allclose(x.mean(0), gm.mean(), atol=0.01)
    np.testing.assert_allclose(np.cov(x.T), gm.covariance(), atol=0.01)


def test_sampling_needs_an_explicit_seed_and_is_reproducible():
    gm = full_mixture()
    with pytest.raises(ValueError, match="rng"):
        gm.sample(5, None)
    np.testing.assert_array_equal(gm.sample(7, 3), gm.sample(7, np.random.default_rng(3)))


@st.composite
def mixtures(draw):
    k = draw(st.integers(1, 4))
    d = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    means = rng.normal(size=(k, d)) * 2
    variances = rng.uniform(0.01, 1.0, size=(k, d))
    return means, variances, rng.uniform(0.1, 1.0, size=k), rng


@given(mixtures(), st.floats(0.05, 1.0), st.floats(0.01, 3.0))
def test_fast_diagonal_path_equals_the_general_path(mix, alpha, sigma):
    means, variances, weights, rng = mix
    gm = ex.GaussianMixture(means, variances, weights)
    x = rng.normal(size=(30, gm.dim)) * 2
    fast = gm.noised(x, alpha, sigma)
    n = len(x)
    general = gm.noised(x, np.full(n, alpha), np.full(n, sigma))  # per-particle levels: general path
    for key in fast:
        np.testing.assert_allclose(fast[key], general[key], rtol=1e-9, atol=1e-11)


@given(mixtures(), st.floats(0.05, 1.0), st.floats(0.01, 3.0))
def test_rotated_full_covariance_equals_its_diagonal_form(mix, alpha, sigma):
    # Rotating the space by Q maps N(m, S) to N(Qm, QSQ^T): the noised quantities rotate with it.
    means, variances, weights, rng = mix
    d = means.shape[1]
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    diag = ex.GaussianMixture(means, variances, weights)
    rot = ex.GaussianMixture(means @ q.T, np.einsum("ij,kj,lj->kil", q, variances, q), weights)
    x = rng.normal(size=(25, d))
    a, b = diag.noised(x, alpha, sigma), rot.noised(x @ q.T, alpha, sigma)
    np.testing.assert_allclose(b["log_prob"], a["log_prob"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b["x0"], a["x0"] @ q.T, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("schedule", ex.schedules.names())
def test_score_is_the_gradient_of_the_exact_log_density(schedule):
    s = ex.schedules.get(schedule)
    model = ex.AnalyticModel(full_mixture(), s)
    x = np.random.default_rng(4).normal(size=(40, 2)) * 1.5
    h = 1e-5
    for t in np.geomspace(s.t_min * 5, s.t_max * 0.5, 5):
        fd = np.stack(
            [(model.log_prob(x + h * e, t) - model.log_prob(x - h * e, t)) / (2 * h) for e in np.eye(2)], axis=1
        )
        np.testing.assert_allclose(model.score(x, t), fd, rtol=1e-5, atol=1e-5 * np.abs(fd).max())


@pytest.mark.parametrize("t", [0.3, 0.6, 0.9])
def test_denoiser_matches_a_monte_carlo_posterior_mean(t):
    # E[x0 | x_t = x] = sum_i x0_i N(x; a x0_i, s^2) / sum_i N(x; a x0_i, s^2), x0_i ~ target.
    gm = full_mixture()
    s = ex.schedules.get("vp-cosine")
    model = ex.AnalyticModel(gm, s)
    a, sg = float(s.alpha(t)), float(s.sigma(t))
    x0 = gm.sample(400_000, 5)
    x = np.array([[0.0, 0.0], [1.0, -0.5], [-1.0, 0.5]]) * a
    logw = -0.5 * np.sum((x[:, None, :] - a * x0[None]) ** 2, axis=-1) / sg**2
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    mc = (w @ x0) / w.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.denoise(x, t), mc, atol=0.02)


@pytest.mark.parametrize("schedule", ex.schedules.names())
def test_velocity_transports_the_exact_marginals(schedule):
    # Continuity equation for the probability-flow ODE: d/dt log p + v . grad log p + div v = 0.
    s = ex.schedules.get(schedule)
    model = ex.AnalyticModel(full_mixture(), s)
    x = np.random.default_rng(6).normal(size=(30, 2))
    for t in np.geomspace(s.t_min * 20, s.t_max * 0.3, 4):
        ht, hx = 1e-6 * t, 1e-5
        dlogp_dt = (model.log_prob(x, t + ht) - model.log_prob(x, t - ht)) / (2 * ht)
        v = model.velocity(x, t)
        div = sum(
            (model.velocity(x + hx * e, t) - model.velocity(x - hx * e, t))[:, j] / (2 * hx)
            for j, e in enumerate(np.eye(2))
        )
        residual = dlogp_dt + np.sum(v * model.score(x, t), axis=1) + div
        scale = np.abs(dlogp_dt).max() + np.abs(div).max()
        assert np.abs(residual).max() < 1e-4 * scale


def test_eps_score_velocity_are_consistent_with_the_denoiser():
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(full_mixture(), s)
    x = np.random.default_rng(7).normal(size=(10, 2))
    t = 0.4
    a, sg = s.alpha(t), s.sigma(t)
    d = model.denoise(x, t)
    np.testing.assert_allclose(a * d + sg * model.eps(x, t), x, rtol=1e-12)
    np.testing.assert_allclose(model.score(x, t), -model.eps(x, t) / sg, rtol=1e-10)
    np.testing.assert_allclose(model.velocity(x, t), s.d_alpha(t) * d + s.d_sigma(t) * model.eps(x, t), rtol=1e-10)


def test_per_particle_times_match_one_time_at_a_time():
    s = ex.schedules.get("edm")
    model = ex.AnalyticModel(full_mixture(), s)
    x = np.random.default_rng(8).normal(size=(6, 2))
    t = np.array([0.01, 0.1, 0.5, 1.0, 5.0, 50.0])
    together = model.denoise(x, t)
    for i in range(6):
        np.testing.assert_allclose(together[i], model.denoise(x[i : i + 1], t[i])[0], rtol=1e-12)
    np.testing.assert_allclose(model.velocity(x, t)[2], model.velocity(x[2:3], t[2])[0], rtol=1e-12)


def test_exact_start_is_distributed_as_the_noised_marginal():
    s = ex.schedules.get("vp-linear")
    gm = full_mixture()
    model = ex.AnalyticModel(gm, s)
    t = 0.3
    x = model.prior_sample(200_000, 9, t=t, exact=True)
    a, sg = s.alpha(t), s.sigma(t)
    np.testing.assert_allclose(x.mean(0), a * gm.mean(), atol=0.01)
    np.testing.assert_allclose(np.cov(x.T), a * a * gm.covariance() + sg * sg * np.eye(2), atol=0.02)


@given(mixtures(), st.floats(0.05, 1.0), st.floats(0.01, 3.0))
def test_full_covariance_one_level_path_equals_the_general_path(mix, alpha, sigma):
    means, variances, weights, rng = mix
    k, d = means.shape
    a = rng.normal(size=(k, d, d))
    covs = np.einsum("kij,klj->kil", a, a) + np.einsum("kd,de->kde", variances, np.eye(d))
    gm = ex.GaussianMixture(means, covs, weights)
    x = rng.normal(size=(30, d)) * 2
    one = gm.noised(x, alpha, sigma)
    general = gm.noised(x, np.full(len(x), alpha), np.full(len(x), sigma))
    for key in one:
        np.testing.assert_allclose(one[key], general[key], rtol=1e-8, atol=1e-10)


@given(mixtures(), st.booleans(), st.integers(1, 300), st.sampled_from([64, None]), st.floats(1e-4, 0.5))
def test_per_particle_levels_equal_the_general_path(mix, rotated, n, chunk, sigma_lo):
    """noised with one (alpha, sigma) per particle in a few dimensions goes through _noised_per_particle,
    the (K, n) layout of _noised_general's arithmetic in blocks of particles: the same numbers to
    round-off, on diagonal and rotated covariances, down to small noise (sharp posteriors), in one
    block and across several."""
    means, variances, weights, rng = mix
    k, d = means.shape
    if rotated:
        q = np.linalg.qr(rng.normal(size=(k, d, d)))[0]
        covs = np.einsum("kij,kj,klj->kil", q, variances, q)
    else:
        covs = variances
    gm = ex.GaussianMixture(means, covs, weights)
    if chunk:  # blocks of 64 particles (4096 in use): several blocks on a small batch
        gm._CHUNK = chunk
    assert gm.diagonal is (not rotated or d == 1 or not np.any(covs - np.einsum("kdd->kd", covs)[:, :, None] * np.eye(d)))
    x = rng.normal(size=(n, d)) * 2
    alpha, sigma = rng.uniform(0.0, 1.0, n), rng.uniform(sigma_lo, 3.0, n)
    need = ("log_prob", "resp", "x0")
    fast, general = gm.noised(x, alpha, sigma, need), gm._noised_general(x, alpha, sigma, need)
    assert set(fast) == set(general) == set(need)
    scale = 1.0 + np.abs(general["log_prob"])
    np.testing.assert_array_less(np.abs(fast["log_prob"] - general["log_prob"]) / scale, 1e-14)
    np.testing.assert_allclose(fast["resp"], general["resp"], rtol=0, atol=1e-14)
    np.testing.assert_allclose(fast["x0"], general["x0"], rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(fast["resp"].sum(axis=1), 1.0, rtol=1e-14)
    one_need = gm.noised(x[:5], alpha[:5], sigma[:5], need=("x0",))  # only what is asked for
    assert set(one_need) == {"x0"}
    np.testing.assert_allclose(one_need["x0"], fast["x0"][:5], rtol=1e-14, atol=1e-15)
