"""Schedules (exact inverses, derivatives, the API's conventions) and time grids."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import explorer as ex

SCHEDULES = ex.schedules.names()


def test_the_five_named_schedules_exist():
    assert {"vp-linear", "vp-cosine", "ve", "edm", "rectified-flow"} <= set(SCHEDULES)


@pytest.mark.parametrize("name", SCHEDULES)
@given(u=st.floats(0.0, 1.0))
def test_t_of_lambda_inverts_lambda(name, u):
    s = ex.schedules.get(name)
    t = s.t_min * (s.t_max / s.t_min) ** u  # log-uniform: covers EDM's 0.002..80 evenly
    lam = s.lambda_(t)
    assert np.isfinite(lam)
    assert s.t_of_lambda(lam) == pytest.approx(t, rel=1e-9)
    np.testing.assert_allclose(s.lambda_(s.t_of_lambda(lam)), lam, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
def test_lambda_strictly_decreases_and_is_log_snr(name):
    s = ex.schedules.get(name)
    t = np.geomspace(s.t_min, s.t_max, 2001)
    lam = s.lambda_(t)
    assert np.all(np.diff(lam) < 0)
    np.testing.assert_allclose(lam, np.log(s.alpha(t) / s.sigma(t)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", SCHEDULES)
def test_derivatives_match_finite_differences(name):
    s = ex.schedules.get(name)
    t = np.geomspace(s.t_min * 2, s.t_max * 0.99, 50)
    h = 1e-6 * t
    np.testing.assert_allclose(s.d_alpha(t), (s.alpha(t + h) - s.alpha(t - h)) / (2 * h), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(s.d_sigma(t), (s.sigma(t + h) - s.sigma(t - h)) / (2 * h), rtol=1e-5, atol=1e-8)


def test_api_conventions():
    t = np.array([0.1, 0.5, 0.9])
    for name in ("ve", "edm"):
        s = ex.schedules.get(name)
        np.testing.assert_array_equal(s.alpha(t), 1.0)
        np.testing.assert_array_equal(s.sigma(t), t)
    rf = ex.schedules.get("rectified-flow")
    np.testing.assert_allclose(rf.alpha(t), 1 - t)
    np.testing.assert_allclose(rf.sigma(t), t)
    for name in ("vp-linear", "vp-cosine"):
        s = ex.schedules.get(name)
        np.testing.assert_allclose(s.alpha(t) ** 2 + s.sigma(t) ** 2, 1.0, rtol=1e-14)
    edm = ex.schedules.get("edm")
    assert (edm.t_min, edm.t_max) == (0.002, 80.0)


def test_vp_linear_matches_the_discrete_ddpm_betas():
    # alpha(t)^2 = exp(-int_0^t beta), so log alpha^2 over a small step is -beta dt.
    s = ex.schedules.get("vp-linear")
    t = np.linspace(0.01, 0.99, 50)
    dt = 1e-6
    beta = -(np.log(s.alpha(t + dt) ** 2) - np.log(s.alpha(t) ** 2)) / dt
    np.testing.assert_allclose(beta, 0.1 + (t + dt / 2) * 19.9, rtol=1e-6)


@pytest.mark.parametrize(
    "name, params, word",
    [("nope", {}, "unknown schedule"), ("edm", {"t_min": 5.0, "t_max": 1.0}, "t_min"), ("edm", {"tmax": 3}, "edm"),
     ("vp-linear", {"beta_min": 5, "beta_max": 1}, "beta")],
)
def test_bad_schedules_raise(name, params, word):
    with pytest.raises(ValueError, match=word):
        ex.schedules.get(name, **params)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("spacing", ex.SPACINGS)
@given(n=st.integers(1, 300))
def test_grids_are_strictly_decreasing_with_exact_ends(name, spacing, n):
    s = ex.schedules.get(name)
    ts = ex.timesteps(s, n, spacing)
    assert ts.shape == (n + 1,)
    assert ts[0] == s.t_max and ts[-1] == s.t_min
    assert np.all(np.diff(ts) < 0)


def test_uniform_lambda_has_equal_lambda_steps():
    s = ex.schedules.get("vp-cosine")
    lam = s.lambda_(ex.timesteps(s, 17, "uniform-lambda"))
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-8)


def test_karras_spacing_in_edm_is_the_karras_formula():
    s = ex.schedules.get("edm")
    n, rho = 10, 7.0
    i = np.arange(n + 1)
    expected = (80 ** (1 / rho) + i / n * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
    np.testing.assert_allclose(ex.timesteps(s, n, "karras"), expected, rtol=1e-12)


def test_quadratic_and_uniform_t_spacings():
    s = ex.schedules.get("vp-linear")
    np.testing.assert_allclose(ex.timesteps(s, 4, "uniform-t"), np.linspace(1.0, 1e-3, 5))
    q = ex.timesteps(s, 4, "quadratic")
    np.testing.assert_allclose(q, 1e-3 + (1.0 - 1e-3) * (1 - np.arange(5) / 4) ** 2)


def test_custom_interval():
    s = ex.schedules.get("edm")
    ts = ex.timesteps(s, 5, t_start=10.0, t_end=0.1)
    assert ts[0] == 10.0 and ts[-1] == 0.1


@pytest.mark.parametrize(
    "kwargs, word",
    [(dict(n_steps=0), "n_steps"), (dict(n_steps=2.5), "n_steps"), (dict(n_steps=5, spacing="log"), "spacing"),
     (dict(n_steps=5, t_start=0.1, t_end=1.0), "t_start"), (dict(n_steps=5, t_end=-1.0), "range")],
)
def test_bad_grids_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ex.timesteps(ex.schedules.get("edm"), **kwargs)


def ddpm_table():
    return ex.schedules.Discrete.from_betas(np.linspace(1e-4, 0.02, 1000))


def test_discrete_schedule_is_exact_on_its_table():
    s = ddpm_table()
    i = np.arange(1000)
    np.testing.assert_allclose(s.alpha(i) ** 2, s.alphas_cumprod, rtol=1e-12)
    np.testing.assert_allclose(s.sigma(i) ** 2, 1 - s.alphas_cumprod, rtol=1e-12)
    assert (s.t_min, s.t_max) == (0.0, 999.0)
    np.testing.assert_allclose(ex.schedules.from_alphas_cumprod(s.alphas_cumprod).lambda_(i), s.lambda_(i))


@given(t=st.floats(0.0, 999.0))
def test_discrete_schedule_inverse_and_derivatives(t):
    s = ddpm_table()
    assert s.t_of_lambda(s.lambda_(t)) == pytest.approx(t, abs=1e-7)
    h = 1e-3  # sigma is ~1 here: a smaller h drowns its tiny slope in round-off
    if np.floor(t - h) == np.floor(t + h) and 0 < t - h and t + h < 999:  # inside one linear piece
        assert s.d_alpha(t) == pytest.approx((s.alpha(t + h) - s.alpha(t - h)) / (2 * h), rel=1e-6)
        assert s.d_sigma(t) == pytest.approx((s.sigma(t + h) - s.sigma(t - h)) / (2 * h), rel=1e-6)


def test_discrete_schedule_rejects_bad_tables():
    for table in ([0.5], [0.5, 0.7], [1.0, 0.5], np.ones((2, 2)) * 0.5):
        with pytest.raises(ValueError, match="alphas_cumprod"):
            ex.schedules.Discrete(table)


def test_discrete_grids_reach_the_first_timestep():
    s = ddpm_table()
    ts = ex.timesteps(s, 999, "uniform-t")
    np.testing.assert_allclose(ts, np.arange(999, -1, -1.0), atol=1e-9)
    with pytest.raises(ValueError, match="range"):
        ex.timesteps(ex.schedules.get("edm"), 5, t_end=0.0)  # sigma = 0: lambda is infinite
